"""Embedding providers: each implements the Embedder seam for one kind of backend.

The modules import their heavy libraries lazily, so importing a provider module is cheap; the
factory (``embedtune.factory``) picks one by URI.
"""
