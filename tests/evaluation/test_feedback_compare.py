"""compare --feedback on a SciFact slice: its rows, tuned on train, and the CLI serving what it scored.

A slice (the documents judged for 15 test and 30 train queries, others up to 150) keeps this
small; the whole collections run in benchmarks/prf_beir.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from _cli import one_error_line, run_cli
from _slices import write_scifact_slice
from embedtune.evaluation.tuning import feedback_grid
from embedtune.strategy import Strategy

MINILM = "local:all-MiniLM-L6-v2?engine=torch"


@pytest.fixture(scope="module")
def scifact_slice(shared_datasets, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scifact-slice")
    return write_scifact_slice(shared_datasets, folder, tests=15, trains=30, documents=150)


@pytest.fixture(scope="module")
def compared(scifact_slice, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("report")
    args = ["--models", MINILM, "--bm25", "--hybrid", "convex", "--feedback", "rocchio,rm3", "--out-dir", out]
    result = run_cli("compare", scifact_slice, *args, home=home, timeout=900)
    assert result.returncode == 0, result.stderr
    return home, json.loads((out / "comparison.json").read_text())


def test_compare_adds_a_row_per_strategy_feedback_applies_to_with_parameters_tuned_on_train(compared):
    _, report = compared
    rows = {row["name"]: row for row in report["strategies"]}
    assert report["tune_split"] == "train"
    assert list(rows) == [
        "bm25",
        "bm25 + rm3",
        MINILM,
        f"{MINILM} + bm25 (convex)",
        f"{MINILM} + rocchio",
        f"{MINILM} + bm25 (convex) + rocchio",
        f"{MINILM} + bm25 (convex) + rm3",
    ]
    for name, method in [("bm25 + rm3", "rm3"), (f"{MINILM} + rocchio", "rocchio")]:
        chosen = Strategy.from_dict(rows[name]["strategy"]).feedback
        assert chosen in feedback_grid(method)
    # One RM3 run serves BM25 and the hybrid; one Rocchio run serves the dense row and the hybrid.
    assert rows["bm25 + rm3"]["strategy"]["feedback"] == rows[f"{MINILM} + bm25 (convex) + rm3"]["strategy"]["feedback"]
    rocchio = rows[f"{MINILM} + rocchio"]["strategy"]["feedback"]
    assert rows[f"{MINILM} + bm25 (convex) + rocchio"]["strategy"]["feedback"] == rocchio
    assert all(0.0 <= row["metrics"]["ndcg@10"] <= 1.0 for row in rows.values())


@pytest.mark.parametrize("name", ["bm25 + rm3", f"{MINILM} + bm25 (convex) + rocchio"])
def test_a_strategy_with_feedback_built_and_searched_by_the_cli_scores_what_compare_reported(
    compared, scifact_slice, tmp_path, name
):
    home, report = compared
    row = next(row for row in report["strategies"] if row["name"] == name)
    strategy_file = Strategy.from_dict(row["strategy"]).save(tmp_path / "s.toml")
    assert "[feedback]" in strategy_file.read_text()
    store = tmp_path / "index"
    built = run_cli("index", scifact_slice, "--strategy", strategy_file, "--store", store, home=home, timeout=600)
    assert built.returncode == 0, built.stderr
    scored = run_cli("eval", scifact_slice, "--store", store, home=home, timeout=600)
    assert scored.returncode == 0, scored.stderr
    figures = dict(re.findall(r"(ndcg@10|recall@100) ([0-9.]+)", scored.stdout))
    assert float(figures["ndcg@10"]) == pytest.approx(row["metrics"]["ndcg@10"], abs=6e-5)
    assert float(figures["recall@100"]) == pytest.approx(row["metrics"]["recall@100"], abs=6e-5)


def test_an_unknown_feedback_method_is_one_line(scifact_slice, tmp_path):
    result = run_cli("compare", scifact_slice, "--bm25", "--feedback", "prf", "--out-dir", tmp_path, home=tmp_path)
    assert "unknown feedback method 'prf'; use rocchio or rm3" in one_error_line(result)
