"""The [sparse] table of a strategy file: round trip, and one line for each bad input (no model loaded)."""

from __future__ import annotations

import pytest

from embedtune.catalogue import find_card
from embedtune.errors import ConfigError
from embedtune.factory import EmbedderSpec, open_provider
from embedtune.sparse import SparseSpec
from embedtune.strategy import Mode, Strategy

SPARSE_TOML = """version = 1

[sparse]
model = "sparse:splade-tiny"
max_batch = 16

[retrieval]
mode = "sparse"
depth = 50
"""


def test_sparse_strategy_round_trips_through_toml():
    strategy = Strategy.from_toml(SPARSE_TOML)
    assert strategy.mode is Mode.SPARSE
    assert strategy.sparse == SparseSpec(model="sparse:splade-tiny", max_batch=16)
    assert strategy.embedder is None and strategy.depth == 50
    assert (strategy.uses_sparse, strategy.uses_vectors, strategy.uses_lexical) == (True, False, False)
    assert strategy.name == "sparse:splade-tiny"
    again = Strategy.from_toml(strategy.to_toml())
    assert again == strategy and again.fingerprint() == strategy.fingerprint()
    assert Strategy.from_toml(SPARSE_TOML.replace('mode = "sparse"\n', "")).mode is Mode.SPARSE  # implied by [sparse]


def test_a_folder_by_path_is_a_sparse_model(tmp_path):
    assert SparseSpec(model=f"sparse:{tmp_path}").model == f"sparse:{tmp_path}"
    assert find_card(f"sparse:{tmp_path}") is None  # compare --models takes it as a folder


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[sparse]\nmodel = "sparse:splade-huge"\n', "unknown sparse model 'sparse:splade-huge'"),
        ('[sparse]\nmodel = "local:all-MiniLM-L6-v2"\n', "must be a sparse model URI"),
        ("[sparse]\nmax_batch = 8\n", "[sparse] needs a model"),
        ('[sparse]\nmodel = "sparse:splade-tiny"\nmax_batch = 0\n', "sparse.max_batch must be a whole number"),
        ('[sparse]\nmodel = "sparse:splade-tiny"\nlimit = 3\n', "unknown key sparse.limit"),
        ('[retrieval]\nmode = "sparse"\n', "a sparse strategy needs a [sparse] table"),
        (
            '[embedder]\nmodel = "local:all-MiniLM-L6-v2"\n[sparse]\nmodel = "sparse:splade-tiny"\n'
            '[retrieval]\nmode = "sparse"\n',
            "drop its [embedder] table",
        ),
        (
            '[embedder]\nmodel = "local:all-MiniLM-L6-v2"\n[sparse]\nmodel = "sparse:splade-tiny"\n',
            "applies to retrieval.mode = 'sparse', not dense",
        ),
        ('[embedder]\nmodel = "sparse:splade-tiny"\n', "name it in a [sparse] table"),
        ('[sparse]\nmodel = "sparse:splade-tiny"\n[vectors]\nprecision = "int8"\n', "stores no dense vectors"),
        (
            '[sparse]\nmodel = "sparse:splade-tiny"\n[chunking]\nchunker = "recursive"\n',
            "a sparse strategy indexes whole",
        ),
    ],
)
def test_bad_sparse_strategies_are_one_line(text, says):
    with pytest.raises(ConfigError) as caught:
        Strategy.from_toml("version = 1\n" + text, source="s.toml")
    message = str(caught.value)
    assert message.startswith("s.toml: ") and says in message and "\n" not in message


def test_a_sparse_model_is_no_embedder():
    with pytest.raises(ConfigError, match=r"learned sparse model, not an embedder"):
        open_provider(EmbedderSpec(model="sparse:splade-tiny"))


def test_a_store_that_cannot_keep_the_sparse_index_is_refused_in_one_line(tmp_path):
    from types import SimpleNamespace

    from embedtune.sparse.side import check_sparse_store
    from embedtune.stores.embedded import EmbeddedStore

    check_sparse_store(EmbeddedStore(tmp_path / "store"))
    with pytest.raises(ConfigError, match=r"embedded, PostgreSQL or sharded store; x is none of them: index into"):
        check_sparse_store(SimpleNamespace(location="x"))  # type: ignore[arg-type]
