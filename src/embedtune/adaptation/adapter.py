"""Train a query adapter: a linear map on a frozen model's query vectors (see ``engine.adapter``).

The map starts as the identity, ``W = I + Δ`` (full) or ``W = I + U V^T`` (rank ``r``, with
``V = 0`` at the start), and is trained with the in-batch-negatives loss of
MultipleNegativesRankingLoss (Henderson et al., 2017; van den Oord et al., "InfoNCE", 2018): for a
batch of pairs, softmax cross-entropy over ``cos(W q_i, d_j) / temperature`` across every positive
and hard negative of the batch, the pair's own positive being the target. A document that is a
positive of the same query text is masked out, not treated as a negative.

Document vectors are computed once, through the embedder given (so through its cache), and never
change; only ``W`` learns. A dev split (``dev_pairs``, else ``dev_fraction`` of the queries)
picks the epoch: the weights with the best dev MRR@10, ranking each dev query against every known
document vector (and ``pool``), are kept; the identity itself is epoch 0, so an adapter never
leaves the dev figure worse than the base model. Fixed seed, same data, same machine: same weights.

torch does the training (CPU, a few seconds); applying the result needs numpy only.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import numpy as np

from ..embedder import Embedder
from ..engine import find_layer
from ..engine.adapter import AdaptedEmbedder, QueryAdapter
from ..errors import ConfigError, InputError, require
from .pairs import Pair

__all__ = ["AdaptedEmbedder", "QueryAdapter", "train_query_adapter"]

MIN_PAIRS = 16


def train_query_adapter(
    embedder: Embedder,
    pairs: Sequence[Pair],
    *,
    dev_pairs: Sequence[Pair] | None = None,
    dev_fraction: float = 0.1,
    rank: int | None = None,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 64,
    temperature: float = 0.05,
    weight_decay: float = 0.0,
    patience: int = 5,
    pool: Sequence[str] = (),
    seed: int = 0,
) -> QueryAdapter:
    """Learn a query adapter for ``embedder``'s model from ``pairs`` (query, positive, negatives).

    ``rank`` None learns a full ``dim x dim`` map; an integer learns ``I + U V^T`` of that rank.
    ``pool`` adds document texts (e.g. the whole corpus) that dev queries are ranked against.
    Training stops after ``patience`` epochs without a better dev MRR@10.
    """
    torch = require("torch", "local")
    _check_settings(pairs, rank, epochs, lr, batch_size, temperature, patience, dev_fraction, embedder)
    started = time.perf_counter()
    train, dev = _split(list(pairs), dev_pairs, dev_fraction, seed)
    if len(train) < MIN_PAIRS:
        raise InputError(
            f"{len(train)} training pairs are too few to train a query adapter (at least {MIN_PAIRS}); "
            "generate more from the corpus with generate_pairs()"
        )

    # Every text embedded once, in one call per kind, through the given stack (its cache).
    doc_texts = list(dict.fromkeys([t for p in (*train, *dev) for t in (p.positive, *p.negatives)] + list(pool)))
    doc_row = {t: i for i, t in enumerate(doc_texts)}
    query_texts = list(dict.fromkeys(p.query for p in (*train, *dev)))
    query_row = {t: i for i, t in enumerate(query_texts)}
    documents = _unit(embedder.embed(doc_texts, "document"))
    queries = _unit(embedder.embed(query_texts, "query"))
    positives_of: dict[str, set[int]] = {}
    for p in (*train, *dev):
        positives_of.setdefault(p.query, set()).add(doc_row[p.positive])

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    dim = embedder.dim
    if rank is None:
        delta = torch.zeros(dim, dim, requires_grad=True)
        params = [delta]
    else:
        u = (torch.randn(dim, rank, generator=generator) / dim**0.5).requires_grad_()
        v = torch.zeros(dim, rank, requires_grad=True)
        params = [u, v]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    doc_t = torch.from_numpy(documents)
    query_t = torch.from_numpy(queries)

    def mapped(q):
        out = q @ delta.T if rank is None else (q @ v) @ u.T
        return torch.nn.functional.normalize(q + out, dim=-1)

    def snapshot() -> tuple[np.ndarray, ...]:
        return tuple(p.detach().numpy().copy() for p in params)

    def dev_score() -> float:
        with torch.no_grad():
            return _mrr_at_10(
                mapped(query_t[[query_row[q] for q in dev_queries]]).numpy(),
                documents,
                [positives_of[q] for q in dev_queries],
            )

    dev_queries = list(dict.fromkeys(p.query for p in dev))
    # The matrices are small: one thread is many times faster than several contending for cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best, best_epoch, base_dev, best_dev, losses = _fit(
            torch,
            train,
            batch_size,
            epochs,
            patience,
            generator,
            optimiser,
            snapshot,
            dev_score,
            bool(dev_queries),
            lambda batch: _batch_loss(
                torch, batch, mapped, query_t, doc_t, query_row, doc_row, positives_of, temperature
            ),
        )
    finally:
        torch.set_num_threads(threads)

    info = {
        "base_model": embedder.name,
        "settings": {
            "rank": rank,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "temperature": temperature,
            "weight_decay": weight_decay,
            "patience": patience,
            "seed": seed,
        },
        "train_pairs": len(train),
        "dev_pairs": len(dev),
        "dev": {
            "metric": "mrr@10",
            "documents": len(doc_texts),
            "base": round(base_dev, 6),
            "adapted": round(best_dev, 6),
            "best_epoch": best_epoch,
            "epochs_run": len(losses),
        },
        "train_loss": losses,
        "train_seconds": round(time.perf_counter() - started, 3),
    }
    fingerprint = embedder.fingerprint("query")
    if rank is None:
        return QueryAdapter(
            base_fingerprint=fingerprint, dim=dim, matrix=np.eye(dim, dtype=np.float32) + best[0], info=info
        )
    return QueryAdapter(base_fingerprint=fingerprint, dim=dim, u=best[0], v=best[1], info=info)


def _fit(torch, train, batch_size, epochs, patience, generator, optimiser, snapshot, dev_score, has_dev, batch_loss):
    """The epochs: returns the kept weights, their epoch, the dev figure before and after, the losses."""
    base_dev = best_dev = dev_score() if has_dev else 0.0
    best, best_epoch, losses = snapshot(), 0, []
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train), generator=generator).tolist()
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = [train[i] for i in order[start : start + batch_size]]
            loss = batch_loss(batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        losses.append(round(total / len(train), 6))
        if not has_dev:  # nothing to choose with: the last epoch stands
            best, best_epoch = snapshot(), epoch
            continue
        score = dev_score()
        if score > best_dev:
            best_dev, best, best_epoch = score, snapshot(), epoch
        elif epoch - best_epoch >= patience:
            break
    return best, best_epoch, base_dev, best_dev, losses


def _batch_loss(torch, batch, mapped, query_t, doc_t, query_row, doc_row, positives_of, temperature):
    columns = list(dict.fromkeys(doc_row[t] for p in batch for t in (p.positive, *p.negatives)))
    column_of = {row: j for j, row in enumerate(columns)}
    q = mapped(query_t[[query_row[p.query] for p in batch]])
    logits = q @ doc_t[columns].T / temperature
    targets = torch.tensor([column_of[doc_row[p.positive]] for p in batch])
    mask = torch.zeros_like(logits, dtype=torch.bool)
    for i, p in enumerate(batch):  # other positives of the same query are not negatives
        for row in positives_of[p.query]:
            j = column_of.get(row)
            if j is not None and j != targets[i]:
                mask[i, j] = True
    logits = logits.masked_fill(mask, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, targets)


def _mrr_at_10(queries: np.ndarray, documents: np.ndarray, relevant: list[set[int]]) -> float:
    if not relevant:
        return 0.0
    scores = queries @ documents.T
    total = 0.0
    for row, rel in zip(scores, relevant):
        top = np.argsort(-row, kind="stable")[:10]
        for rank, j in enumerate(top.tolist(), start=1):
            if j in rel:
                total += 1.0 / rank
                break
    return total / len(relevant)


def _split(pairs: list[Pair], dev_pairs: Sequence[Pair] | None, fraction: float, seed: int):
    """Train and dev pairs; a dev split drawn here takes whole queries, so none is in both."""
    if dev_pairs is not None:
        return pairs, list(dev_pairs)
    queries = sorted({p.query for p in pairs})
    random.Random(seed).shuffle(queries)
    held = set(queries[: round(len(queries) * fraction)])
    return [p for p in pairs if p.query not in held], [p for p in pairs if p.query in held]


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _check_settings(pairs, rank, epochs, lr, batch_size, temperature, patience, dev_fraction, embedder) -> None:
    if find_layer(embedder, AdaptedEmbedder) is not None:
        raise ConfigError("the embedder already carries a query adapter; train on the base model's stack")
    if rank is not None and not (isinstance(rank, int) and 1 <= rank < embedder.dim):
        raise ConfigError(f"rank must be an integer from 1 to {embedder.dim - 1}, or None for a full map; not {rank!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, not {value!r}")
    if batch_size < 2:
        raise ConfigError("batch_size must be at least 2: in-batch negatives need a batch")
    if not (lr > 0 and temperature > 0):
        raise ConfigError("lr and temperature must be positive")
    if not 0.0 <= dev_fraction < 1.0:
        raise ConfigError(f"dev_fraction must be in [0, 1), not {dev_fraction!r}")
    for i, p in enumerate(pairs):
        if not p.query.strip() or not p.positive.strip():
            raise InputError(f"pair {i} has an empty query or positive; every pair needs both")
