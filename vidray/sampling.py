"""Ingest-time frame sampling: which source frames of a video are stored.

Every policy is a pure function of the video's frame timestamps (seconds, presentation order) and a
seed, so it is tested without decoding anything and behaves the same on every worker. Working from
timestamps rather than frame counts keeps fps-based sampling right on variable-frame-rate files.

Policies (names as users know them; the table :data:`vidray.registry.SAMPLING_MODES`, chosen by
``sampling.mode``):

* ``fps``       N frames per second of the first ``max_seconds`` (Sports-1M: 1 fps of the first 300 s;
                with ``loop`` a shorter video repeats from its start until ``fps * max_seconds`` frames).
* ``every_s``   one frame every ``interval_s`` seconds (FCVID: 3 s).
* ``segments``  TSN: ``num_segments`` equal segments, one snippet each (centre, or seeded random offset).
* ``clip``      ``num_clips`` clips of ``clip_len`` frames ``frame_interval`` apart, starts evenly spread.
* ``all``       every frame.

Each returns source frame indices (``np.int64``, sorted unless ``loop`` repeats) into the array of
timestamps. :func:`flow_indices` gives the extra frames each stored frame's flow stack needs.

``keyframe_tolerance`` (opt-in, default 0 = exact frames): a sampled frame within ``keyframe_tolerance``
x the sampling interval of a keyframe is replaced by that keyframe (:func:`snap_to_keyframes`), which
decodes on its own; the frames actually taken are what ``frame_index`` / ``frame_time_s`` record.
"""

from __future__ import annotations

import hashlib

import numpy as np

from vidray.config import SamplingConfig
from vidray.registry import SAMPLING_MODES


def _nearest_at_or_before(timestamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the last frame whose timestamp is <= each time (the frame on screen at that time)."""
    idx = np.searchsorted(timestamps, times + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(timestamps) - 1)


def sample_fps(
    timestamps: np.ndarray, fps: float, max_seconds: float | None = None, loop: bool = False
) -> np.ndarray:
    """Frames at ``t = 0, 1/fps, 2/fps, ...`` up to ``max_seconds`` (or the video's end).

    Args:
        timestamps: ``(N,)`` presentation time of each frame in seconds, ascending.
        fps: sampled frames per second.
        max_seconds: only this many seconds from the start; with ``loop`` also the target length.
        loop: when the video is shorter than ``max_seconds``, continue from the start so that
            ``ceil(fps * max_seconds)`` frames are returned (Sports-1M recipe).
    """
    n = len(timestamps)
    if n == 0:
        return np.zeros(0, np.int64)
    t0 = float(timestamps[0])
    # A frame is on screen until the next one: the video lasts one frame duration past its last stamp.
    frame_dur = float(np.median(np.diff(timestamps))) if n > 1 else 1.0 / max(fps, 1e-9)
    duration = float(timestamps[-1]) - t0 + frame_dur
    horizon = duration if max_seconds is None else min(duration, max_seconds)
    count = max(1, int(np.ceil(horizon * fps - 1e-9)))
    times = t0 + np.arange(count) / fps
    idx = _nearest_at_or_before(timestamps, times)
    if loop and max_seconds is not None:
        target = int(np.ceil(max_seconds * fps - 1e-9))
        if target > len(idx):
            idx = np.resize(idx, target)  # np.resize repeats the array from its start
    return idx.astype(np.int64)


def sample_every_s(timestamps: np.ndarray, interval_s: float, max_seconds: float | None = None) -> np.ndarray:
    """One frame every ``interval_s`` seconds (FCVID: 3 s), starting at the first frame."""
    return sample_fps(timestamps, 1.0 / interval_s, max_seconds=max_seconds, loop=False)


def video_seed(video_id: str, seed: int) -> int:
    """A stable per-video seed (independent of worker, row order and Python's hash salt)."""
    h = hashlib.blake2b(f"{seed}:{video_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little")


def sample_segments(
    num_frames: int, num_segments: int, random_offset: bool = False, rng: np.random.Generator | None = None
) -> np.ndarray:
    """TSN segment sampling: split ``[0, num_frames)`` into ``num_segments`` equal parts, one index each.

    Centre of each segment (TSN's test mode) or a uniformly random index inside it (training mode,
    ``rng`` required). Videos with fewer frames than segments repeat frames (as MMAction2 does).
    """
    if num_frames <= 0:
        return np.zeros(0, np.int64)
    edges = np.linspace(0, num_frames, num_segments + 1)
    if random_offset:
        if rng is None:
            raise ValueError("random_offset needs an rng")
        pos = edges[:-1] + rng.random(num_segments) * (edges[1:] - edges[:-1])
    else:
        pos = (edges[:-1] + edges[1:]) / 2
    return np.clip(np.floor(pos).astype(np.int64), 0, num_frames - 1)


def sample_clips(num_frames: int, clip_len: int, frame_interval: int = 1, num_clips: int = 1) -> np.ndarray:
    """``num_clips`` clips of ``clip_len`` frames ``frame_interval`` apart, starts evenly spread.

    A clip spans ``(clip_len - 1) * frame_interval + 1`` source frames. When the video is shorter than
    one clip, indices are clamped to the last frame (the clip repeats its last frame). Returns the
    concatenated indices of all clips, ``(num_clips * clip_len,)``, clip by clip.
    """
    if num_frames <= 0:
        return np.zeros(0, np.int64)
    span = (clip_len - 1) * frame_interval + 1
    max_start = max(num_frames - span, 0)
    if num_clips == 1:
        starts = np.array([max_start // 2])
    else:
        starts = np.round(np.linspace(0, max_start, num_clips)).astype(np.int64)
    idx = starts[:, None] + np.arange(clip_len)[None, :] * frame_interval
    return np.clip(idx, 0, num_frames - 1).reshape(-1).astype(np.int64)


@SAMPLING_MODES.register("fps")
def _mode_fps(ts: np.ndarray, n: int, cfg: SamplingConfig, video_id: str) -> np.ndarray:
    """sampling.fps frames per second of the first max_seconds (loop: repeat short videos)."""
    return sample_fps(ts, cfg.fps, cfg.max_seconds, cfg.loop)


@SAMPLING_MODES.register("every_s")
def _mode_every_s(ts: np.ndarray, n: int, cfg: SamplingConfig, video_id: str) -> np.ndarray:
    """one frame every sampling.interval_s seconds (FCVID: 3 s)."""
    return sample_every_s(ts, cfg.interval_s, cfg.max_seconds)


@SAMPLING_MODES.register("segments")
def _mode_segments(ts: np.ndarray, n: int, cfg: SamplingConfig, video_id: str) -> np.ndarray:
    """TSN: sampling.num_segments equal segments, one frame each (centre or seeded random offset)."""
    rng = np.random.default_rng(video_seed(video_id, cfg.seed)) if cfg.random_offset else None
    return sample_segments(n, cfg.num_segments, cfg.random_offset, rng)


@SAMPLING_MODES.register("clip")
def _mode_clip(ts: np.ndarray, n: int, cfg: SamplingConfig, video_id: str) -> np.ndarray:
    """num_clips clips of clip_len frames frame_interval apart (MMAction2's clip_len x frame_interval x num_clips)."""
    return sample_clips(n, cfg.clip_len, cfg.frame_interval, cfg.num_clips)


@SAMPLING_MODES.register("all")
def _mode_all(ts: np.ndarray, n: int, cfg: SamplingConfig, video_id: str) -> np.ndarray:
    """every frame (at most sampling.max_frames)."""
    return np.arange(n, dtype=np.int64)


def sampling_interval(timestamps: np.ndarray, n: int, cfg: SamplingConfig) -> float:
    """Source frames between two samples of ``cfg``'s policy (what ``keyframe_tolerance`` is a fraction
    of): ``src_fps / fps`` (``fps``), ``interval_s * src_fps`` (``every_s``), ``n / num_segments``
    (``segments``), ``frame_interval`` (``clip``), 1 (``all``); 0 for a mode it does not know."""
    ts = np.asarray(timestamps, dtype=np.float64)
    frame_dur = float(np.median(np.diff(ts))) if len(ts) > 1 else 0.0
    if cfg.mode == "fps":
        return 1.0 / (cfg.fps * frame_dur) if frame_dur > 0 else 0.0
    if cfg.mode == "every_s":
        return cfg.interval_s / frame_dur if frame_dur > 0 else 0.0
    if cfg.mode == "segments":
        return n / cfg.num_segments
    if cfg.mode == "clip":
        return float(cfg.frame_interval)
    if cfg.mode == "all":
        return 1.0
    return 0.0


def snap_to_keyframes(indices: np.ndarray, keyframes: np.ndarray, max_shift: float) -> np.ndarray:
    """Replace each index by its nearest keyframe when that is at most ``max_shift`` frames away.

    A keyframe replaces at most one distinct index (the nearest; ties: the earlier), so the number of
    distinct samples never changes and their order is kept; an index that is a keyframe keeps it.
    Repeated indices (a looped ``fps`` sampling) move together. Pure; returns a new ``np.int64`` array.
    """
    idx = np.asarray(indices, dtype=np.int64)
    keys = np.asarray(keyframes, dtype=np.int64)
    if idx.size == 0 or keys.size == 0 or max_shift < 1:
        return idx.copy()
    uniq, inv = np.unique(idx, return_inverse=True)
    pos = np.searchsorted(keys, uniq)
    lo = keys[np.clip(pos - 1, 0, keys.size - 1)]
    hi = keys[np.clip(pos, 0, keys.size - 1)]
    near = np.where(np.abs(uniq - lo) <= np.abs(hi - uniq), lo, hi)
    dist = np.abs(near - uniq)
    out = uniq.copy()
    claimed: dict[int, int] = {}  # keyframe -> position in uniq of the index that takes it
    for j in np.argsort(dist, kind="stable").tolist():  # nearest first: they win their keyframe
        if dist[j] > max_shift:
            break
        k = int(near[j])
        if k not in claimed:
            claimed[k] = j
            out[j] = k
    return out[inv]


def sample_frames(timestamps: np.ndarray, cfg: SamplingConfig, video_id: str = "",
                  keyframes: np.ndarray | None = None) -> np.ndarray:
    """Apply the policy of ``cfg`` to one video. Returns source frame indices (see module doc).

    ``max_seconds`` cuts the frames the count-based modes (``segments``, ``clip``, ``all``) see; the
    time-based modes apply it themselves. ``max_frames`` caps the result. With
    ``cfg.keyframe_tolerance > 0`` and the video's ``keyframes`` (``VideoInfo.keyframes``), samples
    near a keyframe are moved onto it (:func:`snap_to_keyframes`).
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    n = len(ts)
    if cfg.max_seconds is not None and cfg.mode in ("segments", "clip", "all") and n:
        n = int(np.searchsorted(ts, ts[0] + cfg.max_seconds, side="left")) or 1
    idx = SAMPLING_MODES.get(cfg.mode)(ts, n, cfg, video_id)
    if cfg.max_frames is not None:
        idx = idx[: cfg.max_frames]
    if cfg.keyframe_tolerance > 0 and keyframes is not None:
        idx = snap_to_keyframes(idx, keyframes, cfg.keyframe_tolerance * sampling_interval(ts, n, cfg))
    return idx


def flow_step(src_fps: float, flow_fps: float | None) -> int:
    """Source frames between the two frames of a flow pair (``round(src_fps / flow_fps)``, >= 1)."""
    if flow_fps is None or src_fps <= 0:
        return 1
    return max(1, int(round(src_fps / flow_fps)))


def flow_indices(indices: np.ndarray, num_frames: int, stack_length: int, step: int) -> np.ndarray:
    """Frames that each stored frame's flow stack spans: ``(len(indices), L + 1)``.

    Row ``j`` is ``i, i+step, ..., i+L*step`` for stored frame ``i = indices[j]``; a stack that would
    run past the last frame is shifted back so it ends on the last frame (frame ``i`` then is not its
    first element -- the stack still describes the motion around ``i``). Videos shorter than the
    stack repeat their last frame (zero flow at the end).
    """
    offsets = np.arange(stack_length + 1, dtype=np.int64) * step
    starts = np.minimum(np.asarray(indices, np.int64), max(num_frames - 1 - offsets[-1], 0))
    return np.clip(starts[:, None] + offsets[None, :], 0, num_frames - 1)
