"""Fast engines for sentence-transformers folders: ONNX Runtime (fp32, int8) and OpenVINO.

A folder is exported once to ONNX with ``torch.onnx.export`` (the TorchScript exporter: optimum
conflicts with the pinned stack). The whole sentence-transformers pipeline (transformer, pooling,
normalisation, any dense layer) is traced into the graph, so an engine's output means what
``SentenceTransformer.encode`` gives; the caller cuts dims and normalises as it does for torch.
The export, its int8 copy and what was measured about them live under
``<models dir>/engines/<weights hash>/``: a changed folder is a new hash, so nothing goes stale.

Every engine but torch is checked against torch's fp32 vectors of a fixed probe set (texts from
the sample collection embedtune ships, short ones and some at the model's token limit):

- ``onnx`` and ``openvino`` must keep every probe vector within ``FAITHFUL_MIN_COSINE`` (0.999);
  OpenVINO runs in the CPU's default precision (bf16 where the CPU has it) and falls back to f32
  when that drifts past the check;
- ``onnx-int8`` (MatMul weights only, per channel: default options cost too much) and
  ``openvino-int8`` (NNCF's post-training quantisation of weights and activations, calibrated on
  other texts of the same sample collection) must keep the mean cosine at or above
  ``INT8_MEAN_COSINE`` (0.99).

``auto`` times each installed faithful engine (never int8) on the probe and keeps the fastest;
the choice is written per model and machine, so it is measured once.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, EngineQualityError, require

__all__ = [
    "FAITHFUL_MIN_COSINE",
    "INT8_MEAN_COSINE",
    "Artefacts",
    "Engine",
    "EngineRunner",
    "Probe",
    "check_engine_installed",
    "check_quality",
    "choose_engine",
    "engine_label",
    "engine_of_label",
    "open_runner",
    "parse_engine",
    "physical_cores",
]

_log = logging.getLogger("embedtune.engines")  # the CLI prints its records as notes

FAITHFUL_MIN_COSINE = 0.999
INT8_MEAN_COSINE = 0.99
OPENVINO_F32 = "openvino-f32"
PROBE_TEXTS = 32
PROBE_LONG_TEXTS = 8  # of the probe texts, at the model's token limit
_EXPORT_VERSION = 2  # bump when the export recipe changes: old exports are then ignored


class Engine(str, Enum):
    AUTO = "auto"
    TORCH = "torch"
    ONNX = "onnx"
    ONNX_INT8 = "onnx-int8"
    OPENVINO = "openvino"
    OPENVINO_INT8 = "openvino-int8"


_INT8 = (Engine.ONNX_INT8, Engine.OPENVINO_INT8)  # judged on the mean cosine, never chosen by auto

# The modules each engine imports, and the extra that installs them.
_NEEDS: dict[Engine, tuple[tuple[str, str], ...]] = {
    Engine.AUTO: (),
    Engine.TORCH: (),
    Engine.ONNX: (("onnxruntime", "onnx"), ("onnx", "onnx")),
    Engine.ONNX_INT8: (("onnxruntime", "onnx"), ("onnx", "onnx")),
    Engine.OPENVINO: (("openvino", "openvino"),),
    Engine.OPENVINO_INT8: (("openvino", "openvino"), ("nncf", "openvino")),
}


def parse_engine(value: Any) -> Engine:
    try:
        return Engine(value)
    except ValueError:
        choices = " | ".join(e.value for e in Engine)
        raise ConfigError(f"engine must be {choices}, not {value!r}") from None


def check_engine_installed(engine: Engine) -> None:
    """Raise one line naming the extra to install when ``engine``'s packages are missing."""
    for module, extra in _NEEDS[engine]:
        require(module, extra, import_now=False)


def _installed(engine: Engine) -> bool:
    try:
        check_engine_installed(engine)
    except ImportError:
        return False
    return True


def physical_cores() -> int:
    """Cores this process may run on, counting a core's hyper-threads once (inference threads
    sharing a core only slow each other down)."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                ((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip())
            )
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


# -- the probe ------------------------------------------------------------------------------


def _sample() -> tuple[list[str], list[str]]:
    """The documents (title and text) and queries of the sample collection embedtune ships."""
    sample = resources.files("embedtune") / "data" / "sample"

    def read(name: str) -> list[dict[str, str]]:
        return [json.loads(line) for line in (sample / name).read_text(encoding="utf-8").splitlines()]

    docs = [f"{doc['title']} {doc['text']}" for doc in read("corpus.jsonl")]
    return docs, [query["text"] for query in read("queries.jsonl")]


def _probe_documents(docs: list[str]) -> list[str]:
    """The sample documents the probe draws on; calibration never sees them."""
    return docs[::6]


def _joined(docs: list[str], start: int, words: int) -> str:
    """``docs`` from ``start`` on (round again if need be), joined and cut to ``words`` words."""
    taken: list[str] = []
    for i in range(start, start + words):  # every document has at least one word
        taken += docs[i % len(docs)].split()
        if len(taken) >= words:
            break
    return " ".join(taken[:words])


def probe_texts(max_tokens: int) -> list[str]:
    """A fixed set of mixed-length texts from the sample collection embedtune ships: documents cut
    to 20-120 words, queries, and ``PROBE_LONG_TEXTS`` documents joined to ``max_tokens`` words.
    A word is at least one token, so those reach the model's limit: an engine that drifts on long
    inputs (mpnet's OpenVINO int8 does) is judged on them, not only on short ones."""
    docs, queries = _sample()
    owned = _probe_documents(docs)
    short = (PROBE_TEXTS - PROBE_LONG_TEXTS) // 2
    texts = [" ".join(doc.split()[: 20 + 10 * (i % 11)]) for i, doc in enumerate(owned[:short])]
    texts += [_joined(owned, i * len(owned) // PROBE_LONG_TEXTS, max_tokens) for i in range(PROBE_LONG_TEXTS)]
    return texts + queries[::3][: PROBE_TEXTS - len(texts)]


def calibration_texts(max_tokens: int) -> list[str]:
    """What int8 activations are calibrated on: the sample collection's other documents (cut to
    20-250 words) and queries, none of them in a probe text, so the probe judges unseen texts."""
    docs, queries = _sample()
    probe = set(probe_texts(max_tokens))
    owned = set(_probe_documents(docs))
    kept = [doc for doc in docs if doc not in owned]
    texts = [" ".join(doc.split()[: 20 + 12 * (i % 20)]) for i, doc in enumerate(kept)]
    return [t for t in texts + [q for i, q in enumerate(queries) if i % 3] if t not in probe]


@dataclass(frozen=True)
class Probe:
    """How an engine did on the probe set against torch fp32: cosines and speed."""

    mean_cosine: float
    min_cosine: float
    texts_per_s: float


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def _timed(encode: Callable[[list[str]], np.ndarray], texts: list[str], rounds: int = 2) -> tuple[np.ndarray, float]:
    """Vectors of ``texts`` in length-sorted batches of 16, and texts per second (after a warm-up).

    The speed is the best of ``rounds`` passes: a busy machine only ever slows a pass down, so the
    fastest one is the closest to what the engine can do, and engines timed this way compare fairly.
    """
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    encode(texts[:4])
    out: list[np.ndarray] = [np.empty(0)] * len(texts)
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(order), 16):
            batch = order[i : i + 16]
            for j, row in zip(batch, encode([texts[j] for j in batch])):
                out[j] = row
        best = min(best, time.perf_counter() - start)
    return np.stack(out).astype(np.float32), len(texts) / max(best, 1e-9)


# -- the exported artefacts ------------------------------------------------------------------


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary name in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        partial = Path(tmp) / path.name
        write(partial)
        os.replace(partial, path)


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """The TorchScript exporter warns that it is legacy and that traced shape checks are
    constants; onnxruntime's quantiser logs advice through the root logger. Neither concerns a
    user, and under ``-W error`` the warnings would fail the export."""
    root = logging.getLogger()
    sink = logging.NullHandler()  # while a handler exists, logging.warning does not configure the root
    root.addHandler(sink)
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(previous)
        root.removeHandler(sink)


class Artefacts:
    """The exports of one model folder (keyed by its weights hash) and what was measured on them."""

    _lock = threading.Lock()  # one export at a time within a process

    def __init__(self, folder: Path, revision: str, root: Path, max_tokens: int, load_model: Callable[[], Any]) -> None:
        self.folder = folder
        self.max_tokens = max_tokens
        self.dir = root / "engines" / f"{revision}-v{_EXPORT_VERSION}"
        self._load_model = load_model

    @property
    def onnx_path(self) -> Path:
        return self.dir / "model.onnx"

    @property
    def meta_path(self) -> Path:
        return self.dir / "meta.json"

    def meta(self) -> dict[str, Any]:
        self.export()
        return json.loads(self.meta_path.read_text(encoding="utf-8"))

    def export(self) -> Path:
        """The fp32 ONNX graph of the whole pipeline, exported on first use."""
        with self._lock:
            if not (self.onnx_path.exists() and self.meta_path.exists()):
                self._export()
        return self.onnx_path

    def _export(self) -> None:
        import torch

        model = self._load_model()
        sample = model.preprocess(["a short text", "a somewhat longer text to give the sequence axis room"])
        names = [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in sample]

        class Pipeline(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *inputs):
                return self.model(dict(zip(names, inputs)))["sentence_embedding"]

        axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"embedding": {0: "batch"}}
        tokenizer = model.tokenizer

        def write(path: Path) -> None:
            with _quiet_export(), torch.no_grad():
                torch.onnx.export(
                    Pipeline().eval(),
                    tuple(sample[n] for n in names),
                    str(path),
                    input_names=names,
                    output_names=["embedding"],
                    dynamic_axes=axes,
                    opset_version=17,
                    dynamo=False,
                )

        # Eager attention traces to the plain MatMul/Softmax pattern onnxruntime fuses; SDPA's trace
        # ran at two thirds of the speed here. The torch model is put back as it was after the export.
        transformer: Any = getattr(model[0], "auto_model", None) if len(model) else None
        attention = getattr(getattr(transformer, "config", None), "_attn_implementation", None)
        if attention not in (None, "eager") and hasattr(transformer, "set_attn_implementation"):
            transformer.set_attn_implementation("eager")
            try:
                _atomic(self.onnx_path, write)
            finally:
                transformer.set_attn_implementation(attention)
        else:
            _atomic(self.onnx_path, write)
        meta = {"inputs": names, "pad_id": int(tokenizer.pad_token_id or 0), "pad_token": tokenizer.pad_token}
        _atomic(self.meta_path, lambda p: p.write_text(json.dumps(meta), encoding="utf-8"))
        _log.info("exported %s to ONNX once, in %s", self.folder, self.dir)

    def int8(self) -> Path:
        """The int8 copy: dynamic quantisation of MatMul weights, per output channel."""
        path = self.dir / "model-int8.onnx"
        fp32 = self.export()
        with self._lock:
            if not path.exists():
                from onnxruntime.quantization import QuantType, quantize_dynamic

                def write(out: Path) -> None:
                    with _quiet_export():
                        quantize_dynamic(
                            fp32, out, per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
                        )

                _atomic(path, write)
        return path

    def openvino_int8(self) -> Path:
        """OpenVINO's int8 model (NNCF post-training quantisation), made on first use."""
        path = self.dir / "openvino-int8.xml"
        fp32 = self.export()
        with self._lock:
            if not path.exists():
                self._quantise_openvino(fp32, path)
        return path

    def _quantise_openvino(self, fp32: Path, path: Path) -> None:
        nncf = require("nncf", "openvino")
        ov = require("openvino", "openvino")
        meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        tokenizer = _tokenizer(self.folder, meta, self.max_tokens)
        texts = sorted(calibration_texts(self.max_tokens), key=len)  # similar lengths per batch, as when embedding
        batches = [_feed(tokenizer, meta["inputs"], texts[i : i + 8]) for i in range(0, len(texts), 8)]
        nncf_log = logging.getLogger("nncf")
        level = nncf_log.level
        nncf_log.setLevel(logging.ERROR)
        try:
            # NNCF draws progress bars on stdout; an export is not the user's business
            with _quiet_export(), open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                model = nncf.quantize(
                    ov.Core().read_model(str(fp32)),
                    nncf.Dataset(batches),
                    model_type=nncf.ModelType.TRANSFORMER,
                    subset_size=len(batches),
                )
        finally:
            nncf_log.setLevel(level)
        # The .xml names its .bin by its own stem: both are written under their final names in a
        # temporary folder, then moved in, the .xml last (its presence means the pair is whole).
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            ov.save_model(model, str(Path(tmp) / path.name), compress_to_fp16=False)
            os.replace(Path(tmp) / path.with_suffix(".bin").name, path.with_suffix(".bin"))
            os.replace(Path(tmp) / path.name, path)
        _log.info("quantised %s to OpenVINO int8 once, in %s", self.folder, self.dir)

    def _torch_encode(self, texts: list[str]) -> np.ndarray:
        model = self._load_model()
        return model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)

    def reference(self) -> np.ndarray:
        """torch fp32's vectors of the probe texts (kept: later checks need no torch)."""
        texts = probe_texts(self.max_tokens)
        path = self.dir / f"probe-{self._probe_key()}.npy"
        if path.exists():
            return np.load(path)
        vectors, speed = _timed(self._torch_encode, texts)
        _atomic(path, lambda p: np.save(p, vectors))
        self.remember(torch=asdict(Probe(mean_cosine=1.0, min_cosine=1.0, texts_per_s=speed)))
        return vectors

    def torch_speed(self) -> float:
        """torch's texts per second on the probe set, measured once per machine."""
        self.reference()  # the first time, timed while it makes the reference vectors: one measurement
        known = self.measured().get("torch")
        if known is None:
            _, speed = _timed(self._torch_encode, probe_texts(self.max_tokens))
            self.remember(torch=asdict(Probe(mean_cosine=1.0, min_cosine=1.0, texts_per_s=speed)))
            return speed
        return float(known["texts_per_s"])

    # -- measurements, per machine: int8 and bf16 kernels differ between CPUs ------------------

    @property
    def decisions_path(self) -> Path:
        # the probe's key too: figures from another probe set or limit are not comparable
        return self.dir / f"machine-{_machine_key()}-{self._probe_key()}.json"

    def _probe_key(self) -> str:
        key = "\n".join([*probe_texts(self.max_tokens), str(self.max_tokens)])
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def measured(self) -> dict[str, Any]:
        try:
            return json.loads(self.decisions_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def remember(self, **values: Any) -> None:
        data = self.measured() | values
        _atomic(self.decisions_path, lambda p: p.write_text(json.dumps(data, indent=1), encoding="utf-8"))


def _machine_key() -> str:
    """CPU model, the instruction sets the engines' kernels choose by, cores and engine versions."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    value = " ".join(f for f in value.split() if f.startswith(("avx", "amx")))
                cpu += value.strip() + ";"
                if key.strip() == "flags":
                    break
    versions = []
    for package in ("onnxruntime", "openvino", "torch"):
        try:
            versions.append(f"{package}={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package}=none")
    text = "|".join([platform.machine(), cpu, str(physical_cores()), *versions])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- runners ---------------------------------------------------------------------------------


class EngineRunner:
    """Tokenises with the folder's fast tokenizer and runs one exported graph.

    ``encode(texts)`` returns the pipeline's sentence embeddings (float32, input order). Texts
    are padded to the longest in the call, so callers batch texts of similar length together
    (the BatchingEmbedder sorts local models' texts by length). ``encode_batches`` does the same
    for a stream of batches, tokenising the next batch on a thread while the engine runs this one.
    """

    def __init__(self, engine: Engine, label: str, tokenizer: Any, inputs: list[str], run: Callable) -> None:
        self.engine = engine
        self.label = label  # what the fingerprint names: the engine and its precision
        self._tokenizer = tokenizer
        self._inputs = inputs
        self._run = run

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._infer(self._feed(texts))

    def encode_batches(self, batches: Iterable[Sequence[str]]) -> Iterator[np.ndarray]:
        """Each batch's embeddings, in order. Tokenising (the tokenizer drops the GIL) overlaps
        inference (so do the engines): one batch ahead is enough, and keeps one feed in memory."""
        batches = iter(batches)
        first = next(batches, None)
        if first is None:
            return
        with ThreadPoolExecutor(1, thread_name_prefix="embedtune-tokenize") as pool:
            pending = pool.submit(self._feed, first)
            for batch in batches:
                feed = pending.result()  # a tokeniser error surfaces with the batch it belongs to
                pending = pool.submit(self._feed, batch)
                yield self._infer(feed)
            yield self._infer(pending.result())

    def _feed(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        return _feed(self._tokenizer, self._inputs, texts)

    def _infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self._run(feed), dtype=np.float32)


_COLUMNS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def _feed(tokenizer: Any, inputs: list[str], texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The graph's inputs for ``texts``: token ids, mask and types, padded to the longest."""
    encodings = tokenizer.encode_batch(list(texts))
    return {name: np.array([getattr(e, _COLUMNS[name]) for e in encodings], dtype=np.int64) for name in inputs}


def _tokenizer(folder: Path, meta: dict[str, Any], max_tokens: int):
    import tokenizers

    tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(pad_id=meta["pad_id"], pad_token=meta["pad_token"] or "[PAD]")
    return tokenizer


def engine_of_label(label: str) -> Engine:
    """The engine a fingerprint's label names (``openvino-bf16`` is OpenVINO)."""
    if label == Engine.OPENVINO_INT8.value:
        return Engine.OPENVINO_INT8
    return Engine.OPENVINO if label.startswith("openvino-") else Engine(label)


def engine_label(engine: Engine) -> str:
    """The engine as the fingerprint names it: OpenVINO with the precision it runs in here."""
    if engine is Engine.OPENVINO:
        ov = require("openvino", "openvino")
        return f"openvino-{_type_name(ov.Core().get_property('CPU', 'INFERENCE_PRECISION_HINT'))}"
    return engine.value


def _type_name(value: Any) -> str:
    # an openvino Type prints as <Type: 'bfloat16'>; to_string() gives its short name (bf16)
    return str(value.to_string()) if hasattr(value, "to_string") else str(value)


def open_runner(engine: Engine, artefacts: Artefacts, label: str | None = None) -> EngineRunner:
    """A ready runner for ``engine`` (not torch, not auto) over the folder's exports.

    ``label`` is what :func:`check_quality` or :func:`choose_engine` settled on: for OpenVINO,
    ``openvino-f32`` asks for full precision where the CPU's default (bf16) was not faithful.
    """
    threads = physical_cores()
    meta = artefacts.meta()
    tokenizer = _tokenizer(artefacts.folder, meta, artefacts.max_tokens)
    if engine in (Engine.OPENVINO, Engine.OPENVINO_INT8):
        ov = require("openvino", "openvino")
        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if label == OPENVINO_F32:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        path = artefacts.openvino_int8() if engine is Engine.OPENVINO_INT8 else artefacts.export()
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        request = compiled.create_infer_request()
        output = compiled.output(0)
        busy = threading.Lock()  # an infer request serves one call at a time

        def run_ov(feed: dict[str, np.ndarray]) -> np.ndarray:
            with busy:
                return np.array(request.infer(feed)[output])

        if engine is Engine.OPENVINO:
            label = f"openvino-{_type_name(compiled.get_property('INFERENCE_PRECISION_HINT'))}"
        else:
            label = engine.value
        return EngineRunner(engine, label, tokenizer, meta["inputs"], run_ov)
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT's graph-fusion notes are not the user's business
    path = artefacts.int8() if engine is Engine.ONNX_INT8 else artefacts.export()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run_ort(feed: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, feed)[0]

    return EngineRunner(engine, engine.value, tokenizer, meta["inputs"], run_ort)


def measure(runner: EngineRunner, artefacts: Artefacts) -> Probe:
    """The runner against torch fp32 on the probe set; remembered per model and machine."""
    reference = artefacts.reference()
    vectors, speed = _timed(runner.encode, probe_texts(artefacts.max_tokens))
    cosines = _cosines(vectors, reference)
    probe = Probe(mean_cosine=float(cosines.mean()), min_cosine=float(cosines.min()), texts_per_s=speed)
    artefacts.remember(**{runner.label: asdict(probe)})
    return probe


def _passes(engine: Engine, probe: Probe) -> bool:
    if engine in _INT8:
        return probe.mean_cosine >= INT8_MEAN_COSINE
    return probe.min_cosine >= FAITHFUL_MIN_COSINE


def _probe(engine: Engine, artefacts: Artefacts, label: str) -> Probe:
    """``engine`` (run as ``label`` says) against torch on the probe set, measured once per machine."""
    known = artefacts.measured().get(label)
    return Probe(**known) if known else measure(open_runner(engine, artefacts, label), artefacts)


def _faithful_label(engine: Engine, artefacts: Artefacts, model: str) -> tuple[str, Probe]:
    """The label ``engine`` runs under here and its probe: OpenVINO falls back to f32 when the
    CPU's default precision (bf16 where the CPU has it) drifts past the check, as mpnet's does."""
    label = engine_label(engine)
    probe = _probe(engine, artefacts, label)
    if engine is Engine.OPENVINO and label != OPENVINO_F32 and not _passes(engine, probe):
        full = _probe(engine, artefacts, OPENVINO_F32)
        if _passes(engine, full):
            _log.info(
                "%s: %s reached minimum cosine %.5f to torch; running OpenVINO in f32",
                model,
                label,
                probe.min_cosine,
            )
            return OPENVINO_F32, full
    return label, probe


def check_quality(engine: Engine, artefacts: Artefacts, model: str) -> str:
    """``engine``'s fingerprint label once its probe passes (measured once per machine), or one
    line naming the cosine it reached."""
    label, probe = _faithful_label(engine, artefacts, model)
    if not _passes(engine, probe):
        if engine in _INT8:
            figure, needed = f"mean cosine {probe.mean_cosine:.4f}", INT8_MEAN_COSINE
        else:
            figure, needed = f"minimum cosine {probe.min_cosine:.5f}", FAITHFUL_MIN_COSINE
        raise EngineQualityError(
            f"engine {engine.value} fails its quality check for {model}: {figure} to torch fp32 on "
            f"{PROBE_TEXTS} probe texts, {PROBE_LONG_TEXTS} of them at its {artefacts.max_tokens}-token limit "
            f"(needs ≥ {needed}); use engine torch, onnx or auto"
        )
    return label


def choose_engine(artefacts: Artefacts, model: str) -> tuple[Engine, str]:
    """``auto``: the fastest installed engine that stays faithful to torch on the probe set, and
    its fingerprint label. Remembered per model and machine, so it is measured once."""
    known = artefacts.measured().get("auto")
    if known is not None and (Engine(known["engine"]) is Engine.TORCH or _installed(Engine(known["engine"]))):
        return Engine(known["engine"]), known["label"]
    speeds = {"torch": artefacts.torch_speed()}
    engines = {"torch": Engine.TORCH}
    for engine in (Engine.ONNX, Engine.OPENVINO):
        if _installed(engine):
            label, probe = _faithful_label(engine, artefacts, model)
            if _passes(engine, probe):
                speeds[label], engines[label] = probe.texts_per_s, engine
    label = max(speeds, key=lambda name: speeds[name])
    artefacts.remember(auto={"engine": engines[label].value, "label": label, "texts_per_s": speeds})
    _log.info(
        "%s: engine auto chose %s (%.1fx torch on %d probe texts); kept in %s",
        model,
        label,
        speeds[label] / speeds["torch"],
        PROBE_TEXTS,
        artefacts.decisions_path,
    )
    return engines[label], label
