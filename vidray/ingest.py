"""``vidray ingest``: a video corpus to Parquet on Ray Data.

Pipeline (one Ray Data dataset, CPU tasks)::

    manifest entries ──from_items──▶ map_batches(process_videos) ──write_datasink(IngestSink)
                                      decode + sample + flow          per task, atomically:
                                      + JPEG, one video at a time      clips/part-<key>.parquet
                                                                       status/part-<key>.parquet

* Every manifest entry yields exactly one status row (``ok``, ``failed`` with the error, or
  ``skipped``); failures of single videos are caught per video and never stop the run.
* The files and their commit protocol belong to the dataset format, :mod:`vidray.io.dataset`: a task
  that Ray retries after its worker died rewrites the *same* part names (no duplicate, no lost row),
  and a crash between the clips and the status commit leaves an orphan that the next run deletes.
* Resume: a re-run skips every video that has a status row; ``retry_failed`` first drops the failed
  rows (rewriting their status parts) so only those run again.
* ``dataset.json`` records the config, schema version, manifest hash, classes and counts.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ray.data import Datasink

from vidray import __version__
from vidray.config import IngestConfig
from vidray.console import current, make_board
from vidray.io import dataset as fmt
from vidray.io.flowcodec import encode_flow_stack, quantize_flow
from vidray.io.imcodec import encode_image
from vidray.io.manifest import Manifest, ManifestEntry, read_manifest
from vidray.io.schema import CLIP_SCHEMA, STATUS_SCHEMA
from vidray.io.store import Store
from vidray.io.video import VideoDecodeError, VideoInfo, iter_frames, output_size, probe
from vidray.runtime import init_ray, node_selector, trace_placement
from vidray.sampling import flow_indices, flow_step, sample_frames

logger = logging.getLogger(__name__)

# The rows passed from the processing tasks to the sink: clip columns plus the video's status.
TASK_SCHEMA = pa.schema(
    list(CLIP_SCHEMA)
    + [
        ("manifest_row", pa.int64()),
        ("status", pa.string()),
        ("error_type", pa.string()),
        ("error", pa.string()),
        ("num_frames", pa.int64()),
        ("num_flow", pa.int64()),
        ("bytes", pa.int64()),
        ("seconds", pa.float64()),
    ]
)
INPUT_COLUMNS = ("video_id", "path", "open_path", "labels", "split", "row", "status", "error_type", "error")


# ------------------------------------------------------------------------------------------------
# Per-video processing (pure Python, no Ray: tested directly)
# ------------------------------------------------------------------------------------------------
def _status_row(entry: dict, status: str, error_type: str = "", error: str = "", **kw) -> dict:
    row: dict[str, Any] = {name: None for name in TASK_SCHEMA.names}
    row.update(
        video_id=entry["video_id"], path=entry["path"], labels=list(entry["labels"]), split=entry["split"],
        manifest_row=int(entry["row"]), status=status, error_type=error_type, error=error,
        chunk_index=0, num_chunks=0, num_frames=0, num_flow=0, bytes=0, seconds=0.0,
    )
    row.update(kw)
    return row


def _flow_stacks(
    gray: dict[int, np.ndarray], fidx: np.ndarray, flow_fn, cfg: IngestConfig, cache: dict
) -> list[bytes]:
    """Encoded flow stacks for the stored frames whose spans are ``fidx`` ``(n, L+1)``."""
    out = []
    for span in fidx:
        fields = []
        for a, b in zip(span[:-1].tolist(), span[1:].tolist()):
            key = (a, b)
            if key not in cache:
                cache[key] = quantize_flow(flow_fn(gray[a], gray[b]), cfg.flow.bound)
            fields.append(cache[key])
        out.append(encode_flow_stack(np.stack(fields), cfg.output.flow_encoding, cfg.output.jpeg_quality))
    return out


def process_video(entry: dict, cfg: IngestConfig) -> list[dict]:
    """Decode, sample, (flow) and encode one manifest entry. Returns its rows (``TASK_SCHEMA``).

    Always returns at least one row: ``ok`` chunk rows, or a single ``failed``/``skipped`` row whose
    ``error`` names the file and the reason. Never raises for a bad video.
    """
    t0 = time.perf_counter()
    if entry.get("status"):
        return [_status_row(entry, entry["status"], entry.get("error_type", ""), entry.get("error", ""))]
    path = entry["open_path"]
    try:
        return _process_video(entry, path, cfg, t0)
    except VideoDecodeError as e:
        return [_status_row(entry, "failed", "VideoDecodeError", f"{entry['path']}: {e.reason}",
                            seconds=time.perf_counter() - t0)]
    except MemoryError as e:
        return [_status_row(entry, "failed", "MemoryError", f"{entry['path']}: out of memory: {e}",
                            seconds=time.perf_counter() - t0)]
    except Exception as e:  # any other per-video problem is recorded, not raised
        return [_status_row(entry, "failed", type(e).__name__, f"{entry['path']}: {e}",
                            seconds=time.perf_counter() - t0)]


def _process_video(entry: dict, path: str, cfg: IngestConfig, t0: float) -> list[dict]:
    info: VideoInfo = probe(path)
    indices = sample_frames(info.timestamps, cfg.sampling, entry["video_id"])
    if len(indices) == 0:
        raise VideoDecodeError(entry["path"], "sampling selected no frame")
    size = output_size(info.width, info.height, cfg.resize.short_side, cfg.resize.max_long_side,
                       upscale=cfg.resize.upscale)
    flow_on = cfg.flow.enabled
    step = flow_step(info.fps, cfg.flow.flow_fps) if flow_on else 1
    spans = flow_indices(indices, info.num_frames, cfg.flow.stack_length, step) if flow_on else None
    needed = np.unique(np.concatenate([indices, spans.ravel()])) if flow_on else np.unique(indices)
    stored = set(np.unique(indices).tolist())

    flow_size = size
    if flow_on and cfg.flow.short_side is not None:
        flow_size = output_size(size[0], size[1], cfg.flow.short_side, upscale=cfg.resize.upscale)
    flow_fn = _cached_flow_fn(cfg.flow.algorithm) if flow_on else None

    import cv2

    enc: dict[int, bytes] = {}
    flow_enc: dict[int, bytes] = {}
    gray: dict[int, np.ndarray] = {}
    flow_cache: dict = {}
    # stored frames whose flow span is complete get their stack computed as soon as possible, so only
    # the frames of open spans are held (streaming over long videos)
    order = np.unique(indices)
    span_of = {} if spans is None else {int(i): spans[j] for j, i in enumerate(indices)}
    pending = list(order.tolist()) if flow_on else []
    for idx, frame in iter_frames(path, needed, size=size, info=info, strategy=cfg.execution.seek,
                                  backend=cfg.execution.decoder):
        if idx in stored:
            enc[idx] = encode_image(frame, cfg.output.encoding, cfg.output.jpeg_quality)
        if flow_on:
            g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            if flow_size != size:
                g = cv2.resize(g, flow_size, interpolation=cv2.INTER_AREA)
            gray[idx] = g
            while pending and int(span_of[pending[0]][-1]) <= idx:
                i = pending.pop(0)
                flow_enc[i] = _flow_stacks(gray, span_of[i][None, :], flow_fn, cfg, flow_cache)[0]
            keep_from = min((int(span_of[p][0]) for p in pending), default=idx + 1)
            for k in [k for k in gray if k < keep_from]:
                del gray[k]
            for k in [k for k in flow_cache if k[0] < keep_from]:
                del flow_cache[k]
    if flow_on and pending:
        raise VideoDecodeError(entry["path"], f"flow span of frame {pending[0]} could not be decoded")

    frame_h, frame_w = size[1], size[0]
    fmeta = None
    if flow_on:
        fmeta = {
            "algorithm": cfg.flow.algorithm, "bound": float(cfg.flow.bound), "flow_fps": float(cfg.flow.flow_fps or 0.0),
            "step": int(step), "stack_length": int(cfg.flow.stack_length), "encoding": cfg.output.flow_encoding,
            "height": int(flow_size[1]), "width": int(flow_size[0]),
        }
    per_row = cfg.output.max_frames_per_row
    num_chunks = int(np.ceil(len(indices) / per_row))
    rows = []
    total_bytes = 0
    for c in range(num_chunks):
        idx = indices[c * per_row : (c + 1) * per_row]
        frames = [enc[int(i)] for i in idx]
        flows = [flow_enc[int(i)] for i in idx] if flow_on else None
        nbytes = sum(map(len, frames)) + (sum(map(len, flows)) if flows else 0)
        total_bytes += nbytes
        rows.append(
            {
                "video_id": entry["video_id"], "path": entry["path"], "labels": list(entry["labels"]),
                "split": entry["split"], "chunk_index": c, "num_chunks": num_chunks,
                "src_fps": float(info.fps), "src_frames": int(info.num_frames), "duration_s": float(info.duration_s),
                "width": int(info.width), "height": int(info.height), "rotation": int(info.rotation),
                "codec": info.codec, "frame_index": idx.astype(np.int32).tolist(),
                "frame_time_s": info.timestamps[idx].astype(np.float32).tolist(),
                "frame_encoding": cfg.output.encoding, "frame_height": frame_h, "frame_width": frame_w,
                "frames": frames, "flow": flows, "flow_meta": fmeta,
                "manifest_row": int(entry["row"]), "status": "ok", "error_type": "", "error": "",
                "num_frames": 0, "num_flow": 0, "bytes": nbytes, "seconds": 0.0,
            }
        )
    rows[0]["num_frames"] = int(len(indices))
    rows[0]["num_flow"] = int(len(indices)) if flow_on else 0
    rows[0]["seconds"] = time.perf_counter() - t0
    return rows


_FLOW_FNS: dict[str, Any] = {}


def _cached_flow_fn(algorithm: str):
    """One flow object per algorithm per worker process (creating DIS/TV-L1 objects is costly)."""
    if algorithm not in _FLOW_FNS:
        from vidray.flow import make_flow_fn

        _FLOW_FNS[algorithm] = make_flow_fn(algorithm)
    return _FLOW_FNS[algorithm]


def process_videos(batch: pa.Table, cfg: IngestConfig, board: Any = None) -> Iterator[pa.Table]:
    """Ray Data UDF: entries in (``INPUT_COLUMNS``), one ``TASK_SCHEMA`` table per video out.

    Yielding per video keeps a task's memory to one video's encoded rows. ``board``: the driver's
    :class:`vidray.console.ProgressBoard` (told of every video, fire-and-forget).
    """
    import cv2

    cv2.setNumThreads(1)  # Ray parallelises across videos
    trace_placement("ingest_task", videos=batch.num_rows)
    for entry in batch.to_pylist():
        entry["open_path"] = os.fsdecode(entry["open_path"])
        rows = process_video(entry, cfg)
        if board is not None:
            board.add.remote("failed" if rows[0]["status"] != "ok" else "done", 1)
        yield pa.Table.from_pylist(rows, schema=TASK_SCHEMA)


# ------------------------------------------------------------------------------------------------
# The Ray Data sink: one committed part per write task (vidray.io.dataset's protocol)
# ------------------------------------------------------------------------------------------------
class IngestSink(Datasink):
    """Ray Data ``Datasink`` writing one clips part and one status part per write task, atomically
    (:class:`vidray.io.dataset.PartWriter`; ``fault_kill_once`` is its test hook)."""

    def __init__(self, out: str, fault_kill_once: str | None = None):
        self.out = str(out)
        self.fault_kill_once = fault_kill_once
        self.results: list[dict] = []

    def get_name(self) -> str:
        return "VidrayIngest"

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict:
        trace_placement("ingest_write")
        writer = fmt.PartWriter(Store(self.out), fault_kill_once=self.fault_kill_once)
        try:
            for block in blocks:
                t = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block)
                if t.num_rows == 0:
                    continue
                writer.add_status(t.filter(pc.equal(t["chunk_index"], 0)))  # one status row per video
                writer.add_clips(t.filter(pc.equal(t["status"], "ok")))
            return writer.commit()
        finally:
            writer.abort()

    def on_write_complete(self, write_result: Any) -> None:
        self.results = list(getattr(write_result, "write_returns", []) or [])


# ------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------
@dataclass
class IngestSummary:
    """Counts over the whole output (this run and earlier runs into the same ``out``)."""

    out: str
    entries: int
    ok: int
    failed: int
    skipped: int
    processed_this_run: int
    frames: int
    flow_stacks: int
    bytes: int
    wall_s: float
    failure_fraction: float
    failures: list[dict]

    @property
    def videos_per_s(self) -> float:
        return self.processed_this_run / self.wall_s if self.wall_s > 0 else 0.0

    def format(self) -> str:
        lines = [
            f"vidray ingest -> {self.out}",
            f"  entries {self.entries}: ok {self.ok}, failed {self.failed}, skipped {self.skipped}"
            f" (processed this run: {self.processed_this_run})",
            f"  frames {self.frames}, flow stacks {self.flow_stacks}, {self.bytes / 1e6:.1f} MB encoded",
            f"  wall {self.wall_s:.1f} s, {self.videos_per_s:.2f} videos/s this run",
        ]
        for f in self.failures[:10]:
            lines.append(f"  {f['status']}: {f['error_type']}: {f['error']}")
        if len(self.failures) > 10:
            lines.append(f"  ... {len(self.failures) - 10} more (see status/)")
        return "\n".join(lines)


def _entry_dict(e: ManifestEntry) -> dict:
    return {
        "video_id": e.video_id, "path": e.path, "open_path": os.fsencode(e.open_path), "labels": e.labels,
        "split": e.split, "row": e.row, "status": e.status, "error_type": e.error_type, "error": e.error,
    }


def _write_dataset_json(st: Store, manifest: Manifest, cfg: IngestConfig, state: str, counts: dict) -> None:
    fmt.write_dataset_json(
        st, vidray_version=__version__, state=state, classes=manifest.classes, data_hash=cfg.data_hash(),
        manifest={"source": manifest.source, "sha256": manifest.sha256, "entries": len(manifest.entries),
                  "root": manifest.root},
        config=cfg.model_dump(mode="json"), counts=counts,
    )  # fmt: skip


def run_ingest(
    manifest: str | Path | Manifest,
    out: str | Path,
    *,
    root: str | Path | None = None,
    cfg: IngestConfig | None = None,
    retry_failed: bool = False,
    overwrite: bool = False,
    _fault_kill_once: str | None = None,
) -> IngestSummary:
    """Ingest ``manifest`` into ``out`` (see module doc). Resumes when ``out`` already holds a run
    with the same data settings; refuses (``ValueError``) when the settings differ, unless
    ``overwrite`` (which deletes the previous output)."""
    cfg = cfg or IngestConfig()
    t0 = time.perf_counter()
    man = manifest if isinstance(manifest, Manifest) else read_manifest(manifest, root)
    st = Store(out)
    if st.exists("dataset.json"):
        old = st.read_json("dataset.json")
        if overwrite:
            for d in (fmt.CLIPS_DIR, fmt.STATUS_DIR):
                st.delete_dir(d)
        elif old.get("data_hash") != cfg.data_hash():
            raise ValueError(
                f"{st.uri} holds an ingest made with other data settings (data_hash {old.get('data_hash')} "
                f"!= {cfg.data_hash()}); use another --out, or --overwrite to replace it"
            )
    for d in (fmt.CLIPS_DIR, fmt.STATUS_DIR):
        st.makedirs(d)
    fmt.clean_orphans(st)
    if retry_failed:
        logger.info("retry-failed: dropped %d failed status rows", fmt.drop_failed(st))
    done = set(fmt.read_status(st)["video_id"].to_pylist())
    todo = [_entry_dict(e) for e in man.entries if e.video_id not in done]
    _write_dataset_json(st, man, cfg, "running", {})

    if todo:
        init_ray(cfg.execution.ray_address)
        import ray.data

        ex = cfg.execution
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = current().verbose  # vidray draws one bar; Ray Data's own with -v
        # A task whose worker keeps dying (a decoder crash, OOM) must not stop the run: after
        # max_retries its videos are recorded as failed below instead of failing the dataset.
        ctx.max_errored_blocks = -1
        per_task = cfg.output.videos_per_task
        # only on ingest-type nodes (cluster.yaml); the same selector on both operators keeps them fused
        sel = node_selector(ex.node_labels, "ingest tasks")
        placement = {"label_selector": sel} if sel else {}
        ds = ray.data.from_items(todo, override_num_blocks=max(1, -(-len(todo) // per_task)))
        with warnings.catch_warnings():
            # Ray 2.60 deprecates **ray_remote_args, but it is the only way to bound task retries
            # (Ray Data's default is to retry a dying worker forever).
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            board = make_board()
            ds = ds.map_batches(
                process_videos, fn_kwargs={"cfg": cfg, "board": board}, batch_size=per_task, batch_format="pyarrow",
                compute=ray.data.TaskPoolStrategy(size=ex.concurrency),
                num_cpus=ex.num_cpus_per_task,
                memory=ex.memory_per_task_mb * 1024 * 1024 if ex.memory_per_task_mb else None,
                max_retries=ex.max_retries,
                runtime_env={"env_vars": dict(ex.env_vars)} if ex.env_vars else None, **placement,
            )
            sink = IngestSink(st.uri, fault_kill_once=_fault_kill_once)
            remote_args: dict[str, Any] = {"num_cpus": ex.num_cpus_per_task, "max_retries": ex.max_retries, **placement}
            if ex.env_vars:
                remote_args["runtime_env"] = {"env_vars": dict(ex.env_vars)}
            with current().follow(board, "ingest", len(todo), "videos",
                                  render=lambda s: (s.get("done", 0) + s.get("failed", 0),
                                                    {"failed": s.get("failed", 0)})):  # fmt: skip
                ds.write_datasink(sink, ray_remote_args=remote_args, concurrency=ex.concurrency)
        _record_lost(st, todo, ex.max_retries)

    fmt.clean_orphans(st)
    status = fmt.read_status(st)
    summary = _summarise(st.uri, status, len(todo), time.perf_counter() - t0)
    missing = {e.video_id for e in man.entries} - set(status["video_id"].to_pylist())
    if missing:  # _record_lost covers every lost task; anything else is a bug: say so loudly
        raise RuntimeError(f"{len(missing)} manifest entries have no status row, e.g. {sorted(missing)[:3]}")
    counts = {k: v for k, v in asdict(summary).items() if k not in ("failures", "out")}
    _write_dataset_json(st, man, cfg, "complete", counts)
    return summary


def _record_lost(st: Store, todo: list[dict], max_retries: int) -> int:
    """Record entries whose task died more than ``max_retries`` times as failed (``WorkerCrashed``)."""
    have = set(fmt.read_status(st)["video_id"].to_pylist())
    lost = [e for e in todo if e["video_id"] not in have]
    if not lost:
        return 0
    rows = [
        _status_row(
            e, "failed", "WorkerCrashed",
            f"{e['path']}: the Ray task holding this video died {max_retries + 1} times (decoder crash or "
            f"out of memory?); rerun with --retry-failed --set output.videos_per_task=1 to isolate it",
        )
        for e in lost
    ]
    fmt.write_status_part(st, pa.Table.from_pylist(rows, schema=TASK_SCHEMA))
    logger.warning("%d videos were lost with their Ray tasks and are recorded as failed", len(lost))
    return len(lost)


def _summarise(out: str, status: pa.Table, processed: int, wall: float) -> IngestSummary:
    st = status.to_pydict()
    n = status.num_rows
    s = st["status"]
    failures = [
        {"video_id": v, "status": x, "error_type": et, "error": er}
        for v, x, et, er in zip(st["video_id"], s, st["error_type"], st["error"]) if x != "ok"
    ]
    failed = s.count("failed")
    return IngestSummary(
        out=out, entries=n, ok=s.count("ok"), failed=failed, skipped=s.count("skipped"),
        processed_this_run=processed, frames=int(sum(st["num_frames"])), flow_stacks=int(sum(st["num_flow"])),
        bytes=int(sum(st["bytes"])), wall_s=wall, failure_fraction=failed / n if n else 0.0, failures=failures,
    )
