"""Train a cross-encoder reranker on training pairs with hard negatives.

No pretrained cross-encoder installs offline, so one is made here: a local model's transformer
weights under a fresh one-logit head (``BertForSequenceClassification`` from MiniLM), trained with
sentence-transformers' CrossEncoder trainer.

The loss is binary cross-entropy on labelled pairs: each training pair gives (query, positive, 1)
and (query, negative, 0) for each of its hard negatives. Why not a listwise loss (the
cross-encoder form of MultipleNegativesRankingLoss)? It scores every query against several
documents per step, so on two CPU cores it costs several times more per pair; BCE over mined
hard negatives is the recipe of the MS MARCO rerankers and spends each forward pass on a pair
that teaches something. Texts are cut at ``max_length`` tokens (query and document together)
during training and when it reranks, which keeps both affordable on a CPU.

The epoch is picked on a dev set: held-out queries, each with the first-stage ranking the
reranker will meet in use (BM25's top ``depth`` over the corpus), scored by nDCG@10 after
reranking (:func:`embedtune.search.rerank.rerank_run`, the function the Retriever runs). The
"before" figure is the first stage's own order.

Same seed, same data, same machine: the same weights, bit for bit (training runs on one thread). The seed
fixes the new head's initial weights (drawn when the model loads), the trainer's shuffling and
dropout; kernels run in deterministic mode and data loads in the main process.

The output folder is a CrossEncoder model with ``embedtune-reranker.json`` (base, seed, pairs,
settings, figures, weights hash); a strategy's ``[rerank]`` table names the folder.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError, ModelLoadError, require
from ..evaluation.collections import Document
from .pairs import Pair
from .training import (
    base_folder,
    deterministic,
    empty_out_dir,
    no_hub_bars,
    pairs_hash,
    quiet_trainer,
    trainer_settings,
    weights_hash,
)

__all__ = ["MANIFEST_FILE", "RerankDev", "RerankerResult", "rerank_dev", "train_reranker"]

MANIFEST_FILE = "embedtune-reranker.json"
MIN_PAIRS = 16
DEV_DEPTH = 20  # the first stage's documents a dev query is reranked among: what a top-20 rerank sees

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True, kw_only=True)
class RerankDev:
    """Dev queries with their judgments and the first-stage ranking to rerank: ``candidates[qid]``
    lists document ids best first, ``texts`` holds their text."""

    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]]
    candidates: Mapping[str, Sequence[str]]
    texts: Mapping[str, str]

    def __post_init__(self) -> None:
        if not self.qrels:
            raise InputError("the reranker's dev set holds no judged query")

    def first_stage(self) -> dict[str, dict[str, float]]:
        """The candidates as a run, scored by rank (the first stage's order)."""
        return {q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in self.candidates.items()}


def rerank_dev(pairs: Sequence[Pair], corpus: Mapping[str, Document], *, depth: int = DEV_DEPTH) -> RerankDev:
    """A dev set from held-out pairs that name their documents: each distinct query judged
    relevant to its positives, with BM25's top ``depth`` over ``corpus`` as its candidates."""
    from ..search.bm25 import BM25Index
    from ..search.runs import ranked

    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for pair in pairs:
        if pair.positive_id is None:
            raise InputError("the reranker's dev pairs must name their documents (a collection's qrels)")
        qid = queries.setdefault(pair.query, f"q{len(queries)}")
        qrels.setdefault(qid, {})[pair.positive_id] = 1
    index = BM25Index.build(list(corpus), [doc.full_text for doc in corpus.values()])
    run = index.search({qid: text for text, qid in queries.items()}, depth)
    candidates = {qid: ranked(run.get(qid, {})) for qid in qrels}
    texts = {d: corpus[d].full_text for docs in candidates.values() for d in docs}
    return RerankDev(queries={qid: q for q, qid in queries.items()}, qrels=qrels, candidates=candidates, texts=texts)


@dataclass(frozen=True, kw_only=True)
class RerankerResult:
    """What :func:`train_reranker` made; ``dev_by_epoch[0]`` is the first stage's dev nDCG@10,
    ``dev_by_epoch[i]`` the reranked figure after epoch ``i``; ``best_epoch``'s weights were saved."""

    out_dir: Path
    weights_hash: str
    train_seconds: float
    steps: int
    best_epoch: int
    dev_by_epoch: tuple[float, ...] = ()
    manifest: Mapping = field(default_factory=dict)

    @property
    def dev_before(self) -> float | None:
        return self.dev_by_epoch[0] if self.dev_by_epoch else None

    @property
    def dev_after(self) -> float | None:
        return self.dev_by_epoch[self.best_epoch] if self.dev_by_epoch else None


def train_reranker(
    base_model: str | Path,
    train_pairs: Sequence[Pair],
    *,
    out_dir: str | Path,
    dev: RerankDev | None = None,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 2e-5,
    max_length: int = 256,
    warmup: float = 0.1,
    seed: int = 0,
    on_progress: ProgressFn | None = None,
    data_note: Mapping[str, object] | None = None,
) -> RerankerResult:
    """Train a cross-encoder from ``base_model`` (``local:NAME``, ``local:/folder`` or a folder)
    on ``train_pairs`` (each with its hard negatives) and save it in ``out_dir`` (new or empty)."""
    source, _ = base_folder(base_model, done="trained into a reranker", api_hint="a reranker needs a local model")
    _check_settings(train_pairs, epochs, batch_size, lr, max_length, warmup)
    out = empty_out_dir(out_dir)
    torch = require("torch", "local")
    st = require("sentence_transformers", "local")
    require("datasets", "adapt", import_now=False)
    require("accelerate", "adapt", import_now=False)

    with deterministic(torch, seed), _one_thread(torch):  # the new head's weights are drawn as the model loads
        model = _load(st, source, max_length)
        dataset, positives, negatives = _dataset(train_pairs)
        evaluate = _dev_scorer(dev, batch_size) if dev is not None else None
        figures = [_first_stage_ndcg(dev)] if dev is not None else []
        steps_per_epoch = max(1, -(-len(dataset) // batch_size))
        tracker = _EpochTracker(evaluate, figures, on_progress, steps_per_epoch * epochs)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="embedtune-rerank-") as scratch:
            trainer = _trainer(
                st,
                model,
                dataset,
                scratch,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                warmup_steps=int(warmup * steps_per_epoch * epochs + 0.999),
                seed=seed,
                callback=tracker.callback(),
            )
            trainer.train()
            steps = int(trainer.state.global_step)
        train_seconds = time.perf_counter() - started
        best_epoch = tracker.restore_best(model)
        weights = weights_hash(model)
        with no_hub_bars():
            model.save_pretrained(str(out))

    manifest = {
        "format": "embedtune.reranker/1",
        "base_model": str(base_model),
        "base_folder": str(source),
        "data": {
            "train_pairs": len(train_pairs),
            "train_queries": len({p.query for p in train_pairs}),
            "positives": positives,
            "negatives": negatives,
            "sources": dict(Counter(p.source for p in train_pairs)),
            "pairs_sha256": pairs_hash(train_pairs),
            "dev_queries": len(dev.qrels) if dev is not None else 0,
            "dev_depth": max((len(c) for c in dev.candidates.values()), default=0) if dev is not None else 0,
            **dict(data_note or {}),
        },
        "settings": {
            "loss": "binary-cross-entropy",
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "warmup": warmup,
            "max_length": max_length,
        },
        "seed": seed,
        "steps": steps,
        "best_epoch": best_epoch,
        "train_seconds": round(train_seconds, 1),
        "weights_sha256": weights,
        "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread",
        "figures": {
            "dev": {"metric": "ndcg@10", "before": figures[0], "after": figures[best_epoch], "by_epoch": figures}
        }
        if figures
        else {},
    }
    write_manifest(out, manifest)
    return RerankerResult(
        out_dir=out,
        weights_hash=weights,
        train_seconds=train_seconds,
        steps=steps,
        best_epoch=best_epoch,
        dev_by_epoch=tuple(figures),
        manifest=manifest,
    )


def write_manifest(folder: Path, manifest: Mapping) -> None:
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def record_figures(folder: str | Path, name: str, before: float, after: float, *, note: str = "") -> dict:
    """Add a before/after nDCG@10 (e.g. ``name="test"``) to a reranker's manifest."""
    path = Path(folder) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{folder} holds no readable {MANIFEST_FILE}; was it made by embedtune adapt?") from exc
    entry: dict[str, object] = {"metric": "ndcg@10", "before": before, "after": after}
    if note:
        entry["note"] = note
    manifest.setdefault("figures", {})[name] = entry
    write_manifest(Path(folder), manifest)
    return manifest


# -- pieces --------------------------------------------------------------------------------------


def _check_settings(pairs, epochs, batch_size, lr, max_length, warmup) -> None:
    if len(pairs) < MIN_PAIRS:
        raise InputError(f"only {len(pairs)} training pairs; training a reranker needs at least {MIN_PAIRS}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, not {value!r}")
    if max_length < 16:
        raise ConfigError(f"max_length must be at least 16 tokens (query and document share it), not {max_length}")
    if not (isinstance(lr, (int, float)) and 0 < lr < 1):
        raise ConfigError(f"lr must be a small positive number such as 2e-5, not {lr!r}")
    if not 0 <= warmup < 1:
        raise ConfigError(f"warmup is a share of the steps, from 0 up to 1, not {warmup}")
    if not any(p.negatives for p in pairs):
        raise InputError("no training pair has a negative: a reranker learns from both; mine hard negatives")
    if any(not p.query.strip() or not p.positive.strip() for p in pairs):
        raise InputError("a training pair has an empty query or positive; drop it")


def _load(st, folder: Path, max_length: int):
    try:
        return st.CrossEncoder(str(folder), num_labels=1, max_length=max_length, device="cpu", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load {folder} as the base of a cross-encoder: {exc}") from exc


def _dataset(pairs: Sequence[Pair]):
    """(query, text, label) rows: each pair's positive (1) and its negatives (0); and the counts."""
    from datasets import Dataset

    queries, texts, labels = [], [], []
    for pair in pairs:
        for text, label in ((pair.positive, 1.0), *((negative, 0.0) for negative in pair.negatives)):
            queries.append(pair.query)
            texts.append(text)
            labels.append(label)
    positives = int(sum(labels))
    return Dataset.from_dict({"query": queries, "text": texts, "label": labels}), positives, len(labels) - positives


def _trainer(st, model, dataset, scratch: str, *, epochs, batch_size, lr, warmup_steps, seed, callback):
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    settings = trainer_settings(
        scratch, epochs=epochs, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, seed=seed
    )
    return quiet_trainer(
        CrossEncoderTrainer,
        model=model,
        args=CrossEncoderTrainingArguments(**settings),
        train_dataset=dataset,
        loss=BinaryCrossEntropyLoss(model),
        callbacks=[callback],
    )


def _dev_scorer(dev: RerankDev, batch_size: int):
    """nDCG@10 of the dev candidates reranked by the model (all of them: ``top`` = their depth)."""
    from ..evaluation.metrics import evaluate
    from ..search.rerank import rerank_run

    first = dev.first_stage()
    depth = max((len(c) for c in dev.candidates.values()), default=1)

    def score(model) -> float:
        def pairs_scorer(pairs):
            return np.asarray(
                model.predict(
                    [list(p) for p in pairs],
                    batch_size=batch_size * 2,
                    activation_fn=_identity,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ),
                dtype=np.float32,
            )

        run = rerank_run(first, dev.queries, dev.texts, pairs_scorer, top=max(depth, 1))
        return round(evaluate(dev.qrels, run, ["ndcg@10"])["ndcg@10"], 6)

    return score


def _first_stage_ndcg(dev: RerankDev) -> float:
    from ..evaluation.metrics import evaluate

    return round(evaluate(dev.qrels, dev.first_stage(), ["ndcg@10"])["ndcg@10"], 6)


def _identity(x):
    return x


@contextmanager
def _one_thread(torch):
    """Train on one thread: the weights then do not depend on the core count (a sum splits
    differently over more threads), and on a busy machine one thread trained 5x faster than two
    (measured under load 15 on 2 cores: 21 s against 112 s for 8 steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _EpochTracker:
    """Reports steps, scores the dev set after each epoch and keeps the best epoch's weights."""

    def __init__(self, evaluate, figures: list[float], on_progress: ProgressFn | None, total_steps: int) -> None:
        self.evaluate, self.figures, self.on_progress, self.total = evaluate, figures, on_progress, total_steps
        self.best_state: dict[str, Any] | None = None  # the best epoch's state_dict, copied
        self.best_epoch = 0
        self.epochs = 0

    def callback(self):
        from transformers import TrainerCallback

        tracker = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if tracker.on_progress:
                    tracker.on_progress("training", state.global_step, max(state.max_steps, 1))

            def on_epoch_end(self, args, state, control, model=None, **kwargs):
                tracker.end_epoch(model)

        return _Callback()

    def end_epoch(self, model) -> None:
        self.epochs += 1
        if self.evaluate is None:
            self.best_epoch = self.epochs
            return
        was_training = model.training
        score = self.evaluate(model)
        model.train(was_training)
        self.figures.append(score)
        if self.best_state is None or score > self.figures[self.best_epoch]:
            self.best_epoch = self.epochs
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore_best(self, model) -> int:
        if self.best_state is not None and self.best_epoch != self.epochs:
            model.load_state_dict(self.best_state)
        return self.best_epoch
