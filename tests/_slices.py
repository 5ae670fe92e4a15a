"""A slice of SciFact written as a BEIR folder: the first test and train queries, their documents and others."""

import json
from pathlib import Path

from embedtune.evaluation import load_beir


def write_scifact_slice(shared_datasets: Path, folder: Path, *, tests: int, trains: int, documents: int) -> Path:
    """``tests`` test and ``trains`` train queries of SciFact, every document they judge, and the first
    other documents up to ``documents`` in all, written into ``folder`` in the BEIR layout."""
    source = load_beir(shared_datasets / "scifact")
    test_qrels = dict(sorted(source.qrels["test"].items())[:tests])
    train_qrels = dict(sorted(source.qrels["train"].items())[:trains])
    judged = sorted({doc for qrels in (test_qrels, train_qrels) for rels in qrels.values() for doc in rels})
    others = [doc for doc in sorted(source.corpus) if doc not in set(judged)]
    with (folder / "corpus.jsonl").open("w") as out:
        for doc_id in judged + others[: documents - len(judged)]:
            doc = source.corpus[doc_id]
            out.write(json.dumps({"_id": doc_id, "title": doc.title, "text": doc.text}) + "\n")
    with (folder / "queries.jsonl").open("w") as out:
        for qid in [*test_qrels, *train_qrels]:
            out.write(json.dumps({"_id": qid, "text": source.queries[qid]}) + "\n")
    (folder / "qrels").mkdir()
    for split, qrels in (("test", test_qrels), ("train", train_qrels)):
        rows = [f"{q}\t{d}\t{r}" for q, rels in qrels.items() for d, r in rels.items()]
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


def scifact_parity_slice(shared_datasets: Path, *, tests: int, documents: int):
    """The first ``tests`` SciFact test queries, every document they judge and the first others up
    to ``documents``, as SourceDocuments marked ``half`` even or odd; and those queries by id."""
    from embedtune.documents import SourceDocument

    collection = load_beir(shared_datasets / "scifact", splits=["test"])
    qrels = dict(sorted(collection.qrels["test"].items())[:tests])
    judged = sorted({doc for rels in qrels.values() for doc in rels})
    ids = judged + [doc for doc in sorted(collection.corpus) if doc not in set(judged)][: documents - len(judged)]
    docs = [
        SourceDocument(id=i, text=collection.documents_text(i), metadata={"half": ["even", "odd"][n % 2]})
        for n, i in enumerate(ids)
    ]
    return docs, {qid: collection.queries[qid] for qid in qrels}
