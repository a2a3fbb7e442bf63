"""Ranking metrics with binary relevance: pure functions over ranked ids, no I/O.

``ranked`` is a result list, best first (ids are unique: one per asset); ``relevant`` is the
set of ids that count as right answers. Every function returns a value in [0, 1] and 0.0 when
``relevant`` is empty.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

__all__ = ["average_precision", "ndcg_at_k", "overlap_at_k", "recall_at_k"]


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant ids found in the first ``k`` results: |top-k ∩ relevant| / |relevant|.

    With more relevant ids than ``k`` the best possible value is ``k / |relevant|``.
    """
    _check_k(k)
    if not relevant:
        return 0.0
    wanted = set(relevant)
    return len(wanted.intersection(ranked[:k])) / len(wanted)


def average_precision(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """AP@k: the mean of precision@i over the ranks i <= k that hold a relevant id, divided by
    min(|relevant|, k) so that a perfect top-k list scores 1.0."""
    _check_k(k)
    if not relevant:
        return 0.0
    wanted = set(relevant)
    hits = 0
    total = 0.0
    for i, item in enumerate(ranked[:k], start=1):
        if item in wanted:
            hits += 1
            total += hits / i
    return total / min(len(wanted), k)


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """nDCG@k with gain 1 for a relevant id: DCG = sum of 1 / log2(rank + 1) over relevant ranks
    <= k, divided by the DCG of a list with min(|relevant|, k) relevant ids on top."""
    _check_k(k)
    if not relevant:
        return 0.0
    wanted = set(relevant)
    dcg = sum(1.0 / math.log2(i + 1) for i, x in enumerate(ranked[:k], start=1) if x in wanted)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(wanted), k) + 1))
    return dcg / ideal


def overlap_at_k(found: Sequence[str], reference: Sequence[str], k: int) -> float:
    """Recall@k of one result list against another (quantized against exact search):
    |found[:k] ∩ reference[:k]| / |reference[:k]|; 1.0 when the reference is empty."""
    _check_k(k)
    truth = set(reference[:k])
    if not truth:
        return 1.0
    return len(truth.intersection(found[:k])) / len(truth)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
