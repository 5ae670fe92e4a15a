"""Ensembles: N-way fusion by hand, weight tuning that never sees the test split, the file, and
compare --fuse -> index -> eval/search through the command line on a SciFact slice."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from _cli import one_error_line, run_cli
from _slices import write_scifact_slice
from embedtune.ensemble import Ensemble, EnsembleRetriever, load_strategy
from embedtune.errors import ConfigError
from embedtune.evaluation import evaluate
from embedtune.evaluation.tuning import tune_fusion_weights
from embedtune.factory import EmbedderSpec
from embedtune.retriever import Retriever
from embedtune.search.fusion import convex
from embedtune.stores.embedded import EmbeddedStore
from embedtune.strategy import Fusion, Mode, Strategy

MINILM = "local:all-MiniLM-L6-v2"
SPLADE = "sparse:splade-tiny"
BM25 = Strategy(mode=Mode.BM25)
DENSE = Strategy(embedder=EmbedderSpec(model=MINILM))
DENSE_CHUNKED = Strategy(embedder=EmbedderSpec(model=MINILM), chunker="recursive")

# Three runs of one query; "d" is in the first run only, "c" in the last two only.
RUNS = [
    {"q": {"a": 3.0, "b": 2.0, "d": 1.0}},
    {"q": {"b": 0.9, "a": 0.5, "c": 0.1}},
    {"q": {"c": 10.0, "a": 4.0, "b": 0.0}},
]


def ensemble_retriever(tmp_path: Path, ensemble: Ensemble) -> EnsembleRetriever:
    # combine touches no store: each member's store is never opened.
    members = [Retriever(BM25, EmbeddedStore(tmp_path / str(i))) for i in range(len(ensemble.members))]
    return EnsembleRetriever(ensemble, members)


def three(method: Fusion, weights=None) -> Ensemble:
    return Ensemble(members=(BM25, DENSE, DENSE_CHUNKED), method=method, weights=weights, rrf_k=60)


def test_rrf_of_three_runs_is_the_formula(tmp_path):
    retriever = ensemble_retriever(tmp_path, three(Fusion.RRF, [1.0, 2.0, 0.5]))
    fused = retriever.combine({retriever.key(i): run for i, run in enumerate(RUNS)}, k=10)["q"]
    # ranks: a 1,2,2; b 2,1,3; c -,3,1; d 3,-,-
    expected = {
        "a": 1 / 61 + 2 / 62 + 0.5 / 62,
        "b": 1 / 62 + 2 / 61 + 0.5 / 63,
        "c": 2 / 63 + 0.5 / 61,
        "d": 1 / 63,
    }
    assert fused.keys() == expected.keys()
    assert all(math.isclose(fused[doc], value, rel_tol=1e-12) for doc, value in expected.items())
    assert list(fused) == ["b", "a", "c", "d"]  # cut() keeps trec order: best first
    assert list(retriever.combine({retriever.key(i): run for i, run in enumerate(RUNS)}, k=2)["q"]) == ["b", "a"]


def test_convex_of_three_runs_is_the_formula(tmp_path):
    retriever = ensemble_retriever(tmp_path, three(Fusion.CONVEX, [0.5, 0.3, 0.2]))
    fused = retriever.combine({retriever.key(i): run for i, run in enumerate(RUNS)}, k=10)["q"]
    # min-max per run: run0 a 1, b .5, d 0; run1 b 1, a .5, c 0; run2 c 1, a .4, b 0.
    # A document a run lacks takes that run's floor (0 under min-max).
    expected = {
        "a": 0.5 * 1 + 0.3 * 0.5 + 0.2 * 0.4,
        "b": 0.5 * 0.5 + 0.3 * 1 + 0.2 * 0,
        "c": 0.5 * 0 + 0.3 * 0 + 0.2 * 1,
        "d": 0.5 * 0 + 0.3 * 0 + 0.2 * 0,
    }
    assert all(math.isclose(fused[doc], value, abs_tol=1e-12) for doc, value in expected.items())
    assert list(fused) == ["a", "b", "c", "d"]


class Recording:
    """A member that answers one fixed run and records that it was asked."""

    def __init__(self, run: dict) -> None:
        self.run = run
        self.asked = 0

    def search(self, queries, k, *, where=None):
        self.asked += 1
        return dict.fromkeys(queries, self.run["q"])

    def search_one(self, text, k, *, where=None):
        from embedtune.retriever import Hit

        self.asked += 1
        return [Hit(doc_id=d, score=s, chunk_id=None, start=0, end=0, text="") for d, s in self.run["q"].items()]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("method", [Fusion.RRF, Fusion.CONVEX])
def test_a_member_of_weight_0_is_never_asked(method):
    members = [Recording(run) for run in RUNS]
    retriever = EnsembleRetriever(three(method, [0.6, 0.0, 0.4]), members)  # type: ignore[list-item]
    found = retriever.search({"q": "text"}, k=10)["q"]
    hits = retriever.search_one("text", k=10)
    assert [m.asked for m in members] == [2, 0, 2] and retriever.active == [0, 2]
    # The answer is the fusion of the other two runs alone (weights renormalised or not, the same order).
    two = EnsembleRetriever(
        Ensemble(members=(BM25, DENSE_CHUNKED), method=method, weights=[0.6, 0.4]),
        [members[0], members[2]],  # type: ignore[list-item]
    )
    assert found == pytest.approx(two.search({"q": "text"}, k=10)["q"])
    assert list(found) == [hit.doc_id for hit in hits] and "c" in found and "d" in found
    retriever.close()


def runs_and_judgments():
    """Three runs over 12 queries, each run right on a different third of them; judgments split 8 / 4."""
    runs: list[dict[str, dict[str, float]]] = [{}, {}, {}]
    qrels = {}
    for n in range(12):
        qid, good = f"q{n}", f"rel{n}"
        qrels[qid] = {good: 1}
        for i, run in enumerate(runs):
            scores = {f"x{i}{j}": 1.0 - j / 10 for j in range(5)}
            scores[good] = 1.0 + i / 10 if n % 3 == i else 0.55  # run i ranks it first on its queries
            run[qid] = scores
    train = {q: qrels[q] for q in list(qrels)[:8]}
    test = {q: qrels[q] for q in list(qrels)[8:]}
    return runs, train, test


def test_tuning_picks_the_best_grid_point_on_train_and_never_reads_test():
    runs, train, test = runs_and_judgments()
    weights, table = tune_fusion_weights(train, runs, step=0.1)
    assert len(table) == 66  # every point of the 3-run simplex at step 0.1
    for point, value in table.items():  # each figure is convex() scored on train, and the best is taken
        assert math.isclose(sum(point), 1.0)
        assert value == pytest.approx(evaluate(train, convex(runs, point), ["ndcg@10"])["ndcg@10"], abs=1e-12)
    assert table[weights] == max(table.values())
    assert table[weights] > table[(0.0, 0.0, 1.0)]  # one run alone misses two thirds of the queries
    # Rewriting the test queries' runs changes nothing: tuning never read them.
    scrambled = [{q: ({"junk": 1.0} if q in test else scores) for q, scores in run.items()} for run in runs]
    assert tune_fusion_weights(train, scrambled, step=0.1) == (weights, table)


def test_coordinate_ascent_beyond_four_runs_improves_on_equal_weights():
    runs, train, _ = runs_and_judgments()
    noise = [{q: {f"n{i}{j}": 1.0 - j / 10 for j in range(6)} for q in train} for i in range(3)]
    weights, table = tune_fusion_weights(train, [*runs, *noise], step=0.1)
    assert len(weights) == 6 and math.isclose(sum(weights), 1.0)
    assert table[weights] >= table[tuple(round(1 / 6, 10) for _ in range(6))]
    assert table[weights] == max(table.values())


def test_the_file_round_trips_and_either_kind_loads(tmp_path):
    ensemble = Ensemble(members=(BM25, DENSE), method=Fusion.CONVEX, weights=(0.3, 0.7), depth=50)
    path = ensemble.save(tmp_path / "ensemble.toml", comment="chosen on train")
    assert path.read_text().startswith("# chosen on train\nversion = 1\n")
    assert load_strategy(path) == ensemble and Ensemble.from_toml(ensemble.to_toml()) == ensemble
    assert ensemble.name == f"convex(0.3 bm25, 0.7 {MINILM})"
    assert load_strategy(DENSE.save(tmp_path / "dense.toml")) == DENSE


def test_a_saved_ensemble_names_its_folders_relative_to_the_file_and_loads_from_anywhere(tmp_path, monkeypatch):
    import tomllib

    from embedtune.ensemble import ENSEMBLE_FILE, stored_ensemble
    from embedtune.search.rerank import RerankSpec
    from embedtune.sparse.spec import SparseSpec

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the folders below are relative to it, as a user's command line gives them
    held = Ensemble(
        members=(
            BM25,
            Strategy(embedder=EmbedderSpec(model="local:runs/ft", adapter="runs/adapter")),
            Strategy(mode=Mode.SPARSE, sparse=SparseSpec(model="sparse:./runs/splade")),
        ),
        rerank=RerankSpec(model="runs/reranker"),
    )
    store = EmbeddedStore(tmp_path / "store")
    for path in (held.save(tmp_path / "out" / "e.toml"), held.save(store.path / ENSEMBLE_FILE)):
        data = tomllib.loads(path.read_text())
        assert data["rerank"]["model"] == "../work/runs/reranker"
        assert data["members"][1]["embedder"]["model"] == "local:../work/runs/ft"
        assert data["members"][1]["embedder"]["adapter"] == "../work/runs/adapter"
        assert data["members"][2]["sparse"]["model"] == "sparse:../work/runs/splade"
    monkeypatch.chdir(tmp_path / "out")  # elsewhere: the working directory plays no part
    runs = work / "runs"
    for again in (load_strategy("e.toml"), stored_ensemble(store)):
        assert isinstance(again, Ensemble) and again.rerank is not None
        assert again.rerank.model == str(runs / "reranker")
        assert again.members[1].embedder == EmbedderSpec(model=f"local:{runs / 'ft'}", adapter=str(runs / "adapter"))
        assert again.members[2].sparse == SparseSpec(model=f"sparse:{runs / 'splade'}")


def test_a_folder_holds_an_ensemble_or_a_single_strategy_never_both(tmp_path):
    from embedtune.documents import SourceDocument
    from embedtune.ensemble import index_ensemble
    from embedtune.indexer import index_documents

    docs = [SourceDocument(id=f"d{i}", text=f"wing lift drag number {i}") for i in range(4)]
    pair = Ensemble(members=(BM25, Strategy(embedder=EmbedderSpec(model="fake:hash-256"))))
    single, ensemble = tmp_path / "single", tmp_path / "ensemble"
    with EmbeddedStore(single) as store:
        index_documents(docs, BM25, store, None)
    index_ensemble(docs, pair, str(ensemble), cache=tmp_path / "cache.sqlite")
    held = {folder: sorted(p.relative_to(folder) for p in folder.rglob("*")) for folder in (single, ensemble)}

    with pytest.raises(ConfigError, match=r"holds a single strategy's store \(bm25\); index the ensemble into") as one:
        index_ensemble(docs, pair, str(single), cache=tmp_path / "cache.sqlite")
    with EmbeddedStore(ensemble) as store, pytest.raises(ConfigError, match=r"holds the ensemble rrf\(") as two:
        index_documents(docs, BM25, store, None)
    assert "\n" not in str(one.value) + str(two.value)
    assert "delete this one first" in str(two.value) and "delete this store first" in str(one.value)
    assert held == {folder: sorted(p.relative_to(folder) for p in folder.rglob("*")) for folder in held}  # unwritten

    # The command line says it in one line too.
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in docs))
    refused = run_cli("index", corpus, "--strategy", BM25.save(tmp_path / "bm25.toml"), "--store", ensemble)
    assert f"{ensemble} holds the ensemble" in one_error_line(refused)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('version = 1\n[fusion]\nmethod = "rrf"\n[[members]]\n[members.retrieval]\nmode = "bm25"\n', "at least two"),
        (
            'version = 1\n[fusion]\nmethod = "convex"\n[[members]]\n[members.retrieval]\nmode = "bm25"\n'
            f'[[members]]\n[members.embedder]\nmodel = "{MINILM}"\n',
            "needs fusion.weights",
        ),
        (
            'version = 1\n[fusion]\nmethod = "rrf"\nweights = [1]\n[[members]]\n[members.retrieval]\nmode = "bm25"\n'
            f'[[members]]\n[members.embedder]\nmodel = "{MINILM}"\n',
            "1 numbers for 2 members",
        ),
        (
            'version = 1\n[fusion]\nmethod = "rrf"\nk = 3\n[[members]]\n[members.retrieval]\nmode = "bm25"\n',
            "unknown key fusion.k",
        ),
        (
            'version = 1\n[fusion]\nmethod = "rrf"\n[[members]]\n[members.retrieval]\nmode = "bm25"\n'
            '[[members]]\n[members.retrieval]\nmode = "dense"\n',
            "members[1]: a dense strategy needs an [embedder]",
        ),
        (
            'version = 1\n[fusion]\nmethod = "sum"\n[[members]]\n[members.retrieval]\nmode = "bm25"\n'
            f'[[members]]\n[members.embedder]\nmodel = "{MINILM}"\n',
            "fusion.method must be rrf | convex",
        ),
        (
            'version = 1\n[fusion]\nmethod = "rrf"\n[rerank]\ntop = 5\n[[members]]\n[members.retrieval]\nmode = "bm25"\n'
            f'[[members]]\n[members.embedder]\nmodel = "{MINILM}"\n',
            "[rerank] needs a model",
        ),
    ],
)
def test_a_bad_file_is_one_line_naming_the_fault(tmp_path, text, says):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_strategy(path)
    message = str(caught.value)
    assert says in message and "\n" not in message and message.startswith(str(path))


def test_an_ensemble_is_not_built_over_another_store(tmp_path):
    from embedtune.ensemble import index_ensemble

    (tmp_path / "manifest.json").write_text("{}")
    ensemble = Ensemble(members=(BM25, DENSE), method=Fusion.RRF)
    with pytest.raises(ConfigError, match="holds manifest.json, not an ensemble's stores"):
        index_ensemble([], ensemble, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


# -- end to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scifact_slice(shared_datasets, tmp_path_factory) -> Path:
    """30 test and 30 train queries of SciFact, their documents and others, 200 in all."""
    folder = tmp_path_factory.mktemp("scifact-slice")
    return write_scifact_slice(shared_datasets, folder, tests=30, trains=30, documents=200)


def test_an_ensemble_compare_scored_is_what_index_and_search_answer(scifact_slice, tmp_path, tiny_cross_encoder):
    home, out = tmp_path / "home", tmp_path / "report"
    # Timeouts for a loaded machine: the first call exports and probes MiniLM's engine.
    compared = run_cli(
        "compare",
        scifact_slice,
        "--models",
        f"{MINILM},{SPLADE}",
        "--bm25",
        "--fuse",
        "--rerank",
        f"{tiny_cross_encoder}:5",
        "--out-dir",
        out,
        home=home,
        timeout=900,
    )
    assert compared.returncode == 0, compared.stderr
    report = json.loads((out / "comparison.json").read_text())
    rows = {row["name"]: row for row in report["strategies"]}
    fused = [row for row in report["strategies"] if row["kind"] == "ensemble" and "rerank" not in row["strategy"]]
    assert [row["name"].split("(")[0] for row in fused] == ["rrf", "convex"]
    # Only the fused rows and the reranked rows are timed one query at a time, through their retrievers.
    assert all(row["query_ms"] > 0 for row in fused)
    alone = [row for row in report["strategies"] if row["kind"] != "ensemble" and "rerank" not in row["strategy"]]
    assert all(row["query_ms"] is None and row["rerank_ms"] is None for row in alone)
    reranked = [row for row in report["strategies"] if row["kind"] == "ensemble" and "rerank" in row["strategy"]]
    assert all(row["query_ms"] > 0 and row["rerank_ms"] > 0 for row in reranked)
    assert [row["name"] for row in reranked] == [f"{row['name']} > rerank@5" for row in fused]
    assert all(row["strategy"]["rerank"]["top"] == 5 for row in reranked)
    assert fused[0]["name"] == f"rrf(bm25, {MINILM}, {SPLADE})"  # BM25, dense and learned sparse runs
    convex_row = fused[1]
    weights = convex_row["strategy"]["fusion"]["weights"]
    assert len(weights) == 3 and math.isclose(sum(weights), 1.0) and rows["bm25"] and rows[MINILM] and rows[SPLADE]
    if report["recommended"] == convex_row["name"]:  # a fused winner is written as an ensemble file
        assert isinstance(load_strategy(out / "strategy.toml"), Ensemble)

    strategy_file = Ensemble.from_dict(convex_row["strategy"]).save(tmp_path / "ensemble.toml")
    store = tmp_path / "index"
    built = run_cli("index", scifact_slice, "--strategy", strategy_file, "--store", store, home=home, timeout=600)
    assert built.returncode == 0, built.stderr
    assert "bm25: 200 added" in built.stdout and f"{MINILM}: 200 added" in built.stdout
    assert f"{SPLADE}: 200 added" in built.stdout
    assert (store / "ensemble.toml").is_file() and len(list((store / "members").iterdir())) == 3
    scored = run_cli("eval", scifact_slice, "--store", store, home=home, timeout=600)
    assert scored.returncode == 0, scored.stderr
    ndcg = float(re.search(r"ndcg@10 ([0-9.]+)", scored.stdout).group(1))  # type: ignore[union-attr]
    assert ndcg == pytest.approx(convex_row["metrics"]["ndcg@10"], abs=5e-5), scored.stdout
    assert "(200 documents)" in scored.stdout

    found = run_cli(
        "search", "vitamin D and bone fractures", "--store", store, "-k", "3", "--json", home=home, timeout=600
    )
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert all(hit["text"] and hit["chunk_id"] for hit in hits)

    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\n[fusion]\nmethod = "rrf"\n[[members]]\n[members.retrieval]\nmode = "bm25"\n')
    assert "at least two" in one_error_line(run_cli("index", scifact_slice, "--strategy", bad, "--store", store))


def test_an_ensemble_with_a_rerank_table_reorders_its_fused_head_by_the_reranker(
    scifact_slice, tmp_path, tiny_cross_encoder
):
    from embedtune.documents import corpus_documents
    from embedtune.ensemble import index_ensemble, open_ensemble
    from embedtune.evaluation import load_beir
    from embedtune.search.feedback import Feedback, FeedbackMethod
    from embedtune.search.rerank import CrossEncoderScorer, RerankSpec

    rm3 = Strategy(mode=Mode.BM25, feedback=Feedback(method=FeedbackMethod.RM3))
    plain = Ensemble(members=(BM25, rm3), method=Fusion.RRF, depth=20)
    ensemble = Ensemble(
        members=(BM25, rm3), method=Fusion.RRF, depth=20, rerank=RerankSpec(model=str(tiny_cross_encoder), top=8)
    )
    assert ensemble.name.endswith(" > rerank@8")
    again = Ensemble.from_toml(ensemble.to_toml())
    assert again == ensemble and "[rerank]" in ensemble.to_toml()
    collection = load_beir(scifact_slice)
    texts = {doc.id: doc.text for doc in corpus_documents(collection.corpus)}
    index_ensemble(corpus_documents(collection.corpus), ensemble, str(tmp_path / "store"))
    queries = dict(list(collection.split("test")[0].items())[:5])
    from embedtune.stores import open_store

    retriever = open_ensemble(open_store(str(tmp_path / "store")))
    unranked = EnsembleRetriever(plain, retriever.members)
    try:
        fused = unranked.search(queries, 8)
        reranked = retriever.search(queries, 8)
        one = retriever.search_one(queries[next(iter(queries))], 8)
    finally:
        retriever.close()
    scorer = CrossEncoderScorer(tiny_cross_encoder)
    moved = 0
    for qid, scores in fused.items():
        head = list(scores)  # the fused top 8, best first
        by_model = scorer([(queries[qid], texts[doc]) for doc in head])
        expected = [doc for _, doc in sorted(zip(-by_model, head))]
        assert list(reranked[qid]) == expected and set(expected) == set(head)
        moved += expected != head
    assert moved  # the reranker's order, not the fusion's
    assert [hit.doc_id for hit in one] == list(reranked[next(iter(queries))])
