"""Evaluation: test collections, metrics over TREC-shaped dicts, fusion-weight tuning, comparisons,
and whether a difference is noise (intervals, paired tests, the cheapest strategy within noise)."""

from embedtune.evaluation.collections import Collection, Document, Qrels, download_beir, load_beir
from embedtune.evaluation.compare import ComparisonResult, StrategyResult, evaluate_strategies
from embedtune.evaluation.metrics import (
    evaluate,
    evaluate_per_query,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from embedtune.evaluation.significance import Recommendation, bootstrap_ci, paired_test, recommend
from embedtune.evaluation.tuning import tune_convex_weight

__all__ = [
    "Collection",
    "ComparisonResult",
    "Document",
    "Qrels",
    "Recommendation",
    "StrategyResult",
    "bootstrap_ci",
    "download_beir",
    "evaluate",
    "evaluate_per_query",
    "evaluate_strategies",
    "load_beir",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "paired_test",
    "precision_at_k",
    "recall_at_k",
    "recommend",
    "tune_convex_weight",
]
