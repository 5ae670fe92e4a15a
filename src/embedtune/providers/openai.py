"""OpenAI's embeddings API, and any server that speaks it (``POST {base_url}/embeddings``).

Rows come back tagged with an ``index`` and are put in that order. For Matryoshka models
(text-embedding-3-*) a ``dims`` below the native size is sent as ``dimensions`` and the vectors are
renormalised. Token usage is taken from the answer and priced from the catalogue.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from .http import HttpEmbedder, normalize_rows

__all__ = ["OpenAIEmbedder"]


class OpenAIEmbedder(HttpEmbedder):
    path = "embeddings"
    provider = "openai"

    def __init__(self, *, dimensions: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dimensions = dimensions

    def _variant(self) -> str:
        return f"dimensions={self.dimensions}"

    def _payload(self, inputs: list[str]) -> dict:
        payload: dict[str, Any] = {"model": self.model, "input": inputs, "encoding_format": "float"}
        if self.dimensions is not None:
            payload["dimensions"] = self.dimensions
        return payload

    def _parse(self, body: dict, n: int) -> tuple[np.ndarray, int | None]:
        data = sorted(body["data"], key=lambda row: row["index"])
        if [row["index"] for row in data] != list(range(len(data))):
            raise ValueError("row indices are not 0..n-1")
        rows = [_decode(row["embedding"]) for row in data]
        usage = body.get("usage") or {}
        tokens = usage.get("prompt_tokens", usage.get("total_tokens"))
        vectors = np.asarray(rows, dtype=np.float32)
        if vectors.ndim == 2 and self.dimensions is not None:
            vectors = normalize_rows(vectors)
        return vectors, int(tokens) if tokens is not None else None


def _decode(embedding) -> list[float] | np.ndarray:
    if isinstance(embedding, str):  # encoding_format "base64": little-endian float32
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return embedding
