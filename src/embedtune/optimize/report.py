"""Reports of a search: the Pareto front as a rich table, a JSON-ready dict, and a PNG.

All three read an :class:`~embedtune.optimize.workflow.OptimizeResult` and nothing else.
matplotlib is imported (and switched to its Agg backend) only when a plot is drawn.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtune.errors import require

if TYPE_CHECKING:
    from embedtune.optimize.workflow import OptimizeResult, TrialRecord

__all__ = ["front_table", "plot_front", "result_to_dict"]


def _rows(result: OptimizeResult) -> list[TrialRecord]:
    """The front, and the chosen strategy when it is not on it (a budget can exclude the front's best)."""
    rows = list(result.front)
    for extra in (result.chosen, result.recommended):
        if extra is not None and all(r.number != extra.number for r in rows):
            rows.append(extra)
    return rows


def front_table(result: OptimizeResult):
    """A ``rich.table.Table``: the Pareto front, the chosen strategy in bold, the recommended one marked."""
    from rich.table import Table

    complete = sum(t.state == "complete" for t in result.trials)
    pruned = sum(t.state == "pruned" for t in result.trials)
    table = Table(
        title=f"{result.collection}: Pareto front of {complete} complete trials ({pruned} pruned); "
        f"chosen on {result.tune_split}, budget {result.budget}",
    )
    table.add_column("trial", justify="right")
    table.add_column("strategy")
    table.add_column(f"nDCG@10 {result.tune_split}", justify="right")
    if result.report_split is not None:
        table.add_column(f"nDCG@10 {result.report_split}", justify="right")
        table.add_column("95% CI", justify="right")
        table.add_column(f"Recall@100 {result.report_split}", justify="right")
    for column in ("index MB", "vectors MB", "query ms", "$ to embed", "within budget"):
        table.add_column(column, justify="right")
    for record in _rows(result):
        mark = " ← chosen" if record.number == result.chosen.number else ""
        if result.recommended is not None and record.number == result.recommended.number:
            mark += " ← recommended"
        cells = [str(record.number), record.name + mark, f"{record.quality or 0.0:.4f}"]
        if result.report_split is not None:
            reported = result.reported.get(record.number, {})
            low, high = result.intervals.get(record.number, (float("nan"), float("nan")))
            cells += [
                f"{reported.get('ndcg@10', float('nan')):.4f}",
                f"{low:.3f}–{high:.3f}",
                f"{reported.get('recall@100', float('nan')):.4f}",
            ]
        cells += [
            f"{record.index_mb:.2f}",
            f"{record.vectors_mb:.3f}",
            f"{record.query_ms or 0.0:.1f}",
            f"${record.usd:.4f}" if record.usd else "-",
            "yes" if result.budget.allows(record) else "no",
        ]
        table.add_row(*cells, style="bold" if record.number == result.chosen.number else None)
    return table


def result_to_dict(result: OptimizeResult) -> dict[str, Any]:
    """The front, the choice and what each was reported at, as plain data."""

    def row(record: TrialRecord) -> dict[str, Any]:
        interval = result.intervals.get(record.number)
        return {
            **record.to_dict(),
            "reported": dict(result.reported.get(record.number, {})),
            "interval": None if interval is None else list(interval),
        }

    return {
        "collection": result.collection,
        "tune_split": result.tune_split,
        "report_split": result.report_split,
        "budget": result.budget.limits,
        "trials": len(result.trials),
        "new_trials": result.new_trials,
        "rung_queries": list(result.rung_queries),
        "chosen": row(result.chosen),
        "recommended": None if result.recommended is None else row(result.recommended),
        "recommendation": result.recommendation,
        "front": [row(r) for r in result.front],
        "notes": list(result.notes),
    }


def plot_front(result: OptimizeResult, path: str | os.PathLike[str]) -> Path:
    """Write a PNG: tuning nDCG@10 against index MB, query ms and dollars, one panel each.

    Every complete trial is a grey dot, the front is blue and joined, the chosen strategy is a red
    star; a budget ceiling is a dashed vertical line.
    """
    matplotlib = require("matplotlib", "eval")
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    complete = [t for t in result.trials if t.state == "complete"]
    axes_spec = (("index_mb", "index MB"), ("query_ms", "query ms (median)"), ("usd", "$ to embed the corpus"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 5), dpi=110, sharey=True)
    try:
        for ax, (key, label) in zip(axes, axes_spec, strict=True):

            def x(record: TrialRecord, key: str = key) -> float:
                return float(getattr(record, key) or 0.0)

            ax.scatter([x(t) for t in complete], [t.quality for t in complete], s=14, color="#bbbbbb", label="trial")
            front = sorted(result.front, key=x)
            ax.plot([x(t) for t in front], [t.quality for t in front], "o-", color="#1f77b4", label="Pareto front")
            ax.scatter(
                [x(result.chosen)],
                [result.chosen.quality],
                marker="*",
                s=220,
                color="#d62728",
                zorder=5,
                label="chosen",
            )
            limit = result.budget.limits.get(key)
            if limit is not None:
                ax.axvline(limit, linestyle="--", color="#d62728", linewidth=1)
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"nDCG@10 on {result.tune_split}")
        axes[0].legend(loc="lower right", fontsize=8)
        fig.suptitle(f"{result.collection}: chosen {result.chosen.name} (trial {result.chosen.number})", fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
