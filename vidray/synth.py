"""Synthetic video corpora whose classes differ by motion: real H.264 files plus a manifest.

Two kinds:

* ``motion`` (corpus A): every video is a random periodic texture with random shapes drawn on it;
  the class is *only* the motion: translation ``right | left | up | down`` (sub-pixel speed, the
  content wraps around so no border gives it away) or rotation ``rotate_cw | rotate_ccw``. Appearance
  is drawn from the same distribution for every class, so a single frame carries no class
  information: an appearance-only model is at chance by construction.
* ``appearance_motion`` (corpus B): class = ``shape x direction``; a coloured ``circle | square |
  triangle`` moves over a random texture in one of four directions. Appearance (the shape) and
  motion are both needed.

Everything is seeded: the same ``seed`` gives byte-identical files (single-threaded x264).

>>> make_corpus("demo", num_videos=60, kind="motion", seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MOTIONS = ("right", "left", "up", "down", "rotate_cw", "rotate_ccw")
DIRECTIONS = ("right", "left", "up", "down")
SHAPES = ("circle", "square", "triangle")
_DIR_VEC = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


@dataclass(frozen=True)
class SynthSpec:
    """One synthetic corpus.

    Attributes:
        kind: ``motion`` or ``appearance_motion``.
        num_videos: total videos, spread evenly over classes.
        width, height: frame size in pixels (even, for yuv420p).
        frames: frames per video (T).
        fps: frame rate written to the container.
        seed: master seed.
        speed: ``(min, max)`` translation speed in pixels per frame (rotation: degrees per frame x 2).
        splits: fractions for train / val / test, per class.
    """

    kind: str = "motion"
    num_videos: int = 120
    width: int = 64
    height: int = 64
    frames: int = 24
    fps: int = 12
    seed: int = 0
    speed: tuple[float, float] = (1.0, 2.0)
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15)

    def classes(self) -> list[str]:
        if self.kind == "motion":
            return list(MOTIONS)
        if self.kind == "appearance_motion":
            return [f"{s}_{d}" for s in SHAPES for d in DIRECTIONS]
        raise ValueError(f"unknown synth kind {self.kind!r} (motion | appearance_motion)")


def periodic_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Seamlessly tileable RGB texture ``(h, w, 3)`` uint8: band-limited noise (FFT-filtered, so it is
    periodic) with structure at several scales, which keeps optical flow well-posed."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    out = np.empty((h, w, 3), np.float32)
    for c in range(3):
        spec = np.fft.fft2(rng.standard_normal((h, w)))
        falloff = 1.0 / np.maximum(radius, 1.0 / max(h, w)) ** rng.uniform(1.0, 1.6)
        img = np.real(np.fft.ifft2(spec * falloff * (radius < 0.35)))
        img = (img - img.mean()) / (img.std() + 1e-6)
        out[..., c] = 128 + 45 * img
    return np.clip(out, 0, 255).astype(np.uint8)


def _draw_shape(img: np.ndarray, shape: str, cx: float, cy: float, r: float, color) -> None:
    """Draw a filled shape centred at (cx, cy) with radius r, wrapping around the borders."""
    h, w = img.shape[:2]
    sh = 4  # fixed-point bits for sub-pixel positions
    for dx in (-w, 0, w):
        for dy in (-h, 0, h):
            x, y = cx + dx, cy + dy
            if x + r < 0 or x - r > w or y + r < 0 or y - r > h:
                continue
            if shape == "circle":
                cv2.circle(img, (int(x * 16), int(y * 16)), int(r * 16), color, -1, cv2.LINE_AA, sh)
            elif shape == "square":
                pts = np.array([[x - r, y - r], [x + r, y - r], [x + r, y + r], [x - r, y + r]])
                cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], color, cv2.LINE_AA, sh)
            elif shape == "triangle":
                pts = np.array([[x, y - r], [x + r * 0.95, y + r * 0.8], [x - r * 0.95, y + r * 0.8]])
                cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], color, cv2.LINE_AA, sh)
            else:
                raise ValueError(f"unknown shape {shape!r}")


def _translate_wrap(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def render_video(spec: SynthSpec, label: str, rng: np.random.Generator) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 RGB of one video of class ``label``."""
    h, w, t_len = spec.height, spec.width, spec.frames
    speed = rng.uniform(*spec.speed)
    frames = np.empty((t_len, h, w, 3), np.uint8)
    if spec.kind == "motion":
        canvas = periodic_texture(rng, h, w)
        for _ in range(int(rng.integers(2, 5))):  # random shapes, same distribution for every class
            _draw_shape(
                canvas, SHAPES[int(rng.integers(len(SHAPES)))], rng.uniform(0, w), rng.uniform(0, h),
                rng.uniform(0.08, 0.2) * min(h, w), tuple(int(c) for c in rng.integers(0, 256, 3)),
            )
        if label.startswith("rotate"):
            sign = -1.0 if label == "rotate_cw" else 1.0  # OpenCV angles are counter-clockwise
            omega = sign * speed * 2.0  # degrees per frame
            start = rng.uniform(0, 360)
            big = np.tile(canvas, (3, 3, 1))  # rotate a tiled canvas so corners stay textured
            for t in range(t_len):
                m = cv2.getRotationMatrix2D((1.5 * w, 1.5 * h), start + omega * t, 1.0)
                frames[t] = cv2.warpAffine(big, m, (3 * w, 3 * h), flags=cv2.INTER_LINEAR)[h : 2 * h, w : 2 * w]
        else:
            vx, vy = _DIR_VEC[label]
            ox, oy = rng.uniform(0, w), rng.uniform(0, h)
            for t in range(t_len):
                frames[t] = _translate_wrap(canvas, ox + vx * speed * t, oy + vy * speed * t)
    else:
        shape, direction = label.split("_", 1)
        canvas = periodic_texture(rng, h, w)
        canvas = (canvas.astype(np.float32) * 0.6 + 50).astype(np.uint8)  # calmer background
        vx, vy = _DIR_VEC[direction]
        bx, by = rng.uniform(0, w), rng.uniform(0, h)  # background drifts randomly (camera motion)
        bvx, bvy = rng.uniform(-0.3, 0.3, 2)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.16, 0.24) * min(h, w)
        color = tuple(int(c) for c in rng.integers(150, 256, 3))
        for t in range(t_len):
            f = _translate_wrap(canvas, bx + bvx * t, by + bvy * t)
            _draw_shape(f, shape, (cx + vx * speed * t) % w, (cy + vy * speed * t) % h, r, color)
            frames[t] = f
    return frames


def write_video(path: str | Path, frames: np.ndarray, fps: int = 12, codec: str = "libx264", gop: int | None = None,
                crf: int = 18) -> None:
    """Encode ``frames`` ``(T, H, W, 3)`` uint8 RGB to ``path`` (H.264 in MP4 by default, yuv420p,
    single-threaded so output is deterministic). ``gop`` sets the keyframe interval in frames."""
    import av

    t_len, h, w, _ = frames.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        options = {"crf": str(crf), "preset": "veryfast"} if codec == "libx264" else {}
        if codec == "libx264":
            options["x264-params"] = "threads=1:sliced-threads=0"
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1
        if gop is not None:
            stream.codec_context.gop_size = gop
        if codec != "libx264":
            stream.codec_context.bit_rate = 2_000_000
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_footage(path: str | Path, width: int, height: int, frames: int, *, fps: int = 30, gop: int = 250,
                  seed: int = 0, preset: str = "veryfast", bframes: int | None = None, open_gop: bool = False,
                  noise: float = 4.5) -> None:
    """Camera-like H.264 test footage (for reader tests and ingest benchmarks; no classes).

    A textured scene panned by a camera with a random-walk velocity and a slow zoom, 3-6 independently
    moving textured sprites, lighting drift and sensor noise, encoded with x264 ``preset`` at crf 23
    with a keyframe exactly every ``gop`` frames (no scene-cut keyframes). x264's defaults otherwise:
    B-frames with a B-pyramid (``bframes`` overrides the count; 0 = none), closed GOPs unless
    ``open_gop``. Deterministic for a ``seed`` (single-threaded x264)."""
    import av

    rng = np.random.default_rng(seed)
    w, h = int(width), int(height)
    big_h, big_w = 2 * h, 2 * w
    scene = cv2.resize(periodic_texture(rng, big_h // 2, big_w // 2), (big_w, big_h), interpolation=cv2.INTER_CUBIC)
    scene = cv2.addWeighted(scene, 0.7, periodic_texture(rng, big_h, big_w), 0.3, 0)
    for _ in range(12):
        color = tuple(int(x) for x in rng.integers(0, 256, 3))
        x, y, r = int(rng.uniform(0, big_w)), int(rng.uniform(0, big_h)), max(2, int(rng.uniform(0.03, 0.12) * big_h))
        if rng.random() < 0.5:
            cv2.circle(scene, (x, y), r, color, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(scene, (x - r, y - r // 2), (x + r, y + r // 2), color, -1, cv2.LINE_AA)
    sprites = []
    for _ in range(int(rng.integers(3, 7))):
        s = max(4, int(rng.uniform(0.12, 0.3) * h))
        mask = np.zeros((s, s), np.uint8)
        cv2.circle(mask, (s // 2, s // 2), s // 2 - 1, 255, -1, cv2.LINE_AA)
        sprites.append({"tex": periodic_texture(rng, s, s).astype(np.float32),
                        "mask": mask[..., None].astype(np.float32) / 255.0,
                        "p": rng.uniform([0, 0], [w - s, h - s]), "v": rng.uniform(-3, 3, 2), "s": s})
    cam, vel = np.array([rng.uniform(0, big_w), rng.uniform(0, big_h)]), rng.uniform(-2, 2, 2)
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:threads=1:sliced-threads=0"
    if bframes is not None:
        params += f":bframes={bframes}"
    if open_gop:
        params += ":open-gop=1"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": preset, "crf": "23", "x264-params": params})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1
        for t in range(int(frames)):
            vel = np.clip(vel + rng.normal(0, 0.15, 2), -4, 4)
            cam = cam + vel
            zoom = 1.0 + 0.05 * np.sin(2 * np.pi * t / (fps * 20))
            img = cv2.warpAffine(scene, np.float32([[zoom, 0, -cam[0]], [0, zoom, -cam[1]]]), (w, h),
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
            for sp in sprites:
                sp["v"] = np.clip(sp["v"] + rng.normal(0, 0.2, 2), -5, 5)
                sp["p"] = sp["p"] + sp["v"]
                for k, lim in ((0, w - sp["s"]), (1, h - sp["s"])):
                    if sp["p"][k] < 0 or sp["p"][k] > lim:
                        sp["v"][k] *= -1
                        sp["p"][k] = np.clip(sp["p"][k], 0, lim)
                x, y, s = int(sp["p"][0]), int(sp["p"][1]), sp["s"]
                roi = img[y:y + s, x:x + s].astype(np.float32)
                img[y:y + s, x:x + s] = (roi * (1 - sp["mask"]) + sp["tex"] * sp["mask"]).astype(np.uint8)
            gain = 1.0 + 0.1 * np.sin(2 * np.pi * t / (fps * 13))
            img = cv2.convertScaleAbs(img.astype(np.float32) * gain
                                      + rng.normal(0, noise, (h, w, 1)).astype(np.float32))
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def make_corpus(out: str | Path, spec: SynthSpec | None = None, **kwargs) -> Path:
    """Write ``out/videos/<class>/<video_id>.mp4`` and ``out/manifest.csv`` (``path,label,split,video_id``,
    paths relative to ``out``). Keyword arguments override :class:`SynthSpec` fields. Returns the
    manifest path."""
    spec = spec or SynthSpec(**kwargs)
    if spec.width % 2 or spec.height % 2:
        raise ValueError(f"--size must be even for H.264 yuv420p, got {spec.width}x{spec.height}")
    classes = spec.classes()
    out = Path(out)
    rows = []
    per_class = [spec.num_videos // len(classes) + (1 if i < spec.num_videos % len(classes) else 0)
                 for i in range(len(classes))]
    for ci, (label, n) in enumerate(zip(classes, per_class)):
        n_train = int(math.floor(n * spec.splits[0] + 1e-9))
        n_val = int(math.floor(n * spec.splits[1] + 1e-9))
        for j in range(n):
            rng = np.random.default_rng([spec.seed, ci, j])
            video_id = f"{label}_{j:04d}"
            rel = Path("videos") / label / f"{video_id}.mp4"
            write_video(out / rel, render_video(spec, label, rng), fps=spec.fps)
            split = "train" if j < n_train else ("val" if j < n_train + n_val else "test")
            rows.append({"path": rel.as_posix(), "label": label, "split": split, "video_id": video_id})
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "split", "video_id"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest
