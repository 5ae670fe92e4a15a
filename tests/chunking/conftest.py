"""Embedders for the chunking tests: MiniLM's real tokenizer, with real or hashed vectors."""

from __future__ import annotations

import numpy as np
import pytest

from embedtune.providers.fake import HashEmbedder


class MiniLMTokensHashVectors:
    """Counts and cuts with MiniLM's own tokenizer but embeds by word hashing: the semantic
    chunker's limits meet the real tokenizer while its vectors stay cheap."""

    def __init__(self, minilm) -> None:
        self._tokens = minilm
        self._vectors = HashEmbedder(name="fake:minilm-tokens", dim=64, max_tokens=minilm.max_tokens)
        self.name = "fake:minilm-tokens"
        self.dim = 64
        self.max_tokens = minilm.max_tokens

    def count_tokens(self, text: str, kind: str = "document") -> int:
        return self._tokens.count_tokens(text, kind)

    def token_offsets(self, text: str):
        return self._tokens.token_offsets(text)

    def fingerprint(self, kind: str = "document") -> str:
        return self._vectors.fingerprint(kind)

    def embed(self, texts, kind: str = "document") -> np.ndarray:
        return self._vectors.embed(texts, kind)


@pytest.fixture(scope="session")
def minilm_hashed(minilm):
    return MiniLMTokensHashVectors(minilm)


@pytest.fixture(scope="session")
def hashed():
    """Word counts as tokens, no offsets: the chunkers' word-packing path."""
    return HashEmbedder(dim=64, max_tokens=512)
