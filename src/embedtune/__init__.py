"""embedtune: find, build and prove the best embedding strategy for a retrieval corpus.

The public API is small; everything else is reachable through its module.
"""

from .embedder import Embedder, Kind
from .engine import BatchingEmbedder, CachingEmbedder, LengthPolicy, OverLimit
from .errors import EmbedtuneError
from .factory import EmbedderSpec, build_embedder, load_config, open_provider

__all__ = [
    "BatchingEmbedder",
    "CachingEmbedder",
    "Embedder",
    "EmbedderSpec",
    "EmbedtuneError",
    "Kind",
    "LengthPolicy",
    "OverLimit",
    "build_embedder",
    "load_config",
    "open_provider",
]
__version__ = "0.1.0"
