"""Classification metrics on numpy arrays, as the video papers report them.

Conventions for every function:

* ``scores``: ``(N, K)`` float, higher = more likely (logits, probabilities or log-probabilities:
  only the ranking within a row matters, except where noted).
* ``labels``: either ``(N,)`` int class ids (single-label: UCF101, HMDB51, Kinetics) or ``(N, K)``
  multi-hot ``{0, 1}`` (multi-label: Sports-1M, FCVID). Functions that need one kind say so.
* Ranking ties are broken by the lower class index first (a stable sort of ``-scores``), so a
  result never depends on the platform's sort.

Definitions (``rank_n`` = classes of row ``n`` sorted by decreasing score, ``Y_n`` = label set):

* top-k accuracy: ``mean_n [y_n in rank_n[:k]]`` (single-label).
* Hit@k (Karpathy et al. 2014, Sports-1M): ``mean_n [Y_n  intersect  rank_n[:k] != {}]`` -- a hit if
  ANY of the top-k predictions is one of the row's labels; equals top-k accuracy for single labels.
  Clip Hit@k: rows are clips (each with its video's labels); video Hit@k: rows are videos after
  :func:`vidray.eval.aggregate.aggregate_by_video`.
* mean class accuracy: ``mean_c recall_c`` over classes that occur in ``labels``, ``recall_c`` the
  fraction of class-``c`` rows whose top-1 prediction is ``c``.
* AP of one class: ``sum_j (R_j - R_{j-1}) P_j`` over decreasing score thresholds (non-interpolated,
  = ``(1/|pos|) sum_{positives p} precision@rank(p)`` without ties; tied scores are one threshold):
  scikit-learn's ``average_precision_score``. mAP (FCVID): mean AP over classes with at least one
  positive. The confusion matrix is scikit-learn's too; Hit@k and the video-level logic are not in
  scikit-learn and live here.

:func:`summarize` reports the metrics of the table :data:`vidray.registry.METRICS` that apply to the
labels (single-label ids or multi-hot).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
from sklearn.metrics import average_precision_score
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix

from vidray.io.labels import multi_hot
from vidray.registry import METRICS

__all__ = [
    "top_k_accuracy",
    "mean_class_accuracy",
    "confusion_matrix",
    "hit_at_k",
    "average_precision",
    "mean_average_precision",
    "summarize",
]


def _scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be (N, K), got shape {s.shape}")
    return s


def _int_labels(labels: np.ndarray, n: int, k: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"labels must be ({n},) int class ids, got shape {y.shape}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must be in 0..{k - 1}, got range {y.min()}..{y.max()}")
    return y


def _multi_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(N,)`` int ids (range-checked) or ``(N, K)`` multi-hot (checked) -> ``(N, K)`` int64."""
    y = np.asarray(labels)
    if y.ndim == 1:
        y = _int_labels(y, y.shape[0], num_classes)
    return multi_hot(y, num_classes, dtype=np.int64)


def _topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return np.argsort(-scores, axis=1, kind="stable")[:, : min(k, scores.shape[1])]


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores (single-label ``(N,)`` ids).

    Args:
        scores: ``(N, K)``.
        labels: ``(N,)`` int.
        k: number of top predictions considered.
    """
    s = _scores(scores)
    y = _int_labels(labels, s.shape[0], s.shape[1])
    if s.shape[0] == 0:
        return float("nan")
    top = _topk_indices(s, k)
    return float((top == y[:, None]).any(axis=1).mean())


def hit_at_k(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Hit@k: fraction of rows where any of the top-``k`` predictions is one of the row's labels.

    Args:
        scores: ``(N, K)``.
        labels: ``(N,)`` int ids or ``(N, K)`` multi-hot.
        k: number of top predictions considered.
    """
    s = _scores(scores)
    y = _multi_hot(labels, s.shape[1])
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"{y.shape[0]} label rows for {s.shape[0]} score rows")
    if s.shape[0] == 0:
        return float("nan")
    top = _topk_indices(s, k)
    return float((np.take_along_axis(y, top, axis=1) > 0).any(axis=1).mean())


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts; row = true class, column = predicted class.

    Args:
        labels: ``(N,)`` int true ids.
        preds: ``(N,)`` int predicted ids (e.g. ``scores.argmax(1)``).
        num_classes: ``K``.
    """
    y = _int_labels(labels, np.asarray(labels).shape[0], num_classes)
    p = _int_labels(preds, y.shape[0], num_classes)
    return _sk_confusion_matrix(y, p, labels=np.arange(num_classes)).astype(np.int64)


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in ``labels`` of the per-class top-1 recall (single-label).

    Args:
        scores: ``(N, K)``.
        labels: ``(N,)`` int.
    """
    s = _scores(scores)
    y = _int_labels(labels, s.shape[0], s.shape[1])
    if s.shape[0] == 0:
        return float("nan")
    pred = _topk_indices(s, 1)[:, 0]
    cm = confusion_matrix(y, pred, s.shape[1])
    counts = cm.sum(axis=1)
    present = counts > 0
    return float((np.diag(cm)[present] / counts[present]).mean())


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Non-interpolated average precision of one class (see the module doc).

    Args:
        scores: ``(N,)`` scores of the class.
        targets: ``(N,)`` {0, 1}, 1 = the item has the class.

    Returns:
        AP in ``[0, 1]``; ``nan`` if there are no positives.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.asarray(targets).reshape(-1).astype(bool)
    if s.shape != t.shape:
        raise ValueError(f"scores {s.shape} and targets {t.shape} differ")
    if not t.any():
        return float("nan")
    return float(average_precision_score(t, s))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """mAP: mean over classes (with at least one positive) of :func:`average_precision`.

    Args:
        scores: ``(N, K)``.
        labels: ``(N, K)`` multi-hot or ``(N,)`` int ids (one-hot).
    """
    s = _scores(scores)
    y = _multi_hot(labels, s.shape[1])
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"{y.shape[0]} label rows for {s.shape[0]} score rows")
    aps = [average_precision(s[:, c], y[:, c]) for c in range(s.shape[1]) if y[:, c].any()]
    return float(np.mean(aps)) if aps else float("nan")


@dataclass(frozen=True)
class Metric:
    """A summary metric: ``fn(scores, labels[, k])``; ``labels`` it applies to; ``key``: the reported
    name, with ``{k}`` for metrics computed per ``k`` (``top{k}`` -> ``top1``, ``top5``)."""

    fn: Callable[..., float]
    labels: Literal["single", "multi", "any"]
    key: str

    @property
    def per_k(self) -> bool:
        return "{k}" in self.key


METRICS.register("top_k_accuracy", Metric(top_k_accuracy, "single", "top{k}"),
                 help="top-k accuracy (single-label): top1, top5")
METRICS.register("mean_class_accuracy", Metric(mean_class_accuracy, "single", "mean_class_accuracy"),
                 help="mean over classes of the per-class top-1 recall (UCF101/HMDB51 tables)")
METRICS.register("hit_at_k", Metric(hit_at_k, "multi", "hit_at_{k}"),
                 help="Hit@k (multi-label: any of the top k is a label; Sports-1M): hit_at_1, hit_at_5")
METRICS.register("mAP", Metric(mean_average_precision, "any", "mAP"),
                 help="mean average precision over classes with a positive (FCVID)")


def summarize(scores: np.ndarray, labels: np.ndarray, topk: Sequence[int] = (1, 5)) -> dict[str, float]:
    """The metrics a paper table would show, as one flat dict (``vidray eval --json``): every entry of
    :data:`vidray.registry.METRICS` that applies to the labels, per ``k`` where it takes one.

    Single-label ``(N,)`` labels: ``top{k}`` for each ``k`` (capped at ``K``), ``mean_class_accuracy``,
    ``mAP``. Multi-hot ``(N, K)`` labels: ``hit_at_{k}`` (Hit@k; ``@`` is not allowed in MLflow
    metric names) and ``mAP``. Always ``num_samples``.
    """
    s = _scores(scores)
    y = np.asarray(labels)
    kind = "single" if y.ndim == 1 else "multi"
    ks = sorted({min(int(k), s.shape[1]) for k in topk})
    out: dict[str, float] = {"num_samples": float(s.shape[0])}
    for _, m in METRICS.items():
        if m.labels not in (kind, "any"):
            continue
        if m.per_k:
            for k in ks:
                out[m.key.format(k=k)] = m.fn(s, y, k)
        else:
            out[m.key] = m.fn(s, y)
    return out
