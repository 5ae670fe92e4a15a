"""``embedtune serve`` as a user runs it: refusals in one line, a store served, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from _serving import KEY, free_port

from _cli import one_error_line
from embedtune.factory import EmbedderSpec, build_embedder
from embedtune.indexer import index_documents
from embedtune.stores import open_store
from embedtune.strategy import Strategy

SPEC = EmbedderSpec(model="fake:hash-256", over_limit="truncate")


@dataclass(frozen=True)
class Doc:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EMBEDTUNE_API_KEYS"}
    return {**env, "EMBEDTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **extra}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "embedtune.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "refusing to serve on 0.0.0.0 without API keys: set EMBEDTUNE_API_KEYS"),
        (["--host", "192.168.7.7", "--model", "fake:hash-256"], "refusing to serve on 192.168.7.7 without API keys"),
        (["--store", "somewhere", "--model", "fake:hash-256"], "--store serves the store's own strategy and model"),
        (["--keys-file", "/nonexistent/keys"], "cannot read the keys file /nonexistent/keys"),
        (["--store", "/nonexistent/store"], "holds no index"),
    ],
)
def test_refusals_are_one_line_and_exit_non_zero(tmp_path, args, message):
    line = one_error_line(cli("serve", *args, env=env_for(tmp_path)))
    assert message in line


def test_an_ensemble_file_is_served_from_its_store_not_as_a_strategy(tmp_path):
    ensemble = tmp_path / "ensemble.toml"
    ensemble.write_text(
        'version = 1\n[fusion]\nmethod = "rrf"\n[[members]]\n[members.retrieval]\nmode = "bm25"\n'
        '[[members]]\n[members.embedder]\nmodel = "fake:hash-256"\n'
    )
    line = one_error_line(cli("serve", "--strategy", str(ensemble), env=env_for(tmp_path)))
    assert line.endswith("is an ensemble: index it, then serve the store (embedtune serve --store URI)")


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the server did not become ready: {process.communicate(timeout=10)}")
        time.sleep(0.1)


def test_serve_a_store_search_it_like_the_cli_and_stop_cleanly(tmp_path):
    folder = tmp_path / "store"
    store = open_store(str(folder))
    docs = [
        Doc(f"d{i}", f"document {i} about {topic} and more {topic}") for i, topic in enumerate(["cats", "dogs"] * 8)
    ]
    index_documents(docs, Strategy(embedder=SPEC), store, build_embedder(SPEC))
    store.close()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = env_for(tmp_path / "home", EMBEDTUNE_API_KEYS=f"{KEY},sk-another-key")
    process = subprocess.Popen(
        [sys.executable, "-m", "embedtune.cli", "serve", "--store", str(folder), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_healthy(url, process)
        headers = {"Authorization": f"Bearer {KEY}"}
        served = httpx.post(f"{url}/v1/search", json={"query": "dogs", "k": 4}, headers=headers, timeout=30)
        assert served.status_code == 200, served.text
        assert httpx.post(f"{url}/v1/search", json={"query": "dogs"}, timeout=30).status_code == 401
        embedded = httpx.post(f"{url}/v1/embeddings", json={"model": "hash-256", "input": "cats"}, headers=headers)
        assert embedded.status_code == 200
        printed = cli("search", "dogs", "--store", str(folder), "-k", "4", "--json", env=env)
        assert printed.returncode == 0, printed.stderr
        assert served.json()["data"][0]["hits"] == json.loads(printed.stdout)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "serving fake:hash-256 and the store" in err and "(2 API keys; micro-batching on)" in err
    assert '"POST /v1/search HTTP/1.1" 200' in out and "Application shutdown complete" in err  # access log: stdout
    assert KEY not in out + err and "sk-another-key" not in out + err
