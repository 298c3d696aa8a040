"""vidray ingest vs Ray Data's ``read_videos``: same videos, same local Ray, same CPUs, same output.

Both produce Parquet rows of JPEG (quality 90) frames resized to short side 256:

* ``read_videos``  ``ray.data.read_videos(paths, fps=1, include_paths=True)`` (Ray 2.60: decord decodes
                   and converts EVERY frame to RGB, then keeps every ``round(src_fps / fps)``-th) ->
                   ``map_batches`` resize (OpenCV bilinear) + JPEG (OpenCV, q90) -> ``write_parquet``.
                   For TSN-8, which ``read_videos`` cannot express, every frame is read and the 8 segment
                   centres are kept by a ``map_batches`` filter, as a user would have to.
* ``vidray``       :func:`vidray.ingest.run_ingest` with ``sampling.mode=fps, fps=1`` or ``mode=segments,
                   num_segments=8``, ``resize.short_side=256``: probe, the skip reader (decode only what the
                   wanted frames need), convert and encode only the sampled frames. Exact frames.
* ``vidray_tol``   (``--tolerance``) the same with ``sampling.keyframe_tolerance`` (opt-in): samples
                   within that fraction of the sampling interval of a keyframe are taken AT the keyframe.

Corpus: :func:`vidray.synth.write_footage` (a textured scene panned by a random-walk camera with a slow
zoom, 3-6 moving sprites, lighting drift, sensor noise; x264 veryfast crf 23 with B-frames and a
B-pyramid, a keyframe exactly every ``--gops`` frames, 30 fps). ``--distinct`` different videos per
case, repeated as hard links up to ``--videos`` files, so generating stays cheap.

Measurement: ONE local Ray (``--cpus``, default 2) for every run, started first and timed apart (its
start-up is reported, not charged to either side), then a warm-up of both pipelines. Each case runs
the pipelines interleaved, ``--repeats`` times; medians are reported. The headline figure is the
ratio of CPU-seconds of the whole process tree (driver + Ray's daemons + workers;
``benchmarks/cputime.py``), which other jobs on a shared machine do not distort; wall-clock ratios
are printed too. Targets (issue 12): >= 3x at GOP 250 and >= 4x at GOP 30 (1 fps, 360p).

    python benchmarks/ingest_vs_read_videos.py [--sizes 360p] [--gops 250 30] [--patterns fps1 tsn8]
        [--videos 24] [--distinct 4] [--seconds 60] [--repeats 3] [--tolerance 0.5] [--json out.json]
"""

from __future__ import annotations

import argparse
import glob
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

SIZES = {"240p": (320, 240), "360p": (640, 360), "720p": (1280, 720)}


def corpus(work: Path, size: str, gop: int, videos: int, distinct: int, seconds: float) -> list[str]:
    """``videos`` files (hard links to ``distinct`` generated ones) of one size and GOP; reused."""
    from vidray.synth import write_footage

    w, h = SIZES[size]
    src = [work / "src" / f"{size}_g{gop}_{seconds:g}s_{i:02d}.mp4" for i in range(distinct)]
    for i, p in enumerate(src):
        if not p.exists():
            write_footage(p, w, h, int(round(seconds * 30)), fps=30, gop=gop, seed=1000 * gop + i)
    d = work / f"{size}_g{gop}_{seconds:g}s_x{videos}"
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(videos):
        p = d / f"v{i:03d}.mp4"
        if not p.exists():
            os.link(src[i % distinct], p)
        out.append(str(p))
    return out


# ---------------------------------------------------------------------------------------- pipelines
def _resize_jpeg(batch: dict) -> dict:
    import cv2

    cv2.setNumThreads(1)
    out = []
    for f in batch["frame"]:
        h, w = f.shape[:2]
        s = 256 / min(h, w)
        img = cv2.resize(f, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_LINEAR)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        out.append(buf.tobytes())
    return {"frame": np.array(out, dtype=object), "frame_index": batch["frame_index"], "path": batch["path"]}


def _keep(batch: dict, want: dict) -> dict:
    m = np.array([int(i) in want[p] for p, i in zip(batch["path"], batch["frame_index"])], dtype=bool)
    return {k: v[m] for k, v in batch.items()}


def run_read_videos(paths: list[str], pattern: str, out: str) -> int:
    import pyarrow.parquet as pq
    import ray.data

    if pattern == "fps1":
        ds = ray.data.read_videos(paths, fps=1, include_paths=True)
    else:  # TSN-8: every frame, then the segment centres
        from vidray.config import SamplingConfig
        from vidray.io.video import probe
        from vidray.sampling import sample_frames

        cfg = SamplingConfig(mode="segments", num_segments=8)
        want = {p: set(sample_frames(probe(p).timestamps, cfg).tolist()) for p in sorted(set(paths))}
        ds = ray.data.read_videos(paths, include_paths=True).map_batches(_keep, fn_kwargs={"want": want},
                                                                         batch_format="numpy")
    ds.map_batches(_resize_jpeg, batch_format="numpy").write_parquet(out)
    return sum(pq.ParquetFile(f).metadata.num_rows for f in glob.glob(f"{out}/*.parquet"))


def run_vidray(paths: list[str], pattern: str, out: str, tolerance: float = 0.0) -> int:
    from vidray.config import IngestConfig, load_config
    from vidray.ingest import run_ingest

    manifest = Path(out + ".csv")
    manifest.write_text("path,label,split\n" + "".join(f"{p},x,train\n" for p in paths))
    samp = (["sampling.mode=fps", "sampling.fps=1"] if pattern == "fps1"
            else ["sampling.mode=segments", "sampling.num_segments=8"])  # fmt: skip
    sets = samp + ["resize.short_side=256", "output.jpeg_quality=90", f"sampling.keyframe_tolerance={tolerance}"]
    s = run_ingest(manifest, out, cfg=load_config(IngestConfig, None, sets))
    if s.ok != s.entries:
        raise RuntimeError(s.format())
    return s.frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["360p"], choices=list(SIZES))
    ap.add_argument("--gops", nargs="+", type=int, default=[250, 30])
    ap.add_argument("--patterns", nargs="+", default=["fps1"], choices=["fps1", "tsn8"])
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--distinct", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=0.0,
                    help="also run vidray with sampling.keyframe_tolerance=this (0: not run)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/vidray_bench_vs_read_videos")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cases = [(s, g, p) for s in a.sizes for g in a.gops for p in a.patterns]
    t0 = time.perf_counter()
    corpora = {(s, g): corpus(work, s, g, a.videos, a.distinct, a.seconds) for s, g, _ in cases}
    print(f"corpora ready in {time.perf_counter() - t0:.0f} s", flush=True)

    import ray
    import ray.data

    from vidray.runtime import init_ray

    pipelines = {"vidray": run_vidray, "read_videos": run_read_videos}
    if a.tolerance > 0:
        pipelines["vidray_tol"] = lambda p, pat, out: run_vidray(p, pat, out, a.tolerance)
    import logging

    for name in ("ray", "ray.data"):  # Ray Data logs every execution plan; keep the benchmark's lines readable
        logging.getLogger(name).setLevel(logging.WARNING)
    c0, w0 = tree_cpu_s(), time.perf_counter()
    init_ray(num_cpus=a.cpus, dashboard=False, log_to_driver=False)
    startup = {"wall_s": round(time.perf_counter() - w0, 2), "cpu_s": round(tree_cpu_s() - c0, 2)}
    ray.data.DataContext.get_current().enable_progress_bars = False
    print(f"ray start-up: {startup['wall_s']} s wall, {startup['cpu_s']} cpu-s (not charged to either side)",
          flush=True)  # fmt: skip
    results = []
    try:
        any_paths = next(iter(corpora.values()))[:2]
        for name, fn in pipelines.items():  # warm-up: worker processes, imports
            fn(any_paths, "fps1", str(work / f"warm_{name}"))
            shutil.rmtree(work / f"warm_{name}", ignore_errors=True)
        for size, gop, pattern in cases:
            paths = corpora[(size, gop)]
            runs: dict[str, list[dict]] = {k: [] for k in pipelines}
            for r in range(a.repeats):
                for name, fn in pipelines.items():
                    out = str(work / f"out_{name}_{r}")
                    shutil.rmtree(out, ignore_errors=True)
                    c0, t0 = tree_cpu_s(), time.perf_counter()
                    frames = fn(paths, pattern, out)
                    runs[name].append({"wall_s": round(time.perf_counter() - t0, 2),
                                       "cpu_s": round(tree_cpu_s() - c0, 2), "frames": frames})
                    shutil.rmtree(out, ignore_errors=True)
                    Path(out + ".csv").unlink(missing_ok=True)
                    print(f"  {size} GOP {gop} {pattern} rep {r} {name:12s} wall {runs[name][-1]['wall_s']:7.1f} s "
                          f"cpu {runs[name][-1]['cpu_s']:7.1f} s frames {frames} load {os.getloadavg()[0]:.1f}",
                          flush=True)  # fmt: skip
            med = {k: {m: statistics.median(x[m] for x in v) for m in ("wall_s", "cpu_s")} for k, v in runs.items()}
            rv = med["read_videos"]
            row = {"size": size, "gop": gop, "pattern": pattern, "videos": len(paths), "seconds": a.seconds,
                   "frames": {k: v[0]["frames"] for k, v in runs.items()}, "median": med, "runs": runs,
                   "ratio_cpu": {k: round(rv["cpu_s"] / v["cpu_s"], 2) for k, v in med.items() if k != "read_videos"},
                   "ratio_wall": {k: round(rv["wall_s"] / v["wall_s"], 2) for k, v in med.items()
                                  if k != "read_videos"},
                   "startup_share_of_vidray_wall": round(startup["wall_s"] / (startup["wall_s"] + med["vidray"]["wall_s"]), 3)}  # fmt: skip
            results.append(row)
            print(f"{size} GOP {gop:3d} {pattern}: read_videos / vidray = {row['ratio_cpu']} (cpu-s), "
                  f"{row['ratio_wall']} (wall); Ray start-up would be "
                  f"{100 * row['startup_share_of_vidray_wall']:.0f}% of a vidray run", flush=True)  # fmt: skip
    finally:
        ray.shutdown()
    if a.json:
        Path(a.json).write_text(json.dumps({"ray_startup": startup, "args": vars(a), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
