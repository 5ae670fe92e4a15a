"""Fast engines for local models (ONNX Runtime, int8, OpenVINO) against torch, on real MiniLM.

One engines folder serves the module, so MiniLM is exported once; a test that needs a fresh
export or a fresh choice gets its own folder.
"""

import importlib.util
import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from embedtune.engine import BatchingEmbedder
from embedtune.errors import EngineQualityError, MissingDependencyError, ModelLoadError
from embedtune.factory import EmbedderSpec, open_provider
from embedtune.providers import engines
from embedtune.providers.engines import Artefacts, Engine
from embedtune.providers.local import SentenceTransformerEmbedder

TEXTS = [
    "short",
    "Embeddings turn text into vectors for retrieval.",
    "Rollbacks must finish within five minutes of a failed deploy; " * 6,
    "A query?",
    "The quick brown fox jumps over the lazy dog, and then it takes a long nap in the afternoon sun.",
    "tokens " * 300,  # over MiniLM's 256: truncated the same way by every engine
]


@pytest.fixture(scope="module")
def engines_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


def _open(minilm, engine, engines_dir) -> SentenceTransformerEmbedder:
    """MiniLM on ``engine``, sharing the torch fixture's loaded weights for exports and probes."""
    embedder = SentenceTransformerEmbedder(
        minilm._source,
        name=minilm.name,
        dim=minilm.dim,
        max_tokens=minilm.max_tokens,
        engine=engine,
        engines_dir=engines_dir,
    )
    embedder._load = minilm._load  # the same weights; loading them again costs seconds
    return embedder


def _cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_the_probe_judges_texts_at_the_token_limit_as_well_as_short_ones(minilm):
    texts = engines.probe_texts(minilm.max_tokens)
    assert texts == engines.probe_texts(minilm.max_tokens) and len(texts) == engines.PROBE_TEXTS
    tokens = [minilm.count_tokens(text) for text in texts]
    assert sum(count >= minilm.max_tokens for count in tokens) == engines.PROBE_LONG_TEXTS
    assert sum(count <= 32 for count in tokens) >= engines.PROBE_TEXTS // 4  # queries and short documents
    assert len(set(texts)) == len(texts)
    # A model that reads further gets longer probe texts: 384 words are over 384 tokens here too.
    longer = [minilm.count_tokens(text) for text in engines.probe_texts(384)]
    assert sum(count >= 384 for count in longer) == engines.PROBE_LONG_TEXTS


def test_calibration_shares_no_document_with_the_probe():
    for max_tokens in (256, 384, 512):
        probe = engines.probe_texts(max_tokens)
        calibration = engines.calibration_texts(max_tokens)
        assert len(calibration) >= 100  # enough to calibrate on
        # a calibration text is a document's opening or a query: none of it appears in a probe text
        openings = {" ".join(text.split()[:12]) for text in calibration}
        assert not [opening for opening in openings if any(opening in text for text in probe)]


def test_figures_remembered_on_another_probe_are_not_reused(tmp_path, monkeypatch):
    """The decisions file is keyed by the probe's texts: figures from the short probe that let
    mpnet's OpenVINO int8 through are measured again, never read back."""
    artefacts = Artefacts(tmp_path, "weights", tmp_path, 256, lambda: pytest.fail("no model is loaded"))
    current = engines.probe_texts(256)
    short_probe = [text for text in current if len(text.split()) < 256]
    monkeypatch.setattr(engines, "probe_texts", lambda max_tokens: short_probe)
    artefacts.remember(**{"openvino-int8": {"mean_cosine": 0.9904, "min_cosine": 0.95, "texts_per_s": 9.0}})
    stale = artefacts.decisions_path
    monkeypatch.undo()

    assert artefacts.decisions_path != stale and stale.exists() and artefacts.measured() == {}
    measured = []

    def measure(runner, artefacts):
        measured.append(runner)
        return engines.Probe(mean_cosine=0.966, min_cosine=0.91, texts_per_s=9.0)

    monkeypatch.setattr(engines, "open_runner", lambda engine, artefacts, label: label)
    monkeypatch.setattr(engines, "measure", measure)
    with pytest.raises(EngineQualityError) as refused:
        engines.check_quality(Engine.OPENVINO_INT8, artefacts, "local:x")
    assert measured == ["openvino-int8"]
    message = str(refused.value)
    assert "\n" not in message and "mean cosine 0.9660" in message
    assert f"{engines.PROBE_TEXTS} probe texts, {engines.PROBE_LONG_TEXTS} of them at its 256-token limit" in message


@pytest.mark.parametrize("engine", ["onnx", "openvino"])
def test_fast_engine_matches_torch_in_input_order(minilm, engines_dir, engine):
    fast = _open(minilm, engine, engines_dir)
    reference = minilm.embed(TEXTS)
    vectors = fast.embed(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    assert _cosines(vectors, reference).min() >= 0.999
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Reversed input, one text at a time and as a batch: the rows follow the input.
    backwards = fast.embed(TEXTS[::-1])
    assert _cosines(backwards[::-1], vectors).min() >= 0.9999
    assert _cosines(fast.embed(TEXTS[2:3]), vectors[2:3]).min() >= 0.9999
    assert fast.embed([], "query").shape == (0, minilm.dim)
    # Prefixes go through the engine as through torch.
    assert fast.count_tokens(TEXTS[1]) == minilm.count_tokens(TEXTS[1])


@pytest.mark.parametrize("engine", ["onnx", "openvino"])
def test_a_stream_of_batches_tokenises_ahead_and_equals_one_call_per_batch(minilm, engines_dir, engine, monkeypatch):
    fast = _open(minilm, engine, engines_dir)
    batches = [TEXTS[i : i + 2] for i in range(0, len(TEXTS), 2)]
    one_by_one = [fast.embed(batch, "query") for batch in batches]
    runner = fast._engine_runner(fast.resolved_engine())
    threads = []
    tokenise = runner._feed

    def watched(texts):
        threads.append(threading.current_thread().name)
        return tokenise(texts)

    monkeypatch.setattr(runner, "_feed", watched)
    streamed = list(fast.embed_batches(iter(batches), "query"))
    assert [v.shape for v in streamed] == [v.shape for v in one_by_one]
    assert _cosines(np.concatenate(streamed), np.concatenate(one_by_one)).min() >= 0.99999
    assert len(threads) == len(batches) and all(name.startswith("embedtune-tokenize") for name in threads)
    # Through the batcher, as every stack runs it: the same rows, in input order.
    stacked = BatchingEmbedder(fast, max_batch=2).embed(TEXTS, "query")
    assert _cosines(stacked, np.concatenate(one_by_one)).min() >= 0.99999


def test_fingerprint_names_the_engine_and_torch_keeps_its_own(minilm, engines_dir):
    prints = {engine: _open(minilm, engine, engines_dir).fingerprint() for engine in ("torch", "onnx", "openvino")}
    assert len(set(prints.values())) == 3
    assert prints["torch"] == minilm.fingerprint() and "engine=" not in prints["torch"]
    assert prints["onnx"].endswith("|engine=onnx")
    assert "|engine=openvino-" in prints["openvino"]  # with the precision it runs in here


def test_export_happens_once_per_weights(minilm, engines_dir, monkeypatch):
    first = _open(minilm, "onnx", engines_dir)
    first.embed(TEXTS[:2])
    exported = Artefacts(Path(minilm._source), minilm.revision, engines_dir, minilm.max_tokens, minilm._load).dir
    stamp = (exported / "model.onnx").stat().st_mtime_ns

    def no_second_export(self):
        raise AssertionError("exported again")

    monkeypatch.setattr(Artefacts, "_export", no_second_export)
    again = _open(minilm, "onnx", engines_dir)
    np.testing.assert_allclose(again.embed(TEXTS[:2]), first.embed(TEXTS[:2]), atol=1e-6)
    assert (exported / "model.onnx").stat().st_mtime_ns == stamp


def test_int8_is_offered_only_when_its_quality_check_passes(minilm, engines_dir, monkeypatch):
    int8 = _open(minilm, "onnx-int8", engines_dir)
    vectors = int8.embed(TEXTS)
    assert int8.engine == "onnx-int8" and int8.fingerprint().endswith("|engine=onnx-int8")
    assert _cosines(vectors, minilm.embed(TEXTS)).mean() >= 0.98  # the gate's probe asks 0.99 on its texts
    measured = json.loads(next(engines_dir.rglob("machine-*.json")).read_text())["onnx-int8"]
    assert measured["mean_cosine"] >= engines.INT8_MEAN_COSINE

    # A bar it cannot reach: refused in one line that gives the cosine it reached.
    monkeypatch.setattr(engines, "INT8_MEAN_COSINE", 0.99999)
    with pytest.raises(EngineQualityError) as refused:
        _open(minilm, "onnx-int8", engines_dir).fingerprint()
    message = str(refused.value)
    assert "\n" not in message and f"mean cosine {measured['mean_cosine']:.4f}" in message
    assert "onnx-int8" in message and "needs ≥ 0.99999" in message


def test_openvino_int8_is_calibrated_off_the_probe_gated_and_kept(minilm, engines_dir, monkeypatch):
    assert not set(engines.calibration_texts(minilm.max_tokens)) & set(engines.probe_texts(minilm.max_tokens))
    int8 = _open(minilm, "openvino-int8", engines_dir)
    vectors = int8.embed(TEXTS)
    assert int8.engine == "openvino-int8" and engines.engine_of_label(int8.engine) is Engine.OPENVINO_INT8
    assert int8.fingerprint() not in {_open(minilm, e, engines_dir).fingerprint() for e in ("openvino", "onnx-int8")}
    assert _cosines(vectors, minilm.embed(TEXTS)).mean() >= 0.98  # the gate's probe asks 0.99 on its texts
    measured = json.loads(next(engines_dir.rglob("machine-*.json")).read_text())["openvino-int8"]
    assert measured["mean_cosine"] >= engines.INT8_MEAN_COSINE

    # Quantised once per weights: a second open reads the saved model.
    monkeypatch.setattr(Artefacts, "_quantise_openvino", lambda *a: pytest.fail("quantised again"))
    np.testing.assert_allclose(_open(minilm, "openvino-int8", engines_dir).embed(TEXTS), vectors, atol=1e-5)

    monkeypatch.setattr(engines, "INT8_MEAN_COSINE", 0.99999)
    with pytest.raises(EngineQualityError) as refused:
        _open(minilm, "openvino-int8", engines_dir).fingerprint()
    message = str(refused.value)
    assert "\n" not in message and f"mean cosine {measured['mean_cosine']:.4f}" in message


@pytest.mark.parametrize(
    ("engine", "module", "extra"),
    [("onnx", "onnxruntime", "onnx"), ("openvino", "openvino", "openvino"), ("openvino-int8", "nncf", "openvino")],
)
def test_an_engine_that_is_not_installed_names_its_extra(minilm, monkeypatch, engine, module, extra):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(MissingDependencyError) as missing:
        open_provider(EmbedderSpec(model="local:all-MiniLM-L6-v2", engine=engine))
    assert f'pip install "embedtune[{extra}]"' in str(missing.value) and "\n" not in str(missing.value)


def test_an_engine_needs_the_folder_on_disk(minilm):
    with pytest.raises(ModelLoadError, match="engine onnx needs the model's folder"):
        SentenceTransformerEmbedder(
            "sentence-transformers/not-on-disk", name="local:x", dim=8, max_tokens=8, engine="onnx"
        )


def test_auto_picks_a_faithful_engine_says_which_and_remembers(minilm, engines_dir, monkeypatch, caplog, tmp_path):
    # Its own folder for the choice; the export and torch's probe vectors are copied in, not redone.
    exported = Artefacts(Path(minilm._source), minilm.revision, engines_dir, minilm.max_tokens, minilm._load)
    exported.export()
    exported.reference()
    own = Artefacts(Path(minilm._source), minilm.revision, tmp_path, minilm.max_tokens, minilm._load)
    own.dir.mkdir(parents=True)
    for path in [exported.onnx_path, exported.meta_path, *exported.dir.glob("probe-*.npy")]:
        (own.dir / path.name).write_bytes(path.read_bytes())

    with caplog.at_level(logging.INFO, logger="embedtune.engines"):
        auto = _open(minilm, "auto", tmp_path)
        chosen = auto.engine
    assert chosen in ("torch", "onnx") or chosen.startswith("openvino-")
    assert f"engine auto chose {chosen}" in caplog.text
    assert _cosines(auto.embed(TEXTS), minilm.embed(TEXTS)).min() >= 0.999
    assert auto.fingerprint() == _open(minilm, chosen.partition("-")[0], engines_dir).fingerprint()

    # Remembered for this model and machine: the next open measures nothing.
    monkeypatch.setattr(engines, "measure", lambda *a: pytest.fail("measured again"))
    monkeypatch.setattr(Artefacts, "torch_speed", lambda self: pytest.fail("timed torch again"))
    assert _open(minilm, "auto", tmp_path).engine == chosen


def test_auto_without_fast_engines_runs_torch(minilm, monkeypatch, tmp_path):
    monkeypatch.setattr(engines, "_installed", lambda engine: engine is Engine.TORCH)
    monkeypatch.setattr(Artefacts, "torch_speed", lambda self: 1.0)  # nothing to race it against
    auto = _open(minilm, "auto", tmp_path)
    assert auto.engine == "torch" and auto.fingerprint() == minilm.fingerprint()


def test_openvino_falls_back_to_f32_when_its_default_precision_drifts(minilm, engines_dir, monkeypatch, caplog):
    default = engines.engine_label(Engine.OPENVINO)
    if default == engines.OPENVINO_F32:
        pytest.skip("this CPU runs OpenVINO in f32 already: nothing to fall back from")
    folder = engines_dir / "fallback"
    folder.mkdir()
    probe = engines.FAITHFUL_MIN_COSINE

    # The default precision is made to miss the bar by recording its probe just under it.
    real_measure = engines.measure

    def drifting(runner, artefacts):
        measured = real_measure(runner, artefacts)
        if runner.label == default:
            measured = engines.Probe(mean_cosine=probe - 1e-4, min_cosine=probe - 1e-4, texts_per_s=1.0)
            artefacts.remember(**{default: measured.__dict__})
        return measured

    monkeypatch.setattr(engines, "measure", drifting)
    with caplog.at_level(logging.INFO, logger="embedtune.engines"):
        fast = _open(minilm, "openvino", folder)
        vectors = fast.embed(TEXTS)
    assert fast.engine == engines.OPENVINO_F32 and fast.fingerprint().endswith("|engine=openvino-f32")
    assert _cosines(vectors, minilm.embed(TEXTS)).min() >= 0.9999  # f32 is faithful, not merely past the bar
    assert any("running OpenVINO in f32" in r.getMessage() for r in caplog.records)
