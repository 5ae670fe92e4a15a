"""The dev split that picks adaptation's checkpoint, chosen so it can see whether adaptation generalises.

A dev split carved from the training pairs' own source flatters adaptation. Measured on a
collection kept apart from this project: fine-tuning MiniLM on 2,700 of its training pairs raised
such a dev split by +0.034 nDCG@10 and its test queries by +0.001; fine-tuning on title-generated
queries raised a generated dev split by +0.006 and lowered test by 0.010. So, in order:

1. the collection's own ``dev`` split, when it has one (and it is not what is trained on);
2. labelled pairs: whole queries whose relevant documents no training pair uses (queries that
   share a document move together, so a dev document is never a training positive);
3. generated pairs: the same document hold-out, and the dev queries for those documents written by
   another generator (span for title, title for span and chat), kept by the same BM25 filter;
   when the other generator has nothing to say about them, the held-out pairs themselves;
4. pairs from a file: the document hold-out of 2.

Only 1 and 2 are real queries. A gain measured on generated queries (3, or a file's pairs in 4)
is *unverified*: the workflow labels it so in its output and in the model's card.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..evaluation.collections import Collection, Qrels
from .pairs import Pair, pairs_from_qrels

__all__ = ["DevSplit", "held_out_qrels", "hold_out_documents", "honest_dev"]

_MIN_DEV_QUERIES = 10  # fewer other-generator queries than this (or than half the held-out ones): use those


@dataclass(frozen=True, kw_only=True)
class DevSplit:
    """Training pairs, dev pairs, where the dev queries came from (words) and whether they are real."""

    train: list[Pair]
    dev: list[Pair]
    kind: str
    verified: bool


def honest_dev(
    pairs: Sequence[Pair],
    *,
    collection: Collection | None = None,
    split: str = "train",
    fraction: float = 0.1,
    max_queries: int = 500,
    seed: int = 0,
) -> DevSplit:
    """The dev split of the module docstring, at most ``max_queries`` queries (a seeded sample:
    dev is scored at every checkpoint, so it must stay cheap)."""
    if collection is not None and "dev" in collection.qrels and split != "dev":
        dev = _cap(pairs_from_qrels(collection, "dev"), max_queries, seed)
        return DevSplit(train=list(pairs), dev=dev, kind=f"{collection.name}'s own dev split", verified=True)
    train, held = hold_out_documents(pairs, fraction, seed=seed)
    sources = {pair.source for pair in pairs}
    if sources == {"labels"}:
        kind, verified = "labelled queries whose documents no training pair uses", True
    elif sources <= {"title", "span", "chat"}:
        other = _other_generator(sources)
        written = _other_queries(held, collection, other, seed) if other and collection is not None else []
        enough = min(_MIN_DEV_QUERIES, max(1, len({p.query for p in held}) // 2))
        if len({p.query for p in written}) >= enough:
            held, kind = written, f"{other} queries (another generator) on documents never trained on"
        else:
            kind = f"{'/'.join(sorted(sources))} queries on documents never trained on"
        verified = False
    else:
        kind, verified = "pairs of the same file whose documents no training pair uses", False
    return DevSplit(train=train, dev=_cap(held, max_queries, seed), kind=kind, verified=verified)


def held_out_qrels(collection: Collection, split: str = "train", *, seed: int = 0) -> Qrels:
    """The judgments of the real queries a fine-tune on ``split``'s labels (``adapt``, same ``seed``)
    keeps out of training as its dev split: the collection's ``dev`` split when it has one, else the
    queries of ``split`` :func:`honest_dev` holds out.

    A fine-tuned model has seen the rest of ``split``, so fusion weights tuned there flatter it;
    tuned on these, they are chosen on queries no model trained on.
    """
    source = "dev" if "dev" in collection.qrels and split != "dev" else split
    dev = honest_dev(pairs_from_qrels(collection, split), collection=collection, split=split, seed=seed).dev
    texts = {pair.query for pair in dev}
    queries, qrels = collection.split(source)
    return {qid: dict(qrels[qid]) for qid, text in queries.items() if text in texts}


def hold_out_documents(pairs: Sequence[Pair], fraction: float, *, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """``(train, held)``: about ``fraction`` of the queries held out, whole, with every other query
    that names one of their documents, so no held-out document is a training positive. Queries are
    grouped by the documents they share (connected components), and a seeded draw of groups is held
    out; a group holding over half the queries is never held out (it would leave little to train on)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for pair in pairs:  # a query and its documents are one group
        parent[root("q:" + pair.query)] = root("d:" + _doc_key(pair))
    groups: dict[str, set[str]] = {}
    for pair in pairs:
        groups.setdefault(root("q:" + pair.query), set()).add(pair.query)
    queries = sum(len(g) for g in groups.values())
    order = sorted(groups, key=lambda g: min(groups[g]))
    random.Random(seed).shuffle(order)
    wanted = max(1, round(fraction * queries)) if queries > 1 else 0
    held_queries: set[str] = set()
    for group in order:
        if len(held_queries) >= wanted:
            break
        if len(groups[group]) <= queries / 2:
            held_queries |= groups[group]
    train = [pair for pair in pairs if pair.query not in held_queries]
    held = [pair for pair in pairs if pair.query in held_queries]
    return train, held


def _doc_key(pair: Pair) -> str:
    return pair.positive_id or hashlib.sha1(pair.positive.encode("utf-8")).hexdigest()


def _other_generator(sources: set[str]) -> str | None:
    for other in ("span", "title"):
        if other not in sources:
            return other
    return None


def _other_queries(held: list[Pair], collection: Collection, generator: str, seed: int) -> list[Pair]:
    from .generate import filter_consistent, generate_pairs

    documents = {
        p.positive_id: collection.corpus[p.positive_id]
        for p in held
        if p.positive_id is not None and p.positive_id in collection.corpus
    }
    if not documents:
        return []
    made = generate_pairs(documents, generator, seed=seed)
    return filter_consistent(made, collection.corpus, by="bm25", top_k=10) if made else []


def _cap(pairs: list[Pair], max_queries: int, seed: int) -> list[Pair]:
    queries = sorted({pair.query for pair in pairs})
    if len(queries) <= max_queries:
        return pairs
    random.Random(seed).shuffle(queries)
    kept = set(queries[:max_queries])
    return [pair for pair in pairs if pair.query in kept]
