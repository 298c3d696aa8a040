"""Optical-flow benchmark: pairs/s and end-point error per algorithm, as ratios to TV-L1 in one run.

    .venv/bin/python benchmarks/flow.py [--videos DIR_OF_VIDEOS] [--json flow.json]

* Synthetic: 1/f textures shifted by exact, known sub-pixel amounts (``vidray.flow.synthetic_shift_pair``)
  at ``--size`` (224). Every algorithm runs on every pair, except TV-L1 (seconds per pair), which runs
  on the first ``--tvl1-pairs``. EPE is the mean end-point error in pixels on the interior (16 px
  margin); ``x TV-L1`` is the throughput ratio to TV-L1 measured in this run. One OpenCV thread;
  times are CPU seconds of this process (``time.process_time``), and TV-L1's calls are interleaved
  with the other algorithms' so that load from other processes on a shared machine hits all of
  them alike; wall times are printed too.
* Real (``--videos DIR``): consecutive frame pairs from the videos in DIR, resized to short side
  ``--size`` and centre-cropped, gray: CPU time per pair and its ratio to TV-L1 on the same pairs
  (TV-L1's time depends on content), and, with no ground truth, each algorithm's EPE against TV-L1,
  the paper-faithful reference.
* Storage: quantisation (bound 20) and stack encoding of the default algorithm's flow: bytes per pair
  and the EPE they add.

The issue's target: the default flow >= 100x TV-L1 throughput at EPE <= 0.05 px on the synthetic
shifts (mean over the pairs).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidray import flow as F  # noqa: E402
from vidray.io import flowcodec as codec  # noqa: E402
from vidray.registry import FLOW_ALGORITHMS  # noqa: E402

SHIFTS = [(1.5, -0.75), (0.3, 0.6), (-2.25, 1.0), (4.4, -3.1), (0.1, -0.2)]
MARGIN = 16
VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm"}


def interleaved_timing(fns: dict, ref_fn, pairs: list, ref_pairs: list, min_time: float) -> dict:
    """Time ``ref_fn`` (TV-L1) once per pair of ``ref_pairs``, and after each of those calls give every
    function in ``fns`` its share of ``min_time`` CPU seconds (at least one pass over ``pairs``), so
    the reference and the others are sampled under the same machine load.

    Returns ``{name: {"cpu": s/pair, "wall": s/pair, "flows": [one flow per pair]}}``, the reference
    under the key ``"ref"`` (its flows are for ``ref_pairs``).
    """
    out = {"ref": {"cpu": 0.0, "wall": 0.0, "calls": 0, "flows": []}}
    for name, fn in fns.items():
        fn(*pairs[0][:2])  # warm-up: first-call allocations
        out[name] = {"cpu": 0.0, "wall": 0.0, "calls": 0, "flows": [None] * len(pairs)}
    share = min_time / len(ref_pairs)
    for f0, f1, *_ in ref_pairs:
        r = out["ref"]
        c0, w0 = time.process_time(), time.perf_counter()
        r["flows"].append(ref_fn(f0, f1))
        r["cpu"] += time.process_time() - c0
        r["wall"] += time.perf_counter() - w0
        r["calls"] += 1
        for name, fn in fns.items():
            r = out[name]
            c0, w0 = time.process_time(), time.perf_counter()
            while True:
                for i, (g0, g1, *_) in enumerate(pairs):
                    r["flows"][i] = fn(g0, g1)
                r["calls"] += len(pairs)
                if time.process_time() - c0 >= share:
                    break
            r["cpu"] += time.process_time() - c0
            r["wall"] += time.perf_counter() - w0
    for r in out.values():
        r["cpu"] /= r["calls"]
        r["wall"] /= r["calls"]
    return out


def real_pairs(video_dir: Path, size: int, per_video: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """``per_video`` consecutive gray frame pairs, evenly spaced in each video, short side ``size``, centre crop."""
    out = []
    for path in sorted(p for p in video_dir.iterdir() if p.suffix.lower() in VIDEO_EXTS):
        cap = cv2.VideoCapture(str(path))
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            g = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            h, w = g.shape
            s = size / min(h, w)
            g = cv2.resize(g, (max(size, round(w * s)), max(size, round(h * s))), interpolation=cv2.INTER_AREA)
            h, w = g.shape
            y, x = (h - size) // 2, (w - size) // 2
            frames.append(np.ascontiguousarray(g[y : y + size, x : x + size]))
        cap.release()
        if len(frames) < 2:
            continue
        for i in np.linspace(0, len(frames) - 2, per_video + 2)[1:-1].astype(int):
            out.append((frames[i], frames[i + 1], f"{path.name}#{i}"))
    return out


def storage_rows(flows: list[np.ndarray], bound: float) -> list[dict]:
    """Quantise + encode single-field stacks (L=1): bytes per pair, ms per pair, EPE added vs float flow."""
    rows = []
    q = [codec.quantize_flow(f, bound) for f in flows]
    c0 = time.process_time()
    for _ in range(20):
        for f in flows:
            codec.quantize_flow(f, bound)
    q_ms = 1000 * (time.process_time() - c0) / (20 * len(flows))
    epe_q = np.mean([F.endpoint_error(codec.dequantize_flow(qi, bound), f) for qi, f in zip(q, flows)])
    rows.append({"encoding": "float32 (none)", "bytes_per_pair": flows[0].nbytes, "ms_per_pair": 0.0, "epe_added_px": 0.0})
    rows.append({"encoding": "uint8 quantised", "bytes_per_pair": q[0].nbytes, "ms_per_pair": q_ms, "epe_added_px": epe_q})
    h, w = flows[0].shape[:2]
    for enc in ("png", "jpeg"):
        c0 = time.process_time()
        for _ in range(5):
            blobs = [codec.encode_flow_stack(qi[None], enc, quality=90) for qi in q]
        enc_ms = 1000 * (time.process_time() - c0) / (5 * len(q))
        epes = []
        for blob, f in zip(blobs, flows):
            planes = codec.decode_flow_stack(blob, enc, 1, h, w)
            back = codec.dequantize_flow(planes, bound).transpose(1, 2, 0)
            epes.append(F.endpoint_error(back, f))
        rows.append({
            "encoding": enc + (" q90" if enc == "jpeg" else ""),
            "bytes_per_pair": float(np.mean([len(b) for b in blobs])),
            "ms_per_pair": q_ms + enc_ms,
            "epe_added_px": float(np.mean(epes)),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=224, help="frame side in pixels (square)")
    ap.add_argument("--seeds", type=int, default=2, help="textures per shift")
    ap.add_argument("--tvl1-pairs", type=int, default=2, help="synthetic pairs given to TV-L1")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per fast algorithm")
    ap.add_argument("--videos", type=Path, default=None, help="folder of videos for the real-frame check")
    ap.add_argument("--real-per-video", type=int, default=4, help="frame pairs per video")
    ap.add_argument("--bound", type=float, default=codec.DEFAULT_BOUND)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)

    size = (args.size, args.size)
    pairs = [(*F.synthetic_shift_pair(s, size, seed), s) for seed in range(args.seeds) for s in SHIFTS]
    real = real_pairs(args.videos, args.size, args.real_per_video) if args.videos else []

    tv = F.make_flow_fn("tvl1")
    fns = {name: F.make_flow_fn(name) for name in FLOW_ALGORITHMS.names() if name != "tvl1"}
    tv_pairs = pairs[: args.tvl1_pairs]
    syn = interleaved_timing(fns, tv, pairs, tv_pairs, args.min_time)
    rt = interleaved_timing(fns, tv, real, real, args.min_time / 2) if real else None

    results: dict[str, dict] = {}
    for name in FLOW_ALGORITHMS.names():
        t = syn["ref" if name == "tvl1" else name]
        gts = [p[2] for p in (tv_pairs if name == "tvl1" else pairs)]
        epes = [F.endpoint_error(fl, gt, margin=MARGIN) for fl, gt in zip(t["flows"], gts)]
        r = {"s_per_pair": t["cpu"], "wall_s_per_pair": t["wall"], "pairs_per_s": 1.0 / t["cpu"],
             "x_tvl1": syn["ref"]["cpu"] / t["cpu"], "epe_mean": float(np.mean(epes)),
             "epe_max": float(max(epes)), "pairs": len(epes),
             "epe_on_tvl1_pairs": float(np.mean(epes[: len(tv_pairs)]))}
        if rt:
            tr = rt["ref" if name == "tvl1" else name]
            r["real_s_per_pair"] = tr["cpu"]
            r["real_x_tvl1"] = rt["ref"]["cpu"] / tr["cpu"]
            r["real_vs_tvl1"] = float(np.mean([
                F.endpoint_error(fl, ref, margin=MARGIN) for fl, ref in zip(tr["flows"], rt["ref"]["flows"])
            ]))
        results[name] = r

    dflt = F.DEFAULT_ALGORITHM
    storage = storage_rows(rt[dflt]["flows"] if real else syn[dflt]["flows"], args.bound)

    d = results[F.DEFAULT_ALGORITHM]
    target = {
        "algorithm": F.DEFAULT_ALGORITHM,
        "x_tvl1": d["x_tvl1"],
        "epe_mean": d["epe_mean"],
        "pass": bool(d["x_tvl1"] >= 100 and d["epe_mean"] <= 0.05),
    }

    print(f"flow benchmark: {args.size}x{args.size}, {len(pairs)} synthetic pairs (shifts {SHIFTS} x {args.seeds} seeds), "
          f"TV-L1 on {len(tv_pairs)}; OpenCV {cv2.__version__}, 1 thread; {platform.machine()}")
    hdr = "| algorithm | ms/pair (CPU) | pairs/s (1 core) | x TV-L1 | EPE mean (px) | EPE max (px) | pairs | ms/pair (wall) |"
    sep = "|---|---|---|---|---|---|---|---|"
    if real:
        hdr += " real: ms/pair (CPU) | real: x TV-L1 | real: EPE vs TV-L1 (px) |"
        sep += "---|---|---|"
    print(hdr)
    print(sep)
    for name, r in results.items():
        line = (f"| {name} | {1000 * r['s_per_pair']:.1f} | {r['pairs_per_s']:.1f} | {r['x_tvl1']:.0f}x | "
                f"{r['epe_mean']:.3f} | {r['epe_max']:.3f} | {r['pairs']} | {1000 * r['wall_s_per_pair']:.1f} |")
        if real:
            line += f" {1000 * r['real_s_per_pair']:.1f} | {r['real_x_tvl1']:.0f}x |"
            line += f" {r['real_vs_tvl1']:.3f} |" if name != "tvl1" else " (reference) |"
        print(line)
    if real:
        print(f"real frames: {len(real)} pairs from {args.videos} (TV-L1 {results['tvl1']['real_s_per_pair']:.2f} CPU s/pair on them)")
    print(f"\nstorage of {F.DEFAULT_ALGORITHM} flow ({'real' if real else 'synthetic'} pairs, bound {args.bound:g}, one field per stack):")
    print("| encoding | bytes/pair | ms/pair (quantise+encode) | EPE added (px) |")
    print("|---|---|---|---|")
    for s in storage:
        print(f"| {s['encoding']} | {s['bytes_per_pair']:,.0f} | {s['ms_per_pair']:.2f} | {s['epe_added_px']:.3f} |")
    print(f"\ntarget (default {F.DEFAULT_ALGORITHM} >= 100x TV-L1 at mean EPE <= 0.05 px, synthetic): "
          f"{target['x_tvl1']:.0f}x, {target['epe_mean']:.3f} px -> {'PASS' if target['pass'] else 'FAIL'}"
          + (f" (on the real frames: {d['real_x_tvl1']:.0f}x TV-L1)" if real else ""))

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "config": {"size": args.size, "shifts": SHIFTS, "seeds": args.seeds, "tvl1_pairs": len(tv_pairs),
                       "margin": MARGIN, "opencv": cv2.__version__, "machine": platform.machine(),
                       "real_pairs": [n for _, _, n in real]},
            "algorithms": results, "storage": storage, "target": target,
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
