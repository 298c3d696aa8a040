"""``vidray ingest``: a video corpus to Parquet on Ray Data.

Pipeline (one Ray Data dataset, CPU tasks)::

    manifest table ──from_arrow (blocks of 1,024 entries)──▶ repartition(videos_per_task)
      ──▶ map_batches(process_videos) ──▶ write_datasink(IngestSink, min_bytes_per_write=target_part_mb)
          decode + sample + flow          one write task = one bundle of decoded videos of ~target_part_mb:
          + JPEG, one video at a time      clips/part-<key>.parquet, then status/part-<key>.parquet

* Every manifest entry yields exactly one effective status row (``ok``, ``failed`` with the error, or
  ``skipped``); failures of single videos are caught per video and never stop the run.
* The files, their commit protocol, the status snapshots and the damaged-part check belong to the
  dataset format, :mod:`vidray.io.dataset`: a write task that Ray retries after its worker died gets
  the same bundle and rewrites the *same* part names (no duplicate, no lost row); a crash between the
  clips and the status commit leaves an orphan that the next run deletes.
* The driver stays lean at corpus scale: the manifest is one Arrow table (:mod:`vidray.io.manifest`),
  the to-do list an anti-join of its ids against the status snapshot, processed in a seeded random
  order (``output.order_seed``, so parts mix classes), handed to Ray Data as blocks of 1,024 entries;
  a thread folds the tasks' status parts into a snapshot while they commit (:class:`~vidray.io.
  dataset.Compactor`).
* Resume: a re-run skips every video with a status row; ``retry_failed`` queues the failed ones again
  (their new rows, of a higher run number, supersede the old ones; nothing is rewritten).
  ``dry_run`` (``vidray ingest --dry-run``) only reads the manifest and the output and says what a
  run would do (:class:`IngestPlan`), without starting Ray.
* ``dataset.json`` records the config, schema version, manifest hash, classes, the run counter, the
  order seed and counts.
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

from vidray import __version__
from vidray.config import IngestConfig
from vidray.console import current, echo, make_board
from vidray.io import dataset as fmt
from vidray.io.flowcodec import encode_flow_stack, quantize_flow
from vidray.io.imcodec import encode_image
from vidray.io.manifest import Manifest, entry_open_path, read_manifest
from vidray.io.schema import CLIP_SCHEMA, SNAPSHOT_SCHEMA
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
    indices = sample_frames(info.timestamps, cfg.sampling, entry["video_id"], keyframes=info.keyframes)
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


def process_videos(batch: pa.Table, cfg: IngestConfig, board: Any = None, root: str = "") -> Iterator[pa.Table]:
    """Ray Data UDF: entries in (``INPUT_COLUMNS``), one ``TASK_SCHEMA`` table per video out.

    Yielding per video keeps a task's memory to one video's encoded rows. ``board``: the driver's
    :class:`vidray.console.ProgressBoard` (told of every video, fire-and-forget). ``root``: the
    manifest's root; an entry without an ``open_path`` is ``root``/``path``, resolved here right
    before opening (a symbolic link out of the root is refused as ``PathOutsideRoot``).
    """
    import cv2

    cv2.setNumThreads(1)  # Ray parallelises across videos
    trace_placement("ingest_task", videos=batch.num_rows)
    for entry in batch.to_pylist():
        if not entry.get("status"):
            op, err = entry_open_path(entry["path"], entry.get("open_path"), root)
            entry["open_path"] = op
            if err:
                entry.update(status="failed", error_type="PathOutsideRoot", error=err)
        else:
            entry["open_path"] = ""
        rows = process_video(entry, cfg)
        if board is not None:
            board.add.remote("failed" if rows[0]["status"] != "ok" else "done", 1)
        yield pa.Table.from_pylist(rows, schema=TASK_SCHEMA)


# ------------------------------------------------------------------------------------------------
# The Ray Data sink: one committed part per write task (vidray.io.dataset's protocol)
# ------------------------------------------------------------------------------------------------
_SINK_CLASS: Any = None


def make_sink(out: str, run: int, target_part_mb: float, row_group_mb: float,
              fault_kill_once: str | None = None) -> Any:  # fmt: skip
    """The Ray Data ``Datasink`` of a run (``ray.data`` is imported here, so planning and
    ``--dry-run`` never import Ray): one clips part + one status part per write task, committed by
    :class:`vidray.io.dataset.PartWriter`; ``min_bytes_per_write`` makes Ray Data bundle the decoding
    tasks' outputs until a write task holds ``target_part_mb`` (0: one part per task)."""
    global _SINK_CLASS
    if _SINK_CLASS is None:
        from ray.data import Datasink

        class IngestSink(Datasink):
            def __init__(self, out: str, run: int, target_part_mb: float, row_group_mb: float,
                         fault_kill_once: str | None) -> None:  # fmt: skip
                self.out, self.run = str(out), int(run)
                self.target = int(target_part_mb * 1e6)
                self.row_group_bytes = row_group_mb * 1e6
                self.fault_kill_once = fault_kill_once
                self.results: list[dict] = []

            @property
            def min_bytes_per_write(self) -> int | None:
                return self.target or None

            def get_name(self) -> str:
                return "VidrayIngest"

            def write(self, blocks: Iterable[Any], ctx: Any) -> dict:
                trace_placement("ingest_write")
                writer = fmt.PartWriter(Store(self.out), run=self.run, row_group_bytes=self.row_group_bytes,
                                        fault_kill_once=self.fault_kill_once)  # fmt: skip
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

        _SINK_CLASS = IngestSink
    return _SINK_CLASS(out, run, target_part_mb, row_group_mb, fault_kill_once)


# ------------------------------------------------------------------------------------------------
# The plan: what a run does (also `vidray ingest --dry-run`)
# ------------------------------------------------------------------------------------------------
BLOCK_ENTRIES = 1024
"""Manifest entries per Ray Data input block (the driver never holds a block per task)."""


@dataclass
class IngestPlan:
    """What a run over ``out`` does. ``output_files`` is estimated from the bytes per ok video of the
    output so far (``None`` before any video is done); ``run`` is the number this run gets."""

    out: str
    entries: int
    done: int
    todo: int
    failed_to_retry: int
    tasks: int
    output_files: int | None
    mb_per_video: float | None
    clip_files: int
    status_files_read: int
    damaged_parts: int
    run: int
    order_seed: int | None
    plan_s: float = 0.0

    def format(self) -> str:
        files = "unknown until videos are done (vidray plan estimates it)" if self.output_files is None else (
            f"~{self.output_files:,} of ~{self.mb_per_video * self.todo / max(self.output_files, 1):,.0f} MB "
            f"({self.mb_per_video:.2f} MB per video so far)")
        return "\n".join([
            f"vidray ingest --dry-run -> {self.out} (run {self.run})",
            f"  entries {self.entries:,}: done {self.done:,}, to do {self.todo:,}"
            f" (failed to retry {self.failed_to_retry:,})",
            f"  tasks {self.tasks:,} (output.videos_per_task); new clips files {files}",
            f"  existing clips files {self.clip_files:,}; status files read {self.status_files_read}"
            + (f"; damaged parts {self.damaged_parts} (their videos are to do)" if self.damaged_parts else ""),
            f"  planned in {self.plan_s:.1f} s",
        ])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_ingest(man: Manifest, view: fmt.StatusView, cfg: IngestConfig, *, out: str = "", run: int = 1,
                retry_failed: bool = False) -> tuple[pa.Table, IngestPlan]:  # fmt: skip
    """The entries a run processes (an anti-join of the manifest's ids against the effective status,
    in the seeded order of ``output.order_seed``) and the counts of :class:`IngestPlan`."""
    t0 = time.perf_counter()
    entries = man.table
    n = entries.num_rows
    eff = view.effective()
    ids = entries["video_id"]
    failed_to_retry = 0
    if eff.num_rows:
        done_rows = eff
        if retry_failed:
            failed = eff.filter(pc.equal(eff["status"], "failed"))["video_id"]
            failed_to_retry = int(pc.sum(pc.is_in(ids, value_set=failed)).as_py() or 0)
            done_rows = eff.filter(pc.not_equal(eff["status"], "failed"))
        todo_mask = pc.invert(pc.is_in(ids, value_set=done_rows["video_id"])).to_numpy(zero_copy_only=False)
    else:
        todo_mask = np.ones(n, bool)
    seed = cfg.output.order_seed
    order = np.random.default_rng(seed).permutation(n) if seed is not None else np.arange(n)
    todo_idx = order[todo_mask[order]]
    todo = entries.take(pa.array(todo_idx))
    per_task = cfg.output.videos_per_task
    tasks = -(-len(todo_idx) // per_task)
    ok = eff.filter(pc.equal(eff["status"], "ok")) if eff.num_rows else eff
    live = [p.rsplit("/", 1)[-1] for p in view.clip_parts()]
    mb = None
    if ok.num_rows and live:
        mb = sum(view.clips[name] for name in live) / 1e6 / ok.num_rows
    target = cfg.output.target_part_mb
    files = None
    if mb is not None:
        files = 0 if not len(todo_idx) else (tasks if not target else max(1, -(-int(mb * len(todo_idx)) // int(target))))
    plan = IngestPlan(out=out, entries=n, done=n - int(todo_mask.sum()), todo=len(todo_idx),
                      failed_to_retry=failed_to_retry, tasks=tasks, output_files=files, mb_per_video=mb,
                      clip_files=len(live), status_files_read=view.files_read,
                      damaged_parts=len(view.damaged), run=run, order_seed=seed,
                      plan_s=time.perf_counter() - t0)  # fmt: skip
    return todo, plan


# ------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------
MAX_FAILURES_LISTED = 1000


@dataclass
class IngestSummary:
    """Counts over the whole output (this run and earlier runs into the same ``out``); ``failures``
    lists the first ``MAX_FAILURES_LISTED`` entries that are not ok."""

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
    clip_files: int = 0
    run: int = 0

    @property
    def videos_per_s(self) -> float:
        return self.processed_this_run / self.wall_s if self.wall_s > 0 else 0.0

    def format(self) -> str:
        lines = [
            f"vidray ingest -> {self.out}",
            f"  entries {self.entries}: ok {self.ok}, failed {self.failed}, skipped {self.skipped}"
            f" (processed this run: {self.processed_this_run})",
            f"  frames {self.frames}, flow stacks {self.flow_stacks}, {self.bytes / 1e6:.1f} MB encoded"
            f" in {self.clip_files} clips files",
            f"  wall {self.wall_s:.1f} s, {self.videos_per_s:.2f} videos/s this run",
        ]
        for f in self.failures[:10]:
            lines.append(f"  {f['status']}: {f['error_type']}: {f['error']}")
        n_bad = self.failed + self.skipped
        if n_bad > 10:
            lines.append(f"  ... {n_bad - 10} more (vidray inspect {self.out})")
        return "\n".join(lines)


def _write_dataset_json(st: Store, manifest: Manifest, cfg: IngestConfig, state: str, counts: dict,
                        run: int) -> None:  # fmt: skip
    fmt.write_dataset_json(
        st, vidray_version=__version__, state=state, classes=manifest.classes, data_hash=cfg.data_hash(),
        manifest={"source": manifest.source, "sha256": manifest.sha256, "entries": len(manifest),
                  "root": manifest.root},
        config=cfg.model_dump(mode="json"), counts=counts, runs=run, order_seed=cfg.output.order_seed,
    )  # fmt: skip


SUMMARY_COLUMNS = ("video_id", "status", "error_type", "error", "num_frames", "num_flow", "bytes")


def run_ingest(
    manifest: str | Path | Manifest,
    out: str | Path,
    *,
    root: str | Path | None = None,
    cfg: IngestConfig | None = None,
    retry_failed: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    _fault_kill_once: str | None = None,
) -> IngestSummary | IngestPlan:
    """Ingest ``manifest`` into ``out`` (see module doc). Resumes when ``out`` already holds a run
    with the same data settings; refuses (``ValueError``) when the settings differ, unless
    ``overwrite`` (which deletes the previous output). ``dry_run``: read the manifest and the output,
    return the :class:`IngestPlan` and change nothing (no Ray)."""
    cfg = cfg or IngestConfig()
    t0 = time.perf_counter()
    man = manifest if isinstance(manifest, Manifest) else read_manifest(manifest, root)
    logger.debug("manifest %s: %d entries, %d classes (%.1f s)", man.source, len(man), len(man.classes),
                 time.perf_counter() - t0)  # fmt: skip
    st = Store(out)
    old = st.read_json(fmt.DATASET_JSON) if st.exists(fmt.DATASET_JSON) else None
    if old is not None and not overwrite and old.get("data_hash") != cfg.data_hash():
        raise ValueError(
            f"{st.uri} holds an ingest made with other data settings (data_hash {old.get('data_hash')} "
            f"!= {cfg.data_hash()}); use another --out, or --overwrite to replace it"
        )
    fresh = old is None or overwrite
    run = 1 if fresh else int(old.get("runs", 0)) + 1
    if dry_run:
        view = fmt.load_status(st, fmt.PLAN_COLUMNS) if not fresh else fmt.StatusView(
            SNAPSHOT_SCHEMA.empty_table(), checked=True)
        _, plan = plan_ingest(man, view, cfg, out=st.uri, run=run, retry_failed=retry_failed)
        plan.plan_s = time.perf_counter() - t0
        return plan
    if overwrite:
        for d in (fmt.CLIPS_DIR, fmt.STATUS_DIR):
            st.delete_dir(d)
    for d in (fmt.CLIPS_DIR, fmt.STATUS_DIR):
        st.makedirs(d)
    view = fmt.prepare_run(st)
    todo, plan = plan_ingest(man, view, cfg, out=st.uri, run=run, retry_failed=retry_failed)
    del view
    echo(f"ingest run {run}: {plan.todo:,} of {plan.entries:,} entries to do ({plan.done:,} done, "
         f"{plan.failed_to_retry:,} failed to retry; {len(man.classes)} classes), planned in "
         f"{time.perf_counter() - t0:.1f} s")
    _write_dataset_json(st, man, cfg, "running", {}, run)

    if todo.num_rows:
        _run_tasks(todo, st, man, cfg, run, _fault_kill_once)
        _record_lost(st, todo, run, cfg.execution.max_retries)

    fmt.compact(st)
    view = fmt.load_status(st, SUMMARY_COLUMNS)
    fmt.warn_damaged(view)
    eff = view.effective()
    summary = _summarise(st.uri, eff, todo.num_rows, time.perf_counter() - t0)
    summary.clip_files, summary.run = len(view.clip_parts()), run
    missing = pc.invert(pc.is_in(man.table["video_id"], value_set=eff["video_id"]))
    n_missing = int(pc.sum(missing).as_py() or 0)
    if n_missing:  # _record_lost covers every lost task; anything else is a bug: say so loudly
        ex = man.table["video_id"].filter(missing).slice(0, 3).to_pylist()
        raise RuntimeError(f"{n_missing} manifest entries have no status row, e.g. {ex}")
    counts = {k: v for k, v in asdict(summary).items() if k not in ("failures", "out")}
    _write_dataset_json(st, man, cfg, "complete", counts, run)
    return summary


def _run_tasks(todo: pa.Table, st: Store, man: Manifest, cfg: IngestConfig, run: int,
               fault_kill_once: str | None) -> None:  # fmt: skip
    """The Ray Data job over the to-do entries, with the status compactor running beside it."""
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
    ds = ray.data.from_arrow(todo, override_num_blocks=max(1, -(-todo.num_rows // BLOCK_ENTRIES)))
    if per_task < BLOCK_ENTRIES:
        ds = ds.repartition(target_num_rows_per_block=per_task)  # one decoding task per per_task videos
        # The repartition task yields a block's slices through a streaming generator that pauses after
        # 2 unconsumed outputs (Ray 2.60's default) while holding its CPU: on a 1-CPU node that CPU was
        # lost to decoding for the whole run (tests/test_cluster.py saw every task on the other node).
        # The slices are a few manifest rows each: let it yield them all and finish at once.
        ctx._max_num_blocks_in_streaming_gen_buffer = max(ctx._max_num_blocks_in_streaming_gen_buffer,
                                                          -(-BLOCK_ENTRIES // per_task))
    with warnings.catch_warnings():
        # Ray 2.60 deprecates **ray_remote_args, but it is the only way to bound task retries
        # (Ray Data's default is to retry a dying worker forever).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        board = make_board()
        ds = ds.map_batches(
            process_videos, fn_kwargs={"cfg": cfg, "board": board, "root": man.root}, batch_size=per_task,
            batch_format="pyarrow", compute=ray.data.TaskPoolStrategy(size=ex.concurrency),
            num_cpus=ex.num_cpus_per_task,
            memory=ex.memory_per_task_mb * 1024 * 1024 if ex.memory_per_task_mb else None,
            max_retries=ex.max_retries,
            runtime_env={"env_vars": dict(ex.env_vars)} if ex.env_vars else None, **placement,
        )  # fmt: skip
        sink = make_sink(st.uri, run, cfg.output.target_part_mb, cfg.output.row_group_mb, fault_kill_once)
        remote_args: dict[str, Any] = {"num_cpus": ex.num_cpus_per_task, "max_retries": ex.max_retries,
                                       **placement}
        if ex.env_vars:
            remote_args["runtime_env"] = {"env_vars": dict(ex.env_vars)}
        with fmt.Compactor(st) as compactor, current().follow(
                board, "ingest", todo.num_rows, "videos",
                render=lambda s: (s.get("done", 0) + s.get("failed", 0), {"failed": s.get("failed", 0)})):
            ds.write_datasink(sink, ray_remote_args=remote_args, concurrency=ex.concurrency)
    for c in compactor.compactions:
        logger.info("compacted %d status parts into %s in %.1f s", c["folded"], c["snapshot"], c["seconds"])


def _record_lost(st: Store, todo: pa.Table, run: int, max_retries: int) -> int:
    """Record entries of this run whose task died more than ``max_retries`` times as failed
    (``WorkerCrashed``)."""
    t = fmt.load_status(st, ["video_id", "run"], check_clips=False).table
    mine = t.filter(pc.equal(t["run"], run))["video_id"] if t.num_rows else pa.array([], pa.string())
    lost = todo.filter(pc.invert(pc.is_in(todo["video_id"], value_set=mine)))
    if not lost.num_rows:
        return 0
    rows = [
        _status_row(
            e, "failed", "WorkerCrashed",
            f"{e['path']}: the Ray task holding this video died {max_retries + 1} times (decoder crash or "
            f"out of memory?); rerun with --retry-failed --set output.videos_per_task=1 to isolate it",
        )
        for e in lost.to_pylist()
    ]
    fmt.write_status_part(st, pa.Table.from_pylist(rows, schema=TASK_SCHEMA), run)
    logger.warning("%d videos were lost with their Ray tasks and are recorded as failed", len(rows))
    return len(rows)


def _summarise(out: str, eff: pa.Table, processed: int, wall: float) -> IngestSummary:
    n = eff.num_rows
    counts = dict(zip(*(lambda vc: (vc.field("values").to_pylist(), vc.field("counts").to_pylist()))(
        pc.value_counts(eff["status"])))) if n else {}  # fmt: skip
    bad = eff.filter(pc.not_equal(eff["status"], "ok")).slice(0, MAX_FAILURES_LISTED) if n else eff
    failures = bad.select(["video_id", "status", "error_type", "error"]).to_pylist() if n else []
    failed = int(counts.get("failed", 0))

    def total(col: str) -> int:
        return int(pc.sum(eff[col]).as_py() or 0) if n else 0

    return IngestSummary(
        out=out, entries=n, ok=int(counts.get("ok", 0)), failed=failed, skipped=int(counts.get("skipped", 0)),
        processed_this_run=processed, frames=total("num_frames"), flow_stacks=total("num_flow"),
        bytes=total("bytes"), wall_s=wall, failure_fraction=failed / n if n else 0.0, failures=failures,
    )  # fmt: skip
