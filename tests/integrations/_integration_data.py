"""Texts, specs and a small built store that the adapters' tests share (imported by conftest and tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from embedtune.embedder import Embedder
from embedtune.factory import EmbedderSpec
from embedtune.indexer import index_documents
from embedtune.retriever import Hit, Retriever
from embedtune.stores.embedded import EmbeddedStore
from embedtune.strategy import Strategy

MINILM = EmbedderSpec(model="local:all-MiniLM-L6-v2")
FAKE = EmbedderSpec(model="fake:hash-256")
PREFIXED = EmbedderSpec(model="fake:hash-256", query_prefix="query: ", document_prefix="passage: ")

TEXTS = [
    "Mitochondria produce most of the chemical energy a cell needs.",
    "The cell cycle ends when one cell divides into two daughter cells.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "A black hole bends light so strongly that nothing escapes it.",
    "Superconductors carry current with no resistance when cold enough.",
    "Quarks are held together inside protons by the strong force.",
    "Bread rises because yeast ferments sugar and releases carbon dioxide.",
    "Searing meat browns its surface through the Maillard reaction.",
    "Emulsions such as mayonnaise keep oil and water mixed with lecithin.",
    "Cells divide by mitosis, copying their chromosomes first.",
    "Neutron stars spin hundreds of times per second.",
    "Slow cooking softens collagen in tough cuts of meat.",
]
TOPICS = ["biology", "biology", "biology", "physics", "physics", "physics", "cooking", "cooking", "cooking"]
QUERY = "how do cells divide?"


@dataclass(frozen=True)
class Doc:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)


def corpus() -> list[Doc]:
    topics = [*TOPICS, "biology", "physics", "cooking"]
    return [Doc(f"doc-{i}", text, {"topic": topic, "n": i}) for i, (text, topic) in enumerate(zip(TEXTS, topics))]


@dataclass
class BuiltStore:
    """A store built from :func:`corpus`, and the library's own answer to compare adapters with."""

    path: Path
    strategy: Strategy
    embedder: Embedder

    def expected(self, query: str, k: int, where: dict | None = None) -> list[Hit]:
        """``Retriever.search_one`` on a store opened apart from the adapter's."""
        with EmbeddedStore(self.path) as store:
            return Retriever(self.strategy, store, self.embedder).search_one(query, k, where=where)


def build_store(path: Path, spec: EmbedderSpec, embedder: Embedder, chunker: str = "none") -> BuiltStore:
    strategy = Strategy(embedder=spec, chunker=chunker)
    with EmbeddedStore(path) as store:
        index_documents(corpus(), strategy, store, embedder)
    return BuiltStore(path, strategy, embedder)
