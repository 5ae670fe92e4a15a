"""The strategy search end to end on the sample collection embedtune ships: files, resume, reruns, errors."""

import json
import shutil
from importlib import resources
from pathlib import Path

import optuna
import pytest

from _cli import one_error_line
from _cli import run_cli as cli
from _counting import TokenCounting
from embedtune.errors import ConfigError
from embedtune.evaluation import evaluate, load_beir
from embedtune.factory import EmbedderSpec, open_provider
from embedtune.indexer import index_documents, open_retriever
from embedtune.optimize import Budget, NoStrategyFitsError, SearchSpace, optimize
from embedtune.stores.embedded import EmbeddedStore
from embedtune.strategy import Strategy

SAMPLE = Path(str(resources.files("embedtune") / "data" / "sample"))
FAKE = EmbedderSpec(model="fake:hash-256")
MINILM = "local:all-MiniLM-L6-v2"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sample():
    return load_beir(SAMPLE)


def fake_space(**changes) -> SearchSpace:
    settings = {"models": (FAKE,), "chunkers": ("none", "fixed:size=64,overlap=16")} | changes
    return SearchSpace(**settings)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_search_writes_its_trials_front_plot_and_a_strategy_file_that_index_builds(sample, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache.sqlite"
    result = optimize(sample, fake_space(), out=out, trials=6, cache=cache)
    assert (result.tune_split, result.report_split, result.new_trials) == ("train", "test", 6)
    assert result.rung_queries == (14, 40)  # a third of the 40 train queries, then all of them
    records = lines(out / "trials.jsonl")
    assert [r["number"] for r in records] == list(range(6))
    assert {r["state"] for r in records} <= {"complete", "pruned"}
    for record in records:
        assert record["seconds"] >= 0 and record["texts_embedded"] >= 0 and record["params"]["retrieval"]
        if record["state"] == "complete":
            assert record["queries"] == 40 and record["index_mb"] > 0 and record["query_ms"] > 0
            assert record["usd"] == 0.0  # local and fake models cost nothing
    # The first trial that embeds pays for the vectors; every trial's count adds up to the texts embedded.
    assert sum(r["texts_embedded"] for r in records) == result.texts_embedded > 0

    chosen = result.chosen
    complete = [t for t in result.trials if t.state == "complete" and t.copied_from is None]
    assert chosen.quality == max(t.quality for t in complete)  # no budget: the best on train
    assert set(result.reported) == {chosen.number, result.recommended.number} | {t.number for t in result.front}
    for number, (low, high) in result.intervals.items():  # each reported figure inside its own interval
        assert low <= result.reported[number]["ndcg@10"] <= high
    # The reported figure is the strategy's own test score through the store `index` builds from the file.
    strategy = Strategy.load(out / "strategy.toml")
    assert strategy == chosen.strategy
    assert "on train (where it was chosen)" in (out / "strategy.toml").read_text()
    from embedtune.documents import corpus_documents
    from embedtune.factory import build_embedder

    store = EmbeddedStore(tmp_path / "built")
    embedder = build_embedder(strategy.embedder, cache=cache) if strategy.embedder else None
    index_documents(corpus_documents(sample.corpus), strategy, store, embedder)
    retriever = open_retriever(store, cache=cache)
    queries, qrels = sample.split("test")
    assert evaluate(qrels, retriever.search(queries, k=100), ["ndcg@10"])["ndcg@10"] == pytest.approx(
        result.reported[chosen.number]["ndcg@10"]
    )
    retriever.close()
    store.close()
    assert (out / "pareto.png").read_bytes()[:8] == PNG_MAGIC
    front = json.loads((out / "front.json").read_text())
    assert front["chosen"]["number"] == chosen.number and front["report_split"] == "test"


def test_a_rerun_continues_the_study_and_a_finished_search_reruns_nothing(sample, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache.sqlite"
    first = optimize(sample, fake_space(), out=out, trials=3, cache=cache)
    assert first.new_trials == 3
    more = optimize(sample, fake_space(), out=out, trials=5, cache=cache)
    assert more.new_trials == 2 and len(more.trials) == 5
    # The three finished trials are the same records, not run again.
    assert [t.to_dict() for t in more.trials[:3]] == [t.to_dict() for t in first.trials]
    again = optimize(sample, fake_space(), out=out, trials=5, cache=cache)
    assert again.new_trials == 0 and again.texts_embedded == 0
    assert again.chosen.to_dict() == more.chosen.to_dict() and again.reported == more.reported
    # Other inputs are another search: another study beside the first.
    other = optimize(sample, fake_space(retrievals=("bm25",)), out=out, trials=1, cache=cache)
    assert other.new_trials == 1 and len(other.trials) == 1


def test_a_trial_a_kill_left_running_is_run_again_from_its_parameters(sample, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache.sqlite"
    optimize(sample, fake_space(), out=out, trials=2, cache=cache)
    storage = f"sqlite:///{out / 'study.sqlite'}"
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    killed = study.ask()  # as a killed process leaves it: running, with its parameters asked
    fake_space().suggest(killed)  # what the search asks first
    params = dict(killed.params)

    result = optimize(sample, fake_space(), out=out, trials=3, cache=cache)
    states = [t.state for t in result.trials]
    assert states[:2] != ["running"] and states[2] == "failed"  # the killed one is closed...
    assert result.new_trials == 1 and result.trials[3].params == params  # ...and run again as it was


def test_a_search_tokenizes_each_document_and_chunk_once_over_all_its_trials(sample, tmp_path):
    # The chunker, the length policy and the batcher of every trial count the same texts, as in compare.
    counting = TokenCounting(open_provider(FAKE))
    space = fake_space(retrievals=("dense", "rrf"), vectors=("float32",))
    result = optimize(
        sample, space, out=tmp_path / "out", trials=6, cache=tmp_path / "c.sqlite", providers={FAKE.model: counting}
    )
    strategies = [t.strategy for t in result.trials if t.strategy is not None]
    assert {s.chunked for s in strategies} == {True, False}  # chunks and whole documents were both counted
    documents = {doc.full_text for doc in sample.corpus.values()}
    assert documents & set(counting.counted) and set(counting.counted) - documents
    assert set(counting.counted.values()) == {1}


def test_minilm_search_embeds_each_text_once_and_a_new_fusion_weight_embeds_nothing(sample, tmp_path, minilm):
    space = SearchSpace(
        models=(EmbedderSpec(model=MINILM),),
        chunkers=("none",),
        retrievals=("dense", "convex"),
        vectors=("float32",),
    )
    result = optimize(
        sample, space, out=tmp_path / "out", trials=5, cache=tmp_path / "c.sqlite", providers={MINILM: minilm}
    )
    embedded = [t for t in result.trials if t.texts_embedded > 0]
    # 120 documents and the 40 train queries, once, by whichever trial first needed them; none since.
    assert sum(t.texts_embedded for t in result.trials) == 120 + 40
    assert embedded[0].number == min(t.number for t in result.trials if t.strategy and t.strategy.uses_vectors)
    convex = [t for t in result.trials if t.strategy and t.strategy.alpha is not None]
    assert convex and all(t.texts_embedded == 0 for t in convex[1:])
    # The weight is fitted on the tuning queries: what compare's convex weight tuning finds on the same runs.
    from embedtune.evaluation.compare import evaluate_strategies

    table = evaluate_strategies(
        sample, [EmbedderSpec(model=MINILM)], hybrid=["convex"], bm25=False, cache=tmp_path / "c.sqlite"
    )
    fitted = [t for t in convex if t.state == "complete" and t.copied_from is None]
    assert fitted and fitted[0].strategy.alpha == table.strategies[-1].alpha
    assert result.chosen.strategy.model == MINILM and result.reported[result.chosen.number]["ndcg@10"] > 0.5


def test_a_budget_no_strategy_meets_names_the_closest_after_writing_the_trials(sample, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(NoStrategyFitsError) as caught:
        optimize(sample, fake_space(), out=out, trials=3, cache=None, budget=Budget(index_mb=1e-6))
    message = str(caught.value)
    assert message.startswith("no strategy meets the budget index_mb<=1e-06") and "the closest is trial" in message
    assert len(lines(out / "trials.jsonl")) == 3 and not (out / "strategy.toml").exists()


def test_a_budget_is_a_declared_constraint_and_the_choice_keeps_within_it(sample, tmp_path):
    # Unconstrained, BM25 wins on the sample with the fake model; float16 vectors are the only thing under 0.07 MB.
    space = fake_space(chunkers=("none",), retrievals=("dense", "bm25"), vectors=("float16",))
    free = optimize(sample, space, out=tmp_path / "free", trials=6)
    assert free.chosen.strategy.mode.value == "bm25" and free.chosen.index_mb > 0.07
    result = optimize(sample, space, out=tmp_path / "out", trials=6, budget=Budget(index_mb=0.07))
    assert result.chosen.strategy.mode.value == "dense" and result.chosen.index_mb <= 0.07
    # BM25 was stopped on its estimate at the small rung, before it could push the dense trials out.
    bm25 = [t for t in result.trials if t.strategy and t.strategy.mode.value == "bm25" and t.copied_from is None]
    assert bm25 and all(t.state == "pruned" and t.over_budget == ("index_mb",) for t in bm25)
    storage = f"sqlite:///{tmp_path / 'out' / 'study.sqlite'}"
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert complete and all(set(t.constraints) == {"index_mb"} for t in complete)


def test_a_vectors_budget_counts_the_vector_index_alone_so_a_hybrid_over_small_vectors_fits(sample, tmp_path):
    space = fake_space(chunkers=("none",), retrievals=("rrf",), vectors=("float32", "float16"))
    result = optimize(sample, space, out=tmp_path / "out", trials=4, budget=Budget(vectors_mb=0.07))
    chosen = result.chosen
    assert chosen.strategy.vectors_label == "float16"  # float32 (0.117 MB of vectors) is over
    # 120 whole documents x 256 dims x 2 bytes; the BM25 index beside them is in index_mb only.
    assert chosen.vectors_bytes == 120 * 256 * 2 and chosen.vectors_mb <= 0.07 < chosen.index_mb
    front = json.loads((tmp_path / "out" / "front.json").read_text())
    assert front["chosen"]["vectors_mb"] == pytest.approx(120 * 256 * 2 / 2**20)
    with pytest.raises(NoStrategyFitsError, match="index_mb<=0.07"):  # the whole store does not fit
        optimize(sample, space, out=tmp_path / "whole", trials=4, budget=Budget(index_mb=0.07))


def test_a_collection_without_dev_or_train_cannot_select(tmp_path, sample):
    from embedtune.evaluation.collections import Collection

    unjudged = Collection(
        name="bare", corpus=sample.corpus, queries=sample.queries, qrels={"test": sample.qrels["test"]}
    )
    with pytest.raises(ConfigError, match="has no dev or train judgments to select a strategy on"):
        optimize(unjudged, fake_space(), out=tmp_path / "out")
    with pytest.raises(ConfigError, match="never selects on test"):
        optimize(sample, fake_space(), out=tmp_path / "out", tune_split="test")


# -- the command ----------------------------------------------------------------------------------


def test_the_command_prints_progress_the_front_and_the_choice(tmp_path):
    out = tmp_path / "out"
    args = ("optimize", "--models", "fake:hash-256", "--chunker", "none", "--trials", "3", "--out", out)
    result = cli(*args, home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert "3/3 done" in result.stderr and "no time limit" in result.stderr  # the progress line, per trial
    assert "Pareto front" in result.stdout and "chosen:" in result.stdout and "3 new trials" in result.stdout
    assert "95% CI" in result.stdout and "vectors MB" in result.stdout  # each test figure with its interval
    assert Strategy.load(out / "strategy.toml") is not None
    rerun = cli(*args, home=tmp_path / "home")
    assert rerun.returncode == 0 and "0 new trials, 0 texts embedded" in rerun.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--budget", "latency<=5"), "error: unknown budget key 'latency'; use index_mb, vectors_mb, query_ms, usd"),
        (("--time", "soon"), "error: --time 'soon': give a duration such as 90s, 30m or 1h30m"),
        (("--retrieval", "splade"), "error: unknown retrieval 'splade'"),
        (("--feedback", "prf"), "error: unknown feedback method 'prf'; use rocchio or rm3"),
        (("--reranker", "no-such-folder"), "error: reranker folder no-such-folder does not exist"),
        (("--reranker", ".", "--rerank-top", "ten"), "error: --rerank-top takes whole numbers"),
        (("--retrieval", "ensemble", "--models", "sparse:splade-tiny"), "error: ensemble retrieval fuses a dense"),
    ],
)
def test_bad_requests_are_one_line(tmp_path, args, says):
    result = cli("optimize", "--models", "fake:hash-256", "--chunker", "none", "--out", tmp_path / "o", *args)
    assert one_error_line(result).startswith(says)


def test_a_budget_nothing_meets_ends_the_search_with_one_error_line(tmp_path):
    args = ("optimize", "--models", "fake:hash-256", "--chunker", "none", "--out", tmp_path / "o")
    result = cli(*args, "--budget", "query_ms<=0.000001", "--trials", "2", "--retrieval", "bm25", home=tmp_path / "h")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    *progress, last = [line for line in result.stderr.splitlines() if line.strip()]
    assert all(line.startswith("trial ") for line in progress)  # one progress line per trial, then the error
    assert (
        last.startswith("error: no strategy meets the budget query_ms<=1e-06")
        and "the closest is trial 0 (bm25)" in last
    )


def test_a_corpus_without_judgments_needs_generated_queries(tmp_path):
    corpus = tmp_path / "corpus-only"
    corpus.mkdir()
    shutil.copy(SAMPLE / "corpus.jsonl", corpus / "corpus.jsonl")
    args = ("optimize", corpus, "--models", "fake:hash-256", "--chunker", "none", "--out", tmp_path / "o")
    line = one_error_line(cli(*args, "--trials", "2", home=tmp_path / "home"))
    assert "has no dev or train judgments" in line and "--generate-queries title" in line
    generated = cli(*args, "--trials", "2", "--generate-queries", "title", "--queries", "30", home=tmp_path / "home")
    assert generated.returncode == 0, generated.stderr
    assert "selected on queries generated from the corpus" in generated.stdout


def test_a_corpus_whose_queries_cannot_be_generated_is_one_line(tmp_path):
    corpus = tmp_path / "untitled"
    corpus.mkdir()
    rows = [json.loads(line) for line in (SAMPLE / "corpus.jsonl").read_text().splitlines()]
    (corpus / "corpus.jsonl").write_text("".join(json.dumps({**row, "title": ""}) + "\n" for row in rows))
    args = ("optimize", corpus, "--models", "fake:hash-256", "--chunker", "none", "--out", tmp_path / "o")
    line = one_error_line(cli(*args, "--generate-queries", "title", home=tmp_path / "home"))
    assert line.startswith("error: the 'title' generator gave no usable query") and "try another generator" in line


def test_a_search_reports_its_recommendation_and_writes_it_beside_the_choice(sample, tmp_path):
    out = tmp_path / "out"
    space = fake_space(chunkers=("none",), retrievals=("dense", "rrf", "convex"), vectors=("float32", "binary"))
    result = optimize(sample, space, out=out, trials=8, cache=tmp_path / "c.sqlite")
    front = json.loads((out / "front.json").read_text())
    assert front["recommendation"] == result.recommendation
    picked, chosen = result.recommended, result.chosen
    assert picked is not None and front["recommended"]["number"] == picked.number
    if picked is chosen:
        assert not (out / "recommended.toml").exists()
    else:
        assert Strategy.load(out / "recommended.toml") == picked.strategy
        assert "within noise of the best" in result.recommendation


def test_the_recommendation_is_the_cheapest_strategy_not_significantly_worse_than_the_best():
    from embedtune.optimize.trials import Rung
    from embedtune.optimize.workflow import TrialRecord, _recommend

    queries = {f"q{i}": "text" for i in range(30)}
    final = Rung(index=1, step=3, queries=queries, qrels={}, documents=())
    # Per-query nDCG@10: the best; a strategy a hair below it; one far below it on every query.
    scores = {
        "best": dict.fromkeys(queries, 0.8),
        "close": {q: 0.80 - (0.02 if i % 2 else -0.01) for i, q in enumerate(queries)},
        "poor": dict.fromkeys(queries, 0.3),
    }

    class Scorer:
        def per_query(self, strategy, rung):
            assert rung is final
            return scores[strategy.name.rsplit(":", 1)[-1].split(" ")[0]]

    def record(number, name, index_mb, query_ms=1.0):
        strategy = Strategy(embedder=EmbedderSpec(model=f"fake:{name}"))
        return TrialRecord(
            number=number,
            state="complete",
            strategy=strategy,
            params={},
            quality=sum(scores[name].values()) / 30,
            queries=30,
            index_bytes=int(index_mb * 2**20),
            query_ms=query_ms,
            usd=0.0,
        )

    best, close, poor = record(0, "best", 8), record(1, "close", 2), record(2, "poor", 0.5)
    picked, why = _recommend([best, close, poor], best, Budget(), Scorer(), final)
    assert picked is close and "within noise of the best, trial 0" in why and "4.0x smaller index" in why
    # The cheaper strategy that is clearly worse is never the recommendation; alone, the best stays.
    assert _recommend([best, poor], best, Budget(), Scorer(), final)[0] is best
    # A budget that excludes a strategy keeps it out of the recommendation too.
    assert _recommend([best, close], best, Budget(index_mb=1), Scorer(), final) == (best, None)
    # A smaller index does not buy a query 9x slower than another strategy within noise of the best.
    scores["twin"] = scores["close"]
    slow, fast = record(1, "close", 1.5, query_ms=9.0), record(3, "twin", 2, query_ms=1.0)
    picked, why = _recommend([best, slow, fast], best, Budget(), Scorer(), final)
    assert picked is fast and "4.0x smaller index, 1.0x faster query" in why
    assert _recommend([best, slow], best, Budget(), Scorer(), final)[0] is best  # 9x slower for 5.3x less index
