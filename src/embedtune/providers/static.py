"""Static models: a model2vec folder, one vector per token, averaged (``embedtune distill`` makes them).

A static model is a table of token vectors distilled from a sentence-transformers model; a text's
vector is the mean of its tokens' vectors. It runs on numpy and the tokenizer alone (no torch),
two orders of magnitude faster than the model it came from, for some loss of quality.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..embedder import Kind, check_kind, empty_vectors
from ..errors import ModelLoadError, require
from .local import weights_revision

__all__ = ["STATIC_MAX_TOKENS", "StaticEmbedder", "is_static_folder"]

# A mean of token vectors has no window, so no length is too long for the model itself. The limit
# is ours: 8,192 tokens (as OpenAI's models) keeps a runaway input's cost bounded, and a text over
# it follows the length policy like any other model's.
STATIC_MAX_TOKENS = 8192


def is_static_folder(folder: Path) -> bool:
    """True for a model2vec folder (its config.json says ``"model_type": "model2vec"``)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "model2vec"


class StaticEmbedder:
    """A model2vec static model loaded from a folder, prefixes applied per kind.

    Vectors are the plain mean of the token vectors, cut to ``dims`` and then normalised to unit
    length in float32, as the other local models are.
    """

    def __init__(
        self,
        folder: Path,
        *,
        name: str,
        query_prefix: str = "",
        document_prefix: str = "",
        dims: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        model2vec = require("model2vec", "distill")
        import tokenizers

        try:
            # Float32 so the mean is taken at full precision (distilled tables are stored as float16).
            # Normalisation and truncation are chosen per call in embed(), so the folder's own
            # settings stay as they are (changing them at load makes model2vec log a warning).
            self._model = model2vec.StaticModel.from_pretrained(folder, quantize_to="float32")
            counter = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load the static model {name!r} from {folder}: {exc}") from exc
        counter.no_truncation()
        counter.no_padding()
        self._counter = counter  # apart from the model's own, whose truncation embed() switches
        # Tokenising is all the work a static model does, and the length policy and the batcher
        # each count a text before it is embedded: remember recent counts so each text is counted once.
        self._count = lru_cache(maxsize=4096)(self._count_uncached)
        self._lock = threading.Lock()
        native = int(self._model.dim)
        if dims is not None and not 0 < dims <= native:
            raise ModelLoadError(f"dims={dims} is not possible for {name}: its vectors have {native}")
        self.name = name
        self.dim = dims or native
        self.max_tokens = max_tokens or STATIC_MAX_TOKENS
        self.revision = weights_revision(folder)
        self._prefixes = {"query": query_prefix, "document": document_prefix}

    def fingerprint(self, kind: Kind = "document") -> str:
        prefix = self._prefixes[check_kind(kind)]
        return (
            f"local|{self.name}|static|rev={self.revision}|dim={self.dim}|norm=True"
            f"|max={self.max_tokens}|prefix={prefix!r}"
        )

    def count_tokens(self, text: str, kind: Kind = "document") -> int:
        return self._count(self._prefixes[check_kind(kind)] + text)

    def _count_uncached(self, text: str) -> int:
        # A static model adds no special tokens: each token of the text is one vector in the mean.
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the tokens of ``text``, for chunkers that cut on token boundaries."""
        return [(int(s), int(e)) for s, e in self._counter.encode(text, add_special_tokens=False).offsets]

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        prefix = self._prefixes[check_kind(kind)]
        if not texts:
            return empty_vectors(self.dim)
        with self._lock:  # encode() sets and resets its tokenizer's truncation: one call at a time
            vectors = self._model.encode(
                [prefix + t for t in texts],
                normalize=False,
                max_length=self.max_tokens,
                batch_size=max(len(texts), 1),
                use_multiprocessing=False,
            )
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)[:, : self.dim]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
