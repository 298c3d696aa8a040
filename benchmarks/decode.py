"""Decode + sample: vidray's adaptive reader vs its two pure strategies, decord and the ffmpeg CLI.

For H.264 videos at 240p..1080p with keyframe intervals (GOP) 30 and 250, and for sparse and dense
sampling patterns, one run measures (median of repeats, one core each):

* ``auto``       vidray's reader (``vidray.io.video.decode_frames``, strategy chosen per target)
* ``sequential`` the same reader forced to decode through
* ``seek``       the same reader forced to seek to the keyframe before every target
* ``decord``     plain ``decord.VideoReader.get_batch`` of the same indices (chunks of 32)
* ``ffmpeg``     ``ffmpeg -threads 1 -i f -f null -``: a full decode, no conversion (the floor for
                 dense sampling; skipped when the CLI is not installed)

and reports ``auto / min(sequential, seek)`` (target <= 1.1) and ``decord / auto``.

    python benchmarks/decode.py [--seconds 10] [--repeats 3] [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidray.config import SamplingConfig  # noqa: E402
from vidray.io.video import decode_frames, output_size, probe  # noqa: E402
from vidray.sampling import sample_frames  # noqa: E402

RESOLUTIONS = {"240p": (320, 240), "360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}
PATTERNS = {
    "fps1": SamplingConfig(mode="fps", fps=1.0),
    "tsn8": SamplingConfig(mode="segments", num_segments=8),
    "clip16": SamplingConfig(mode="clip", clip_len=16, num_clips=1),
    "all": SamplingConfig(mode="all"),
}


def make_video(path: Path, size: tuple[int, int], gop: int, seconds: float, fps: int = 30) -> None:
    """A moving-texture H.264 clip (PyAV, libx264 veryfast) with keyframes every ``gop`` frames."""
    import av
    import cv2

    from vidray.synth import periodic_texture

    w, h = size
    rng = np.random.default_rng(0)
    tex = cv2.resize(periodic_texture(rng, 256, 256), (w, h), interpolation=cv2.INTER_LINEAR)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23",
                                                       "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for t in range(int(seconds * fps)):
            m = np.float32([[1, 0, 2.0 * t], [0, 1, 0.7 * t]])
            img = cv2.warpAffine(tex, m, (w, h), borderMode=cv2.BORDER_WRAP)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def decord_batch(path: str, idx: np.ndarray, size: tuple[int, int]) -> None:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1, width=size[0], height=size[1])
    for i in range(0, len(idx), 32):
        vr.get_batch(idx[i : i + 32].tolist()).asnumpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each generated video")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="240p and 720p only, 1 repeat")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    resolutions = {k: RESOLUTIONS[k] for k in (("240p", "720p") if a.quick else RESOLUTIONS)}
    repeats = 1 if a.quick else a.repeats
    has_ffmpeg = shutil.which("ffmpeg") is not None
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for res, size in resolutions.items():
            for gop in (30, 250):
                path = Path(tmp) / f"{res}_gop{gop}.mp4"
                make_video(path, size, gop, a.seconds)
                info = probe(str(path))
                out_size = output_size(*size, short_side=256)
                ff = None
                if has_ffmpeg:
                    ff = timed(lambda: subprocess.run(
                        ["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-f", "null", "-"],
                        check=True), repeats)
                for pname, pcfg in PATTERNS.items():
                    idx = np.unique(sample_frames(info.timestamps, pcfg, "bench"))
                    t = {s: timed(lambda s=s: decode_frames(str(path), idx, size=out_size, info=info, strategy=s),
                                  repeats) for s in ("auto", "sequential", "seek")}
                    t["decord"] = timed(lambda: decord_batch(str(path), idx, out_size), repeats)
                    best = min(t["sequential"], t["seek"])
                    row = {"video": f"{res} gop{gop}", "pattern": pname, "frames": int(len(idx)),
                           **{k: round(v, 4) for k, v in t.items()}, "ffmpeg_full": round(ff, 4) if ff else None,
                           "auto_vs_best": round(t["auto"] / best, 3), "decord_vs_auto": round(t["decord"] / t["auto"], 2)}
                    results.append(row)
                    print(f"{row['video']:>12} {pname:>6} n={len(idx):4d}  auto {t['auto']*1e3:8.1f} ms  "
                          f"seq {t['sequential']*1e3:8.1f}  seek {t['seek']*1e3:8.1f}  decord {t['decord']*1e3:8.1f}"
                          f"  ffmpeg(full) {ff*1e3 if ff else float('nan'):8.1f}  auto/best {row['auto_vs_best']:.2f}"
                          f"  decord/auto {row['decord_vs_auto']:.2f}", flush=True)
    worst = max(r["auto_vs_best"] for r in results)
    print(f"\nworst auto / min(sequential, seek): {worst:.2f} (target <= 1.10) over {len(results)} cases")
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "worst_auto_vs_best": worst}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
