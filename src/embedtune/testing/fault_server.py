"""A fault-injecting embedding server on loopback, for tests and benchmarks of HTTP clients.

It speaks OpenAI's embeddings API (``POST /v1/embeddings``) and Ollama's (``POST /api/embed``),
answers with ``HashEmbedder`` vectors, and misbehaves on purpose, at rates drawn from a seeded
RNG: 429, 500, 503, slow answers, hangs, dropped connections, malformed bodies, missing rows and
NaN values. It also enforces request and token budgets per minute, an API key and OpenAI's
request limits for real, so a client's throttling, retries and error handling meet the same
answers they meet in production::

    with FaultServer(FaultConfig(rate_429=0.1, rpm=600)) as server:
        client = httpx.Client(base_url=server.url + "/v1", timeout=5.0)
        ...
        assert server.stats.inputs_served["some text"] == 1

Every POST goes through the same steps; the first that answers wins:

    1. route (404, 405)                    5. injected transport fault: drop, hang, 500, 503, 429
    2. API key (401)                       6. RPM/TPM budget (429 with the wait in Retry-After)
    3. JSON body (400, 411, 413)           7. injected content fault: malformed body, missing
    4. request limits, bad marker (400)       row, NaN; otherwise the right answer

so invalid requests never consume a fault draw, and only requests admitted at step 6 count against
the budget (and appear in ``stats.token_log``). ``latency_s`` delays every answer to an embedding
endpoint; ``slow_s`` is added to the answer of a request drawn slow. Tokens are counted as words
(``HashEmbedder.count_tokens`` less its two special tokens), at least one per input.

It also answers OpenAI's chat API (``POST /v1/chat/completions``) as a deterministic stand-in
for a doc2query model: the answer holds ``chat_queries`` lines, line ``i`` being the ``i``-th run
of five words (of four letters or more) of the text after ``Document:`` in the last user message.
Chat requests pass through steps 1, 2, 3, 5 and 6 too; of the content faults only ``malformed``
applies to them.

Images: an OpenAI input that is a base64 data URL (``data:image/png;base64,...``, as infinity
takes them for CLIP models) is an image. Its bytes must start like a PNG, JPEG, GIF, BMP, WebP or
TIFF file (400 ``input[i] is not a valid image`` otherwise; 400 for every image when ``images`` is
off); it is embedded as the text :func:`image_input_key` gives for its bytes, counts one token, and
appears under that key in ``stats.inputs_served``.

Standard library only; ``python -m embedtune.testing.fault_server --help`` runs one by hand.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import os
import random
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit

import numpy as np

from ..providers.fake import HashEmbedder

__all__ = ["FaultConfig", "FaultServer", "FaultStats", "image_input_key", "main"]

_log = logging.getLogger(__name__)

HOST = "127.0.0.1"
OPENAI_PATH = "/v1/embeddings"
OLLAMA_PATH = "/api/embed"
CHAT_PATH = "/v1/chat/completions"
_ROUTES = {OPENAI_PATH: "openai", OLLAMA_PATH: "ollama"}
_MAX_BODY_BYTES = 64 * 1024 * 1024
_WORD = re.compile(r"\w+", re.UNICODE)

# Fault kinds in the order they are drawn (a fixed number of draws per request keeps a seeded run
# reproducible) and, among those drawn together, the order in which one takes effect.
_TRANSPORT_FAULTS = ("drop", "hang", "500", "503", "429")
_CONTENT_FAULTS = ("malformed", "wrong_rows", "nan")
_FAULTS = (*_TRANSPORT_FAULTS, *_CONTENT_FAULTS, "slow")


# -- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FaultConfig:
    """How the server behaves. Rates are probabilities in [0, 1], drawn independently per request.

    - ``rate_429``: 429 with ``Retry-After: retry_after_s`` (fractional seconds, e.g. ``0.05``).
    - ``rate_500`` / ``rate_503``: a server error in OpenAI's (or Ollama's) error shape.
    - ``rate_slow``: ``slow_s`` more seconds before the answer.
    - ``rate_hang``: wait ``hang_s`` (or until the server stops), then close without answering.
    - ``rate_drop``: close the connection at once with a TCP reset, no response.
    - ``rate_malformed``: 200 with a body that is not valid JSON.
    - ``rate_wrong_rows``: 200 with one row missing.
    - ``rate_nan``: 200 with one value of one vector ``null`` (NaN under base64).
    - ``latency_s``: added to every answer of an embedding endpoint.
    - ``rpm`` / ``tpm``: budgets per minute (None: unlimited), enforced over a sliding window of
      ``window_s`` seconds that admits ``rpm * window_s / 60`` requests and ``tpm * window_s / 60``
      tokens. 60 s is the provider's minute; a shorter window enforces the same rate in slices, as
      providers that quantise their limits do, and keeps waits short in tests. A request over
      budget gets 429 and a ``Retry-After`` of the seconds until it would fit; one with more
      tokens than the window admits can never fit and gets 400.
    - ``api_key``: when set, ``Authorization: Bearer <api_key>`` is required (401 otherwise).
    - ``max_inputs``, ``max_tokens_per_input``, ``max_tokens_per_request``: OpenAI's limits (400).
      Ollama's endpoint applies ``max_inputs`` and ``ollama_context`` (with its ``truncate``).
    - ``bad_marker``: an input containing it gets 400 ``input[i] is invalid`` (None: off).
    - ``dim``: width of the vectors; ``dimensions`` in a request may ask for fewer.
    - ``shuffle_rows``: OpenAI rows in random order, so clients must sort by ``index``.
    - ``chat_queries``: lines in each answer of the chat endpoint.
    - ``images``: whether image inputs (base64 data URLs) are taken.
    """

    seed: int = 0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_slow: float = 0.0
    rate_hang: float = 0.0
    rate_drop: float = 0.0
    rate_malformed: float = 0.0
    rate_wrong_rows: float = 0.0
    rate_nan: float = 0.0
    retry_after_s: float = 0.05
    slow_s: float = 0.2
    hang_s: float = 5.0
    latency_s: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    window_s: float = 60.0
    api_key: str | None = field(default=None, repr=False)
    max_inputs: int = 2048
    max_tokens_per_input: int = 8191
    max_tokens_per_request: int = 300_000
    ollama_context: int = 2048
    bad_marker: str | None = "<<BAD>>"
    dim: int = 64
    shuffle_rows: bool = False
    chat_queries: int = 3
    images: bool = True

    def __post_init__(self) -> None:
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an integer, not {self.seed!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("rate_") and not (_is_number(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{f.name} must be a probability in [0, 1], not {value!r}")
            if f.name.endswith("_s") and not (_is_number(value) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{f.name} must be a finite number of seconds >= 0, not {value!r}")
        if self.window_s <= 0:
            raise ValueError(f"window_s must be above 0, not {self.window_s!r}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is None:
                continue
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
            if value * self.window_s / 60 < 1:
                raise ValueError(
                    f"{name}={value} admits less than one per window of {self.window_s:g} s; "
                    "raise it or lengthen window_s"
                )
        for name in (
            "max_inputs",
            "max_tokens_per_input",
            "max_tokens_per_request",
            "ollama_context",
            "dim",
            "chat_queries",
        ):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ValueError("api_key must be a non-empty string or None")
        if self.bad_marker is not None and (not isinstance(self.bad_marker, str) or not self.bad_marker):
            raise ValueError("bad_marker must be a non-empty string or None (None turns it off)")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


# -- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultStats:
    """A snapshot of what the server did since it started or since ``reset_stats()``.

    - ``requests``: answers by ``(path, status)``; status ``None`` means the connection was closed
      without an answer (drop, hang).
    - ``faults``: injected faults that took effect, by kind (``"429"``, ``"drop"``, ``"slow"``...).
    - ``inputs_served``: texts that went out in an intact row of a 200 (the original text, before
      any truncation), so a test can assert each text was served exactly once.
    - ``tokens_served``: tokens of those rows.
    - ``token_log``: ``(time.monotonic(), tokens)`` of each request admitted under the budget.
    """

    requests: Counter
    faults: Counter
    inputs_served: Counter
    tokens_served: int
    token_log: tuple[tuple[float, int], ...]


class _Stats:
    def __init__(self) -> None:
        self.requests: Counter = Counter()
        self.faults: Counter = Counter()
        self.inputs_served: Counter = Counter()
        self.tokens_served = 0
        self.token_log: list[tuple[float, int]] = []

    def snapshot(self) -> FaultStats:
        return FaultStats(
            requests=Counter(self.requests),
            faults=Counter(self.faults),
            inputs_served=Counter(self.inputs_served),
            tokens_served=self.tokens_served,
            token_log=tuple(self.token_log),
        )


class _Window:
    """Requests admitted in the last ``window_s`` seconds, oldest first: ``(time, tokens)``."""

    def __init__(self) -> None:
        self._entries: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def admit(self, now: float, tokens: int, config: FaultConfig) -> tuple[float, str] | None:
        """Record the request if it fits and return None; else ``(seconds until it fits, what)``."""
        window = config.window_s
        while self._entries and self._entries[0][0] <= now - window:
            self._tokens -= self._entries.popleft()[1]
        waits: list[tuple[float, str]] = []
        if config.rpm is not None:
            capacity = math.floor(config.rpm * window / 60 + 1e-9)
            excess = len(self._entries) + 1 - capacity
            if excess > 0:
                waits.append((self._entries[excess - 1][0] + window - now, "requests"))
        if config.tpm is not None:
            token_capacity = config.tpm * window / 60
            remaining = self._tokens
            for start, used in self._entries:
                if remaining + tokens <= token_capacity:
                    break
                remaining -= used
                if remaining + tokens <= token_capacity:
                    waits.append((start + window - now, "tokens"))
                    break
        if waits:
            return max(waits)
        self._entries.append((now, tokens))
        self._tokens += tokens
        return None


# -- replies ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int | None  # None: close the connection without answering
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    reset: bool = False  # close with a TCP reset rather than a FIN
    served: tuple[tuple[str, int], ...] = ()  # (text, tokens) of the intact rows in a 200


class _Fail(Exception):
    """An error answer, in the dialect of the endpoint that gives it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def reply(self, dialect: str, delay: float = 0.0) -> _Reply:
        if dialect == "ollama":
            payload: dict = {"error": self.message}
        else:
            payload = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return _Reply(self.status, _dumps(payload), self.headers, delay)


def _dumps(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def _seconds(value: float) -> str:
    """Seconds for a Retry-After header, rounded up to the millisecond: ``0.05``, ``59.731``, ``5``."""
    return f"{math.ceil(value * 1000 - 1e-6) / 1000:.3f}".rstrip("0").rstrip(".")


def _retry_headers(seconds: float) -> tuple[tuple[str, str], ...]:
    return (("Retry-After", _seconds(seconds)), ("retry-after-ms", str(math.ceil(seconds * 1000 - 1e-6))))


@dataclass(frozen=True)
class _Job:
    """A valid embedding request."""

    model: str
    texts: list[str]  # as sent
    embed_texts: list[str]  # after Ollama's truncation
    tokens: list[int]
    dimensions: int | None
    base64: bool


# -- the server ---------------------------------------------------------------------------------


class FaultServer:
    """The server in a background thread, on ``127.0.0.1``; use it as a context manager.

    ``config`` may be swapped while it runs (``set_config``), which also reseeds the fault RNG;
    the budget window carries over. ``reset_stats()`` clears the statistics and the budget window.
    """

    def __init__(self, config: FaultConfig | None = None, *, port: int = 0) -> None:
        if not _is_int(port) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer in [0, 65535], not {port!r}")
        self._port = port
        self._lock = threading.Lock()
        self._stats = _Stats()
        self._window = _Window()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.set_config(config if config is not None else FaultConfig())

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None or self._stopping.is_set():
            raise RuntimeError("a FaultServer starts once; make a new one")
        self._httpd = _HTTPServer((HOST, self._port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fault-server-{self.port}",
            daemon=True,  # a server never closed must not keep the interpreter alive; close() joins it
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, cut open connections, and wait for every thread of the server to end."""
        self._stopping.set()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_open_connections()
        httpd.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running; use it as a context manager or call start()")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, without a trailing slash (OpenAI clients add ``/v1``)."""
        return f"http://{HOST}:{self.port}"

    # -- configuration and statistics ---------------------------------------------------------

    @property
    def config(self) -> FaultConfig:
        return self._state[0]

    def set_config(self, config: FaultConfig) -> None:
        if not isinstance(config, FaultConfig):
            raise TypeError(f"config must be a FaultConfig, not {type(config).__name__}")
        embedder = HashEmbedder(
            name=f"fake:hash-{config.dim}",
            dim=config.dim,
            max_tokens=max(config.max_tokens_per_input, config.ollama_context) + 2,
        )
        with self._lock:
            self._rng = random.Random(config.seed)
            self._state = (config, embedder)  # one attribute, so a request sees one config

    @property
    def stats(self) -> FaultStats:
        with self._lock:
            return self._stats.snapshot()

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = _Stats()
            self._window = _Window()

    def _record(
        self, path: str, status: int | None, served: Sequence[tuple[str, int]], *, undo_served: bool = False
    ) -> None:
        """Count an answer; ``undo_served`` takes back the rows of one that could not be sent."""
        with self._lock:
            if not undo_served:
                self._stats.requests[(path, status)] += 1
            sign = -1 if undo_served else 1
            for text, tokens in served:
                self._stats.inputs_served[text] += sign
                self._stats.tokens_served += sign * tokens
            if undo_served:
                self._stats.inputs_served = +self._stats.inputs_served  # drop counts of zero

    # -- one request ------------------------------------------------------------------------------

    def _process(self, dialect: str, authorization: str | None, body: bytes) -> _Reply:
        """Steps 2 to 7 of the module docstring, for a POST to an embedding endpoint."""
        config, embedder = self._state
        started = time.perf_counter()
        delay = config.latency_s
        try:
            self._check_key(config, authorization)
            job = _parse(dialect, body, config, embedder)
            fault, slow, seed = self._draw(config)
            if slow:
                delay += config.slow_s
            if fault in _TRANSPORT_FAULTS:
                return _injected(fault, config, dialect, delay)
            self._admit(config, sum(job.tokens))
        except _Fail as fail:
            return fail.reply(dialect, delay)
        if fault is not None:  # a content fault, counted once the request is admitted
            with self._lock:
                self._stats.faults[fault] += 1
        if fault == "malformed":  # JSON cut short
            return _Reply(200, b'{"object": "list", "data": [{"object": "embedding", "embedding": [0.1,', delay=delay)
        vectors = _vectors(embedder, job)
        rng = random.Random(seed)
        broken = rng.randrange(len(job.texts)) if job.texts else None
        missing = broken if fault == "wrong_rows" else None
        if fault == "nan" and broken is not None:
            vectors[broken, rng.randrange(vectors.shape[1])] = np.nan
        served = tuple(
            (text, tokens)
            for i, (text, tokens) in enumerate(zip(job.texts, job.tokens))
            if i != broken or fault is None
        )
        if dialect == "ollama":
            payload = _ollama_answer(job, vectors, missing, started)
        else:
            payload = _openai_answer(job, vectors, missing, rng if config.shuffle_rows else None)
        return _Reply(200, _dumps(payload), delay=delay, served=served)

    def _process_chat(self, authorization: str | None, body: bytes) -> _Reply:
        """A POST to the chat endpoint: key, body, transport faults, budget, then the answer."""
        config, _ = self._state
        delay = config.latency_s
        try:
            self._check_key(config, authorization)
            model, prompt = _parse_chat(body)
            fault, slow, _ = self._draw(config)
            if slow:
                delay += config.slow_s
            if fault in _TRANSPORT_FAULTS:
                return _injected(fault, config, "openai", delay)
            tokens = max(1, len(_WORD.findall(prompt)))
            self._admit(config, tokens)
        except _Fail as fail:
            return fail.reply("openai", delay)
        if fault == "malformed":
            with self._lock:
                self._stats.faults[fault] += 1
            return _Reply(200, b'{"object": "chat.completion", "choices": [{"message": {"content": "', delay=delay)
        content = "\n".join(_chat_queries(prompt, config.chat_queries))
        answer = {
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {
                "prompt_tokens": tokens,
                "completion_tokens": len(_WORD.findall(content)),
                "total_tokens": tokens + len(_WORD.findall(content)),
            },
        }
        return _Reply(200, _dumps(answer), delay=delay)

    def _check_key(self, config: FaultConfig, authorization: str | None) -> None:
        if config.api_key is None:
            return
        if not authorization:
            raise _Fail(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="invalid_api_key",
            )
        scheme, _, sent = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), config.api_key.encode()):
            # Never echo the key that was sent, not even redacted.
            raise _Fail(401, "Incorrect API key provided; check the key the client sends.", code="invalid_api_key")

    def _draw(self, config: FaultConfig) -> tuple[str | None, bool, int]:
        """The fault that takes effect (or None), whether the answer is slow, and a seed for details."""
        with self._lock:
            drawn = [kind for kind in _FAULTS if self._rng.random() < getattr(config, f"rate_{kind}")]
            seed = self._rng.getrandbits(64)
            fault = next((kind for kind in drawn if kind != "slow"), None)
            slow = "slow" in drawn and fault not in ("drop", "hang")
            if fault in _TRANSPORT_FAULTS:
                self._stats.faults[fault] += 1
            if slow:
                self._stats.faults["slow"] += 1
        return fault, slow, seed

    def _admit(self, config: FaultConfig, tokens: int) -> None:
        if config.tpm is not None and tokens > config.tpm * config.window_s / 60:
            raise _Fail(
                400,
                f"the request has {tokens} tokens, more than the budget of {config.tpm} tokens per minute "
                f"admits in {config.window_s:g} s; split it into smaller requests",
                param="input",
                code="request_too_large",
            )
        if config.rpm is None and config.tpm is None:
            return
        now = time.monotonic()
        with self._lock:
            refused = self._window.admit(now, tokens, config)
            if refused is None:
                self._stats.token_log.append((now, tokens))
                return
        wait, what = refused
        limit = config.rpm if what == "requests" else config.tpm
        unit = "RPM" if what == "requests" else "TPM"
        raise _Fail(
            429,
            f"Rate limit reached for {what} per min ({unit}): Limit {limit}. Please try again in {_seconds(wait)}s.",
            type=what,
            code="rate_limit_exceeded",
            headers=_retry_headers(wait),
        )


def _injected(fault: str, config: FaultConfig, dialect: str, delay: float) -> _Reply:
    if fault == "drop":
        return _Reply(None, delay=config.latency_s, reset=True)
    if fault == "hang":
        return _Reply(None, delay=config.latency_s + config.hang_s)
    if fault == "500":
        fail = _Fail(
            500, "The server had an error while processing your request (injected fault).", type="server_error"
        )
    elif fault == "503":
        fail = _Fail(503, "The server is overloaded, please try again later (injected fault).", type="server_error")
    else:
        fail = _Fail(
            429,
            "Rate limit reached; please try again later (injected fault).",
            type="requests",
            code="rate_limit_exceeded",
            headers=_retry_headers(config.retry_after_s),
        )
    return fail.reply(dialect, delay)


# -- parsing and answering ----------------------------------------------------------------------


def _request(body: bytes) -> tuple[dict, str]:
    """A request body as a JSON object, and the model it names (400 for anything else)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _Fail(400, "the request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _Fail(400, "the request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise _Fail(400, "you must provide a model parameter", param="model")
    return payload, model


def _parse(dialect: str, body: bytes, config: FaultConfig, embedder: HashEmbedder) -> _Job:
    payload, model = _request(body)
    texts = _texts(payload.get("input"), dialect)
    dimensions = payload.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or not 1 <= dimensions <= config.dim):
        raise _Fail(400, f"dimensions must be an integer from 1 to {config.dim}", param="dimensions")
    encoding = "float"
    if dialect == "openai":
        encoding = payload.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _Fail(400, "encoding_format must be 'float' or 'base64'", param="encoding_format")
        if "user" in payload and not isinstance(payload["user"], str):
            raise _Fail(400, "user must be a string", param="user")
        truncate = False
    else:
        truncate = payload.get("truncate", True)
        if not isinstance(truncate, bool):
            raise _Fail(400, "truncate must be true or false")
        if not isinstance(payload.get("keep_alive", ""), (str, int, float)):
            raise _Fail(400, "keep_alive must be a duration string or a number of seconds")
        if not isinstance(payload.get("options") or {}, dict):
            raise _Fail(400, "options must be an object")

    if len(texts) > config.max_inputs:
        raise _Fail(400, f"input has {len(texts)} items, over the limit of {config.max_inputs}", param="input")
    embed_texts, tokens = [], []
    texts = list(texts)
    for i, text in enumerate(texts):
        if dialect == "openai" and text.startswith("data:"):
            texts[i] = _image_key(text, i, config)  # served and counted under its key
            embed_texts.append(texts[i])
            tokens.append(_IMAGE_TOKENS)
            continue
        if config.bad_marker is not None and config.bad_marker in text:
            raise _Fail(400, f"input[{i}] is invalid", param="input", code="invalid_input")
        count = max(1, embedder.count_tokens(text) - 2)
        if dialect == "openai" and count > config.max_tokens_per_input:
            raise _Fail(
                400,
                f"input[{i}] has {count} tokens, over the limit of {config.max_tokens_per_input}",
                param="input",
                code="context_length_exceeded",
            )
        if dialect == "ollama" and count > config.ollama_context:
            if not truncate:
                raise _Fail(400, "the input length exceeds the context length")
            text, count = _first_words(text, config.ollama_context), config.ollama_context
        embed_texts.append(text)
        tokens.append(count)
    if dialect == "openai" and sum(tokens) > config.max_tokens_per_request:
        raise _Fail(
            400,
            f"the request has {sum(tokens)} tokens, over the limit of {config.max_tokens_per_request}",
            param="input",
            code="max_tokens_per_request",
        )
    return _Job(model, texts, embed_texts, tokens, dimensions, encoding == "base64")


_IMAGE_TOKENS = 1
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def image_input_key(data: bytes) -> str:
    """What the server embeds (and counts in ``inputs_served``) for an image of these bytes."""
    return f"image:{hashlib.sha256(data).hexdigest()}"


def _image_key(url: str, index: int, config: FaultConfig) -> str:
    if not config.images:
        raise _Fail(400, f"input[{index}] is an image; this model takes text only", param="input")
    head, comma, body = url.partition(",")
    try:
        data = base64.b64decode(body, validate=True) if comma and head.endswith(";base64") else b""
    except (binascii.Error, ValueError):
        data = b""
    webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    if not head.startswith("data:image/") or not (data.startswith(_IMAGE_MAGIC) or webp):
        raise _Fail(400, f"input[{index}] is not a valid image", param="input", code="invalid_image")
    return image_input_key(data)


def _parse_chat(body: bytes) -> tuple[str, str]:
    """The model and the last user message of a chat request (400 for anything malformed)."""
    payload, model = _request(body)
    messages = payload.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        raise _Fail(400, "messages must be a non-empty list of {role, content} objects", param="messages")
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise _Fail(400, "messages must include a user message", param="messages")
    return model, users[-1]


def _chat_queries(prompt: str, n: int) -> list[str]:
    """Line i: the i-th run of five long words of the document in the prompt."""
    document = prompt.split("Document:", 1)[-1]
    words = [w for w in _WORD.findall(document) if len(w) >= 4]
    return [" ".join(words[i * 5 : i * 5 + 5]) for i in range(n) if words[i * 5 : i * 5 + 5]]


def _texts(value: object, dialect: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if value is None and dialect == "ollama":
        return []  # Ollama loads the model and answers with no embeddings
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        if not value and dialect == "openai":
            raise _Fail(400, "input must not be an empty list", param="input")
        return value
    raise _Fail(400, "input must be a string or a list of strings (token arrays are not supported)", param="input")


def _first_words(text: str, n: int) -> str:
    for i, match in enumerate(_WORD.finditer(text)):
        if i == n - 1:
            return text[: match.end()]
    return text


def _vectors(embedder: HashEmbedder, job: _Job) -> np.ndarray:
    vectors = embedder.embed(job.embed_texts)
    if job.dimensions is not None and job.dimensions < vectors.shape[1]:
        vectors = np.ascontiguousarray(vectors[:, : job.dimensions])
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0).astype(np.float32)
    return vectors


def _row(vector: np.ndarray, as_base64: bool) -> object:
    if as_base64:
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [None if math.isnan(x) else x for x in vector.tolist()]


def _openai_answer(job: _Job, vectors: np.ndarray, missing: int | None, shuffle: random.Random | None) -> dict:
    order = [i for i in range(len(job.texts)) if i != missing]
    if shuffle is not None:
        shuffle.shuffle(order)
    total = sum(job.tokens)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": _row(vectors[i], job.base64)} for i in order],
        "model": job.model,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }


def _ollama_answer(job: _Job, vectors: np.ndarray, missing: int | None, started: float) -> dict:
    return {
        "model": job.model,
        "embeddings": [_row(vectors[i], False) for i in range(len(job.texts)) if i != missing],
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": sum(job.tokens),
    }


# -- HTTP plumbing ------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    """Tracks connections and their threads, so ``close`` can cut idle keep-alive connections and
    join every thread. The threads are daemons (a server never closed must not keep the interpreter
    alive), which socketserver would not join, hence the bookkeeping here."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: FaultServer) -> None:
        self.owner = owner
        self.stopping = owner._stopping
        self._open: set[socket.socket] = set()
        self._handlers: list[threading.Thread] = []
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            daemon=True,
            name=f"fault-server-handler-{client_address[1]}",
        )
        with self._open_lock:
            self._open.add(request)
            self._handlers = [t for t in self._handlers if t.is_alive()]
            self._handlers.append(thread)
        thread.start()

    def server_close(self) -> None:
        super().server_close()
        with self._open_lock:
            handlers = list(self._handlers)
        for thread in handlers:
            thread.join()

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler

    def handle_error(self, request, client_address) -> None:
        _log.exception("fault server: unexpected error while answering %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real clients use it
    disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms stall between
    server_version = "embedtune-fault-server"
    sys_version = ""
    server: _HTTPServer

    def log_message(self, format: str, *args: object) -> None:
        _log.debug("fault server: " + format, *args)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/health":
            self._send(path, _Reply(200, _dumps({"status": "ok"})))
        elif path in _ROUTES or path == CHAT_PATH:
            self._send(path, _Fail(405, f"use POST for {path}").reply(_ROUTES.get(path, "openai")))
        else:
            self._send(path, _not_found("GET", path))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._read_body(path)
        if body is None:
            return
        dialect = _ROUTES.get(path)
        if path == CHAT_PATH:
            reply = self.server.owner._process_chat(self.headers.get("Authorization"), body)
        elif dialect is None:
            self._send(path, _not_found("POST", path))
            return
        else:
            reply = self.server.owner._process(dialect, self.headers.get("Authorization"), body)
        if reply.delay > 0:
            self.server.stopping.wait(reply.delay)
        if reply.status is None:
            self._close_without_answer(path, reply.reset)
        else:
            self._send(path, reply)

    def _read_body(self, path: str) -> bytes | None:
        length = self.headers.get("Content-Length")
        dialect = _ROUTES.get(path, "openai")
        if length is None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self.close_connection = True
                self._send(path, _Fail(411, "send the body with a Content-Length").reply(dialect))
                return None
            return b""
        try:
            size = int(length)
        except ValueError:
            size = -1
        if not 0 <= size <= _MAX_BODY_BYTES:
            self.close_connection = True
            self._send(
                path, _Fail(413 if size > 0 else 400, "the Content-Length is invalid or too large").reply(dialect)
            )
            return None
        body = self.rfile.read(size)
        if len(body) < size:  # the client went away mid-body
            self.close_connection = True
            return None
        return body

    def _close_without_answer(self, path: str, reset: bool) -> None:
        self.server.owner._record(path, None, ())
        self.close_connection = True
        if reset:
            # Linger 0: closing sends a TCP RST, which the client reads as "connection reset". The
            # socket really closes when the handler's file objects do, right after this returns.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _send(self, path: str, reply: _Reply) -> None:
        if reply.status is None:
            raise ValueError("a reply without a status closes the connection; it cannot be sent")
        # Recorded before the last byte leaves, so a client that has its answer sees it in the stats.
        owner = self.server.owner
        owner._record(path, reply.status, reply.served)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client gave up (its timeout) or the server is stopping
            self.close_connection = True
            owner._record(path, reply.status, reply.served, undo_served=True)


def _not_found(method: str, path: str) -> _Reply:
    return _Fail(404, f"Unknown request URL: {method} {path}", code="unknown_url").reply("openai")


# -- command line -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m embedtune.testing.fault_server",
        description="A fault-injecting OpenAI/Ollama embedding server on 127.0.0.1 (Ctrl-C stops).",
    )
    parser.add_argument("--port", type=int, default=8089, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--seed", type=int, default=0)
    for kind in ("429", "500", "503", "slow", "hang", "drop", "malformed", "wrong-rows", "nan"):
        parser.add_argument(f"--rate-{kind}", type=float, default=0.0, metavar="P", help="probability per request")
    parser.add_argument("--retry-after", type=float, default=0.05, metavar="S", help="Retry-After of injected 429s")
    parser.add_argument("--slow", type=float, default=0.2, metavar="S", help="extra seconds of a slow answer")
    parser.add_argument("--hang", type=float, default=5.0, metavar="S", help="seconds a hang lasts")
    parser.add_argument("--latency", type=float, default=0.0, metavar="S", help="seconds added to every answer")
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute (default: unlimited)")
    parser.add_argument("--tpm", type=int, default=None, help="tokens per minute (default: unlimited)")
    parser.add_argument("--window", type=float, default=60.0, metavar="S", help="budget window in seconds")
    parser.add_argument("--api-key-env", metavar="VAR", help="require the API key held in this environment variable")
    parser.add_argument("--max-inputs", type=int, default=2048)
    parser.add_argument("--max-tokens-per-input", type=int, default=8191)
    parser.add_argument("--max-tokens-per-request", type=int, default=300_000)
    parser.add_argument("--ollama-context", type=int, default=2048)
    parser.add_argument("--bad-marker", default="<<BAD>>", help="inputs containing it get 400 ('' turns it off)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--shuffle-rows", action="store_true", help="OpenAI rows in random order")
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> tuple[FaultConfig, int]:
    """The config and port the command line asks for; exits with a usage error if they are wrong."""
    parser = _parser()
    args = parser.parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            parser.error(f"the environment variable {args.api_key_env} is not set or empty")
    rates = {f"rate_{kind}": getattr(args, f"rate_{kind}") for kind in _FAULTS}
    try:
        config = FaultConfig(
            seed=args.seed,
            **rates,
            retry_after_s=args.retry_after,
            slow_s=args.slow,
            hang_s=args.hang,
            latency_s=args.latency,
            rpm=args.rpm,
            tpm=args.tpm,
            window_s=args.window,
            api_key=api_key,
            max_inputs=args.max_inputs,
            max_tokens_per_input=args.max_tokens_per_input,
            max_tokens_per_request=args.max_tokens_per_request,
            ollama_context=args.ollama_context,
            bad_marker=args.bad_marker or None,
            dim=args.dim,
            shuffle_rows=args.shuffle_rows,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535], not {args.port}")
    return config, args.port


def main(argv: Sequence[str] | None = None) -> int:
    config, port = config_from_args(argv)
    try:
        server = FaultServer(config, port=port).start()
    except OSError as exc:
        print(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}; pick another --port", file=sys.stderr)
        return 1
    try:
        print(server.url, flush=True)
        print(f"OpenAI: {server.url}/v1  Ollama: {server.url}  (Ctrl-C stops)", file=sys.stderr, flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
