"""Adapters that put embedtune's stack inside LangChain, LlamaIndex and Haystack.

Each adapter wraps the library's own stack (length policy, cache, batching, the store's strategy),
so caching and query/document prefixes hold inside the framework as they do in embedtune. Each
lives in its own module behind its extra, and importing this package imports no framework:

- :mod:`embedtune.integrations.langchain` (``pip install "embedtune[langchain]"``):
  ``EmbedtuneEmbeddings`` and ``EmbedtuneRetriever``;
- :mod:`embedtune.integrations.llamaindex` (``pip install "embedtune[llamaindex]"``):
  ``EmbedtuneEmbedding`` and ``EmbedtuneRetriever``;
- :mod:`embedtune.integrations.haystack` (``pip install "embedtune[haystack]"``):
  ``EmbedtuneTextEmbedder``, ``EmbedtuneDocumentEmbedder`` and ``EmbedtuneRetriever``.

An adapter closes (``close()``) what it opened itself: a stack it built from a model, a store it
opened from a URI. An embedder, store or retriever handed to it stays open; its owner closes it.

Threads: the frameworks call from thread pools (async variants, LangChain's ``batch``); the
stacks and stores take calls from any thread, and awaited variants run in a worker thread.
"""

__all__: list[str] = []
