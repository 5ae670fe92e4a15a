"""``embedtune optimize``: search the strategy space under a budget, and hand over the result.

The search is one optuna study kept in ``OUT/study.sqlite``:

- **Objective and constraints, declared.** The objective is one number, nDCG@10 on the tuning
  split (dev, else train), maximised by TPE. Each budget ceiling is a constraint
  (:meth:`optuna.trial.Trial.set_constraint`: relative excess, feasible at zero or less), so the
  sampler learns where the budget is rather than a score folded by hand.
- **Cheap first.** optuna prunes only single-objective studies, so quality is the objective and
  costs are constraints and figures; each trial reports its score at growing samples (rungs, see
  :mod:`embedtune.optimize.trials`) and successive halving stops the ones that cannot win. The
  Pareto front (quality against index size, query latency and dollars) is computed afterwards
  from every finished trial's recorded figures (:mod:`embedtune.optimize.pareto`).
- **Resumable.** The study is named by its inputs (the corpus, the tuning judgments, the space,
  the budget and the seed). ``--trials N`` is the size the study should reach: a rerun adds only
  the missing trials; a trial a kill interrupted is run again from its parameters (its vectors
  are in the cache). A strategy already finished is not scored again: its figures are copied.
- **Honest.** Trials see only the tuning split. The reported split (``test``) is scored once,
  at the end, for the chosen strategy and the front; it never picks anything.

Written to ``OUT``: ``trials.jsonl`` (every trial: settings, figures, seconds, texts embedded),
``strategy.toml`` (the choice, ready for ``index`` and ``serve``), ``front.json`` and
``pareto.png``; stores in ``OUT/stores``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtune.ensemble import Ensemble
from embedtune.errors import ConfigError, MissingDependencyError
from embedtune.evaluation.collections import Collection
from embedtune.evaluation.compare import TUNE_SPLITS
from embedtune.evaluation.significance import bootstrap_ci, recommend
from embedtune.evaluation.workspace import workspace
from embedtune.optimize.pareto import Budget, choose, pareto_front
from embedtune.optimize.space import SearchSpace
from embedtune.optimize.trials import Rung, TrialScorer, plan_rungs
from embedtune.strategy import Reduction, Strategy

if TYPE_CHECKING:
    import optuna

    from embedtune.embedder import Embedder

__all__ = ["OptimizeResult", "TrialRecord", "optimize"]

ProgressFn = Callable[[str], None]
"""``on_progress(line)``: one line after each trial (trials done, best so far, time left)."""


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """One trial of the study, as ``trials.jsonl`` holds it.

    ``quality`` is nDCG@10 on the tuning queries of the last rung it reached (``rung``, of
    ``queries`` queries): for a complete trial, every tuning query over the whole corpus. The
    costs are on the whole corpus, known for complete trials only; ``vectors_bytes`` is the
    part of ``index_bytes`` that is the vector index (the rest is the BM25 index). ``texts_embedded`` counts
    texts the model embedded for this trial (cache misses); ``copied_from`` names the finished
    trial whose figures a repeated strategy took; ``over_budget`` names the ceilings a pruned
    trial's costs, estimated on the smallest rung, broke.
    """

    number: int
    state: str
    strategy: Strategy | Ensemble | None
    params: Mapping[str, Any]
    quality: float | None = None
    rung: int | None = None
    queries: int | None = None
    index_bytes: int | None = None
    vectors_bytes: int | None = None
    query_ms: float | None = None
    usd: float | None = None
    texts_embedded: int = 0
    seconds: float | None = None
    copied_from: int | None = None
    over_budget: tuple[str, ...] = ()

    @property
    def index_mb(self) -> float:
        return (self.index_bytes or 0) / (1024 * 1024)  # MiB, as compare reports it

    @property
    def vectors_mb(self) -> float:
        """The vector index alone (MiB); ``index_mb`` less a hybrid's BM25 index, 0 for BM25."""
        return (self.vectors_bytes or 0) / (1024 * 1024)

    @property
    def name(self) -> str:
        """The strategy's name with what the name leaves out: weight, Matryoshka size, feedback parameters."""
        if self.strategy is None:
            return f"trial {self.number}"
        s = self.strategy
        if isinstance(s, Ensemble):
            return s.name  # its weights are in its name
        extras = []
        if s.embedder is not None and s.embedder.dims is not None:
            extras.append(f"{s.embedder.dims} dims")
        if s.alpha is not None:
            extras.append(f"α={s.alpha:g}")
        if s.feedback is not None:
            extras.append(s.feedback.label)
        return s.name + (f" [{', '.join(extras)}]" if extras else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "name": self.name,
            "params": dict(self.params),
            "strategy": None if self.strategy is None else self.strategy.to_dict(),
            "ndcg@10": self.quality,
            "rung": self.rung,
            "queries": self.queries,
            "index_mb": None if self.index_bytes is None else self.index_mb,
            "vectors_mb": None if self.vectors_bytes is None else self.vectors_mb,
            "query_ms": self.query_ms,
            "usd": self.usd,
            "texts_embedded": self.texts_embedded,
            "seconds": self.seconds,
            "copied_from": self.copied_from,
            "over_budget": list(self.over_budget),
        }


@dataclass(frozen=True, kw_only=True)
class OptimizeResult:
    """What a search found. ``reported`` maps a trial number (the front's, the chosen and the
    recommended one's) to its metrics on ``report_split``, scored once after the search, and
    ``intervals`` to the 95 % bootstrap interval of its nDCG@10 there; both empty when there is no
    such split. ``chosen`` is the best within the budget (``strategy.toml``); ``recommended`` the
    cheapest within the budget that is not significantly worse than it on the tuning queries
    (``recommended.toml``), and ``recommendation`` says why."""

    collection: str
    tune_split: str
    report_split: str | None
    budget: Budget
    trials: tuple[TrialRecord, ...]
    new_trials: int
    front: tuple[TrialRecord, ...]
    chosen: TrialRecord
    reported: Mapping[int, Mapping[str, float]]
    rung_queries: tuple[int, ...]
    out: Path
    notes: tuple[str, ...] = field(default=())
    recommended: TrialRecord | None = None
    recommendation: str | None = None
    intervals: Mapping[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def texts_embedded(self) -> int:
        """Texts embedded by the trials run in this call."""
        return sum(t.texts_embedded for t in self.trials[len(self.trials) - self.new_trials :])


def optimize(
    collection: Collection,
    space: SearchSpace,
    *,
    out: str | os.PathLike[str],
    budget: Budget | None = None,
    trials: int = 30,
    timeout: float | None = None,
    cache: str | os.PathLike[str] | None = None,
    providers: Mapping[str, Embedder] | None = None,
    seed: int = 0,
    tune_split: str | None = None,
    notes: tuple[str, ...] = (),
    on_progress: ProgressFn | None = None,
) -> OptimizeResult:
    """Search ``space`` on ``collection`` for at most ``trials`` trials (the study's size) or ``timeout`` seconds.

    ``tune_split`` picks the trials (default: ``dev``, else ``train``); a collection with neither
    is refused in one line (generate queries from its corpus first). ``cache`` is the embedding
    cache file; ``providers`` maps a model URI to an opened provider to share. Raises
    :class:`~embedtune.optimize.pareto.NoStrategyFitsError` when no finished trial meets
    ``budget`` (``trials.jsonl`` is written first).
    """
    optuna = _optuna()
    budget = budget or Budget()
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials must be a whole number of at least 1, not {trials!r}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"the time limit must be positive, not {timeout!r} seconds")
    tune = _tune_split(collection, tune_split)
    report_split = "test" if "test" in collection.qrels and tune != "test" else None
    from embedtune.documents import corpus_documents

    documents = corpus_documents(collection.corpus)
    queries, qrels = collection.split(tune)
    rungs = plan_rungs(documents, queries, qrels, seed=seed)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {out}: {exc.strerror}; choose another --out") from None
    notes = (*notes, *_notes(collection, tune, report_split, rungs))
    study = _open_study(optuna, out, _study_name(collection, tune, space, budget, seed), seed)
    before = len(study.trials)  # a trial queued again below is a new trial of this call
    _retry_interrupted(optuna, study)
    started = time.monotonic()
    with workspace(out / "stores", collection.name, documents) as stores:
        scorer = TrialScorer(rungs, stores, cache=cache, providers=providers)
        try:
            objective = _Objective(space, scorer, rungs, budget, _records(optuna, study))
            remaining = trials - _finished(optuna, study)
            if remaining > 0:

                def progress(study: Any, trial: Any) -> None:  # optuna.Study, optuna.trial.FrozenTrial
                    objective.remember(_record(optuna, trial))
                    if on_progress is not None:
                        on_progress(_progress_line(optuna, study, trials, budget, timeout, started))

                study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=[progress])
            records = _records(optuna, study)
            _write_trials(out / "trials.jsonl", records)
            # A repeated strategy's trial copies its twin's figures: one point per strategy.
            complete = [r for r in records if r.state == "complete" and r.copied_from is None]
            front = pareto_front(complete)
            # With every trial stopped over budget, the closest of them (on its estimate) is named.
            candidates = complete or [r for r in records if r.over_budget]
            chosen = choose(candidates, budget, describe={id(r): f"trial {r.number} ({r.name})" for r in candidates})
            recommended, why = _recommend(complete, chosen, budget, scorer, rungs[-1])
            reported: dict[int, dict[str, float]] = {}
            intervals: dict[int, tuple[float, float]] = {}
            if report_split is not None:
                report_queries, report_qrels = collection.split(report_split)
                for record in [chosen, recommended, *front]:  # scored once each, after the search
                    if record.number not in reported and record.strategy is not None:
                        reported[record.number] = scorer.report(record.strategy, report_queries, report_qrels)
                        values = scorer.report_per_query(record.strategy, report_queries, report_qrels)
                        intervals[record.number] = bootstrap_ci(list(values.values()))
        finally:
            scorer.close()
    result = OptimizeResult(
        collection=collection.name,
        tune_split=tune,
        report_split=report_split,
        budget=budget,
        trials=tuple(records),
        new_trials=len(study.trials) - before,
        front=tuple(front),
        chosen=chosen,
        recommended=recommended,
        recommendation=why,
        reported=reported,
        intervals=intervals,
        rung_queries=tuple(len(r.queries) for r in rungs),
        out=out,
        notes=notes,
    )
    _write_outputs(result)
    return result


class _Objective:
    """One trial: the strategy the sampler suggests, scored rung by rung, pruned, then costed."""

    def __init__(
        self,
        space: SearchSpace,
        scorer: TrialScorer,
        rungs: list[Rung],
        budget: Budget,
        finished: list[TrialRecord],
    ) -> None:
        self.space, self.scorer, self.rungs, self.budget = space, scorer, rungs, budget
        self._complete: dict[str, TrialRecord] = {}
        for record in finished:
            self.remember(record)

    def remember(self, record: TrialRecord) -> None:
        if record.state == "complete" and record.copied_from is None:
            self._complete.setdefault(_params_key(record.params), record)

    def __call__(self, trial: optuna.trial.Trial) -> float:
        import optuna

        strategy = self.space.suggest(trial)
        trial.set_user_attr("strategy", strategy.to_dict())
        start, embedded = time.perf_counter(), self.scorer.texts_embedded
        try:
            twin = self._complete.get(_params_key(trial.params))
            if twin is not None:  # seen before: its figures hold, nothing to score again
                assert twin.quality is not None and twin.strategy is not None
                strategy = twin.strategy  # with the weight fitted then
                trial.set_user_attr("strategy", strategy.to_dict())
                value, rung, queries = twin.quality, twin.rung, twin.queries
                index_bytes, vectors_bytes, query_ms, usd = (
                    twin.index_bytes,
                    twin.vectors_bytes,
                    twin.query_ms,
                    twin.usd,
                )
                trial.set_user_attr("copied_from", twin.number)
            else:
                smallest = len(self.rungs[0].documents)
                for part in _parts(strategy):
                    if part.dims is not None and part.reduction is Reduction.PCA and smallest < part.dims:
                        # Too few vectors to fit a PCA on the first sample (its documents bound its chunks from below).
                        raise optuna.TrialPruned(
                            f"PCA to {part.dims} dims needs as many documents; a sample has {smallest}"
                        )
                self._check_estimate(trial, strategy)
                for stage in self.rungs:
                    strategy = self.scorer.fit(strategy, stage, self.space.alpha_step)
                    trial.set_user_attr("strategy", strategy.to_dict())
                    value = self.scorer.quality(strategy, stage)
                    rung, queries = stage.index, len(stage.queries)
                    trial.set_user_attr("rung", rung)
                    trial.set_user_attr("queries", queries)
                    trial.set_user_attr("quality", value)
                    trial.report(value, stage.step)
                    if stage is not self.rungs[-1] and trial.should_prune():
                        raise optuna.TrialPruned(f"nDCG@10 {value:.4f} on {queries} queries")
                costs = self.scorer.costs(strategy)
                index_bytes, vectors_bytes = costs.index_bytes, costs.vectors_bytes
                query_ms, usd = costs.query_ms, costs.usd
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 3))
            trial.set_user_attr("texts_embedded", self.scorer.texts_embedded - embedded)
        trial.set_user_attr("rung", rung)
        trial.set_user_attr("queries", queries)
        trial.set_user_attr("quality", value)
        figures = {"index_bytes": index_bytes, "vectors_bytes": vectors_bytes, "query_ms": query_ms, "usd": usd}
        for key, figure in figures.items():
            trial.set_user_attr(key, figure)
        record = TrialRecord(
            number=trial.number,
            state="complete",
            strategy=strategy,
            params={},
            quality=value,
            index_bytes=index_bytes,
            vectors_bytes=vectors_bytes,
            query_ms=query_ms,
            usd=usd,
        )
        for key, excess in self.budget.excess(record).items():
            trial.set_constraint(key, excess)
        return value

    def _check_estimate(self, trial: Any, strategy: Strategy | Ensemble) -> None:
        """Stop a strategy whose costs, estimated on the smallest rung, are over the budget.

        Before it reports a score: successive halving compares a trial only with the trials
        scored at the same rung, so a strategy the budget excludes must not push out one it allows.
        """
        if not self.budget.limits or len(self.rungs) < 2:
            return
        import optuna

        costs = self.scorer.costs(strategy, self.rungs[0])
        estimate = TrialRecord(
            number=trial.number,
            state="pruned",
            strategy=strategy,
            params={},
            index_bytes=costs.index_bytes,
            vectors_bytes=costs.vectors_bytes,
            query_ms=costs.query_ms,
            usd=costs.usd,
        )
        over = {key: value for key, value in self.budget.excess(estimate).items() if value > 0}
        if over:
            trial.set_user_attr("over_budget", sorted(over))
            # Estimates: what the error line names if nothing fits.
            for key in ("index_bytes", "vectors_bytes", "query_ms", "usd"):
                trial.set_user_attr(key, getattr(costs, key))
            raise optuna.TrialPruned(f"over the budget on {', '.join(sorted(over))} (estimated on a sample)")


def _recommend(
    complete: list[TrialRecord], chosen: TrialRecord, budget: Budget, scorer: TrialScorer, final: Rung
) -> tuple[TrialRecord, str | None]:
    """The cheapest strategy within ``budget`` not significantly worse than ``chosen`` on the tuning
    queries (paired test per query), and a sentence saying why; ``chosen`` itself when none is.

    Cheapest: embeds nothing (BM25), then fewer dollars, then the smaller product of index size
    and query time. A product, not index first: a slightly smaller index must not buy a query
    several times slower (a big model's binary vectors against a small model's float16 ones).
    Only strategies scored on every tuning query take part (a pruned trial was not).
    """
    rivals = {
        str(r.number): r
        for r in complete
        if r.strategy is not None and r.queries == len(final.queries) and budget.allows(r)
    }
    if str(chosen.number) not in rivals or len(rivals) < 2:
        return chosen, None
    per_query = {name: scorer.per_query(r.strategy, final) for name, r in rivals.items()}  # type: ignore[arg-type]

    def cost(name: str) -> tuple[float, ...]:
        r = rivals[name]
        assert r.strategy is not None
        footprint = float(r.index_bytes or 0) * (r.query_ms or 0.0)
        return (float(_embeds(r.strategy)), r.usd or 0.0, footprint, float(r.index_bytes or 0))

    verdict = recommend(per_query, cost, best=str(chosen.number))
    picked = rivals[verdict.recommended]
    if picked is chosen:
        return chosen, f"trial {chosen.number} ({chosen.name}) is the best, and nothing cheaper is within noise of it"
    index = _times(chosen.index_bytes or 0, picked.index_bytes or 0, "smaller index", "larger index")
    query = _times(chosen.query_ms or 0.0, picked.query_ms or 0.0, "faster query", "slower query")
    return picked, (
        f"trial {picked.number} ({picked.name}) is recommended: within noise of the best, trial {chosen.number} "
        f"({chosen.name}), on {verdict.queries} tuning queries: nDCG@10 "
        f"{verdict.means[verdict.recommended]:.4f} against {verdict.means[verdict.best]:.4f}, "
        f"p={verdict.p_values[verdict.recommended]:.3f}; {index}, {query}"
    )


def _parts(strategy: Strategy | Ensemble) -> tuple[Strategy, ...]:
    """The strategies a trial builds: the strategy, or an ensemble's members."""
    return strategy.members if isinstance(strategy, Ensemble) else (strategy,)


def _embeds(strategy: Strategy | Ensemble) -> bool:
    """Whether a model reads the corpus (dense vectors or a learned sparse index): BM25 alone does not."""
    return any(part.uses_vectors or part.uses_sparse for part in _parts(strategy))


def _times(best: float, picked: float, less: str, more: str) -> str:
    """``"4.0x smaller index"`` when ``picked`` is under ``best``, else ``"1.5x larger index"``."""
    if picked <= best:
        return f"{best / max(picked, 1e-12):.1f}x {less}"
    return f"{picked / max(best, 1e-12):.1f}x {more}"


def _params_key(params: Mapping[str, Any]) -> str:
    """What the sampler chose: two trials with the same choices score the same."""
    return json.dumps(dict(params), sort_keys=True)


def _optuna():
    try:
        import optuna
    except ImportError:
        raise MissingDependencyError("embedtune optimize needs optuna: install embedtune[optimize]") from None
    return optuna


def _tune_split(collection: Collection, wanted: str | None) -> str:
    if wanted is not None:
        if wanted == "test":
            raise ConfigError("the search never selects on test, the split it reports; tune on dev or train")
        collection.split(wanted)  # one line naming the splits there are
        return wanted
    for name in TUNE_SPLITS:
        if collection.qrels.get(name):
            return name
    raise ConfigError(
        f"collection {collection.name!r} has no dev or train judgments to select a strategy on (and test is only "
        "reported); add qrels/dev.tsv, or pass --generate-queries title to select on queries generated from the corpus"
    )


def _notes(collection: Collection, tune: str, report_split: str | None, rungs: list[Rung]) -> list[str]:
    notes = []
    if tune == "train" and "dev" not in collection.qrels:
        notes.append(f"trials were scored on train ({len(rungs[-1].queries)} queries): {collection.name!r} has no dev")
    if len(rungs) > 1:
        sizes = ", ".join(f"{len(r.queries)} queries / {len(r.documents)} documents" for r in rungs)
        notes.append(f"trials were promoted on promise (successive halving) through samples of {sizes}")
    if report_split is None:
        notes.append(f"{collection.name!r} has no test split: the chosen strategy's figures are on {tune} only")
    return notes


def _study_name(collection: Collection, tune: str, space: SearchSpace, budget: Budget, seed: int) -> str:
    """The study's name: a hash of everything that makes two searches the same search."""
    digest = hashlib.sha256()
    for doc_id, doc in sorted(collection.corpus.items()):
        digest.update(f"{doc_id}\0{doc.full_text}\0".encode())
    queries, qrels = collection.split(tune)
    digest.update(json.dumps([queries, qrels, space.describe(), str(budget), seed], sort_keys=True).encode())
    return f"optimize-{digest.hexdigest()[:16]}"


def _open_study(optuna, out: Path, name: str, seed: int):
    storage = f"sqlite:///{(out / 'study.sqlite').resolve()}"
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.create_study(
        study_name=name, storage=storage, direction="maximize", sampler=sampler, pruner=pruner, load_if_exists=True
    )


def _retry_interrupted(optuna, study) -> None:
    """Trials a killed run left running: closed as failed, their parameters queued to run again."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        if trial.params:  # (not skip_if_exists: the failed trial itself holds these parameters)
            study.enqueue_trial(trial.params)


def _finished(optuna, study) -> int:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _records(optuna, study) -> list[TrialRecord]:
    return [_record(optuna, t) for t in study.get_trials(deepcopy=False)]


_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def _record(optuna, trial) -> TrialRecord:
    attrs = trial.user_attrs
    strategy: Strategy | Ensemble | None = None
    if "strategy" in attrs:
        source = f"trial {trial.number}"
        if "members" in attrs["strategy"]:
            strategy = Ensemble.from_dict(attrs["strategy"], source=source)
        else:
            strategy = Strategy.from_dict(attrs["strategy"], source=source)
    return TrialRecord(
        number=trial.number,
        state=_STATES.get(trial.state.name, trial.state.name.lower()),
        strategy=strategy,
        params=dict(trial.params),
        quality=attrs.get("quality"),
        rung=attrs.get("rung"),
        queries=attrs.get("queries"),
        index_bytes=attrs.get("index_bytes"),
        vectors_bytes=attrs.get("vectors_bytes"),
        query_ms=attrs.get("query_ms"),
        usd=attrs.get("usd"),
        texts_embedded=attrs.get("texts_embedded", 0),
        seconds=attrs.get("seconds"),
        copied_from=attrs.get("copied_from"),
        over_budget=tuple(attrs.get("over_budget", ())),
    )


def _progress_line(optuna, study, target: int, budget: Budget, timeout: float | None, started: float) -> str:
    records = _records(optuna, study)
    complete = [r for r in records if r.state == "complete"]
    pruned = sum(r.state == "pruned" for r in records)
    fitting = [r for r in complete if budget.allows(r)]
    if fitting:
        best_record = max(fitting, key=lambda r: r.quality or 0.0)
        best = f"best {best_record.quality:.4f} {best_record.name}"
    else:
        best = "no strategy within the budget yet" if complete else "no trial complete yet"
    left = "no time limit"
    if timeout is not None:
        seconds = max(0.0, timeout - (time.monotonic() - started))
        left = f"{int(seconds // 60)}m{int(seconds % 60):02d}s left"
    last = records[-1]
    state = last.state + (f" (over budget: {', '.join(last.over_budget)})" if last.over_budget else "")
    return (
        f"trial {last.number} {state} ({last.texts_embedded} texts embedded, {last.seconds or 0:.1f}s) · "
        f"{len(complete) + pruned}/{target} done ({pruned} pruned) · {best} · {left}"
    )


def _write_trials(path: Path, records: list[TrialRecord]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)


def _write_outputs(result: OptimizeResult) -> None:
    from embedtune.optimize.report import plot_front, result_to_dict

    chosen = result.chosen
    assert chosen.strategy is not None and chosen.quality is not None
    lines = [
        f"{chosen.name}: chosen by embedtune optimize on {result.collection} (trial {chosen.number})",
        f"nDCG@10 {chosen.quality:.4f} on {result.tune_split} (where it was chosen), budget {result.budget}",
    ]
    if chosen.number in result.reported:
        lines.append(f"nDCG@10 {result.reported[chosen.number]['ndcg@10']:.4f} on {result.report_split}")
    chosen.strategy.save(result.out / "strategy.toml", comment="\n".join(lines))
    recommended = result.recommended
    if recommended is not None and recommended is not chosen and recommended.strategy is not None:
        recommended.strategy.save(result.out / "recommended.toml", comment=result.recommendation or "")
    else:
        (result.out / "recommended.toml").unlink(missing_ok=True)
    tmp = result.out / ".front.json.tmp"
    tmp.write_text(json.dumps(result_to_dict(result), indent=2), encoding="utf-8")
    os.replace(tmp, result.out / "front.json")
    plot_front(result, result.out / "pareto.png")
