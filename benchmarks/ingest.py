"""Whole ingest vs the sum of its stages run alone, and 1 vs 2 Ray workers, in one run.

On a synthetic corpus (H.264, written by ``vidray synth``) with TSN-style sampling and a flow stack per
stored frame, this measures:

* ``stages``: decode+sample, flow, JPEG encode and Parquet write, each run alone in this process
  over the whole corpus (their sum is what a perfect pipeline would cost on one core);
* ``ingest_1``: ``run_ingest`` on a local Ray with one task at a time (``execution.concurrency=1``);
* ``ingest_2``: the same with two tasks at a time (two cores).

and reports ``stages / ingest_1`` (pipeline efficiency, target >= 0.7) and ``ingest_1 / ingest_2``
(scaling, target >= 1.8 on an otherwise idle 2-core machine). Ray start-up is excluded.

    python benchmarks/ingest.py [--videos 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=40)
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
        stages = stage_times(manifest, cfg)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
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
