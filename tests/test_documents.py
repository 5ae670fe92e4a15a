"""read_documents: every input kind, read from real files written into tmp_path."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pypdf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedtune.documents import DocumentSource, SourceKind, read_documents
from embedtune.errors import InputError
from embedtune.evaluation.collections import load_beir
from embedtune.textio import read_texts

SAMPLE = Path(str(resources.files("embedtune") / "data" / "sample"))


# --- helpers ---------------------------------------------------------------------------------------


def make_pdf(pages: list[list[str]], *, title: str | None = None) -> bytes:
    """A valid PDF written by hand: one Helvetica text line per string, one page per list."""
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    kids = []
    number = 4
    for lines in pages:
        page, content = number, number + 1
        number += 2
        kids.append(f"{page} 0 R")
        stream = "".join(f"BT /F1 12 Tf 72 {720 - 20 * i} Td ({line}) Tj ET\n" for i, line in enumerate(lines)).encode()
        objects[page] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content} 0 R >>"
        ).encode()
        objects[content] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode()
    trailer = f"/Root 1 0 R /Size {number + (1 if title else 0)}"
    if title:
        objects[number] = f"<< /Title ({title}) >>".encode()
        trailer += f" /Info {number} 0 R"
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for key in sorted(objects):
        offsets[key] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (key, objects[key])
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offsets[key] for key in sorted(objects))
    out += b"trailer\n<< %s >>\nstartxref\n%d\n%%%%EOF\n" % (trailer.encode(), xref)
    return bytes(out)


def blank_pdf() -> bytes:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=612, height=792)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def encrypted_pdf() -> bytes:
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(make_pdf([["Secret text"]])))
    writer.encrypt("password", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(path: Path, *rows: dict | str) -> Path:
    return write(path, "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


def by_id(source: DocumentSource) -> dict:
    return {document.id: document for document in source.documents}


# --- the PDF helper itself --------------------------------------------------------------------------


def test_hand_written_pdf_is_valid_and_strictly_readable():
    reader = pypdf.PdfReader(io.BytesIO(make_pdf([["Hello"], ["World"]], title="T")), strict=True)
    assert [page.extract_text() for page in reader.pages] == ["Hello", "World"]
    assert reader.metadata.title == "T"


# --- BEIR folders -----------------------------------------------------------------------------------


def test_beir_folder_matches_what_compare_evaluates():
    source = read_documents(SAMPLE)
    collection = load_beir(SAMPLE)
    assert source.kind is SourceKind.BEIR and source.failures == [] and source.skipped == 0
    assert [document.id for document in source.documents] == list(collection.corpus)
    for document in source.documents:
        assert document.text == collection.documents_text(document.id)
        assert document.metadata == {"title": collection.corpus[document.id].title}


def test_beir_title_joined_like_full_text_and_left_out_of_metadata_when_empty(tmp_path):
    jsonl(
        tmp_path / "corpus.jsonl",
        {"_id": "a", "title": "Backups", "text": "Nightly at two."},
        {"_id": "b", "title": "", "text": "No title."},
        {"_id": "c", "title": "Only a title", "text": ""},
    )
    docs = by_id(read_documents(tmp_path))
    assert [(d.text, d.metadata) for d in docs.values()] == [
        ("Backups Nightly at two.", {"title": "Backups"}),
        ("No title.", {}),
        ("Only a title", {"title": "Only a title"}),
    ]


def test_beir_corpus_not_utf8_is_one_clear_line(tmp_path):
    write(tmp_path / "corpus.jsonl", b'{"_id": "a", "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"corpus\.jsonl:1: not UTF-8"):
        read_documents(tmp_path)


# --- JSONL ------------------------------------------------------------------------------------------


def test_jsonl_metadata_object_wins_over_other_fields(tmp_path):
    path = jsonl(
        tmp_path / "docs.jsonl",
        {"_id": "a", "title": "T", "text": "body", "source": "ignored", "metadata": {"lang": "en", "tags": ["x"]}},
    )
    [document] = read_documents(path).documents
    assert (document.id, document.text, document.metadata) == ("a", "T body", {"lang": "en", "tags": ["x"]})


def test_jsonl_other_scalar_fields_become_metadata(tmp_path):
    path = jsonl(
        tmp_path / "docs.jsonl",
        {"id": 7, "text": "plain", "title": "Heading", "source": "wiki", "year": 2020, "score": 1.5},
        {"id": 8, "text": "more", "ok": True, "none": None, "nested": {"x": 1}, "list": [1, 2]},
    )
    source = read_documents(path)
    assert source.kind is SourceKind.JSONL
    assert [(d.id, d.text, d.metadata) for d in source.documents] == [
        ("7", "Heading plain", {"source": "wiki", "year": 2020, "score": 1.5}),
        ("8", "more", {"ok": True, "none": None}),
    ]


def test_jsonl_ids_texts_and_order_agree_with_embed(tmp_path):
    path = jsonl(
        tmp_path / "docs.jsonl",
        {"_id": "d2", "title": "Backups", "text": "Nightly."},
        "",
        {"text": "no id here"},
        {"id": "d1", "text": "last"},
    )
    source = read_documents(path)
    expected = read_texts(path)
    assert [d.id for d in source.documents] == expected.ids == ["d2", "3", "d1"]
    assert [d.text for d in source.documents] == expected.texts


def test_jsonl_named_text_and_id_fields_keep_title_as_metadata(tmp_path):
    path = jsonl(tmp_path / "docs.jsonl", {"key": "k1", "_id": "x", "title": "T", "body": "words", "text": "other"})
    [document] = read_documents(path, text_field="body", id_field="key").documents
    assert (document.id, document.text) == ("k1", "words")
    assert document.metadata == {"_id": "x", "title": "T", "text": "other"}


@pytest.mark.parametrize(
    ("lines", "options", "message"),
    [
        (['{"_id": "a", "text": "x"}', '{"_id": "a", "text": "y"}'], {}, r"id 'a' appears more than once"),
        (['{"id": 1, "text": "x"}', '{"_id": "1", "text": "y"}'], {}, r"id '1' appears more than once"),
        (['{"text": "ok"}', '{"text": oops}'], {}, r"docs\.jsonl:2: not valid JSON"),
        (['["a list"]'], {}, r"docs\.jsonl:1: not a JSON object"),
        (['{"body": "x"}'], {}, r"docs\.jsonl:1: expected a string 'text' field"),
        (['{"text": 3}'], {}, r"expected a string 'text' field"),
        (['{"text": "x"}'], {"id_field": "key"}, r"docs\.jsonl:1: no 'key' field"),
        (['{"_id": null, "text": "x"}'], {}, r"id '_id' is None"),
        (['{"text": "x", "metadata": "lang=en"}'], {}, r"'metadata' is str, not an object"),
        (["", "  "], {}, r"holds no documents"),
    ],
)
def test_jsonl_bad_input_is_one_clear_line(tmp_path, lines, options, message):
    path = write(tmp_path / "docs.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(InputError, match=message) as caught:
        read_documents(path, **options)
    assert "\n" not in str(caught.value)


def test_jsonl_not_utf8_names_the_line(tmp_path):
    path = write(tmp_path / "docs.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"docs\.jsonl:2: not UTF-8"):
        read_documents(path)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=10))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
documents_rows = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=8),
        st.text(max_size=30),
        st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda row: row[0],
)


@settings(max_examples=40, deadline=None)
@given(rows=documents_rows)
def test_jsonl_round_trips_ids_texts_and_metadata(tmp_path_factory, rows):
    path = jsonl(
        tmp_path_factory.mktemp("rt") / "docs.jsonl",
        *({"_id": doc_id, "text": text, "metadata": metadata} for doc_id, text, metadata in rows),
    )
    source = read_documents(path)
    assert [(d.id, d.text, d.metadata) for d in source.documents] == rows
    json.dumps([d.metadata for d in source.documents], allow_nan=False)


# --- parquet ----------------------------------------------------------------------------------------


def test_parquet_columns_follow_the_jsonl_rules(tmp_path):
    path = tmp_path / "docs.parquet"
    table = pa.table(
        {
            "_id": ["a", "b"],
            "title": ["Backups", None],
            "text": ["Nightly.", None],
            "lang": pa.array(["en", "de"]).dictionary_encode(),
            "year": [2020, 2021],
            "score": [0.5, float("nan")],
            "when": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5), None], pa.timestamp("s")),
            "vector": [[1.0, 2.0], [3.0]],
            "blob": [b"x", b"y"],
        }
    )
    pq.write_table(table, path)
    source = read_documents(path)
    assert source.kind is SourceKind.PARQUET
    assert [(d.id, d.text) for d in source.documents] == [("a", "Backups Nightly."), ("b", "")]
    assert [d.metadata for d in source.documents] == [
        {"lang": "en", "year": 2020, "score": 0.5, "when": "2024-01-02T03:04:05"},
        {"lang": "de", "year": 2021, "score": None, "when": None},
    ]
    json.dumps([d.metadata for d in source.documents], allow_nan=False)


def test_parquet_metadata_column_as_struct_or_json_text(tmp_path):
    struct = tmp_path / "struct.parquet"
    pq.write_table(
        pa.table({"id": [1, 2], "text": ["x", "y"], "metadata": [{"lang": "en"}, None], "extra": [1, 2]}), struct
    )
    text = tmp_path / "text.parquet"
    pq.write_table(pa.table({"text": ["x"], "metadata": ['{"lang": "fr", "n": [1]}']}), text)
    assert [(d.id, d.metadata) for d in read_documents(struct).documents] == [("1", {"lang": "en"}), ("2", {})]
    assert [(d.id, d.metadata) for d in read_documents(text).documents] == [("1", {"lang": "fr", "n": [1]})]
    mapped = tmp_path / "map.parquet"
    metadata = pa.array([[("lang", "es")], [("lang", "it"), ("tier", "b")]], pa.map_(pa.string(), pa.string()))
    pq.write_table(pa.table({"text": pa.array(["x", "y"]).dictionary_encode(), "metadata": metadata}), mapped)
    assert [d.metadata for d in read_documents(mapped).documents] == [{"lang": "es"}, {"lang": "it", "tier": "b"}]


@pytest.mark.parametrize(
    ("columns", "options", "message"),
    [
        ({"id": ["a", "a"], "text": ["x", "y"]}, {}, r"id 'a' appears more than once; give each row its own id"),
        ({"body": ["x"]}, {}, r"has no text column 'text' \(columns: body\)"),
        ({"text": ["x"]}, {"id_field": "key"}, r"has no id column 'key' \(columns: text\)"),
        ({"text": [1, 2]}, {}, r"column 'text' holds int64, not text"),
        ({"id": ["a", None], "text": ["x", "y"]}, {}, r"docs\.parquet row 2: id 'id' is None"),
        ({"text": ["x"], "metadata": ["not json"]}, {}, r"row 1: 'metadata' is not an object"),
        ({"text": pa.array([], pa.string())}, {}, r"holds no documents"),
    ],
)
def test_parquet_bad_input_is_one_clear_line(tmp_path, columns, options, message):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(InputError, match=message):
        read_documents(path, **options)


def test_corrupt_parquet_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"cannot read .*bad\.parquet as parquet"):
        read_documents(write(tmp_path / "bad.parquet", b"not parquet at all"))


# --- a single .txt ----------------------------------------------------------------------------------


def test_txt_is_one_document_per_line_as_embed_reads_it(tmp_path):
    path = write(tmp_path / "lines.txt", "first\n\n  \nfourth line\n")
    source = read_documents(path)
    assert source.kind is SourceKind.TXT
    assert [(d.id, d.text, d.metadata) for d in source.documents] == [("1", "first", {}), ("4", "fourth line", {})]
    assert [d.id for d in source.documents] == read_texts(path).ids


# --- folders of files -------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>  Runbook:
  restarts </title>
<style>body { color: red }</style><script>var secret = "token";</script></head>
<body><!-- a comment -->
<h1>Restarting   a service</h1>
<p>Drain the <b>node</b>
 first.</p><p>Then restart<br>and watch&nbsp;the logs.</p>
<ul><li>one</li>
<li>two</li></ul>
<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>
<noscript>enable JavaScript</noscript>
</body></html>
"""


def test_html_text_is_the_visible_text_in_blocks(tmp_path):
    write(tmp_path / "site" / "page.html", PAGE)
    [document] = read_documents(tmp_path).documents
    assert document.text == (
        "Restarting a service\n\nDrain the node first.\n\nThen restart\nand watch the logs.\n\none\ntwo\n\na b\nc d"
    )
    assert document.metadata == {"path": "site/page.html", "type": "html", "title": "Runbook: restarts"}


def test_html_declared_encoding_is_honoured(tmp_path):
    write(
        tmp_path / "old.htm",
        '<html><head><meta charset="iso-8859-1"></head><body><p>café</p></body></html>'.encode("latin-1"),
    )
    [document] = read_documents(tmp_path).documents
    assert (document.text, document.metadata) == ("café", {"path": "old.htm", "type": "html"})


def test_pdf_pages_joined_by_blank_lines_with_title(tmp_path):
    write(
        tmp_path / "guide.pdf",
        make_pdf([["Hello PDF world", "second line"], [], ["Page three"], ["Page four"]], title="The Guide"),
    )
    [document] = read_documents(tmp_path).documents
    assert [" ".join(page.split()) for page in document.text.split("\n\n")] == [
        "Hello PDF world second line",
        "Page three",
        "Page four",
    ]
    assert document.metadata == {"path": "guide.pdf", "type": "pdf", "title": "The Guide"}


@pytest.fixture()
def mixed(tmp_path) -> Path:
    """A folder with one file of each kind, good and bad, written in reverse order of their ids."""
    root = tmp_path / "corpus"
    write(root / "z" / "deep" / "note.markdown", "# Deep\n")
    write(root / "z" / "bad.pdf", b"%PDF-1.4\nthis is not a pdf\n")
    write(root / "z" / "scan.pdf", blank_pdf())
    write(root / "z" / "locked.pdf", encrypted_pdf())
    write(root / "readme.MD", "\ufeff# Title\r\n\r\nBody text.\r\n")
    write(root / "latin1.txt", b"caf\xe9 au lait")
    write(root / "empty.txt", "  \n\n")
    write(root / "b" / "page.html", "<html><body><p>Hello <i>web</i></p></body></html>")
    write(root / "a.txt", "first file\nsecond line\n")
    write(root / "a" / "doc.pdf", make_pdf([["In a folder"]]))
    write(root / ".hidden.txt", "hidden")
    write(root / ".git" / "HEAD.txt", "hidden folder")
    write(root / "b" / ".cache" / "x.md", "hidden folder")
    write(root / "data.jsonl", '{"text": "not read in a folder"}\n')
    write(root / "image.png", b"\x89PNG")
    write(root / "Makefile", "all:\n")
    os.symlink(root / "missing.txt", root / "dead.txt")
    return root


def test_folder_reads_supported_files_sorted_and_skips_the_rest(mixed):
    source = read_documents(mixed)
    assert source.kind is SourceKind.FOLDER
    assert [d.id for d in source.documents] == [
        "a.txt",
        "a/doc.pdf",
        "b/page.html",
        "readme.MD",
        "z/deep/note.markdown",
    ]
    docs = by_id(source)
    assert docs["a.txt"].text == "first file\nsecond line\n"
    assert docs["a/doc.pdf"].text == "In a folder"
    assert docs["b/page.html"].text == "Hello web"
    assert docs["readme.MD"].text == "# Title\n\nBody text.\n"
    assert {d.id: d.metadata for d in source.documents} == {
        "a.txt": {"path": "a.txt", "type": "txt"},
        "a/doc.pdf": {"path": "a/doc.pdf", "type": "pdf"},
        "b/page.html": {"path": "b/page.html", "type": "html"},
        "readme.MD": {"path": "readme.MD", "type": "md"},
        "z/deep/note.markdown": {"path": "z/deep/note.markdown", "type": "md"},
    }
    assert source.skipped == 3  # data.jsonl, image.png, Makefile; hidden files are neither read nor counted


def test_folder_failures_name_each_bad_file_with_one_line(mixed):
    source = read_documents(mixed)
    failures = dict(source.failures)
    failed = ["dead.txt", "empty.txt", "latin1.txt", "z/bad.pdf", "z/locked.pdf", "z/scan.pdf"]
    assert list(failures) == [str(mixed / name) for name in failed]
    assert source.failed_ids == failed
    assert all("\n" not in reason for reason in failures.values())
    assert failures[str(mixed / "latin1.txt")] == "not UTF-8 text (byte 3); convert it to UTF-8"
    assert failures[str(mixed / "z/scan.pdf")].startswith("no text layer: scanned? run OCR first")
    assert failures[str(mixed / "z/locked.pdf")].startswith("encrypted with a password")
    assert failures[str(mixed / "z/bad.pdf")].startswith("not a readable PDF (PdfStreamError")
    assert failures[str(mixed / "empty.txt")].startswith("no text")
    assert failures[str(mixed / "dead.txt")].startswith("not a regular file")


def test_folder_of_only_bad_files_reports_failures_without_raising(tmp_path):
    write(tmp_path / "bad.pdf", b"garbage")
    source = read_documents(tmp_path)
    assert source.documents == [] and [path for path, _ in source.failures] == [str(tmp_path / "bad.pdf")]
    assert source.failed_ids == ["bad.pdf"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, r"holds no documents of a type that is read; "),
        ({"x.csv": "a,b", ".hidden.txt": "x"}, r"of a type that is read \(1 file\(s\) of other types skipped\)"),
    ],
)
def test_folder_without_documents_is_an_input_error(tmp_path, files, message):
    for name, content in files.items():
        write(tmp_path / name, content)
    with pytest.raises(InputError, match=message):
        read_documents(tmp_path)


# --- inputs that are not read at all ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("table.csv", r"table\.csv: cannot index a \.csv file; give one of: a BEIR folder, \.jsonl, \.parquet"),
        ("noext", r"noext: cannot index a suffix-less file"),
        ("one.pdf", r"one\.pdf: cannot index a \.pdf file; .*put single \.md/\.html/\.pdf files in a folder"),
    ],
)
def test_unsupported_single_files_are_input_errors(tmp_path, name, message):
    with pytest.raises(InputError, match=message):
        read_documents(write(tmp_path / name, "x"))


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"input .*nowhere\.jsonl does not exist; give one of"):
        read_documents(tmp_path / "nowhere.jsonl")
