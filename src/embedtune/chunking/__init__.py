"""Chunking: texts into pieces that the target model reads whole.

Every chunker counts tokens with the Embedder it is given (prefix and special tokens included), so
no chunk exceeds its limit; each chunk keeps its character offsets into the original text.
``make_chunker("semantic:rule=iqr", embedder)`` builds one from a spec.
"""

from .base import Chunk, Chunker, chunk_documents
from .chunkers import FixedChunker, PassageChunker, RecursiveChunker, SentenceChunker
from .factory import CHUNKER_NAMES, make_chunker, parse_chunker_spec
from .semantic import SemanticChunker
from .sentences import split_sentences

__all__ = [
    "CHUNKER_NAMES",
    "Chunk",
    "Chunker",
    "FixedChunker",
    "PassageChunker",
    "RecursiveChunker",
    "SemanticChunker",
    "SentenceChunker",
    "chunk_documents",
    "make_chunker",
    "parse_chunker_spec",
    "split_sentences",
]
