"""Fine-tune a local sentence-transformers model on training pairs.

Training goes through sentence-transformers' trainer with MultipleNegativesRankingLoss (Henderson
et al., "Efficient Natural Language Response Suggestion for Smart Reply", 2017): each query's
positive is scored against every other positive (and hard negative) of its batch, so the batch
is the pool of negatives. ``loss="cached-mnrl"`` is its gradient-cached variant (GradCache, Gao
et al., 2021): the same loss over a large batch, computed in mini-batches, so a big batch fits
in CPU memory. ``matryoshka_dims`` wraps either in MatryoshkaLoss (Kusupati et al., 2022), so
the vector's leading dims can be kept alone. Batches never hold the same text twice (the
NO_DUPLICATES sampler): a duplicate would be scored as its own negative.

A dev set (queries, judgments, documents) is scored by nDCG@10 with embedtune's own metrics at
checkpoints: the base model first, then every ``eval_every`` steps and at the end. The best
checkpoint's weights are kept, so when no trained checkpoint beats the base model the base model's
weights are what is saved (``kept_base``). ``max_minutes`` bounds training, checkpoints included:
training stops when the next step and a last dev score would not fit, keeping the best so far.
Same seed, same data, same machine, and no time limit reached: the same weights, bit for bit
(``weights_hash``).

The output folder is a sentence-transformers model (``local:/that/folder``) with
``embedtune-card.json`` and a short ``README.md`` saying what it was trained from, how, and what
it scored. Nothing is downloaded: the base model must be a local folder or a catalogued model
whose weights a package carries.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError, ModelLoadError, require
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

__all__ = [
    "CARD_FILE",
    "LOSSES",
    "MIN_PAIRS",
    "DevSet",
    "FineTuneResult",
    "dev_set",
    "fine_tune",
    "label_dev",
    "record_figures",
]

LOSSES: tuple[str, ...] = ("mnrl", "cached-mnrl")
MIN_PAIRS = 16
CARD_FILE = "embedtune-card.json"
_DEV_DOCUMENTS = 1000  # enough distractors to make dev nDCG@10 mean something, few enough to embed each checkpoint
_EVAL_SHARE = 0.1  # checkpoints are spaced so scoring dev costs about this share of the training time

ProgressFn = Callable[[str, int, int], None]
"""``on_progress("training", done, total)``: ``done`` of ``total`` optimiser steps are taken."""


@dataclass(frozen=True, kw_only=True)
class DevSet:
    """A small retrieval test run during training: queries, their judgments, documents to rank."""

    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]]
    documents: Mapping[str, str]

    def __post_init__(self) -> None:
        if not self.qrels:
            raise InputError("the dev set holds no judged query")
        missing = {doc for judged in self.qrels.values() for doc in judged if doc not in self.documents}
        if missing or set(self.qrels) - set(self.queries):
            raise InputError("the dev set's judgments name queries or documents it does not hold")


def dev_set(
    pairs: Sequence[Pair],
    *,
    documents: Mapping[str, str] | None = None,
    max_documents: int = _DEV_DOCUMENTS,
    seed: int = 0,
) -> DevSet:
    """A dev set from held-out pairs: each distinct query, judged relevant to its positives,
    ranked against those positives plus up to ``max_documents`` others drawn (seeded) from
    ``documents`` (id -> text)."""
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    texts: dict[str, str] = {}
    for pair in pairs:
        qid = queries.setdefault(pair.query, f"q{len(queries)}")
        doc_id = pair.positive_id or _text_id(pair.positive)
        texts[doc_id] = pair.positive
        qrels.setdefault(qid, {})[doc_id] = 1
    others = sorted(set(documents or {}) - texts.keys())
    random.Random(seed).shuffle(others)
    for doc_id in others[: max(0, max_documents - len(texts))]:
        texts[doc_id] = documents[doc_id]  # type: ignore[index]
    return DevSet(queries={qid: q for q, qid in queries.items()}, qrels=qrels, documents=texts)


@dataclass(frozen=True, kw_only=True)
class FineTuneResult:
    """What :func:`fine_tune` made: the model folder, its weights hash, time and dev figures.

    ``checkpoints`` are ``(step, dev nDCG@10)``, the base model first at step 0; ``best_step`` is
    the step whose weights were saved (the last step without a dev set). ``time_up`` says the
    ``max_minutes`` budget stopped training before its last step.
    """

    out_dir: Path
    uri: str
    weights_hash: str
    train_seconds: float
    steps: int
    best_step: int
    checkpoints: tuple[tuple[int, float], ...] = ()
    time_up: bool = False
    card: Mapping = field(default_factory=dict)

    @property
    def dev_before(self) -> float | None:
        return self.checkpoints[0][1] if self.checkpoints else None

    @property
    def dev_after(self) -> float | None:
        return dict(self.checkpoints)[self.best_step] if self.checkpoints else None

    @property
    def kept_base(self) -> bool:
        """No trained checkpoint beat the base model on dev: the saved weights are the base's."""
        return bool(self.checkpoints) and self.best_step == 0


def fine_tune(
    base_model: str | Path,
    train_pairs: Sequence[Pair],
    *,
    out_dir: str | Path,
    dev: DevSet | Sequence[Pair] | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 5e-5,
    loss: str = "mnrl",
    mini_batch_size: int = 16,
    matryoshka_dims: Sequence[int] | None = None,
    max_seq_length: int | None = None,
    warmup: float = 0.1,
    seed: int = 0,
    max_minutes: float | None = None,
    eval_every: int | None = None,
    on_progress: ProgressFn | None = None,
    data_note: Mapping[str, object] | None = None,
) -> FineTuneResult:
    """Fine-tune ``base_model`` (``local:NAME``, ``local:/folder`` or a folder) on ``train_pairs``
    and save the result in ``out_dir`` (which must not exist, or be empty).

    Hard negatives ride along as extra columns, as many per pair as the pair with the most has;
    a pair short of them is filled with other pairs' positives (counted in the card). ``dev`` (a
    :class:`DevSet`, or held-out pairs ranked among the training positives) picks the best
    checkpoint, scored every ``eval_every`` steps (default: spaced so scoring is about a tenth of
    the work, from the dev set's size); ``max_minutes`` bounds the whole of it. ``max_seq_length`` cuts
    texts during training only; the saved model keeps the base's limit. ``warmup`` is the share
    of steps over which the learning rate rises linearly. ``data_note`` is recorded in the card
    (where the pairs came from).
    """
    started = time.monotonic()  # the max_minutes clock: loading and the base model's dev score count
    source, prefixes = base_folder(base_model)
    _check_settings(train_pairs, epochs, batch_size, lr, loss, mini_batch_size, matryoshka_dims, max_seq_length, warmup)
    _check_budget(max_minutes, eval_every)
    out = empty_out_dir(out_dir)
    if dev is not None and not isinstance(dev, DevSet):
        pool = {p.positive_id or _text_id(p.positive): p.positive for p in train_pairs}
        dev = dev_set(dev, documents=pool, seed=seed)
    torch = require("torch", "local")
    st = require("sentence_transformers", "local")
    require("datasets", "adapt", import_now=False)
    require("accelerate", "adapt", import_now=False)

    with deterministic(torch, seed):
        model = _load(st, source)
        dim = int(model.get_embedding_dimension())
        if matryoshka_dims and max(matryoshka_dims) > dim:
            raise ConfigError(f"matryoshka dims {list(matryoshka_dims)} exceed the model's {dim} dims")
        saved_length = model.max_seq_length
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
        train_pairs, negatives, filled = _even_negatives(train_pairs, seed)
        dataset = _dataset(train_pairs, negatives, prefixes)
        evaluate = _dev_scorer(dev, prefixes) if dev is not None else None
        steps_per_epoch = max(1, len(train_pairs) // batch_size)
        total_steps = steps_per_epoch * epochs
        every = eval_every or (_checkpoint_spacing(dev, batch_size, 2 + negatives) if dev is not None else total_steps)
        deadline = started + 60 * max_minutes if max_minutes is not None else None
        tracker = _Checkpoints(evaluate, every, deadline, on_progress)
        tracker.score(model, 0)  # the base model is checkpoint 0: training must beat it to be kept
        tracker.time_up = deadline is not None and not tracker.score_fits()  # no time left to train and score
        with tempfile.TemporaryDirectory(prefix="embedtune-train-") as scratch:
            trainer = _trainer(
                st,
                model,
                dataset,
                scratch,
                loss=_loss(st, model, loss, mini_batch_size, matryoshka_dims),
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                warmup_steps=math.ceil(warmup * total_steps),
                seed=seed,
                callback=tracker.callback(),
            )
            if not tracker.time_up:
                trainer.train()
            steps = int(trainer.state.global_step)
        tracker.finish(model, steps)
        train_seconds = time.monotonic() - started
        best_step = tracker.restore_best(model)
        figures = tracker.figures
        model.max_seq_length = saved_length
        weights = weights_hash(model)
        with no_hub_bars():
            model.save(str(out), create_model_card=False)

    card = {
        "format": "embedtune.finetune/1",
        "base_model": str(base_model),
        "base_folder": str(source),
        "data": {
            "train_pairs": len(train_pairs),
            "train_queries": len({p.query for p in train_pairs}),
            "sources": dict(Counter(p.source for p in train_pairs)),
            "hard_negatives_per_pair": negatives,
            "negatives_filled_at_random": filled,
            "pairs_sha256": pairs_hash(train_pairs),
            "dev_queries": len(dev.qrels) if dev is not None else 0,
            "dev_documents": len(dev.documents) if dev is not None else 0,
            **dict(data_note or {}),
        },
        "settings": {
            "loss": loss,
            "mini_batch_size": mini_batch_size if loss == "cached-mnrl" else None,
            "matryoshka_dims": list(matryoshka_dims) if matryoshka_dims else None,
            "epochs": epochs,
            "max_minutes": max_minutes,
            "eval_every": every,
            "batch_size": batch_size,
            "lr": lr,
            "warmup": warmup,
            "max_seq_length_training": max_seq_length or saved_length,
            "max_seq_length": saved_length,
            "batch_sampler": "no_duplicates",
            "prefixes": {"query": prefixes[0], "document": prefixes[1]},
        },
        "seed": seed,
        "steps": steps,
        "planned_steps": total_steps,
        "time_up": tracker.time_up,
        "best_step": best_step,
        "kept": "base model (no checkpoint beat it on dev)" if figures and best_step == 0 else f"step {best_step}",
        "train_seconds": round(train_seconds, 1),
        "weights_sha256": weights,
        "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "figures": {
            "dev": {
                "metric": "ndcg@10",
                "before": figures[0][1],
                "after": dict(figures)[best_step],
                "by_checkpoint": [list(f) for f in figures],
            }
        }
        if figures
        else {},
    }
    _write_card(out, card)
    return FineTuneResult(
        out_dir=out,
        uri=f"local:{out}",
        weights_hash=weights,
        train_seconds=train_seconds,
        steps=steps,
        best_step=best_step,
        checkpoints=tuple(figures),
        time_up=tracker.time_up,
        card=card,
    )


def record_figures(out_dir: str | Path, name: str, before: Mapping[str, float], after: Mapping[str, float]) -> dict:
    """Add before/after figures (e.g. ``name="test"``, ``{"ndcg@10": ...}``) to a model's card."""
    folder = Path(out_dir)
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{folder} holds no readable {CARD_FILE}; was it made by embedtune adapt?") from exc
    card.setdefault("figures", {})[name] = {"before": dict(before), "after": dict(after)}
    _write_card(folder, card)
    return card


def label_dev(out_dir: str | Path, kind: str, verified: bool) -> dict:
    """Say in a model's card where its dev queries came from, and whether they are real queries
    (``verified``) or generated ones, whose gain is unverified."""
    folder = Path(out_dir)
    card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    card["data"]["dev"] = {"queries": kind, "verified": verified}
    if "dev" in card.get("figures", {}):
        card["figures"]["dev"]["verified"] = verified
    _write_card(folder, card)
    return card


# -- the base model ------------------------------------------------------------------------------


def _load(st, folder: Path):
    try:
        with no_hub_bars():
            return st.SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load {folder} as a sentence-transformers model: {exc}") from exc


def _check_budget(max_minutes, eval_every) -> None:
    if max_minutes is not None and not (isinstance(max_minutes, (int, float)) and max_minutes > 0):
        raise ConfigError(f"max_minutes must be a positive number of minutes, not {max_minutes!r}")
    if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
        raise ConfigError(f"eval_every must be a positive number of steps, not {eval_every!r}")


def _check_settings(pairs, epochs, batch_size, lr, loss, mini_batch_size, matryoshka_dims, max_seq_length, warmup):
    if len(pairs) < MIN_PAIRS:
        raise InputError(
            f"only {len(pairs)} training pairs; fine-tuning needs at least {MIN_PAIRS} "
            "(generate queries from the corpus with --generate title or span)"
        )
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("mini_batch_size", mini_batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, not {value!r}")
    if batch_size < 2:
        raise ConfigError("batch_size must be at least 2: the other pairs of a batch are the negatives")
    if not (isinstance(lr, (int, float)) and 0 < lr < 1):
        raise ConfigError(f"lr must be a small positive number such as 2e-5, not {lr!r}")
    if loss not in LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; use {' or '.join(LOSSES)}")
    if matryoshka_dims is not None and (not matryoshka_dims or any(int(d) < 1 for d in matryoshka_dims)):
        raise ConfigError(f"matryoshka dims must be positive integers, not {matryoshka_dims!r}")
    if max_seq_length is not None and max_seq_length < 8:
        raise ConfigError(f"max_seq_length must be at least 8 tokens, not {max_seq_length}")
    if not 0 <= warmup < 1:
        raise ConfigError(f"warmup is a share of the steps, from 0 up to 1, not {warmup}")
    if any(not p.query.strip() or not p.positive.strip() for p in pairs):
        raise InputError("a training pair has an empty query or positive; drop it")


# -- training ------------------------------------------------------------------------------------


def _even_negatives(pairs: Sequence[Pair], seed: int) -> tuple[list[Pair], int, int]:
    """Every pair with as many negatives as the pair that has the most (the trainer needs equal
    columns): a pair short of them gets other pairs' positives, drawn with a seeded RNG, which is
    what in-batch negatives are anyway. Returns the pairs, the count and how many were filled."""
    from dataclasses import replace

    count = max(len(p.negatives) for p in pairs)
    if count == 0:
        return list(pairs), 0, 0
    rng = random.Random(seed)
    evened, filled = [], 0
    for pair in pairs:
        negatives = list(pair.negatives)
        for _ in range(100 * count):  # bounded: pairs that all share one query have nothing to draw
            if len(negatives) == count:
                break
            other = pairs[rng.randrange(len(pairs))]
            if other.query != pair.query and other.positive != pair.positive:
                negatives.append(other.positive)
                filled += 1
        if len(negatives) < count:
            raise InputError("no other pair's positive can serve as a negative; give pairs of several queries")
        evened.append(replace(pair, negatives=tuple(negatives)))
    return evened, count, filled


def _dataset(pairs: Sequence[Pair], negatives: int, prefixes: tuple[str, str]):
    from datasets import Dataset

    query_prefix, doc_prefix = prefixes
    columns = {
        "anchor": [query_prefix + p.query for p in pairs],
        "positive": [doc_prefix + p.positive for p in pairs],
    }
    for i in range(negatives):
        columns[f"negative_{i + 1}"] = [doc_prefix + p.negatives[i] for p in pairs]
    return Dataset.from_dict(columns)


def _loss(st, model, loss: str, mini_batch_size: int, matryoshka_dims):
    from sentence_transformers.sentence_transformer import losses

    base = (
        losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size, show_progress_bar=False)
        if loss == "cached-mnrl"
        else losses.MultipleNegativesRankingLoss(model)
    )
    if matryoshka_dims:
        return losses.MatryoshkaLoss(model, base, matryoshka_dims=[int(d) for d in matryoshka_dims])
    return base


def _trainer(st, model, dataset, scratch: str, *, loss, epochs, batch_size, lr, warmup_steps, seed, callback):
    from sentence_transformers.base.sampler import BatchSamplers

    settings = trainer_settings(
        scratch, epochs=epochs, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, seed=seed
    )
    args = st.SentenceTransformerTrainingArguments(**settings, batch_sampler=BatchSamplers.NO_DUPLICATES)
    return quiet_trainer(
        st.SentenceTransformerTrainer, model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[callback]
    )


def _checkpoint_spacing(dev: DevSet, batch_size: int, columns: int) -> int:
    """Steps between dev checkpoints so that scoring dev is about ``_EVAL_SHARE`` of the work.

    Scoring encodes every dev text once, forward only; a step encodes ``batch_size * columns``
    texts forward and backward (about three forwards). Counted, not timed, so the checkpoints
    (and so the kept weights) do not depend on how busy the machine is."""
    dev_texts = len(dev.queries) + len(dev.documents)
    step_cost = dev_texts / (3 * batch_size * columns)
    return max(1, math.ceil(step_cost / _EVAL_SHARE))


class _Checkpoints:
    """Scores dev every ``every`` steps, keeps the best weights so far, and stops training when the
    next step and a last score would end past ``deadline`` (``time.monotonic()``)."""

    def __init__(self, evaluate, every: int, deadline: float | None, on_progress: ProgressFn | None) -> None:
        self.evaluate, self.every, self.deadline, self.on_progress = evaluate, every, deadline, on_progress
        self.figures: list[tuple[int, float]] = []  # (step, dev nDCG@10)
        self.best_state: dict[str, Any] | None = None  # the best checkpoint's state_dict, copied
        self.best_step = 0
        self.step = 0  # the step whose weights the model holds
        self.time_up = False
        self.eval_seconds = 0.0  # the slowest dev score so far: the reserve kept for the last one
        self.step_seconds = 0.0
        self._step_began = 0.0

    def callback(self):
        from transformers import TrainerCallback

        tracker = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                tracker._step_began = time.monotonic()

            def on_step_end(self, args, state, control, model=None, **kwargs):
                step = state.global_step
                tracker.step_seconds = max(tracker.step_seconds, time.monotonic() - tracker._step_began)
                if tracker.on_progress:
                    tracker.on_progress("training", step, max(state.max_steps, 1))
                tracker.step = step
                if step < state.max_steps and tracker.out_of_time():
                    tracker.time_up = True
                    control.should_training_stop = True
                    if tracker.evaluate is None or tracker.score_fits():  # else steps since the last checkpoint go
                        tracker.score(model, step)
                elif step % tracker.every == 0 and step < state.max_steps:
                    tracker.score(model, step)

        return _Callback()

    def out_of_time(self) -> bool:
        """Another step and a dev score would end past the deadline."""
        if self.deadline is None:
            return False
        return time.monotonic() + self.step_seconds + self.eval_seconds >= self.deadline

    def score_fits(self) -> bool:
        return self.deadline is None or time.monotonic() + self.eval_seconds < self.deadline

    def score(self, model, step: int) -> None:
        if self.evaluate is None:
            self.best_step = step
            return
        if self.figures and self.figures[-1][0] == step:
            return
        began, was_training = time.monotonic(), model.training
        figure = self.evaluate(model)
        model.train(was_training)
        self.eval_seconds = max(self.eval_seconds, time.monotonic() - began)
        self.figures.append((step, figure))
        if self.best_state is None or figure > dict(self.figures)[self.best_step]:
            self.best_step = step
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def finish(self, model, steps: int) -> None:
        """The last step's score, unless the time limit already took it (or left no time for it)."""
        self.step = steps
        if not self.time_up:
            self.score(model, steps)

    def restore_best(self, model) -> int:
        if self.best_state is not None and self.best_step != self.step:
            model.load_state_dict(self.best_state)
        return self.best_step


def _dev_scorer(dev: DevSet, prefixes: tuple[str, str]):
    from ..evaluation.metrics import evaluate
    from ..search.dense import dense_run

    query_ids, doc_ids = list(dev.qrels), list(dev.documents)

    def score(model) -> float:
        def encode(texts):
            return model.encode(
                texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            ).astype(np.float32)

        queries = encode([prefixes[0] + dev.queries[q] for q in query_ids])
        docs = encode([prefixes[1] + dev.documents[d] for d in doc_ids])
        run = dense_run(query_ids, queries, doc_ids, docs, 10)
        return round(evaluate(dev.qrels, run, ["ndcg@10"])["ndcg@10"], 6)

    return score


# -- the card ------------------------------------------------------------------------------------


def _write_card(folder: Path, card: Mapping) -> None:
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(_readme(folder, card), encoding="utf-8")


def _readme(folder: Path, card: Mapping) -> str:
    data, settings = card["data"], card["settings"]
    lines = [
        f"# {folder.name}",
        "",
        (
            f"Fine-tuned by embedtune from `{card['base_model']}` on {data['train_pairs']} pairs "
            f"({data['train_queries']} queries; sources: {', '.join(f'{k} {v}' for k, v in data['sources'].items())}), "
            f"{settings['epochs']} epoch(s) of {settings['loss']}, batch {settings['batch_size']}, lr {settings['lr']}, "
            f"seed {card['seed']}: {card['steps']} steps in {card['train_seconds']} s."
        ),
        "",
        f"Use it as `local:{folder}`. Weights sha256: `{card['weights_sha256']}`. Everything else is in `{CARD_FILE}`.",
    ]
    if card.get("best_step") == 0 and card.get("figures"):
        lines += [
            "",
            f"No checkpoint beat the base model on dev: these are `{card['base_model']}`'s weights, unchanged.",
        ]
    figures = card.get("figures") or {}
    if figures:
        lines += ["", "| figure | before | after |", "|---|---|---|"]
        for name, values in figures.items():
            if "metric" in values:
                label = f"{name} {values['metric']}" + (
                    " (generated queries: unverified)" if values.get("verified") is False else ""
                )
                lines.append(f"| {label} | {values['before']:.4f} | {values['after']:.4f} |")
            else:
                for metric in values["after"]:
                    lines.append(
                        f"| {name} {metric} | {values['before'].get(metric, float('nan')):.4f} "
                        f"| {values['after'][metric]:.4f} |"
                    )
    return "\n".join(lines) + "\n"


def _text_id(text: str) -> str:
    return "t:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]
