"""Nearest-neighbour indexes over unit-norm descriptors, ranked by inner product (= cosine similarity).

==========  ===============================================  ==========================================
kind        structure                                        use
==========  ===============================================  ==========================================
``exact``   numpy matrix product, blockwise (no faiss)       the reference (tests); no dependency
``flat``    ``faiss.IndexFlatIP``                            exact, multi-threaded BLAS; up to ~1M
``ivf``     ``faiss.IndexIVFFlat`` (k-means coarse           approximate; builds fast (seconds at 1M);
            quantiser, ``nlist`` cells, ``nprobe`` visited)  recall set by ``nprobe``
``hnsw``    ``faiss.IndexHNSWFlat`` (graph, ``M`` links)     approximate; fastest queries, slow build
==========  ===============================================  ==========================================

``auto`` picks ``flat`` up to :data:`AUTO_EXACT_MAX` vectors (``exact`` when faiss is missing) and
``ivf`` above: build and search times and recall at 1M vectors are in docs/retrieval.md
(``python benchmarks/retrieval.py --index-only``).

Every index answers ``search(queries, k) -> (scores, ids)``, both ``(Q, k)``, best first; rows with
fewer than ``k`` results are padded with score ``-inf`` and id ``-1``.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

KINDS = ("auto", "exact", "flat", "ivf", "hnsw")
AUTO_EXACT_MAX = 200_000


class Index(Protocol):
    kind: str
    ntotal: int

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def _as_f32(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a (n, d) matrix, got shape {x.shape}")
    return x


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if scores.shape[1] >= k:
        return scores, ids
    q, m = scores.shape
    s = np.full((q, k), -np.inf, np.float32)
    i = np.full((q, k), -1, np.int64)
    s[:, :m], i[:, :m] = scores, ids
    return s, i


class ExactIndex:
    """Brute-force inner product in numpy, ``block`` queries at a time (memory ``block x n`` floats;
    by default as many queries as keep that under 256 MB).

    Ties are broken by the smaller id, so results are deterministic.
    """

    kind = "exact"

    def __init__(self, vectors: np.ndarray, block: int | None = None) -> None:
        self.x = _as_f32(vectors)
        self.block = block or max(1, min(1024, (256 << 20) // (4 * max(1, self.x.shape[0]))))

    @property
    def ntotal(self) -> int:
        return self.x.shape[0]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _as_f32(queries)
        n = self.ntotal
        kk = min(k, n)
        all_s, all_i = [], []
        for a in range(0, q.shape[0], self.block):
            s = q[a:a + self.block] @ self.x.T  # (b, n)
            if kk < n:
                part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            else:
                part = np.broadcast_to(np.arange(n), s.shape)
            ps = np.take_along_axis(s, part, axis=1)
            order = np.lexsort((part, -ps), axis=1)  # score descending, then id ascending
            all_i.append(np.take_along_axis(part, order, axis=1).astype(np.int64))
            all_s.append(np.take_along_axis(ps, order, axis=1).astype(np.float32))
        if not all_s:
            return _pad(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64), k)
        return _pad(np.concatenate(all_s), np.concatenate(all_i), k)


class FaissIndex:
    """A faiss index (``flat`` / ``ivf`` / ``hnsw``) with inner-product metric.

    Args:
        vectors: ``(n, d)`` database.
        kind: ``flat`` | ``ivf`` | ``hnsw``.
        nlist: IVF cells (default ``4 * sqrt(n)``, at most ``n // 39`` so k-means has 39 points per cell).
        nprobe: IVF cells visited per query.
        hnsw_m, ef_construction, ef_search: HNSW graph degree and beam widths.
        threads: OpenMP threads of faiss (``None``: faiss's default, all cores).
        seed: k-means seed of IVF.
    """

    def __init__(self, vectors: np.ndarray, kind: str = "flat", *, nlist: int | None = None, nprobe: int = 16,
                 hnsw_m: int = 32, ef_construction: int = 64, ef_search: int = 64, threads: int | None = None,
                 seed: int = 0) -> None:
        faiss = _faiss()
        if threads is not None:
            faiss.omp_set_num_threads(int(threads))
        x = _as_f32(vectors)
        n, d = x.shape
        self.kind = kind
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "ivf":
            nlist = nlist or max(1, int(4 * math.sqrt(n)))
            nlist = max(1, min(nlist, n // 39 or 1))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            rng = np.random.default_rng(seed)
            train = x if n <= 256 * nlist else x[np.sort(rng.choice(n, 256 * nlist, replace=False))]
            index.train(train)
            index.nprobe = min(nprobe, nlist)
            self._quantizer = quantizer  # keep it alive with the index
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
        else:
            raise ValueError(f"unknown faiss index kind {kind!r} (flat | ivf | hnsw)")
        index.add(x)
        self.index = index

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _as_f32(queries)
        kk = min(k, self.ntotal)
        if kk == 0 or q.shape[0] == 0:
            return _pad(np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64), k)
        s, i = self.index.search(q, kk)
        s = np.where(i < 0, -np.inf, s).astype(np.float32)
        return _pad(s, i.astype(np.int64), k)


def _faiss():
    """``import faiss`` without its loader's INFO lines about CPU instruction sets."""
    import logging

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def faiss_available() -> bool:
    try:
        _faiss()
    except ImportError:
        return False
    return True


def resolve_kind(kind: str, n: int) -> str:
    """``auto`` -> ``flat`` (``exact`` without faiss) up to :data:`AUTO_EXACT_MAX` vectors, else ``ivf``."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; one of {', '.join(KINDS)}")
    if kind != "auto":
        if kind != "exact" and not faiss_available():
            raise ValueError(f"index kind {kind!r} needs faiss (pip install faiss-cpu); 'exact' works without")
        return kind
    if not faiss_available():
        return "exact"
    return "flat" if n <= AUTO_EXACT_MAX else "ivf"


def build_index(vectors: np.ndarray, kind: str = "auto", **kwargs) -> Index:
    """An index over ``vectors`` ``(n, d)`` (see the module docstring for ``kind``); ``kwargs`` go to
    :class:`FaissIndex`."""
    x = _as_f32(vectors)
    k = resolve_kind(kind, x.shape[0])
    if k == "exact":
        return ExactIndex(x)
    return FaissIndex(x, k, **kwargs)
