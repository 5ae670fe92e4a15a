"""The BEIR loader on the four shared collections and on small broken copies."""

import json
from pathlib import Path

import pytest

from embedtune.errors import InputError
from embedtune.evaluation import Collection, Document, download_beir, load_beir
from embedtune.evaluation.collections import BEIR_URL

# name: (documents, queries loaded, {split: (judged queries, judgments)})
COUNTS = {
    "scifact": (5183, 300 + 809, {"test": (300, 339), "train": (809, 919)}),
    "cranfield": (1400, 225, {"test": (225, 1612)}),
    "npl": (11429, 93, {"test": (93, 2083)}),
    "adi": (82, 35, {"test": (35, 170)}),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_shared_collections_load_with_their_published_counts(shared_datasets: Path, name: str) -> None:
    documents, queries, splits = COUNTS[name]
    collection = load_beir(shared_datasets / name)
    assert collection.name == name
    assert len(collection.corpus) == documents
    assert len(collection.queries) == queries
    assert collection.problems == ()
    assert {split: (len(qrels), sum(map(len, qrels.values()))) for split, qrels in collection.qrels.items()} == splits
    for split in splits:
        split_queries, qrels = collection.split(split)
        assert set(split_queries) == set(qrels)


def test_scifact_test_split_reads_only_queries_jsonl(shared_datasets: Path) -> None:
    collection = load_beir(shared_datasets / "scifact", splits=["test"])
    assert len(collection.queries) == 300
    assert list(collection.qrels) == ["test"]


def test_cranfield_judgments_are_graded(shared_datasets: Path) -> None:
    qrels = load_beir(shared_datasets / "cranfield").qrels["test"]
    assert {rel for judged in qrels.values() for rel in judged.values()} == {1, 2, 3, 4}


def test_documents_text_joins_title_and_text(shared_datasets: Path) -> None:
    collection = load_beir(shared_datasets / "adi")
    doc = collection.corpus["1"]
    assert collection.documents_text("1") == f"{doc.title} {doc.text}"
    assert Document(title="", text="body").full_text == "body"
    assert Document(title="Title", text="").full_text == "Title"


def test_beir_url_pattern() -> None:
    assert BEIR_URL.format(name="scifact") == (
        "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip"
    )


def test_download_checks_the_name_and_reuses_a_downloaded_folder_without_network(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a BEIR collection name"):
        download_beir("../escape", tmp_path)
    write_beir(tmp_path / "scifact")
    assert download_beir("scifact", tmp_path) == tmp_path / "scifact"


# -- broken copies --------------------------------------------------------------------------------

GOOD_CORPUS = [
    {"_id": "d1", "title": "Wings", "text": "lift and drag"},
    {"_id": "d2", "title": "", "text": "shock waves"},
    {"_id": "d3", "title": "Heat", "text": "heat transfer"},
]
GOOD_QUERIES = [{"_id": "q1", "text": "lift"}, {"_id": "q2", "text": "shock"}]
GOOD_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n"


def write_beir(
    folder: Path,
    *,
    corpus: list | str = GOOD_CORPUS,
    queries: list | str = GOOD_QUERIES,
    qrels: dict[str, str] | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        text = rows if isinstance(rows, str) else "".join(json.dumps(row) + "\n" for row in rows)
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    for split, text in (qrels or {"test": GOOD_QRELS}).items():
        (folder / "qrels" / f"{split}.tsv").write_text(text, encoding="utf-8")
    return folder


def test_a_good_small_copy_loads(tmp_path: Path) -> None:
    collection = load_beir(write_beir(tmp_path / "tiny"))
    assert isinstance(collection, Collection)
    assert collection.qrels == {"test": {"q1": {"d1": 1}, "q2": {"d2": 2}}}
    assert collection.queries == {"q1": "lift", "q2": "shock"}
    assert collection.documents_text("d2") == "shock waves"


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_beir(tmp_path / "nowhere")


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl"])
def test_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    folder = write_beir(tmp_path / "c")
    (folder / missing).unlink()
    with pytest.raises(InputError, match=f"{missing} is missing"):
        load_beir(folder)


def test_missing_qrels(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "c")
    with pytest.raises(InputError, match=r"train\.tsv is missing; splits found: test"):
        load_beir(folder, splits=["train"])
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(InputError, match="holds no .tsv"):
        load_beir(folder)
    (folder / "qrels").rmdir()
    with pytest.raises(InputError, match="qrels is missing"):
        load_beir(folder)


def test_line_that_is_not_json_names_file_and_line(tmp_path: Path) -> None:
    corpus = json.dumps(GOOD_CORPUS[0]) + "\n{not json\n"
    folder = write_beir(tmp_path / "c", corpus=corpus)
    with pytest.raises(InputError, match=r"corpus\.jsonl:2: not valid JSON"):
        load_beir(folder)
    folder = write_beir(tmp_path / "d", queries='["a list"]\n')
    with pytest.raises(InputError, match=r"queries\.jsonl:1: not a JSON object"):
        load_beir(folder)
    folder = write_beir(tmp_path / "e", corpus=[{"title": "no id", "text": "x"}])
    with pytest.raises(InputError, match=r"corpus\.jsonl line 1 has no '_id'"):
        load_beir(folder)


def test_bad_qrels_rows_name_the_line(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "c", qrels={"test": GOOD_QRELS + "q1\td3\n"})
    with pytest.raises(InputError, match=r"test\.tsv line 4 has 2 column"):
        load_beir(folder)
    folder = write_beir(tmp_path / "d", qrels={"test": GOOD_QRELS + "q1\td3\thigh\n"})
    with pytest.raises(InputError, match=r"test\.tsv line 4: score 'high' is not an integer"):
        load_beir(folder)


def test_duplicate_document_ids_are_counted(tmp_path: Path) -> None:
    corpus = GOOD_CORPUS + [{"_id": "d1", "title": "", "text": "again"}, {"_id": "d1", "text": "thrice"}]
    folder = write_beir(tmp_path / "c", corpus=corpus)
    with pytest.raises(InputError, match=r"repeats 2 document id\(s\) \(first: 'd1'\)"):
        load_beir(folder)
    repaired = load_beir(folder, strict=False)
    assert repaired.corpus["d1"].text == "lift and drag"  # the first wins
    assert len(repaired.problems) == 1


def test_empty_query_texts_are_counted(tmp_path: Path) -> None:
    queries = GOOD_QUERIES + [{"_id": "q3", "text": "  "}, {"_id": "q4", "text": ""}]
    qrels = GOOD_QRELS + "q3\td3\t1\n"
    folder = write_beir(tmp_path / "c", queries=queries, qrels={"test": qrels})
    with pytest.raises(InputError, match=r"2 query text\(s\) are empty \(ids: 'q3', 'q4'\)"):
        load_beir(folder)
    repaired = load_beir(folder, strict=False)
    assert set(repaired.queries) == {"q1", "q2"}
    assert set(repaired.qrels["test"]) == {"q1", "q2"}
    assert len(repaired.problems) == 1  # q3's judgment goes with it, not reported as unknown


def test_qrels_naming_unknown_ids_are_counted_not_dropped_silently(tmp_path: Path) -> None:
    qrels = GOOD_QRELS + "q9\td1\t1\nq9\td2\t1\nq1\tghost\t1\nq2\tghost\t1\nq2\tspectre\t1\n"
    folder = write_beir(tmp_path / "c", qrels={"test": qrels})
    with pytest.raises(InputError) as raised:
        load_beir(folder)
    message = str(raised.value)
    assert "2 judgment(s) for 1 query id(s) missing from queries.jsonl (ids: 'q9')" in message
    assert "3 judgment(s) naming 2 document id(s) missing from corpus.jsonl (ids: 'ghost', 'spectre')" in message
    assert "\n" not in message
    repaired = load_beir(folder, strict=False)
    assert repaired.qrels["test"] == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    assert len(repaired.problems) == 2


def test_repeated_judgments_are_counted(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "c", qrels={"test": GOOD_QRELS + "q1\td1\t2\n"})
    with pytest.raises(InputError, match=r"judges 1 \(query, document\) pair\(s\) twice"):
        load_beir(folder)
    assert load_beir(folder, strict=False).qrels["test"]["q1"] == {"d1": 2}


def test_judged_queries_missing_from_queries_jsonl_come_from_queries_all(tmp_path: Path) -> None:
    train = "query-id\tcorpus-id\tscore\nq7\td3\t1\n"
    folder = write_beir(tmp_path / "c", qrels={"test": GOOD_QRELS, "train": train})
    all_queries = GOOD_QUERIES + [{"_id": "q7", "text": "heat"}, {"_id": "q8", "text": "unjudged"}]
    (folder / "queries_all.jsonl").write_text("".join(json.dumps(q) + "\n" for q in all_queries))
    collection = load_beir(folder)
    assert collection.queries == {"q1": "lift", "q2": "shock", "q7": "heat"}
    assert load_beir(folder, splits=["test"]).queries == {"q1": "lift", "q2": "shock"}


def test_split_names_must_be_a_sequence(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "c")
    with pytest.raises(TypeError, match="sequence of names"):
        load_beir(folder, splits="test")
    with pytest.raises(InputError, match="has no split 'dev'"):
        load_beir(folder).split("dev")


def test_unseen_queries_are_those_whose_relevant_documents_the_seen_split_never_names() -> None:
    corpus = {d: Document(title="", text=d) for d in ("a", "b", "c")}
    collection = Collection(
        name="toy",
        corpus=corpus,
        queries={"q1": "x", "q2": "y", "q3": "z", "t1": "w"},
        qrels={"test": {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}, "q3": {"a": 0, "c": 1}}, "train": {"t1": {"b": 1}}},
    )
    assert collection.unseen_queries("test", "train") == ["q1", "q3"]


def test_scifact_has_104_test_queries_no_train_query_names(shared_datasets: Path) -> None:
    assert len(load_beir(shared_datasets / "scifact").unseen_queries("test", "train")) == 104
