"""From a chunker spec (``NAME[:key=value,...]``) to a chunker for a given embedder.

    fixed:size=200,overlap=50      recursive      sentence      semantic:rule=iqr,threshold=1.5
    passages      passages:title=true      fixed:size=200,overlap=50,title=true

The limit is ``size`` for fixed and ``max_tokens`` for the others; when the spec does not say, the
``max_tokens`` argument, else the embedder's own maximum. ``passages`` is fixed windows of that
limit overlapping by an eighth (``overlap=`` to choose); ``title=true`` (fixed and passages) reads
each document's title before each of its passages. A limit above the model's maximum is an
error unless ``over_model_limit="allow"`` (the model then truncates such chunks: useful only to
show what that costs).
"""

from __future__ import annotations

from collections.abc import Callable

from ..embedder import Embedder
from ..errors import ConfigError
from .base import Chunker
from .chunkers import FixedChunker, PassageChunker, RecursiveChunker, SentenceChunker
from .semantic import SemanticChunker

__all__ = ["CHUNKER_NAMES", "make_chunker", "parse_chunker_spec"]

CHUNKER_NAMES = ("fixed", "passages", "recursive", "sentence", "semantic")


def _flag(value: str) -> bool:
    """``true``/``false`` (also yes/no, 1/0), any case."""
    lowered = value.lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise ValueError(value)


# Each chunker's options and how to read them; the first is its limit.
_OPTIONS: dict[str, dict[str, Callable[[str], object]]] = {
    "fixed": {"size": int, "overlap": int, "title": _flag},
    "passages": {"max_tokens": int, "overlap": int, "title": _flag},
    "recursive": {"max_tokens": int},
    "sentence": {"max_tokens": int},
    "semantic": {
        "max_tokens": int,
        "rule": str,
        "threshold": float,
        "min_tokens": int,
        "window": int,
    },
}
_CLASSES: dict[str, Callable[..., Chunker]] = {
    "fixed": FixedChunker,
    "passages": PassageChunker,
    "recursive": RecursiveChunker,
    "sentence": SentenceChunker,
    "semantic": SemanticChunker,
}


def parse_chunker_spec(spec: str) -> tuple[str, dict[str, object]]:
    """``"fixed:size=200,overlap=50"`` -> ``("fixed", {"size": 200, "overlap": 50})``."""
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in _OPTIONS:
        raise ConfigError(
            f"unknown chunker {name!r}; choose one of {', '.join(CHUNKER_NAMES)} "
            "(options as NAME:key=value,..., e.g. fixed:size=200,overlap=50)"
        )
    known = _OPTIONS[name]
    options: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if key not in known:
            raise ConfigError(f"chunker {name} has no option {key!r}; its options: {', '.join(known)}")
        if not eq or not value:
            raise ConfigError(f"chunker option {key} needs a value: {name}:{key}=VALUE")
        try:
            options[key] = known[key](value)
        except ValueError:
            kind = {int: "a whole number", float: "a number", _flag: "true or false"}.get(known[key], "text")
            raise ConfigError(f"chunker option {key} must be {kind}, not {value!r}") from None
    return name, options


def make_chunker(
    spec: str,
    embedder: Embedder,
    *,
    max_tokens: int | None = None,
    over_model_limit: str = "error",
) -> Chunker:
    """The chunker a spec names, counting tokens with ``embedder`` (the whole stack: the semantic
    chunker embeds through it, so through its cache)."""
    if over_model_limit not in ("error", "allow"):
        raise ConfigError(f"over_model_limit must be 'error' or 'allow', not {over_model_limit!r}")
    name, options = parse_chunker_spec(spec)
    limit_key = next(iter(_OPTIONS[name]))
    parsed = options.pop(limit_key, None)
    if parsed is None:
        limit = max_tokens if max_tokens is not None else embedder.max_tokens
    elif isinstance(parsed, int):  # parse_chunker_spec reads every limit option as a whole number
        limit = parsed
    else:
        raise TypeError(f"chunker option {limit_key} was read as {parsed!r}, not a whole number")
    if over_model_limit == "error" and limit > embedder.max_tokens:
        flag = "size=" if name == "fixed" else "--max-tokens"
        raise ConfigError(
            f"a chunk limit of {limit} tokens is above {embedder.name}'s maximum of {embedder.max_tokens}; "
            f"the model would cut every longer chunk; lower {flag} to {embedder.max_tokens} or less"
        )
    return _CLASSES[name](embedder, **{limit_key: limit}, **options)
