"""The ``[sparse]`` table of a strategy: which learned sparse model, and how it is fed.

Kept apart from the encoder so that reading a strategy file imports neither scipy nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..catalogue import CATALOGUE, lookup_card
from ..errors import ConfigError, UnknownModelError

__all__ = ["DEFAULT_BATCH", "PROVIDER", "SparseSpec"]

PROVIDER = "sparse"
DEFAULT_BATCH = 32


@dataclass(frozen=True, kw_only=True)
class SparseSpec:
    """A sparse model and how it is fed: the ``[sparse]`` table of a strategy file."""

    model: str
    max_batch: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.startswith(f"{PROVIDER}:") or self.model == "sparse:":
            raise ConfigError(
                f"sparse.model must be a sparse model URI such as sparse:splade-tiny or sparse:/path/to/folder, "
                f"not {self.model!r}"
            )
        name = self.model.partition(":")[2]
        if not looks_like_path(name) and lookup_card(self.model) is None:
            known = ", ".join(c.uri for c in CATALOGUE if c.provider == PROVIDER)
            raise UnknownModelError(
                f"unknown sparse model {self.model!r}; known: {known}, or a SparseEncoder folder (sparse:/path/to/folder)"
            )
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ConfigError(f"sparse.max_batch must be a whole number of at least 1, not {self.max_batch!r}")


def looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or (bool(name) and Path(name).exists())
