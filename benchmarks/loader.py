"""Training loader throughput: clips per CPU-second from the Parquet dataset vs the JPEG-decode floor
and vs decord on the videos.

One run, everything pinned to ONE core (``sched_setaffinity``; OpenCV and torch single-threaded; a
1-CPU Ray started after pinning, so its workers inherit the core). Same corpus (32 synthetic 320x240
videos of 10 s at 25 fps, every frame stored at short side 256 = dense rows of ~250 JPEGs), same
sampling (TSN, 8 segments, random offset per segment), same augmentation (multi-scale crop -> 224,
flip, colour jitter; one draw per clip), clips delivered as uint8 torch batches of 8 clips.

In-process (no Ray):

* ``decord``          MMAction2's way: ``VideoReader`` -> ``get_batch(indices)`` -> resize short side
                      256 -> augment (a video opened per clip, as a dataset ``__getitem__`` does).
* ``floor``           ``cv2.imdecode`` of the same 8 JPEG frames from memory, nothing else (issue 12's
                      floor); ``floor_simplejpeg``: the same with simplejpeg into a reused buffer.
* ``arrow_local``     the read task's decode + augment (:func:`vidray.data.loader.decode_augment_fn`) on
                      Arrow batches already in memory; ``_legacy``: the pre-issue-12 version (OpenCV
                      decode into new arrays, pipeline on whole decoded clips); ``_gpu_config``: the
                      colour jitter left to the device, as ``ray.use_gpu`` training does.

Ray Data (``--paths``; default the first list):

* ``loader``          vidray's training path (CPU config): ``read_parquet`` (~128 MB per read task) ->
                      ``map_batches(decode_augment_fn)`` -> ``iter_torch_batches()`` of uint8 clips.
* ``loader_gpu_config`` / ``loader_legacy`` / ``loader_legacy_gpu_config``: as above, jitter on the
                      device and/or the pre-issue-12 decode + augment, in the same run.
* ``loader_noaug``    the validation transform (centre crop).
* ``read_only``       the read tasks sample and touch the 8 JPEGs of each row, no decoding: the cost of
                      reading densely stored rows (a clip uses 8 of ~250 stored frames).
* ``loader_stored_5fps`` ``loader`` on rows keeping every 5th stored frame (an ingest at 5 fps).
* ``loader_collate``  ``input.decode_in: workers`` (``select_frames`` in the read task, decode in the
                      consumer's prefetch threads).
* more with ``--paths all``: ``loader+normalize_cpu``, ``loader_task_per_file``, ``collate_whole_rows``,
  ``map_batches_float`` (Ray Data issue #50128), ``loader_uncompressed``, ``iter_batches``.

Accounting: CPU-seconds of the whole process tree (driver, Ray's daemons and workers; ``cputime.py``).
Ray paths report the MARGINAL rate: clips between the batches at 20% and 80% of a run over the
CPU-seconds between them (both ends in steady state with the same work in flight). Counting from the
first batch to the end (the accounting before issue 12, also printed) overstates it: what was
prefetched before the first batch costs nothing there. Ratios: ``floor / loader`` (target <= 1.25),
``loader / legacy``, ``loader / decord``.

    python benchmarks/loader.py [--videos 32] [--seconds 10] [--repeat 6] [--paths ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cputime import tree_cpu_s  # noqa: E402

CORE = 0
BATCH = 8
SEGMENTS = 8
CROP = 224
SHORT = 256


def pin_one_core() -> None:
    """Pin this process (and everything it starts later, Ray included) to one core; 1 thread each."""
    os.sched_setaffinity(0, {CORE})
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("RAY_idle_worker_killing_time_threshold_ms", "600000")
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------- corpus
def build_corpus(work: Path, videos: int, seconds: float, fps: int = 25, gop: int = 32) -> tuple[list[Path], Path]:
    """Synthetic 320x240 H.264 videos (keyframe every ``gop`` frames) and their ingest (every frame,
    short side 256, JPEG q90, no flow). Reused when present."""
    from vidray.config import IngestConfig, load_config
    from vidray.ingest import run_ingest
    from vidray.synth import SynthSpec, render_video, write_video

    vdir, data = work / "videos", work / "data"
    paths = [vdir / f"v{i:03d}.mp4" for i in range(videos)]
    frames = int(seconds * fps)
    spec = SynthSpec(kind="motion", width=320, height=240, frames=frames, fps=fps)
    for i, p in enumerate(paths):
        if not p.exists():
            label = spec.classes()[i % len(spec.classes())]
            write_video(p, render_video(spec, label, np.random.default_rng(i)), fps=fps, gop=gop)
    manifest = work / "manifest.csv"
    manifest.write_text("path,label,split\n" + "".join(
        f"{p},{spec.classes()[i % len(spec.classes())]},train\n" for i, p in enumerate(paths)))  # fmt: skip
    if not (data / "dataset.json").exists():
        cfg = load_config(IngestConfig, None, [f"resize.short_side={SHORT}", "sampling.mode=all",
                                               "output.videos_per_task=2"])  # fmt: skip
        run_ingest(manifest, data, cfg=cfg)
    return paths, data


# ---------------------------------------------------------------------------------------- paths
def _spec(train: bool = True, gpu: bool = False):
    """The training (or validation) spec; ``gpu``: the colour jitter is left to the device, as
    ``vidray train`` does with ``ray.use_gpu``."""
    from vidray.data.loader import ClipSpec

    return ClipSpec(sampler="tsn", num_frames=SEGMENTS, modality="rgb", num_classes=6, train=train, crop_size=CROP,
                    jitter_on_device=gpu)  # fmt: skip


def _augment(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The training augmentation on decoded frames ``(T, H, W, 3)`` uint8, all on the CPU (as
    MMAction2's pipeline does it)."""
    from vidray.data.transforms import ColorJitter, Flip, MultiScaleCrop

    res = {"imgs": frames}
    MultiScaleCrop(CROP)(res, rng)
    Flip(0.5)(res, rng)
    ColorJitter(0.4, 0.4, 0.4)(res, rng)
    return res["imgs"]


def run_decord(paths: list[Path], clips: int) -> float:
    """MMAction2-style: open, sample (TSN), get_batch, resize short side 256, augment; clips/s."""
    import cv2
    import decord
    import torch

    from vidray.data.loader import sample_indices

    spec = _spec()
    rng = np.random.default_rng(0)
    batch, done = [], 0
    t0, c0 = time.perf_counter(), tree_cpu_s()
    while done < clips:
        p = paths[done % len(paths)]
        vr = decord.VideoReader(str(p), num_threads=1)
        idx = sample_indices(len(vr), spec, rng)
        frames = vr.get_batch(list(idx)).asnumpy()
        h, w = frames.shape[1:3]
        s = SHORT / min(h, w)
        size = (int(round(w * s)), int(round(h * s)))
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames])
        batch.append(_augment(frames, rng))
        done += 1
        if len(batch) == BATCH:
            torch.from_numpy(np.stack(batch))
            batch = []
    return _rates(clips, time.perf_counter() - t0, tree_cpu_s() - c0)


def _tables(data: Path):
    import pyarrow.parquet as pq

    from vidray.data.loader import columns_for
    from vidray.io.reader import IngestDataset

    return [pq.read_table(f, columns=columns_for(_spec())) for f in IngestDataset(data).files]


def run_floor(data: Path, clips: int, decoder: str = "cv2") -> dict[str, float]:
    """JPEG-decode the 8 sampled frames of each clip (bytes already in memory), nothing else; clips/s.
    ``decoder``: ``cv2`` (``cv2.imdecode``, the floor issue 12 defines) or ``simplejpeg`` (what
    :func:`vidray.io.imcodec.decode_image` uses, into a reused buffer)."""
    import cv2

    from vidray.data.loader import iter_rows, sample_indices

    rows = [r for t in _tables(data) for r in iter_rows(t)]
    spec, rng = _spec(), np.random.default_rng(0)
    picks = [(rows[i % len(rows)], sample_indices(rows[i % len(rows)].frame_index, spec, rng)) for i in range(clips)]
    bufs = [[r._item(r._frames, int(j)) for j in idx] for r, idx in picks]
    if decoder == "simplejpeg":
        import simplejpeg

        out = np.empty((rows[0].height, rows[0].width, 3), np.uint8)
        t0, c0 = time.perf_counter(), tree_cpu_s()
        for bs in bufs:
            for b in bs:
                simplejpeg.decode_jpeg(b, colorspace="RGB", buffer=out)
        return _rates(clips, time.perf_counter() - t0, tree_cpu_s() - c0)
    t0, c0 = time.perf_counter(), tree_cpu_s()
    for bs in bufs:
        for b in bs:
            cv2.imdecode(b, cv2.IMREAD_COLOR_RGB)
    return _rates(clips, time.perf_counter() - t0, tree_cpu_s() - c0)


def legacy_decode_augment_fn(table, spec) -> dict[str, np.ndarray]:
    """The loader's work as it was before issue 12 (for a same-run comparison): decode every sampled
    frame with OpenCV into a new array, copy it into a decoded clip, then the transform pipeline on the
    whole clip (crop copy, resize, flip copy, jitter), then stack the samples."""
    import cv2

    from vidray.data.loader import _first_label, collate_numpy, iter_rows, sample_indices
    from vidray.data.transforms import train_pipeline

    rng = np.random.default_rng()
    samples = []
    for row in iter_rows(table):
        idx = sample_indices(row.frame_index, spec, rng)
        imgs = np.empty((idx.size, row.height, row.width, 3), np.uint8)
        for k, i in enumerate(idx.tolist()):
            imgs[k] = cv2.imdecode(row._item(row._frames, i), cv2.IMREAD_COLOR_RGB)
        res = {"imgs": imgs, "flow": None}
        train_pipeline(spec.crop_size, color_jitter=spec.color_jitter, jitter_on_device=spec.jitter_on_device)(res, rng)
        sample = {"imgs": res["imgs"], "label": _first_label(row.labels), "flip": res["flip"],
                  "targets": np.zeros(spec.num_classes, np.float32)}
        if spec.jitter_on_device:
            sample["jitter"] = res["jitter"]
        samples.append(sample)
    return collate_numpy(samples, spec)


def run_arrow_local(data: Path, clips: int, legacy: bool = False, gpu: bool = False) -> dict[str, float]:
    """The read task's decode + augment (:func:`vidray.data.loader.decode_augment_fn`, or with
    ``legacy`` the pre-issue-12 version) on in-memory Arrow batches of 8 rows (no Ray); clips/s."""
    import pyarrow as pa

    from vidray.data.loader import decode_augment_fn

    t = pa.concat_tables(_tables(data))
    fn = legacy_decode_augment_fn if legacy else decode_augment_fn
    spec = _spec(gpu=gpu)
    done = 0
    t0, c0 = time.perf_counter(), tree_cpu_s()
    while done < clips:
        s = done % max(1, t.num_rows - BATCH)
        fn(t.slice(s, BATCH), spec)
        done += BATCH
    return _rates(done, time.perf_counter() - t0, tree_cpu_s() - c0)


def _rates(clips: int, wall: float, cpu: float) -> dict[str, float]:
    return {"clips_per_s": round(clips / wall, 2), "clips_per_cpu_s": round(clips / max(cpu, 1e-9), 2)}


def derive(data: Path, out: Path, every: int = 1, compression: str = "snappy") -> list[str]:
    """Parquet parts derived from an ingest: every ``every``-th stored frame of each row (a sparser
    ingest, e.g. 5 fps of 25 fps), written with ``compression``. Returns the files (reused)."""
    import pyarrow.parquet as pq

    from vidray.data.loader import _take_lists
    from vidray.io.reader import IngestDataset

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for f in IngestDataset(data).files:
        dst = out / Path(f).name
        if not dst.exists():
            t = pq.read_table(f)
            if every > 1:
                n = [len(x) for x in t["frame_index"].to_pylist()]
                picks = [np.arange(0, k, every) for k in n]
                for name in ("frames", "frame_index", "frame_time_s"):
                    t = t.set_column(t.column_names.index(name), name, _take_lists(t[name], picks))
            pq.write_table(t, dst, compression=compression)
        files.append(str(dst))
    return files


def _ray_ds(data: Path | list[str], repeat: int, v2: bool = False, tuned: bool = True):
    import ray.data

    from vidray.data.loader import columns_for
    from vidray.io.reader import IngestDataset
    from vidray.train.trainer import read_blocks

    ctx = ray.data.DataContext.get_current()
    ctx.use_datasource_v2 = v2
    ctx.enable_progress_bars = False
    files = IngestDataset(data).files if isinstance(data, Path) else list(data)
    blocks = read_blocks(files, 1) * repeat if tuned else None
    return ray.data.read_parquet(files * repeat, override_num_blocks=blocks).select_columns(columns_for(_spec()))


def _consume(it, window: tuple[float, float] = (0.2, 0.8)) -> dict[str, float]:
    """Iterate ``it`` (batches with ``label`` or ``imgs``) and measure its rates.

    * ``clips_per_cpu_s`` (the MARGINAL rate, what the ratios use): clips delivered between the batch
      at ``window[0]`` and the batch at ``window[1]`` of the run, over the CPU-seconds of the whole
      process tree between them. Both ends are in steady state, with about the same work in flight
      (prefetched batches, running read tasks), so the work between them is what those clips cost.
    * ``clips_per_cpu_s_after_first``: the accounting used before issue 12 (from the first batch to
      the end): it overstates, as everything prefetched before the first batch is free and nothing
      is in flight at the end.
    * ``clips_per_s`` (wall, marginal window), ``first_batch_s``.
    """
    t0 = time.perf_counter()
    marks = [(t0, tree_cpu_s(), 0)]
    n = 0
    for b in it:
        n += int((b["label"] if "label" in b else b["imgs"]).shape[0])
        marks.append((time.perf_counter(), tree_cpu_s(), n))
    if len(marks) < 4:
        raise RuntimeError(f"only {len(marks) - 1} batches: use a larger --repeat")
    k = len(marks) - 1
    a, b = marks[max(1, int(window[0] * k))], marks[max(2, int(window[1] * k))]
    first, last = marks[1], marks[-1]
    return {
        "clips": n, "seconds": round(last[0] - t0, 3), "first_batch_s": round(first[0] - t0, 3),
        "marginal_clips": b[2] - a[2],
        "clips_per_cpu_s": round((b[2] - a[2]) / max(b[1] - a[1], 1e-9), 2),
        "clips_per_s": round((b[2] - a[2]) / max(b[0] - a[0], 1e-9), 2),
        "clips_per_cpu_s_after_first": round((last[2] - first[2]) / max(last[1] - first[1], 1e-9), 2),
        "clips_per_cpu_s_whole_run": round(n / max(last[1] - marks[0][1], 1e-9), 2),
    }


def read_only_fn(table, spec) -> dict[str, np.ndarray]:
    """The read task's share without decoding: sample each row and touch its 8 JPEGs' bytes; the same
    tiny output per row. What reading densely stored rows costs per clip."""
    from vidray.data.loader import iter_rows, sample_indices

    rng = np.random.default_rng()
    n = 0
    for r in iter_rows(table):
        for i in sample_indices(r.frame_index, spec, rng):
            bytes(r._item(r._frames, int(i)))
        n += 1
    return {"imgs": np.zeros((n, 1, 1, 1, 3), np.uint8), "label": np.zeros(n, np.int64)}


RAY_PATHS = ("loader", "loader_gpu_config", "loader_legacy", "loader_legacy_gpu_config", "loader_noaug", "read_only",
             "loader_stored_5fps", "loader_collate")
MORE_PATHS = ("loader+normalize_cpu", "loader_task_per_file", "collate_whole_rows", "map_batches_float",
              "loader_uncompressed", "iter_batches")


def run_ray_paths(data: Path, repeat: int, names: tuple[str, ...] = RAY_PATHS) -> dict[str, dict]:
    """The Ray Data paths ``names``; each streams the parts ``repeat`` times (one execution).
    Returns per path the rates of :func:`_consume`."""
    import dataclasses

    import pyarrow as pa

    from vidray.data.loader import (
        ClipCollate, decode_augment_fn, iter_rows, make_sample, normalize_batch, select_frames_fn,
    )

    out = {}
    ds = _ray_ds(data, repeat)

    def mapped(fn, spec, src=None):
        return (src or ds).map_batches(fn, fn_kwargs={"spec": spec}, batch_format="pyarrow", batch_size=16)

    def batches(d, **kw):
        return d.iter_torch_batches(batch_size=BATCH, prefetch_batches=2, drop_last=True, **kw)

    def selected(train: bool):
        return ds.map_batches(select_frames_fn, fn_kwargs={"spec": _spec(train)}, batch_format="pyarrow",
                              batch_size=None)  # fmt: skip

    def pre(train: bool):
        return ClipCollate(dataclasses.replace(_spec(train), presampled=True), seed=0)

    def decode_augment_float(batch: pa.Table) -> dict:
        rng = np.random.default_rng()
        samples = [make_sample(r, _spec(), rng) for r in iter_rows(batch)]
        imgs = np.stack([s["imgs"] for s in samples])
        imgs = ((imgs.astype(np.float32) / 255.0 - 0.45) / 0.225).transpose(0, 1, 4, 2, 3)
        return {"imgs": imgs, "label": np.array([s["label"] for s in samples])}

    builders = {
        "loader": lambda: batches(mapped(decode_augment_fn, _spec(True))),
        "loader_gpu_config": lambda: batches(mapped(decode_augment_fn, _spec(True, gpu=True))),
        "loader_legacy": lambda: batches(mapped(legacy_decode_augment_fn, _spec(True))),
        "loader_legacy_gpu_config": lambda: batches(mapped(legacy_decode_augment_fn, _spec(True, gpu=True))),
        "loader_noaug": lambda: batches(mapped(decode_augment_fn, _spec(False))),
        "read_only": lambda: batches(mapped(read_only_fn, _spec(True))),
        "loader_stored_5fps": lambda: batches(mapped(decode_augment_fn, _spec(True), _ray_ds(
            derive(data, data.parent / "every5", 5, "snappy"), repeat))),
        "loader_collate": lambda: batches(selected(True), collate_fn=pre(True)),
        "loader+normalize_cpu": lambda: ({"label": normalize_batch(b, "rgb")}
                                         for b in batches(mapped(decode_augment_fn, _spec(True)))),
        "loader_task_per_file": lambda: batches(mapped(decode_augment_fn, _spec(True), _ray_ds(data, repeat, tuned=False))),
        "collate_whole_rows": lambda: batches(ds, collate_fn=ClipCollate(_spec(), seed=0)),
        "map_batches_float": lambda: batches(ds.map_batches(decode_augment_float, batch_format="pyarrow", batch_size=BATCH)),
        "loader_uncompressed": lambda: batches(mapped(decode_augment_fn, _spec(True), _ray_ds(
            derive(data, data.parent / "uncompressed", 1, "none"), repeat))),
        "iter_batches": lambda: (pre(True)(b) for b in selected(True).iter_batches(
            batch_size=BATCH, batch_format="pyarrow", prefetch_batches=2, drop_last=True)),
    }
    for name in names:
        out[name] = r = _consume(builders[name]())
        print(f"  {name:26s} {r['clips_per_cpu_s']:8.1f} clips/cpu-s marginal ({r['clips_per_cpu_s_after_first']:6.1f} "
              f"counted from the first batch) {r['clips_per_s']:7.1f} clips/s  (first batch {r['first_batch_s']:.2f} s)",
              flush=True)  # fmt: skip
    return out


def epoch_start(data: Path) -> dict[str, float]:
    """Seconds to the first row of a fresh execution (what every epoch pays), V1 vs V2 Parquet reader."""
    res = {}
    for v2 in (False, True):
        ds = _ray_ds(data, 1, v2)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _b in ds.iter_batches(batch_size=1, batch_format="pyarrow"):
                break
            times.append(time.perf_counter() - t0)
        res["v2" if v2 else "v1"] = round(statistics.median(times[1:]), 3)
    return res


def train_step(model_name: str, backbone: str, steps: int = 4, batch: int = 2) -> dict[str, float]:
    """Clips/s of forward + backward + SGD step, ``(batch, 8, 3, 224, 224)``, one thread."""
    import torch

    from vidray.models import create_model

    m = create_model(model_name, num_classes=101, backbone=backbone)
    opt = torch.optim.SGD(m.parameters(), lr=0.001, momentum=0.9)
    x = torch.randn(batch, SEGMENTS, 3, CROP, CROP)
    y = torch.randint(0, 101, (batch,))
    m.train()
    for i in range(steps + 1):
        if i == 1:
            t0, c0 = time.perf_counter(), tree_cpu_s()
        loss = torch.nn.functional.cross_entropy(m(x)["logits"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return _rates(steps * batch, time.perf_counter() - t0, tree_cpu_s() - c0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0, help="video length (25 fps)")
    ap.add_argument("--repeat", type=int, default=6, help="stream the parts this many times (Ray paths)")
    ap.add_argument("--decord-clips", type=int, default=48)
    ap.add_argument("--local-clips", type=int, default=256, help="clips of each in-process path")
    ap.add_argument("--paths", nargs="+", default=list(RAY_PATHS),
                    help=f"Ray paths to run ('all': also {', '.join(MORE_PATHS)})")
    ap.add_argument("--workdir", default="/tmp/vidray_bench_loader")
    ap.add_argument("--json", default=str(Path(__file__).parent / "out" / "loader.json"))
    ap.add_argument("--train-step", action="store_true", help="also time a CPU train step (slow)")
    a = ap.parse_args(argv)
    names = tuple(RAY_PATHS + MORE_PATHS) if a.paths == ["all"] else tuple(a.paths)

    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths, data = build_corpus(work, a.videos, a.seconds)  # may use both cores (not timed)
    print(f"corpus: {len(paths)} videos 320x240, {a.seconds:g} s at 25 fps, GOP 32 -> {data} "
          f"({sum(f.stat().st_size for f in (data / 'clips').glob('*.parquet')) / 1e6:.0f} MB) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    import ray

    from vidray.runtime import init_ray, local_ray_address

    if ray.is_initialized():
        ray.shutdown()  # the corpus ingest's local Ray; a 1-CPU one is started after pinning
    if os.environ.get("RAY_ADDRESS") == local_ray_address():  # it exported its (now dead) address
        os.environ.pop("RAY_ADDRESS", None)
    pin_one_core()
    print(f"one core (cpu {CORE}); TSN {SEGMENTS} segments, crop {CROP}, batches of {BATCH}:", flush=True)
    res: dict = {"setup": {"videos": len(paths), "seconds": a.seconds, "fps": 25, "gop": 32, "size": "320x240",
                           "stored_short_side": SHORT, "segments": SEGMENTS, "crop": CROP, "batch": BATCH,
                           "cores": 1, "load_avg": os.getloadavg()[0]}}  # fmt: skip
    # in-process paths first, before Ray's daemons exist: the process tree is this process alone
    n = a.local_clips
    local = {
        "decord": lambda: run_decord(paths, a.decord_clips),
        "floor": lambda: run_floor(data, n),
        "floor_simplejpeg": lambda: run_floor(data, n, "simplejpeg"),
        "arrow_local": lambda: run_arrow_local(data, n),
        "arrow_local_legacy": lambda: run_arrow_local(data, n, legacy=True),
        "arrow_local_gpu_config": lambda: run_arrow_local(data, n, gpu=True),
        "arrow_local_legacy_gpu_config": lambda: run_arrow_local(data, n, legacy=True, gpu=True),
    }
    for name, fn in local.items():
        res[name] = fn()
        print(f"  {name:26s} {res[name]['clips_per_cpu_s']:8.1f} clips/cpu-s {res[name]['clips_per_s']:8.1f} clips/s",
              flush=True)  # fmt: skip
    if a.train_step:
        res["train_step"] = {
            "tdn_tiny": train_step("tdn", "tiny"),
            "tdn_resnet18": train_step("tdn", "resnet18", steps=2),
        }
        print(f"  train step (8x224x224, batch 2, 1 thread): {res['train_step']}", flush=True)
    init_ray(num_cpus=1, dashboard=False, log_to_driver=False)
    try:
        res["ray"] = run_ray_paths(data, a.repeat, names)
        res["epoch_start_s"] = epoch_start(data)
        print(f"  epoch start (first row of a new execution): {res['epoch_start_s']}", flush=True)
    finally:
        ray.shutdown()
    key = "clips_per_cpu_s"  # per core: immune to other jobs on the machine
    r = res["ray"]
    ratios = {
        "floor_over_loader": res["floor"][key] / r["loader"][key] if "loader" in r else None,
        "floor_simplejpeg_over_loader": res["floor_simplejpeg"][key] / r["loader"][key] if "loader" in r else None,
        "floor_over_loader_gpu_config": res["floor"][key] / r["loader_gpu_config"][key]
        if "loader_gpu_config" in r else None,
        "floor_over_loader_noaug": res["floor"][key] / r["loader_noaug"][key] if "loader_noaug" in r else None,
        "loader_over_legacy": r["loader"][key] / r["loader_legacy"][key] if {"loader", "loader_legacy"} <= set(r) else None,
        "loader_over_legacy_gpu_config": r["loader_gpu_config"][key] / r["loader_legacy_gpu_config"][key]
        if {"loader_gpu_config", "loader_legacy_gpu_config"} <= set(r) else None,
        "floor_over_read_only": res["floor"][key] / r["read_only"][key] if "read_only" in r else None,
        "floor_over_loader_stored_5fps": res["floor"][key] / r["loader_stored_5fps"][key]
        if "loader_stored_5fps" in r else None,
        "floor_over_arrow_local": res["floor"][key] / res["arrow_local"][key],
        "floor_over_arrow_local_gpu_config": res["floor"][key] / res["arrow_local_gpu_config"][key],
        "arrow_local_over_legacy": res["arrow_local"][key] / res["arrow_local_legacy"][key],
        "arrow_local_over_legacy_gpu_config": res["arrow_local_gpu_config"][key] / res["arrow_local_legacy_gpu_config"][key],
        "loader_over_decord": r["loader"][key] / res["decord"][key] if "loader" in r else None,
        "loader_gpu_config_over_decord": r["loader_gpu_config"][key] / res["decord"][key]
        if "loader_gpu_config" in r else None,
    }
    res["ratios"] = {k: round(v, 2) for k, v in ratios.items() if v is not None}
    print(json.dumps(res["ratios"], indent=1))
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"-> {out}")
    if os.environ.get("VIDRAY_BENCH_CLEAN"):
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
