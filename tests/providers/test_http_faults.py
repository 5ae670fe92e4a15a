"""The HTTP stack against the fault-injecting server on loopback: real sockets, real failures."""

import logging
import os
import sqlite3

import numpy as np
import pytest

from _cli import run_cli as cli
from embedtune.engine import CountingEmbedder, close_stack
from embedtune.engine.http import RetryPolicy
from embedtune.errors import AuthenticationError, InvalidInputError
from embedtune.factory import EmbedderSpec, build_embedder, open_provider
from embedtune.providers.fake import HashEmbedder
from embedtune.testing.fault_server import FaultConfig, FaultServer

SECRET = "sk-live-0123456789abcdefSECRET"
FAST_RETRIES = RetryPolicy(max_attempts=30, base_delay=0.005, max_delay=0.1)


def test_ten_thousand_texts_at_a_30_percent_fault_rate(tmp_path):
    faults = FaultConfig(
        seed=7,
        rate_429=0.06,
        rate_500=0.04,
        rate_503=0.04,
        rate_hang=0.03,
        rate_drop=0.04,
        rate_malformed=0.03,
        rate_wrong_rows=0.03,
        rate_nan=0.03,
        retry_after_s=0.01,
        hang_s=2.0,
        shuffle_rows=True,
    )
    texts = [f"ticket {i} concerns shard {i % 97} and replica {i % 5} of region {i % 11}" for i in range(10_000)]
    with FaultServer(faults) as server:
        spec = EmbedderSpec(
            model="openai:fault-model", base_url=f"{server.url}/v1", max_batch=250, concurrency=4, timeout=0.5
        )
        provider = open_provider(spec)
        provider.retry = FAST_RETRIES
        counted = CountingEmbedder(provider)
        stack = build_embedder(spec, cache=tmp_path / "cache.sqlite", provider=counted)
        vectors = stack.embed(texts)
        stats = server.stats
        again = stack.embed(texts[::-1])
        requests_after_rerun = sum(server.stats.requests.values())
        close_stack(stack)

    np.testing.assert_array_equal(vectors, HashEmbedder(dim=64).embed(texts))  # order kept, nothing lost
    np.testing.assert_array_equal(again, vectors[::-1])
    assert set(counted.texts.values()) == {1} and len(counted.texts) == len(texts)  # each text asked once
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:
        assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == len(texts)  # no duplicate rows
    assert requests_after_rerun == sum(stats.requests.values())  # the rerun came from the cache
    for kind in ("429", "500", "503", "hang", "drop", "malformed", "wrong_rows", "nan"):
        assert stats.faults[kind] > 0, kind
    assert provider.retries == sum(stats.faults.values()) - stats.faults["slow"]


def test_wrong_key_and_a_bad_input_are_one_line_and_the_key_never_shows(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with FaultServer(FaultConfig(api_key=SECRET)) as server:
        base = f"{server.url}/v1"
        (tmp_path / "embedtune.toml").write_text(
            f'[embedders.srv]\nmodel = "openai:fault-model"\nbase_url = "{base}"\napi_key_env = "SRV_KEY"\nmax_batch = 8\n'
        )
        (tmp_path / "t.txt").write_text("\n".join(["fine text"] * 3 + ["this one is <<BAD>> here"] + ["ok"] * 20))
        wrong = cli(
            "embed",
            "t.txt",
            "-m",
            "srv",
            "--out",
            "v.npy",
            env={"SRV_KEY": "sk-wrong-key-0000SECRET", "EMBEDTUNE_HOME": str(tmp_path / "h")},
            cwd=tmp_path,
        )
        bad = cli(
            "embed",
            "t.txt",
            "-m",
            "srv",
            "--out",
            "v.npy",
            env={"SRV_KEY": SECRET, "EMBEDTUNE_HOME": str(tmp_path / "h")},
            cwd=tmp_path,
        )

        # The same in-process, with every logger at DEBUG (httpx and httpcore included).
        os.environ["SRV_KEY"] = SECRET
        try:
            provider = open_provider(EmbedderSpec(model="openai:fault-model", base_url=base, api_key_env="SRV_KEY"))
            with pytest.raises(InvalidInputError) as info:
                provider.embed(["a", "b", "c <<BAD>>", "d"])
            provider.close()
            os.environ["SRV_KEY"] = "sk-wrong-key-0000SECRET"
            with pytest.raises(AuthenticationError) as auth:
                open_provider(EmbedderSpec(model="openai:fault-model", base_url=base, api_key_env="SRV_KEY"))
        finally:
            del os.environ["SRV_KEY"]

    for result, message in (
        (wrong, "refused the credentials (401"),
        (bad, "text 3 (id '4') was rejected by the server"),
    ):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert len(lines) == 1 and message in lines[0], result.stderr
    assert info.value.index == 2
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP Request" in logged or "send_request" in logged  # the loggers did write
    for text in (wrong.stdout, wrong.stderr, bad.stdout, bad.stderr, str(info.value), str(auth.value), logged):
        assert "SECRET" not in text


def test_ollama_through_its_own_api():
    with FaultServer(FaultConfig(dim=768, rate_503=0.3, seed=3)) as server:
        provider = open_provider(EmbedderSpec(model="ollama:nomic-embed-text", base_url=server.url))
        provider.retry = FAST_RETRIES
        docs = provider.embed(["backups run nightly", "rollbacks take minutes"])
        query = provider.embed(["when do backups run"], "query")
        served = server.stats.inputs_served
        provider.close()
    reference = HashEmbedder(dim=768)
    np.testing.assert_allclose(
        docs,
        reference.embed(["search_document: backups run nightly", "search_document: rollbacks take minutes"]),
        atol=1e-6,
    )
    np.testing.assert_allclose(query, reference.embed(["search_query: when do backups run"]), atol=1e-6)
    assert served["search_query: when do backups run"] == 1


def test_cost_is_reported_for_a_paid_model(tmp_path):
    with FaultServer(FaultConfig()) as server:
        (tmp_path / "t.txt").write_text("one two three\nfour five\n")
        result = cli(
            "embed",
            "t.txt",
            "-m",
            "openai:text-embedding-3-small",
            "--out",
            "v.npy",
            env={
                "OPENAI_BASE_URL": f"{server.url}/v1",
                "OPENAI_API_KEY": "sk-x",
                "EMBEDTUNE_HOME": str(tmp_path / "h"),
            },
            cwd=tmp_path,
        )
    # The fault server's vectors are 64 wide, so ask for 64 of text-embedding-3-small's dims.
    assert result.returncode != 0 and "the server's vectors have 64 dims" in result.stderr
    assert "set dims = 64" in result.stderr
    with FaultServer(FaultConfig()) as server:
        (tmp_path / "embedtune.toml").write_text(
            '[embedders.small]\nmodel = "openai:text-embedding-3-small"\ndims = 64\n'
        )
        result = cli(
            "embed",
            "t.txt",
            "-m",
            "small",
            "--out",
            "v.npy",
            env={
                "OPENAI_BASE_URL": f"{server.url}/v1",
                "OPENAI_API_KEY": "sk-x",
                "EMBEDTUNE_HOME": str(tmp_path / "h"),
            },
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr
    assert "openai:text-embedding-3-small: 1 requests, 5 tokens, $0.0000" in result.stdout


def test_bench_batching_against_a_slow_server(tmp_path):
    with FaultServer(FaultConfig(latency_s=0.02)) as server:
        result = cli(
            "bench",
            "batching",
            "-m",
            "openai:fault-model",
            "-n",
            "40",
            env={"OPENAI_BASE_URL": f"{server.url}/v1", "EMBEDTUNE_HOME": str(tmp_path)},
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr
    assert "one call per text │    40" in result.stdout
    assert "batched (≤32 texts, 4 at once) │     2" in result.stdout
    assert "x the speed of one call per text" in result.stdout
