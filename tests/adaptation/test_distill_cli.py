"""``embedtune distill`` as a user meets it: a static model out, used by the other commands; one line per mistake."""

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from _cli import one_error_line, run_cli
from embedtune.factory import EmbedderSpec, open_provider
from embedtune.textio import read_vectors

SAMPLE = Path(str(resources.files("embedtune") / "data" / "sample"))


def test_distill_writes_a_static_model_and_says_how_to_use_it(static_minilm):
    folder, run = static_minilm.folder, static_minilm.run
    assert f"use it as --model local:{folder}" in run.stdout
    assert "× 64 dims" in run.stdout
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "model2vec" and config["hidden_dim"] == 64
    card = json.loads((folder / "embedtune-card.json").read_text())
    assert card["base_model"] == "local:all-MiniLM-L6-v2" and card["dims"] == 64
    assert 1000 < card["vocabulary"] < 2000  # the small vocabulary, not MiniLM's 30,522 tokens
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_the_static_model_in_embed_compare_index_and_search(static_minilm, tmp_path):
    uri, home = f"local:{static_minilm.folder}", tmp_path / "home"
    texts = tmp_path / "texts.txt"
    texts.write_text("the cat sat on a mat\na dog ran to the car\n")
    embedded = run_cli("embed", texts, "--model", uri, "--out", tmp_path / "v.npy", home=home)
    assert embedded.returncode == 0, embedded.stderr
    assert "(64 dims): 2 new" in embedded.stdout
    _, vectors = read_vectors(tmp_path / "v.npy")
    reference = open_provider(EmbedderSpec(model=uri)).embed(texts.read_text().splitlines())
    np.testing.assert_allclose(vectors, reference, atol=1e-6)

    compared = run_cli("compare", SAMPLE, "--models", uri, "--out-dir", tmp_path / "report", home=home)
    assert compared.returncode == 0, compared.stderr
    report = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert uri in json.dumps(report) and (tmp_path / "report" / "strategy.toml").exists()
    store = tmp_path / "store"
    strategy = tmp_path / "report" / "strategy.toml"
    indexed = run_cli("index", SAMPLE / "corpus.jsonl", "--strategy", strategy, "--store", store, home=home)
    assert indexed.returncode == 0, indexed.stderr
    found = run_cli("search", "how are backups kept", "--store", store, "-k", "3", "--json", home=home)
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)) == 3


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        ("openai:text-embedding-3-small", [], "is not a local model"),
        ("local:bge-small-en-v1.5", [], "needs a download"),
        ("local:multilingual-e5-small", [], "cannot be distilled"),
        ("local:/no/such/model", [], "does not exist"),
        ("local:all-MiniLM-L6-v2", ["--no-pca", "--dims", "64"], "--dims needs PCA"),
        ("local:all-MiniLM-L6-v2", ["--dims", "500"], "more than local:all-MiniLM-L6-v2's 384 dims"),
        ("local:all-MiniLM-L6-v2", ["--remove-tokens", "(["], "is not a regular expression"),
    ],
)
def test_one_line_for_each_mistake(tmp_path, model, options, message):
    result = run_cli("distill", model, "--out", tmp_path / "o", *options, home=tmp_path / "h", timeout=60)
    assert message in one_error_line(result)
    assert not (tmp_path / "o").exists()


def test_refuses_an_output_folder_that_is_not_empty_and_a_static_model_as_base(tmp_path, static_minilm):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    result = run_cli("distill", "local:all-MiniLM-L6-v2", "--out", tmp_path / "o", home=tmp_path / "h", timeout=60)
    assert "exists and is not empty" in one_error_line(result)
    assert (tmp_path / "o" / "keep.txt").read_text() == "mine"
    again = run_cli("distill", f"local:{static_minilm.folder}", "--out", tmp_path / "p", home=tmp_path / "h")
    assert "is already a static model" in one_error_line(again)
