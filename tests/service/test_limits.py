"""Keys, limits and errors: every refusal in OpenAI's error shape, with the right status."""

from __future__ import annotations

import httpx
import pytest
from _serving import KEY, auth, fake_server

from embedtune.errors import ConfigError
from embedtune.service import ServiceConfig
from embedtune.service.keys import check_bind, read_keys

MODEL = "fake:hash-256"


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert KEY not in response.text
    return body["error"]


@pytest.fixture(scope="module")
def server():
    config = ServiceConfig(keys=(KEY, "sk-second-key-abcdef"), max_inputs=4, max_body_bytes=1 << 20)
    with fake_server(config, max_tokens=16) as running:
        yield running


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def embed(client: httpx.Client, body: dict, **kwargs) -> httpx.Response:
    return client.post("/v1/embeddings", json=body, **kwargs)


def test_a_valid_request_is_answered(client):
    response = embed(client, {"model": MODEL, "input": ["hello world"]}, headers=auth())
    assert response.status_code == 200
    assert response.json()["usage"] == {"prompt_tokens": 4, "total_tokens": 4}


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Basic " + KEY}, "missing_api_key"),
        ({"Authorization": "Bearer"}, "missing_api_key"),
        ({"Authorization": "Bearer sk-wrong"}, "invalid_api_key"),
        ({"Authorization": f"Bearer {KEY}x"}, "invalid_api_key"),
        ({"Authorization": f"Bearer {KEY[:-1]}"}, "invalid_api_key"),
    ],
)
def test_no_key_or_a_wrong_key_is_401(client, headers, code):
    error = error_of(embed(client, {"model": MODEL, "input": "x"}, headers=headers), 401)
    assert (error["type"], error["code"]) == ("authentication_error", code)
    assert error_of(client.get("/v1/models", headers=headers), 401)["code"] == code


def test_the_second_key_and_a_lowercase_scheme_work(client):
    assert embed(client, {"model": MODEL, "input": "x"}, headers=auth("sk-second-key-abcdef")).status_code == 200
    assert embed(client, {"model": MODEL, "input": "x"}, headers={"authorization": f"bearer {KEY}"}).status_code == 200


def test_the_key_is_checked_before_the_body_is_read(client):
    error = error_of(client.post("/v1/embeddings", content=b"{not json"), 401)
    assert error["code"] == "missing_api_key"


def test_a_body_over_the_limit_is_413_with_or_without_a_length(client):
    big = b'{"model": "fake:hash-256", "input": "' + b"a" * (10 << 20) + b'"}'
    error = error_of(client.post("/v1/embeddings", content=big, headers=auth()), 413)
    assert error["code"] == "body_too_large" and "1048576 bytes" in error["message"]

    def chunks():
        yield b'{"model": "fake:hash-256", "input": "'
        for _ in range(40):
            yield b"a" * (256 << 10)
        yield b'"}'

    assert error_of(client.post("/v1/embeddings", content=chunks(), headers=auth()), 413)["code"] == "body_too_large"


@pytest.mark.parametrize(
    "content",
    [b"{bad json", b"", b"[1, 2]", b'"input"', b"\xff\xfe\x00", b'{"model": 1, "input": "x"}', b'{"input": "x"}'],
)
def test_malformed_bodies_are_400(client, content):
    error = error_of(client.post("/v1/embeddings", content=content, headers=auth()), 400)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ([], "input"),
        ([1, "a"], "input"),
        ([[1], ["a"]], "input"),
        ([True], "input"),
        ({"text": "x"}, "input"),
        ([-1], "input"),
        ([[15339], [100256]], "input[1]"),
        ([10**30], "input"),
    ],
)
def test_bad_inputs_are_400_naming_the_input(client, value, param):
    error = error_of(embed(client, {"model": MODEL, "input": value}, headers=auth()), 400)
    assert error["param"] == param


def test_too_many_inputs_is_400(client):
    error = error_of(embed(client, {"model": MODEL, "input": ["a"] * 5}, headers=auth()), 400)
    assert error["code"] == "too_many_inputs" and "at most 4" in error["message"]


def test_a_text_over_the_models_limit_under_policy_error_is_400_naming_its_index(client):
    at_limit = " ".join(f"w{i}" for i in range(14))  # 14 words and 2 special tokens: the limit, 16
    texts = ["short", "also short", at_limit]
    assert embed(client, {"model": MODEL, "input": texts}, headers=auth()).status_code == 200
    texts[2] += " one more"
    error = error_of(embed(client, {"model": MODEL, "input": texts}, headers=auth()), 400)
    assert (error["code"], error["param"]) == ("input_too_long", "input[2]")
    assert error["message"].startswith("input 2 has 18 tokens, over fake:hash-256's limit of 16")


def test_token_ids_over_the_limit_name_their_index_too(client):
    from embedtune.providers.http import cl100k_encoding

    encoding = cl100k_encoding()
    ids = [encoding.encode("hello"), encoding.encode(" ".join(["word"] * 30))]
    error = error_of(embed(client, {"model": MODEL, "input": ids}, headers=auth()), 400)
    assert error["param"] == "input[1]"


def test_unknown_model_is_404_and_too_many_dimensions_400(client):
    error = error_of(embed(client, {"model": "text-embedding-3-small", "input": "x"}, headers=auth()), 404)
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    error = error_of(embed(client, {"model": MODEL, "input": "x", "dimensions": 257}, headers=auth()), 400)
    assert error["param"] == "dimensions"
    assert error_of(embed(client, {"model": MODEL, "input": "x", "dimensions": 0}, headers=auth()), 400)
    assert embed(client, {"model": "hash-256", "input": "x", "dimensions": 256}, headers=auth()).status_code == 200


def test_search_without_a_store_and_unknown_routes_are_404_and_wrong_methods_405(client):
    assert error_of(client.post("/v1/search", json={"query": "x"}, headers=auth()), 404)["code"] == "not_found"
    assert error_of(client.get("/v1/nothing", headers=auth()), 404)["code"] == "not_found"
    assert error_of(client.get("/v1/embeddings", headers=auth()), 405)["code"] == "method_not_allowed"


def test_budgets_exceeded_are_429_with_retry_after():
    config = ServiceConfig(keys=(KEY, "sk-other-key-0000"), requests_per_minute=2, tokens_per_minute=1000)
    with fake_server(config) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        body = {"model": MODEL, "input": "hello there"}
        assert [embed(client, body, headers=auth()).status_code for _ in range(2)] == [200, 200]
        refused = embed(client, body, headers=auth())
        error = error_of(refused, 429)
        assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "key 1" in error["message"] and "2 requests and 1000 tokens per minute" in error["message"]
        # each key has its own budget
        assert embed(client, body, headers=auth("sk-other-key-0000")).status_code == 200
        # tokens: a request bigger than a minute's budget can never fit: 400, not 429
        huge = {"model": MODEL, "input": ["word " * 100] * 11}
        assert error_of(embed(client, huge, headers=auth("sk-other-key-0000")), 400)["code"] == "request_over_budget"


def test_tokens_per_minute_budget_is_429():
    config = ServiceConfig(keys=(KEY,), tokens_per_minute=20)
    with fake_server(config) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        body = {"model": MODEL, "input": "one two three four five six seven eight"}  # 10 tokens
        assert [embed(client, body, headers=auth()).status_code for _ in range(2)] == [200, 200]
        refused = embed(client, body, headers=auth())
        assert error_of(refused, 429)["code"] == "rate_limit_exceeded" and "retry-after" in refused.headers


def test_keys_files_and_the_bind_check(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# our keys\nsk-one\n\n  sk-two  \nsk-one\n")
    assert read_keys(env_value="sk-env, ,sk-two", file=keys) == ("sk-env", "sk-two", "sk-one")
    (tmp_path / "empty").write_text("# none\n")
    with pytest.raises(ConfigError, match="holds no key"):
        read_keys(file=tmp_path / "empty")
    with pytest.raises(ConfigError, match="cannot read the keys file"):
        read_keys(file=tmp_path / "missing")
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, ())
    for host in ("0.0.0.0", "::", "192.168.1.4", "example.com"):
        with pytest.raises(ConfigError, match=f"refusing to serve on {host} without API keys"):
            check_bind(host, ())
        check_bind(host, ("sk-one",))
    assert "sk-secret" not in repr(ServiceConfig(keys=("sk-secret",)))
