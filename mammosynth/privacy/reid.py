"""Re-identification: metric-learning parts and the retrieval / verification metrics.

The identity unit is the study (VinDr has no patient id; DESIGN §4): two images are a
positive pair when they share a ``study_id`` (other view, other breast).

Metrics (higher is better for all of them):

* :func:`retrieval_metrics` – P@1, R-precision and mAP@R from pytorch-metric-learning's
  ``AccuracyCalculator`` (cosine similarity, ``k = "max_bin_count"``, so R is the number of
  other images of the query's study);
* :func:`verification_auc` – ROC-AUC of the cosine similarity separating same-study pairs
  from different-study pairs.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

__all__ = [
    "RETRIEVAL_METRICS",
    "study_labels",
    "retrieval_metrics",
    "verification_auc",
    "evaluate_embeddings",
    "relation_breakdown",
    "build_loss",
]

#: Keys of :func:`retrieval_metrics` (pytorch-metric-learning names).
RETRIEVAL_METRICS: tuple[str, ...] = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


def study_labels(study_ids: Sequence[str]) -> np.ndarray:
    """Integer labels (0..n_studies-1) for study ids, in order of first appearance."""
    codes: dict[str, int] = {}
    return np.array([codes.setdefault(str(s), len(codes)) for s in study_ids], dtype=np.int64)


def _nan_metrics(n: int = 0) -> dict[str, float]:
    return {**{k: float("nan") for k in RETRIEVAL_METRICS}, "n_queries": n}


def retrieval_metrics(
    query: np.ndarray,
    query_labels: Sequence,
    reference: np.ndarray | None = None,
    reference_labels: Sequence | None = None,
) -> dict[str, float]:
    """P@1, R-precision and mAP@R of cosine-similarity retrieval.

    Args:
        query: ``(Nq, D)`` embeddings.
        query_labels: identity (study) of each query.
        reference: ``(Nr, D)`` embeddings searched; ``None`` = leave-one-out within ``query``.
        reference_labels: identity of each reference row.

    Returns:
        The three metrics and ``n_queries``, the number of queries that have at least one
        relevant reference (the others have no defined R and are left out). All ``nan``,
        with a warning, when no query has a relevant reference.
    """
    import torch
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    query = np.asarray(query, dtype=np.float32)
    q_labels = np.asarray([str(x) for x in query_labels])
    same_set = reference is None
    reference = query if same_set else np.asarray(reference, dtype=np.float32)
    r_labels = q_labels if same_set else np.asarray([str(x) for x in reference_labels])
    if len(q_labels) != len(query) or len(r_labels) != len(reference):
        raise ValueError(
            f"got {len(query)} query embeddings with {len(q_labels)} labels and "
            f"{len(reference)} reference embeddings with {len(r_labels)} labels; they have to match"
        )
    # Relevant references per query (minus itself when the set searches itself).
    uniques, r_codes = np.unique(r_labels, return_inverse=True)
    counts = dict(zip(uniques, np.bincount(r_codes)))
    relevant = np.array([counts.get(label, 0) - (1 if same_set else 0) for label in q_labels])
    keep = relevant > 0
    if not keep.any():
        warnings.warn("no query has a relevant reference (no shared identity): retrieval metrics are nan")
        return _nan_metrics(0)
    codes = {label: i for i, label in enumerate(uniques)}
    extra = len(codes)
    q_int = np.array([codes.get(label, extra + i) for i, label in enumerate(q_labels)])
    r_int = np.array([codes[label] for label in r_labels])
    calculator = AccuracyCalculator(
        include=RETRIEVAL_METRICS, k="max_bin_count", knn_func=CustomKNN(CosineSimilarity(), batch_size=1024)
    )
    if same_set:
        # Every image stays a reference (a singleton can be retrieved wrongly) but only images
        # with a partner are queries. pytorch-metric-learning removes a query's self-match by
        # position, so the queries go first in the reference set.
        order = np.r_[np.flatnonzero(keep), np.flatnonzero(~keep)]
        result = calculator.get_accuracy(
            torch.from_numpy(query[keep]), torch.from_numpy(q_int[keep]),
            torch.from_numpy(reference[order]), torch.from_numpy(r_int[order]),
            ref_includes_query=True,
        )
    else:
        result = calculator.get_accuracy(
            torch.from_numpy(query[keep]), torch.from_numpy(q_int[keep]),
            torch.from_numpy(reference), torch.from_numpy(r_int),
            ref_includes_query=False,
        )
    out = {k: float(result[k]) for k in RETRIEVAL_METRICS}
    out["n_queries"] = int(keep.sum())
    return out


def verification_auc(
    embeddings: np.ndarray,
    labels: Sequence,
    max_negatives: int = 200_000,
    seed: int = 0,
) -> float:
    """ROC-AUC of cosine similarity for same-identity vs different-identity pairs.

    All positive pairs are used; negative pairs are sampled (at most ``max_negatives``).
    Returns ``nan`` with a warning when there is no positive or no negative pair.
    """
    from sklearn.metrics import roc_auc_score

    embeddings = np.asarray(embeddings, dtype=np.float32)
    codes = study_labels(labels)
    n = len(codes)
    i, j = np.triu_indices(n, k=1)
    same = codes[i] == codes[j]
    if not same.any() or same.all():
        warnings.warn("verification AUC needs both same- and different-identity pairs: returning nan")
        return float("nan")
    pos_i, pos_j = i[same], j[same]
    neg_i, neg_j = i[~same], j[~same]
    if len(neg_i) > max_negatives:
        pick = np.random.default_rng(seed).choice(len(neg_i), max_negatives, replace=False)
        neg_i, neg_j = neg_i[pick], neg_j[pick]
    pos = (embeddings[pos_i] * embeddings[pos_j]).sum(1)
    neg = (embeddings[neg_i] * embeddings[neg_j]).sum(1)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return float(roc_auc_score(y, np.r_[pos, neg]))


def evaluate_embeddings(embeddings: np.ndarray, study_ids: Sequence[str]) -> dict[str, float]:
    """Leave-one-out retrieval metrics and verification AUC of one labelled set."""
    metrics = retrieval_metrics(embeddings, study_ids)
    metrics["verification_auc"] = verification_auc(embeddings, study_ids)
    metrics["n_images"] = int(len(embeddings))
    metrics["n_studies"] = int(len(set(map(str, study_ids))))
    return metrics


def relation_breakdown(embeddings: np.ndarray, study_ids: Sequence[str], lateralities: Sequence[str],
                       views: Sequence[str]) -> dict[str, dict[str, float]]:
    """How well each kind of same-study partner is retrieved (leave-one-out, cosine similarity).

    For every image and every other image of its study, the partner's rank among all other
    images is taken; the partner is "within R" when that rank is below R, the number of the
    query's partners (what mAP@R and R-precision reward). Pairs are grouped by relation:
    ``same-side/other-view`` (e.g. L-CC → L-MLO), ``other-side/same-view`` (L-CC → R-CC),
    ``other-side/other-view`` (L-CC → R-MLO) and ``same-side/same-view`` (a repeat).

    Returns:
        ``{relation: {"pairs": n, "within_r": fraction, "median_rank": rank}}`` (rank 0 = nearest).
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    codes = study_labels(study_ids)
    if not (len(emb) == len(codes) == len(lateralities) == len(views)):
        raise ValueError(f"got {len(emb)} embeddings, {len(codes)} study ids, {len(lateralities)} lateralities "
                         f"and {len(views)} views; they have to match")
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    ranks_of = np.argsort(np.argsort(-sim, axis=1, kind="stable"), axis=1, kind="stable")
    found: dict[str, list[tuple[int, bool]]] = {}
    for i in range(len(codes)):
        partners = np.flatnonzero(codes == codes[i])
        partners = partners[partners != i]
        for j in partners:
            side = "same-side" if str(lateralities[j]) == str(lateralities[i]) else "other-side"
            view = "same-view" if str(views[j]) == str(views[i]) else "other-view"
            rank = int(ranks_of[i, j])
            found.setdefault(f"{side}/{view}", []).append((rank, rank < len(partners)))
    return {key: {"pairs": len(v), "within_r": float(np.mean([w for _, w in v])),
                  "median_rank": float(np.median([r for r, _ in v]))}
            for key, v in sorted(found.items())}


def build_loss(name: str = "multi-similarity"):
    """A pytorch-metric-learning ``(loss, miner)`` pair for training the embedder.

    Args:
        name: ``"multi-similarity"`` (MultiSimilarityLoss + MultiSimilarityMiner) or
            ``"triplet"`` (TripletMarginLoss + TripletMarginMiner, semihard).
    """
    from pytorch_metric_learning import losses, miners

    if name == "multi-similarity":
        return losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5), miners.MultiSimilarityMiner(epsilon=0.1)
    if name == "triplet":
        return losses.TripletMarginLoss(margin=0.2), miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    raise ValueError(f"unknown loss {name!r}; choose 'multi-similarity' or 'triplet'")
