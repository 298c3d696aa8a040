"""``vidray search`` and ``vidray dedup`` over an embeddings folder (the output of ``vidray embed``).

* :class:`Embeddings` reads the folder: the manifest, the committed video / frame vectors, and the
  network + fitted encoder that made them (to embed a query image or video the same way).
* :func:`search` ranks the videos for a query: a ``video_id`` of the folder (its stored vectors), an
  image file (its descriptor against every frame; a video scores its best frame) or a video file
  (frames sampled as the ingest sampled the corpus; its video descriptor against the videos). Each
  hit carries its best-matching frame pairs.
* :func:`find_duplicates` links every video to its neighbours (``neighbors`` nearest by the index)
  with similarity ``>= threshold`` and returns the connected components of two or more videos, and
  those whose videos come from more than one split (train/test leakage).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidray.io.store import Store
from vidray.retrieval.embed import ENCODER, FORMAT, MANIFEST, read_npz, read_videos, vectors_of
from vidray.retrieval.index import build_index

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class Embeddings:
    """An embeddings folder, read-only (local path or URI)."""

    def __init__(self, uri: str | os.PathLike) -> None:
        self.store = Store(uri)
        self.uri = self.store.uri
        if not self.store.exists(MANIFEST):
            raise FileNotFoundError(f"{self.uri}: not an embeddings folder (no {MANIFEST}; run vidray embed)")
        self.meta: dict = self.store.read_json(MANIFEST)
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{self.uri}/{MANIFEST}: not a vidray embeddings manifest")
        self.dim = int(self.meta["dim"])
        self._videos: pa.Table | None = None
        self._describer = None

    # ---- vectors ---------------------------------------------------------------------------------
    def videos(self) -> pa.Table:
        """Rows of the embedded videos with ``status == "ok"`` (``video_id, path, split, labels,
        num_frames, vector``)."""
        if self._videos is None:
            t = read_videos(self.store)
            self._videos = t.filter(pc.equal(t["status"], "ok")) if t.num_rows else t
        return self._videos

    def video_vectors(self) -> tuple[list[str], list[str], np.ndarray]:
        """``(video_ids, splits, vectors (n, dim) float32)``."""
        t = self.videos()
        if t.num_rows == 0:
            return [], [], np.zeros((0, self.dim), np.float32)
        return t["video_id"].to_pylist(), t["split"].to_pylist(), vectors_of(t["vector"], self.dim)

    def frames(self, video_ids: list[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(video_id per frame, frame_index (n,), vectors (n, dim))`` of all frames, or of ``video_ids``."""
        done = set(self.store.list("videos", "part-", ".parquet"))
        filt = [("video_id", "in", list(video_ids))] if video_ids is not None else None
        parts = []
        for name in self.store.list("frames", "part-", ".parquet"):
            if name in done:
                parts.append(pq.read_table(self.store.path(f"frames/{name}"), filesystem=self.store.fs, filters=filt,
                                           columns=["video_id", "frame_index", "vector"]))
        if not parts or sum(p.num_rows for p in parts) == 0:
            return [], np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        t = pa.concat_tables(parts)
        return (t["video_id"].to_pylist(), t["frame_index"].to_numpy().astype(np.int64),
                vectors_of(t["vector"], self.dim))

    # ---- the network that made them --------------------------------------------------------------
    def describer(self):
        """The :class:`~vidray.retrieval.features.FrameDescriber` of this folder (CPU)."""
        if self._describer is None:
            import warnings

            from vidray.retrieval.config import EmbedConfig
            from vidray.retrieval.features import FrameDescriber

            cfg = EmbedConfig.model_validate(self.meta["config"])
            d = FrameDescriber(cfg, read_npz(self.store, ENCODER), device="cpu")
            if d.fingerprint != self.meta.get("weights_fingerprint"):
                warnings.warn(f"{self.uri}: this process built other network weights than the embedding run "
                              f"({d.fingerprint} != {self.meta.get('weights_fingerprint')}); query vectors may not "
                              f"match", stacklevel=2)
            self._describer = d
        return self._describer

    def query_frames_from_video(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """Frames of a query video sampled and resized as the ingest did for the corpus:
        ``(frames (T, H, W, 3) uint8, source frame indices (T,))``."""
        from vidray.config import SamplingConfig
        from vidray.io.video import VideoDecodeError, decode_frames, probe
        from vidray.sampling import sample_frames

        data = self.meta.get("data", {})
        try:
            info = probe(path)
            samp = SamplingConfig.model_validate(data.get("sampling") or {})
            idx = sample_frames(info.timestamps, samp, Path(path).stem)
            size = _ingest_size(info.width, info.height, data.get("resize"))
            frames, got = decode_frames(path, idx, size=size, info=info)
        except VideoDecodeError as e:
            raise ValueError(f"QUERY {e}") from None
        if len(frames) == 0:
            raise ValueError(f"QUERY {path}: no frame could be sampled")
        return frames, got

    def query_frame_from_image(self, path: str) -> np.ndarray:
        """An image file as ``(1, H, W, 3)`` uint8 RGB, resized as the ingest resized frames."""
        import cv2

        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"QUERY {path}: cannot be read as an image")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        size = _ingest_size(img.shape[1], img.shape[0], self.meta.get("data", {}).get("resize"))
        from vidray.io.video import resize_rgb

        return resize_rgb(img, size)[None]


def _ingest_size(w: int, h: int, resize: dict | None) -> tuple[int, int]:
    from vidray.io.video import output_size

    resize = resize or {}
    return output_size(w, h, resize.get("short_side"), resize.get("max_long_side"))


# ------------------------------------------------------------------------------------------------
# search
# ------------------------------------------------------------------------------------------------
@dataclass
class Hit:
    """One retrieved video: its similarity to the query and its best-matching frame pairs
    ``(query frame index or None, frame index, similarity)``, best first."""

    video_id: str
    score: float
    split: str
    path: str
    frames: list[tuple[int | None, int, float]] = field(default_factory=list)


@dataclass
class SearchResult:
    query: str
    kind: str  # video_id | image | video
    hits: list[Hit]

    def format(self) -> str:
        lines = [f"query {self.query} ({self.kind}): top {len(self.hits)}"]
        for r, h in enumerate(self.hits, 1):
            fr = ", ".join(f"{'q' + str(q) + '~' if q is not None else ''}f{f} {s:.3f}" for q, f, s in h.frames)
            lines.append(f"  {r:>3}. {h.score:.4f}  {h.video_id}  [{h.split}]  frames: {fr}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "kind": self.kind, "hits": [
            {"video_id": h.video_id, "score": round(h.score, 6), "split": h.split, "path": h.path,
             "frames": [{"query_frame": q, "frame_index": f, "score": round(s, 6)} for q, f, s in h.frames]}
            for h in self.hits]}  # fmt: skip


def _best_pairs(q: np.ndarray, q_idx: list[int | None], db: np.ndarray, db_idx: np.ndarray,
                n: int) -> list[tuple[int | None, int, float]]:
    """The ``n`` best (query frame, db frame) pairs by similarity, each db frame at most once."""
    if len(db) == 0 or len(q) == 0:
        return []
    s = q @ db.T  # (Tq, Tdb)
    best_q = s.argmax(axis=0)
    best_s = s.max(axis=0)
    order = np.argsort(-best_s, kind="stable")[:n]
    return [(q_idx[int(best_q[j])], int(db_idx[j]), float(best_s[j])) for j in order]


def search(emb: Embeddings, query: str, k: int = 10, *, index: str = "auto", frames_per_hit: int = 3) -> SearchResult:
    """Top-``k`` videos of ``emb`` for ``query`` (see the module docstring). A ``video_id`` of the
    folder takes precedence over a file of the same name. Raises ``ValueError`` (one line) for a
    query that is neither."""
    if k < 1:
        raise ValueError(f"--k must be >= 1, got {k}")
    ids, splits, vecs = emb.video_vectors()
    if not ids:
        raise ValueError(f"{emb.uri}: no embedded video")
    pos = {v: i for i, v in enumerate(ids)}
    vt = emb.videos()
    paths = vt["path"].to_pylist()
    if query in pos:
        kind = "video_id"
        _, q_fidx, q_frames = emb.frames([query])
        q_vec = vecs[pos[query]][None]
        q_idx: list[int | None] = [int(i) for i in q_fidx]
    elif os.path.isfile(query):
        d = emb.describer()
        if query.lower().endswith(IMAGE_EXTENSIONS):
            kind = "image"
            q_frames = d.encode(emb.query_frame_from_image(query))
            q_idx = [None]
        else:
            kind = "video"
            frames, got = emb.query_frames_from_video(query)
            q_frames = d.encode(frames)
            q_idx = [int(i) for i in got]
        m = q_frames.mean(axis=0)
        q_vec = (m / max(np.linalg.norm(m), 1e-12))[None].astype(np.float32)
    else:
        raise ValueError(f"QUERY {query!r}: no such file, and not a video_id in {emb.uri}")

    if kind == "image":  # rank videos by their best frame
        f_vid, f_idx, f_vec = emb.frames()
        scores, fids = build_index(f_vec, index).search(q_frames, min(len(f_vid), max(50, 20 * k)))
        best: dict[str, tuple[float, int]] = {}
        for s, j in zip(scores[0], fids[0]):
            if j >= 0 and f_vid[j] not in best:
                best[f_vid[j]] = (float(s), int(f_idx[j]))
        top = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        hits = [Hit(v, s, splits[pos[v]], paths[pos[v]], [(None, fi, s)]) for v, (s, fi) in top]
        return SearchResult(query, kind, hits)

    scores, vids = build_index(vecs, index).search(q_vec, k)
    top = [(ids[j], float(s)) for s, j in zip(scores[0], vids[0]) if j >= 0]
    f_vid, f_idx, f_vec = emb.frames([v for v, _ in top])
    by_video: dict[str, list[int]] = {}
    for r, v in enumerate(f_vid):
        by_video.setdefault(v, []).append(r)
    hits = []
    for v, s in top:
        rows = np.asarray(by_video.get(v, []), np.int64)
        pairs = _best_pairs(q_frames, q_idx, f_vec[rows], f_idx[rows], frames_per_hit) if len(rows) else []
        hits.append(Hit(v, s, splits[pos[v]], paths[pos[v]], pairs))
    return SearchResult(query, kind, hits)


# ------------------------------------------------------------------------------------------------
# dedup
# ------------------------------------------------------------------------------------------------
def connected_components(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    """Components (sorted lists of node ids, >= 2 nodes) of an undirected graph, by union-find."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comps: dict[int, list[int]] = {}
    for i in range(n):
        comps.setdefault(find(i), []).append(i)
    return [c for c in comps.values() if len(c) > 1]


@dataclass
class DedupResult:
    """``groups``: lists of near-duplicate video ids (largest first); ``cross_split``: the groups whose
    videos come from more than one split; ``pairs``: the linking ``(a, b, similarity)`` edges."""

    videos: int
    threshold: float
    groups: list[list[str]]
    cross_split: list[list[str]]
    splits: dict[str, str]
    pairs: list[tuple[str, str, float]]

    def format(self) -> str:
        n_dup = sum(len(g) for g in self.groups)
        lines = [f"vidray dedup: {self.videos} videos, similarity >= {self.threshold:g}: {len(self.groups)} groups "
                 f"of near-duplicates ({n_dup} videos); {len(self.cross_split)} span more than one split"]
        cross = {tuple(g) for g in self.cross_split}
        best: dict[str, tuple[str, float]] = {}
        for a, b, s in self.pairs:
            for x, y in ((a, b), (b, a)):
                if x not in best or s > best[x][1]:
                    best[x] = (y, s)
        for gi, g in enumerate(self.groups, 1):
            sp = sorted({self.splits.get(v, "") for v in g})
            flag = "  CROSS-SPLIT (train/test leakage)" if tuple(g) in cross else ""
            lines.append(f"  group {gi}: {len(g)} videos, splits {','.join(sp)}{flag}")
            for v in g:
                y, s = best.get(v, ("", float("nan")))
                lines.append(f"    {v}  [{self.splits.get(v, '')}]  {s:.3f} to {y}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"groups": self.groups, "cross_split": self.cross_split}


def find_duplicates(ids: list[str], splits: list[str], vectors: np.ndarray, threshold: float, *,
                    neighbors: int = 10, index: str = "auto") -> DedupResult:
    """Near-duplicate groups of videos (module docstring). A video links to at most ``neighbors``
    others directly; larger groups still form through shared neighbours."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must be a cosine similarity in [-1, 1], got {threshold}")
    n = len(ids)
    linked: dict[tuple[int, int], float] = {}
    if n > 1:
        scores, nn = build_index(vectors, index).search(vectors, min(n, neighbors + 1))
        for i, j in zip(*np.nonzero((scores >= threshold) & (nn >= 0))):
            a, b = i, int(nn[i, j])
            if a != b:
                key = (min(a, b), max(a, b))
                linked[key] = max(linked.get(key, -np.inf), float(scores[i, j]))
    pairs = [(ids[a], ids[b], s) for (a, b), s in sorted(linked.items())]
    comps = connected_components(n, list(linked))
    groups = sorted(([ids[i] for i in sorted(c, key=lambda i: ids[i])] for c in comps), key=lambda g: (-len(g), g[0]))
    split_of = dict(zip(ids, splits))
    cross = [g for g in groups if len({split_of[v] or "" for v in g}) > 1]
    return DedupResult(n, threshold, groups, cross, split_of, pairs)


def dedup(emb: Embeddings, threshold: float, *, neighbors: int = 10, index: str = "auto") -> DedupResult:
    """:func:`find_duplicates` over the video descriptors of an embeddings folder."""
    ids, splits, vecs = emb.video_vectors()
    return find_duplicates(ids, splits, vecs, threshold, neighbors=neighbors, index=index)
