"""``vidray plan``: what ingesting a corpus costs, from per-core rates measured on this machine.

Three steps, kept apart so the arithmetic is tested without measuring anything:

1. :func:`video_work` (pure): the work of one video of the corpus's mean duration under an ingest
   config, counted with the code ingest itself runs -- :func:`vidray.sampling.sample_frames` and
   :func:`~vidray.sampling.flow_indices` for the frames, :func:`vidray.io.video.plan_decode` and
   :func:`~vidray.io.video.decode_cost` for what the adaptive reader decodes (seeks counted as
   ``SEEK_COST_FRAMES`` decoded frames) given the corpus's keyframe interval.
2. :func:`measure_rates`: per-core rates on a sample video at the corpus's resolution (generated here,
   or your own files): decode, RGB conversion at the output size, flow pairs of the configured
   algorithm, JPEG and flow-stack encoding, Parquet write; bytes per frame and per flow stack; then a
   check that the model predicts the real per-video pipeline (:func:`vidray.ingest.process_video`) on
   the sample. Rates are per CPU-second of this process (``time.process_time``), not per wall second,
   so a busy shared machine slows the measurement down without biasing the rates much.
3. :func:`plan_corpus` (pure): per stage, seconds per video -> core-hours -> wall hours on N nodes of C
   cores (``floor(C / execution.num_cpus_per_task)`` single-threaded tasks per node, capped by
   ``execution.concurrency``), and the output size.

Stages: ``decode+sample`` = open and probe (fixed, plus source frames / demux rate) + decoded frames /
decode rate + converted frames / conversion rate;
``flow`` = flow pairs / pair rate; ``encode+write`` = JPEG encodes / JPEG rate + flow stacks / stack
rate + payload MB / Parquet MB/s. The wall time assumes every task slot is busy all the time (videos are
independent Ray tasks) and that reading the source and writing the output keep up; see docs/cluster.md.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from vidray.console import echo

if TYPE_CHECKING:  # imported lazily: `vidray --help` builds this parser and must stay instant
    from vidray.config import IngestConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# Corpus statistics and presets
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusStats:
    """What the plan needs to know about a corpus.

    Attributes:
        name: label for the report.
        videos: number of videos.
        mean_duration_s: mean video length in seconds (the plan works on one video of this length).
        width, height: source resolution in pixels (display orientation).
        fps: source frame rate (frames per second).
        gop: keyframe interval in frames (decides whether sparse sampling can seek).
        recipe: ingest config used when ``--config`` is not given (path relative to the checkout).
        recipe_fallback: ``--set`` overrides standing in for ``recipe`` where the checkout's configs/
            is not at hand (an installed wheel): its sampling, so the plan is for the right frames.
        notes: where the numbers come from, and which are assumptions.
    """

    name: str
    videos: int
    mean_duration_s: float
    width: int
    height: int
    fps: float = 30.0
    gop: int = 250
    recipe: str | None = None
    recipe_fallback: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def hours(self) -> float:
        """Total video hours."""
        return self.videos * self.mean_duration_s / 3600.0



_RESOLUTION_NOTE = (
    "resolution 640x360 at 30 fps is an assumption (YouTube's 360p, the usual download of that era); "
    "pass --resolution/--fps for yours"
)
_GOP_NOTE = (
    "keyframe interval 250 frames is an assumption (x264's default keyint); "
    "vidray.io.video.probe(path).mean_gop tells it for your files (--gop)"
)

PRESETS: dict[str, CorpusStats] = {
    "fcvid": CorpusStats(
        name="FCVID", videos=91_223, mean_duration_s=167.0, width=640, height=360, fps=30.0, gop=250,
        recipe="configs/recipes/ingest_fcvid.yaml",
        recipe_fallback=("sampling.mode=every_s", "sampling.interval_s=3"),
        notes=("91,223 videos, mean 167 s (4,232 h): the FCVID paper", _RESOLUTION_NOTE, _GOP_NOTE),
    ),
    "sports1m": CorpusStats(
        name="Sports-1M", videos=1_133_158, mean_duration_s=336.0, width=640, height=360, fps=30.0, gop=250,
        recipe="configs/recipes/ingest_sports1m.yaml",
        recipe_fallback=("sampling.mode=fps", "sampling.fps=1", "sampling.max_seconds=300", "sampling.loop=true"),
        notes=(
            "1,133,158 video URLs: the Sports-1M release (fewer are still online)",
            "mean duration 336 s (~5.6 min) is an assumption; with the recipe's 1 fps of the first 300 s "
            "only min(duration, 300 s) is decoded, so the plan decodes 300 s for every video "
            "(an upper bound: shorter videos decode less and loop their frames)",
            _RESOLUTION_NOTE, _GOP_NOTE,
        ),
    ),
}


def load_plan_config(
    preset: CorpusStats | None, path: str | None, overrides: list[str] | None
) -> tuple["IngestConfig", str]:
    """The ingest config to plan for, and a description of where it came from.

    ``--config`` wins; without it the preset's recipe from the checkout (or, where the checkout's
    configs/ is missing, the preset's ``recipe_fallback`` overrides); then ``--set`` on top, exactly as
    ``vidray ingest`` applies them.
    """
    from vidray.config import IngestConfig, load_config

    overrides = list(overrides or [])
    src_parts: list[str] = []
    if path is None and preset is not None:
        if preset.recipe and (REPO_ROOT / preset.recipe).exists():
            path = str(REPO_ROOT / preset.recipe)
        elif preset.recipe_fallback:
            overrides = list(preset.recipe_fallback) + overrides
            src_parts.append(f"{preset.name} sampling (recipe file {preset.recipe} not found)")
    cfg = load_config(IngestConfig, path, overrides)
    if path:
        shown = Path(path).resolve()
        src_parts.insert(0, str(shown.relative_to(REPO_ROOT)) if shown.is_relative_to(REPO_ROOT) else path)
    user = [o for o in overrides if preset is None or o not in preset.recipe_fallback]
    if user:
        src_parts.append(" ".join(f"--set {o}" for o in user))
    return cfg, " + ".join(src_parts) or "IngestConfig defaults"


# ------------------------------------------------------------------------------------------------
# 1. Work per video (pure)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoWork:
    """Counts for one video under an ingest config (what :func:`vidray.ingest.process_video` does).

    Attributes:
        src_frames: frames in the video.
        stored_frames: frames stored in its rows (repeats of looped short videos included).
        unique_frames: distinct stored frames (each JPEG-encoded once).
        needed_frames: distinct frames decoded to RGB (stored frames plus flow partners).
        decode_cost_frames: frames the reader decodes, a seek counted as ``SEEK_COST_FRAMES`` frames.
        seeks: seeks the reader makes.
        flow_pairs: distinct flow fields computed (0 when flow is off).
        flow_stacks: flow stacks encoded (one per distinct stored frame; 0 when flow is off).
        frame_size: ``(width, height)`` of stored frames.
        flow_size: ``(width, height)`` of flow fields, or ``None``.
    """

    src_frames: int
    stored_frames: int
    unique_frames: int
    needed_frames: int
    decode_cost_frames: int
    seeks: int
    flow_pairs: int
    flow_stacks: int
    frame_size: tuple[int, int]
    flow_size: tuple[int, int] | None


def video_work(
    duration_s: float, fps: float, width: int, height: int, gop: int, cfg: IngestConfig, video_id: str = "plan",
    keyframes: Any = None,
) -> VideoWork:
    """Count the work of one ``duration_s`` video at ``fps`` with keyframes every ``gop`` frames (or at
    the frame indices ``keyframes``, e.g. a probed file's ``VideoInfo.keyframes``)."""
    import numpy as np

    from vidray.io.video import SEEK_COST_FRAMES, decode_cost, output_size, plan_decode, skip_decode_cost
    from vidray.sampling import flow_indices, flow_step, sample_frames

    n = max(1, int(round(duration_s * fps)))
    ts = np.arange(n, dtype=np.float64) / fps
    if keyframes is None:
        keyframes = np.arange(0, n, max(1, int(gop)), dtype=np.int64)
    keyframes = np.asarray(keyframes, dtype=np.int64)
    idx = sample_frames(ts, cfg.sampling, video_id, keyframes=keyframes)
    unique = np.unique(idx)
    size = output_size(width, height, cfg.resize.short_side, cfg.resize.max_long_side, upscale=cfg.resize.upscale)
    flow_size = None
    pairs: set[tuple[int, int]] = set()
    needed = unique
    if cfg.flow.enabled:
        step = flow_step(fps, cfg.flow.flow_fps)
        spans = flow_indices(unique, n, cfg.flow.stack_length, step)
        needed = np.unique(np.concatenate([unique, spans.ravel()]))
        for span in spans.tolist():
            pairs.update(zip(span[:-1], span[1:]))
        flow_size = size if cfg.flow.short_side is None else \
            output_size(size[0], size[1], cfg.flow.short_side, upscale=cfg.resize.upscale)
    if cfg.execution.seek == "auto" and cfg.execution.decoder == "pyav":
        # the skip reader (MP4/MKV): frames from each needed GOP's keyframe to its last needed frame; an
        # upper bound, as its non-reference frames are dropped undecoded
        cost, seeks = skip_decode_cost(needed, keyframes), 0
    else:
        plan = plan_decode(needed, keyframes, cfg.execution.seek)
        cost, seeks = decode_cost(plan, SEEK_COST_FRAMES), sum(1 for s, _ in plan if s >= 0)
    return VideoWork(
        src_frames=n, stored_frames=int(len(idx)), unique_frames=int(len(unique)), needed_frames=int(len(needed)),
        decode_cost_frames=int(cost), seeks=seeks,
        flow_pairs=len(pairs), flow_stacks=int(len(unique)) if cfg.flow.enabled else 0,
        frame_size=size, flow_size=flow_size,
    )


# ------------------------------------------------------------------------------------------------
# Rates
# ------------------------------------------------------------------------------------------------
@dataclass
class Rates:
    """Per-core rates (per CPU-second, one thread) and measured sizes.

    Attributes:
        decode_fps: source frames decoded per second (PyAV, one thread, no conversion).
        convert_fps: decoded frames converted to RGB at the output size per second.
        flow_pairs_per_s: flow fields per second at the flow size (gray conversion + flow + uint8
            quantisation); ``0`` when not measured (flow off).
        jpeg_fps: stored frames encoded per second (``output.encoding`` at the output size).
        flow_stacks_per_s: flow stacks encoded per second (``output.flow_encoding``).
        write_mb_per_s: Parquet payload MB (1e6 bytes) written per second.
        frame_bytes: mean bytes of one encoded stored frame.
        flow_stack_bytes: mean bytes of one encoded flow stack.
        parquet_overhead: Parquet file bytes / payload bytes.
        video_open_s: fixed CPU seconds per video: the probe (container open, one decoded frame for
            the rotation) and the second open for decoding; ``0`` = not measured.
        demux_fps: packets demuxed per second by the probe (it reads the whole index); ``0`` = not
            measured.
        source: where the rates come from.
        meta: sample description, wall/CPU ratios, model checks.
    """

    decode_fps: float
    convert_fps: float
    flow_pairs_per_s: float
    jpeg_fps: float
    flow_stacks_per_s: float
    write_mb_per_s: float
    frame_bytes: float
    flow_stack_bytes: float
    parquet_overhead: float = 1.0
    video_open_s: float = 0.0
    demux_fps: float = 0.0
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: str | Path) -> "Rates":
        """Rates from a file: a ``vidray plan --json`` line (its ``rates``) or a bare rates object."""
        text = Path(path).read_text().strip()
        data = json.loads(text.splitlines()[-1]) if text else {}
        data = data.get("rates", data)
        names = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{path}: unknown rate fields {sorted(unknown)}; expected {sorted(names)}")
        r = cls(**data)
        r.source = f"{path} ({r.source})" if r.source else str(path)
        return r


# ------------------------------------------------------------------------------------------------
# 3. The plan (pure)
# ------------------------------------------------------------------------------------------------
@dataclass
class StagePlan:
    """One stage: seconds per video on one core, core-hours for the corpus, wall hours per cluster."""

    name: str
    per_video_s: float
    core_hours: float
    wall_hours: dict[int, float]
    rates: str


@dataclass
class Plan:
    """The whole plan (see :func:`plan_corpus`)."""

    corpus: CorpusStats
    config_source: str
    work: VideoWork
    rates: Rates
    nodes: list[int]
    cores: int
    slots_per_node: int
    concurrency: int | None
    stages: list[StagePlan]
    core_hours: float
    wall_hours: dict[int, float]
    node_hours: dict[int, float]
    payload_bytes_per_video: float
    output_bytes: float
    notes: list[str] = field(default_factory=list)
    files: dict[str, Any] = field(default_factory=dict)  # see output_files()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["corpus"]["hours"] = self.corpus.hours
        return d


def task_slots(nodes: int, cores: int, num_cpus_per_task: float, concurrency: int | None) -> int:
    """Tasks running at once: ``floor(cores / num_cpus_per_task)`` per node, capped by ``concurrency``."""
    per_node = int(math.floor(cores / num_cpus_per_task + 1e-9))
    if per_node < 1:
        raise ValueError(f"a node of {cores} cores cannot hold a task of {num_cpus_per_task} CPUs")
    slots = nodes * per_node
    return min(slots, concurrency) if concurrency else slots


def stage_seconds(w: VideoWork, cfg: IngestConfig, rates: Rates) -> tuple[list[tuple[str, float, str]], float]:
    """CPU seconds of one video per stage, ``[(stage, seconds, rates shown)]``, and its payload bytes."""
    flow_on = cfg.flow.enabled
    payload = w.stored_frames * (rates.frame_bytes + (rates.flow_stack_bytes if flow_on else 0.0))

    def per_s(count: float, rate: float, what: str) -> float:
        if count == 0:
            return 0.0
        if rate <= 0:
            raise ValueError(f"rate for {what} is {rate}: measure it (flow on?) or fix --rates-from")
        return count / rate

    stage_specs: list[tuple[str, float, str]] = [
        (
            "decode+sample",
            rates.video_open_s + (w.src_frames / rates.demux_fps if rates.demux_fps > 0 else 0.0)
            + per_s(w.decode_cost_frames, rates.decode_fps, "decode") + per_s(w.needed_frames, rates.convert_fps, "convert"),
            f"open+probe {rates.video_open_s * 1e3:.0f} ms + {rates.demux_fps:,.0f} pkt/s, "
            f"decode {rates.decode_fps:,.0f} fr/s, to RGB {rates.convert_fps:,.0f} fr/s",
        ),
    ]
    if flow_on:
        stage_specs.append(
            ("flow", per_s(w.flow_pairs, rates.flow_pairs_per_s, "flow"),
             f"{cfg.flow.algorithm} {_fmt_rate(rates.flow_pairs_per_s)} pairs/s")
        )
    enc = per_s(w.unique_frames, rates.jpeg_fps, "jpeg") + per_s(w.flow_stacks, rates.flow_stacks_per_s, "flow stacks")
    enc += per_s(payload / 1e6, rates.write_mb_per_s, "parquet write")
    enc_rates = f"{cfg.output.encoding} {rates.jpeg_fps:,.0f} fr/s"
    if flow_on:
        enc_rates += f", stacks {_fmt_rate(rates.flow_stacks_per_s)}/s"
    enc_rates += f", parquet {rates.write_mb_per_s:,.0f} MB/s"
    stage_specs.append(("encode+write", enc, enc_rates))
    return stage_specs, payload


# Driver-side costs at corpus scale, measured by benchmarks/scale.py on the 2-core development machine
# (other work running; see the README's benchmark table): they scale with the number of manifest
# entries, plus one read per status part not yet compacted (at most COMPACT_EVERY_PARTS after a kill).
SNAPSHOT_BYTES_PER_ENTRY = 23.0
"""Bytes of the compacted status snapshot per manifest entry (Sports-1M: 26 MB)."""
RESUME_S_PER_MILLION = {"local disk": 9.0, "S3 (moto on loopback)": 12.0}
"""Seconds of resume planning (manifest read + status snapshot + anti-join) per million entries."""
RESUME_S_PER_PART = {"local disk": 0.004, "S3 (moto on loopback)": 0.036}
"""Seconds per uncompacted status part read."""


def output_files(videos: int, output_bytes: float, cfg: "IngestConfig") -> dict[str, Any]:
    """Clips part files of an ingest (one per ``output.target_part_mb`` of output; a write task bundles
    until it holds that much, so each run adds at most one smaller last file), their mean size, and
    what a resume (or ``--retry-failed``, ``--dry-run``, opening for training) reads of the status."""
    from vidray.io.dataset import COMPACT_EVERY_PARTS

    o = cfg.output
    if o.target_part_mb:
        files = max(1, int(output_bytes // (o.target_part_mb * 1e6)) + 1)
    else:
        files = max(1, -(-videos // o.videos_per_task))
    max_parts = min(COMPACT_EVERY_PARTS, files)
    resume = {store: videos / 1e6 * per_m + max_parts * RESUME_S_PER_PART[store]
              for store, per_m in RESUME_S_PER_MILLION.items()}  # fmt: skip
    return {"files": files, "mean_file_mb": output_bytes / files / 1e6, "row_group_mb": o.row_group_mb,
            "status_snapshot_mb": videos * SNAPSHOT_BYTES_PER_ENTRY / 1e6, "resume_status_files": 1 + max_parts,
            "resume_s": resume}  # fmt: skip


def plan_corpus(
    corpus: CorpusStats, cfg: IngestConfig, rates: Rates, nodes: list[int], cores: int, config_source: str = ""
) -> Plan:
    """Turn per-core rates into core-hours, wall hours for each cluster size in ``nodes`` (of ``cores``
    cores each), and the output size. Pure arithmetic (see the module doc for the formulas)."""
    if not nodes or min(nodes) < 1 or cores < 1:
        raise ValueError(f"need nodes >= 1 and cores >= 1, got nodes={nodes} cores={cores}")
    w = video_work(corpus.mean_duration_s, corpus.fps, corpus.width, corpus.height, corpus.gop, cfg)
    stage_specs, payload = stage_seconds(w, cfg, rates)

    ex = cfg.execution
    slots = {n: task_slots(n, cores, ex.num_cpus_per_task, ex.concurrency) for n in nodes}
    stages = []
    for name, sec, rate_text in stage_specs:
        ch = sec * corpus.videos / 3600.0
        stages.append(StagePlan(name, sec, ch, {n: ch / slots[n] for n in nodes}, rate_text))
    total = sum(s.core_hours for s in stages)
    wall = {n: total / slots[n] for n in nodes}
    notes = list(corpus.notes)
    if ex.num_cpus_per_task != 1:
        notes.append(f"execution.num_cpus_per_task={ex.num_cpus_per_task}: each task still runs one thread, "
                     f"so {int(cores // ex.num_cpus_per_task)} tasks per {cores}-core node")
    out_bytes = payload * rates.parquet_overhead * corpus.videos
    return Plan(
        corpus=corpus, config_source=config_source, work=w, rates=rates, nodes=list(nodes), cores=cores,
        slots_per_node=task_slots(1, cores, ex.num_cpus_per_task, None), concurrency=ex.concurrency,
        stages=stages, core_hours=total, wall_hours=wall, node_hours={n: wall[n] * n for n in nodes},
        payload_bytes_per_video=payload, output_bytes=out_bytes, notes=notes,
        files=output_files(corpus.videos, out_bytes, cfg),
    )


def _fmt_rate(x: float) -> str:
    """A rate with about three significant digits: 1,234 / 29.7 / 0.44."""
    return f"{x:,.0f}" if x >= 100 else (f"{x:.1f}" if x >= 10 else f"{x:.2f}")


def _fmt_h(h: float) -> str:
    if h < 1:
        return f"{h * 60:.1f} min"
    if h < 48:
        return f"{h:,.1f} h"
    return f"{h:,.0f} h ({h / 24:,.1f} d)"


def _fmt_bytes(b: float) -> str:
    for unit, div in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= div:
            return f"{b / div:,.1f} {unit}"
    return f"{b:.0f} B"


def format_plan(p: Plan) -> str:
    """The plan as the text table ``vidray plan`` prints."""
    c, w, r = p.corpus, p.work, p.rates
    lines = [
        f"vidray plan: {c.name}: {c.videos:,} videos x {c.mean_duration_s:g} s mean = {c.hours:,.0f} h of video, "
        f"{c.width}x{c.height} @ {c.fps:g} fps, keyframe every {c.gop} frames",
        f"  ingest config: {p.config_source}",
        f"  per video: {w.src_frames:,} source frames -> {w.stored_frames} stored ({w.unique_frames} distinct) at "
        f"{w.frame_size[0]}x{w.frame_size[1]}; decodes {w.decode_cost_frames:,} frame-equivalents ({w.seeks} seeks), "
        f"converts {w.needed_frames}"
        + (f"; {w.flow_pairs} flow pairs at {w.flow_size[0]}x{w.flow_size[1]}" if w.flow_size else "; flow off"),
        f"  rates per core: {r.source}",
        "",
    ]
    head = f"  {'stage':<14} {'core-s/video':>12} {'core-hours':>12}  " + "  ".join(
        f"{f'wall {n}x{p.cores}c':>16}" for n in p.nodes) + "   measured per-core rates"
    lines.append(head)
    lines.append("  " + "-" * (len(head) - 2))
    for s in p.stages:
        lines.append(f"  {s.name:<14} {s.per_video_s:>12.2f} {s.core_hours:>12,.0f}  "
                     + "  ".join(f"{_fmt_h(s.wall_hours[n]):>16}" for n in p.nodes) + f"   {s.rates}")
    lines.append(f"  {'total':<14} {sum(s.per_video_s for s in p.stages):>12.2f} {p.core_hours:>12,.0f}  "
                 + "  ".join(f"{_fmt_h(p.wall_hours[n]):>16}" for n in p.nodes))
    lines.append(f"  {'node-hours':<14} {'':>12} {'':>12}  " + "  ".join(f"{p.node_hours[n]:>16,.0f}" for n in p.nodes))
    slots = f"{p.slots_per_node} task slots per node" + (f", concurrency cap {p.concurrency}" if p.concurrency else "")
    lines += [
        "",
        f"  cluster: {slots}; wall time assumes every slot busy (ideal: no stragglers, I/O keeps up)",
        f"  output: {_fmt_bytes(p.output_bytes)} ({_fmt_bytes(p.payload_bytes_per_video)} per video: "
        f"{_fmt_bytes(r.frame_bytes)} per frame"
        + (f", {_fmt_bytes(r.flow_stack_bytes)} per flow stack" if p.work.flow_stacks else "")
        + f"; Parquet overhead x{r.parquet_overhead:.3f})",
    ]
    f = p.files
    if f:
        lines += [
            f"  files: {f['files']:,} clips parts of ~{_fmt_bytes(f['mean_file_mb'] * 1e6)} (output.target_part_mb; "
            f"+1 smaller per run), row groups of {f['row_group_mb']:g} MB; status: one snapshot of "
            f"~{_fmt_bytes(f['status_snapshot_mb'] * 1e6)}",
            f"  resume / --retry-failed / --dry-run: reads the snapshot + at most {f['resume_status_files'] - 1} "
            "status parts: ~" + ", ~".join(f"{v:,.0f} s on {k}" for k, v in f["resume_s"].items())
            + " (driver-side rates of benchmarks/scale.py)",
        ]
    checks = r.meta.get("checks") or {}
    for name, chk in checks.items():
        lines.append(f"  check {name}: measured {chk['measured_s']:.3f} CPU-s, model {chk['model_s']:.3f} s "
                     f"(measured/model {chk['ratio']:.2f})")
    if r.meta.get("warning"):
        lines.append(f"  WARNING: {r.meta['warning']}")
    if r.meta.get("wall_over_cpu"):
        lines.append(f"  measurement: wall/CPU time {r.meta['wall_over_cpu']:.2f} (1.0 = this machine was idle)")
    for note in p.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# 2. Measurement
# ------------------------------------------------------------------------------------------------
def make_sample_video(path: str | Path, size: tuple[int, int], seconds: float, fps: float = 30.0, gop: int = 250,
                      crf: int = 23, seed: int = 0) -> Path:
    """Write an H.264 sample: a textured scene panning with sub-pixel motion plus a moving shape.

    Content like ``benchmarks/decode.py``'s generator (libx264 ``veryfast``, ``crf``, keyframes every
    ``gop`` frames, one thread), streamed frame by frame so long or large samples fit in memory.
    """
    import av
    import cv2
    import numpy as np

    from vidray.synth import periodic_texture

    w, h = size
    rng = np.random.default_rng(seed)
    tex = cv2.resize(periodic_texture(rng, 256, 256), (w, h), interpolation=cv2.INTER_LINEAR)
    path = Path(path)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=int(round(fps)), options={
            "preset": "veryfast", "crf": str(crf),
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:threads=1"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for t in range(int(round(seconds * fps))):
            m = np.float32([[1, 0, 1.7 * t], [0, 1, 0.6 * t]])
            img = cv2.warpAffine(tex, m, (w, h), borderMode=cv2.BORDER_WRAP)
            cx, cy = int((0.2 * w + 3.1 * t) % w), int((0.5 * h + 1.3 * t) % h)
            cv2.circle(img, (cx, cy), max(4, h // 8), (230, 60, 40), -1, cv2.LINE_AA)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _cpu_timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Median CPU seconds and median wall seconds of ``fn()`` over ``repeats`` runs, and its last result."""
    cpu, wall, out = [], [], None
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall), out


class _Clock:
    """Median CPU seconds of repeated calls (:func:`_cpu_timed`), remembering wall vs CPU of each."""

    def __init__(self, repeats: int) -> None:
        self.repeats = repeats
        self.wall_cpu: list[tuple[float, float]] = []

    def cpu(self, fn: Callable[[], Any], repeats: int | None = None) -> tuple[float, Any]:
        cpu, wall, out = _cpu_timed(fn, self.repeats if repeats is None else repeats)
        self.wall_cpu.append((wall, cpu))
        return cpu, out

    @property
    def wall_over_cpu(self) -> float:
        return sum(w for w, _ in self.wall_cpu) / max(sum(c for _, c in self.wall_cpu), 1e-9)


def _sample_paths(corpus: CorpusStats, samples: list[str] | None, quick: bool, tmp: str, meta: dict,
                  say: Callable[[str], None]) -> list[str]:  # fmt: skip
    """The given sample files, or one generated H.264 clip like the corpus's videos."""
    if samples:
        paths = [str(Path(s)) for s in samples]
        meta["sample"] = f"{len(paths)} file(s): {', '.join(Path(p).name for p in paths)}"
        return paths
    seconds = 2.0 if quick else 10.0
    t0 = time.perf_counter()
    p = make_sample_video(Path(tmp) / "sample.mp4", (corpus.width, corpus.height), seconds, corpus.fps, corpus.gop)
    kbps = p.stat().st_size * 8 / seconds / 1e3
    meta["sample"] = (f"generated {seconds:g} s H.264 {corpus.width}x{corpus.height} @ {corpus.fps:g} fps, "
                      f"keyint {corpus.gop}, crf 23, {kbps:,.0f} kbit/s (panning texture + shape)")
    say(f"sample video written in {time.perf_counter() - t0:.1f} s: {meta['sample']}")
    return [str(p)]


def _measure_decode(paths: list[str], clock: _Clock) -> dict[str, float]:
    """Decode rate (every frame, no conversion), demux rate and the per-video fixed cost (open + probe)."""
    from vidray.io.video import _open_container, _video_stream, probe

    def count(path: str, demux: bool) -> int:
        c = _open_container(path)
        try:
            s = _video_stream(c, path)
            return sum(1 for _ in (c.demux(s) if demux else c.decode(s)))
        finally:
            c.close()

    n_dec, cpu_dec = 0, 0.0
    for p in paths:
        cpu, n = clock.cpu(lambda p=p: count(p, demux=False))
        n_dec, cpu_dec = n_dec + n, cpu_dec + cpu
    reps = max(3, clock.repeats)
    t_open, _, _ = _cpu_timed(lambda: _open_container(paths[0]).close(), reps)
    t_dem, _, n_pk = _cpu_timed(lambda: count(paths[0], demux=True), reps)
    t_probe, _, _ = _cpu_timed(lambda: probe(paths[0]), reps)
    demux_fps = n_pk / max(t_dem - t_open, 1e-4)
    return {"decode_fps": n_dec / cpu_dec, "demux_fps": demux_fps, "t_open": t_open,
            "video_open_s": max(t_probe - n_pk / demux_fps, 0.0) + t_open}  # fmt: skip


def _measure_convert_encode(paths: list[str], out_sizes: list[tuple[int, int]], cfg: IngestConfig, quick: bool,
                            clock: _Clock) -> tuple[dict[str, float], list, list[bytes]]:  # fmt: skip
    """RGB conversion at the output size and frame encoding, on decoded frames held in memory.
    Returns the rates, the RGB frames and their encoded bytes."""
    import numpy as np

    from vidray.io.imcodec import encode_image
    from vidray.io.video import _open_container, _to_rgb, _video_stream

    keep = 12 if quick else 40
    frames_yuv, sizes = [], []
    for p, size in zip(paths, out_sizes):
        c = _open_container(p)
        try:
            for k, fr in enumerate(c.decode(_video_stream(c, p))):
                if k >= keep // len(paths):
                    break
                frames_yuv.append(fr)
                sizes.append(size)
        finally:
            c.close()
    cpu, rgbs = clock.cpu(lambda: [_to_rgb(f, s) for f, s in zip(frames_yuv, sizes)])
    convert_fps = len(frames_yuv) / cpu
    cpu, encoded = clock.cpu(lambda: [encode_image(im, cfg.output.encoding, cfg.output.jpeg_quality) for im in rgbs])
    rates = {"convert_fps": convert_fps, "jpeg_fps": len(rgbs) / cpu, "frame_bytes": float(np.mean([len(b) for b in encoded]))}
    return rates, rgbs, encoded


def _measure_flow(rgbs: list, n_paths: int, out_size: tuple[int, int], cfg: IngestConfig, quick: bool, clock: _Clock,
                  say: Callable[[str], None]) -> tuple[dict[str, float], list[bytes]]:  # fmt: skip
    """Flow pairs and stack encoding per CPU-second (zeros when flow is off); also the encoded stacks."""
    import cv2
    import numpy as np

    from vidray.flow import make_flow_fn
    from vidray.io.flowcodec import encode_flow_stack, quantize_flow
    from vidray.io.video import output_size

    zero = {"flow_pairs_per_s": 0.0, "flow_stacks_per_s": 0.0, "flow_stack_bytes": 0.0}
    if not cfg.flow.enabled:
        return zero, []
    fw_fh = out_size if cfg.flow.short_side is None else \
        output_size(*out_size, cfg.flow.short_side, upscale=cfg.resize.upscale)

    def gray(im):  # the per-frame gray conversion (and flow-size resize) ingest does
        g = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
        return g if fw_fh == out_size else cv2.resize(g, fw_fh, interpolation=cv2.INTER_AREA)

    grays = [gray(im) for im in rgbs[: len(rgbs) // n_paths]]
    fn = make_flow_fn(cfg.flow.algorithm)
    budget_s = 1.0 if quick else 4.0
    fields, n_pairs = [], 0
    c0, w0 = time.process_time(), time.perf_counter()
    while n_pairs < len(grays) - 1 and (n_pairs < 2 or time.process_time() - c0 < budget_s):
        fields.append(quantize_flow(fn(gray(rgbs[n_pairs]), grays[n_pairs + 1]), cfg.flow.bound))
        n_pairs += 1
    cpu = time.process_time() - c0
    clock.wall_cpu.append((time.perf_counter() - w0, cpu))
    L = cfg.flow.stack_length
    stacks = [np.stack([fields[(i + j) % len(fields)] for j in range(L)]) for i in range(len(fields))]
    cpu_s, enc = clock.cpu(lambda: [encode_flow_stack(s, cfg.output.flow_encoding, cfg.output.jpeg_quality)
                                    for s in stacks])  # fmt: skip
    say(f"flow: {n_pairs} {cfg.flow.algorithm} pairs at {fw_fh[0]}x{fw_fh[1]} in {cpu:.2f} CPU-s")
    return {"flow_pairs_per_s": n_pairs / cpu, "flow_stacks_per_s": len(stacks) / cpu_s,
            "flow_stack_bytes": float(np.mean([len(b) for b in enc]))}, enc  # fmt: skip


def _measure_write(frame_sizes: list[int], stack_sizes: list[int], cfg: IngestConfig, quick: bool, tmp: str,
                   clock: _Clock) -> dict[str, float]:  # fmt: skip
    """Parquet write of rows like the clips table's (frames + flow as list<binary>). The cells are
    random bytes of the measured encoded sizes: as incompressible as JPEG, and distinct (repeating the
    few sample frames would let Parquet's dictionary and snappy shrink them away)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    per_row = max(1, cfg.output.max_frames_per_row)
    row_bytes = per_row * (float(np.mean(frame_sizes)) + (float(np.mean(stack_sizes)) if stack_sizes else 0.0))
    n_rows = max(2, int((4 if quick else 16) * 1_000_000 // max(row_bytes, 1)))
    cols: dict[str, Any] = {"video_id": [f"v{r}" for r in range(n_rows)]}
    payload = 0
    for name, sizes in (("frames", frame_sizes), ("flow", stack_sizes)):
        if not sizes:
            continue
        cells = [[rng.bytes(sizes[(r * per_row + k) % len(sizes)]) for k in range(per_row)] for r in range(n_rows)]
        payload += sum(len(b) for row in cells for b in row)
        cols[name] = pa.array(cells, pa.list_(pa.binary()))
    table = pa.table(cols)
    out_file = Path(tmp) / "write.parquet"
    cpu, _ = clock.cpu(lambda: pq.write_table(table, out_file))
    return {"write_mb_per_s": payload / 1e6 / cpu, "parquet_overhead": out_file.stat().st_size / payload}


def _check_model(info: Any, path: str, out_size: tuple[int, int], cfg: IngestConfig, rates: Rates, t_open: float,
                 check_pipeline: bool, clock: _Clock) -> dict[str, dict[str, float]]:  # fmt: skip
    """The cost model against vidray's reader, and against the whole per-video pipeline."""
    import numpy as np

    from vidray.io.video import iter_frames
    from vidray.sampling import flow_indices, flow_step, sample_frames

    checks: dict[str, dict[str, float]] = {}
    w = video_work(info.duration_s, info.fps, info.width, info.height, 1, cfg, keyframes=info.keyframes)
    needed = idx = np.unique(sample_frames(info.timestamps, cfg.sampling, "plan", keyframes=info.keyframes))
    if cfg.flow.enabled:
        spans = flow_indices(idx, info.num_frames, cfg.flow.stack_length, flow_step(info.fps, cfg.flow.flow_fps))
        needed = np.unique(np.concatenate([idx, spans.ravel()]))
    cpu, _ = clock.cpu(lambda: sum(1 for _ in iter_frames(path, needed, size=out_size, info=info,
                                                          strategy=cfg.execution.seek,
                                                          backend=cfg.execution.decoder)), 1)  # fmt: skip
    model = t_open + w.decode_cost_frames / rates.decode_fps + w.needed_frames / rates.convert_fps
    checks["reader (decode+sample)"] = {"measured_s": cpu, "model_s": model, "ratio": cpu / model}
    if check_pipeline:
        from vidray.ingest import process_video

        entry = {"video_id": "plan", "path": path, "open_path": path, "labels": [0], "split": "train", "row": 0}
        process_video(dict(entry), cfg)  # warm-up: the flow object and OpenCV's lazy set-up
        cpu, rows = clock.cpu(lambda: process_video(dict(entry), cfg), 1)
        if rows[0]["status"] != "ok":
            raise RuntimeError(f"process_video failed on the sample: {rows[0]['error']}")
        specs, payload_b = stage_seconds(w, cfg, rates)
        model = sum(sec for _, sec, _ in specs) - payload_b / 1e6 / rates.write_mb_per_s
        checks["process_video (all but write)"] = {"measured_s": cpu, "model_s": model, "ratio": cpu / model}
    return checks


def measure_rates(
    corpus: CorpusStats, cfg: IngestConfig, *, quick: bool = False, samples: list[str] | None = None,
    check_pipeline: bool = True, log: Callable[[str], None] | None = None,
) -> Rates:
    """Measure :class:`Rates` for ``cfg`` on sample videos (about 10-40 s; ``quick``: a few seconds).

    Without ``samples`` one H.264 clip at the corpus's resolution, frame rate and keyframe interval is
    generated (:func:`make_sample_video`). Everything runs single-threaded in this process, the way an
    ingest task runs. ``check_pipeline`` also runs :func:`vidray.ingest.process_video` on the first
    sample and records measured vs modelled CPU seconds (``meta["checks"]``).
    """
    import cv2

    from vidray.io.video import output_size, probe

    say = log or (lambda s: None)
    cv2.setNumThreads(1)
    clock = _Clock(1 if quick else 3)
    meta: dict[str, Any] = {"checks": {}}
    with tempfile.TemporaryDirectory(prefix="vidray-plan-") as tmp:
        paths = _sample_paths(corpus, samples, quick, tmp, meta, say)
        infos = [probe(p) for p in paths]
        out_sizes = [output_size(i.width, i.height, cfg.resize.short_side, cfg.resize.max_long_side,
                                 upscale=cfg.resize.upscale) for i in infos]
        if any((i.width, i.height) != (corpus.width, corpus.height) for i in infos):
            meta["warning"] = (f"sample resolution {[(i.width, i.height) for i in infos]} differs from the corpus's "
                               f"{corpus.width}x{corpus.height}: rates are the samples'")
        dec = _measure_decode(paths, clock)
        conv, rgbs, encoded = _measure_convert_encode(paths, out_sizes, cfg, quick, clock)
        flow, enc_stacks = _measure_flow(rgbs, len(paths), out_sizes[0], cfg, quick, clock, say)
        write = _measure_write([len(b) for b in encoded], [len(b) for b in enc_stacks], cfg, quick, tmp, clock)
        rates = Rates(
            decode_fps=dec["decode_fps"], convert_fps=conv["convert_fps"], jpeg_fps=conv["jpeg_fps"],
            frame_bytes=conv["frame_bytes"], video_open_s=dec["video_open_s"], demux_fps=dec["demux_fps"],
            source=f"measured here on {meta['sample']}", meta=meta, **flow, **write,
        )  # fmt: skip
        meta["checks"] = _check_model(infos[0], paths[0], out_sizes[0], cfg, rates, dec["t_open"], check_pipeline,
                                      clock)  # fmt: skip
    meta["wall_over_cpu"] = clock.wall_over_cpu
    return rates


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def corpus_from_args(a: Any) -> CorpusStats:
    """A :class:`CorpusStats` from ``vidray plan`` arguments: a preset, then any explicit statistic."""
    base = PRESETS[a.preset] if a.preset else None
    if base is None and (a.videos is None or a.duration is None):
        raise ValueError("give --preset, or --videos and --duration (and --resolution, --fps)")
    kw: dict[str, Any] = asdict(base) if base else {"name": "corpus", "width": 640, "height": 360,
                                                    "notes": ("resolution defaults to 640x360 (--resolution)",)}
    dropped = set()
    if a.resolution is not None or a.fps is not None:
        dropped.add(_RESOLUTION_NOTE)
    if a.gop is not None:
        dropped.add(_GOP_NOTE)
    kw["notes"] = tuple(n for n in kw.get("notes", ()) if n not in dropped)
    if a.videos is not None:
        kw["videos"] = a.videos
    if a.duration is not None:
        kw["mean_duration_s"] = a.duration
    if a.resolution is not None:
        kw["width"], kw["height"] = a.resolution
    if a.fps is not None:
        kw["fps"] = a.fps
    if a.gop is not None:
        kw["gop"] = a.gop
    if a.name:
        kw["name"] = a.name
    return CorpusStats(**kw)


def run_plan(a: Any) -> int:
    """``vidray plan`` (arguments from :func:`add_plan_parser`)."""
    import sys

    corpus = corpus_from_args(a)
    cfg, src = load_plan_config(PRESETS.get(a.preset) if a.preset else None, a.config, a.overrides)
    t0 = time.perf_counter()
    notes: list[str] = []
    if a.rates_from:
        rates = Rates.from_json(a.rates_from)
        saved = json.loads(Path(a.rates_from).read_text().strip().splitlines()[-1])
        if "config" in saved and saved["config"] != cfg.model_dump(mode="json"):
            notes.append(f"the rates in {a.rates_from} were measured for another ingest config: re-measure "
                         "(without --rates-from) if the encoding, resize or flow settings changed")
    else:
        rates = measure_rates(corpus, cfg, quick=a.quick, samples=a.sample, check_pipeline=not a.quick,
                              log=lambda s: echo(f"  [measure] {s}", file=sys.stderr, flush=True))
        rates.meta["measure_wall_s"] = time.perf_counter() - t0
    plan = plan_corpus(corpus, cfg, rates, a.nodes, a.cores, config_source=src)
    plan.notes.extend(notes)
    plan.notes.append("training: not estimated here: it needs a train-step rate measured on the GPU node type "
                      "(this machine has no GPU); see docs/cluster.md")
    echo(format_plan(plan))
    if a.json:
        d = plan.to_dict()
        d["config"] = cfg.model_dump(mode="json")
        echo(json.dumps(d, default=str))
    return 0


def _int_list(s: str) -> list[int]:
    try:
        out = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {s!r}") from None
    if not out:
        raise ValueError("expected at least one number")
    return out


def add_plan_parser(sub: Any, commands: dict) -> None:
    """Register ``vidray plan`` on the CLI's subparsers (``vidray.cli._EXTRA_COMMANDS`` protocol)."""
    import argparse

    def size(s: str) -> tuple[int, int]:
        try:
            w, h = s.lower().split("x")
            return int(w), int(h)
        except ValueError:
            raise argparse.ArgumentTypeError(f"resolution must look like 640x360, got {s!r}") from None

    def int_list(s: str) -> list[int]:
        try:
            return _int_list(s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    p = sub.add_parser("plan", help="core-hours, wall time and output size of ingesting a corpus, from measured rates",
                       description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), help="corpus statistics and ingest recipe")
    p.add_argument("--name", help="corpus name for the report")
    p.add_argument("--videos", type=int, help="number of videos")
    p.add_argument("--duration", type=float, help="mean video duration, seconds")
    p.add_argument("--resolution", type=size, help="source WxH (default 640x360)")
    p.add_argument("--fps", type=float, help="source frame rate")
    p.add_argument("--gop", type=int, help="keyframe interval, frames")
    p.add_argument("--config", help="ingest YAML config (default: the preset's recipe)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an ingest config key (repeatable), as for vidray ingest")
    p.add_argument("--nodes", type=int_list, default=[1, 8, 32], help="cluster sizes, comma-separated (default 1,8,32)")
    p.add_argument("--cores", type=int, default=64, help="cores (Ray CPUs) per node (default 64: c6i.16xlarge)")
    p.add_argument("--sample", action="append", help="measure on this video file instead of a generated one (repeatable)")
    p.add_argument("--quick", action="store_true", help="short measurement (a few seconds, noisier)")
    p.add_argument("--rates-from", help="skip measuring: rates from a previous --json output (or a rates object)")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object on the last line")
    commands["plan"] = run_plan
