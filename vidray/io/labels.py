"""Labels as the dataset stores them, and as losses and metrics want them.

A row's ``labels`` column is a list of class indices (one for single-label corpora such as UCF101,
several for Sports-1M / FCVID); ``dataset.json``'s ``classes`` names them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["multi_hot"]


def multi_hot(labels: Sequence[Sequence[int]] | np.ndarray, num_classes: int, dtype=np.float32) -> np.ndarray:
    """``(N, K)`` multi-hot targets.

    ``labels`` is one of:

    * a sequence of label lists (one list of class indices per row, possibly empty);
    * ``(N,)`` int class ids (one label per row);
    * ``(N, K)`` multi-hot already (checked: only 0 and 1, ``K`` columns) and returned as ``dtype``.

    A class index outside ``0 .. K-1`` is a ``ValueError`` naming the row.
    """
    k = int(num_classes)
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        if labels.shape[1] != k:
            raise ValueError(f"multi-hot labels have {labels.shape[1]} columns, expected {k}")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("multi-hot labels must contain only 0 and 1")
        return labels.astype(dtype)
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype != object:
        labels = [[int(c)] for c in labels]
    out = np.zeros((len(labels), k), dtype=dtype)
    for i, ls in enumerate(labels):
        idx = np.asarray(list(ls), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= k):
            raise ValueError(f"label out of range [0, {k}) in row {i}: {list(ls)}")
        out[i, idx] = 1
    return out
