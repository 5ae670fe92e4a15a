"""A tiny cross-encoder folder for plumbing tests: random weights, MiniLM's tokenizer.

No package here carries a trained cross-encoder, and training one takes a minute; a test that
checks where the reranker's order goes (not how good it is) needs only a real model folder
that loads and scores like one. Seeded, so its scores are the same every run.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def build_tiny_cross_encoder(folder: Path) -> Path:
    """A two-layer BERT sequence classifier with one output, saved where ``CrossEncoder`` loads it."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from embedtune.adaptation.training import base_folder

    source = base_folder("local:all-MiniLM-L6-v2")[0]
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    return folder
