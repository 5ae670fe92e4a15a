"""``embedtune chunk``: rows true to the input, a summary, and one clear line for each mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from embedtune import cli, factory
from embedtune.engine import CountingEmbedder
from embedtune.textio import read_texts


def run(monkeypatch, capsys, home, *args):
    """The command as ``main`` runs it (errors become one line and exit 2), in this process."""
    monkeypatch.setenv("EMBEDTUNE_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setattr(sys, "argv", ["embedtune", "chunk", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(code, err, message):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]


def read_rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def corpus(tmp_path, shared_datasets):
    """The first 20 SciFact abstracts as a .jsonl file."""
    lines = (shared_datasets / "scifact" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:20]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("spec", ["fixed:size=64,overlap=16", "recursive", "sentence"])
def test_rows_point_into_the_texts_and_stay_under_the_limit(spec, corpus, tmp_path, monkeypatch, capsys, minilm):
    out = tmp_path / "chunks.jsonl"
    code, stdout, _ = run(
        monkeypatch,
        capsys,
        tmp_path / "h",
        corpus,
        "--chunker",
        spec,
        "--max-tokens",
        64,
        "--out",
        out,
    )
    assert code == 0
    texts = read_texts(corpus)
    originals = dict(zip(texts.ids, texts.texts))
    rows = read_rows(out)
    assert {r["doc_id"] for r in rows} == set(originals)
    for row in rows:
        assert set(row) == {"doc_id", "chunk", "start", "end", "tokens", "text"}
        assert originals[row["doc_id"]][row["start"] : row["end"]] == row["text"]
        assert row["tokens"] == minilm.count_tokens(row["text"]) <= 64
    for doc_id in originals:
        assert [r["chunk"] for r in rows if r["doc_id"] == doc_id] == list(
            range(sum(r["doc_id"] == doc_id for r in rows))
        )
    mean = sum(r["tokens"] for r in rows) / len(rows)
    assert f"chunked 20 texts into {len(rows)} chunks" in stdout
    assert f"mean {mean:.1f} tokens, max {max(r['tokens'] for r in rows)}" in stdout


def test_semantic_goes_through_the_cache(tmp_path, monkeypatch, capsys):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(f"Note {i}. The backup of shard {i % 3} finished. Disk {i} is full." for i in range(6)))
    models = []

    def counting_provider(spec):
        models.append(CountingEmbedder(open_provider(spec)))
        return models[-1]

    open_provider = factory.open_provider
    monkeypatch.setattr(factory, "open_provider", counting_provider)
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        code, _, err = run(
            monkeypatch,
            capsys,
            tmp_path / "h",
            path,
            "--chunker",
            "semantic:min_tokens=4",
            "--model",
            "fake:hash-256",
            "--out",
            tmp_path / name,
        )
        assert code == 0, err
        outputs.append(read_rows(tmp_path / name))
    assert sum(models[0].texts.values()) == 18  # 6 texts of 3 sentences: one window each
    assert models[1].calls == 0
    assert outputs[0] == outputs[1]


def test_a_sentence_over_the_limit_is_split_and_said_so(tmp_path, monkeypatch, capsys):
    path = tmp_path / "long.txt"
    path.write_text("A short one. " + " ".join(["unending"] * 200) + ".\nAnother text.\n")
    code, _, err = run(
        monkeypatch,
        capsys,
        tmp_path / "h",
        path,
        "--chunker",
        "sentence",
        "--max-tokens",
        32,
        "--out",
        tmp_path / "c.jsonl",
    )
    assert code == 0
    assert [line for line in err.splitlines() if line.strip()] == [
        "note: 1 sentence longer than 32 tokens was split by tokens"
    ]
    assert all(r["tokens"] <= 32 for r in read_rows(tmp_path / "c.jsonl"))


def test_an_empty_text_names_its_record(tmp_path, monkeypatch, capsys):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"_id": "a", "text": "Some text."}\n{"_id": "b", "text": "  "}\n')
    code, _, err = run(
        monkeypatch,
        capsys,
        tmp_path / "h",
        path,
        "--chunker",
        "fixed",
        "--out",
        tmp_path / "c.jsonl",
    )
    one_error_line(code, err, "text 1 (id 'b') is empty")
    assert not (tmp_path / "c.jsonl").exists()


def test_a_file_that_is_not_utf8(tmp_path, monkeypatch, capsys):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    code, _, err = run(
        monkeypatch,
        capsys,
        tmp_path / "h",
        path,
        "--chunker",
        "fixed",
        "--out",
        tmp_path / "c.jsonl",
    )
    one_error_line(code, err, "is not UTF-8 text (byte 3); convert it to UTF-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--chunker", "recursive", "--max-tokens", "512"],
            "a chunk limit of 512 tokens is above local:all-MiniLM-L6-v2's maximum of 256",
        ),
        (["--chunker", "chapters"], "unknown chunker 'chapters'"),
        (["--chunker", "semantic:rules=iqr"], "chunker semantic has no option 'rules'"),
        (
            ["--chunker", "fixed", "--out", "chunks.csv"],
            "--out chunks.csv: use a .jsonl file name",
        ),
    ],
)
def test_settings_that_cannot_work(args, message, tmp_path, monkeypatch, capsys):
    path = tmp_path / "t.txt"
    path.write_text("Some text.\n")
    if "--out" not in args:
        args = [*args, "--out", tmp_path / "c.jsonl"]
    code, _, err = run(monkeypatch, capsys, tmp_path / "h", path, *args)
    one_error_line(code, err, message)


def test_the_real_command_exits_2_with_one_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Some text.\n")
    env = {
        **os.environ,
        "EMBEDTUNE_HOME": str(tmp_path / "h"),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "300",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedtune.cli",
            "chunk",
            str(path),
            "--chunker",
            "fixed:size=400",
            "--out",
            str(tmp_path / "c.jsonl"),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    one_error_line(result.returncode, result.stderr, "lower size= to 256 or less")
