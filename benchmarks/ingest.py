"""Whole ingest vs the sum of its stages run alone, and 1 vs 2 Ray workers, in one run.

On a synthetic corpus (H.264, written by ``vidray synth``) with TSN-style sampling and a flow stack per
stored frame, this measures:

* ``stages``: decode+sample, flow, JPEG encode and Parquet write, each run alone in this process
  over the whole corpus (their sum is what a perfect pipeline would cost on one core);
* ``ingest_1``: ``run_ingest`` on a local Ray with one task at a time (``execution.concurrency=1``);
* ``ingest_2``: the same with two tasks at a time (two cores).

and reports ``stages / ingest_1`` (pipeline efficiency, target >= 0.7) and ``ingest_1 / ingest_2``
(scaling, target >= 1.8 on an otherwise idle 2-core machine). Ray start-up is excluded.

``--overhead`` (issue 12 item 5) measures instead where the CPU of the 1- and 2-worker runs goes, by
process role (``cputime.tree_cpu_by_role``: driver, raylet, GCS, log monitor, workers, ...), and the
UDF's own CPU (``process_videos`` wrapped to sum ``time.process_time`` inside each worker; the rest of
the workers' CPU is Ray's task and object-store machinery). On ``C`` cores nothing can run faster than
all the run's CPU spread evenly over them, so with ``T2`` the total CPU of the 2-worker run and ``W1``
the 1-worker run's worker CPU (the serial chain; Ray's daemons run beside it on the other core) the
scaling of a 1-worker run that is CPU-bound on its worker is at most ``bound = W1 / (T2 / C)``
(``bound_udf = UDF1 / (T2 / C)``: the stricter form counting only the UDF as the serial chain;
``bound_wall = wall1 / (T2 / C)``: the hard bound given the measured 1-worker wall time, which
includes waits on other jobs). All are printed with the measured ``wall1 / wall2``. Use a corpus
where the UDF is most of the CPU (e.g. ``--videos 48 --size 320x240 --frames 150``): on a few tiny
videos Ray's per-run costs dominate and the bounds are noise (above 2x on 2 cores).
CPU-seconds do not depend on other jobs sharing the machine; the wall ratio does.

    python benchmarks/ingest.py [--videos 40] [--json out.json]
    python benchmarks/ingest.py --overhead [--videos 24] [--repeats 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vidray.config import IngestConfig, load_config  # noqa: E402

SETTINGS = ["sampling.mode=segments", "sampling.num_segments=8", "resize.short_side=128",
            "flow.enabled=true", "flow.algorithm=dis_fast", "flow.stack_length=5", "output.videos_per_task=2"]


def stage_times(manifest: Path, cfg: IngestConfig) -> dict[str, float]:
    """Each stage alone over the whole corpus, one core, in this process."""
    import cv2
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vidray.flow import make_flow_fn
    from vidray.io.flowcodec import encode_flow_stack, quantize_flow
    from vidray.io.imcodec import encode_image
    from vidray.io.manifest import read_manifest
    from vidray.io.video import iter_frames, output_size, probe
    from vidray.sampling import flow_indices, sample_frames

    cv2.setNumThreads(1)
    entries = read_manifest(manifest).entries
    t = {"decode": 0.0, "flow": 0.0, "encode": 0.0, "write": 0.0}
    flow_fn = make_flow_fn(cfg.flow.algorithm)
    decoded = []
    for e in entries:
        t0 = time.perf_counter()
        info = probe(e.open_path)
        idx = sample_frames(info.timestamps, cfg.sampling, e.video_id)
        spans = flow_indices(idx, info.num_frames, cfg.flow.stack_length, 1)
        size = output_size(info.width, info.height, cfg.resize.short_side)
        frames = dict(iter_frames(e.open_path, np.unique(np.concatenate([idx, spans.ravel()])), size=size, info=info))
        t["decode"] += time.perf_counter() - t0
        decoded.append((idx, spans, frames))
    rows = []
    for idx, spans, frames in decoded:
        t0 = time.perf_counter()
        gray = {k: cv2.cvtColor(v, cv2.COLOR_RGB2GRAY) for k, v in frames.items()}
        cache: dict = {}
        stacks = []
        for span in spans:
            q = []
            for a, b in zip(span[:-1], span[1:]):
                if (a, b) not in cache:
                    cache[(a, b)] = quantize_flow(flow_fn(gray[a], gray[b]), cfg.flow.bound)
                q.append(cache[(a, b)])
            stacks.append(np.stack(q))
        t["flow"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        jpegs = [encode_image(frames[i], "jpeg", cfg.output.jpeg_quality) for i in idx]
        flows = [encode_flow_stack(s, "jpeg", cfg.output.jpeg_quality) for s in stacks]
        t["encode"] += time.perf_counter() - t0
        rows.append({"frames": jpegs, "flow": flows})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for i in range(0, len(rows), cfg.output.videos_per_task):
            pq.write_table(pa.Table.from_pylist(rows[i : i + cfg.output.videos_per_task]), f"{tmp}/{i}.parquet")
        t["write"] = time.perf_counter() - t0
    return t


def ingest_time(manifest: Path, cfg: IngestConfig, concurrency: int) -> float:
    from vidray.ingest import run_ingest

    cfg = cfg.model_copy(deep=True)
    cfg.execution.concurrency = concurrency
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = run_ingest(manifest, Path(tmp) / "out", cfg=cfg)
        dt = time.perf_counter() - t0
        assert s.ok == s.entries, s.format()
    return dt


def overhead(manifest: Path, cfg: IngestConfig, repeats: int, cores: int = 2) -> dict:
    """``--overhead``: CPU by role and the UDF's CPU of 1- and 2-worker ingests (module doc)."""
    import ray

    import cputime
    import vidray.ingest as vi

    udf_dir = Path(tempfile.mkdtemp())
    os.environ[cputime.UDF_DIR_ENV] = str(udf_dir)
    # workers import benchmarks/cputime.py (the wrapped UDF is pickled by reference)
    here = Path(__file__).resolve()
    paths = [str(here.parent), str(here.parents[1]), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    orig = vi.process_videos
    vi.process_videos = cputime.process_videos_timed
    runs: dict[str, dict] = {}
    try:
        c0 = cputime.tree_cpu_by_role()
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
        ingest_time(manifest, cfg, 2)  # warm-up: worker processes, imports
        runs["startup_and_warmup"] = {"wall_s": round(time.perf_counter() - t0, 3),
                                      "cpu_by_role": cputime.diff(c0, cputime.tree_cpu_by_role())}  # fmt: skip
        for rep in range(repeats):
            for conc in (1, 2):
                for f in udf_dir.iterdir():
                    f.unlink()
                c0 = cputime.tree_cpu_by_role()
                wall = ingest_time(manifest, cfg, conc)
                roles = cputime.diff(c0, cputime.tree_cpu_by_role())
                udf = sum(float(x) for f in udf_dir.iterdir() for x in f.read_text().split())
                total = sum(roles.values())
                runs[f"workers{conc}_rep{rep}"] = {
                    "workers": conc, "wall_s": round(wall, 3), "cpu_by_role": roles, "total_cpu_s": round(total, 3),
                    "udf_cpu_s": round(udf, 3), "worker_cpu_s": round(roles.get("worker", 0.0), 3),
                    "ray_cpu_s": round(total - udf, 3), "ray_share": round((total - udf) / total, 3),
                    "load1": round(os.getloadavg()[0], 2),
                }  # fmt: skip
    finally:
        vi.process_videos = orig
        ray.shutdown()
        shutil.rmtree(udf_dir, ignore_errors=True)
    per_rep = []
    for rep in range(repeats):
        r1, r2 = runs[f"workers1_rep{rep}"], runs[f"workers2_rep{rep}"]
        per_rep.append({
            "bound": round(r1["worker_cpu_s"] / (r2["total_cpu_s"] / cores), 3),
            "bound_udf": round(r1["udf_cpu_s"] / (r2["total_cpu_s"] / cores), 3),
            "bound_wall": round(r1["wall_s"] / (r2["total_cpu_s"] / cores), 3),
            "scaling_measured": round(r1["wall_s"] / r2["wall_s"], 3),
            "udf_cpu_2_over_1": round(r2["udf_cpu_s"] / r1["udf_cpu_s"], 3),
        })  # fmt: skip
    return {"cores": cores, "runs": runs, "per_repeat": per_rep}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--overhead", action="store_true", help="CPU by role, UDF CPU and the scaling bound (doc)")
    ap.add_argument("--repeats", type=int, default=1, help="--overhead: 1- and 2-worker runs this many times")
    ap.add_argument("--size", default="160x120")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    import ray

    from vidray.synth import SynthSpec, make_corpus

    w, h = (int(x) for x in a.size.split("x"))
    cfg = load_config(IngestConfig, None, SETTINGS)
    tmp = Path(tempfile.mkdtemp())
    try:
        manifest = make_corpus(tmp / "corpus", SynthSpec(num_videos=a.videos, width=w, height=h, frames=a.frames))
        if a.overhead:
            res = {"videos": a.videos, "size": a.size, "frames": a.frames, "settings": SETTINGS,
                   **overhead(manifest, cfg, a.repeats)}  # fmt: skip
            for k, r in res["runs"].items():
                roles = ", ".join(f"{n} {v:.2f}" for n, v in sorted(r["cpu_by_role"].items()) if v)
                print(f"{k}: wall {r['wall_s']:.2f} s; CPU-s by role: {roles}")
                if "udf_cpu_s" in r:
                    print(f"    total {r['total_cpu_s']:.2f} CPU-s, UDF {r['udf_cpu_s']:.2f}, Ray (all but the UDF) "
                          f"{r['ray_cpu_s']:.2f} = {100 * r['ray_share']:.0f}%")  # fmt: skip
            for rep, p in enumerate(res["per_repeat"]):
                print(f"rep {rep}: scaling bound on {res['cores']} cores {p['bound']:.2f}x (UDF-only chain "
                      f"{p['bound_udf']:.2f}x, with the measured wall1 {p['bound_wall']:.2f}x), "
                      f"measured {p['scaling_measured']:.2f}x; UDF CPU 2w/1w "
                      f"{p['udf_cpu_2_over_1']:.2f}")  # fmt: skip
            if a.json:
                Path(a.json).write_text(json.dumps(res, indent=2))
            return 0
        stages = stage_times(manifest, cfg)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        ingest_time(manifest, cfg, 2)  # warm-up: worker processes, imports
        t1 = ingest_time(manifest, cfg, 1)
        t2 = ingest_time(manifest, cfg, 2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(stages.values())
    res = {
        "videos": a.videos, "size": a.size, "frames": a.frames, "settings": SETTINGS,
        "stages_s": {k: round(v, 3) for k, v in stages.items()}, "stages_total_s": round(total, 3),
        "ingest_1_worker_s": round(t1, 3), "ingest_2_workers_s": round(t2, 3),
        "efficiency_stages_over_ingest1": round(total / t1, 3), "scaling_1_over_2": round(t1 / t2, 3),
    }
    print("stages alone (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()) + f" = {total:.2f}")
    print(f"ingest, 1 worker: {t1:.2f} s   2 workers: {t2:.2f} s")
    print(f"efficiency (stages / ingest_1): {total / t1:.2f} (target >= 0.7)")
    print(f"scaling (ingest_1 / ingest_2):  {t1 / t2:.2f} (target >= 1.8)")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
