"""Training pairs for adaptation: a query, the text it should find, and optional hard negatives."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embedtune.errors import InputError
from embedtune.evaluation.collections import read_jsonl

if TYPE_CHECKING:
    from embedtune.evaluation.collections import Collection

__all__ = ["Pair", "pairs_from_qrels", "read_pairs", "sample_pairs", "split_dev"]


@dataclass(frozen=True, slots=True)
class Pair:
    """One training example.

    ``positive_id`` names the source document when the pair came from a collection (labels,
    generation), so miners and filters can tell the positive apart from its negatives.
    ``source`` says where the query came from: ``labels``, ``jsonl`` or a generator's name.
    """

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    positive_id: str | None = None
    source: str = "labels"


def pairs_from_qrels(collection: Collection, split: str = "train") -> list[Pair]:
    """One pair per relevant (query, document) judgment of ``split``; the positive is the
    document's full text (title + text), as retrieval indexes it."""
    queries, qrels = collection.split(split)
    return [
        Pair(query=queries[qid], positive=collection.documents_text(doc_id), positive_id=doc_id, source="labels")
        for qid, judged in qrels.items()
        for doc_id, relevance in judged.items()
        if relevance >= 1
    ]


def read_pairs(path: str | Path, corpus: Collection | None = None) -> list[Pair]:
    """Pairs from a JSONL file, one object a line, in either of two shapes:

    - texts: ``{"query": ..., "positive": ..., "negatives": [...]}`` (``negatives`` optional);
    - ids in ``corpus``: ``{"query": ..., "positive_id": ..., "negative_ids": [...]}``.

    Ids that ``corpus`` lacks are gathered and refused in one line naming a few.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pairs file {path} does not exist")
    pairs: list[Pair] = []
    unknown: list[str] = []
    for line_no, row in read_jsonl(path):  # a bad line or an unreadable file is one InputError
        if not isinstance(row.get("query"), str) or not row["query"].strip():
            raise InputError(f'{path} line {line_no} has no "query" text; each line needs one')
        if "positive_id" in row:
            pairs.append(_pair_from_ids(row, corpus, path, line_no, unknown))
        elif isinstance(row.get("positive"), str) and row["positive"].strip():
            negatives = _strings(row.get("negatives", []), "negatives", path, line_no)
            pairs.append(Pair(query=row["query"], positive=row["positive"], negatives=negatives, source="jsonl"))
        else:
            raise InputError(
                f'{path} line {line_no} has neither a "positive" text nor a "positive_id"; give one of them'
            )
    if unknown:
        shown = ", ".join(repr(i) for i in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise InputError(
            f"{path} names {len(unknown)} document id(s) missing from collection {corpus.name!r} "  # type: ignore[union-attr]
            f"({shown}); fix the ids or give the collection they come from"
        )
    return pairs


def _pair_from_ids(row: dict, corpus: Collection | None, path: Path, line_no: int, unknown: list[str]) -> Pair:
    if corpus is None:
        raise InputError(f"{path} line {line_no} names documents by id; give the collection that holds them")
    ids = [row["positive_id"], *row.get("negative_ids", [])] if isinstance(row.get("negative_ids", []), list) else None
    if ids is None or not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in ids):
        raise InputError(f"{path} line {line_no}: positive_id and negative_ids must be ids (strings)")
    ids = [str(i) for i in ids]
    missing = [i for i in ids if i not in corpus.corpus]
    unknown.extend(i for i in missing if i not in unknown)
    if missing:
        return Pair(query=row["query"], positive="", positive_id=ids[0], source="jsonl")
    return Pair(
        query=row["query"],
        positive=corpus.documents_text(ids[0]),
        negatives=tuple(corpus.documents_text(i) for i in ids[1:]),
        positive_id=ids[0],
        source="jsonl",
    )


def _strings(value: object, key: str, path: Path, line_no: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{path} line {line_no}: {key!r} must be a list of texts")
    return tuple(v for v in value if v.strip())


def split_dev(pairs: Sequence[Pair], fraction: float = 0.1, *, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """``(train, dev)``: a seeded ``fraction`` of the distinct queries goes to dev with all its
    pairs, so no dev query is ever trained on. Order within each part follows ``pairs``."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
    queries = sorted({pair.query for pair in pairs})
    random.Random(seed).shuffle(queries)
    dev_queries = set(queries[: max(1, round(fraction * len(queries)))]) if len(queries) > 1 else set()
    train = [pair for pair in pairs if pair.query not in dev_queries]
    dev = [pair for pair in pairs if pair.query in dev_queries]
    return train, dev


def sample_pairs(pairs: Sequence[Pair], max_pairs: int, *, seed: int = 0) -> list[Pair]:
    """At most ``max_pairs`` of ``pairs``, drawn so every query keeps one pair before any query
    gets a second (then a third, ...): a budget thins the many pairs of a few queries rather than
    dropping whole queries. With fewer slots than queries, a seeded sample of the queries keeps one
    pair each. Seeded; the kept pairs stay in their input order."""
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be at least 1, not {max_pairs}")
    if len(pairs) <= max_pairs:
        return list(pairs)
    rng = random.Random(seed)
    by_query: dict[str, list[int]] = {}
    for index, pair in enumerate(pairs):
        by_query.setdefault(pair.query, []).append(index)
    queues = [by_query[query] for query in sorted(by_query)]
    rng.shuffle(queues)  # which queries go first in a round: only matters when a round is cut short
    for queue in queues:
        rng.shuffle(queue)
    kept: list[int] = []
    for round_ in range(max(len(queue) for queue in queues)):
        for queue in queues:
            if round_ < len(queue):
                kept.append(queue[round_])
                if len(kept) == max_pairs:
                    return [pairs[i] for i in sorted(kept)]
    return [pairs[i] for i in sorted(kept)]  # pragma: no cover - len(pairs) > max_pairs returns above
