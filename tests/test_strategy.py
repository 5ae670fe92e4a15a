"""The Strategy value and its TOML file: round trips, and one line for every bad key or value."""

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from embedtune.errors import ConfigError
from embedtune.factory import EmbedderSpec
from embedtune.strategy import STRATEGY_VERSION, Fusion, Mode, Precision, Strategy, vector_options

MINILM = EmbedderSpec(model="local:all-MiniLM-L6-v2", over_limit="truncate")


def hybrid(**changes) -> Strategy:
    settings = {"embedder": MINILM, "mode": "hybrid", "fusion": "convex", "alpha": 0.45, **changes}
    return Strategy(**settings)


def test_a_convex_hybrid_round_trips_through_its_file(tmp_path):
    strategy = hybrid(chunker="fixed:size=200,overlap=50", chunk_score="sum2", precision="float16", depth=200)
    path = strategy.save(tmp_path / "s" / "strategy.toml", comment="picked on train\nnDCG@10 0.73")
    text = path.read_text()
    assert text.startswith("# picked on train\n# nDCG@10 0.73\nversion = 1\n")
    assert Strategy.load(path) == strategy
    data = tomllib.loads(text)
    assert data["embedder"] == {"model": "local:all-MiniLM-L6-v2", "over_limit": "truncate"}
    assert data["retrieval"] == {
        "mode": "hybrid",
        "fusion": "convex",
        "alpha": 0.45,
        "normalization": "minmax",
        "depth": 200,
    }
    assert data["vectors"] == {"precision": "float16"}
    assert strategy.mode is Mode.HYBRID and strategy.fusion is Fusion.CONVEX and strategy.precision is Precision.FLOAT16


def test_bm25_dense_and_rrf_round_trip_and_name_themselves():
    bm25 = Strategy(mode="bm25")
    dense = Strategy(embedder=EmbedderSpec(model="fake:hash-256", dims=128, query_prefix="q: "))
    rrf = Strategy(embedder=MINILM, mode="hybrid", fusion="rrf", rrf_k=30, chunker="recursive")
    for strategy in (bm25, dense, rrf):
        assert Strategy.from_toml(strategy.to_toml()) == strategy
    assert (bm25.name, dense.name) == ("bm25", "fake:hash-256")
    assert rrf.name == "local:all-MiniLM-L6-v2 @ recursive + bm25 (rrf)"
    assert "embedder" not in bm25.to_dict() and "rrf_k" in rrf.to_dict()["retrieval"]


@given(
    alpha=st.floats(0.0, 1.0),
    depth=st.integers(1, 10_000),
    prefix=st.text(max_size=12),
    precision=st.sampled_from(["float32", "float16", "int8", "binary"]),
    dims=st.one_of(st.none(), st.integers(1, 64)),
    reduction=st.sampled_from(["truncate", "pca"]),
    rescore=st.integers(1, 50),
)
def test_any_valid_strategy_round_trips(alpha, depth, prefix, precision, dims, reduction, rescore):
    strategy = hybrid(
        alpha=alpha,
        depth=depth,
        precision=precision,
        dims=dims,
        reduction=reduction if dims is not None else "truncate",
        rescore=rescore if precision == "binary" else 4,
        embedder=EmbedderSpec(model="fake:hash-64", document_prefix=prefix),
    )
    assert Strategy.from_toml(strategy.to_toml()) == strategy
    assert Strategy.from_toml(strategy.to_toml()).fingerprint() == strategy.fingerprint()


def test_index_settings_ignore_query_time_choices_and_how_the_model_is_fed():
    base = hybrid()
    same_index = [
        hybrid(alpha=0.9),
        hybrid(fusion="rrf", alpha=None),
        hybrid(depth=50),
        hybrid(embedder=EmbedderSpec(model=MINILM.model, over_limit="truncate", max_batch=8, concurrency=2)),
    ]
    for other in same_index:
        assert other.index_settings() == base.index_settings()
        assert other.fingerprint() != base.fingerprint()
    for other in (
        hybrid(chunker="recursive"),
        hybrid(precision="float16"),
        hybrid(precision="int8"),
        hybrid(precision="binary"),
        hybrid(dims=128),
        hybrid(dims=128, reduction="pca"),
        hybrid(embedder=EmbedderSpec(model=MINILM.model, over_limit="truncate", dims=256)),
    ):
        assert other.index_settings() != base.index_settings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('version = 1\n[retrieval]\nmode = "dense"\ndpeth = 5\n', "unknown key retrieval.dpeth"),
        ('version = 1\ncolour = "red"\n', "unknown key 'colour'"),
        ('version = 1\n[embedder]\nmodel = "fake:hash-64"\nsize = 3\n', "unknown key embedder.size"),
        ('version = 2\n[retrieval]\nmode = "bm25"\n', "version 2; this embedtune reads version 1"),
        ('[retrieval]\nmode = "bm25"\n', "has no version key"),
        (
            'version = 1\n[retrieval]\nmode = "colbert"\n',
            "retrieval.mode must be dense | bm25 | hybrid | sparse, not 'colbert'",
        ),
        (
            'version = 1\n[embedder]\nmodel = "fake:hash-64"\n[vectors]\nprecision = "int4"\n',
            "vectors.precision must be",
        ),
        ('version = 1\n[embedder]\nmodel = "fake:hash-64"\n[retrieval]\nmode = "hybrid"\n', "needs retrieval.fusion"),
        (
            'version = 1\n[embedder]\nmodel = "fake:hash-64"\n[retrieval]\nmode = "hybrid"\nfusion = "convex"\n',
            "convex fusion needs retrieval.alpha",
        ),
        (
            'version = 1\n[embedder]\nmodel = "fake:hash-64"\n[retrieval]\nmode = "hybrid"\nfusion = "convex"\nalpha = 1.5\n',
            "retrieval.alpha must be a number between 0 and 1",
        ),
        ('version = 1\n[retrieval]\nmode = "dense"\n', "needs an [embedder] table"),
        ('version = 1\n[embedder]\nmodel = "nowhere:x"\n', "is not a model URI"),
        ('version = 1\n[embedder]\nmodel = "fake:hash-64"\n[chunking]\nchunker = "paragraphs"\n', "unknown chunker"),
        ('version = 1\n[embedder]\nmodel = "fake:hash-64"\n[chunking]\nscore = "mean"\n', "unknown chunk score"),
        ('version = 1\n[embedder]\nmodel = "fake:hash-64"\n[retrieval]\ndepth = 0\n', "retrieval.depth must be"),
        ("version = 1\nembedder = 3\n", "embedder must be a table"),
        (
            'version = 1\n[embedder]\nmodel = "fake:hash-64"\n[vectors]\nreduction = "pca"\n',
            "vectors.reduction needs vectors.dims",
        ),
        ('version = 1\n[embedder]\nmodel = "fake:hash-64"\n[vectors]\ndims = 0\n', "vectors.dims must be"),
        (
            'version = 1\n[embedder]\nmodel = "fake:hash-64"\n[vectors]\ndims = 8\nreduction = "svd"\n',
            "vectors.reduction must be truncate | pca",
        ),
        ('version = 1\n[retrieval]\nmode = "bm25"\n[vectors]\ndims = 8\n', "a bm25 strategy stores no vectors"),
        ("version = = 1\n", "is not valid TOML"),
    ],
)
def test_bad_files_are_refused_in_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "strategy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Strategy.load(path)
    line = str(caught.value)
    assert message in line and "\n" not in line
    assert line.startswith(str(path))


def test_a_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; write one with embedtune compare"):
        Strategy.load(tmp_path / "nowhere.toml")


def test_the_version_written_is_the_version_read():
    assert tomllib.loads(Strategy(mode="bm25").to_toml())["version"] == STRATEGY_VERSION


def test_an_engine_round_trips_names_the_strategy_and_changes_the_index():
    onnx = Strategy(embedder=EmbedderSpec(model=MINILM.model, engine="onnx-int8"))
    assert 'engine = "onnx-int8"' in onnx.to_toml()
    assert Strategy.from_toml(onnx.to_toml()) == onnx
    assert onnx.name == "local:all-MiniLM-L6-v2?engine=onnx-int8"
    auto = Strategy(embedder=EmbedderSpec(model=MINILM.model))
    assert "engine" not in auto.to_toml() and auto.name == "local:all-MiniLM-L6-v2"
    # int8 vectors are other vectors: a store built with one engine is not another's.
    assert onnx.index_settings() != auto.index_settings()


def test_how_deep_binary_rescores_is_a_query_time_choice():
    assert hybrid(precision="binary", rescore=9).index_settings() == hybrid(precision="binary").index_settings()
    with pytest.raises(ConfigError, match="vectors.rescore applies to binary vectors only"):
        hybrid(rescore=9)


def test_vectors_table_round_trips_and_names_itself():
    strategy = Strategy(embedder=MINILM, precision="binary", dims=128, reduction="pca", rescore=8)
    data = tomllib.loads(strategy.to_toml())
    assert data["vectors"] == {"precision": "binary", "dims": 128, "reduction": "pca", "rescore": 8}
    assert Strategy.from_toml(strategy.to_toml()) == strategy
    assert strategy.name == f"{MINILM.model} [pca=128+binary+rescore=8]"
    assert tomllib.loads(Strategy(embedder=MINILM).to_toml())["vectors"] == {"precision": "float32"}


@pytest.mark.parametrize(
    ("text", "options"),
    [
        ("float32", {"precision": "float32"}),
        ("int8", {"precision": "int8"}),
        ("dims=256", {"dims": 256, "reduction": "truncate"}),
        ("pca=64+int8", {"dims": 64, "reduction": "pca", "precision": "int8"}),
        ("binary+rescore=10", {"precision": "binary", "rescore": 10}),
    ],
)
def test_the_short_form_of_vector_settings_reads_and_writes_back(text, options):
    assert vector_options(text) == options
    assert Strategy(embedder=MINILM, **vector_options(text)).vectors_label == text


@pytest.mark.parametrize("text", ["int4", "pca=", "dims=x", "pca=64+sparse", ""])
def test_an_unknown_vector_setting_is_one_line(text):
    with pytest.raises(ConfigError, match="unknown vector setting") as caught:
        vector_options(text)
    assert "\n" not in str(caught.value)


# -- folders a file names ------------------------------------------------------------------------

FOLDERS = """version = 1
[embedder]
model = "local:./models/ft"
adapter = "adapter"
[rerank]
model = "reranker/"
"""


def test_relative_folders_in_a_strategy_file_are_the_files_folders_wherever_it_is_read(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "s.toml").write_text(FOLDERS)
    monkeypatch.chdir(tmp_path)  # elsewhere than the file: the working directory plays no part
    strategy = Strategy.load("conf/s.toml")
    assert strategy.rerank is not None and strategy.embedder is not None
    assert strategy.rerank.model == str(conf / "reranker")
    assert strategy.embedder.model == f"local:{conf / 'models' / 'ft'}"
    assert strategy.embedder.adapter == str(conf / "adapter")


def test_absolute_folders_and_catalogued_names_in_a_strategy_file_are_kept(tmp_path):
    ce, adapter = tmp_path / "elsewhere" / "ce", tmp_path / "a"
    path = tmp_path / "conf" / "s.toml"
    path.parent.mkdir()
    path.write_text(
        f'version = 1\n[embedder]\nmodel = "local:all-MiniLM-L6-v2"\nadapter = "{adapter}"\n[rerank]\nmodel = "{ce}"\n'
    )
    strategy = Strategy.load(path)
    assert strategy.rerank is not None and strategy.rerank.model == str(ce)
    assert strategy.embedder == EmbedderSpec(model="local:all-MiniLM-L6-v2", adapter=str(adapter))


def test_a_strategy_saved_elsewhere_writes_its_folders_relative_to_the_file(tmp_path, monkeypatch):
    from embedtune.search.rerank import RerankSpec

    monkeypatch.chdir(tmp_path)
    held = Strategy(
        embedder=EmbedderSpec(model="local:runs/ft", adapter="runs/adapter"),
        rerank=RerankSpec(model="runs/reranker"),
    )
    path = held.save(tmp_path / "out" / "s.toml")
    data = tomllib.loads(path.read_text())
    assert data["rerank"]["model"] == "../runs/reranker"
    assert data["embedder"]["model"] == "local:../runs/ft" and data["embedder"]["adapter"] == "../runs/adapter"
    again = Strategy.load(path)
    assert again.rerank is not None and again.rerank.model == str(tmp_path / "runs" / "reranker")
    assert again.embedder == EmbedderSpec(model=f"local:{tmp_path}/runs/ft", adapter=str(tmp_path / "runs" / "adapter"))


def test_an_ensemble_files_members_name_folders_relative_to_it_too(tmp_path):
    from embedtune.ensemble import Ensemble, load_strategy

    path = tmp_path / "e.toml"
    path.write_text(
        'version = 1\n[fusion]\nmethod = "rrf"\n[[members]]\n[members.retrieval]\nmode = "bm25"\n'
        '[[members]]\n[members.embedder]\nmodel = "local:./ft"\n'
    )
    ensemble = load_strategy(path)
    assert isinstance(ensemble, Ensemble)
    assert ensemble.members[1].embedder == EmbedderSpec(model=f"local:{tmp_path / 'ft'}")
