"""Reranking: a cross-encoder reads each (query, document) pair of a run's head and reorders it.

A bi-encoder scores a query and a document from two vectors made apart; a cross-encoder reads
them together (Nogueira and Cho, "Passage Re-ranking with BERT", 2019), which ranks better and
costs one model call per pair, so it is only run over the first ``top`` documents of a run that
something cheaper made. Documents below ``top`` keep their order, below every reranked one.

:func:`rerank_run` is the pure part (a run, the texts, a scoring function in; a run out);
:class:`CrossEncoderScorer` is the model, loaded from a local folder that ``embedtune adapt
--method reranker`` wrote (never downloaded). :class:`RerankSpec` is the strategy's ``[rerank]``
table.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelLoadError, require
from .runs import Run, ranked

__all__ = ["DEFAULT_TOP", "CrossEncoderScorer", "RerankSpec", "check_cross_encoder", "rerank_run"]

DEFAULT_TOP = 50
DEFAULT_BATCH = 32

PairScorer = Callable[[Sequence[tuple[str, str]]], np.ndarray]
"""Scores (query, document text) pairs, higher is more relevant; one float per pair, in order."""


@dataclass(frozen=True, kw_only=True)
class RerankSpec:
    """The ``[rerank]`` table: ``model`` (a cross-encoder folder), ``top`` (how many of the fused
    run's first documents it reorders) and ``batch`` (pairs per model call)."""

    model: str
    top: int = DEFAULT_TOP
    batch: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError('rerank.model must be the folder of a cross-encoder, such as model = "reranker/"')
        for name, value in (("rerank.top", self.top), ("rerank.batch", self.batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number of at least 1, not {value!r}")

    @property
    def label(self) -> str:
        return f"rerank@{self.top}"

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"model": self.model, "top": self.top}
        if self.batch != DEFAULT_BATCH:
            data["batch"] = self.batch
        return data


def rerank_run(
    run: Mapping[str, Mapping[str, float]],
    queries: Mapping[str, str],
    texts: Mapping[str, str],
    score: PairScorer,
    *,
    top: int,
) -> Run:
    """Each query's first ``top`` documents (trec_eval order) reordered by ``score``; the rest follow.

    Every pair of every query goes to ``score`` in one call, so the model batches across queries.
    A reranked document's score is the model's; the documents below ``top`` keep their order
    with scores stepped down from the lowest reranked one (a run is ordered by its scores, and
    the two scales do not mix). ``texts`` maps a document id to the text the model reads.
    """
    if top < 1:
        raise ConfigError(f"rerank top must be at least 1, not {top}")
    orders = {qid: ranked(scores) for qid, scores in run.items()}
    pairs = [(queries[qid], texts[doc]) for qid, order in orders.items() for doc in order[:top]]
    scores = np.asarray(score(pairs), dtype=np.float64) if pairs else np.zeros(0)
    if scores.shape != (len(pairs),):
        raise ModelLoadError(f"the reranker gave {scores.shape} scores for {len(pairs)} pairs")
    out: Run = {}
    at = 0
    for qid, order in orders.items():
        head, tail = order[:top], order[top:]
        new = {doc: float(s) for doc, s in zip(head, scores[at : at + len(head)])}
        at += len(head)
        floor = min(new.values(), default=0.0)
        for step, doc in enumerate(tail, start=1):
            new[doc] = floor - step
        out[qid] = new
    return out


def check_cross_encoder(model: str | Path) -> Path:
    """The folder of a one-logit cross-encoder; one line when it is missing or something else."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"reranker folder {folder} does not exist; train one with embedtune adapt --method reranker")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ConfigError(f"{folder} is not a cross-encoder: it has no readable config.json") from None
    architectures = config.get("architectures") or []
    labels = config.get("num_labels", len(config.get("id2label") or {}))
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures) or labels != 1:
        raise ConfigError(
            f"{folder} is not a cross-encoder (a sequence classifier with one output); "
            "train one with embedtune adapt --method reranker"
        )
    return folder


class CrossEncoderScorer:
    """A cross-encoder folder as a :data:`PairScorer`; loaded on first use, once, on the CPU.

    Scores are the model's raw logits (the sigmoid on top changes no order).
    """

    def __init__(self, model: str | Path, *, batch: int = DEFAULT_BATCH) -> None:
        self.folder = check_cross_encoder(model)
        self.batch = batch
        self._model = None
        self._lock = threading.Lock()

    @property
    def max_length(self) -> int:
        return int(self._load().max_seq_length)

    def _load(self):
        with self._lock:
            if self._model is None:
                st = require("sentence_transformers", "local")
                try:
                    self._model = st.CrossEncoder(str(self.folder), device="cpu", local_files_only=True)
                except (OSError, ValueError) as exc:
                    raise ModelLoadError(f"cannot load {self.folder} as a cross-encoder: {exc}") from exc
            return self._model

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        model = self._load()
        scores = model.predict(
            [list(p) for p in pairs],
            batch_size=self.batch,
            activation_fn=_identity,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(scores, dtype=np.float32).reshape(len(pairs))


def _identity(x):
    return x
