"""``vidray embed``: one descriptor per stored frame and one per video of an ingest output, on Ray Data.

Pipeline::

    ingest output (committed clips parts)
      -> fit (ONE Ray task, before anything else): a seeded sample of frames (fit.max_frames,
         fit.frames_per_video per video) through the network -> k-means vocabulary + PCA-whitening
         -> EMB/encoder.npz (numpy arrays; loaded without pickle), EMB/manifest.json
      -> ray.data.from_items(one item per clips part still to do)
      -> map_batches(EmbedPart, compute=ActorPoolStrategy(n), num_gpus=1 per actor when the cluster
         has GPUs, else num_cpus): each actor builds the network once, receives the fitted encoder's
         arrays (broadcast through its constructor), and for each part:
         read the rows -> decode JPEGs -> network -> descriptor -> commit
             EMB/frames/part-<key>.parquet   video_id, frame_index, frame_time_s, vector
             EMB/videos/part-<key>.parquet   video_id, path, split, labels, num_frames, status, error, vector

Exactly once, resumable (as :mod:`vidray.ingest`): ``<key>`` is the key of the ingest's clips part
(itself a hash of its video ids; clips parts are immutable once committed), so a retried task rewrites
the same files. Each file is written under a temporary name and renamed; the frames part first, the
videos part last: a frames part counts only once its videos part exists, and a re-run deletes orphans
and embeds only the clips parts without a videos part (a new run after the ingest grew embeds only
the new parts, with the same encoder). Settings that change the vectors (``EmbedConfig.settings_hash``)
or another ingest (``data_hash``) are refused unless ``overwrite``.

The video descriptor is the mean of its frames' descriptors, L2-normalised
(:func:`vidray.retrieval.vlad.video_descriptor`).
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vidray import __version__
from vidray.io.reader import IngestDataset
from vidray.io.store import Store
from vidray.retrieval.config import EmbedConfig

logger = logging.getLogger(__name__)

FORMAT = "vidray-embeddings"
VERSION = 1
MANIFEST = "manifest.json"
ENCODER = "encoder.npz"
INGEST_COLUMNS = ["video_id", "path", "labels", "split", "chunk_index", "frame_index", "frame_time_s",
                  "frame_encoding", "frame_height", "frame_width", "frames"]


def frame_schema(dim: int) -> pa.Schema:
    """``EMB/frames/*.parquet``: one row per stored frame; ``vector`` is ``dim`` float32, unit L2 norm."""
    return pa.schema([("video_id", pa.string()), ("frame_index", pa.int32()), ("frame_time_s", pa.float32()),
                      ("vector", pa.list_(pa.float32(), dim))],
                     metadata={"vidray.embeddings_version": str(VERSION)})


def video_schema(dim: int) -> pa.Schema:
    """``EMB/videos/*.parquet``: one row per video of the part (``status`` ok | failed; ``vector`` null
    when failed), ``split`` / ``labels`` / ``path`` copied from the ingest."""
    return pa.schema([("video_id", pa.string()), ("path", pa.string()), ("split", pa.string()),
                      ("labels", pa.list_(pa.int32())), ("num_frames", pa.int32()), ("status", pa.string()),
                      ("error", pa.string()), ("vector", pa.list_(pa.float32(), dim))],
                     metadata={"vidray.embeddings_version": str(VERSION)})


def vectors_of(col: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A ``fixed_size_list<float32>[dim]`` column without nulls -> ``(n, dim)`` float32 (one copy at most)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise ValueError("vector column has nulls; filter status == 'ok' first")
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------------
# npz through a Store (encoder arrays; never pickled)
# ------------------------------------------------------------------------------------------------
def write_npz(st: Store, arrays: Mapping[str, np.ndarray], rel: str) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    target = st.temp_name(rel) if st.local else rel
    with st.fs.open_output_stream(st.path(target)) as f:
        f.write(buf.getvalue())
    if st.local:
        st.commit(target, rel)


def read_npz(st: Store, rel: str) -> dict[str, np.ndarray]:
    with st.fs.open_input_stream(st.path(rel)) as f:
        data = f.read()
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ------------------------------------------------------------------------------------------------
# Work of one clips part (pure: no Ray; the actor calls it)
# ------------------------------------------------------------------------------------------------
def embed_part(describer: Any, ingest: Store, out: Store, part: str) -> dict:
    """Embed the videos of clips part ``part`` (``"clips/part-<key>.parquet"``) and commit
    ``frames/part-<key>`` then ``videos/part-<key>`` in ``out``. Returns counts for the summary.

    A video whose frames fail to decode is recorded as ``failed`` with the reason; it never stops
    the part.
    """
    import torch

    from vidray.data.loader import iter_rows
    from vidray.retrieval.vlad import video_descriptor

    t0 = time.perf_counter()
    name = part.rsplit("/", 1)[-1]
    dim = describer.out_dim
    t = ingest.read_table(part, columns=INGEST_COLUMNS)
    t = t.sort_by([("video_id", "ascending"), ("chunk_index", "ascending")])
    meta = t.select(["video_id", "path", "split", "labels", "frame_time_s"]).to_pydict()
    videos: dict[str, dict] = {}
    for i, row in enumerate(iter_rows(t)):
        v = videos.setdefault(row.video_id, {"path": meta["path"][i], "split": meta["split"][i],
                                             "labels": meta["labels"][i], "codes": [], "fidx": [], "ftime": [],
                                             "error": ""})  # fmt: skip
        if v["error"]:
            continue
        try:
            codes = describer.encode(row.frames(np.arange(row.num_frames)))
        except Exception as e:  # a corrupt frame / unexpected size: record, go on
            v["error"] = f"{row.video_id}: {type(e).__name__}: {e}"
            continue
        v["codes"].append(codes)
        v["fidx"].append(row.frame_index.astype(np.int32))
        v["ftime"].append(np.asarray(meta["frame_time_s"][i], np.float32))
    frame_rows: dict[str, list] = {"video_id": [], "frame_index": [], "frame_time_s": [], "vector": []}
    video_rows: dict[str, list] = {k: [] for k in video_schema(dim).names}
    n_frames = n_failed = 0
    for vid, v in videos.items():
        codes = np.concatenate(v["codes"]) if v["codes"] and not v["error"] else np.zeros((0, dim), np.float32)
        if not v["error"] and len(codes) == 0:
            v["error"] = f"{vid}: no stored frame"
        ok = not v["error"]
        if ok:
            n = len(codes)
            frame_rows["video_id"] += [vid] * n
            frame_rows["frame_index"].append(np.concatenate(v["fidx"]))
            frame_rows["frame_time_s"].append(np.concatenate(v["ftime"]))
            frame_rows["vector"].append(codes)
            n_frames += n
        else:
            n_failed += 1
        vec = video_descriptor(torch.from_numpy(codes)).numpy() if ok else None
        for k, val in (("video_id", vid), ("path", v["path"]), ("split", v["split"]), ("labels", v["labels"]),
                       ("num_frames", len(codes)), ("status", "ok" if ok else "failed"), ("error", v["error"]),
                       ("vector", vec)):
            video_rows[k].append(val)
    if n_frames:
        frames_t = pa.table({
            "video_id": pa.array(frame_rows["video_id"], pa.string()),
            "frame_index": pa.array(np.concatenate(frame_rows["frame_index"]), pa.int32()),
            "frame_time_s": pa.array(np.concatenate(frame_rows["frame_time_s"]), pa.float32()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(frame_rows["vector"]).ravel(),
                                                                 pa.float32()), dim),
        }, schema=frame_schema(dim))  # fmt: skip
        out.write_table(frames_t, f"frames/{name}")
    vec_col = pa.array([None if x is None else x.tolist() for x in video_rows.pop("vector")], pa.list_(pa.float32(), dim))
    videos_t = pa.Table.from_pydict({**video_rows, "vector": vec_col}, schema=video_schema(dim))
    out.write_table(videos_t, f"videos/{name}")
    return {"part": name, "videos": len(videos), "failed": n_failed, "frames": n_frames,
            "seconds": time.perf_counter() - t0}


class EmbedPart:
    """Ray Data actor: holds the network and the fitted encoder; ``__call__`` embeds clips parts.

    The fitted encoder reaches every actor through the output store (``encoder.npz``, checked
    against its SHA-256 in the manifest), so a restarted actor finds it again wherever it runs.
    """

    def __init__(self, data_uri: str, out_uri: str, cfg: dict, encoder_sha256: str, fingerprint: str,
                 device: str, board: Any = None) -> None:
        import hashlib

        import torch

        from vidray.retrieval.features import FrameDescriber

        self.ingest, self.out = Store(data_uri), Store(out_uri)
        self.board = board  # vidray.console.ProgressBoard: one count per part embedded
        raw = _read_bytes(self.out, ENCODER)
        if hashlib.sha256(raw).hexdigest() != encoder_sha256:
            raise RuntimeError(f"{self.out.url(ENCODER)} changed while embedding (another run into the same --out?)")
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            encoder_state = {k: z[k] for k in z.files}
        self.cfg = EmbedConfig.model_validate(cfg)
        if device == "cpu":
            torch.set_num_threads(max(1, int(self.cfg.execution.num_cpus_per_actor)))
        import cv2

        cv2.setNumThreads(1)
        self.describer = FrameDescriber(self.cfg, encoder_state, device=device)
        if self.describer.fingerprint != fingerprint:
            raise RuntimeError(
                f"this worker built other network weights ({self.describer.fingerprint}) than the fit task "
                f"({fingerprint}): different torch/torchvision versions on the nodes? Use model.weights or "
                f"model.checkpoint instead of a random-init network"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = []
        for p in batch["part"]:
            rows.append(embed_part(self.describer, self.ingest, self.out, str(p)))
            if self.board is not None:
                self.board.add.remote("done", 1)
        return {k: np.array([r[k] for r in rows]) for k in ("part", "videos", "failed", "frames", "seconds")}


# ------------------------------------------------------------------------------------------------
# Fitting the encoder (one Ray task)
# ------------------------------------------------------------------------------------------------
def fit_sample(ingest: Store, parts: list[str], cfg: EmbedConfig) -> list[np.ndarray]:
    """A seeded sample of stored frames: parts in a shuffled order, ``fit.frames_per_video`` evenly
    spaced frames of each video's first chunk, until ``fit.max_frames``. Returns frame arrays
    ``(n_i, H, W, 3)`` uint8 (one per video)."""
    from vidray.data.loader import iter_rows

    rng = np.random.default_rng(cfg.fit.seed)
    order = rng.permutation(len(parts))
    out: list[np.ndarray] = []
    total = 0
    for pi in order:
        t = ingest.read_table(parts[pi], columns=INGEST_COLUMNS)
        t = t.filter(pc.equal(t["chunk_index"], 0))
        for row in iter_rows(t):
            m = min(cfg.fit.frames_per_video, row.num_frames, cfg.fit.max_frames - total)
            if m <= 0:
                continue
            idx = np.unique(np.linspace(0, row.num_frames - 1, m).round().astype(np.int64))
            out.append(row.frames(idx))
            total += len(idx)
        if total >= cfg.fit.max_frames:
            break
    return out


def fit_encoder(data_uri: str, parts: list[str], cfg_dict: dict, device: str = "cpu") -> dict[str, Any]:
    """Fit the descriptor on a sample of frames (:func:`fit_sample`). Runs as one Ray task.

    Returns ``state`` (the encoder's arrays), ``fingerprint`` (network weights), ``backbone``,
    ``tap``, ``frames`` (sample size), ``dim``, ``warnings`` (messages, e.g. a clamped ``pca_dim``).
    """
    import torch

    from vidray.retrieval.features import FrameDescriber, make_encoder

    cfg = EmbedConfig.model_validate(cfg_dict)
    if device == "cpu":
        torch.set_num_threads(max(1, int(cfg.execution.num_cpus_per_actor)))
    t0 = time.perf_counter()
    describer = FrameDescriber(cfg, None, device=device)
    frames = fit_sample(Store(data_uri), parts, cfg)
    n = sum(len(f) for f in frames)
    if n < 2:
        raise ValueError(f"{data_uri}: {n} stored frames; fitting the descriptor needs at least 2")
    feats = [describer.features(f) for f in frames]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = make_encoder(cfg).fit(feats)
    return {"state": enc.state(), "fingerprint": describer.fingerprint, "backbone": describer.backbone.name,
            "tap": describer.tap, "frames": n, "dim": int(enc.out_dim), "seconds": time.perf_counter() - t0,
            "warnings": [str(w.message) for w in caught]}


# ------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------
@dataclass
class EmbedSummary:
    """Counts over the whole output (this run and earlier runs into the same folder)."""

    out: str
    videos: int
    failed: int
    frames: int
    dim: int
    parts_this_run: int
    videos_this_run: int
    frames_this_run: int
    fit_s: float
    embed_s: float
    wall_s: float
    device: str
    actors: int
    failures: list[str]

    @property
    def frames_per_s(self) -> float:
        return self.frames_this_run / self.embed_s if self.embed_s > 0 else 0.0

    def format(self) -> str:
        lines = [
            f"vidray embed -> {self.out}",
            f"  videos {self.videos} (failed {self.failed}), frames {self.frames}, dim {self.dim}",
            f"  this run: {self.parts_this_run} parts, {self.videos_this_run} videos, {self.frames_this_run} frames"
            f" on {self.actors} {self.device} actor(s)",
            f"  fit {self.fit_s:.1f} s, embed {self.embed_s:.1f} s ({self.frames_per_s:.1f} frames/s), "
            f"wall {self.wall_s:.1f} s",
        ]
        lines += [f"  failed: {f}" for f in self.failures[:10]]
        return "\n".join(lines)


def _clean_orphans(st: Store) -> None:
    """Delete temporary files and frames parts whose videos part was never committed."""
    for d in ("frames", "videos"):
        for tmp in st.list(d, ".", ".tmp"):
            st.delete(f"{d}/{tmp}")
    done = set(st.list("videos", "part-", ".parquet"))
    for name in st.list("frames", "part-", ".parquet"):
        if name not in done:
            st.delete(f"frames/{name}")


def _placement(cfg: EmbedConfig, n_parts: int) -> tuple[str, int, float, float]:
    """``(device, actors, num_gpus, num_cpus)`` per actor from the cluster's resources."""
    import ray

    ex = cfg.execution
    res = ray.cluster_resources()
    gpus = float(res.get("GPU", 0))
    if ex.device == "cuda" and gpus < 1:
        raise ValueError("execution.device=cuda: the Ray cluster has no GPU")
    if ex.device == "cuda" or (ex.device == "auto" and gpus >= 1):
        n = ex.actors or max(1, int(gpus))
        return "cuda", max(1, min(n, n_parts)), 1.0, ex.num_cpus_per_actor
    n = ex.actors or max(1, int(float(res.get("CPU", 1)) // ex.num_cpus_per_actor))
    return "cpu", max(1, min(n, n_parts)), 0.0, ex.num_cpus_per_actor


def _check_same_settings(st: Store, cfg: EmbedConfig, data_hash: str) -> None:
    old = st.read_json(MANIFEST)
    if old.get("format") != FORMAT:
        raise ValueError(f"{st.uri}: {MANIFEST} is not a vidray embeddings manifest; use another --out")
    if old.get("settings_hash") != cfg.settings_hash():
        raise ValueError(f"{st.uri} holds embeddings made with other settings (settings_hash "
                         f"{old.get('settings_hash')} != {cfg.settings_hash()}); use another --out, or --overwrite")
    if old.get("data", {}).get("data_hash") != data_hash:
        raise ValueError(f"{st.uri} holds embeddings of another ingest (data_hash {old.get('data', {}).get('data_hash')}"
                         f" != {data_hash}); use another --out, or --overwrite")


def read_videos(st: Store) -> pa.Table:
    """Every committed videos part of an embeddings folder (one row per embedded video)."""
    parts = [st.read_table(f"videos/{n}") for n in st.list("videos", "part-", ".parquet")]
    if not parts:
        return pa.table({"video_id": pa.array([], pa.string()), "status": pa.array([], pa.string()),
                         "num_frames": pa.array([], pa.int32()), "error": pa.array([], pa.string())})
    return pa.concat_tables(parts)


def _manifest(ds: IngestDataset, cfg: EmbedConfig, fit: Mapping[str, Any], state: str, counts: dict,
              enc_sha: str) -> dict:
    m = cfg.model
    if m.checkpoint:
        weights = f"checkpoint {m.checkpoint}"
    elif m.weights:
        weights = str(m.weights)
    else:
        weights = f"random init (seed {m.seed})"
    icfg = ds.meta.get("config", {})
    return {
        "format": FORMAT, "version": VERSION, "vidray_version": __version__, "state": state,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {"uri": ds.out, "data_hash": ds.meta.get("data_hash"),
                 "manifest_sha256": ds.meta.get("manifest", {}).get("sha256"), "resize": icfg.get("resize"),
                 "sampling": icfg.get("sampling")},
        "settings_hash": cfg.settings_hash(),
        "model": fit["backbone"], "layer": fit["tap"], "weights": weights,
        "weights_fingerprint": fit["fingerprint"], "descriptor": cfg.descriptor.kind, "k": cfg.descriptor.k,
        "pca_dim": cfg.descriptor.pca_dim, "dim": fit["dim"],
        "encoder": {"file": ENCODER, "sha256": enc_sha},
        "fit": {"frames": fit["frames"], "seconds": round(float(fit["seconds"]), 2), "warnings": fit.get("warnings", [])},
        "config": cfg.model_dump(mode="json"),
        "counts": counts,
    }  # fmt: skip


def run_embed(data: str, out: str, cfg: EmbedConfig | None = None, *, overwrite: bool = False) -> EmbedSummary:
    """Embed the ingest output ``data`` into ``out`` (see the module docstring)."""
    import hashlib

    from vidray.runtime import init_ray

    cfg = cfg or EmbedConfig()
    t_start = time.perf_counter()
    ds = IngestDataset(data)
    data_hash = ds.meta.get("data_hash")
    st = Store(out)
    if st.exists(MANIFEST):
        if overwrite:
            for d in ("frames", "videos"):
                st.delete_dir(d)
            st.delete(ENCODER)
            st.delete(MANIFEST)
        else:
            _check_same_settings(st, cfg, data_hash)
    for d in ("frames", "videos"):
        st.makedirs(d)
    _clean_orphans(st)
    parts = [f"clips/{u.rsplit('/', 1)[-1]}" for u in ds.files]
    done = set(st.list("videos", "part-", ".parquet"))
    todo = [p for p in parts if p.rsplit("/", 1)[-1] not in done]

    fit_s = 0.0
    have_encoder = st.exists(ENCODER) and st.exists(MANIFEST)
    if not have_encoder and not parts:
        raise ValueError(f"{ds.out}: the ingest has no committed clips part: nothing to embed")
    if todo or not have_encoder:
        init_ray(cfg.execution.ray_address)
        import ray

        device, n_actors, num_gpus, num_cpus = _placement(cfg, max(1, len(todo)))
    else:
        device, n_actors, num_gpus, num_cpus = "cpu", 0, 0.0, 0.0
    if have_encoder:
        fit = st.read_json(MANIFEST)
        fit = {"backbone": fit["model"], "tap": fit["layer"], "fingerprint": fit["weights_fingerprint"],
               "dim": fit["dim"], "frames": fit["fit"]["frames"], "seconds": fit["fit"]["seconds"],
               "warnings": fit["fit"].get("warnings", [])}
    else:
        t0 = time.perf_counter()
        task = ray.remote(fit_encoder).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=1)
        fit = ray.get(task.remote(ds.out, parts, cfg.model_dump(mode="json"), device))
        fit_s = time.perf_counter() - t0
        for w in fit["warnings"]:
            logger.warning("fit: %s", w)
        write_npz(st, fit["state"], ENCODER)
    enc_sha = hashlib.sha256(_read_bytes(st, ENCODER)).hexdigest()
    st.write_json(_manifest(ds, cfg, fit, "running", {}, enc_sha), MANIFEST)

    t0 = time.perf_counter()
    results: list[dict] = []
    if todo:
        import ray.data

        from vidray.console import current, make_board

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = current().verbose  # vidray draws one bar; Ray Data's own with -v
        board = make_board()
        items = ray.data.from_items([{"part": p} for p in todo], override_num_blocks=len(todo))
        out_ds = items.map_batches(
            EmbedPart, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=n_actors),
            num_cpus=num_cpus, num_gpus=num_gpus or None,
            fn_constructor_kwargs={"data_uri": ds.out, "out_uri": st.uri, "cfg": cfg.model_dump(mode="json"),
                                   "encoder_sha256": enc_sha, "fingerprint": fit["fingerprint"],
                                   "device": device, "board": board},
        )  # fmt: skip
        with current().follow(board, "embed", len(todo), "parts"):
            results = out_ds.take_all()
    embed_s = time.perf_counter() - t0

    _clean_orphans(st)
    vt = read_videos(st)
    status = vt["status"].to_pylist()
    failures = [e for s, e in zip(status, vt["error"].to_pylist()) if s != "ok"]
    summary = EmbedSummary(
        out=st.uri, videos=vt.num_rows, failed=len(failures), frames=int(pc.sum(vt["num_frames"]).as_py() or 0),
        dim=int(fit["dim"]), parts_this_run=len(results), videos_this_run=sum(int(r["videos"]) for r in results),
        frames_this_run=sum(int(r["frames"]) for r in results), fit_s=fit_s, embed_s=embed_s,
        wall_s=time.perf_counter() - t_start, device=device, actors=n_actors if todo else 0, failures=failures,
    )  # fmt: skip
    counts = {k: v for k, v in asdict(summary).items() if k not in ("failures", "out")}
    st.write_json(_manifest(ds, cfg, fit, "complete", counts, enc_sha), MANIFEST)
    return summary


def _read_bytes(st: Store, rel: str) -> bytes:
    with st.fs.open_input_stream(st.path(rel)) as f:
        return f.read()
