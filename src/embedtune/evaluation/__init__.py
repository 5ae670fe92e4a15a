"""Evaluation: test collections, metrics over TREC-shaped dicts, and fusion-weight tuning."""

from embedtune.evaluation.collections import Collection, Document, Qrels, download_beir, load_beir
from embedtune.evaluation.metrics import (
    evaluate,
    evaluate_per_query,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from embedtune.evaluation.tuning import tune_convex_weight

__all__ = [
    "Collection",
    "Document",
    "Qrels",
    "download_beir",
    "evaluate",
    "evaluate_per_query",
    "load_beir",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "tune_convex_weight",
]
