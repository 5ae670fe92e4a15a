"""The fault server, exercised over real HTTP on 127.0.0.1 with httpx and explicit timeouts."""

from __future__ import annotations

import base64
import os
import select
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from embedtune.providers.fake import HashEmbedder
from embedtune.testing import FaultConfig, FaultServer
from embedtune.testing.fault_server import config_from_args

TIMEOUT = httpx.Timeout(5.0)
TEXTS = ["the quick brown fox", "jumps over", "the lazy dog", "Déjà vu, encore!", ""]


@pytest.fixture()
def serve():
    """Start servers with the given config fields; all of them are closed after the test."""
    servers: list[FaultServer] = []

    def start(**fields) -> FaultServer:
        server = FaultServer(FaultConfig(**fields)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture()
def http():
    with httpx.Client(timeout=TIMEOUT) as client:
        yield client


def openai(http, server: FaultServer, inputs, *, timeout=TIMEOUT, headers=None, **extra) -> httpx.Response:
    body = {"model": "fake-model", "input": inputs, **extra}
    return http.post(f"{server.url}/v1/embeddings", json=body, timeout=timeout, headers=headers)


def ollama(http, server: FaultServer, inputs, *, timeout=TIMEOUT, **extra) -> httpx.Response:
    body = {"model": "fake-model", "input": inputs, **extra}
    return http.post(f"{server.url}/api/embed", json=body, timeout=timeout)


def rows(response: httpx.Response) -> np.ndarray:
    data = sorted(response.json()["data"], key=lambda row: row["index"])
    return np.asarray([row["embedding"] for row in data], dtype=np.float32)


def expected(texts, dim=64) -> np.ndarray:
    return HashEmbedder(dim=dim).embed(texts)


# -- correct answers --------------------------------------------------------------------------


def test_openai_vectors_equal_hash_embedder_and_usage_counts_words(serve, http):
    server = serve()
    response = openai(http, server, TEXTS)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list" and body["model"] == "fake-model"
    assert [row["index"] for row in body["data"]] == list(range(len(TEXTS)))
    assert all(row["object"] == "embedding" for row in body["data"])
    np.testing.assert_array_equal(rows(response), expected(TEXTS))
    # Words, at least one per input: 4 + 2 + 3 + 3 + 1.
    assert body["usage"] == {"prompt_tokens": 13, "total_tokens": 13}


def test_single_string_input(serve, http):
    response = openai(http, serve(), "just one")
    np.testing.assert_array_equal(rows(response), expected(["just one"]))


def test_dimensions_truncate_and_renormalise(serve, http):
    texts = ["a much longer sentence that has words enough to fill", "the first sixteen dimensions of it"]
    response = openai(http, serve(), texts, dimensions=16)
    got = rows(response)
    full = expected(texts)[:, :16]
    want = full / np.linalg.norm(full, axis=1, keepdims=True)
    assert got.shape == (2, 16)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_base64_round_trip(serve, http):
    server = serve()
    as_float = rows(openai(http, server, TEXTS))
    response = openai(http, server, TEXTS, encoding_format="base64")
    data = sorted(response.json()["data"], key=lambda row: row["index"])
    decoded = np.stack([np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4") for row in data])
    np.testing.assert_array_equal(decoded, as_float)


def test_shuffled_rows_carry_their_index(serve, http):
    texts = [f"text number {i}" for i in range(20)]
    response = openai(http, serve(shuffle_rows=True), texts)
    indices = [row["index"] for row in response.json()["data"]]
    assert sorted(indices) == list(range(20)) and indices != list(range(20))
    np.testing.assert_array_equal(rows(response), expected(texts))


def test_health_unknown_path_wrong_method_and_bad_json(serve, http):
    server = serve()
    assert http.get(f"{server.url}/health", timeout=TIMEOUT).status_code == 200
    missing = http.post(f"{server.url}/v1/nope", json={}, timeout=TIMEOUT)
    assert missing.status_code == 404 and "error" in missing.json()
    assert http.get(f"{server.url}/v1/embeddings", timeout=TIMEOUT).status_code == 405
    bad = http.post(
        f"{server.url}/v1/embeddings",
        content=b"{not json",
        timeout=TIMEOUT,
        headers={"Content-Type": "application/json"},
    )
    assert bad.status_code == 400
    assert set(bad.json()["error"]) == {"message", "type", "param", "code"}
    no_model = http.post(f"{server.url}/v1/embeddings", json={"input": "x"}, timeout=TIMEOUT)
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"


# -- injected faults --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
def test_error_faults(serve, status, http):
    server = serve(**{f"rate_{status}": 1.0})
    response = openai(http, server, ["a", "b"])
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    if status == 429:
        assert response.headers["retry-after"] == "0.05"
        assert response.headers["retry-after-ms"] == "50"
    assert server.stats.faults == {str(status): 1}
    assert not server.stats.inputs_served


def test_malformed_body(serve, http):
    response = openai(http, serve(rate_malformed=1.0), ["a", "b"])
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_wrong_rows_misses_one_row(serve, http):
    server = serve(rate_wrong_rows=1.0)
    response = openai(http, server, ["a", "b", "c"])
    indices = [row["index"] for row in response.json()["data"]]
    assert response.status_code == 200 and len(indices) == 2
    assert set(indices) < {0, 1, 2}
    assert sum(server.stats.inputs_served.values()) == 2


def test_nan_fault_puts_null_in_one_vector(serve, http):
    server = serve(rate_nan=1.0)
    response = openai(http, server, ["a", "b", "c"])
    nulls = [row["index"] for row in response.json()["data"] if None in row["embedding"]]
    assert response.status_code == 200 and len(nulls) == 1
    as_base64 = openai(http, server, ["a", "b"], encoding_format="base64").json()["data"]
    decoded = np.stack([np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4") for row in as_base64])
    assert np.isnan(decoded).sum() == 1


def test_slow_and_latency_delay_a_correct_answer(serve, http):
    server = serve(rate_slow=1.0, slow_s=0.2, latency_s=0.1)
    started = time.perf_counter()
    response = openai(http, server, ["a b"])
    assert time.perf_counter() - started >= 0.3
    np.testing.assert_array_equal(rows(response), expected(["a b"]))
    assert server.stats.faults == {"slow": 1}


def test_drop_resets_the_connection(serve, http):
    server = serve(rate_drop=1.0)
    with pytest.raises(httpx.TransportError) as caught:
        openai(http, server, ["a"])
    assert not isinstance(caught.value, httpx.TimeoutException)
    assert server.stats.requests[("/v1/embeddings", None)] == 1


def test_hang_times_the_client_out_and_close_does_not_wait_for_it(serve, http):
    server = serve(rate_hang=1.0, hang_s=5.0)
    with pytest.raises(httpx.ReadTimeout):
        openai(http, server, ["a"], timeout=httpx.Timeout(5.0, read=0.2))
    started = time.perf_counter()
    server.close()
    assert time.perf_counter() - started < 1.0


def test_hang_then_closes_without_answer(serve, http):
    server = serve(rate_hang=1.0, hang_s=0.1)
    with pytest.raises(httpx.RemoteProtocolError):
        openai(http, server, ["a"])


def test_fault_draws_are_seeded(serve, http):
    def statuses(seed):
        server = serve(seed=seed, rate_500=0.3, rate_429=0.3, rate_503=0.2)
        return [openai(http, server, [f"text {i}"]).status_code for i in range(30)]

    first = statuses(7)
    assert first == statuses(7)
    assert first != statuses(8)
    assert {200, 429, 500, 503} <= set(first)


def test_set_config_changes_behaviour_and_reseeds(serve, http):
    server = serve()
    assert openai(http, server, ["a"]).status_code == 200
    server.set_config(FaultConfig(rate_503=1.0))
    assert server.config.rate_503 == 1.0
    assert openai(http, server, ["a"]).status_code == 503
    server.set_config(FaultConfig(seed=3, rate_500=0.5))
    once = [openai(http, server, ["a"]).status_code for _ in range(10)]
    server.set_config(FaultConfig(seed=3, rate_500=0.5))
    assert [openai(http, server, ["a"]).status_code for _ in range(10)] == once


# -- auth and request limits ------------------------------------------------------------------


def test_api_key_required_and_never_echoed(serve, http):
    key = "sk-test-secret-1234567890"
    server = serve(api_key=key)
    assert key not in repr(server.config)
    assert openai(http, server, ["a"], headers={"Authorization": f"Bearer {key}"}).status_code == 200
    wrong_key = "sk-wrong-key-0987654321"
    for headers in (None, {"Authorization": f"Bearer {wrong_key}"}, {"Authorization": key}):
        response = openai(http, server, ["a"], headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        shown = response.text + str(response.headers)
        assert key not in shown and wrong_key not in shown and "0987" not in shown


def test_bad_marker_names_the_index_in_the_request(serve, http):
    response = openai(http, serve(), ["fine", "also fine", "broken <<BAD>> here", "fine"])
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "input[2] is invalid"


def test_limits_name_the_offending_input(serve, http):
    server = serve(max_tokens_per_input=5, max_tokens_per_request=12, max_inputs=4)
    too_long = openai(http, server, ["one", "two words", "a b c d e f"])
    assert too_long.status_code == 400
    assert too_long.json()["error"]["message"] == "input[2] has 6 tokens, over the limit of 5"
    too_many_tokens = openai(http, server, ["a b c d e", "a b c d e", "a b c"])
    assert too_many_tokens.status_code == 400 and "13 tokens" in too_many_tokens.json()["error"]["message"]
    too_many_inputs = openai(http, server, ["a"] * 5)
    assert too_many_inputs.status_code == 400 and "5 items" in too_many_inputs.json()["error"]["message"]
    assert not server.stats.token_log


# -- budgets ----------------------------------------------------------------------------------


def test_rpm_budget_over_the_minute(serve, http):
    server = serve(rpm=3)
    assert [openai(http, server, [f"t{i}"]).status_code for i in range(3)] == [200, 200, 200]
    for _ in range(3):
        refused = openai(http, server, ["late"])
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "requests"
        assert 55.0 < float(refused.headers["retry-after"]) <= 60.0
    assert len(server.stats.token_log) == 3


def test_rpm_budget_in_one_second_slices(serve, http):
    server = serve(rpm=60, window_s=1.0)
    assert openai(http, server, ["first"]).status_code == 200
    waits = []
    for _ in range(4):
        refused = openai(http, server, ["again"])
        assert refused.status_code == 429
        waits.append(float(refused.headers["retry-after"]))
    assert all(0.0 < wait <= 1.0 for wait in waits) and waits == sorted(waits, reverse=True)
    time.sleep(waits[-1])
    assert openai(http, server, ["after the wait"]).status_code == 200


def test_tpm_budget_counts_the_servers_tokens(serve, http):
    server = serve(tpm=10)
    assert openai(http, server, ["one two three four five six"]).status_code == 200
    refused = openai(http, server, ["a b c d e f"])
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"
    assert 55.0 < float(refused.headers["retry-after"]) <= 60.0
    assert openai(http, server, ["a b", "c", "d"]).status_code == 200  # 4 more tokens still fit
    assert openai(http, server, ["x"]).status_code == 429
    never = openai(http, server, ["a b c d e f g h i j k"])  # 11 tokens can never fit in 10
    assert never.status_code == 400 and never.json()["error"]["code"] == "request_too_large"
    assert [tokens for _, tokens in server.stats.token_log] == [6, 4]


# -- Ollama -------------------------------------------------------------------------------------


def test_ollama_shape_and_vectors(serve, http):
    server = serve()
    response = ollama(http, server, TEXTS[:3], keep_alive="5m", options={"num_ctx": 2048})
    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}
    got = np.asarray(body["embeddings"], dtype=np.float32)
    np.testing.assert_array_equal(got, expected(TEXTS[:3]))
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    assert body["prompt_eval_count"] == 9
    assert ollama(http, server, "one string").json()["prompt_eval_count"] == 2


def test_ollama_truncate_semantics(serve, http):
    server = serve(ollama_context=5)
    long = "one two three four five six seven"
    cut = ollama(http, server, [long, "short"]).json()
    np.testing.assert_array_equal(
        np.asarray(cut["embeddings"], dtype=np.float32), expected(["one two three four five", "short"])
    )
    assert cut["prompt_eval_count"] == 6
    assert server.stats.inputs_served[long] == 1
    refused = ollama(http, server, [long], truncate=False)
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}


def test_ollama_errors_use_ollamas_shape(serve, http):
    server = serve(rate_429=1.0)
    response = ollama(http, server, ["a"])
    assert response.status_code == 429 and isinstance(response.json()["error"], str)
    server.set_config(FaultConfig())
    bad = ollama(http, server, ["ok", "x <<BAD>>"])
    assert bad.status_code == 400 and bad.json() == {"error": "input[1] is invalid"}


# -- stats, concurrency, shutdown ----------------------------------------------------------------


def test_stats_count_each_text_once_under_concurrency(serve):
    server = serve(shuffle_rows=True)
    texts = [f"document {i}" for i in range(80)]
    batches = [texts[i : i + 4] for i in range(0, 80, 4)]
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client, ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(lambda batch: client.post("/v1/embeddings", json={"model": "m", "input": batch}), batches)
        )
    assert all(response.status_code == 200 for response in responses)
    stats = server.stats
    assert stats.requests == {("/v1/embeddings", 200): 20}
    assert stats.inputs_served == dict.fromkeys(texts, 1)
    assert stats.tokens_served == 160
    server.reset_stats()
    assert not server.stats.requests and not server.stats.inputs_served


def test_close_leaves_no_thread_even_with_an_idle_keep_alive_connection():
    before = set(threading.enumerate())
    with FaultServer() as server, httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        assert client.post("/v1/embeddings", json={"model": "m", "input": "x"}).status_code == 200
        server.close()  # while the client still holds its connection open
    assert set(threading.enumerate()) <= before
    with pytest.raises(RuntimeError):
        _ = server.url


def test_config_is_validated():
    for fields in (
        {"rate_429": 1.5},
        {"rate_nan": -0.1},
        {"latency_s": -1},
        {"rpm": 0},
        {"tpm": 1.5},
        {"rpm": 30, "window_s": 1.0},
        {"dim": True},
        {"bad_marker": ""},
        {"window_s": 0},
        {"hang_s": float("inf")},
        {"api_key": ""},
    ):
        with pytest.raises(ValueError):
            FaultConfig(**fields)
    with pytest.raises(TypeError):
        FaultConfig(0)  # keyword-only


# -- command line -------------------------------------------------------------------------------


def test_command_line_arguments_build_the_config():
    config, port = config_from_args(
        [
            "--port",
            "0",
            "--rate-429",
            "0.1",
            "--rate-wrong-rows",
            "0.2",
            "--latency",
            "0.02",
            "--rpm",
            "600",
            "--tpm",
            "100000",
        ]
    )
    assert port == 0
    assert (config.rate_429, config.rate_wrong_rows, config.latency_s) == (0.1, 0.2, 0.02)
    assert (config.rpm, config.tpm) == (600, 100_000)
    with pytest.raises(SystemExit):
        config_from_args(["--rate-500", "2"])


def test_module_runs_prints_the_url_and_stops_on_ctrl_c():
    process = subprocess.Popen(
        [sys.executable, "-W", "error", "-m", "embedtune.testing.fault_server", "--port", "0", "--rate-503", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # A suite run in the background of a non-interactive shell inherits SIGINT ignored, and Python
        # then installs no KeyboardInterrupt handler: give the server a terminal's default, as Ctrl-C has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 10.0)
        assert ready, "the server printed no URL within 10 s"
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        response = httpx.post(f"{url}/v1/embeddings", json={"model": "m", "input": "x"}, timeout=TIMEOUT)
        assert response.status_code == 503
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
