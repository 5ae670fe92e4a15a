"""Passage-level scoring of long documents on BEIR collections (issue 14, item 3).

MiniLM reads 256 tokens; longer documents are truncated when embedded whole. This runs, through
``evaluate_strategies`` (what ``embedtune compare`` runs, so the Retriever ``search`` uses):

- whole documents (truncated at the limit);
- ``passages``: windows of the model's own limit, an eighth overlapping, each document scored by
  its ``first`` passage, its best one (``max``) or the sum of its two best (``sum2``);
- ``passages:title=true``: the same, each passage read after its document's title.

SciFact: chosen on train (the winner is the best nDCG@10 there), reported on test, with the gain
over the best figure so far (0.7486) and the mean nDCG@10 over the test queries none of whose
relevant documents train names (``Collection.unseen_queries``). NPL and Cranfield have no train
or dev split: nothing is chosen there, the rows are read side by side on test.

Query latency: one query at a time through the Retriever over the store compare built (the model
embeds the query, no cache), mean milliseconds over the first 100 test queries.

    python benchmarks/passages_beir.py [--collections scifact,npl,cranfield] [--queries 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from embedtune.evaluation import load_beir
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.factory import EmbedderSpec, build_embedder
from embedtune.retriever import Retriever
from embedtune.stores.embedded import EmbeddedStore

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
MODEL = EmbedderSpec(model="local:all-MiniLM-L6-v2")
CHUNKERS = ["none", "passages", "passages:title=true"]
SCORES = ["first", "max", "sum2"]
BEST_SO_FAR = {"scifact": 0.7486}  # the best SciFact test nDCG@10 before this lever


def home() -> Path:
    return Path(os.environ.get("EMBEDTUNE_HOME", Path.home() / ".embedtune"))


def find_store(index_dir: Path, collection: str, chunker: str) -> EmbeddedStore:
    """The store compare built for ``chunker`` on ``collection`` (found by its manifest)."""
    for folder in sorted(index_dir.glob(f"{collection}-*/*")):
        if not (folder / "manifest.json").exists():
            continue
        store = EmbeddedStore(folder)
        manifest = store.read_manifest()
        if manifest is not None and manifest.model == MODEL.model and manifest.chunker == chunker:
            return store
        store.close()
    raise SystemExit(f"no store for {chunker} under {index_dir}")


def query_ms(strategy, store, embedder, queries: list[str]) -> float:
    retriever = Retriever(strategy, store, embedder)
    retriever.search({"warm": queries[0]}, 100)
    times = []
    for text in queries:
        start = time.perf_counter()
        retriever.search({"q": text}, 100)
        times.append((time.perf_counter() - start) * 1000)
    retriever.close()
    return statistics.mean(times)


def run(name: str, n_queries: int, chunkers: list[str], hybrid: list[str]) -> None:
    collection = load_beir(DATASETS / name)
    index_dir = home() / "stores"
    started = time.perf_counter()
    result = evaluate_strategies(
        collection,
        [MODEL],
        bm25=False,
        hybrid=hybrid,
        chunkers=chunkers,
        chunk_score=SCORES,
        cache=home() / "embeddings.sqlite",
        index_dir=index_dir,
    )
    seconds = time.perf_counter() - started
    unseen = collection.unseen_queries("test", "train") if "train" in collection.qrels else None
    queries, _ = collection.split("test")
    sample = [queries[q] for q in list(queries)[:n_queries]]
    embedder = build_embedder(MODEL)  # no cache: the query is embedded as a user's would be
    stores = {c: find_store(index_dir, collection.name, c) for c in chunkers}
    print(f"\n== {name}: {result.documents} documents, {result.queries} test queries ({seconds:.0f} s)")
    if result.tune_split:
        print(f"chosen on {result.tune_split}; winner: {result.winner}")
    else:
        print("no train or dev split: nothing chosen here, rows read side by side on test")
    for note in result.notes:
        if "longer than" in note or "truncated" in note:
            print(f"note: {note}")
    head = f"{'strategy':72} {'nDCG@10':>8} {'R@100':>7} {'train':>7} {'ms/q':>6}"
    if unseen is not None:
        head += f" {'gain':>7} {'unseen':>7}"
    print(head)
    for row in result.strategies:
        assert row.strategy is not None and row.per_query is not None
        ms = query_ms(row.strategy, stores[row.strategy.chunker], embedder, sample)
        line = f"{row.name.removeprefix(MODEL.model + ' @ '):72} {row.metrics['ndcg@10']:8.4f}"
        line += f" {row.metrics['recall@100']:7.4f}"
        line += f" {row.selection['ndcg@10']:7.4f}" if row.selection else f" {'-':>7}"
        line += f" {ms:6.1f}"
        if unseen is not None:
            gain = row.metrics["ndcg@10"] - BEST_SO_FAR.get(name, float("nan"))
            mean_unseen = sum(row.per_query[q] for q in unseen) / len(unseen)
            line += f" {gain:+7.4f} {mean_unseen:7.4f}"
        print(line + ("  <- chosen" if result.tune_split and row.name == result.winner else ""))
    if unseen is not None:
        print(f"unseen: mean nDCG@10 over the {len(unseen)} test queries whose relevant documents train never names")
    for store in stores.values():
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", default="scifact,npl,cranfield")
    parser.add_argument("--queries", type=int, default=100, help="test queries timed one at a time")
    parser.add_argument("--chunkers", default=";".join(CHUNKERS), help="chunker specs joined by ;")
    parser.add_argument("--hybrid", default="", help="fusions with BM25 to add to each row: convex, rrf")
    args = parser.parse_args()
    chunkers = [c.strip() for c in args.chunkers.split(";") if c.strip()]
    print(f"model {MODEL.model}; chunkers {', '.join(chunkers)}; chunk scores {', '.join(SCORES)}")
    for name in args.collections.split(","):
        run(name.strip(), args.queries, chunkers, [h for h in args.hybrid.split(",") if h])


if __name__ == "__main__":
    main()
