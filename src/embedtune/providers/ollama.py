"""Ollama's embed API: ``POST {base_url}/api/embed`` with a list of inputs per request.

``truncate`` is sent as configured (Ollama's default is to cut inputs over the context silently;
embedtune's length policy counts tokens first, so a text over the limit is handled before it gets
here), and ``keep_alive`` keeps the model loaded between requests.
"""

from __future__ import annotations

import numpy as np

from .http import HttpEmbedder

__all__ = ["OllamaEmbedder"]


class OllamaEmbedder(HttpEmbedder):
    path = "api/embed"
    provider = "ollama"

    def __init__(self, *, truncate: bool = False, keep_alive: str = "5m", **kwargs) -> None:
        super().__init__(**kwargs)
        self.truncate = truncate
        self.keep_alive = keep_alive

    def _payload(self, inputs: list[str]) -> dict:
        return {"model": self.model, "input": inputs, "truncate": self.truncate, "keep_alive": self.keep_alive}

    def _parse(self, body: dict, n: int) -> tuple[np.ndarray, int | None]:
        tokens = body.get("prompt_eval_count")
        return np.asarray(body["embeddings"], dtype=np.float32), int(tokens) if tokens is not None else None
