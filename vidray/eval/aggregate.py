"""Aggregate the scores of a video's clips (or frames, or time steps) into one video score.

Input: ``scores`` ``(T, K)`` -- ``T`` clips / frames / LSTM steps of ONE video, in temporal order,
``K`` classes. Output: ``(K,)``. First an activation turns each row into ``a_t``:

* ``activation="softmax"`` (default; single-label logits): ``a_t = softmax(z_t)``;
* ``"sigmoid"`` (multi-label logits, BCE-trained; Sports-1M/FCVID): ``a_t = sigmoid(z_t)``;
* ``"none"``: the scores as given (``a_t = z_t``): already probabilities, or a deliberate average of
  raw logits (MMAction2 ``average_clips="score"``, what TDN-style l1-normalised fusion expects).

then ``method`` (the table :data:`vidray.registry.AGGREGATIONS`, ``vidray eval --aggregate``) combines
them:

============  ===========================================================  ======================
method        video score ``v`` (per class ``c``)                           used by
============  ===========================================================  ======================
``mean``      ``(1/T) sum_t a_t``                                          TSN, Sports-1M, C3D
``max``       ``max_t a_t``                                                Ng et al. (max pool)
``logmean``   ``(1/T) sum_t log a_t``  (log of the geometric mean)         RCNN / Xu et al.
``last``      ``a_{T-1}``                                                  LSTM last step
``weighted``  ``sum_t g_t a_t / sum_t g_t``, ``g_t = t / (T-1)``           LSTM gain g (Ng et al.)
============  ===========================================================  ======================

For ``logmean``, ``log a_t`` is computed stably (``log_softmax`` / ``log_sigmoid`` of the logits); with
``activation="none"`` the inputs must be positive probabilities and ``log(max(a, 1e-12))`` is used.
``weighted`` with ``T = 1`` returns ``a_0`` (``g_0 := 1``). The gain puts zero weight on the first step
and grows linearly to 1 at the last, favouring steps that have seen more of the video.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import numpy as np
import torch

from vidray.models.common import lstm_gain
from vidray.registry import AGGREGATIONS

Method = str  # a name in vidray.registry.AGGREGATIONS
Activation = Literal["softmax", "sigmoid", "none"]
ACTIVATIONS: tuple[str, ...] = ("softmax", "sigmoid", "none")

__all__ = [
    "ACTIVATIONS",
    "softmax",
    "log_softmax",
    "activate",
    "aggregate_scores",
    "aggregate_by_video",
]


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable ``log softmax`` along ``axis`` (float64)."""
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` (float64)."""
    return np.exp(log_softmax(z, axis))


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return -np.logaddexp(0.0, -z)


def activate(scores: np.ndarray, activation: Activation = "softmax", log: bool = False) -> np.ndarray:
    """Apply ``activation`` row-wise to ``(..., K)`` scores; ``log=True`` returns its (stable) log."""
    if activation == "softmax":
        return log_softmax(scores) if log else softmax(scores)
    if activation == "sigmoid":
        ls = _log_sigmoid(scores)
        return ls if log else np.exp(ls)
    if activation == "none":
        a = np.asarray(scores, dtype=np.float64)
        if log:
            if (a < 0).any():
                raise ValueError("log of activation='none' scores needs probabilities >= 0")
            return np.log(np.maximum(a, 1e-12))
        return a
    raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


# Each aggregation: (scores (T, K) float64, activation) -> (K,) float64.
Aggregation = Callable[[np.ndarray, str], np.ndarray]


@AGGREGATIONS.register("mean")
def _mean(s: np.ndarray, activation: str) -> np.ndarray:
    """average of the activated scores (TSN, Sports-1M, C3D)"""
    return activate(s, activation).mean(axis=0)


@AGGREGATIONS.register("max")
def _max(s: np.ndarray, activation: str) -> np.ndarray:
    """maximum over time (Ng et al. max pooling)"""
    return activate(s, activation).max(axis=0)


@AGGREGATIONS.register("logmean")
def _logmean(s: np.ndarray, activation: str) -> np.ndarray:
    """mean log-probability, the log of the geometric mean (RCNN, Xu et al.)"""
    return activate(s, activation, log=True).mean(axis=0)


@AGGREGATIONS.register("last")
def _last(s: np.ndarray, activation: str) -> np.ndarray:
    """the last step (LSTM)"""
    return activate(s[-1:], activation)[0].copy()


@AGGREGATIONS.register("weighted")
def _weighted(s: np.ndarray, activation: str) -> np.ndarray:
    """LSTM gain g_t = t/(T-1) weighted average (Ng et al.)"""
    a = activate(s, activation)
    g = lstm_gain(a.shape[0], dtype=torch.float64).numpy()
    return (g[:, None] * a).sum(axis=0) / g.sum()


def aggregate_scores(
    scores: np.ndarray, method: Method = "mean", activation: Activation = "softmax"
) -> np.ndarray:
    """Aggregate ``(T, K)`` scores of one video (temporal order) into ``(K,)`` (see module doc).

    Args:
        scores: ``(T, K)`` per-clip / per-frame / per-step scores, ``T >= 1``.
        method: a name in :data:`vidray.registry.AGGREGATIONS` (``mean`` | ``max`` | ``logmean`` |
            ``last`` | ``weighted``).
        activation: ``softmax`` | ``sigmoid`` | ``none``, applied to each row first.

    Returns:
        ``(K,)`` float64 video score (probabilities for mean/max/last/weighted with an activation;
        mean log-probabilities for ``logmean``).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2 or s.shape[0] == 0:
        raise ValueError(f"scores must be (T>=1, K), got shape {np.shape(scores)}")
    return AGGREGATIONS.get(method)(s, activation)


def aggregate_by_video(
    scores: np.ndarray,
    video_ids: Sequence[str] | np.ndarray,
    method: Method = "mean",
    activation: Activation = "softmax",
) -> tuple[np.ndarray, np.ndarray]:
    """Group clip rows by video id and aggregate each group with :func:`aggregate_scores`.

    Rows of one video keep their input order (it must be temporal for ``last`` / ``weighted``).

    Args:
        scores: ``(N_clips, K)``.
        video_ids: ``(N_clips,)`` ids (str or int).
        method, activation: as in :func:`aggregate_scores`.

    Returns:
        ``(ids, video_scores)``: ``(V,)`` ids in order of first appearance, ``(V, K)`` float64.
    """
    s = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(video_ids)
    if s.ndim != 2 or ids.shape != (s.shape[0],):
        raise ValueError(f"scores (N, K) and video_ids (N,) expected, got {s.shape} and {ids.shape}")
    uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # videos in order of first appearance
    out = np.empty((uniq.size, s.shape[1]), dtype=np.float64)
    for row, u in enumerate(order):
        out[row] = aggregate_scores(s[inverse == u], method, activation)
    return uniq[order], out
