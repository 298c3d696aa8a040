"""Late fusion of per-stream video scores (RGB, flow, ...) and the score files it reads.

Fusion (each stream ``i`` gives ``S_i`` ``(N, K)``, rows = the same videos in the same order):

* :func:`weighted_fusion`: ``F = sum_i w_i * n(S_i)``, with ``n`` the identity or, with
  ``l1_norm=True``, the per-video l1 normalisation ``n(s) = s / sum_c |s_c|`` of PRE-softmax scores
  (TDN's convention; two-stream TSN/TDN weight RGB : flow = 1 : 1.5). Normalising first stops a stream
  whose logits happen to be larger from dominating the sum.
* :func:`log_average_fusion`: ``F = sum_i w_i * log a(S_i) / sum_i w_i`` with ``a`` the stream's
  activation (``softmax`` of logits by default): the log of a weighted geometric mean of the
  streams' probabilities (RCNN's log-average fusion).

Score files (``vidray eval`` writes one per stream, ``vidray fuse`` reads them): ``.npz`` with
``scores`` ``(N, K)`` float, ``labels`` ``(N,)`` int or ``(N, K)`` multi-hot, ``video_ids`` ``(N,)``
str. Files are aligned by ``video_id`` (the first file's order wins); different video sets, duplicate
ids, different ``K`` or disagreeing labels are refused with a message naming them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from vidray.eval.aggregate import Activation, activate

__all__ = [
    "ScoreFile",
    "l1_normalize",
    "weighted_fusion",
    "log_average_fusion",
    "save_scores",
    "load_scores",
    "align_scores",
    "fuse_score_files",
]


# --------------------------------------------------------------------------------------------
# pure fusion
# --------------------------------------------------------------------------------------------
def l1_normalize(scores: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Divide each row of ``(N, K)`` scores by its l1 norm ``sum_c |s_c|`` (rows of zeros stay zero)."""
    s = np.asarray(scores, dtype=np.float64)
    return s / np.maximum(np.abs(s).sum(axis=-1, keepdims=True), eps)


def _check_streams(
    streams: Sequence[np.ndarray], weights: Sequence[float] | None
) -> tuple[list[np.ndarray], np.ndarray]:
    if len(streams) == 0:
        raise ValueError("fusion needs at least one stream")
    arrs = [np.asarray(s, dtype=np.float64) for s in streams]
    shape = arrs[0].shape
    if len(shape) != 2:
        raise ValueError(f"stream scores must be (N, K), got {shape}")
    for i, a in enumerate(arrs[1:], start=1):
        if a.shape != shape:
            raise ValueError(f"stream {i} has shape {a.shape}, stream 0 has {shape}")
    w = np.ones(len(arrs)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != len(arrs):
        raise ValueError(f"{w.size} weights for {len(arrs)} streams")
    return arrs, w


def weighted_fusion(
    streams: Sequence[np.ndarray], weights: Sequence[float] | None = None, l1_norm: bool = False
) -> np.ndarray:
    """``sum_i w_i * S_i`` (``l1_norm``: of the row-wise l1-normalised ``S_i``).

    Args:
        streams: ``S_i`` ``(N, K)`` each, pre-softmax video scores for ``l1_norm``.
        weights: one per stream (default all 1), e.g. ``(1, 1.5)`` for RGB, flow.
        l1_norm: normalise each video's scores of each stream first.

    Returns:
        ``(N, K)`` float64 fused scores.
    """
    arrs, w = _check_streams(streams, weights)
    return sum(wi * (l1_normalize(a) if l1_norm else a) for wi, a in zip(w, arrs))


def log_average_fusion(
    streams: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    activation: Activation = "softmax",
) -> np.ndarray:
    """Weighted mean of the streams' log-probabilities: ``sum_i w_i log a(S_i) / sum_i w_i``.

    Args:
        streams: ``(N, K)`` each; logits for ``softmax`` / ``sigmoid``, probabilities for ``none``.
        weights: one per stream (default all 1).
        activation: how a stream's scores become probabilities.

    Returns:
        ``(N, K)`` float64 (log-probability scale).
    """
    arrs, w = _check_streams(streams, weights)
    if w.sum() <= 0:
        raise ValueError("log-average fusion needs weights with a positive sum")
    return sum(wi * activate(a, activation, log=True) for wi, a in zip(w, arrs)) / w.sum()


# --------------------------------------------------------------------------------------------
# score files
# --------------------------------------------------------------------------------------------
@dataclass
class ScoreFile:
    """Scores of one stream on one split: ``scores`` ``(N, K)``, ``labels`` ``(N,)`` or ``(N, K)``,
    ``video_ids`` ``(N,)`` str; ``path`` where it was read from (if any)."""

    scores: np.ndarray
    labels: np.ndarray
    video_ids: np.ndarray
    path: str | None = None

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.labels = np.asarray(self.labels)
        self.video_ids = np.asarray(self.video_ids).astype(str)
        n = self.scores.shape[0] if self.scores.ndim == 2 else -1
        where = f" ({self.path})" if self.path else ""
        if self.scores.ndim != 2:
            raise ValueError(f"scores must be (N, K), got {self.scores.shape}{where}")
        if self.labels.shape[0] != n or self.labels.ndim not in (1, 2):
            raise ValueError(f"labels must be ({n},) or ({n}, K), got {self.labels.shape}{where}")
        if self.video_ids.shape != (n,):
            raise ValueError(f"video_ids must be ({n},), got {self.video_ids.shape}{where}")


def save_scores(
    path: str | Path, scores: np.ndarray, labels: np.ndarray, video_ids: Sequence[str] | np.ndarray
) -> Path:
    """Write a score file (``.npz``; see the module doc). Returns the path written."""
    sf = ScoreFile(scores, labels, video_ids)
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, scores=sf.scores, labels=sf.labels, video_ids=sf.video_ids)
    return path


def load_scores(path: str | Path) -> ScoreFile:
    """Read a score file written by :func:`save_scores` (no pickles are loaded)."""
    with np.load(path, allow_pickle=False) as z:
        missing = {"scores", "labels", "video_ids"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: not a vidray score file, missing {sorted(missing)}")
        return ScoreFile(z["scores"], z["labels"], z["video_ids"], path=str(path))


def _dupes(ids: np.ndarray) -> list[str]:
    u, c = np.unique(ids, return_counts=True)
    return [str(x) for x in u[c > 1]]


def align_scores(ref: ScoreFile, other: ScoreFile) -> ScoreFile:
    """Reorder ``other``'s rows to ``ref``'s video order; refuse anything that does not match.

    Raises:
        ValueError: duplicate ids in either file, different sets of videos (counts and a few ids of
            each side are named), different numbers of classes, or labels that differ for a video.
    """
    name_r, name_o = ref.path or "first scores", other.path or "second scores"
    for sf, name in ((ref, name_r), (other, name_o)):
        d = _dupes(sf.video_ids)
        if d:
            raise ValueError(f"{name}: {len(d)} duplicate video ids, e.g. {d[:5]}")
    if ref.scores.shape[1] != other.scores.shape[1]:
        raise ValueError(
            f"{name_r} has {ref.scores.shape[1]} classes, {name_o} has {other.scores.shape[1]}"
        )
    only_r = np.setdiff1d(ref.video_ids, other.video_ids)
    only_o = np.setdiff1d(other.video_ids, ref.video_ids)
    if only_r.size or only_o.size:
        raise ValueError(
            f"video ids differ: {only_r.size} only in {name_r} (e.g. {only_r[:5].tolist()}), "
            f"{only_o.size} only in {name_o} (e.g. {only_o[:5].tolist()})"
        )
    pos = {v: i for i, v in enumerate(other.video_ids.tolist())}
    idx = np.array([pos[v] for v in ref.video_ids.tolist()], dtype=np.int64)
    aligned = ScoreFile(other.scores[idx], other.labels[idx], other.video_ids[idx], path=other.path)
    if aligned.labels.shape != ref.labels.shape or not np.array_equal(aligned.labels, ref.labels):
        if aligned.labels.shape != ref.labels.shape:
            raise ValueError(f"labels of {name_r} {ref.labels.shape} and {name_o} {aligned.labels.shape} differ")
        bad = ref.video_ids[(aligned.labels != ref.labels).reshape(len(idx), -1).any(axis=1)]
        raise ValueError(f"labels differ for {bad.size} videos between {name_r} and {name_o}, e.g. {bad[:5].tolist()}")
    return aligned


def fuse_score_files(
    paths: Sequence[str | Path],
    weights: Sequence[float] | None = None,
    method: Literal["weighted", "logaverage"] = "weighted",
    l1_norm: bool = False,
    activation: Activation = "softmax",
) -> ScoreFile:
    """Load, align (by video id, first file's order) and fuse score files.

    Args:
        paths: two or more ``.npz`` score files (one per stream).
        weights: one per file (default all 1).
        method: ``weighted`` (:func:`weighted_fusion`, with ``l1_norm``) or ``logaverage``
            (:func:`log_average_fusion`, with ``activation``).

    Returns:
        A :class:`ScoreFile` with the fused ``(N, K)`` scores and the first file's labels and ids.
    """
    files = [load_scores(p) for p in paths]
    if not files:
        raise ValueError("no score files given")
    ref = files[0]
    aligned = [ref] + [align_scores(ref, f) for f in files[1:]]
    streams = [f.scores for f in aligned]
    if method == "weighted":
        fused = weighted_fusion(streams, weights, l1_norm=l1_norm)
    elif method == "logaverage":
        fused = log_average_fusion(streams, weights, activation=activation)
    else:
        raise ValueError(f"unknown fusion method {method!r}; expected 'weighted' or 'logaverage'")
    return ScoreFile(fused, ref.labels, ref.video_ids)
