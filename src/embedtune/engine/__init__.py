"""Wrappers over any Embedder; each is an Embedder too, so they compose.

The usual stack, outermost first: ``CachingEmbedder(BatchingEmbedder(provider))``: the cache
serves what it holds and hands only the misses to the batcher.
"""

from .batching import BatchingEmbedder, OverLimit
from .cache import CachingEmbedder
from .counting import CountingEmbedder

__all__ = ["BatchingEmbedder", "CachingEmbedder", "CountingEmbedder", "OverLimit"]
