"""What ``GET /metrics`` shows, in Prometheus' text exposition format (version 0.0.4).

Counters and histograms are written by hand here (a few dozen lines; no client library): every
update takes one lock, and :meth:`Metrics.render` writes the text. Routes are labelled by their
template (``/v1/embeddings``), and paths that match no route by ``unmatched``, so random paths
cannot grow the label set.

The ASGI middleware :class:`RequestMetrics` times every request and counts it by route and
status, the service's own answers and the framework's (404, 405, 413) and failures alike.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE", "Histogram", "Metrics", "RequestMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

Labels = tuple[tuple[str, str], ...]


class Histogram:
    """Observations counted into cumulative buckets (``le``), with their sum and count."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: Labels) -> list[str]:
        out = []
        running = 0
        for bound, count in zip([*map(_number, self.buckets), "+Inf"], self.counts):
            running += count
            out.append(f"{name}_bucket{_labels((*labels, ('le', bound)))} {running}")
        out.append(f"{name}_sum{_labels(labels)} {_number(self.sum)}")
        out.append(f"{name}_count{_labels(labels)} {self.count}")
        return out


class Metrics:
    """The service's counters and histograms; thread-safe.

    ``gauges`` are read when rendering: callables returning the current value (the queue's
    depth, the cache's hits), so the numbers come from their owners, not from copies.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[Labels, int] = defaultdict(int)
        self._latency: dict[Labels, Histogram] = {}
        self._batch_texts = Histogram(SIZE_BUCKETS)
        self._batch_tokens = Histogram([2**i for i in range(6, 20)])
        self._queue_wait = Histogram(WAIT_BUCKETS)
        self._texts = 0
        self._tokens = 0
        self.gauges: dict[str, tuple[str, str, Callable[[], float]]] = {}

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(("route", route), ("status", str(status)))] += 1
            key = (("route", route),)
            if key not in self._latency:
                self._latency[key] = Histogram(LATENCY_BUCKETS)
            self._latency[key].observe(seconds)

    def batch(self, texts: int, tokens: int, waits: Sequence[float]) -> None:
        """One model batch: its texts and tokens, and how long each text waited in the queue."""
        with self._lock:
            self._batch_texts.observe(texts)
            self._batch_tokens.observe(tokens)
            for wait in waits:
                self._queue_wait.observe(wait)
            self._texts += texts
            self._tokens += tokens

    def gauge(self, name: str, help: str, read: Callable[[], float], *, kind: str = "gauge") -> None:
        """Show ``read()`` as ``name`` (a ``gauge``, or a ``counter`` kept by someone else)."""
        self.gauges[name] = (kind, help, read)

    def render(self) -> str:
        with self._lock:
            lines = _header("embedtune_requests_total", "counter", "HTTP requests answered, by route and status.")
            lines += [f"embedtune_requests_total{_labels(k)} {v}" for k, v in sorted(self._requests.items())]
            lines += _header("embedtune_request_duration_seconds", "histogram", "Time to answer a request, by route.")
            for labels, histogram in sorted(self._latency.items()):
                lines += histogram.lines("embedtune_request_duration_seconds", labels)
            lines += _header("embedtune_batch_texts", "histogram", "Texts per model batch.")
            lines += self._batch_texts.lines("embedtune_batch_texts", ())
            lines += _header("embedtune_batch_tokens", "histogram", "Tokens per model batch.")
            lines += self._batch_tokens.lines("embedtune_batch_tokens", ())
            lines += _header("embedtune_queue_wait_seconds", "histogram", "Time a text waited for its batch.")
            lines += self._queue_wait.lines("embedtune_queue_wait_seconds", ())
            lines += _header("embedtune_texts_total", "counter", "Texts handed to the embedding stack.")
            lines.append(f"embedtune_texts_total {self._texts}")
            lines += _header("embedtune_tokens_total", "counter", "Tokens of those texts.")
            lines.append(f"embedtune_tokens_total {self._tokens}")
            gauges = sorted(self.gauges.items())
        for name, (kind, help, read) in gauges:
            lines += _header(name, kind, help)
            lines.append(f"{name} {_number(read())}")
        return "\n".join(lines) + "\n"


def _header(name: str, kind: str, help: str) -> list[str]:
    return [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class RequestMetrics:
    """ASGI middleware: each HTTP request's route, status and duration into ``metrics``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # unless the app answers: an exception that escapes is answered 500 outside

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.request(route, status, time.perf_counter() - start)
