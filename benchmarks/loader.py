"""Training loader throughput: clips/s per core from the Parquet dataset vs decord on the videos.

One run, everything pinned to ONE core (``sched_setaffinity``; OpenCV and torch single-threaded; a
1-CPU Ray started after pinning, so its workers inherit the core): clips/s = clips per core-second.
Same corpus, same sampling (TSN, 8 segments, random offset per segment), same augmentation
(multi-scale crop -> 224, flip, colour jitter; one draw per clip), clips delivered as uint8 torch
batches of 8 clips:

* ``decord``       MMAction2's way: ``VideoReader`` -> ``get_batch(indices)`` -> resize short side 256
                   -> augment (the videos are opened per clip, as a dataset ``__getitem__`` does).
* ``floor``        ``cv2.imdecode`` of the same 8 JPEG frames from memory, nothing else.
* ``loader``       vidray's training path (CPU training config): Ray Data ``read_parquet`` (~128 MB per
                   read task) -> ``map_batches(decode_augment_fn)`` (sample, decode only the 8 frames,
                   augment, in the read task) -> ``iter_torch_batches()`` of uint8 clips.
* ``loader_noaug`` the same with the validation transform (centre crop): the data path without the
                   cost of the augmentation itself.
* ``loader+normalize_cpu`` ``loader`` plus :func:`normalize_batch` on this core (float conversion,
                   colour jitter, mean/std): what the loader leaves to the device, done on the CPU.
* ``loader_gpu_config`` ``loader`` as configured for GPU training: the colour jitter is left to the
                   device (factors drawn in the task, applied in ``normalize_batch``).
* ``loader_task_per_file`` ``loader`` with Ray Data's default of one read task per Parquet file.
* ``loader_collate`` ``input.decode_in: workers``: ``map_batches(select_frames)`` (the read task keeps
                   only each row's 8 JPEGs) -> ``iter_torch_batches(collate_fn=ClipCollate)`` (decode +
                   augment in Ray Data's prefetch threads of the consumer).
* ``collate_whole_rows`` the same without ``select_frames``: whole rows travel to the consumer.
* ``map_batches_float`` decode + augment in ``map_batches`` and ship float32 normalised clips (what a
                   naive pipeline does: Ray Data issue #50128).
* ``iter_batches`` ``select_frames`` + ``iter_batches(batch_format="pyarrow")`` + ``ClipCollate`` in the
                   consuming thread (no overlap).
* ``loader_uncompressed`` / ``loader_stored_5fps``: ``loader`` on the same rows rewritten without
                   Parquet compression (ingest writes snappy) / keeping every 5th stored frame (an ingest
                   at 5 fps): how much of the gap to the floor is reading densely stored rows.
* ``arrow_local``  ``ClipCollate`` on Arrow tables read with pyarrow in this process (no Ray): the
                   collate's own cost.

Steady state: the Ray paths stream the Parquet parts listed ``--repeat`` times (one execution), so the
per-epoch start-up of a Ray Data execution is measured separately (``epoch_start_s``, V1 and V2 Parquet
readers). Also the train-step throughput of a model on this core. Each path reports clips per wall
second on the pinned core and clips per CPU-second of the whole process tree (driver + Ray's daemons
and workers; in-process paths: the measuring thread), which other jobs on a shared machine do not
distort; the ratios use the latter. Ratios: ``loader / decord`` (target >= 10) and ``floor / loader``
(target <= 1.25).

    python benchmarks/loader.py [--videos 32] [--seconds 10] [--repeat 6] [--workdir DIR] [--json out.json]
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


def tree_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process and every live descendant (Ray's
    GCS, raylet and workers are children of the driver that started them)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # exited meanwhile
            pass
    return total


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


def run_floor(data: Path, clips: int) -> float:
    """JPEG-decode the 8 sampled frames of each clip (bytes already in memory); clips/s."""
    import cv2

    from vidray.data.loader import iter_rows, sample_indices

    rows = [r for t in _tables(data) for r in iter_rows(t)]
    spec, rng = _spec(), np.random.default_rng(0)
    picks = [(rows[i % len(rows)], sample_indices(rows[i % len(rows)].frame_index, spec, rng)) for i in range(clips)]
    bufs = [[r._item(r._frames, int(j)) for j in idx] for r, idx in picks]
    t0, c0 = time.perf_counter(), tree_cpu_s()
    for bs in bufs:
        for b in bs:
            cv2.imdecode(b, cv2.IMREAD_COLOR_RGB)
    return _rates(clips, time.perf_counter() - t0, tree_cpu_s() - c0)


def run_arrow_local(data: Path, clips: int) -> float:
    """ClipCollate on in-memory Arrow batches of 8 rows (no Ray); clips/s."""
    from vidray.data.loader import ClipCollate

    tables = _tables(data)
    import pyarrow as pa

    t = pa.concat_tables(tables)
    coll = ClipCollate(_spec(), seed=0)
    done = 0
    t0, c0 = time.perf_counter(), tree_cpu_s()
    while done < clips:
        s = done % max(1, t.num_rows - BATCH)
        coll(t.slice(s, BATCH))
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


def _consume(it) -> tuple[int, float, float, float]:
    """(clips after the first batch, their seconds, seconds to the first batch, CPU seconds of the
    whole process tree after the first batch) of iterating ``it``."""
    t0 = time.perf_counter()
    first = None
    n = 0
    c0 = 0.0
    for b in it:
        if first is None:
            first = time.perf_counter() - t0
            c0 = tree_cpu_s()
            continue
        n += int((b["label"] if "label" in b else b["imgs"]).shape[0])
    return n, time.perf_counter() - t0 - (first or 0.0), first or 0.0, tree_cpu_s() - c0


def run_ray_paths(data: Path, repeat: int) -> dict[str, dict]:
    """The Ray Data paths; each streams the parts ``repeat`` times. Returns per path clips/s (after
    the first batch: steady state) and the time to the first batch."""
    import pyarrow as pa

    from vidray.data.loader import ClipCollate, iter_rows, make_sample

    out = {}

    def record(name, n, dt, first, cpu):
        out[name] = {"clips": n, "seconds": round(dt, 3), "first_batch_s": round(first, 3),
                     "clips_per_s": round(n / max(dt, 1e-9), 2), "clips_per_cpu_s": round(n / max(cpu, 1e-9), 2)}
        print(f"  {name:22s} {out[name]['clips_per_s']:8.1f} clips/s {out[name]['clips_per_cpu_s']:8.1f} "
              f"clips/cpu-s  (first batch {first:.2f} s)", flush=True)  # fmt: skip

    import dataclasses

    from vidray.data.loader import select_frames_fn

    ds = _ray_ds(data, repeat)

    def selected(train: bool):
        return ds.map_batches(select_frames_fn, fn_kwargs={"spec": _spec(train)}, batch_format="pyarrow",
                              batch_size=None)  # fmt: skip

    def pre(train: bool):
        return ClipCollate(dataclasses.replace(_spec(train), presampled=True), seed=0)

    from vidray.data.loader import decode_augment_fn

    decoded = ds.map_batches(decode_augment_fn, fn_kwargs={"spec": _spec(True)}, batch_format="pyarrow",
                             batch_size=16)  # fmt: skip
    record("loader", *_consume(decoded.iter_torch_batches(batch_size=BATCH, prefetch_batches=2, drop_last=True)))
    record("loader_collate", *_consume(selected(True).iter_torch_batches(batch_size=BATCH, collate_fn=pre(True),
                                                                          prefetch_batches=2, drop_last=True)))  # fmt: skip
    noaug = ds.map_batches(decode_augment_fn, fn_kwargs={"spec": _spec(False)}, batch_format="pyarrow",
                           batch_size=16)  # fmt: skip
    record("loader_noaug", *_consume(noaug.iter_torch_batches(batch_size=BATCH, prefetch_batches=2, drop_last=True)))
    from vidray.data.loader import normalize_batch

    record("loader+normalize_cpu", *_consume(
        {"label": normalize_batch(b, "rgb")} for b in decoded.iter_torch_batches(
            batch_size=BATCH, prefetch_batches=2, drop_last=True)))  # fmt: skip
    gpu_cfg = ds.map_batches(decode_augment_fn, fn_kwargs={"spec": _spec(True, gpu=True)}, batch_format="pyarrow",
                             batch_size=16)  # fmt: skip
    record("loader_gpu_config", *_consume(gpu_cfg.iter_torch_batches(batch_size=BATCH, prefetch_batches=2,
                                                                      drop_last=True)))  # fmt: skip
    untuned = _ray_ds(data, repeat, tuned=False).map_batches(decode_augment_fn, fn_kwargs={"spec": _spec(True)},
                                                             batch_format="pyarrow", batch_size=16)  # fmt: skip
    record("loader_task_per_file", *_consume(untuned.iter_torch_batches(batch_size=BATCH, prefetch_batches=2,
                                                                         drop_last=True)))  # fmt: skip
    record("collate_whole_rows", *_consume(ds.iter_torch_batches(batch_size=BATCH, prefetch_batches=2,
                                                                  drop_last=True,
                                                                  collate_fn=ClipCollate(_spec(), seed=0))))  # fmt: skip

    def decode_augment(batch: pa.Table, as_float: bool = False) -> dict:
        rng = np.random.default_rng()
        samples = [make_sample(r, _spec(), rng) for r in iter_rows(batch)]
        imgs = np.stack([s["imgs"] for s in samples])
        if as_float:
            imgs = ((imgs.astype(np.float32) / 255.0 - 0.45) / 0.225).transpose(0, 1, 4, 2, 3)
        return {"imgs": imgs, "label": np.array([s["label"] for s in samples])}

    for name, fl in (("map_batches_float", True),):
        mapped = ds.map_batches(decode_augment, batch_format="pyarrow", batch_size=BATCH, fn_kwargs={"as_float": fl})
        record(name, *_consume(mapped.iter_torch_batches(batch_size=BATCH, prefetch_batches=2, drop_last=True)))

    # storage variants of the same videos: the read of densely stored rows is what separates the loader
    # from the decode-only floor (a TSN clip uses 8 of ~125 stored frames of a row)
    for name, files in (("loader_uncompressed", derive(data, data.parent / "uncompressed", 1, "none")),
                        ("loader_stored_5fps", derive(data, data.parent / "every5", 5, "snappy"))):  # fmt: skip
        dv = _ray_ds(files, repeat).map_batches(decode_augment_fn, fn_kwargs={"spec": _spec(True)},
                                                batch_format="pyarrow", batch_size=16)  # fmt: skip
        record(name, *_consume(dv.iter_torch_batches(batch_size=BATCH, prefetch_batches=2, drop_last=True)))
    coll = pre(True)
    record("iter_batches", *_consume(coll(b) for b in selected(True).iter_batches(
        batch_size=BATCH, batch_format="pyarrow", prefetch_batches=2, drop_last=True)))  # fmt: skip
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0, help="video length (25 fps)")
    ap.add_argument("--repeat", type=int, default=6, help="stream the parts this many times (Ray paths)")
    ap.add_argument("--decord-clips", type=int, default=48)
    ap.add_argument("--workdir", default="/tmp/vidray_bench_loader")
    ap.add_argument("--json", default=str(Path(__file__).parent / "out" / "loader.json"))
    ap.add_argument("--no-train-step", action="store_true")
    a = ap.parse_args()

    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths, data = build_corpus(work, a.videos, a.seconds)  # may use both cores (not timed)
    print(f"corpus: {len(paths)} videos 320x240, {a.seconds:g} s at 25 fps, GOP 32 -> {data} "
          f"({sum(f.stat().st_size for f in (data / 'clips').glob('*.parquet')) / 1e6:.0f} MB) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    import ray

    if ray.is_initialized():
        ray.shutdown()
    pin_one_core()
    print(f"one core (cpu {CORE}); TSN {SEGMENTS} segments, crop {CROP}, batches of {BATCH}:", flush=True)
    res: dict = {"setup": {"videos": len(paths), "seconds": a.seconds, "fps": 25, "gop": 32, "size": "320x240",
                           "stored_short_side": SHORT, "segments": SEGMENTS, "crop": CROP, "batch": BATCH,
                           "cores": 1}}  # fmt: skip
    # in-process paths first, before Ray's daemons exist: the process tree is this process alone
    for name, fn in (("decord", lambda: run_decord(paths, a.decord_clips)), ("floor", lambda: run_floor(data, 256)),
                     ("arrow_local", lambda: run_arrow_local(data, 256))):  # fmt: skip
        res[name] = fn()
        print(f"  {name:22s} {res[name]['clips_per_s']:8.1f} clips/s {res[name]['clips_per_cpu_s']:8.1f} clips/cpu-s",
              flush=True)  # fmt: skip
    if not a.no_train_step:
        res["train_step"] = {
            "tdn_tiny": train_step("tdn", "tiny"),
            "tdn_resnet18": train_step("tdn", "resnet18", steps=2),
        }
        print(f"  train step (8x224x224, batch 2, 1 thread): {res['train_step']}", flush=True)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    res["ray"] = run_ray_paths(data, a.repeat)
    res["epoch_start_s"] = epoch_start(data)
    print(f"  epoch start (first row of a new execution): {res['epoch_start_s']}", flush=True)
    key = "clips_per_cpu_s"  # per core: immune to other jobs on the machine
    ray_r = res["ray"]
    res["ratios"] = {
        "loader_over_decord": round(ray_r["loader"][key] / res["decord"][key], 2),
        "floor_over_loader": round(res["floor"][key] / ray_r["loader"][key], 2),
        "floor_over_loader_noaug": round(res["floor"][key] / ray_r["loader_noaug"][key], 2),
        "loader_normalized_over_decord": round(ray_r["loader+normalize_cpu"][key] / res["decord"][key], 2),
    }
    print(json.dumps(res["ratios"]))
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"-> {out}")
    ray.shutdown()
    if os.environ.get("VIDRAY_BENCH_CLEAN"):
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
