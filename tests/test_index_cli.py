"""compare -> strategy.toml -> index -> search/eval, end to end through the command line, on both stores.

A SciFact slice (the documents judged for 60 test and 60 train queries, and others up to 400) keeps
this fast; the whole collection runs in benchmarks/store_scifact.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _cli import one_error_line, run_cli
from _slices import write_scifact_slice
from embedtune.stores import open_store

MINILM = "local:all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def scifact_slice(shared_datasets, tmp_path_factory) -> Path:
    """A BEIR folder: 60 test and 60 train queries of SciFact, their documents and others, 400 in all."""
    folder = tmp_path_factory.mktemp("scifact-slice")
    return write_scifact_slice(shared_datasets, folder, tests=60, trains=60, documents=400)


@pytest.fixture(scope="module")
def compared(scifact_slice, tmp_path_factory):
    """compare on the slice (MiniLM, BM25, hybrids): its report and the recommended strategy's file."""
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("report")
    result = run_cli(
        "compare",
        scifact_slice,
        "--models",
        MINILM,
        "--bm25",
        "--hybrid",
        "rrf,convex",
        "--out-dir",
        out,
        home=home,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "comparison.json").read_text())
    return home, out / "strategy.toml", report, result.stdout


def ndcg_of(stdout: str) -> float:
    match = re.search(r"ndcg@10 ([0-9.]+)", stdout)
    assert match, stdout
    return float(match.group(1))


def test_compare_writes_the_recommendation_decided_on_train_and_every_row_carries_its_strategy(compared):
    _, strategy_file, report, stdout = compared
    assert report["tune_split"] == "train" and report["selected_on"] == "train"
    winner = next(row for row in report["strategies"] if row["name"] == report["winner"])
    assert winner["selection"]["ndcg@10"] == max(row["selection"]["ndcg@10"] for row in report["strategies"])
    assert all(row["strategy"]["version"] == 1 for row in report["strategies"])
    recommended = next(row for row in report["strategies"] if row["name"] == report["recommended"])
    assert report["recommendation"]["decided_on"] == "train" and recommended["selection_p_value"] >= 0.05
    text = strategy_file.read_text()
    assert text.startswith("# ") and f"embedtune compare on {report['collection']}: " in text
    assert f"{report['recommended']} is recommended" in text
    from embedtune.strategy import Strategy

    assert Strategy.load(strategy_file).to_dict() == recommended["strategy"]
    assert f"winner: {report['winner']}" in stdout and "picked on train" in stdout
    assert f"recommended: {report['recommended']} is recommended" in stdout


@pytest.mark.parametrize("backend", ["embedded", "postgres"])
def test_the_built_store_scores_what_compare_reported(backend, compared, scifact_slice, tmp_path, request):
    from embedtune.strategy import Strategy

    home, _, report, _ = compared
    # The winner (a MiniLM hybrid, so the vectors come from compare's cache), from its row in the
    # report; on 60 train queries the recommendation may be BM25, which embeds nothing.
    winner = next(row for row in report["strategies"] if row["name"] == report["winner"])
    assert winner["kind"] in ("rrf", "convex")
    strategy_file = Strategy.from_dict(winner["strategy"]).save(tmp_path / "winner.toml")
    store = str(tmp_path / "index") if backend == "embedded" else request.getfixturevalue("postgres_uri")
    built = run_cli("index", scifact_slice, "--strategy", strategy_file, "--store", store, home=home)
    assert built.returncode == 0, built.stderr
    assert "400 documents (400 added" in built.stdout and "0 new to the cache" in built.stdout
    scored = run_cli("eval", scifact_slice, "--store", store, home=home)
    assert scored.returncode == 0, scored.stderr
    assert abs(ndcg_of(scored.stdout) - winner["metrics"]["ndcg@10"]) <= 0.005

    found = run_cli(
        "search", "vitamin D deficiency and bone fractures", "--store", store, "-k", "3", "--json", home=home
    )
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert all(hit["text"] and hit["metadata"]["title"] for hit in hits)
    again = run_cli("index", scifact_slice, "--strategy", strategy_file, "--store", store, home=home)
    assert "0 added, 0 updated, 400 unchanged, 0 deleted" in again.stdout, again.stdout


def write_corpus(folder: Path, n: int, source: Path) -> Path:
    """``n`` SciFact abstracts as a JSONL corpus."""
    corpus = folder / "corpus.jsonl"
    with (source / "corpus.jsonl").open() as lines, corpus.open("w") as out:
        for _ in range(n):
            out.write(next(lines))
    return corpus


def stored_records(uri: str) -> dict:
    store = open_store(uri)
    try:
        hashes = store.content_hashes()
        records = store.read_records(sorted(hashes))
    finally:
        store.close()
    return {r.doc_id: r for r in records}


@pytest.mark.parametrize("backend", ["embedded", "postgres"])
def test_a_killed_index_rerun_equals_an_uninterrupted_build(backend, shared_datasets, tmp_path, request):
    corpus = write_corpus(tmp_path, 600, shared_datasets / "scifact")
    strategy = tmp_path / "strategy.toml"
    strategy.write_text(
        f'version = 1\n[embedder]\nmodel = "{MINILM}"\n[chunking]\nchunker = "fixed:size=128"\n'
        '[retrieval]\nmode = "hybrid"\nfusion = "rrf"\n'
    )
    if backend == "embedded":
        killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
    else:
        killed, whole = request.getfixturevalue("new_postgres_database")(), request.getfixturevalue("postgres_uri")
    env = {**os.environ, "EMBEDTUNE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "embedtune.cli", "index", str(corpus), "--strategy", str(strategy), "--store", killed],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    written = 0
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.3)
        try:
            written = len(stored_records(killed))
        except Exception:  # not created yet, or mid-creation
            written = 0
        if written >= 128:  # at least one batch in, most still to come
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert 0 < written < 600, f"the index was not killed midway ({written} documents written)"

    rerun = run_cli("index", corpus, "--strategy", strategy, "--store", killed, home=tmp_path / "home")
    assert rerun.returncode == 0, rerun.stderr
    fresh = run_cli("index", corpus, "--strategy", strategy, "--store", whole, home=tmp_path / "home")
    assert fresh.returncode == 0, fresh.stderr
    after_kill, uninterrupted = stored_records(killed), stored_records(whole)
    assert sorted(after_kill) == sorted(uninterrupted) and len(after_kill) == 600
    for doc_id, record in uninterrupted.items():
        other = after_kill[doc_id]
        assert list(other.spans) == list(record.spans) and other.content_hash == record.content_hash
        cosine = np.sum(other.vectors * record.vectors, axis=1)
        assert cosine.min() >= 0.99999
    store = open_store(killed)
    try:
        assert store.count_chunks() == sum(len(r.spans) for r in uninterrupted.values())  # no duplicates
    finally:
        store.close()


def test_bad_input_is_one_line_and_overwrites_nothing(tmp_path, shared_datasets):
    home = tmp_path / "home"
    corpus = write_corpus(tmp_path, 30, shared_datasets / "scifact")
    fake = tmp_path / "fake.toml"
    fake.write_text('version = 1\n[embedder]\nmodel = "fake:hash-256"\nover_limit = "truncate"\n')
    store = tmp_path / "index"
    assert run_cli("index", corpus, "--strategy", fake, "--store", store, home=home).returncode == 0
    before = {p.name: p.read_bytes() for p in store.iterdir() if p.is_file() and p.suffix == ".json"}

    narrow = tmp_path / "narrow.toml"
    narrow.write_text('version = 1\n[embedder]\nmodel = "fake:hash-256"\ndims = 64\nover_limit = "truncate"\n')
    line = one_error_line(run_cli("index", corpus, "--strategy", narrow, "--store", store, home=home))
    assert "cannot take this strategy" in line and "dims" in line
    other_model = tmp_path / "other.toml"
    other_model.write_text('version = 1\n[embedder]\nmodel = "local:all-MiniLM-L6-v2"\n')
    line = one_error_line(run_cli("index", corpus, "--strategy", other_model, "--store", store, home=home))
    assert "model 'fake:hash-256', not 'local:all-MiniLM-L6-v2'" in line
    assert {p.name: p.read_bytes() for p in store.iterdir() if p.is_file() and p.suffix == ".json"} == before

    typo = tmp_path / "typo.toml"
    typo.write_text('version = 1\n[embedder]\nmodel = "fake:hash-256"\n[retrieval]\nmode = "dense"\nk = 5\n')
    line = one_error_line(run_cli("index", corpus, "--strategy", typo, "--store", tmp_path / "typo-index", home=home))
    assert "unknown key retrieval.k" in line and not (tmp_path / "typo-index").exists()

    line = one_error_line(
        run_cli(
            "index", corpus, "--strategy", fake, "--store", "postgresql://embedtune:s3cret@127.0.0.1:1/db", home=home
        )
    )
    assert "cannot connect to PostgreSQL at postgresql://embedtune:***@127.0.0.1:1/db" in line
    assert "s3cret" not in line

    manifest = store / "manifest.json"
    manifest.write_text('{"format": "embedtune.store", "version": 1, "dims": "lots"')
    broken = {p.name: p.read_bytes() for p in store.iterdir() if p.is_file()}
    for args in (("search", "anything", "--store", store), ("index", corpus, "--strategy", fake, "--store", store)):
        line = one_error_line(run_cli(*args, home=home))
        assert "manifest.json" in line
    assert {p.name: p.read_bytes() for p in store.iterdir() if p.is_file()} == broken


def test_an_unreadable_file_is_named_and_the_rest_is_indexed(tmp_path):
    docs = tmp_path / "docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "guides" / "backups.md").write_text("# Backups\n\nBackups run nightly and are kept for 30 days.\n")
    (docs / "rollback.txt").write_text("A rollback takes five minutes and needs the release tag.\n")
    (docs / "page.html").write_text(
        "<html><head><title>Oncall</title></head><body><p>Page the oncall.</p></body></html>"
    )
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (docs / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    fake = tmp_path / "fake.toml"
    fake.write_text('version = 1\n[embedder]\nmodel = "fake:hash-256"\n[retrieval]\nmode = "hybrid"\nfusion = "rrf"\n')
    home, store = tmp_path / "home", tmp_path / "index"
    result = run_cli("index", docs, "--strategy", fake, "--store", store, home=home)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and any("broken.pdf" in e for e in errors) and any("latin1.txt" in e for e in errors)
    assert "3 documents (3 added" in result.stdout
    found = run_cli("search", "how long does a rollback take", "--store", store, "--json", "-k", "1", home=home)
    assert json.loads(found.stdout)[0]["doc_id"] == "rollback.txt"
    only_md = run_cli("search", "backups", "--store", store, "--json", "--filter", "type=md", home=home)
    assert [hit["doc_id"] for hit in json.loads(only_md.stdout)] == ["guides/backups.md"]
    # The failed files are named again on a rerun, and what the store held for them is kept.
    (docs / "rollback.txt").unlink()
    again = run_cli("index", docs, "--strategy", fake, "--store", store, home=home)
    assert "1 deleted" in again.stdout and again.returncode != 0
