"""Fine-tuning MiniLM for real, on a few dozen pairs of the sample collection (seconds, not minutes)."""

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from embedtune.adaptation.finetune import (
    CARD_FILE,
    DevSet,
    dev_set,
    fine_tune,
    record_figures,
)
from embedtune.adaptation.pairs import Pair, pairs_from_qrels, split_dev
from embedtune.adaptation.training import weights_hash
from embedtune.errors import ConfigError, InputError, ModelLoadError
from embedtune.evaluation import load_beir
from embedtune.factory import EmbedderSpec, open_provider
from embedtune.providers.local import weights_revision

TINY = {"batch_size": 16, "max_seq_length": 24, "seed": 0}  # 2 steps of 16 short pairs


@pytest.fixture(scope="module")
def data():
    sample = load_beir(Path(str(resources.files("embedtune") / "data" / "sample")))
    train, dev = split_dev(pairs_from_qrels(sample, "train"), 0.2, seed=0)
    return train[:32], dev


@pytest.fixture(scope="module")
def tuned(data, tmp_path_factory):
    train, dev = data
    out = tmp_path_factory.mktemp("tuned") / "model"
    steps = []
    result = fine_tune(
        "local:all-MiniLM-L6-v2",
        train,
        out_dir=out,
        dev=dev,
        on_progress=lambda task, done, total: steps.append((task, done, total)),
        **TINY,
    )
    return result, steps


def test_fine_tuned_folder_loads_as_local_uri_and_moves_the_vectors(tuned, minilm):
    result, _ = tuned
    assert result.uri == f"local:{result.out_dir}" and result.out_dir.is_absolute()
    embedder = open_provider(EmbedderSpec(model=result.uri))
    texts = ["who gets paged when the primary does not acknowledge?", "rotate the database credentials"]
    after, before = embedder.embed(texts, "query"), minilm.embed(texts, "query")
    assert after.shape == before.shape == (2, 384)
    assert np.abs(after - before).max() > 1e-4  # training changed the weights
    cosines = np.sum(after * before, axis=1)
    assert np.all(cosines > 0.9)  # two small steps at lr 2e-5 nudge, they do not wreck
    assert embedder.max_tokens == 256  # the base's limit, not the short training length


def test_progress_and_dev_figures(tuned):
    result, steps = tuned
    assert result.steps == 2
    assert [s for s in steps if s[0] == "training"][-1] == ("training", 2, 2)
    # Two steps are fewer than a checkpoint's spacing: the base model, then the end of training.
    assert [step for step, _ in result.checkpoints] == [0, 2]
    assert all(0 < figure <= 1 for _, figure in result.checkpoints)
    assert result.dev_before == result.checkpoints[0][1]
    assert result.dev_after == max(figure for _, figure in result.checkpoints)


def test_card_records_data_settings_and_weights(tuned, data):
    result, _ = tuned
    card = json.loads((result.out_dir / CARD_FILE).read_text(encoding="utf-8"))
    assert card["base_model"] == "local:all-MiniLM-L6-v2"
    assert card["data"]["train_pairs"] == len(data[0]) and card["data"]["sources"] == {"labels": len(data[0])}
    assert len(card["data"]["pairs_sha256"]) == 64
    assert card["settings"]["loss"] == "mnrl" and card["settings"]["max_seq_length_training"] == 24
    assert card["seed"] == 0 and card["weights_sha256"] == result.weights_hash
    assert card["figures"]["dev"]["by_checkpoint"] == [list(c) for c in result.checkpoints]
    assert result.weights_hash in (result.out_dir / "README.md").read_text(encoding="utf-8")
    revision = weights_revision(result.out_dir)
    record_figures(result.out_dir, "test", {"ndcg@10": 0.5}, {"ndcg@10": 0.6})
    assert weights_revision(result.out_dir) == revision  # new figures do not void the cached vectors
    card = json.loads((result.out_dir / CARD_FILE).read_text(encoding="utf-8"))
    assert card["figures"]["test"] == {"before": {"ndcg@10": 0.5}, "after": {"ndcg@10": 0.6}}
    assert "| test ndcg@10 | 0.5000 | 0.6000 |" in (result.out_dir / "README.md").read_text(encoding="utf-8")


def test_saved_weights_are_the_hashed_weights(tuned):
    from sentence_transformers import SentenceTransformer

    result, _ = tuned
    reloaded = SentenceTransformer(str(result.out_dir), device="cpu", local_files_only=True)
    assert weights_hash(reloaded) == result.weights_hash


def test_same_seed_same_data_same_weights(tuned, data, tmp_path):
    result, _ = tuned
    train, dev = data
    again = fine_tune("local:all-MiniLM-L6-v2", train, out_dir=tmp_path / "again", dev=dev, **TINY)
    assert again.weights_hash == result.weights_hash


def test_hard_negatives_cached_loss_and_matryoshka_train(data, tmp_path):
    train, _ = data
    # Half the pairs bring a hard negative; the other half get another pair's positive.
    with_negatives = [
        Pair(query=p.query, positive=p.positive, negatives=(train[-1 - i].positive,) * (i % 2))
        for i, p in enumerate(train[:16])
    ]
    result = fine_tune(
        f"local:{_minilm_folder()}",
        with_negatives,
        out_dir=tmp_path / "m",
        batch_size=16,
        max_seq_length=16,
        loss="cached-mnrl",
        mini_batch_size=8,
        matryoshka_dims=[384, 64],
    )
    card = result.card
    assert card["data"]["hard_negatives_per_pair"] == 1 and card["data"]["negatives_filled_at_random"] == 8
    assert card["settings"]["matryoshka_dims"] == [384, 64] and card["settings"]["loss"] == "cached-mnrl"
    assert result.steps == 1 and result.best_step == 1 and result.checkpoints == () and not result.kept_base


def _minilm_folder():
    from embedtune.catalogue import find_card
    from embedtune.providers.local import locate_weights

    return locate_weights(find_card("local:all-MiniLM-L6-v2"))


def test_dev_set_ranks_held_out_queries_among_distractors():
    pairs = [
        Pair(query="a", positive="doc a", positive_id="1"),
        Pair(query="a", positive="doc b", positive_id="2"),
        Pair(query="b", positive="doc c"),
    ]
    dev = dev_set(pairs, documents={str(i): f"other {i}" for i in range(1, 10)}, max_documents=5)
    assert dev.qrels == {"q0": {"1": 1, "2": 1}, "q1": {next(iter(dev.qrels["q1"])): 1}}
    assert dev.queries == {"q0": "a", "q1": "b"}
    assert len(dev.documents) == 5 and dev.documents["1"] == "doc a"
    with pytest.raises(InputError):
        DevSet(queries={"q": "x"}, qrels={"q": {"missing": 1}}, documents={})


@pytest.mark.parametrize(
    "model, error, message",
    [
        ("openai:text-embedding-3-small", ConfigError, "--method adapter"),
        ("ollama:nomic-embed-text", ConfigError, "query adapter"),
    ],
)
def test_api_models_cannot_be_fine_tuned(data, tmp_path, model, error, message):
    with pytest.raises(error, match=message):
        fine_tune(model, data[0], out_dir=tmp_path / "o")


def test_refusals_before_any_training(data, tmp_path):
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="not a sentence-transformers model"):
        fine_tune(str(not_a_model), data[0], out_dir=tmp_path / "o")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        fine_tune("local:all-MiniLM-L6-v2", data[0], out_dir=not_a_model)
    with pytest.raises(InputError, match="--generate"):
        fine_tune("local:all-MiniLM-L6-v2", data[0][:5], out_dir=tmp_path / "o")
    with pytest.raises(ConfigError, match="unknown loss"):
        fine_tune("local:all-MiniLM-L6-v2", data[0], out_dir=tmp_path / "o", loss="triplet")
    assert not (tmp_path / "o").exists()
