"""Wrappers over any Embedder; each is an Embedder too, so they compose.

The usual stack, outermost first: ``LengthPolicy(CachingEmbedder(BatchingEmbedder(provider)))``.
The length policy decides what a text over the model's limit becomes; the cache serves what it
holds and hands only the misses to the batcher, which fills each model call.
"""

from .batching import BatchingEmbedder
from .cache import CachingEmbedder
from .counting import CountingEmbedder
from .limits import LengthPolicy, OverLimit

__all__ = [
    "BatchingEmbedder",
    "CachingEmbedder",
    "CountingEmbedder",
    "LengthPolicy",
    "OverLimit",
    "close_stack",
    "find_layer",
    "whole_calls",
]


def find_layer(embedder, cls):
    """The first wrapper of type ``cls`` in a stack (following ``.inner``), or None."""
    while embedder is not None:
        if isinstance(embedder, cls):
            return embedder
        embedder = getattr(embedder, "inner", None)
    return None


def close_stack(embedder) -> None:
    """Close every layer of a stack that holds a resource (a cache file, an HTTP client)."""
    while embedder is not None:
        close = getattr(embedder, "close", None)
        if callable(close):
            close()
        embedder = getattr(embedder, "inner", None)


def whole_calls(embedder) -> bool:
    """True when a layer of the stack runs each call as one costly job (``whole_calls``: a Ray
    cluster starts its actors per job). Callers that slice their input for a progress bar then
    send it whole; the cache still commits vectors as they come back."""
    while embedder is not None:
        if getattr(embedder, "whole_calls", False):
            return True
        embedder = getattr(embedder, "inner", None)
    return False
