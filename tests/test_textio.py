import json

import numpy as np
import pytest

from embedtune.errors import InputError
from embedtune.textio import read_texts, read_vectors, write_vectors


def test_txt_lines_skip_blanks_and_keep_line_numbers(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("first\n\nthird\n")
    data = read_texts(path)
    assert data.ids == ["1", "3"] and data.texts == ["first", "third"]


def test_jsonl_ids_and_beir_title(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        json.dumps({"_id": "d1", "title": "Backups", "text": "Nightly at two."})
        + "\n"
        + json.dumps({"text": "no id here"})
        + "\n"
    )
    data = read_texts(path)
    assert data.ids == ["d1", "2"] and data.texts == ["Backups Nightly at two.", "no id here"]


def test_beir_folder_reads_its_corpus(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "a", "title": "", "text": "x"}) + "\n")
    assert read_texts(tmp_path).ids == ["a"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "\n\n", "holds no documents"),
        ("bad.jsonl", '{"text": "ok"}\n{"text": oops}\n', r"bad.jsonl:2: not valid JSON"),
        ("nofield.jsonl", '{"body": "x"}\n', "string 'text' field"),
        ("dupes.jsonl", '{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', "appears more than once"),
        ("t.csv", "a,b\n", "unknown input format"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_texts(path)


def test_missing_and_non_utf8_input(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_texts(tmp_path / "nope.txt")
    (tmp_path / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_texts(tmp_path / "latin.txt")
    with pytest.raises(InputError, match="without corpus.jsonl"):
        read_texts(tmp_path)


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_vectors_round_trip(tmp_path, suffix):
    vectors = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    ids = [f"id{i}" for i in range(5)]
    write_vectors(tmp_path / f"v{suffix}", ids, vectors, model="fake:hash-256")
    back_ids, back = read_vectors(tmp_path / f"v{suffix}")
    assert back_ids == ids
    np.testing.assert_array_equal(back, vectors)
    assert not list(tmp_path.glob(".*.tmp"))


def test_parquet_input(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a", "b"], "text": ["one", "two"]}), tmp_path / "in.parquet")
    data = read_texts(tmp_path / "in.parquet")
    assert data.ids == ["a", "b"] and data.texts == ["one", "two"]


def test_a_line_separator_inside_a_json_string_is_text_not_a_line_break(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text('{"_id": "a", "text": "one\u2028two"}\n{"_id": "b", "text": "three"}\n', encoding="utf-8")
    data = read_texts(path)
    assert data.ids == ["a", "b"] and data.texts == ["one\u2028two", "three"]
