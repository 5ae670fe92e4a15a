"""Reports of a comparison: a rich table for the screen, a JSON-ready dict, and a PNG plot.

All three read a :class:`~embedtune.evaluation.compare.ComparisonResult` and nothing else.
matplotlib is imported (and switched to its Agg backend) only when a plot is drawn.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from embedtune.errors import require
from embedtune.evaluation.compare import SELECT_METRIC, ComparisonResult, StrategyResult
from embedtune.evaluation.significance import CONFIDENCE, EXACT_UP_TO, RESAMPLES

__all__ = [
    "comparison_table",
    "comparison_to_dict",
    "p_text",
    "plot_comparison",
    "recommendation_text",
    "speed_text",
    "usd_text",
]

_MB = 1024 * 1024
_COLOURS = {"bm25": "#7f7f7f", "dense": "#1f77b4", "rrf": "#ff7f0e", "convex": "#2ca02c"}


def speed_text(strategy: StrategyResult) -> str:
    """Texts per second of embedding, ``cached`` when nothing was embedded, ``-`` for BM25."""
    if strategy.cost is None:
        return "-"
    speed = strategy.texts_per_s
    return "cached" if speed is None else f"{speed:,.1f}"


def usd_text(strategy: StrategyResult) -> str:
    """Dollars to embed the corpus with a paid model; ``-`` for BM25 and local models."""
    usd = strategy.usd
    if usd is None:
        return "-"
    return f"${usd:.4f}" if usd < 1 else f"${usd:,.2f}"


def p_text(p: float | None, *, reference: bool = False) -> str:
    """A p-value for a table cell: ``-`` for the reference strategy itself, ``<0.001`` when tiny."""
    if p is None:
        return ""
    if reference:
        return "-"
    # Rounded down, so a p just under the significance level never shows as the level itself.
    return "<0.001" if p < 0.001 else f"{math.floor(p * 1000) / 1000:.3f}"


def recommendation_text(result: ComparisonResult) -> str:
    """One sentence: which strategy is recommended, and why (within noise of the winner, and cheaper)."""
    best, chosen, why = result.best, result.recommended, result.recommendation
    if why is None:
        return f"{best.name} is recommended: the winner on {result.selected_on}"
    where = f"on {result.selected_on} ({why.queries} queries)"
    if chosen.name == best.name:
        if all(result.cost_key(s.name) >= result.cost_key(best.name) for s in result.strategies):
            return f"{best.name} is recommended: the winner {where}, and no strategy costs less"
        return (
            f"{best.name} is recommended: the winner {where}, and every cheaper strategy is significantly "
            f"worse there (p < {why.alpha:g})"
        )
    means = why.means
    return (
        f"{chosen.name} is recommended: within noise of the winner {best.name} {where}: nDCG@10 "
        f"{means[chosen.name]:.4f} against {means[best.name]:.4f}, p={p_text(why.p_value)}; {_cheaper(result, chosen, best)}"
    )


def _cheaper(result: ComparisonResult, chosen: StrategyResult, best: StrategyResult) -> str:
    """How ``chosen`` costs less than ``best``, as it is measured."""
    parts = []
    if chosen.cost is None:
        parts.append("it embeds nothing")
        if 0 < chosen.index_bytes < best.index_bytes:
            parts.append(f"{best.index_bytes / chosen.index_bytes:.1f}× smaller index")
    else:
        mine, theirs = result.embed_seconds(chosen), result.embed_seconds(best)
        if mine and theirs and theirs > mine:
            parts.append(f"{theirs / mine:.1f}× faster to embed")
        if 0 < chosen.vector_bytes < best.vector_bytes:
            parts.append(f"{best.vector_bytes / chosen.vector_bytes:.1f}× smaller vectors")
    if (best.usd or 0.0) > (chosen.usd or 0.0):
        parts.append(f"{usd_text(chosen) if chosen.usd else '$0'} to embed against {usd_text(best)}")
    return ", ".join(parts) or "and cheaper"


def comparison_table(result: ComparisonResult):
    """A ``rich.table.Table``: one row per strategy, the winner in bold, the recommended one marked.

    With per-query figures, nDCG@10 has its 95 % bootstrap interval and the paired test's p-value
    against the winner, on the reported split and (beside its figure) on the tuning split.
    """
    from rich.table import Table

    picked = f"; winner picked on {result.selected_on}" + (" (tunes convex too)" if result.tune_split else "")
    scored = f"; documents scored by their chunks' {result.chunk_score}" if result.chunk_score else ""
    why = result.recommendation
    tested = why is not None
    caption = None
    if why is not None:
        caption = (
            f"{CONFIDENCE:.0%} CI: bootstrap over the {result.split} queries; p: paired randomisation test "
            f"of nDCG@10 against the winner on that split; recommended: the cheapest strategy not "
            f"significantly worse (p ≥ {why.alpha:g}) on {result.selected_on}"
        )
    table = Table(
        title=f"{result.collection}: {result.split} split, {result.queries} queries, "
        f"{result.documents} documents{picked}{scored}",
        caption=caption,
    )
    chunked = any(s.chunker is not None for s in result.strategies)
    table.add_column("strategy")  # names wrap at spaces, so the figures keep their columns at 80 wide
    if chunked:  # the chunker is in the strategy's name
        table.add_column("chunks", justify="right")
    selecting = result.tune_split is not None
    if selecting:  # the figure that chose the winner, beside the ones reported
        table.add_column(f"nDCG@10 {result.tune_split}", justify="right")
        if tested:
            table.add_column(f"p {result.tune_split}", justify="right")
    engines = any(s.engine is not None for s in result.strategies)
    if engines:  # what ran each local model (auto resolved)
        table.add_column("engine")
    table.add_column("nDCG@10", justify="right")
    if tested:
        table.add_column(f"{CONFIDENCE:.0%} CI", justify="right")
        table.add_column("p", justify="right")
    for column in ("Recall@100", "MRR@10", "tokens", "texts/s", "index MB", "$ to embed"):
        table.add_column(column, justify="right")
    latency = any(s.query_ms is not None for s in result.strategies)
    if latency:  # the fused and reranked rows' ms per query, one at a time, served
        table.add_column("query ms", justify="right")
    recommended = result.recommended.name
    for strategy in result.strategies:
        name = strategy.name
        if strategy.alpha is not None:
            name += f" α={strategy.alpha:.2f}"
        winner = strategy.name == result.winner
        marks = [mark for mark, on in (("winner", winner), ("recommended", strategy.name == recommended)) if on]
        if tested and marks:
            name += f" ← {', '.join(marks)}"
        chunk_cells = ["-" if strategy.chunks is None else f"{strategy.chunks:,}"]
        interval = "" if strategy.interval is None else "{:.3f}–{:.3f}".format(*strategy.interval)
        table.add_row(
            name,
            *(chunk_cells if chunked else []),
            *([f"{strategy.selection_score:.4f}"] if selecting else []),
            *([p_text(strategy.selection_p_value, reference=winner)] if selecting and tested else []),
            *([strategy.engine or "-"] if engines else []),
            f"{strategy.metrics['ndcg@10']:.4f}",
            *([interval, p_text(strategy.p_value, reference=winner)] if tested else []),
            *(f"{strategy.metrics[m]:.4f}" for m in ("recall@100", "mrr@10")),
            "-" if strategy.tokens is None else f"{strategy.tokens:,}",
            speed_text(strategy),
            f"{strategy.index_bytes / _MB:.2f}",
            usd_text(strategy),
            *(["-" if strategy.query_ms is None else f"{strategy.query_ms:.1f}"] if latency else []),
            style="bold" if winner else ("bold green" if strategy.name == recommended and tested else None),
        )
    return table


def comparison_to_dict(result: ComparisonResult) -> dict[str, Any]:
    """Everything in the result as plain JSON types (``json.dumps`` takes it as it is)."""
    return {
        "collection": result.collection,
        "split": result.split,
        "tune_split": result.tune_split,
        "selected_on": result.selected_on,
        "documents": result.documents,
        "queries": result.queries,
        "k": result.k,
        "winner": result.winner,
        "bm25_index_seconds": result.bm25_index_seconds,
        "chunk_score": result.chunk_score,
        "notes": list(result.notes),
        "recommended": result.recommended.name,
        "recommendation": _recommendation_dict(result),
        "strategies": [_strategy_dict(s) for s in result.strategies],
    }


def _recommendation_dict(result: ComparisonResult) -> dict[str, Any] | None:
    why = result.recommendation
    if why is None:
        return None
    return {
        "name": why.recommended,
        "winner": why.best,
        "text": recommendation_text(result),
        "decided_on": result.selected_on,
        "queries": why.queries,
        "metric": SELECT_METRIC,
        "p_value": why.p_value,
        "alpha": why.alpha,
        "within_noise": list(why.within_noise),
        "cheaper_means": "embeds nothing (BM25), then fewer seconds to embed the corpus at the measured speed "
        "(when every model's speed was measured), then fewer bytes of vectors, then fewer dollars; a model's "
        "hybrids with BM25 cost what the model does, and among equally cheap strategies the better one wins",
        "interval": f"{CONFIDENCE:.0%} percentile bootstrap of the mean over the {result.split} queries, "
        f"{RESAMPLES} resamples, seed 0",
        "test": f"two-sided paired randomisation (sign-flip) test of the mean difference against the winner; "
        f"exact up to {EXACT_UP_TO} differing queries, else {RESAMPLES} random sign assignments, seed 0",
    }


def _strategy_dict(strategy: StrategyResult) -> dict[str, Any]:
    cost = strategy.cost
    row: dict[str, Any] = {
        "name": strategy.name,
        "kind": strategy.kind,
        "model": strategy.model,
        "engine": strategy.engine,
        "chunker": strategy.chunker,
        "chunks": strategy.chunks,
        "metrics": dict(strategy.metrics),
        "selection": None if strategy.selection is None else dict(strategy.selection),
        "index_bytes": strategy.index_bytes,
        "vector_bytes": strategy.vector_bytes,
        "alpha": strategy.alpha,
        "ci95": None if strategy.interval is None else list(strategy.interval),
        "p_value": strategy.p_value,
        "selection_p_value": strategy.selection_p_value,
        "tokens": strategy.tokens,
        "texts_per_s": strategy.texts_per_s,
        "cached": strategy.cached,
        "usd_to_embed_corpus": strategy.usd,
        "query_ms": strategy.query_ms,
        "rerank_ms": strategy.rerank_ms,
    }
    if strategy.strategy is not None:
        row["strategy"] = strategy.strategy.to_dict()
    if strategy.tuning is not None:
        row["tuning"] = {f"{alpha:g}": value for alpha, value in strategy.tuning.items()}
    if cost is not None:
        row["embedding"] = {
            "dim": cost.dim,
            "corpus_tokens": cost.corpus_tokens,
            "query_tokens": cost.query_tokens,
            "tokens_embedded": cost.tokens_embedded,
            "texts_embedded": cost.texts_embedded,
            "texts_cached": cost.texts_cached,
            "embed_seconds": cost.embed_seconds,
            "truncated_documents": cost.truncated_documents,
            "truncated_queries": cost.truncated_queries,
            "usd_per_million_tokens": cost.usd_per_million_tokens,
        }
    return row


def plot_comparison(result: ComparisonResult, path: str | os.PathLike[str]) -> Path:
    """Write a PNG: nDCG@10 against embedding speed (texts/s, log scale), every point labelled.

    A model (with one chunker, when documents were chunked) and its hybrids share one speed, so
    they stand in one column, coloured by kind and labelled with their score; the column's top
    label names the model (and chunker), its speed and its cost.
    BM25 embeds nothing, so it is a dashed horizontal line in the legend. Models served from the
    cache have no measured speed: they are hollow and stand left of the measured ones. Marker
    area grows with the dollars to embed the corpus (paid models). The winner is a red star and
    is named in the title. With per-query figures, each point has its 95 % interval as an error
    bar (BM25 a band), and the recommended strategy is ringed in green and named in the title.
    """
    matplotlib = require("matplotlib", "eval")
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[StrategyResult]] = {}
    for strategy in result.strategies:
        if strategy.cost is not None:
            groups.setdefault(strategy.embedding or strategy.name, []).append(strategy)
    speeds = [g[0].texts_per_s for g in groups.values() if g[0].texts_per_s is not None]
    # Cached models get their own columns, a factor of 4 apart, left of every measured speed.
    next_unmeasured = min(speeds) / 4 if speeds else 1.0
    columns: dict[str, float] = {}
    for model, group in groups.items():
        if group[0].texts_per_s is not None:
            columns[model] = group[0].texts_per_s
        else:
            columns[model] = next_unmeasured
            next_unmeasured /= 4
    top_usd = max((g[0].usd or 0.0 for g in groups.values()), default=0.0)

    scores = [s.metrics["ndcg@10"] for s in result.strategies]
    scores += [edge for s in result.strategies if s.interval is not None for edge in s.interval]
    pad = max(0.03, (max(scores) - min(scores)) * 0.2)
    y_low, y_high = max(0.0, min(scores) - pad), min(1.0, max(scores) + pad)
    line = 0.03 * (y_high - y_low)  # the height of one line of label text, in nDCG

    recommended = result.recommended.name
    fig, ax = plt.subplots(figsize=(11, 6.5), dpi=120)
    try:
        handles = []
        for model, group in groups.items():
            x = columns[model]
            label_y, lines = None, 0
            for i, strategy in enumerate(sorted(group, key=lambda s: -s.metrics["ndcg@10"])):
                score = strategy.metrics["ndcg@10"]
                text = f"{_kind_label(strategy)}  {score:.3f}"
                if i == 0:
                    text = f"{_model_heading(strategy)}\n{text}"
                new_lines = text.count("\n") + 1
                # Labels in one column are pushed down so that none covers another.
                wanted = score if label_y is None else label_y - (lines + new_lines) / 2 * line
                label_y, lines = min(score, wanted), new_lines
                _draw_point(ax, strategy, x, score, label_y, text, strategy.name == result.winner, top_usd)
                if strategy.interval is not None:  # left of the column, side by side, so bars do not hide each other
                    _draw_interval(ax, strategy, x / 1.08 ** (i + 1), score)
                if strategy.name == recommended:
                    ax.scatter([x], [score], s=700, marker="o", facecolors="none", edgecolors="#2ca02c", linewidths=2.5)
        for strategy in result.strategies:
            if strategy.cost is None:
                winner = strategy.name == result.winner
                if strategy.interval is not None:
                    ax.axhspan(*strategy.interval, color=_COLOURS["bm25"], alpha=0.08, zorder=0)
                handles.append(
                    ax.axhline(
                        strategy.metrics["ndcg@10"],
                        color="#d62728" if winner else "#2ca02c" if strategy.name == recommended else _COLOURS["bm25"],
                        linestyle="--",
                        linewidth=2 if winner or strategy.name == recommended else 1.2,
                        zorder=1,
                        label=f"{strategy.name} (no embedding): {strategy.metrics['ndcg@10']:.3f}",
                    )
                )
        ax.set_xscale("log")
        xs = list(columns.values())
        if xs:
            ax.set_xlim(min(xs) / 2.5, max(xs) * 12)
        ax.set_ylim(y_low, y_high)
        if speeds:
            hollow = "; hollow, at the left: from the cache, not measured" if len(xs) > len(speeds) else ""
            ax.set_xlabel(f"embedding speed, texts/s (log scale{hollow})")
        else:
            ax.set_xticks([], minor=False)
            ax.set_xticks([], minor=True)
            ax.set_xlabel("embedding speed not measured: every vector came from the cache")
        ax.set_ylabel(f"nDCG@10 on {result.split} ({result.queries} queries)")
        best = result.best
        chosen = (
            f"\nrecommended (ringed): {result.recommended.name}, within noise of the winner on {result.selected_on}"
            if result.recommendation is not None and recommended != best.name
            else ""
        )
        bars = f"; bars: {CONFIDENCE:.0%} CI" if any(s.interval is not None for s in result.strategies) else ""
        ax.set_title(
            f"{result.collection}: quality against embedding speed{bars}\n"
            f"winner: {best.name} (nDCG@10 {best.metrics['ndcg@10']:.3f}){chosen}",
            fontsize=11,
        )
        ax.grid(True, which="major", alpha=0.3)
        handles += [
            plt.Line2D([], [], marker="o", linestyle="", color=colour, label=_KIND_NAMES[kind])
            for kind, colour in _COLOURS.items()
            if kind != "bm25" and any(s.kind == kind for g in groups.values() for s in g)
        ]
        if handles:
            ax.legend(handles=handles, loc="best", fontsize=8.5)
        if top_usd:
            fig.text(0.01, 0.01, "marker area grows with the dollars to embed the corpus", fontsize=8, color="#555555")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


_KIND_NAMES = {"dense": "dense", "rrf": "+ bm25, RRF (k=60)", "convex": "+ bm25, convex (tuned α)"}


def _kind_label(strategy: StrategyResult) -> str:
    if strategy.kind == "convex":
        return f"+ bm25 convex α={strategy.alpha:.2f}" if strategy.alpha is not None else "+ bm25 convex"
    return {"rrf": "+ bm25 rrf"}.get(strategy.kind, strategy.kind)


def _model_heading(strategy: StrategyResult) -> str:
    speed = "cached" if strategy.texts_per_s is None else f"{strategy.texts_per_s:,.1f} texts/s"
    cost = "local, $0" if strategy.usd is None else f"{usd_text(strategy)} to embed"
    return f"{(strategy.embedding or strategy.name).removeprefix('local:')}\n{speed} · {cost}"


def _draw_interval(ax, strategy: StrategyResult, x: float, score: float) -> None:
    assert strategy.interval is not None
    low, high = strategy.interval
    ax.errorbar(
        [x],
        [score],
        yerr=[[max(score - low, 0.0)], [max(high - score, 0.0)]],
        fmt="_",
        color=_COLOURS.get(strategy.kind, "#9467bd"),
        alpha=0.7,
        capsize=3,
        zorder=2,
    )


def _draw_point(
    ax, strategy: StrategyResult, x: float, score: float, label_y: float, text: str, winner: bool, top_usd: float
) -> None:
    measured = strategy.texts_per_s is not None
    colour = _COLOURS.get(strategy.kind, "#9467bd")
    size = 80 + (600 * strategy.usd / top_usd if strategy.usd and top_usd else 0)
    ax.scatter(
        [x],
        [score],
        s=size * (3 if winner else 1),
        marker="*" if winner else "o",
        facecolors=colour if measured else "none",
        edgecolors="#d62728" if winner else colour,
        linewidths=2 if winner else 1.5,
        zorder=3,
    )
    ax.annotate(
        text,
        (x, score),
        xytext=(x * 1.3, label_y),
        textcoords="data",
        fontsize=8,
        fontweight="bold" if winner else "normal",
        color="#d62728" if winner else "black",
        va="center",
        arrowprops={"arrowstyle": "-", "color": "#aaaaaa", "lw": 0.6},
    )
