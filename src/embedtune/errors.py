"""The one exception tree of embedtune.

Every error a user can cause or fix derives from ``EmbedtuneError``; its message is one line that
says what is wrong and what to do next. The CLI prints that line and exits non-zero; anything else
reaching the top is a bug and keeps its traceback.

    EmbedtuneError
    ├── ConfigError                 a setting, option or config file is wrong
    │   └── UnknownModelError       a model URI or name that nothing knows
    ├── InputError                  input texts, files or collections are unusable
    │   └── TextTooLongError        a text over the model's limit under policy "error"
    ├── ModelLoadError              model weights missing, or a folder that is not a model
    │   └── EngineQualityError      a fast engine's vectors stray too far from torch's (names the cosine)
    ├── MissingDependencyError      an optional extra is not installed (message names it)
    ├── CacheError                  the embedding cache cannot be opened or written
    ├── StoreError                  a store cannot be reached, opened or written
    └── ProviderError               an embedding backend failed while embedding
        ├── AuthenticationError     the server refused the credentials (401/403)
        ├── InvalidInputError       the server rejected one input (400); names its index
        └── TransientError          worth retrying: 429, 5xx, timeouts, resets, malformed answers

Secrets never appear in messages.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "CacheError",
    "ConfigError",
    "EmbedtuneError",
    "EngineQualityError",
    "InputError",
    "InvalidInputError",
    "MissingDependencyError",
    "ModelLoadError",
    "ProviderError",
    "StoreError",
    "TextTooLongError",
    "TransientError",
    "UnknownModelError",
]


class EmbedtuneError(Exception):
    """Base of every error embedtune raises on purpose."""


class ConfigError(EmbedtuneError, ValueError):
    """A setting, option or config file is wrong."""


class UnknownModelError(ConfigError):
    """A model URI or configured name that nothing knows."""


class InputError(EmbedtuneError, ValueError):
    """Input texts, files or collections are unusable."""


class TextTooLongError(InputError):
    """A text exceeds the model's maximum tokens and the policy is ``error``."""

    def __init__(self, message: str, *, index: int, tokens: int, limit: int) -> None:
        super().__init__(message)
        self.index = index
        self.tokens = tokens
        self.limit = limit


class ModelLoadError(EmbedtuneError):
    """Model weights cannot be found or the folder is not a model."""


class EngineQualityError(ModelLoadError):
    """A fast engine (ONNX, int8, OpenVINO) fails its check against torch fp32 on the probe texts."""


class MissingDependencyError(EmbedtuneError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class CacheError(EmbedtuneError):
    """The embedding cache cannot be opened or written."""


class StoreError(EmbedtuneError):
    """A store cannot be reached, opened or written (its location is named, passwords masked)."""


class ProviderError(EmbedtuneError):
    """An embedding backend failed while embedding."""


class AuthenticationError(ProviderError):
    """The server refused the credentials; retrying will not help."""


class InvalidInputError(ProviderError):
    """The server rejected one input. ``index`` is its position in the call that raised this.

    Wrappers that reorder or slice texts re-raise it with the index mapped back to their own
    caller's texts (``with_index``), so the user sees the index in their own input.
    """

    def __init__(self, reason: str, *, index: int) -> None:
        super().__init__(f"input {index} was rejected by the server: {reason}")
        self.reason = reason
        self.index = index

    def with_index(self, index: int) -> InvalidInputError:
        return InvalidInputError(self.reason, index=index)


class TransientError(ProviderError):
    """A failure worth retrying. ``retry_after`` is the server's hint in seconds, if it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def require(module: str, extra: str, *, import_now: bool = True):
    """Import an optional dependency, or raise one line that says which extra installs it.

    With ``import_now=False`` only check that it is installed (importing torch takes seconds).
    """
    import importlib
    import importlib.util

    try:
        if not import_now:
            if importlib.util.find_spec(module.partition(".")[0]) is None:
                raise ImportError(module)
            return None
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f'pip install "embedtune[{extra}]"'
        if extra == "local":
            hint = f"pip install torch==2.13.0 && {hint}"
        raise MissingDependencyError(f"{module} is not installed; install it with: {hint}") from exc
