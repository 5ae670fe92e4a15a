"""A tiny, randomly initialised CLIP saved as a sentence-transformers folder, and small test images.

No CLIP weights install offline, so the image path is tested with transformers' own CLIP classes
at toy sizes (16-dim vectors, 32x32 pixels, a 54-token vocabulary of letters): the vectors mean
nothing, but every step from bytes to vectors is the one a real CLIP folder takes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np


def build_tiny_clip(folder: Path) -> Path:
    """Write the tiny CLIP into ``folder/st`` (sentence-transformers layout) and return that folder."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    raw = folder / "raw"
    raw.mkdir(parents=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({c: len(vocab) for c in letters})
    vocab.update({c + "</w>": len(vocab) for c in letters})
    (raw / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (raw / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    image_processor_class = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    image_processor = image_processor_class(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPModel(config).eval().save_pretrained(raw)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(raw)
    out = folder / "st"
    SentenceTransformer(str(raw), device="cpu", local_files_only=True).save(str(out))
    return out


def png(width: int, height: int, seed: int, *, fmt: str = "PNG", exif_orientation: int | None = None) -> bytes:
    """An image of random pixels, encoded as ``fmt`` (with an EXIF orientation tag when given)."""
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype("uint8")
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(buffer, format=fmt, exif=exif)
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()
