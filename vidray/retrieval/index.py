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

The kinds are the :data:`vidray.registry.INDEXES` table (one factory ``(vectors, **kwargs) -> index``
each). ``auto`` picks ``flat`` up to :data:`AUTO_EXACT_MAX` vectors (``exact`` when faiss is missing) and
``ivf`` above: build and search times and recall at 1M vectors are in docs/retrieval.md
(``python benchmarks/retrieval.py --index-only``).

Every index answers ``search(queries, k) -> (scores, ids)``, both ``(Q, k)``, best first; rows with
fewer than ``k`` results are padded with score ``-inf`` and id ``-1``.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from vidray.registry import INDEXES

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
        if kind not in _FAISS_BUILDERS:
            raise ValueError(f"unknown faiss index kind {kind!r}; one of {', '.join(_FAISS_BUILDERS)}")
        self.kind = kind
        opts = {"nlist": nlist, "nprobe": nprobe, "hnsw_m": hnsw_m, "ef_construction": ef_construction,
                "ef_search": ef_search, "seed": seed}
        index, self._keep = _FAISS_BUILDERS[kind](faiss, x, **opts)  # _keep: the IVF quantiser stays alive
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


def _flat(faiss: Any, x: np.ndarray, **_: Any) -> tuple[Any, Any]:
    return faiss.IndexFlatIP(x.shape[1]), None


def _ivf(faiss: Any, x: np.ndarray, *, nlist: int | None, nprobe: int, seed: int, **_: Any) -> tuple[Any, Any]:
    n, d = x.shape
    nlist = nlist or max(1, int(4 * math.sqrt(n)))
    nlist = max(1, min(nlist, n // 39 or 1))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    rng = np.random.default_rng(seed)
    train = x if n <= 256 * nlist else x[np.sort(rng.choice(n, 256 * nlist, replace=False))]
    index.train(train)
    index.nprobe = min(nprobe, nlist)
    return index, quantizer


def _hnsw(faiss: Any, x: np.ndarray, *, hnsw_m: int, ef_construction: int, ef_search: int,
          **_: Any) -> tuple[Any, Any]:
    index = faiss.IndexHNSWFlat(x.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.hnsw.efSearch = ef_search
    return index, None


_FAISS_BUILDERS = {"flat": _flat, "ivf": _ivf, "hnsw": _hnsw}


def _faiss_factory(kind: str) -> Any:
    def make(vectors: np.ndarray, **kwargs: Any) -> FaissIndex:
        return FaissIndex(vectors, kind, **kwargs)

    return make


INDEXES.register("exact", lambda vectors, **_: ExactIndex(vectors),
                 help="numpy matrix product, blockwise, no faiss: the reference")
INDEXES.register("flat", _faiss_factory("flat"), help="faiss IndexFlatIP: exact, multi-threaded")
INDEXES.register("ivf", _faiss_factory("ivf"), help="faiss IndexIVFFlat: approximate, fast build (nprobe cells)")
INDEXES.register("hnsw", _faiss_factory("hnsw"), help="faiss IndexHNSWFlat: approximate graph, slow build")
KINDS = ("auto", *INDEXES.names())
"""What ``--index`` accepts: ``auto`` and the :data:`vidray.registry.INDEXES` names."""


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
    return INDEXES.get(resolve_kind(kind, x.shape[0]))(x, **kwargs)
