"""``/v1/search`` over a small SciFact store returns what ``embedtune search --json`` prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

import httpx
import pytest
from _serving import KEY, auth, running

from embedtune.evaluation import load_beir
from embedtune.factory import EmbedderSpec, build_embedder
from embedtune.indexer import index_documents, open_retriever
from embedtune.retriever import Retriever
from embedtune.service import Served, ServiceConfig, create_app
from embedtune.stores import open_store
from embedtune.strategy import Strategy

# torch, as the shared model the store is built with: the CLI below must open the same engine.
SPEC = EmbedderSpec(model="local:all-MiniLM-L6-v2", over_limit="truncate", engine="torch")
QUERIES = ["vitamin D deficiency and bone fractures", "aspirin lowers the risk of heart attack"]


@dataclass(frozen=True)
class Doc:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def scifact_store(shared_datasets, minilm, tmp_path_factory):
    """60 SciFact documents built with MiniLM into an embedded store; metadata: title and parity."""
    collection = load_beir(shared_datasets / "scifact", splits=["test"])
    ids = sorted(collection.corpus)[:60]
    docs = [
        Doc(i, collection.documents_text(i), {"title": collection.corpus[i].title, "half": ["even", "odd"][n % 2]})
        for n, i in enumerate(ids)
    ]
    folder = tmp_path_factory.mktemp("scifact-store") / "index"
    store = open_store(str(folder))
    index_documents(docs, Strategy(embedder=SPEC), store, build_embedder(SPEC, provider=minilm))
    store.close()
    return folder


@pytest.fixture(scope="module")
def server(scifact_store, minilm):
    store = open_store(str(scifact_store))
    retriever = open_retriever(store, embedder=build_embedder(SPEC, provider=minilm))
    served = Served(embedder=retriever.embedder, strategy=retriever.strategy, store=store)
    with running(create_app(served, ServiceConfig(keys=(KEY,)))) as running_server:
        yield running_server


def search(server, body: dict) -> dict:
    response = httpx.post(f"{server.url}/v1/search", json=body, headers=auth(), timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_search_returns_the_hits_the_cli_prints(server, scifact_store, tmp_path):
    answer = search(server, {"query": QUERIES, "k": 5})
    assert [result["query"] for result in answer["data"]] == QUERIES
    assert answer["model"] == SPEC.model and answer["strategy"] == Strategy(embedder=SPEC).name
    env = {**os.environ, "EMBEDTUNE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedtune.cli",
            "search",
            QUERIES[0],
            "--store",
            str(scifact_store),
            "-k",
            "5",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert printed.returncode == 0, printed.stderr
    expected = json.loads(printed.stdout)
    hits = answer["data"][0]["hits"]
    assert len(hits) == 5
    assert [{k: v for k, v in hit.items() if k != "score"} for hit in hits] == [
        {k: v for k, v in hit.items() if k != "score"} for hit in expected
    ]
    assert [hit["score"] for hit in hits] == pytest.approx([hit["score"] for hit in expected], abs=1e-6)


def test_search_takes_one_query_and_a_metadata_filter(server, scifact_store, minilm):
    one = search(server, {"query": QUERIES[1], "k": 3, "filter": {"half": "odd"}})
    assert len(one["data"]) == 1 and len(one["data"][0]["hits"]) == 3
    assert all(hit["metadata"]["half"] == "odd" for hit in one["data"][0]["hits"])
    store = open_store(str(scifact_store))
    try:
        library = Retriever(Strategy(embedder=SPEC), store, build_embedder(SPEC, provider=minilm))
        expected = library.search_one(QUERIES[1], 3, where={"half": "odd"})
    finally:
        store.close()
    assert [hit["doc_id"] for hit in one["data"][0]["hits"]] == [hit.doc_id for hit in expected]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": "  "}, "query[0]"),
        ({"query": []}, "query"),
        ({"query": "x", "k": 0}, "k"),
        ({"query": "x", "filter": {"": 1}}, None),
        ({"query": "x", "filter": "lang=en"}, "filter"),
        ({"query": "x", "model": "m"}, "model"),
    ],
)
def test_bad_searches_are_400(server, body, param):
    response = httpx.post(f"{server.url}/v1/search", json=body, headers=auth(), timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
