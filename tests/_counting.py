"""A provider wrapper that counts the tokenizer's calls, for tests that a text is tokenized once."""

from __future__ import annotations

from collections import Counter

from embedtune.engine import CountingEmbedder


class TokenCounting(CountingEmbedder):
    """Also counts the tokenizer's calls on documents, by text."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.counted: Counter[str] = Counter()

    def count_tokens(self, text: str, kind="document") -> int:
        if kind == "document":
            self.counted[text] += 1
        return self.inner.count_tokens(text, kind)
