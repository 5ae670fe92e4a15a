"""Distil a sentence-transformers model into a static model (model2vec), for ``embedtune distill``.

model2vec (Tulkens and van Dongen, "Model2Vec: fast state-of-the-art static embeddings", 2024)
runs every token of the model's vocabulary through the model alone, keeps the pooled output as that
token's vector, reduces the table with PCA and weights each token by its estimated frequency (SIF,
Arora et al., 2017). A text's vector is then the mean of its tokens' vectors: no network of
layers to run, so embedding costs a lookup per token.

The output folder is a model2vec model (``local:/that/folder`` everywhere a model is asked for)
with ``embedtune-card.json`` saying what it was distilled from and how. Nothing is downloaded: the
base model must be a local folder or a catalogued model whose weights a package carries.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ModelLoadError, require
from ..providers.local import weights_revision
from ..providers.static import is_static_folder
from .finetune import CARD_FILE
from .training import base_folder, check_out_dir, no_hub_bars

__all__ = ["DEFAULT_DIMS", "DistillOutcome", "distill"]

DEFAULT_DIMS = 256  # model2vec's default; MiniLM's 384 dims lose little at 256 after PCA


@dataclass(frozen=True, kw_only=True)
class DistillOutcome:
    """What ``distill`` wrote: the folder, its URI, the vectors' width, the vocabulary size and the time."""

    out_dir: Path
    uri: str
    base_model: str
    dim: int
    vocabulary: int
    seconds: float


def distill(
    model: str,
    out_dir: str | Path,
    *,
    dims: int | None = None,
    pca: bool = True,
    remove_tokens: str | None = None,
) -> DistillOutcome:
    """Distil the local model ``model`` (a URI) into a static model written to ``out_dir``.

    ``dims`` is the number of PCA components kept (default: ``DEFAULT_DIMS``, or the model's own
    width when that is less); ``pca=False`` keeps the model's own vectors (then ``dims`` must be None). ``remove_tokens`` is a regular
    expression: vocabulary tokens it matches are left out (a smaller, faster model; default:
    model2vec's, the ``[unusedN]`` placeholders). Every check a user can fail runs before the
    model loads: one line each.
    """
    if not pca and dims is not None:
        raise ConfigError("--dims needs PCA to reduce the vectors; drop --no-pca, or drop --dims to keep them all")
    if dims is not None and (not isinstance(dims, int) or dims < 1):
        raise ConfigError(f"--dims must be a positive integer, not {dims!r}")
    pattern = r"\[unused\d+\]" if remove_tokens is None else remove_tokens
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--remove-tokens {remove_tokens!r} is not a regular expression: {exc}") from None
    folder = _base_folder(model)
    native = _hidden_size(folder)
    if dims is not None and native is not None and dims > native:
        raise ConfigError(f"--dims {dims} is more than {model}'s {native} dims; choose at most {native}")
    if dims is None and pca:
        dims = min(DEFAULT_DIMS, native or DEFAULT_DIMS)
    out = check_out_dir(out_dir)
    require("skeletoken", "distill", import_now=False)  # model2vec's distillation needs it; its import says less
    distillation = require("model2vec.distill", "distill")
    transformers = require("transformers", "local")

    start = time.perf_counter()
    with no_hub_bars():
        try:
            network = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True, use_fast=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load {model} from {folder} to distil it: {exc}") from exc
    try:
        static = distillation.distill_from_model(
            network,
            tokenizer,
            pca_dims=dims if pca else None,
            token_remove_pattern=pattern,
            device="cpu",
        )
    except ValueError as exc:  # e.g. a pattern that removes the whole vocabulary
        raise ConfigError(f"cannot distil {model}: {exc}") from exc
    seconds = time.perf_counter() - start

    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place: a killed run leaves no half-written model.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staged = Path(tmp) / "model"
        static.save_pretrained(staged)
        card = {
            "kind": "static",
            "base_model": model,
            "base_revision": weights_revision(folder),
            "dims": int(static.dim),
            "pca": pca,
            "remove_tokens": pattern,
            "vocabulary": len(static.tokens),
            "distill_seconds": round(seconds, 1),
            "model2vec": _version("model2vec"),
        }
        (staged / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # check_out_dir let only an empty folder through
        os.replace(staged, out)
    return DistillOutcome(
        out_dir=out,
        uri=f"local:{out}",
        base_model=model,
        dim=int(static.dim),
        vocabulary=len(static.tokens),
        seconds=seconds,
    )


def _base_folder(model: str) -> Path:
    """The local folder of the model to distil; one line for anything that has none here."""
    folder, _ = base_folder(
        model,
        done="distilled",
        api_hint="distillation runs every token through the model's own weights; give a local model "
        "(local:NAME or local:/path/to/folder)",
    )
    if is_static_folder(folder):
        raise ConfigError(f"{folder} is already a static model; distil the sentence-transformers model it came from")
    return folder


def _hidden_size(folder: Path) -> int | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    size = config.get("hidden_size") if isinstance(config, dict) else None
    return size if isinstance(size, int) else None


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"
