"""Ensembles: several strategies' answers fused into one, by RRF or a weighted convex combination.

A :class:`Strategy` fuses at most one model with BM25. An :class:`Ensemble` fuses any number of
members, each a full strategy (BM25, any model at any chunker and vector setting, a hybrid, or
any other mode the Retriever runs): each member answers the query as it would alone, ``depth``
documents deep, and those answers are fused. The file::

    version = 1

    [fusion]
    method = "convex"               # rrf | convex
    weights = [0.3, 0.5, 0.2]       # one per member, in order: required by convex, optional for rrf
    normalization = "minmax"        # convex: minmax | zscore
    rrf_k = 60                      # rrf: the rank constant
    depth = 100                     # documents each member's answer holds before fusion

    [rerank]                        # optional: a cross-encoder reorders the fused answer's first `top`
    model = "reranker/"             # (the [rerank] table of a strategy file)
    top = 50

    [[members]]                     # each member holds the tables of a strategy file
    [members.retrieval]
    mode = "bm25"

    [[members]]
    [members.embedder]
    model = "local:all-MiniLM-L6-v2"

:func:`load_strategy` reads either kind of file. :func:`index_ensemble` builds each member into
its own store beside the ensemble file: in a folder of the ensemble's folder (``members/0-bm25``,
...), or in PostgreSQL (and shards) under a table prefix of its own (``embedtune_0_bm25``, ...)
with the file kept in the database. :func:`embedtune.indexer.open_retriever` on that folder or
URI gives an :class:`EnsembleRetriever`, so ``search`` and ``serve`` answer from it and
``compare`` scores through its :meth:`~EnsembleRetriever.combine`. :func:`add_ensemble_shard`
(``embedtune shards add`` on such a store) adds a database to every member's shards.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, InputError
from .filepaths import path_for_file
from .retriever import Hit, Retriever
from .search.fusion import convex, rrf
from .search.rerank import CrossEncoderScorer, PairScorer, RerankSpec, rerank_run
from .search.runs import Run, cut, ranked
from .stores.base import Filter
from .strategy import (
    _NORMALIZATIONS,
    STRATEGY_VERSION,
    Fusion,
    Strategy,
    _toml_value,
    _with_folders,
    read_strategy_file,
    read_toml,
    write_file,
)

if TYPE_CHECKING:
    from .indexer import IndexReport, SourceLike
    from .stores.base import Store
    from .stores.sharded import Rebalance

__all__ = [
    "ENSEMBLE_FILE",
    "Ensemble",
    "EnsembleRetriever",
    "add_ensemble_shard",
    "index_ensemble",
    "load_strategy",
    "member_table",
    "open_ensemble",
    "stored_ensemble",
]

ENSEMBLE_FILE = "ensemble.toml"
MEMBERS_FOLDER = "members"
_FUSION_KEYS = {"method", "weights", "normalization", "rrf_k", "depth"}


@dataclass(frozen=True, kw_only=True)
class Ensemble:
    """Two or more member strategies whose answers are fused.

    ``method`` is RRF (``rrf_k``; ``weights`` optional, 1 each by default) or convex (``weights``
    required, one non-negative number per member, not all 0; scores normalised per query by
    ``normalization``). ``depth`` is how many documents each member's answer holds. ``rerank``
    reorders the fused answer's head with a cross-encoder, as a strategy's ``[rerank]`` does.
    """

    members: tuple[Strategy, ...]
    method: Fusion = Fusion.RRF
    weights: tuple[float, ...] | None = None
    normalization: str = "minmax"
    rrf_k: int = 60
    depth: int = 100
    rerank: RerankSpec | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        if self.rerank is not None and not isinstance(self.rerank, RerankSpec):
            raise ConfigError("rerank must be a RerankSpec (the [rerank] table)")
        if len(self.members) < 2:
            raise ConfigError(f"an ensemble fuses at least two [[members]], not {len(self.members)}")
        for i, member in enumerate(self.members):
            if not isinstance(member, Strategy):
                raise ConfigError(f"members[{i}] must be a Strategy, not {type(member).__name__}")
        names = [member.fingerprint() for member in self.members]
        twice = next((i for i, name in enumerate(names) if names.index(name) != i), None)
        if twice is not None:
            raise ConfigError(f"members[{twice}] repeats members[{names.index(names[twice])}]; list each member once")
        try:
            object.__setattr__(self, "method", Fusion(self.method))
        except ValueError:
            raise ConfigError(f"fusion.method must be rrf | convex, not {self.method!r}") from None
        if self.weights is not None:
            weights = self.weights
            if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
                raise ConfigError(f"fusion.weights must be a list of numbers, one per member, not {weights!r}")
            if len(weights) != len(self.members):
                raise ConfigError(f"fusion.weights has {len(weights)} numbers for {len(self.members)} members")
            if not all(_is_number(w) and w >= 0 for w in weights) or not any(w > 0 for w in weights):
                raise ConfigError(f"fusion.weights must be non-negative numbers, not all 0, not {list(weights)}")
            object.__setattr__(self, "weights", tuple(float(w) for w in weights))
        elif self.method is Fusion.CONVEX:
            raise ConfigError("convex fusion needs fusion.weights, one per member (tune them with compare --fuse)")
        if self.normalization not in _NORMALIZATIONS:
            raise ConfigError(
                f"fusion.normalization must be {' or '.join(_NORMALIZATIONS)}, not {self.normalization!r}"
            )
        for name, value, low in (("fusion.rrf_k", self.rrf_k, 0), ("fusion.depth", self.depth, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be a whole number of at least {low}, not {value!r}")

    # -- what it is ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """A label for tables: ``convex(0.3 bm25, 0.7 local:all-MiniLM-L6-v2)``."""
        if self.weights is None:
            parts = [member.name for member in self.members]
        else:
            parts = [f"{w:g} {member.name}" for w, member in zip(self.weights, self.members)]
        rerank = "" if self.rerank is None else f" > {self.rerank.label}"
        return f"{self.method.value}({', '.join(parts)}){rerank}"

    @property
    def model(self) -> str | None:
        """The members' models, joined by ``+`` (``None`` when no member embeds)."""
        models = list(dict.fromkeys(m.model for m in self.members if m.model is not None))
        return "+".join(models) or None

    def fingerprint(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def member_folders(self) -> list[str]:
        """Each member's store folder inside the ensemble's: its position and a readable slug."""
        return [f"{i}-{_slug(member.name)}" for i, member in enumerate(self.members)]

    # -- TOML ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        fusion: dict[str, Any] = {"method": self.method.value}
        if self.weights is not None:
            fusion["weights"] = list(self.weights)
        if self.method is Fusion.CONVEX:
            fusion["normalization"] = self.normalization
        else:
            fusion["rrf_k"] = self.rrf_k
        fusion["depth"] = self.depth
        members = []
        for member in self.members:
            data = member.to_dict()
            data.pop("version")
            members.append(data)
        out: dict[str, Any] = {"version": STRATEGY_VERSION, "fusion": fusion}
        if self.rerank is not None:
            out["rerank"] = self.rerank.to_dict()
        return out | {"members": members}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "ensemble") -> Ensemble:
        try:
            return _from_dict(data, source)
        except (ConfigError, InputError) as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_toml(self, *, comment: str | None = None, folder: str | os.PathLike[str] | None = None) -> str:
        """The TOML text; ``comment`` lines go on top. For a file in ``folder``, relative folders the
        members and ``[rerank]`` name are written relative to that folder, as :meth:`Strategy.to_toml` does."""
        lines = [f"# {line}".rstrip() for line in (comment or "").splitlines()]
        data = self.to_dict()
        if folder is not None:
            data = _with_folders(data, partial(path_for_file, folder=Path(folder)))
        lines += [f"version = {data['version']}", "", "[fusion]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in data["fusion"].items()]
        if "rerank" in data:
            lines += ["", "[rerank]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in data["rerank"].items()]
        for member in data["members"]:
            lines += ["", "[[members]]"]
            for table, values in member.items():
                lines += [f"[members.{table}]"]
                lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, *, source: str = "ensemble") -> Ensemble:
        return cls.from_dict(read_toml(text, source), source=source)

    def save(self, path: str | os.PathLike[str], *, comment: str | None = None) -> Path:
        """Write the TOML file (never half written); it loads the same from any working directory."""
        return write_file(path, self.to_toml(comment=comment, folder=Path(path).parent))


def load_strategy(path: str | os.PathLike[str]) -> Strategy | Ensemble:
    """The strategy or ensemble a TOML file holds (an ensemble has ``[[members]]``)."""
    data = read_strategy_file(path)
    if "members" in data or "fusion" in data:
        return Ensemble.from_dict(data, source=str(path))
    return Strategy.from_dict(data, source=str(path))


def _from_dict(data: Mapping[str, Any], source: str) -> Ensemble:
    version = data.get("version")
    if version is None:
        raise ConfigError(f"has no version key; add version = {STRATEGY_VERSION} at the top")
    if version != STRATEGY_VERSION:
        raise ConfigError(f"is ensemble version {version!r}; this embedtune reads version {STRATEGY_VERSION}")
    unknown = sorted(set(data) - {"version", "fusion", "rerank", "members"})
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}; an ensemble holds [fusion], [rerank] and [[members]]")
    fusion = data.get("fusion", {})
    if not isinstance(fusion, dict):
        raise ConfigError("fusion must be a table ([fusion])")
    extra = sorted(set(fusion) - _FUSION_KEYS)
    if extra:
        raise ConfigError(f"unknown key fusion.{extra[0]}; known keys: {', '.join(sorted(_FUSION_KEYS))}")
    members = data.get("members")
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise ConfigError("an ensemble needs [[members]] tables, one per strategy it fuses")
    strategies = []
    for i, member in enumerate(members):
        if member.get("version", STRATEGY_VERSION) != STRATEGY_VERSION:
            raise ConfigError(f"members[{i}] is version {member['version']!r}; this embedtune reads {STRATEGY_VERSION}")
        # Each member is a strategy file's tables; its own messages name the member.
        strategies.append(Strategy.from_dict({**member, "version": STRATEGY_VERSION}, source=f"members[{i}]"))
    method = fusion.get("method")
    if method is None:
        raise ConfigError("[fusion] needs method = 'rrf' or 'convex'")
    rerank = data.get("rerank")
    if rerank is not None:
        # A strategy file's [rerank] table, checked by the strategy's own reader.
        rerank = Strategy.from_dict(
            {"version": STRATEGY_VERSION, "retrieval": {"mode": "bm25"}, "rerank": rerank}
        ).rerank
    return Ensemble(
        members=tuple(strategies),
        method=method,
        weights=fusion.get("weights"),
        normalization=fusion.get("normalization", "minmax"),
        rrf_k=fusion.get("rrf_k", 60),
        depth=fusion.get("depth", 100),
        rerank=rerank,
    )


class EnsembleRetriever:
    """Answers queries with an :class:`Ensemble`: its members' retrievers answer, their answers are fused.

    It has the :class:`~embedtune.retriever.Retriever`'s interface: :meth:`runs` (each member's
    answer, ``depth`` deep, keyed ``member0``, ``member1``, ...), :meth:`combine` (their fusion,
    cut to ``k``), :meth:`rerank` (the ensemble's ``[rerank]`` over the fused answer),
    :meth:`search`, :meth:`search_one` and :meth:`close`. Members answer in parallel threads
    (embedding and vector search release the GIL); a member of fusion weight 0 is not asked at
    all (see :attr:`active`). ``owned`` are things to close with it: the member stores and
    embedder stacks that :func:`open_ensemble` opened. ``reranker`` scores pairs for a
    ``[rerank]`` table (by default its folder's cross-encoder, loaded on first use).
    """

    embedder = None  # each member embeds its own queries

    def __init__(
        self,
        ensemble: Ensemble,
        members: Sequence[Retriever],
        *,
        owned: Sequence[Callable[[], None]] = (),
        reranker: PairScorer | None = None,
    ) -> None:
        if len(members) != len(ensemble.members):
            raise ConfigError(f"{len(members)} retrievers for an ensemble of {len(ensemble.members)} members")
        self.strategy = ensemble
        self.members = list(members)
        self.reranker = reranker
        if ensemble.rerank is not None and reranker is None:
            self.reranker = CrossEncoderScorer(ensemble.rerank.model, batch=ensemble.rerank.batch)
        self._owned = list(owned)
        self._pool: ThreadPoolExecutor | None = None
        self._first = threading.Lock()
        self._warm = False

    @staticmethod
    def key(i: int) -> str:
        """The name of member ``i``'s run in :meth:`runs`."""
        return f"member{i}"

    @property
    def active(self) -> list[int]:
        """The members that answer: those of weight above 0 (a member weighted 0 adds nothing, so it is never asked)."""
        weights = self.strategy.weights
        return [i for i in range(len(self.members)) if weights is None or weights[i] > 0]

    def _map(self, call: Callable[[Retriever], Any]) -> list[Any]:
        """``call`` on each active member, in parallel threads; results in :attr:`active` order."""
        active = self.active
        with self._first:
            if not self._warm:
                # The first answer asks the members one after another: each loads its model then, and
                # two models loading at once in threads break (transformers patches torch process-wide
                # while it builds a model on the meta device).
                answers = [call(self.members[i]) for i in active]
                self._warm = True
                return answers
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=len(active), thread_name_prefix="embedtune-member")
        return [future.result() for future in [self._pool.submit(call, self.members[i]) for i in active]]

    def runs(self, queries: Mapping[str, str], *, where: Filter | None = None) -> dict[str, Run]:
        """Each active member's answer to every query, :attr:`Ensemble.depth` documents deep."""
        depth = self.strategy.depth
        answers = self._map(lambda member: member.search(queries, depth, where=where))
        return {self.key(i): answer for i, answer in zip(self.active, answers)}

    def combine(self, runs: Mapping[str, Run], k: int) -> Run:
        """The ensemble's answer from its active members' runs (see :meth:`runs`), each query cut to ``k``."""
        ensemble = self.strategy
        active = self.active
        ordered = [runs[self.key(i)] for i in active]
        weights = None if ensemble.weights is None else [ensemble.weights[i] for i in active]
        query_ids = list(dict.fromkeys(q for run in ordered for q in run))
        aligned = [{q: run.get(q, {}) for q in query_ids} for run in ordered]
        if ensemble.method is Fusion.RRF:
            fused = rrf(aligned, k=ensemble.rrf_k, weights=weights)
        else:
            assert weights is not None  # checked when the ensemble was made
            fused = convex(aligned, weights, method=ensemble.normalization)  # type: ignore[arg-type]
        return cut(fused, k)

    def combine_depth(self, k: int) -> int:
        """How deep :meth:`combine` must cut for a final ``k``: the rerank reads its ``top`` first."""
        return k if self.strategy.rerank is None else max(k, self.strategy.rerank.top)

    def rerank(self, queries: Mapping[str, str], run: Run, k: int) -> Run:
        """``run`` (from :meth:`combine`) with its first ``top`` documents reordered by the
        cross-encoder, reading each document's text from the first member's store; cut to ``k``.
        Unchanged but cut without a ``[rerank]`` table."""
        spec = self.strategy.rerank
        if spec is None or self.reranker is None:
            return cut(run, k)
        heads = sorted({doc for scores in run.values() for doc in ranked(scores, spec.top)})
        texts = {record.doc_id: record.text for record in self.members[0].store.read_records(heads)}
        return cut(rerank_run(run, queries, texts, self.reranker, top=spec.top), k)

    def search(self, queries: Mapping[str, str], k: int = 10, *, where: Filter | None = None) -> Run:
        if k < 1:
            raise ConfigError(f"k must be at least 1, not {k}")
        if not queries:
            return {}
        return self.rerank(queries, self.combine(self.runs(queries, where=where), self.combine_depth(k)), k)

    def search_one(self, text: str, k: int = 10, *, where: Filter | None = None) -> list[Hit]:
        """The ``k`` best documents for one query; each shows the chunk of the member that ranked it highest."""
        if not text.strip():
            raise InputError("the query is empty; give some words to search for")
        if k < 1:
            raise ConfigError(f"k must be at least 1, not {k}")
        depth = self.strategy.depth
        # search_one ranks as search does, so these are the members' runs, with their chunks.
        answers: list[list[Hit]] = self._map(lambda member: member.search_one(text, depth, where=where))
        runs = {self.key(i): {"q": {hit.doc_id: hit.score for hit in hits}} for i, hits in zip(self.active, answers)}
        found = self.rerank({"q": text}, self.combine(runs, self.combine_depth(k)), k).get("q", {})
        shown: dict[str, Hit] = {}
        for rank in range(max((len(hits) for hits in answers), default=0)):
            for hits in answers:  # at equal ranks, the first member's chunk
                if rank < len(hits):
                    shown.setdefault(hits[rank].doc_id, hits[rank])
        return [_rescored(shown[doc], score) for doc, score in found.items()]

    def close(self) -> None:
        """Stop the member threads and close every member, and what :func:`open_ensemble` opened for them."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for member in self.members:
            member.close()
        owned, self._owned = self._owned, []
        for close in owned:
            close()


def _rescored(hit: Hit, score: float) -> Hit:
    return Hit(
        doc_id=hit.doc_id,
        score=score,
        chunk_id=hit.chunk_id,
        start=hit.start,
        end=hit.end,
        text=hit.text,
        metadata=hit.metadata,
    )


# -- building and opening --------------------------------------------------------------------


def _member_store(store: Store, folder: str) -> Store:
    """Where the member named ``folder`` (see :meth:`Ensemble.member_folders`) lives beside ``store``:
    a folder under its ``members/``, or tables of its own in the same PostgreSQL database(s)."""
    from .stores.embedded import EmbeddedStore
    from .stores.postgres import PostgresStore
    from .stores.sharded import ShardedStore

    if isinstance(store, EmbeddedStore):
        return EmbeddedStore(store.path / MEMBERS_FOLDER / folder)
    if isinstance(store, PostgresStore):
        return store.with_table(member_table(store.table, folder))
    if isinstance(store, ShardedStore):
        return store.with_table(member_table(store.shards[0].table, folder))
    raise ConfigError(f"{store.location} cannot hold an ensemble; give --store a folder or a postgresql:// URI")


def member_table(table: str, folder: str) -> str:
    """The table prefix of a member in PostgreSQL: the ensemble's, its position and a readable slug
    (``embedtune_1_local_all_minilm_l6_v2``), cut to the 40 characters a prefix may have."""
    position = folder.partition("-")[0]
    if len(f"{table}_{position}_") > _TABLE_PREFIX:
        raise ConfigError(
            f"table={table} is too long to name an ensemble's members ({table}_{position}_...); "
            f"use a table= of at most {_TABLE_PREFIX - len(position) - 2} characters"
        )
    return f"{table}_{re.sub(r'[^A-Za-z0-9]+', '_', folder)}"[:_TABLE_PREFIX].rstrip("_")


_TABLE_PREFIX = 40  # the longest table prefix a PostgreSQL store takes


def stored_ensemble(store: Store) -> Ensemble | None:
    """The ensemble ``store`` holds (its file, written when it was built), else ``None``."""
    from .stores.embedded import EmbeddedStore
    from .stores.postgres import PostgresStore
    from .stores.sharded import ShardedStore

    source = f"the ensemble of {store.location}"
    if isinstance(store, EmbeddedStore):
        path = store.path / ENSEMBLE_FILE
        # Read as a file: the folders it names are relative to the store's folder (see Ensemble.save).
        return Ensemble.from_dict(read_strategy_file(path), source=source) if path.is_file() else None
    text: str | None = None
    if isinstance(store, (PostgresStore, ShardedStore)):
        text = store.read_file(ENSEMBLE_FILE)
    return None if text is None else Ensemble.from_toml(text, source=source)


def _check_home(store: Store) -> None:
    """Refuse, before anything is written, a store that holds something other than an ensemble's members."""
    from .stores.embedded import EmbeddedStore

    if isinstance(store, EmbeddedStore):
        folder = store.path
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{folder} is a file; give --store a folder for the ensemble's stores")
        # Only what index_ensemble writes: a single strategy's store (or anything else) is never mixed in.
        strangers = (
            sorted(p.name for p in folder.iterdir() if p.name not in (ENSEMBLE_FILE, MEMBERS_FOLDER))
            if folder.is_dir()
            else []
        )
        if not strangers:
            return
        try:
            manifest = store.read_manifest()
        except InputError:  # not a store we can read: the folder's own files are named instead
            manifest = None
        if manifest is None:
            raise ConfigError(
                f"{folder} holds {strangers[0]}, not an ensemble's stores; "
                "index the ensemble into another or an empty --store"
            )
        elsewhere = "another or an empty --store"
    else:
        manifest = store.read_manifest()
        if manifest is None:
            return
        elsewhere = "another ?table= or database"
    raise ConfigError(
        f"{store.location} holds a single strategy's store ({_held_name(manifest.strategy)}); "
        f"index the ensemble into {elsewhere}, or delete this store first"
    )


def _held_name(strategy: Mapping[str, Any]) -> str:
    """The name of the strategy a store's manifest holds, as far as it can be read."""
    try:
        return Strategy.from_dict(strategy).name
    except ConfigError:  # a manifest of another version: still a single strategy's store
        return "a strategy of another version"


def index_ensemble(
    documents: Sequence[SourceLike],
    ensemble: Ensemble,
    store_uri: str,
    *,
    cache: str | os.PathLike[str] | None = None,
    delete_missing: bool = True,
    keep: Sequence[str] = (),
    on_member: Callable[[int, Strategy], Any] | None = None,
    ray: Any = None,
) -> list[IndexReport]:
    """Build each member of ``ensemble`` into its own store beside ``store_uri``, then the ensemble file.

    For a folder, the members are folders under its ``members/`` and the file is
    ``ensemble.toml`` in it; for PostgreSQL (``?table=NAME``, default ``embedtune``) each member
    has tables of its own (``NAME_0_bm25_*``, see :func:`member_table`), and the file is kept in
    ``NAME_files``; for shards, the same on every shard. Each member is indexed as ``embedtune
    index`` indexes a strategy (incremental, resumable, its store refusing another strategy's
    vectors). The ensemble file is written last, so a store with one is complete.
    ``on_member(i, strategy)`` is called before member ``i`` is built, and what it returns (a
    progress callback or ``None``) follows that member's indexing.
    """
    from .engine import close_stack
    from .factory import build_embedder
    from .indexer import index_documents
    from .sparse.encoder import open_sparse_encoder
    from .sparse.side import check_sparse_store
    from .stores import open_store
    from .stores.embedded import EmbeddedStore
    from .stores.postgres import PostgresStore
    from .stores.sharded import ShardedStore

    home = open_store(store_uri)
    try:
        _check_home(home)
        stores = [_member_store(home, name) for name in ensemble.member_folders()]
        for member, store in zip(ensemble.members, stores):
            if member.uses_sparse:
                check_sparse_store(store)  # refused before any member is built
        reports = []
        for i, (member, store) in enumerate(zip(ensemble.members, stores)):
            progress = on_member(i, member) if on_member is not None else None
            embedder = None if member.embedder is None else build_embedder(member.embedder, cache=cache, ray=ray)
            sparse = None if member.sparse is None else open_sparse_encoder(member.sparse, cache=cache)
            try:
                reports.append(
                    index_documents(
                        documents,
                        member,
                        store,
                        embedder,
                        delete_missing=delete_missing,
                        keep=keep,
                        on_progress=progress,
                        sparse=sparse,
                    )
                )
            finally:
                store.close()
                if embedder is not None:
                    close_stack(embedder)
        if isinstance(home, EmbeddedStore):
            comment = "built by embedtune index: each member's store is under members/"
            ensemble.save(home.path / ENSEMBLE_FILE, comment=comment)
        elif isinstance(home, (PostgresStore, ShardedStore)):
            comment = "built by embedtune index: each member's tables are named after it, beside these"
            home.write_file(ENSEMBLE_FILE, ensemble.to_toml(comment=comment))
    finally:
        home.close()
    return reports


def open_ensemble(store: Store, *, cache: str | os.PathLike[str] | None = None) -> EnsembleRetriever:
    """The :class:`EnsembleRetriever` of the ensemble ``store`` holds: each member's store opened as
    ``search`` opens one. Members whose vectors came from the same model and settings share one
    loaded embedder; the members' stores and embedders close with the retriever."""
    from .engine import close_stack
    from .indexer import open_retriever

    ensemble = stored_ensemble(store)
    if ensemble is None:
        raise ConfigError(f"{store.location} holds no ensemble; build one with embedtune index --strategy ENSEMBLE")
    members: list[Retriever] = []
    owned: list[Callable[[], None]] = []
    loaded: dict[tuple[str, str], Any] = {}  # (embedder spec, vectors' fingerprint) -> the embedder built for it
    try:
        for name in ensemble.member_folders():
            member_store = _member_store(store, name)
            owned.append(member_store.close)
            key = _embedder_key(member_store)
            retriever = open_retriever(member_store, cache=cache, embedder=loaded.get(key) if key else None)
            if not isinstance(retriever, Retriever):
                raise ConfigError(
                    f"{member_store.location} is an ensemble inside an ensemble; rebuild {store.location}"
                )
            if retriever.embedder is not None and key is not None and key not in loaded:
                loaded[key] = retriever.embedder
                owned.append(partial(close_stack, retriever.embedder))
            members.append(retriever)
    except BaseException:
        for close in owned:
            close()
        raise
    return EnsembleRetriever(ensemble, members, owned=owned)


def add_ensemble_shard(
    uris: Sequence[str],
    new_uri: str,
    *,
    on_member: Callable[[int, Strategy], Callable[[int, int], None] | None] | None = None,
) -> list[Rebalance]:
    """Add the empty database ``new_uri`` to the PostgreSQL store ``uris`` (its shards, or one
    database) that holds an ensemble, and rebalance each member's tables as
    :func:`~embedtune.stores.sharded.add_shard` does (each document's sparse row moving with it);
    then the ensemble's file is kept on the new shard too, last, so a shard with it is complete.
    Killed, it is rerun with the same arguments and carries on. ``on_member(i, strategy)`` is
    called before member ``i`` moves; what it returns follows that member's progress.
    """
    from .stores.postgres import PostgresStore, with_table
    from .stores.sharded import ShardedStore, add_shard

    with ShardedStore.from_uris(uris) as home:
        text = home.read_file(ENSEMBLE_FILE)
        table, location = home.shards[0].table, home.location
    if text is None:
        raise ConfigError(f"{location} holds no ensemble; add a shard to a single strategy's store with add_shard")
    ensemble = Ensemble.from_toml(text, source=f"the ensemble of {location}")
    with PostgresStore(with_table(new_uri, table)) as new:
        held = new.read_file(ENSEMBLE_FILE)
        if new.read_manifest() is not None or held not in (None, text):
            raise ConfigError(f"{new.location} already holds another store; give an empty database")
    prefixes = [member_table(table, name) for name in ensemble.member_folders()]
    for prefix in prefixes:  # every member is there before any moves: none is left on fewer shards
        for uri in uris:
            with PostgresStore(with_table(uri, prefix)) as member:
                if member.read_manifest() is None:
                    raise ConfigError(
                        f"{member.location} lacks a member of the ensemble of {location}; "
                        "rebuild it with embedtune index --strategy ENSEMBLE before adding a shard"
                    )
    moved = []
    for i, prefix in enumerate(prefixes):
        progress = on_member(i, ensemble.members[i]) if on_member is not None else None
        moved.append(add_shard([with_table(uri, prefix) for uri in uris], with_table(new_uri, prefix), progress))
    with PostgresStore(with_table(new_uri, table)) as new:
        new.write_file(ENSEMBLE_FILE, text)
    return moved


def _embedder_key(store: Store) -> tuple[str, str] | None:
    """What decides whether two members can share a loaded model: the spec and the vectors' fingerprint."""
    manifest = store.read_manifest()
    if manifest is None or manifest.embedder_fingerprint is None:
        return None
    spec = manifest.strategy.get("embedder")
    return json.dumps(spec, sort_keys=True, default=str), manifest.embedder_fingerprint


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")[:60] or "member"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
