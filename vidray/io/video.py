"""Video probing and frame decoding (PyAV by default, decord as an alternative).

The reader adapts to the file. :func:`probe` demuxes the container once *without decoding* (a few ms
for minutes of video) to learn every frame's presentation timestamp and where the keyframes are.
The default PyAV reader (``execution.seek: auto``) then decodes only what the wanted frames need
(:func:`_iter_pyav_skip`, the *skip reader*):

* packets of GOPs that hold no wanted frame are demuxed (or, for a gap of more than
  :data:`SKIP_SEEK_FRAMES` frames, seeked over) but never decoded;
* inside a GOP that holds wanted frames, packets go to the decoder from the keyframe up to the last
  wanted packet in decode order, with FFmpeg's ``skip_frame = NONREF`` for every packet that is not a
  wanted frame: non-reference pictures (most B-frames) are dropped without being decoded;
* the decoder is then drained and flushed, so nothing after the last wanted frame is decoded.

Frames are identified by their timestamps, never by counting outputs (skipped pictures produce no
output). Where timestamps cannot identify frames (AVI with packed B-frames, containers outside
:data:`PTS_FORMATS`, missing or repeated pts) the *counting reader* (:func:`_iter_pyav_counting`)
is used: it walks the requested frames in order and, for each, chooses the cheaper of

* decoding forward from where the decoder already is (``sequential``), or
* seeking to the last keyframe at or before the frame and decoding from there (``seek``),

so dense sampling decodes the file once, sparse sampling on short GOPs seeks, and sparse sampling on
long GOPs decodes through. ``execution.seek: sequential | seek`` force the counting reader with that
choice for every frame (for comparisons; the frames are the same). Both readers give identical
frames (``tests/test_video.py`` compares them with ``np.array_equal`` on real and generated files).
Frames decoded only to reach a target are never converted to RGB.

Frame ``k`` always means the k-th frame in presentation order (sorted timestamps), on every backend.
Rotation metadata is applied, so ``width``/``height`` and decoded arrays are in display orientation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator

import numpy as np

from vidray.io.store import is_uri
from vidray.registry import DECODERS

SEEK_COST_FRAMES = 8
"""A seek (container seek + decoder flush) costs about as much as decoding this many frames."""

SKIP_SEEK_FRAMES = 64
"""The skip reader seeks over a gap of more than this many frames instead of demuxing through it
(demuxing costs ~4 µs a packet here, a seek ~25 µs; seeking also spares reading a remote file's bytes)."""

PTS_FORMATS = ("mov", "mp4", "matroska", "webm")
"""Containers (FFmpeg demuxer names) whose packet timestamps identify frames: the skip reader is used
for them when every packet has a unique pts."""


class VideoDecodeError(RuntimeError):
    """A video could not be read. ``str()`` names the file and the reason."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class VideoInfo:
    """What the container says about a video's first video stream.

    Attributes:
        path: the source, as given.
        codec: decoder name (e.g. ``h264``, ``mpeg4``).
        width, height: display size in pixels (after rotation).
        rotation: degrees the stored frames are rotated for display (0, 90, 180, 270).
        fps: average frame rate (frames per second).
        num_frames: frames in the stream (packets demuxed).
        duration_s: seconds from the first frame to the end of the last.
        timestamps: ``(num_frames,)`` float64 seconds of each frame, presentation order, first = 0.
        pts: ``(num_frames,)`` int64 stream timestamps (``time_base`` units), presentation order.
        keyframes: sorted indices (into presentation order) of keyframes.
        pts_identify: whether decoded frames can be identified by pts (a container in
            :data:`PTS_FORMATS`, every packet with its own unique pts): the skip reader needs it.
    """

    path: str
    codec: str
    width: int
    height: int
    rotation: int
    fps: float
    num_frames: int
    duration_s: float
    timestamps: np.ndarray = field(repr=False)
    pts: np.ndarray = field(repr=False)
    keyframes: np.ndarray = field(repr=False)
    time_base: Fraction = Fraction(1, 1)
    pts_identify: bool = False

    @property
    def mean_gop(self) -> float:
        """Mean frames between keyframes (the GOP length that decides seek vs sequential)."""
        return self.num_frames / max(len(self.keyframes), 1)


def _open_container(path: str):
    import av

    try:
        if is_uri(path):
            import pyarrow.fs as pafs

            fs, p = pafs.FileSystem.from_uri(path)
            return av.open(fs.open_input_file(p), mode="r")
        local = path[len("file://") :] if path.startswith("file://") else path
        if not os.path.exists(local):
            raise VideoDecodeError(path, "file not found")
        if os.path.isdir(local):
            raise VideoDecodeError(path, "is a directory, not a video file")
        if os.path.getsize(local) == 0:
            raise VideoDecodeError(path, "empty file (0 bytes)")
        return av.open(local, mode="r")
    except VideoDecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoDecodeError(path, f"cannot open container: {type(e).__name__}: {e}") from e


def _video_stream(container, path: str):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    # Parallelise across videos, not inside a decoder: two single-threaded decoders in two processes
    # measured ~1.9x one, threads inside one decoder 1.0-1.3x, and PyAV's own threads made
    # to_ndarray ~3x slower (measured on a 2-core machine; rerun benchmarks/decode.py to check yours).
    stream.thread_type = "NONE"
    stream.codec_context.thread_count = 1
    return stream


def _first_frame_rotation(container, stream, path: str) -> int:
    """Display rotation (degrees counter-clockwise, 0/90/180/270) read off the first decoded frame.

    PyAV exposes the display matrix on frames (``VideoFrame.rotation``), not on streams; decoding one
    frame also proves the stream is decodable at all.
    """
    import av

    try:
        container.seek(0, stream=stream, backward=True, any_frame=False)
        frame = next(container.decode(stream), None)
    except av.FFmpegError as e:
        raise VideoDecodeError(path, f"first frame does not decode: {type(e).__name__}: {e}") from e
    if frame is None:
        raise VideoDecodeError(path, "no decodable frame in the video stream")
    return int(getattr(frame, "rotation", 0) or 0) % 360


def probe(path: str) -> VideoInfo:
    """Demux ``path`` (no decoding) and return its :class:`VideoInfo`.

    Raises :class:`VideoDecodeError` for missing/empty files, unreadable containers, files without a
    video stream, and streams with no frames.
    """
    import av

    container = _open_container(path)
    try:
        stream = _video_stream(container, path)
        pts_list: list[int] = []
        key_list: list[bool] = []
        all_pts = True
        try:
            for i, pkt in enumerate(container.demux(stream)):
                if pkt.size == 0:
                    continue
                ts = pkt.pts if pkt.pts is not None else pkt.dts
                all_pts = all_pts and pkt.pts is not None
                if ts is None:
                    ts = len(pts_list)  # no timestamps at all: use the packet order
                pts_list.append(int(ts))
                key_list.append(bool(pkt.is_keyframe))
        except av.FFmpegError as e:
            if not pts_list:
                raise VideoDecodeError(path, f"cannot demux: {type(e).__name__}: {e}") from e
            # a truncated tail: keep the packets read so far; decoding will tell how far it gets
        if not pts_list:
            raise VideoDecodeError(path, "video stream has no frames")
        declared = int(stream.frames or 0)  # from the container header (MP4 sample table, AVI header)
        if declared > 0 and len(pts_list) < declared * 0.98 - 1:
            raise VideoDecodeError(
                path, f"truncated: the header declares {declared} frames, only {len(pts_list)} are present"
            )
        pts = np.asarray(pts_list, dtype=np.int64)
        keys = np.asarray(key_list, dtype=bool)
        order = np.argsort(pts, kind="stable")
        pts, keys = pts[order], keys[order]
        if not keys.any():
            keys[0] = True
        tb = stream.time_base or Fraction(1, 1)
        times = (pts - pts[0]).astype(np.float64) * float(tb)
        rate = stream.average_rate or stream.guessed_rate
        if rate:
            fps = float(rate)
        elif len(times) > 1 and times[-1] > 0:
            fps = (len(times) - 1) / times[-1]
        else:
            fps = 0.0
        frame_dur = float(np.median(np.diff(times))) if len(times) > 1 else (1.0 / fps if fps else 0.0)
        rotation = _first_frame_rotation(container, stream, path)
        w, h = stream.codec_context.width, stream.codec_context.height
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(
            path=path,
            codec=stream.codec_context.name,
            width=int(w),
            height=int(h),
            rotation=rotation,
            fps=fps,
            num_frames=len(pts),
            duration_s=float(times[-1] + frame_dur),
            timestamps=times,
            pts=pts,
            keyframes=np.flatnonzero(keys),
            time_base=Fraction(tb),
            pts_identify=bool(all_pts and bool(np.all(np.diff(pts) > 0))
                              and any(f in PTS_FORMATS for f in container.format.name.split(","))),
        )
    finally:
        container.close()


def output_size(
    width: int, height: int, short_side: int | None, max_long_side: int | None = None, *, upscale: bool = True
) -> tuple[int, int]:
    """``(width, height)`` after resizing the short side to ``short_side`` keeping the aspect ratio,
    then capping the long side at ``max_long_side``. ``None`` keeps the source size; with
    ``upscale=False`` a smaller source keeps its size (``short_side`` is an upper bound)."""
    w, h = float(width), float(height)
    if short_side is not None and (upscale or min(w, h) > short_side):
        s = short_side / min(w, h)
        w, h = w * s, h * s
    if max_long_side is not None and max(w, h) > max_long_side:
        s = max_long_side / max(w, h)
        w, h = w * s, h * s
    return max(1, int(round(w))), max(1, int(round(h)))


def plan_decode(
    targets: np.ndarray, keyframes: np.ndarray, strategy: str = "auto", seek_cost: int = SEEK_COST_FRAMES
) -> list[tuple[int, int]]:
    """Plan how to reach each target frame: a list of ``(seek_to_keyframe_or_-1, target)``.

    ``targets`` are sorted unique frame indices; ``keyframes`` sorted keyframe indices. The decoder
    starts before frame 0. For each target, a seek to the last keyframe ``k <= target`` is planned when
    ``k`` lies beyond the decoder's position and (``auto``) decoding ``target - k`` frames plus
    ``seek_cost`` is cheaper than decoding ``target - position`` frames, or always (``seek``), or never
    (``sequential``). Pure; the costs are in frames decoded.
    """
    plan: list[tuple[int, int]] = []
    pos = 0  # index of the next frame sequential decoding yields
    for t in targets.tolist():
        k = int(keyframes[np.searchsorted(keyframes, t, side="right") - 1]) if len(keyframes) else 0
        seek = -1
        if k > pos and strategy != "sequential":
            if strategy == "seek" or (t - k) + seek_cost < (t - pos):
                seek = k
        plan.append((seek, t))
        pos = t + 1
    return plan


def decode_cost(plan: list[tuple[int, int]], seek_cost: int = SEEK_COST_FRAMES) -> int:
    """Frames decoded (seeks counted as ``seek_cost`` frames) by a plan from :func:`plan_decode`."""
    cost, pos = 0, 0
    for seek, t in plan:
        if seek >= 0:
            cost += seek_cost
            pos = seek
        cost += t - pos + 1
        pos = t + 1
    return cost


def skip_decode_cost(targets: np.ndarray, keyframes: np.ndarray) -> int:
    """Frames the skip reader sends to the decoder for sorted unique ``targets``: in every GOP that
    holds a target, the frames from its keyframe to its last target (presentation order; an upper
    bound: the non-reference ones among them are dropped without being decoded). Pure."""
    targets = np.asarray(targets, np.int64)
    if targets.size == 0:
        return 0
    keyframes = np.asarray(keyframes, np.int64)
    if keyframes.size == 0:
        return int(targets[-1]) + 1
    gop = np.maximum(np.searchsorted(keyframes, targets, side="right") - 1, 0)
    last = np.zeros(keyframes.size, np.int64) - 1
    np.maximum.at(last, gop, targets)
    used = last >= 0
    return int(np.sum(last[used] - np.minimum(keyframes[used], last[used]) + 1))


def _rotate(img: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored ``(H, W, C)`` frame to display orientation (``rotation`` degrees counter-clockwise,
    PyAV's ``VideoFrame.rotation`` convention)."""
    if rotation == 0:
        return img
    return np.ascontiguousarray(np.rot90(img, k=rotation // 90))


def iter_frames(
    path: str,
    indices: np.ndarray | list[int],
    *,
    size: tuple[int, int] | None = None,
    info: VideoInfo | None = None,
    strategy: str = "auto",
    backend: str = "pyav",
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` for the unique frame ``indices`` of ``path`` in ascending order.

    Streaming: only the frame being yielded is held, so a long video never sits in memory whole.

    Args:
        indices: frame indices (presentation order), any order, repeats allowed.
        size: output ``(width, height)`` in display orientation; ``None`` keeps the source size.
        info: the file's :class:`VideoInfo` if already probed (saves a demux pass).
        strategy: ``auto`` | ``sequential`` | ``seek`` (see :func:`plan_decode`).
        backend: a name in :data:`vidray.registry.DECODERS`: ``pyav`` (default) or ``decord``.

    Yields ``frame`` as uint8 ``(H, W, 3)`` RGB. Raises :class:`VideoDecodeError` when a requested
    frame cannot be decoded (truncated or corrupt stream), saying how far decoding got.
    """
    info = info or probe(path)
    want = np.unique(np.asarray(indices, dtype=np.int64))
    if len(want) == 0:
        return
    if want[0] < 0 or want[-1] >= info.num_frames:
        raise VideoDecodeError(path, f"frame index out of range 0..{info.num_frames - 1}")
    yield from DECODERS.get(backend)(path, want, size, info, strategy)


def decode_frames(
    path: str,
    indices: np.ndarray | list[int],
    *,
    size: tuple[int, int] | None = None,
    info: VideoInfo | None = None,
    strategy: str = "auto",
    backend: str = "pyav",
) -> tuple[np.ndarray, np.ndarray]:
    """Decode frames ``indices`` at once (see :func:`iter_frames` for the arguments).

    Returns ``(frames, indices)``: uint8 ``(N, H, W, 3)`` RGB for the unique sorted ``indices``.
    """
    info = info or probe(path)
    pairs = list(iter_frames(path, indices, size=size, info=info, strategy=strategy, backend=backend))
    if not pairs:
        w, h = (info.width, info.height) if size is None else size
        return np.zeros((0, h, w, 3), np.uint8), np.zeros(0, np.int64)
    return np.stack([f for _, f in pairs]), np.array([i for i, _ in pairs], np.int64)


def resize_rgb(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, C)`` to ``size`` ``(w, h)``: exact 2x area-averaging halvings while the image is at
    least twice the target (OpenCV's fast integer path; no aliasing), then bilinear. Measured on a
    1280x720 -> 455x256 frame: 1.8 ms against 14.7 ms for one ``INTER_AREA`` resize."""
    import cv2

    while img.shape[1] >= 2 * size[0] and img.shape[0] >= 2 * size[1]:
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if (img.shape[1], img.shape[0]) != tuple(size):
        img = cv2.resize(img, tuple(size), interpolation=cv2.INTER_LINEAR)
    return img


_FAST_COLORSPACES = (2, 5, 6)  # unspecified, BT.470BG, SMPTE 170M: the BT.601 matrix OpenCV uses


def _to_rgb(frame, size: tuple[int, int] | None) -> np.ndarray:
    """One decoded frame to ``(H, W, 3)`` uint8 RGB at ``size`` (``(w, h)``, stored orientation).

    For 8-bit limited-range BT.601 yuv420p (most H.264/MPEG-4 content) the planes are taken as they are
    and converted and resized with OpenCV: measured 2-5x faster here than PyAV's swscale
    ``reformat`` at small sizes (benchmarks/decode.py). Everything else (BT.709, full range, 10-bit,
    other pixel formats, odd sizes) goes through ``frame.reformat``, which honours the colour metadata.
    """
    import cv2

    if (frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0
            and frame.color_range != 2 and frame.colorspace in _FAST_COLORSPACES):
        rgb = cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
        return resize_rgb(rgb, size) if size is not None else rgb
    if size is None:
        return frame.to_ndarray(format="rgb24")
    return frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="BILINEAR").to_ndarray()


@DECODERS.register("pyav")
def _iter_pyav(path: str, want: np.ndarray, size, info: VideoInfo, strategy: str) -> Iterator[tuple[int, np.ndarray]]:
    """PyAV (FFmpeg), one thread: decodes only what the wanted frames need (default; see the module doc)."""
    last = -1
    if strategy == "auto" and info.pts_identify:
        try:
            for i, img in _iter_pyav_skip(path, want, size, info):
                last = i
                yield i, img
            return
        except _SkipUnsupported:
            # the stream did not behave as its timestamps promised: the counting reader does the rest
            want = want[want > last]
    yield from _iter_pyav_counting(path, want, size, info, strategy)


class _SkipUnsupported(Exception):
    """The skip reader cannot identify a wanted frame in this stream (the counting reader takes over)."""


def _iter_pyav_skip(path: str, want: np.ndarray, size, info: VideoInfo,
                    seek_frames: int | None = SKIP_SEEK_FRAMES, stats: dict | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """The skip reader (see the module doc): yields ``(index, rgb)`` for sorted unique ``want``.

    Needs ``info.pts_identify``. ``seek_frames``: seek over a gap to the next needed keyframe of more
    than this many frames (``None``: always demux through; ``0``: always seek). ``stats`` (optional)
    receives counts: packets ``demuxed``, ``sent`` to the decoder, ``gops`` decoded, ``seeks``.
    Raises :class:`_SkipUnsupported` when a wanted frame does not come out of its GOP (the caller
    falls back to the counting reader) and :class:`VideoDecodeError` when FFmpeg fails.
    """
    import av

    want = np.asarray(want, np.int64)
    if want.size == 0:
        return
    pts = info.pts
    pts_to_idx = {p: i for i, p in enumerate(pts.tolist())}
    keys = info.keyframes if len(info.keyframes) else np.zeros(1, np.int64)
    # GOP (number of its keyframe) of each wanted frame; leading frames before the first keyframe
    # (an open GOP at the start) are decoded after it, so they belong to GOP 0
    gop_of = np.maximum(np.searchsorted(keys, want, side="right") - 1, 0)
    gops = np.unique(gop_of)
    rot = info.rotation
    osize = None
    if size is not None:  # reformat size is in stored (pre-rotation) orientation
        osize = (size[1], size[0]) if rot in (90, 270) else tuple(size)
    st = stats if stats is not None else {}
    st.update(demuxed=0, sent=0, gops=0, seeks=0)

    container = _open_container(path)
    try:
        stream = _video_stream(container, path)
        cc = stream.codec_context
        gi = 0
        wanted_left: set[int] = set()  # wanted frames of the current GOP not yet output
        unsent: set[int] = set()  # wanted frames of the current GOP whose packet was not sent yet
        passed_keys: set[int] = set()  # keyframes demuxed since the last (re)start of demuxing
        in_gop = False
        pos = -1  # presentation index of the last packet demuxed

        def start(g: int) -> int:
            nonlocal wanted_left, unsent
            sel = want[gop_of == g].tolist()
            wanted_left, unsent = set(sel), set(sel)
            return int(keys[g])

        def take(frames) -> list[tuple[int, np.ndarray]]:
            out = []
            for fr in frames:
                i = pts_to_idx.get(fr.pts) if fr.pts is not None else None
                if i is not None and i in wanted_left:
                    wanted_left.discard(i)
                    out.append((i, _rotate(_to_rgb(fr, osize), rot)))
            return out

        def seek_to(k: int):
            container.seek(int(pts[k]), stream=stream, backward=True, any_frame=False)
            st["seeks"] += 1
            passed_keys.clear()
            return container.demux(stream)

        key = start(int(gops[0]))
        packets = seek_to(key) if seek_frames is not None and key > seek_frames else container.demux(stream)
        try:
            while True:
                pkt = next(packets, None)
                if pkt is None:
                    if in_gop:  # end of stream inside a GOP: drain what the decoder holds
                        cc.skip_frame = "DEFAULT"
                        yield from take(cc.decode(None))
                    break
                if pkt.size == 0:
                    continue
                st["demuxed"] += 1
                idx = pts_to_idx.get(pkt.pts) if pkt.pts is not None else None
                if idx is None:
                    raise _SkipUnsupported(f"packet pts {pkt.pts} is not in the probe's index")
                pos = idx
                if pkt.is_keyframe:
                    passed_keys.add(idx)
                if not in_gop:
                    if not (pkt.is_keyframe and idx == key):
                        continue  # before the GOP needed next: demuxed, never decoded
                    in_gop = True
                    st["gops"] += 1
                if idx in unsent:
                    cc.skip_frame = "DEFAULT"
                    unsent.discard(idx)
                else:
                    cc.skip_frame = "NONREF"  # a reference of a wanted frame is decoded, others dropped
                st["sent"] += 1
                yield from take(cc.decode(pkt))
                if unsent:
                    continue
                # every wanted packet of this GOP is in the decoder: drain it, then start clean
                cc.skip_frame = "DEFAULT"
                yield from take(cc.decode(None))
                cc.flush_buffers()
                if wanted_left:
                    raise _SkipUnsupported(f"frames {sorted(wanted_left)[:3]} did not come out of their GOP")
                in_gop = False
                gi += 1
                if gi == len(gops):
                    break
                key = start(int(gops[gi]))
                if key in passed_keys:
                    # open GOP: the next keyframe went by while this GOP's last frames were decoded
                    packets = seek_to(key)
                elif seek_frames is not None and key - pos > seek_frames:
                    packets = seek_to(key)
        except av.FFmpegError as e:
            raise VideoDecodeError(path, f"decode failed near frame {pos}: {type(e).__name__}: {e}") from e
        if wanted_left or gi < len(gops):
            # the stream ended first: the counting reader finds out whether it is truncated
            raise _SkipUnsupported(f"the stream ended before GOP {gi + 1} of {len(gops)} was decoded")
    finally:
        container.close()


def _iter_pyav_counting(path: str, want: np.ndarray, size, info: VideoInfo,
                        strategy: str) -> Iterator[tuple[int, np.ndarray]]:
    """The counting reader: per wanted frame, seek to its keyframe or decode through (``strategy``:
    ``auto`` | ``sequential`` | ``seek``, see :func:`plan_decode`); frames are counted, not identified."""
    import av

    plan = plan_decode(want, info.keyframes, strategy)
    rot = info.rotation
    # reformat size is in stored (pre-rotation) orientation
    if size is not None:
        ow, oh = (size[1], size[0]) if rot in (90, 270) else size
    container = _open_container(path)
    try:
        stream = _video_stream(container, path)
        frames: Iterator[Any] | None = None
        pos = -1  # index of the last frame yielded
        min_pts: int | None = None
        try:
            for seek, t in plan:
                if seek >= 0 or frames is None:
                    start = max(seek, 0)
                    if seek >= 0:
                        container.seek(int(info.pts[seek]), stream=stream, backward=True, any_frame=False)
                        min_pts = int(info.pts[seek])
                    frames = container.decode(stream)
                    pos = start - 1
                # Decoders emit frames in presentation order, so frames are counted from the keyframe
                # decoding (re)started at. Timestamps are not trusted for this: AVI files with packed
                # B-frames carry non-monotonic pts. They only drop the leading frames of an open GOP
                # that a seek can emit before its keyframe.
                while pos < t:
                    frame = next(frames, None)
                    if frame is None:
                        raise VideoDecodeError(
                            path,
                            f"truncated or corrupt stream: frame {t} of {info.num_frames} could not be "
                            f"decoded (decoding stopped after frame {pos})",
                        )
                    if min_pts is not None:
                        if frame.pts is not None and int(frame.pts) < min_pts:
                            continue
                        min_pts = None
                    pos += 1
                yield t, _rotate(_to_rgb(frame, None if size is None else (ow, oh)), rot)
        except av.FFmpegError as e:
            raise VideoDecodeError(path, f"decode failed after frame {pos}: {type(e).__name__}: {e}") from e
    finally:
        container.close()


@DECODERS.register("decord")
def _iter_decord(path: str, want: np.ndarray, size, info: VideoInfo, strategy: str = "auto",
                 chunk: int = 32) -> Iterator[tuple[int, np.ndarray]]:
    """decord ``get_batch`` in chunks of 32 frames (one batch over a 60 s clip allocated 1.2 GB here).

    decord counts frames in decode order of its own index; for constant-frame-rate files this is the
    presentation order used everywhere else.
    """
    import decord

    kw: dict[str, Any] = {"ctx": decord.cpu(0), "num_threads": 1}
    if size is not None:
        kw["width"], kw["height"] = size
    try:
        vr = decord.VideoReader(path, **kw)
        for i in range(0, len(want), chunk):
            idx = want[i : i + chunk]
            batch = vr.get_batch(idx.tolist()).asnumpy()
            for j, frame in zip(idx.tolist(), batch):
                yield j, frame  # decord applies the display rotation itself
    except decord.DECORDError as e:
        raise VideoDecodeError(path, f"decord failed: {e}") from e
