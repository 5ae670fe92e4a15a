"""Learned sparse retrieval: a SPLADE-style model's term weights, searched through an inverted index.

- :mod:`.spec`: the ``[sparse]`` table of a strategy (:class:`SparseSpec`).
- :mod:`.encoder`: the :class:`SparseEncoder` seam, the sentence-transformers model behind it,
  and its cache rows.
- :mod:`.index`: :class:`SparseIndex`, a document x vocabulary CSR matrix searched by sparse dot
  products.
- :mod:`.side`: the index kept in a store beside its lexical one, in step with its documents.

Only :mod:`.spec` is imported here: the rest needs scipy (and torch, to encode).
"""

from .spec import SparseSpec

__all__ = ["SparseSpec"]
