"""Chunked retrieval in the comparison: model x chunker strategies, saved chunk indexes, reports, CLI."""

import json
import os
from importlib import resources
from pathlib import Path

import pytest
from rich.console import Console

from _cli import run_cli as cli
from embedtune.chunking import make_chunker
from embedtune.engine import CountingEmbedder
from embedtune.errors import ConfigError
from embedtune.evaluation import load_beir
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.evaluation.report import (
    comparison_table,
    comparison_to_dict,
    plot_comparison,
)
from embedtune.factory import EmbedderSpec, build_embedder, open_provider

SAMPLE = Path(str(resources.files("embedtune") / "data" / "sample"))
FAKE = EmbedderSpec(model="fake:hash-256")
FIXED = "fixed:size=40,overlap=10"


@pytest.fixture(scope="module")
def sample():
    return load_beir(SAMPLE)


def chunk_count(sample, spec: str) -> int:
    chunker = make_chunker(spec, build_embedder(FAKE))
    return sum(len(chunker.chunk(sample.documents_text(d))) for d in sample.corpus)


def test_each_chunker_is_a_strategy_and_one_chunk_per_document_equals_whole_documents(sample):
    # The sample's documents fit in 512 fake tokens: the recursive chunker keeps each one whole.
    result = evaluate_strategies(sample, [FAKE], bm25=True, hybrid=["rrf"], chunkers=["none", FIXED, "recursive"])
    fixed, whole = f"{FAKE.model} @ fixed-40-o10", FAKE.model
    recursive = f"{FAKE.model} @ recursive-512"
    assert [s.name for s in result.strategies] == [
        "bm25",
        whole,
        f"{whole} + bm25 (rrf)",
        fixed,
        f"{fixed} + bm25 (rrf)",
        recursive,
        f"{recursive} + bm25 (rrf)",
    ]
    assert result.chunk_score == "max"
    assert result.strategy(whole).chunker is None and result.strategy(whole).chunks is None
    assert result.strategy(recursive).chunks == 120
    assert result.strategy(recursive).metrics == result.strategy(whole).metrics
    chunked = result.strategy(fixed)
    assert chunked.chunker == "fixed-40-o10" and chunked.model == FAKE.model
    assert chunked.chunks == chunk_count(sample, FIXED) > 120
    assert chunked.index_bytes == chunked.chunks * 256 * 4
    assert chunked.metrics != result.strategy(whole).metrics
    assert result.strategy(f"{fixed} + bm25 (rrf)").chunker == "fixed-40-o10"
    # the cost counts the chunks as the model reads them
    assert chunked.cost.corpus_tokens != result.strategy(whole).cost.corpus_tokens
    for strategy in result.strategies:
        assert all(0.0 <= v <= 1.0 for v in strategy.metrics.values())


def test_sum_of_best_chunks_scores_documents_differently(sample):
    by_max = evaluate_strategies(sample, [FAKE], bm25=False, chunkers=[FIXED])
    by_sum = evaluate_strategies(sample, [FAKE], bm25=False, chunkers=[FIXED], chunk_score="sum3")
    name = f"{FAKE.model} @ fixed-40-o10"
    assert by_sum.chunk_score == "sum3"
    assert by_sum.strategy(name).metrics != by_max.strategy(name).metrics
    assert evaluate_strategies(sample, [FAKE], bm25=False).chunk_score is None


def test_saved_chunk_indexes_are_keyed_on_the_chunker_and_reused(sample, tmp_path):
    counted = CountingEmbedder(open_provider(FAKE))
    specs = [FIXED, "semantic"]

    def run():
        return evaluate_strategies(
            sample,
            [FAKE],
            bm25=False,
            chunkers=specs,
            index_dir=tmp_path / "idx",
            cache=tmp_path / "cache.sqlite",
            providers={FAKE.model: counted},
        )

    first = run()
    (folder,) = (tmp_path / "idx").iterdir()
    assert {p.name for p in folder.iterdir()} == {
        "fake_hash-256@fixed-40-o10",
        "fake_hash-256@semantic-percentile95-512",
    }
    assert (folder / "fake_hash-256@fixed-40-o10" / "manifest.json").is_file()  # an embedded store, as index builds
    calls = counted.calls
    second = run()
    # Neither the chunks nor the semantic chunker's sentences were embedded again (queries: cache).
    assert counted.calls == calls
    assert [s.metrics for s in second.strategies] == [s.metrics for s in first.strategies]
    assert [s.chunks for s in second.strategies] == [s.chunks for s in first.strategies]


def test_bad_chunking_requests_fail_in_one_line(sample):
    with pytest.raises(ConfigError, match="listed twice"):
        evaluate_strategies(sample, [FAKE], chunkers=[FIXED, FIXED])
    with pytest.raises(ConfigError, match="unknown chunk score 'mean'"):
        evaluate_strategies(sample, [FAKE], chunkers=[FIXED], chunk_score="mean")
    with pytest.raises(ConfigError, match="above fake:hash-256's maximum of 512"):
        evaluate_strategies(sample, [FAKE], chunkers=["fixed:size=800"])


def test_chunks_over_the_limit_run_when_allowed_and_are_counted(sample):
    narrow = EmbedderSpec(model="fake:hash-256", max_tokens=30)
    result = evaluate_strategies(sample, [narrow], bm25=False, chunkers=["fixed:size=60"], chunk_over_limit="allow")
    strategy = result.strategy("fake:hash-256 @ fixed-60")
    assert strategy.cost.truncated_documents > 0
    assert any(
        f"{strategy.cost.truncated_documents} of {strategy.chunks} chunks are over its 30-token limit" in n
        for n in result.notes
    )


def test_reports_show_the_chunker_and_its_chunks(sample, tmp_path):
    result = evaluate_strategies(sample, [FAKE], bm25=True, chunkers=["none", FIXED], chunk_score="sum2")
    with open(os.devnull, "w") as devnull:
        console = Console(width=240, record=True, file=devnull)
        console.print(comparison_table(result))
    text = console.export_text()
    chunks = result.strategy(f"{FAKE.model} @ fixed-40-o10").chunks
    assert "chunks" in text and "fixed-40-o10" in text and f"{chunks:,}" in text
    assert "chunks' sum2" in text
    data = json.loads(json.dumps(comparison_to_dict(result)))
    assert data["chunk_score"] == "sum2"
    rows = {row["name"]: row for row in data["strategies"]}
    assert rows[f"{FAKE.model} @ fixed-40-o10"]["chunks"] == chunks
    assert rows[FAKE.model]["chunker"] is None
    assert plot_comparison(result, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_and_compare_take_repeated_chunkers(tmp_path):
    ok = cli(
        "compare",
        "--models",
        "fake:hash-256",
        "--chunker",
        FIXED,
        "--chunker",
        "none",
        "--chunk-score",
        "sum2",
        "--out-dir",
        tmp_path / "r",
        home=tmp_path / "h",
    )
    assert ok.returncode == 0, ok.stderr
    assert "fake:hash-256 @ fixed-40-o10" in ok.stdout
    data = json.loads((tmp_path / "r" / "comparison.json").read_text())
    assert [s["chunker"] for s in data["strategies"]] == ["fixed-40-o10", None]
    bad = cli(
        "eval",
        SAMPLE,
        "--model",
        "fake:hash-256",
        "--chunker",
        "fixed:size=40",
        "--chunk-score",
        "avg",
        home=tmp_path / "h",
    )
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(lines) == 1
    assert "unknown chunk score 'avg'" in lines[0]


def test_minilm_finds_documents_by_their_chunks(sample, minilm, tmp_path):
    uri = "local:all-MiniLM-L6-v2"
    result = evaluate_strategies(
        sample,
        [EmbedderSpec(model=uri)],
        bm25=False,
        chunkers=["fixed:size=64"],
        providers={uri: minilm},
        cache=tmp_path / "cache.sqlite",
    )
    chunked = result.strategy(f"{uri} @ fixed-64")
    assert chunked.chunks > 120 and chunked.cost.texts_embedded >= chunked.chunks
    # A real model finds paraphrases by their passages (the hash model scores about 0.6 here).
    assert chunked.metrics["ndcg@10"] > 0.8
