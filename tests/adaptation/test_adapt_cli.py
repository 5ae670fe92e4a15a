"""``embedtune adapt`` as a user meets it: one error line for each mistake, and a run end to end."""

import json
import re
from importlib import resources
from pathlib import Path

import pytest

from _cli import one_error_line, run_cli

SAMPLE = Path(str(resources.files("embedtune") / "data" / "sample"))


def run(*args, home, timeout=300):
    return run_cli("adapt", *args, home=home, timeout=timeout)


def assert_one_error_line(result, *messages):
    line = one_error_line(result)
    for message in messages:
        assert message in line, line


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path


def test_pairs_naming_unknown_documents(tmp_path):
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"query": f"q{i}", "positive_id": f"x{i}"} for i in range(20)])
    result = run(pairs, "--corpus", SAMPLE, "--out", tmp_path / "o", home=tmp_path / "h")
    assert_one_error_line(result, "20 document id(s) missing from collection 'sample'", "'x0', 'x1', 'x2' and 17 more")


def test_too_few_pairs_hints_at_generating(tmp_path):
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"query": f"q{i}", "positive": f"doc {i}"} for i in range(6)])
    result = run(pairs, "--out", tmp_path / "o", home=tmp_path / "h")
    assert_one_error_line(result, "training pairs", "at least 16", "--generate title")


@pytest.mark.parametrize("model", ["openai:text-embedding-3-small", "ollama:nomic-embed-text"])
def test_api_model_with_finetune_hints_at_the_adapter(tmp_path, model):
    result = run(SAMPLE, "--model", model, "--out", tmp_path / "o", home=tmp_path / "h")
    assert_one_error_line(result, "cannot be fine-tuned", "--method adapter")


def test_folder_that_is_not_a_model(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("not weights")
    result = run(SAMPLE, "--model", f"local:{folder}", "--out", tmp_path / "o", home=tmp_path / "h")
    assert_one_error_line(result, "not a sentence-transformers model")


def test_output_folder_not_empty(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    result = run(SAMPLE, "--out", tmp_path / "o", home=tmp_path / "h")
    assert_one_error_line(result, "exists and is not empty")
    assert (tmp_path / "o" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "option, message",
    [
        (["--method", "lora"], "unknown method"),
        (["--hard-negatives", "random"], "unknown --hard-negatives"),
        (["--matryoshka", "384,big"], "--matryoshka"),
    ],
)
def test_bad_options(tmp_path, option, message):
    result = run(SAMPLE, "--out", tmp_path / "o", *option, home=tmp_path / "h")
    assert_one_error_line(result, message)


def test_adapter_end_to_end_prints_before_and_after(tmp_path):
    result = run(
        SAMPLE, "--model", "fake:hash-256", "--method", "adapter", "--out", tmp_path / "a", home=tmp_path / "h"
    )
    assert result.returncode == 0, result.stderr
    assert "query adapter trained on" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("test nDCG@10: "))
    before, after = (float(x) for x in line.split(": ")[1].split(" (")[0].split(" -> "))
    assert 0 < before <= 1 and 0 < after <= 1
    assert (tmp_path / "a" / "adapter.json").is_file()


def test_generated_pairs_read_no_labels():
    from embedtune.adaptation.workflow import load_pairs

    pairs, collection, note = load_pairs(SAMPLE, generate="title")
    assert len(pairs) >= 16 and {p.source for p in pairs} == {"title"}
    assert all(p.positive_id in collection.corpus for p in pairs)
    assert note["labels_used"] is False and note["consistent"] == len(pairs) <= note["generated"]
    labelled = set(collection.queries.values())
    assert not labelled & {p.query for p in pairs}


def test_fine_tune_end_to_end_writes_a_usable_model_and_says_when_steps_are_few(tmp_path):
    """The sample's 40 train queries make two optimiser steps: the run works, and says that is too few."""
    out = tmp_path / "model"
    result = run(
        SAMPLE,
        *("--model", "local:all-MiniLM-L6-v2", "--out", out, "--max-seq-length", "32"),
        home=tmp_path / "h",
        timeout=900,  # a fine-tune and two test runs: minutes on a loaded 2-core machine
    )
    assert result.returncode == 0, result.stderr
    # Either the trained weights won on dev, or the folder holds the base's and the output says so.
    assert f"use it as --model local:{out}" in result.stdout or (
        f"keep using --model local:all-MiniLM-L6-v2 (--model local:{out} holds the same weights)" in result.stdout
    )
    card = json.loads((out / "embedtune-card.json").read_text())
    assert "test nDCG@10:" in result.stdout and f"only {card['steps']} training steps" in result.stdout
    assert card["data"]["split"] == "train" and card["settings"]["lr"] == 5e-5
    assert card["data"]["dev"] == {
        "queries": "labelled queries whose documents no training pair uses",
        "verified": True,
    }
    assert f"weights sha256 {card['weights_sha256']}" in result.stdout
    assert "unverified" not in result.stdout


def test_generated_pairs_dev_is_unverified_and_the_same_seed_gives_the_same_weights(tmp_path):
    outputs = []
    for name in ("a", "b"):
        result = run(
            SAMPLE,
            *("--generate", "title", "--max-pairs", "40", "--max-seq-length", "32", "--out", tmp_path / name),
            home=tmp_path / "h",
            timeout=900,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    hashes = [re.search(r"weights sha256 ([0-9a-f]{64})", stdout).group(1) for stdout in outputs]  # type: ignore[union-attr]
    card = json.loads((tmp_path / "a" / "embedtune-card.json").read_text())
    assert hashes[0] == hashes[1] == card["weights_sha256"]
    assert "dev nDCG@10 (generated queries: unverified):" in outputs[0]
    assert "dev queries: span queries (another generator) on documents never trained on" in outputs[0]
    assert card["data"]["dev"]["verified"] is False and card["figures"]["dev"]["verified"] is False
    assert card["data"]["max_pairs"] == 40 and card["data"]["train_pairs"] == 40
