"""Embedding on a Ray cluster: the batcher's batches run as one Ray Data job on actors.

``RayEmbedder`` is a :class:`BatchingEmbedder` whose planned batches (count and token bounded,
length-sorted) are embedded by Ray Data ``map_batches`` on a pool of actors instead of in this
process. Each actor builds the model once from the same spec as a single process would (the
factory hands over ``make``, a picklable function that opens the provider), so a vector from the
cluster equals one from here. The provider held here (``inner``) only names, counts tokens and
fingerprints; it never loads the weights.

Where it sits: ``LengthPolicy(CachingEmbedder(RayEmbedder(provider)))``. The cache stays in this
process, so only its misses go to the cluster, each distinct text once, and it commits vectors
as they stream back (``embed_parts``), so a killed driver loses only what was in flight.

A cluster job pays a start-up cost (actors start and load the model), so each call is one job:
callers that slice their input send it whole when :func:`embedtune.engine.whole_calls` says so.

Faults: Ray Data restarts a dead actor and retries the tasks it held (its actor pools default to
``max_restarts=-1`` and ``max_task_retries=-1``; passing them is deprecated, and the tests kill an
actor to check it). Rows carry their index, so the result is put back in input order, and a row
missing or seen twice fails the call instead of passing silently.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..embedder import Embedder, Kind, check_kind, empty_vectors
from ..errors import ConfigError, EmbedtuneError, InvalidInputError, ProviderError, require
from .batching import BatchingEmbedder, plan_batches

__all__ = ["RayEmbedder", "RayOptions", "connect", "quiet_core_log", "ray_session"]

LOCAL = "auto"
_CONNECT_TIMEOUT = 5.0  # seconds: an address that does not answer fails fast, before Ray waits on it


@dataclass(frozen=True, kw_only=True)
class RayOptions:
    """Where the cluster is (``auto``: start a local one; ``host:6379`` or ``ray://host:10001``:
    connect) and how many actors embed (``None``: one per CPU of the cluster)."""

    address: str = LOCAL
    workers: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip():
            raise ConfigError("--ray needs 'auto' or a cluster address such as ray://host:10001 or host:6379")
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise ConfigError(f"Ray workers must be a positive integer, not {self.workers!r}")

    @property
    def local(self) -> bool:
        """A cluster this process starts (``auto``), not one it joins."""
        return self.address == LOCAL


def connect(address: str) -> bool:
    """Join the cluster at ``address`` (``auto``: start a local one). True when this call
    connected, so the caller shuts the connection down; False when Ray was already connected."""
    ray = require("ray", "ray")
    if address != LOCAL:
        _check_reachable(address)
    if ray.is_initialized():
        return False
    init: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
    if address == LOCAL:
        target = "local"
        init["include_dashboard"] = False  # a setting for clusters this process starts, not joins
    else:
        target = address
    try:
        with quiet_core_log():
            ray.init(address=target, **init)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"cannot join the Ray cluster at {address}: {first}") from exc
    return True


@contextmanager
def quiet_core_log() -> Iterator[None]:
    """Around ``ray.init``: this process's Ray core prints fatal errors only.

    Ray Data passes object references to the constructor of its map actors, which restart on
    failure, so Ray's core logs an error line for every job: "Actor ... has constructor arguments
    in the object store and max_restarts > 0" (ray-project/ray issues 53727 and 57733). The
    references live in this process for the job's life, so restarts work (a killed actor's texts
    come back, as the tests check). The core reads its level once, when the process joins (and
    says so in one line then, instead of one per job); a cluster started here inherits it. A
    ``RAY_BACKEND_LOG_LEVEL`` the user set is kept.
    """
    if "RAY_BACKEND_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["RAY_BACKEND_LOG_LEVEL"] = "fatal"
    try:
        yield
    finally:
        os.environ.pop("RAY_BACKEND_LOG_LEVEL", None)


@contextmanager
def ray_session(options: RayOptions | None) -> Iterator[None]:
    """Connected to the cluster inside (nothing when ``options`` is None), so the embedders built
    inside share one connection; disconnects at the end if it connected."""
    owner = options is not None and connect(options.address)
    try:
        yield
    finally:
        if owner:
            import ray

            ray.shutdown()


def _check_reachable(address: str) -> None:
    """A TCP connection to the address, with a short timeout: Ray itself retries for a minute."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise ConfigError(
            f"--ray {address}: give 'auto' or a cluster address with a port, such as ray://host:10001 or host:6379"
        )
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({reason}); start one with `ray start --head` "
            "there, or give --ray auto for a local cluster"
        ) from None


def _job_settings(context: Any) -> None:
    """One job's Ray Data settings: quiet (the CLI shows its own progress and prints errors as
    one line), and an actor's own exception raised as itself, not wrapped."""
    import logging

    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.raise_original_map_exception = True
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # it logs each error we raise


class _EmbedActor:
    """Holds one model for the actor's life; embeds one planned batch per call.

    ``make`` is set on a subclass per job (:func:`_actor_class`): a class shipped by value needs
    no constructor arguments in the object store, which an actor restart could lose.
    """

    make: Callable[[], Embedder]

    def __init__(self) -> None:
        self.error: EmbedtuneError | None = None
        try:
            self.embedder = type(self).make()
        except EmbedtuneError as exc:  # raised with the first batch: Ray would report a dead actor
            self.error = exc

    def __call__(self, batch: dict[str, np.ndarray], kind: Kind) -> dict[str, np.ndarray]:
        if self.error is not None:
            raise self.error
        rows = np.asarray(batch["rows"][0], dtype=np.int64)
        texts = [str(t) for t in batch["texts"][0]]
        try:
            vectors = self.embedder.embed(texts, kind)
        except InvalidInputError as exc:
            raise exc.with_index(int(rows[exc.index])) from None
        return {"row": rows, "vector": np.asarray(vectors, dtype=np.float32)}


class RayEmbedder(BatchingEmbedder):
    """A batcher whose batches run on a Ray cluster's actors; rows return in input order.

    ``inner`` is the provider in this process (names, token counts, fingerprints); ``make``
    builds the same provider on each actor. Connects on the first call that embeds, and
    ``close()`` disconnects when this embedder connected.
    """

    whole_calls = True  # each call is one cluster job: callers send their input whole

    def __init__(
        self,
        inner: Embedder,
        make: Callable[[], Embedder],
        *,
        options: RayOptions | None = None,
        max_batch: int = 32,
        max_batch_tokens: int = 16_384,
        sort_by_length: bool = True,
        on_progress: Callable[[int], None] | None = None,
        max_batch_pixels: int = 32 * 2**20,
    ) -> None:
        # Images are embedded in this process (the inherited embed_images); texts go to the cluster.
        super().__init__(
            inner,
            max_batch=max_batch,
            max_batch_tokens=max_batch_tokens,
            sort_by_length=sort_by_length,
            on_progress=on_progress,
            max_batch_pixels=max_batch_pixels,
        )
        self.make = make
        self.options = options or RayOptions()
        self._owner: bool | None = None  # None: not connected yet

    def connect(self) -> None:
        """Join the cluster now (the first embedding call does it otherwise)."""
        if self._owner is None:
            self._owner = connect(self.options.address)

    def close(self) -> None:
        if self._owner:
            import ray

            ray.shutdown()
        self._owner = None

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        check_kind(kind)
        if not texts:
            return empty_vectors(self.dim)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for rows, vectors in self.embed_parts(texts, kind):
            out[rows] = vectors
        return out

    def embed_parts(self, texts: Sequence[str], kind: Kind = "document") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Embed ``texts`` in one job, yielding ``(rows, vectors)`` as batches finish, in any order.

        Every row comes exactly once, or the iteration raises.
        """
        check_kind(kind)
        if not texts:
            return
        self.connect()
        import ray

        started = time.perf_counter()
        lengths = [min(self.inner.count_tokens(t, kind), self.max_tokens) for t in texts]
        batches = plan_batches(
            lengths, max_batch=self.max_batch, max_tokens=self.max_batch_tokens, sort=self.sort_by_length
        )
        items = [{"rows": batch, "texts": [texts[i] for i in batch]} for batch in batches]
        workers = self.options.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        with warnings.catch_warnings():  # Ray's first DataContext trips over its own deprecated field
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                _actor_class(self.make),
                fn_kwargs={"kind": kind},
                batch_size=1,  # one planned batch per call: the plan already bounds count and tokens
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=min(workers, len(items))),
                num_cpus=1,
            )
        _job_settings(dataset.context)
        seen = np.zeros(len(texts), dtype=bool)
        try:
            for part in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                rows = np.asarray(part["row"], dtype=np.int64)
                vectors = np.asarray(part["vector"], dtype=np.float32)
                if vectors.shape != (len(rows), self.dim):
                    raise ProviderError(
                        f"{self.name} returned vectors of shape {vectors.shape} for {len(rows)} texts on the cluster"
                    )
                if seen[rows].any() or len(np.unique(rows)) != len(rows):
                    raise ProviderError(f"the Ray cluster returned some of the {len(texts)} texts twice")
                seen[rows] = True
                self.stats.batches += 1
                self.stats.tokens += sum(lengths[i] for i in rows)
                if self.on_progress:
                    self.on_progress(len(rows))
                self.stats.seconds += time.perf_counter() - started
                yield rows, vectors  # the consumer's time (the cache's writes) is not the job's
                started = time.perf_counter()
        except Exception as exc:  # an error an actor raised comes back wrapped: find ours inside
            cause = _embedtune_cause(exc)
            if cause is None or cause is exc:
                raise
            if cause.args and isinstance(cause.args[0], str):  # Ray Data appends retry advice below ours
                cause.args = (cause.args[0].partition("\n")[0], *cause.args[1:])
            raise cause from None
        self.stats.seconds += time.perf_counter() - started
        if not seen.all():
            raise ProviderError(f"the Ray cluster returned {int(seen.sum())} of {len(texts)} texts")
        self.stats.texts += len(texts)


def _actor_class(make: Callable[[], Embedder]) -> type[_EmbedActor]:
    return type("EmbedActor", (_EmbedActor,), {"make": staticmethod(make)})


def _embedtune_cause(exc: BaseException) -> EmbedtuneError | None:
    """The embedtune error an actor raised, out of the wrappers Ray and Ray Data put around it
    (Ray's wrapper subclasses the error it carries, with the remote traceback as its message)."""
    from ray.exceptions import RayTaskError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, EmbedtuneError) and not isinstance(current, RayTaskError):
            return current
        inner = getattr(current, "cause", None)
        current = inner if isinstance(inner, BaseException) else (current.__cause__ or current.__context__)
    return None
