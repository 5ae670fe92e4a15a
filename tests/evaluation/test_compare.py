"""The comparison pipeline, its reports and its commands, on the sample collection embedtune ships."""

import json
import os
import shutil
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest
from rich.console import Console

from _cli import run_cli as cli
from _counting import TokenCounting
from embedtune.chunking import make_chunker
from embedtune.engine import CountingEmbedder
from embedtune.errors import ConfigError, InputError
from embedtune.evaluation import evaluate, load_beir
from embedtune.evaluation.compare import ComparisonResult, ModelCost, StrategyResult, evaluate_strategies
from embedtune.evaluation.report import comparison_table, comparison_to_dict, plot_comparison
from embedtune.factory import EmbedderSpec, open_provider

SAMPLE = Path(str(resources.files("embedtune") / "data" / "sample"))
FAKE = EmbedderSpec(model="fake:hash-256")
MINILM = "local:all-MiniLM-L6-v2"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MB = 1024 * 1024


@pytest.fixture(scope="module")
def sample():
    return load_beir(SAMPLE)


def names(result: ComparisonResult) -> list[str]:
    return [s.name for s in result.strategies]


def rendered(result: ComparisonResult) -> str:
    console = Console(width=220, record=True, file=open(os.devnull, "w"))
    console.print(comparison_table(result))
    console.file.close()
    return console.export_text()


def test_fake_model_plumbing_first_run_then_rerun_from_the_cache(sample, tmp_path):
    cache = tmp_path / "cache.sqlite"
    first = evaluate_strategies(sample, [FAKE], bm25=True, hybrid=["rrf", "convex"], cache=cache)
    assert names(first) == ["bm25", "fake:hash-256", "fake:hash-256 + bm25 (rrf)", "fake:hash-256 + bm25 (convex)"]
    assert (first.split, first.tune_split, first.documents, first.queries) == ("test", "train", 120, 20)
    best = max(first.strategies, key=lambda s: s.metrics["ndcg@10"])
    assert first.winner == best.name
    for strategy in first.strategies:
        assert set(strategy.metrics) == {"ndcg@10", "recall@100", "mrr@10"}
        assert all(0.0 <= value <= 1.0 for value in strategy.metrics.values())
        assert strategy.index_bytes > 0
    dense = first.strategy("fake:hash-256")
    assert dense.index_bytes == 120 * 256 * 4
    assert (
        first.strategy("fake:hash-256 + bm25 (rrf)").index_bytes
        == dense.index_bytes + first.strategy("bm25").index_bytes
    )
    cost = dense.cost
    # 120 documents, and the 40 train + 20 test queries; nothing came from the cache
    assert (cost.texts_embedded, cost.texts_cached) == (180, 0)
    assert cost.tokens_embedded == cost.tokens == cost.corpus_tokens + cost.query_tokens > 0
    assert cost.texts_per_s > 0 and cost.usd_to_embed_corpus is None
    assert 0.0 <= first.strategy("fake:hash-256 + bm25 (convex)").alpha <= 1.0

    again = evaluate_strategies(sample, [FAKE], bm25=True, hybrid=["rrf", "convex"], cache=cache)
    cost = again.strategy("fake:hash-256").cost
    assert (cost.texts_embedded, cost.tokens_embedded, cost.texts_cached) == (0, 0, 180)
    assert cost.texts_per_s is None and again.strategy("fake:hash-256").cached
    assert cost.tokens == first.strategy("fake:hash-256").tokens
    assert [s.metrics for s in again.strategies] == [s.metrics for s in first.strategies]
    assert "cached" in rendered(again)
    assert plot_comparison(again, tmp_path / "cached.png").read_bytes()[:8] == PNG_MAGIC


def test_texts_over_the_limit_are_truncated_and_counted(sample):
    short = EmbedderSpec(model="fake:hash-256", max_tokens=30)  # over_limit "error" is overridden
    result = evaluate_strategies(sample, [short], bm25=False)
    cost = result.strategy("fake:hash-256").cost
    over = sum(1 for doc in sample.corpus.values() if len(doc.full_text.split()) > 40)
    assert cost.truncated_documents >= over > 0
    assert any(f"{cost.truncated_documents} of 120 documents are over its 30-token limit" in n for n in result.notes)
    assert cost.corpus_tokens <= 120 * 30


def test_each_document_is_tokenized_once_and_its_tokens_counted_as_the_model_counts_them(sample):
    model = open_provider(FAKE)
    counting = TokenCounting(model)
    cost = evaluate_strategies(sample, [FAKE], bm25=False, providers={FAKE.label: counting}).strategies[0].cost
    texts = [doc.full_text for doc in sample.corpus.values()]
    assert cost.corpus_tokens == sum(min(model.count_tokens(t), model.max_tokens) for t in texts)
    assert {counting.counted[t] for t in texts} == {1}


def test_with_a_chunker_each_chunk_is_tokenized_once_by_the_chunker_and_its_tokens_counted_once(sample):
    model = open_provider(FAKE)
    counting = TokenCounting(model)
    result = evaluate_strategies(
        sample, [FAKE], bm25=False, chunkers=["fixed:size=40"], providers={FAKE.label: counting}
    )
    row = result.strategies[0]
    chunker = make_chunker("fixed:size=40", model)
    chunks = [c.text for doc in sample.corpus.values() for c in chunker.chunk(doc.full_text)]
    assert row.chunks == len(chunks) > len(sample.corpus)
    assert row.cost.corpus_tokens == sum(min(model.count_tokens(c), model.max_tokens) for c in chunks)
    assert {counting.counted[c] for c in chunks} == {1}  # the chunker's count served the cost too
    assert {counting.counted[doc.full_text] for doc in sample.corpus.values()} == {1}  # the over-limit note


def test_bm25_row_matches_bm25_alone(sample):
    from embedtune.search import BM25Index

    result = evaluate_strategies(sample, [], bm25=True)
    assert names(result) == ["bm25"] and result.winner == "bm25"
    ids = list(sample.corpus)
    queries, qrels = sample.split("test")
    run = BM25Index.build(ids, [sample.documents_text(i) for i in ids]).search(queries, k=100)
    assert result.strategy("bm25").metrics == evaluate(qrels, run, ["ndcg@10", "recall@100", "mrr@10"])


def test_convex_weight_is_tuned_on_train_only(sample):
    before = evaluate_strategies(sample, [FAKE], bm25=False, hybrid=["convex"])
    # Every test judgment moved to another document: test scores change, the weight must not.
    docs = sorted(sample.corpus)
    scrambled = {
        qid: {docs[(docs.index(doc) + 7) % len(docs)]: rel for doc, rel in judged.items()}
        for qid, judged in sample.qrels["test"].items()
    }
    changed = replace(sample, qrels={**sample.qrels, "test": scrambled})
    after = evaluate_strategies(changed, [FAKE], bm25=False, hybrid=["convex"])
    name = "fake:hash-256 + bm25 (convex)"
    assert after.strategy(name).alpha == before.strategy(name).alpha
    assert after.strategy(name).tuning == before.strategy(name).tuning
    assert after.strategy(name).metrics != before.strategy(name).metrics
    assert before.tune_split == "train"


def test_without_a_training_split_convex_is_not_tuned_and_rrf_is_reported(sample):
    only_test = replace(sample, qrels={"test": sample.qrels["test"]})
    result = evaluate_strategies(only_test, [FAKE], bm25=False, hybrid=["convex"])
    assert names(result) == ["fake:hash-256", "fake:hash-256 + bm25 (rrf)"]
    assert result.tune_split is None
    assert any("convex fusion was not tuned" in note for note in result.notes)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"hybrid": ["rrf"], "tune_split": "test"}, ConfigError, "cannot be tuned on 'test'"),
        ({"hybrid": ["mean"]}, ConfigError, "unknown hybrid method 'mean'"),
        ({"split": "dev"}, InputError, "has no split 'dev'"),
        ({"k": 10}, ConfigError, "k must be at least 100"),
    ],
)
def test_bad_requests(sample, kwargs, error, message):
    with pytest.raises(error, match=message):
        evaluate_strategies(sample, [FAKE], bm25=True, **kwargs)
    with pytest.raises(ConfigError, match="nothing to compare"):
        evaluate_strategies(sample, [], bm25=False)
    with pytest.raises(ConfigError, match="listed twice"):
        evaluate_strategies(sample, [FAKE, FAKE], bm25=False)


def test_minilm_on_the_sample_then_a_rerun_embeds_nothing(sample, tmp_path, minilm):
    cache = tmp_path / "cache.sqlite"
    counters = []

    def run():
        counters.append(CountingEmbedder(minilm))
        return evaluate_strategies(
            sample,
            [EmbedderSpec(model=MINILM)],
            bm25=True,
            hybrid=["rrf", "convex"],
            cache=cache,
            providers={MINILM: counters[-1]},
        )

    first = run()
    assert names(first) == ["bm25", MINILM, f"{MINILM} + bm25 (rrf)", f"{MINILM} + bm25 (convex)"]
    dense = first.strategy(MINILM)
    assert dense.metrics["ndcg@10"] > 0.6  # a real model finds paraphrases the hash model cannot
    assert dense.cost.texts_embedded == 180 and dense.cost.texts_per_s > 0
    assert dense.index_bytes == 120 * 384 * 4
    assert 0.0 <= first.strategy(f"{MINILM} + bm25 (convex)").alpha <= 1.0
    assert counters[0].calls > 0

    second = run()
    assert counters[1].calls == 0 and sum(counters[1].texts.values()) == 0
    assert second.strategy(MINILM).cost.texts_embedded == 0
    assert [s.metrics for s in second.strategies] == [s.metrics for s in first.strategies]


def _paid_result() -> ComparisonResult:
    cost = ModelCost(
        model="openai:text-embedding-3-small",
        dim=1536,
        corpus_tokens=2_000_000,
        query_tokens=500,
        tokens_embedded=2_000_500,
        texts_embedded=1000,
        texts_cached=0,
        embed_seconds=4.0,
        truncated_documents=0,
        truncated_queries=0,
        usd_per_million_tokens=0.02,
    )
    metrics = {"ndcg@10": 0.7, "recall@100": 0.9, "mrr@10": 0.65}
    strategies = (
        StrategyResult(name="bm25", kind="bm25", model=None, metrics={**metrics, "ndcg@10": 0.6}, index_bytes=10),
        StrategyResult(
            name=cost.model, kind="dense", model=cost.model, metrics=metrics, index_bytes=2 * 1024**2, cost=cost
        ),
        StrategyResult(
            name=f"{cost.model} + bm25 (convex)",
            kind="convex",
            model=cost.model,
            metrics={**metrics, "ndcg@10": 0.75},
            index_bytes=2 * 1024**2 + 10,
            cost=cost,
            alpha=0.4,
        ),
    )
    return ComparisonResult(
        collection="paid",
        split="test",
        tune_split="train",
        documents=1000,
        queries=10,
        k=100,
        strategies=strategies,
        winner=strategies[2].name,
    )


def test_reports_table_json_and_png(tmp_path):
    result = _paid_result()
    assert result.best.cost.usd_to_embed_corpus == pytest.approx(0.02 * 2_000_000 / 1e6)
    text = rendered(result)
    for column in ("strategy", "nDCG@10", "Recall@100", "MRR@10", "tokens", "texts/s", "index MB", "$ to embed"):
        assert column in text
    assert "$0.0400" in text and "α=0.40" in text and "250.0" in text and "2,000,500" in text

    data = json.loads(json.dumps(comparison_to_dict(result)))
    assert data["winner"] == "openai:text-embedding-3-small + bm25 (convex)"
    assert [row["name"] for row in data["strategies"]] == [s.name for s in result.strategies]
    assert data["strategies"][2]["alpha"] == 0.4
    assert data["strategies"][1]["usd_to_embed_corpus"] == pytest.approx(0.04)
    assert data["strategies"][0]["usd_to_embed_corpus"] is None

    path = plot_comparison(result, tmp_path / "plots" / "comparison.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    from matplotlib import image

    pixels = image.imread(path)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 600


def test_compare_command_writes_json_and_png(tmp_path):
    result = cli(
        "compare",
        "--models",
        "fake:hash-256",
        "--bm25",
        "--hybrid",
        "rrf,convex",
        "--out-dir",
        tmp_path / "report",
        home=tmp_path / "h",
    )
    assert result.returncode == 0, result.stderr
    assert "winner: bm25" in result.stdout and "fake:hash-256 + bm25 (convex) α=" in result.stdout
    assert "recommended: bm25 is recommended" in result.stdout and "95% CI" in result.stdout
    data = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert data["collection"] == "sample" and len(data["strategies"]) == 4
    assert data["recommended"] == data["recommendation"]["name"] == "bm25"
    assert data["recommendation"]["decided_on"] == "train" and data["recommendation"]["queries"] == 40
    for row in data["strategies"]:
        low, high = row["ci95"]
        assert low <= row["metrics"]["ndcg@10"] <= high
        assert 0.0 < row["p_value"] <= 1.0 and 0.0 < row["selection_p_value"] <= 1.0
    assert "bm25 is recommended" in (tmp_path / "report" / "strategy.toml").read_text().splitlines()[0]
    assert (tmp_path / "report" / "comparison.png").read_bytes()[:8] == PNG_MAGIC


@pytest.fixture()
def broken(tmp_path):
    """Copies of the sample collection, each broken in one way."""
    missing = tmp_path / "missing-queries"
    shutil.copytree(SAMPLE, missing)
    (missing / "queries.jsonl").unlink()
    duplicated = tmp_path / "duplicate-ids"
    shutil.copytree(SAMPLE, duplicated)
    corpus = duplicated / "corpus.jsonl"
    first = corpus.read_text().splitlines()[0]
    corpus.write_text(corpus.read_text() + first + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "{p}/missing-queries", "--model", "fake:hash-256"], "queries.jsonl is missing"),
        (["compare", "{p}/duplicate-ids", "--models", "fake:hash-256"], "repeats 1 document id(s) (first: 'd001')"),
        (["compare", "{p}/nowhere", "--models", "fake:hash-256"], "does not exist"),
        (["compare", "--models", "fake:hash-256", "--hybrid", "mean"], "unknown hybrid method 'mean'"),
        (["eval", "{p}/missing-queries", "--model", "local:no-such-model"], "unknown model 'local:no-such-model'"),
    ],
)
def test_commands_report_bad_input_in_one_line(broken, args, message):
    result = cli(*(a.format(p=broken) for a in args), home=broken / "h")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]


def test_saved_indexes_are_loaded_on_the_next_run(sample, tmp_path):
    counted = CountingEmbedder(__import__("embedtune.factory", fromlist=["open_provider"]).open_provider(FAKE))
    first = evaluate_strategies(
        sample, [FAKE], hybrid=["rrf"], index_dir=tmp_path / "idx", providers={FAKE.model: counted}
    )
    (folder,) = (tmp_path / "idx").iterdir()
    assert folder.name.startswith("sample-") and {p.name for p in folder.iterdir()} == {"bm25", "fake_hash-256"}
    documents = [sample.documents_text(d) for d in sample.corpus]
    embedded = sum(counted.texts[t] for t in documents)
    assert embedded >= 120  # every document (and the first once more, for the untimed warm-up)
    second = evaluate_strategies(
        sample, [FAKE], hybrid=["rrf"], index_dir=tmp_path / "idx", providers={FAKE.model: counted}
    )
    assert sum(counted.texts[t] for t in documents) == embedded  # the saved index was used: none again
    assert [s.metrics for s in second.strategies] == [s.metrics for s in first.strategies]


def test_a_kept_store_of_other_dims_is_rebuilt_not_mixed(tmp_path):
    """compare's stores are its cache: a model whose vectors changed shape gets a new store."""
    (tmp_path / "embedtune.toml").write_text('[embedders.narrow]\nmodel = "fake:hash-256"\ndims = 128\n')
    first = cli("compare", "--models", "fake:hash-256", "--out-dir", "r", home=tmp_path / "h", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = cli("compare", "--models", "narrow", "--out-dir", "r", home=tmp_path / "h", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    data = json.loads((tmp_path / "r" / "comparison.json").read_text())
    (dense,) = [row for row in data["strategies"] if row["kind"] == "dense"]
    assert dense["embedding"]["dim"] == 128 and dense["index_bytes"] == 120 * 128 * 4
    assert dense["strategy"]["embedder"]["dims"] == 128


def test_a_kept_folder_of_an_older_layout_is_rebuilt(sample, tmp_path):
    """Indexes an older embedtune saved where compare now keeps stores are replaced, not an error."""
    first = evaluate_strategies(sample, [FAKE], bm25=True, index_dir=tmp_path / "stores")
    (folder,) = (tmp_path / "stores").iterdir()
    (folder / "bm25" / "manifest.json").write_text('{"format": "embedtune.bm25", "version": 1}')
    again = evaluate_strategies(sample, [FAKE], bm25=True, index_dir=tmp_path / "stores")
    assert [s.metrics for s in again.strategies] == [s.metrics for s in first.strategies]


def test_every_strategy_gets_an_interval_and_p_values_and_the_recommendation_is_decided_on_train(sample):
    from embedtune.evaluation.significance import paired_test

    result = evaluate_strategies(sample, [FAKE], bm25=True, hybrid=["rrf", "convex"])
    winner, chosen, why = result.best, result.recommended, result.recommendation
    assert why is not None and why.best == result.winner and why.queries == 40  # the 40 train queries
    for strategy in result.strategies:
        low, high = strategy.interval
        assert low <= strategy.metrics["ndcg@10"] <= high
        assert set(strategy.per_query) == set(sample.qrels["test"])
        assert set(strategy.selection_per_query) == set(sample.qrels["train"])
        train = [strategy.selection_per_query[q] for q in sample.qrels["train"]]
        best_train = [winner.selection_per_query[q] for q in sample.qrels["train"]]
        assert strategy.selection_p_value == (1.0 if strategy is winner else paired_test(train, best_train))
    assert winner.p_value == winner.selection_p_value == 1.0
    assert chosen.selection_p_value >= 0.05
    # Nothing cheaper than the recommendation is within noise of the winner on train.
    for strategy in result.strategies:
        if result.cost_key(strategy.name) < result.cost_key(chosen.name):
            assert why.significantly_worse(strategy.name), strategy.name

    # Every test judgment moved to another document: the test figures change, the choice must not.
    docs = sorted(sample.corpus)
    scrambled = {
        qid: {docs[(docs.index(doc) + 7) % len(docs)]: rel for doc, rel in judged.items()}
        for qid, judged in sample.qrels["test"].items()
    }
    changed = evaluate_strategies(replace(sample, qrels={**sample.qrels, "test": scrambled}), [FAKE], bm25=True)
    assert changed.recommendation.p_values == evaluate_strategies(sample, [FAKE], bm25=True).recommendation.p_values
    assert [s.interval for s in changed.strategies] != [s.interval for s in result.strategies[:2]]


def model_cost(model: str, seconds: float) -> ModelCost:
    return ModelCost(
        model=model,
        dim=384,
        corpus_tokens=10_000,
        query_tokens=500,
        tokens_embedded=10_500,
        texts_embedded=100,
        texts_cached=0,
        embed_seconds=seconds,
        truncated_documents=0,
        truncated_queries=0,
        usd_per_million_tokens=None,
    )


def scored(name: str, train, test, cost: ModelCost | None, index_bytes: int, kind: str = "dense") -> StrategyResult:
    import numpy as np

    return StrategyResult(
        name=name,
        kind=kind if cost else "bm25",
        model=cost.model if cost else None,
        metrics={"ndcg@10": float(np.mean(test)), "recall@100": 1.0, "mrr@10": 1.0},
        selection={"ndcg@10": float(np.mean(train))},
        per_query={f"t{i}": float(v) for i, v in enumerate(test)},
        selection_per_query={f"q{i}": float(v) for i, v in enumerate(train)},
        index_bytes=index_bytes,
        vector_bytes=index_bytes if cost and kind == "dense" else 0,
        cost=cost,
    )


def toy_result(*strategies: StrategyResult) -> ComparisonResult:
    from embedtune.evaluation.compare import with_significance

    return with_significance(
        ComparisonResult(
            collection="toy",
            split="test",
            tune_split="train",
            documents=100,
            queries=len(strategies[0].per_query),
            k=100,
            strategies=strategies,
            winner=max(strategies, key=lambda s: s.selection_score).name,
        )
    )


def noisy(seed: int, n: int, mean: float):
    import numpy as np

    values = np.clip(np.random.default_rng(seed).normal(mean, 0.2, n), 0, 1)
    return values - values.mean() + mean


def test_the_cheaper_of_two_strategies_within_noise_is_recommended_and_written(tmp_path):
    train, test = noisy(1, 40, 0.7), noisy(2, 20, 0.7)
    slow = scored("slow-model", train + 0.004, test, model_cost("local:slow", 10.0), 4 * _MB)
    fast = scored("fast-model", noisy(3, 40, 0.7), test + 0.01, model_cost("local:fast", 1.0), 2 * _MB)
    result = toy_result(slow, fast)
    assert (result.winner, result.recommended.name) == ("slow-model", "fast-model")
    text = comparison_to_dict(result)["recommendation"]["text"]
    assert text.startswith("fast-model is recommended: within noise of the winner slow-model on train (40 queries)")
    assert "10.0× faster to embed, 2.0× smaller vectors" in text
    table = rendered(result)
    assert "slow-model ← winner" in table and "fast-model ← recommended" in table and "95% CI" in table
    assert plot_comparison(result, tmp_path / "toy.png").read_bytes()[:8] == PNG_MAGIC


def test_a_cheaper_strategy_significantly_worse_on_train_is_not_recommended_whatever_test_says():
    train, test = noisy(4, 40, 0.7), noisy(5, 20, 0.7)
    slow = scored("slow-model", train, test, model_cost("local:slow", 10.0), 4 * _MB)
    # Worse on every train query (significant there), but better on test: test must not decide.
    fast = scored("fast-model", train - 0.1, test + 0.1, model_cost("local:fast", 1.0), 2 * _MB)
    result = toy_result(slow, fast)
    assert result.recommended.name == "slow-model" and result.recommendation.significantly_worse("fast-model")
    assert result.strategy("fast-model").p_value < 0.05  # reported: significantly *better* on test
    assert "every cheaper strategy is significantly worse there" in comparison_to_dict(result)["recommendation"]["text"]


def test_bm25_within_noise_is_recommended_and_cached_speeds_fall_back_to_index_size():
    train, test = noisy(6, 40, 0.7), noisy(7, 20, 0.7)
    bm25 = scored("bm25", noisy(8, 40, 0.69), test, None, 1 * _MB)
    model = scored("model", train, test, model_cost("local:model", 2.0), 3 * _MB)
    result = toy_result(model, bm25)
    assert result.recommended.name == "bm25"
    assert "it embeds nothing, 3.0× smaller index" in comparison_to_dict(result)["recommendation"]["text"]

    cached = replace(model_cost("local:slow", 0.0), texts_embedded=0)  # no speed measured
    slow = scored("slow-model", train + 0.004, test, cached, 4 * _MB)
    fast = scored("fast-model", noisy(9, 40, 0.7), test, model_cost("local:fast", 1.0), 2 * _MB)
    result = toy_result(slow, fast)
    assert result.embed_seconds(result.strategy("slow-model")) is None
    assert result.recommended.name == "fast-model"  # on its smaller vectors: speeds are not compared
    assert "faster" not in comparison_to_dict(result)["recommendation"]["text"]


def test_a_models_hybrid_costs_what_the_model_does_so_the_better_of_them_is_recommended():
    train, test = noisy(10, 40, 0.72), noisy(11, 20, 0.7)
    fast = model_cost("local:fast", 1.0)
    dense = scored("fast-model", noisy(12, 40, 0.7), test, fast, 2 * _MB)
    hybrid = replace(
        scored("fast-model + bm25", noisy(13, 40, 0.71), test, fast, 3 * _MB, kind="convex"), vector_bytes=2 * _MB
    )
    slow = scored("slow-model", train, test, model_cost("local:slow", 10.0), 4 * _MB)
    result = toy_result(dense, hybrid, slow)
    assert result.winner == "slow-model" and set(result.recommendation.within_noise) == {
        s.name for s in (dense, hybrid, slow)
    }
    assert result.cost_key("fast-model") == result.cost_key("fast-model + bm25") < result.cost_key("slow-model")
    assert result.recommended.name == "fast-model + bm25"  # the BM25 index beside it is not worth 0.01 nDCG


def test_engines_side_by_side_are_strategies_named_by_their_engine(sample, tmp_path, minilm):
    from embedtune.factory import resolve_spec
    from embedtune.providers.local import SentenceTransformerEmbedder

    onnx = SentenceTransformerEmbedder(
        minilm._source,
        name=MINILM,
        dim=minilm.dim,
        max_tokens=minilm.max_tokens,
        engine="onnx",
        engines_dir=tmp_path / "engines",
    )
    onnx._load = minilm._load  # the same weights, loaded once
    specs = [resolve_spec(f"{MINILM}?engine=torch"), resolve_spec(f"{MINILM}?engine=onnx")]
    result = evaluate_strategies(
        sample, specs, bm25=False, providers={specs[0].label: minilm, specs[1].label: CountingEmbedder(onnx)}
    )
    torch_row, onnx_row = result.strategies
    assert (torch_row.name, onnx_row.name) == (f"{MINILM}?engine=torch", f"{MINILM}?engine=onnx")
    assert (torch_row.engine, onnx_row.engine) == ("torch", "onnx")
    assert onnx_row.cost.texts_embedded == 180  # embedded again: its vectors are not torch's
    assert abs(onnx_row.metrics["ndcg@10"] - torch_row.metrics["ndcg@10"]) < 0.005
    assert comparison_to_dict(result)["strategies"][1]["engine"] == "onnx"
    with pytest.raises(ConfigError, match="listed twice"):
        evaluate_strategies(sample, [specs[1], specs[1]], bm25=False)
