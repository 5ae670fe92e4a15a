"""What ``embedtune adapt`` does, step by step: pairs in, a model or adapter out, figures before and after.

1. Pairs come from a collection's qrels (``split``), from a collection's corpus alone (a query
   generator, then the consistency filter), or from a JSONL file (texts, or ids in ``corpus``).
2. A dev split that can see whether adaptation generalises (``devsplit``): the collection's own
   dev split, else whole queries whose documents are never trained on, written by another
   generator when the pairs are generated (a gain on generated queries is labelled unverified).
3. ``max_pairs`` samples the training pairs, every query kept before any query gets a second.
4. Hard negatives are mined when asked (BM25 or the base model), which needs the corpus.
5. ``finetune`` trains the model's weights (a local model only), keeping the best dev checkpoint,
   the base model included, within ``max_minutes`` from the start of the command; ``adapter``
   learns a query adapter on the frozen model (any model, API ones included); ``reranker`` trains
   a cross-encoder from a local model's weights (see ``reranker.py``; figures are BM25's top 20
   before and after reranking).
6. Before/after nDCG@10 on the collection's ``test`` split when it has one (and it was not
   trained on), else on the dev split.

Every check a user can fail runs before anything slow: the model, the output folder, the pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..catalogue import split_uri
from ..engine import OverLimit
from ..errors import ConfigError, InputError
from ..evaluation.collections import Collection
from ..factory import EmbedderSpec
from .devsplit import honest_dev
from .finetune import FineTuneResult
from .pairs import Pair, pairs_from_qrels, read_pairs, sample_pairs

__all__ = ["HARD_NEGATIVES", "METHODS", "AdaptOutcome", "adapt", "load_pairs"]

METHODS: tuple[str, ...] = ("finetune", "adapter", "reranker")
HARD_NEGATIVES: tuple[str, ...] = ("none", "bm25", "model")
MIN_PAIRS = 16
_FEW_STEPS = 10  # below this a fine-tune barely moves the weights: say so

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True, kw_only=True)
class AdaptOutcome:
    """What was trained and how it scored: ``figures[split] = (before, after)`` nDCG@10 (None for a
    figure there was nothing to measure on: a fine-tune without a dev set). ``dev_kind`` says where the
    dev queries came from; ``dev_verified`` is False when they are generated (their gain is unverified).
    ``finetune`` is the fine-tune's own result (steps, checkpoints, weights hash, whether the base was kept)."""

    method: str
    out_dir: Path
    uri: str
    train_pairs: int
    dev_pairs: int
    train_seconds: float
    figures: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    dev_kind: str = ""
    dev_verified: bool = True
    finetune: FineTuneResult | None = None


def load_pairs(
    source: Path,
    *,
    split: str = "train",
    generate: str | None = None,
    corpus: Path | None = None,
    chat=None,
    seed: int = 0,
) -> tuple[list[Pair], Collection | None, dict]:
    """The training pairs, the collection they came from (when any) and a note for the card."""
    from ..evaluation import load_beir

    collection: Collection | None
    if source.is_dir():
        collection = load_beir(source, strict=False)
        if generate:
            from .generate import filter_consistent, generate_pairs

            made = generate_pairs(collection.corpus, generate, seed=seed, chat=chat)
            pairs = filter_consistent(made, collection.corpus, by="bm25", top_k=10)
            note = {
                "collection": collection.name,
                "generator": generate,
                "generated": len(made),
                "consistent": len(pairs),
                "labels_used": False,
            }
        else:
            pairs = pairs_from_qrels(collection, split)
            note = {"collection": collection.name, "split": split}
        return pairs, collection, note
    if generate:
        raise ConfigError(
            "--generate makes queries from a collection's corpus; give a collection folder, not a pairs file"
        )
    collection = load_beir(corpus, strict=False) if corpus is not None else None
    pairs = read_pairs(source, collection)
    return pairs, collection, {"pairs_file": str(source)}


def adapt(
    source: Path,
    spec: EmbedderSpec,
    out_dir: Path,
    *,
    method: str = "finetune",
    split: str = "train",
    generate: str | None = None,
    corpus: Path | None = None,
    chat=None,
    hard_negatives: str = "none",
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 5e-5,
    loss: str = "mnrl",
    matryoshka_dims: list[int] | None = None,
    max_seq_length: int | None = None,
    max_pairs: int | None = None,
    max_minutes: float | None = None,
    seed: int = 0,
    cache: Path | None = None,
    on_progress: ProgressFn | None = None,
) -> AdaptOutcome:
    """Run the steps of the module docstring; see ``embedtune adapt --help`` for the options."""
    from . import finetune
    from .training import base_folder, check_out_dir

    started = time.monotonic()  # --max-minutes counts from here: loading and mining pairs take time too

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; use {' or '.join(METHODS)}")
    if hard_negatives not in HARD_NEGATIVES:
        raise ConfigError(f"unknown --hard-negatives {hard_negatives!r}; use {', '.join(HARD_NEGATIVES)}")
    provider = split_uri(spec.model)[0]
    if method == "reranker":
        base_folder(spec.model, done="trained into a reranker", api_hint="give a local model")
    if method == "finetune":
        if provider in ("openai", "ollama"):
            raise ConfigError(
                f"{spec.model} is an API model: its weights cannot be fine-tuned; "
                "use --method adapter to learn a query adapter on it instead"
            )
        if provider == "fake":
            raise ConfigError(f"{spec.model} has no weights to fine-tune; give a local model")
        base_folder(spec.model)  # a folder that is not a model fails now, not after the data
    elif max_minutes is not None:
        raise ConfigError("--max-minutes bounds a fine-tune; the query adapter trains in seconds without it")
    if max_pairs is not None and max_pairs < MIN_PAIRS:
        raise ConfigError(f"--max-pairs must be at least {MIN_PAIRS}, not {max_pairs}")
    if max_minutes is not None and not max_minutes > 0:
        raise ConfigError(f"--max-minutes must be a positive number of minutes, not {max_minutes}")
    out = check_out_dir(out_dir)

    pairs, collection, note = load_pairs(source, split=split, generate=generate, corpus=corpus, chat=chat, seed=seed)
    held = honest_dev(pairs, collection=collection, split=split, seed=seed)
    train, dev = held.train, held.dev
    notes: list[str] = []
    if max_pairs is not None and len(train) > max_pairs:
        queries = len({p.query for p in train})
        train = sample_pairs(train, max_pairs, seed=seed)
        if max_pairs < queries:
            notes.append(f"--max-pairs {max_pairs} is below the {queries} training queries: {max_pairs} of them kept")
    if len(train) < MIN_PAIRS:
        how = "" if generate else "; generate queries from a collection's corpus with --generate title (or span)"
        raise InputError(
            f"only {len(train)} training pairs (after holding out {len(dev)} for dev); "
            f"adapting needs at least {MIN_PAIRS}{how}"
        )
    if method == "reranker":
        if collection is None:
            raise ConfigError(
                "--method reranker mines negatives and ranks dev queries in the documents: give a collection"
            )
        if hard_negatives == "none":  # a reranker learns from negatives: it always mines them
            hard_negatives = "bm25"
    if hard_negatives != "none":
        if collection is None:
            raise ConfigError("--hard-negatives needs the documents to mine: give a collection (or --corpus)")
        train = _mine(train, collection, hard_negatives, spec, cache)
    note = {**note, "hard_negatives": hard_negatives, "max_pairs": max_pairs}

    test_split = "test" if collection is not None and "test" in collection.qrels and split != "test" else None
    figures: dict[str, tuple[float | None, float | None]]
    if method == "finetune":
        result = finetune.fine_tune(
            spec.model,
            train,
            out_dir=out,
            dev=_dev(dev, collection, seed),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            loss=loss,
            matryoshka_dims=matryoshka_dims,
            max_seq_length=max_seq_length,
            max_minutes=_minutes_left(max_minutes, started),
            seed=seed,
            on_progress=on_progress,
            data_note=note,
        )
        finetune.label_dev(out, held.kind, held.verified)
        adapted = EmbedderSpec(model=result.uri)
        figures = {"dev": (result.dev_before, result.dev_after)}
        seconds = result.train_seconds
        if result.time_up:
            notes.append(
                f"--max-minutes {max_minutes:g} stopped training at step {result.steps} of "
                f"{result.card.get('planned_steps')}; kept the best checkpoint so far"
            )
        if result.kept_base:
            notes.append(
                f"no checkpoint beat the base model on dev ({result.dev_before:.4f}): the folder holds "
                f"{spec.model}'s weights unchanged; keep using {spec.model}"
            )
    elif method == "reranker":
        assert collection is not None
        return _train_reranker(
            collection,
            spec,
            train,
            dev,
            out,
            test_split,
            epochs,
            batch_size,
            lr,
            max_seq_length,
            seed,
            on_progress,
            note,
        )
    else:
        adapted, figures, seconds = _train_adapter(spec, train, dev, out, seed, cache)
    if method == "finetune" and result.steps < _FEW_STEPS and not result.time_up:
        notes.append(
            f"only {result.steps} training steps ({len(train)} pairs, batch {batch_size}): too few to move the model "
            "much; add pairs (--generate title or span) or raise --epochs"
        )
    if test_split is not None and collection is not None:  # (a test split is one of the collection's)
        before = _ndcg(collection, spec, test_split, cache, on_progress)
        kept_base = method == "finetune" and result.kept_base  # same weights: the same figure, not re-embedded
        after = before if kept_base else _ndcg(collection, adapted, test_split, cache, on_progress)
        figures["test"] = (before, after)
        if method == "finetune":
            finetune.record_figures(out, "test", {"ndcg@10": before}, {"ndcg@10": after})
    elif collection is not None and split == "test":
        notes.append("trained on the test split: no untouched test figure to report")
    if "test" not in figures and not held.verified:
        notes.append(
            "the only gain measured is on generated queries: unverified; "
            "judge the model on real queries (a collection's test split) before trusting it"
        )
    return AdaptOutcome(
        method=method,
        out_dir=out,
        uri=adapted.model if method == "finetune" else spec.model,
        train_pairs=len(train),
        dev_pairs=len(dev),
        train_seconds=seconds,
        figures=figures,
        notes=tuple(notes),
        dev_kind=held.kind,
        dev_verified=held.verified,
        finetune=result if method == "finetune" else None,
    )


def _minutes_left(max_minutes: float | None, started: float) -> float | None:
    if max_minutes is None:
        return None
    left = max_minutes - (time.monotonic() - started) / 60
    if left <= 0:
        raise InputError(
            f"--max-minutes {max_minutes:g} was spent before training began (loading and mining the pairs); "
            "raise it, or lower --max-pairs"
        )
    return left


def _mine(pairs, collection: Collection, how: str, spec: EmbedderSpec, cache):
    from .negatives import mine_hard_negatives

    if any(p.positive_id is None for p in pairs):
        raise ConfigError("--hard-negatives needs pairs that name their documents (ids, or a collection's qrels)")
    if how == "bm25":
        return mine_hard_negatives(pairs, collection.corpus, by="bm25", count=1)
    from ..engine import close_stack
    from ..factory import build_embedder

    embedder = build_embedder(replace(spec, over_limit=OverLimit.TRUNCATE), cache=cache)
    try:
        return mine_hard_negatives(pairs, collection.corpus, by=embedder, count=1)
    finally:
        close_stack(embedder)


def _dev(dev: list[Pair], collection: Collection | None, seed: int):
    """Dev queries ranked among their positives and (up to 1,000) documents of the collection."""
    from .finetune import dev_set

    if not dev:
        return None
    documents = None
    if collection is not None:
        documents = {doc_id: doc.full_text for doc_id, doc in collection.corpus.items()}
    return dev_set(dev, documents=documents, seed=seed)


def _train_adapter(spec: EmbedderSpec, train, dev, out: Path, seed: int, cache):
    from ..engine import close_stack
    from ..factory import build_embedder
    from .adapter import train_query_adapter

    embedder = build_embedder(replace(spec, over_limit=OverLimit.TRUNCATE), cache=cache)
    try:
        adapter = train_query_adapter(embedder, train, dev_pairs=dev or None, seed=seed)
    finally:
        close_stack(embedder)
    adapter.save(out)
    info = adapter.info or {}
    dev_info = info.get("dev", {})
    figures = {}
    if "base" in dev_info:
        figures["dev mrr@10"] = (dev_info["base"], dev_info["adapted"])
    return replace(spec, adapter=str(out)), figures, float(info.get("train_seconds", 0.0))


def _train_reranker(
    collection: Collection,
    spec: EmbedderSpec,
    train,
    dev,
    out: Path,
    test_split: str | None,
    epochs: int,
    batch_size: int,
    lr: float,
    max_length: int | None,
    seed: int,
    on_progress,
    note: dict,
) -> AdaptOutcome:
    """Train the cross-encoder, then score BM25's top 20 on ``test_split`` before and after reranking it."""
    from ..evaluation.compare import evaluate_strategies
    from ..search.rerank import RerankSpec
    from .reranker import DEV_DEPTH, record_figures, rerank_dev, train_reranker

    result = train_reranker(
        spec.model,
        train,
        out_dir=out,
        dev=rerank_dev(dev, collection.corpus) if dev else None,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_length=max_length or 256,
        seed=seed,
        on_progress=on_progress,
        data_note=note,
    )
    figures: dict[str, tuple[float | None, float | None]] = {
        f"dev nDCG@10 (BM25 top {DEV_DEPTH} reranked)": (result.dev_before, result.dev_after)
    }
    if test_split is not None:
        # The test queries alone: no split here picks anything, and reranking the train queries costs time.
        only_test = replace(collection, qrels={test_split: collection.qrels[test_split]})
        scored = evaluate_strategies(
            only_test, [], bm25=True, split=test_split, rerank=[RerankSpec(model=str(out), top=DEV_DEPTH)]
        )
        before, after = (row.metrics["ndcg@10"] for row in scored.strategies)
        figures[f"{test_split} nDCG@10 (BM25 top {DEV_DEPTH} reranked)"] = (before, after)
        record_figures(out, test_split, before, after, note=f"BM25 top {DEV_DEPTH} reranked")
    return AdaptOutcome(
        method="reranker",
        out_dir=out,
        uri=str(out),
        train_pairs=len(train),
        dev_pairs=len(dev),
        train_seconds=result.train_seconds,
        figures=figures,
        notes=(f'use it in a strategy file: [rerank] model = "{out}", top = 50',),
    )


def _ndcg(collection: Collection, spec: EmbedderSpec, split: str, cache, on_progress) -> float:
    from ..evaluation.compare import evaluate_strategies

    result = evaluate_strategies(collection, [spec], bm25=False, split=split, cache=cache, on_progress=on_progress)
    return result.strategies[0].metrics["ndcg@10"]
