"""Training- and test-time clip samplers: which stored frames of an ingest row make one sample.

An ingest row holds ``n`` stored frames (``frames``) and their source frame numbers
(``frame_index``, ascending; dense ``0, 1, 2, ...`` when every frame was stored, sparse e.g. every
30th when ingest kept 1 fps). A sampler is a small pure object (PyTorchVideo's ``clip_sampling``
habit) called as::

    inds = sampler(frame_index, rng)      # -> np.ndarray int64 (num_clips, clip_len)
    clip = [row["frames"][i] for i in inds[0]]

``frame_index`` may also be an ``int`` ``n`` (meaning ``0 .. n-1``). Every sampler has a fixed
``clip_len`` (frames per sample) and returns ``(num_clips, clip_len)``. The returned values are indices
INTO the stored frames (``0 .. n-1``), never source frame numbers, so they index ``frames``,
``frame_time_s`` and ``flow`` of the same row alike. Training samplers draw from the
``np.random.Generator`` they are given (a fresh unseeded one when ``rng`` is ``None``); test-time
samplers are deterministic and ignore it.

Names follow MMAction2's ``clip_len x frame_interval x num_clips``:

=======================  ===================================  =========================  ===============
sampler                  what                                 output shape               paper
=======================  ===================================  =========================  ===============
``TSNSampler``           one frame per equal segment          ``(1, num_segments)``      TSN
``RandomClipSampler``    one clip, ``frame_interval`` apart   ``(1, clip_len)``          C3D/I3D
``FramePairSampler``     two consecutive stored frames        ``(1, 2)``                 RCNN random
``SequentialSampler``    the whole video (up to ``max_len``)  ``(1, T)``                 RCNN seq., LSTM
``UniformClipsSampler``  ``num_clips`` evenly spread clips    ``(num_clips, clip_len)``  multi-clip test
=======================  ===================================  =========================  ===============

The names a config chooses (``sampler.name``) are the table :data:`vidray.registry.SAMPLERS`: each
entry builds the sampler of one of three modes, ``train`` (random), ``val`` (one deterministic
sample) and ``test`` (``num_clips`` deterministic samples spread over the video); see
:func:`build_sampler`.

``frame_interval`` is counted in SOURCE frames (as in MMAction2, where every decoded frame is
available). Each wanted source frame is mapped to the stored frame whose ``frame_index`` is nearest
(ties to the earlier one); when stored frames are dense this is exact, when they are sparser than
``frame_interval`` neighbouring clip frames may map to the same stored frame. ``TSNSampler``,
``FramePairSampler`` and ``SequentialSampler`` work on stored frames directly.
"""

from __future__ import annotations

from typing import Literal, Protocol, Sequence, Union

import numpy as np

from vidray.registry import SAMPLERS

FrameIndex = Union[int, Sequence[int], np.ndarray]
OutOfBound = Literal["loop", "repeat_last"]

__all__ = [
    "Sampler",
    "TSNSampler",
    "RandomClipSampler",
    "FramePairSampler",
    "SequentialSampler",
    "UniformClipsSampler",
    "WindowSampler",
    "PadTo",
    "build_sampler",
    "nearest_stored",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _as_frame_index(frame_index: FrameIndex) -> np.ndarray:
    """``int n`` -> ``arange(n)``; a sequence -> int64 array, checked non-empty and ascending."""
    if isinstance(frame_index, (int, np.integer)):
        n = int(frame_index)
        if n < 1:
            raise ValueError(f"a row needs at least one stored frame, got n={n}")
        return np.arange(n, dtype=np.int64)
    fi = np.asarray(frame_index, dtype=np.int64).reshape(-1)
    if fi.size == 0:
        raise ValueError("a row needs at least one stored frame, got an empty frame_index")
    if fi.size > 1 and np.any(np.diff(fi) <= 0):
        raise ValueError("frame_index must be strictly ascending source frame numbers")
    return fi


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def nearest_stored(frame_index: FrameIndex, source_frames: np.ndarray) -> np.ndarray:
    """Map source frame numbers to indices of the nearest stored frame (ties to the earlier one).

    Args:
        frame_index: ``(n,)`` ascending source frame numbers of the stored frames (or ``n``).
        source_frames: any-shape int array of wanted source frame numbers.

    Returns:
        int64 array of the same shape with values in ``0 .. n-1``.
    """
    fi = _as_frame_index(frame_index)
    t = np.asarray(source_frames, dtype=np.int64)
    right = np.clip(np.searchsorted(fi, t, side="left"), 0, fi.size - 1)
    left = np.clip(right - 1, 0, fi.size - 1)
    take_left = np.abs(t - fi[left]) <= np.abs(fi[right] - t)
    return np.where(take_left, left, right).astype(np.int64)


def _clip_source_frames(
    first: int,
    span: int,
    starts: np.ndarray,
    clip_len: int,
    frame_interval: int,
    out_of_bound: OutOfBound,
) -> np.ndarray:
    """Source frame numbers ``first + start + i*frame_interval`` with MMAction2's out-of-bound rule.

    ``span`` is the number of source frames covered (``last - first + 1``). ``loop`` wraps around
    (``mod span``), ``repeat_last`` clamps to the last frame.
    """
    offs = starts[:, None] + np.arange(clip_len, dtype=np.int64)[None, :] * frame_interval
    if out_of_bound == "loop":
        offs = np.mod(offs, span)
    elif out_of_bound == "repeat_last":
        offs = np.minimum(offs, span - 1)
    else:
        raise ValueError(f"out_of_bound must be 'loop' or 'repeat_last', got {out_of_bound!r}")
    return first + offs


def _check_pos(name: str, value: int) -> int:
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


# --------------------------------------------------------------------------------------------
# samplers
# --------------------------------------------------------------------------------------------
class TSNSampler:
    """TSN segment sampling over the stored frames (Wang et al., 2016; MMAction2 ``SampleFrames``
    with ``clip_len=1, frame_interval=1, num_clips=num_segments``).

    The ``n`` stored frames are split into ``num_segments`` equal segments of ``avg = n // k``
    frames. Training: one frame per segment at a random offset, ``i*avg + U{0..avg-1}``. Testing:
    the centre of each segment, ``int(i*n/k + n/(2k))``; with ``num_clips = N > 1`` sample ``c`` takes
    the frame at relative offset ``(c + 0.5) / N`` of each segment (``N`` samplings spread evenly).

    Shorter rows (``n < k``, so ``avg == 0``) as MMAction2: training takes frames
    ``round(i * n / k)``; testing keeps the centre rule. Both repeat some stored frames, so a sample
    always has ``k`` frames.

    Returns ``(num_clips, num_segments)`` int64 indices into the stored frames, ascending per row.
    """

    def __init__(self, num_segments: int, test_mode: bool = False, num_clips: int = 1) -> None:
        self.num_segments = _check_pos("num_segments", num_segments)
        self.test_mode = bool(test_mode)
        self.num_clips = _check_pos("num_clips", num_clips)
        if self.num_clips > 1 and not self.test_mode:
            raise ValueError("TSNSampler draws one training sample at a time: num_clips > 1 needs test_mode")

    @property
    def clip_len(self) -> int:
        return self.num_segments

    def __call__(self, frame_index: FrameIndex, rng: np.random.Generator | None = None) -> np.ndarray:
        n = _as_frame_index(frame_index).size
        k = self.num_segments
        if self.test_mode:
            avg = n / k
            offs = (np.arange(self.num_clips) + 0.5) / self.num_clips
            inds = (np.arange(k)[None, :] * avg + offs[:, None] * avg).astype(np.int64)
            return np.clip(inds, 0, n - 1)
        avg = n // k
        if avg > 0:
            inds = np.arange(k, dtype=np.int64) * avg + _rng(rng).integers(0, avg, size=k)
        else:
            inds = np.round(np.arange(k) * (n / k)).astype(np.int64)
        return np.clip(inds, 0, n - 1)[None, :]

    def __repr__(self) -> str:
        return f"TSNSampler(num_segments={self.num_segments}, test_mode={self.test_mode}, num_clips={self.num_clips})"


class RandomClipSampler:
    """One clip of ``clip_len`` frames ``frame_interval`` SOURCE frames apart, at a random start.

    With ``first``/``last`` the first and last stored source frame, ``span = last - first + 1`` and
    ``ori_clip_len = (clip_len - 1) * frame_interval + 1``: the start offset is uniform in
    ``0 .. span - ori_clip_len`` (0 if the clip is longer than the row); frames past the end wrap
    around (``out_of_bound="loop"``, MMAction2's default) or repeat the last frame
    (``"repeat_last"``). Each wanted source frame maps to the nearest stored frame (see module doc).

    For a deterministic (validation) clip use ``UniformClipsSampler(1, clip_len, frame_interval)``,
    which takes the centre clip.

    Returns ``(1, clip_len)`` int64 indices into the stored frames.
    """

    def __init__(self, clip_len: int, frame_interval: int = 1, *, out_of_bound: OutOfBound = "loop") -> None:
        self.clip_len = _check_pos("clip_len", clip_len)
        self.frame_interval = _check_pos("frame_interval", frame_interval)
        self.out_of_bound = out_of_bound

    def __call__(self, frame_index: FrameIndex, rng: np.random.Generator | None = None) -> np.ndarray:
        fi = _as_frame_index(frame_index)
        first, span = int(fi[0]), int(fi[-1] - fi[0] + 1)
        ori = (self.clip_len - 1) * self.frame_interval + 1
        room = span - ori + 1
        start = int(_rng(rng).integers(0, room)) if room > 0 else 0
        src = _clip_source_frames(
            first, span, np.array([start]), self.clip_len, self.frame_interval, self.out_of_bound
        )
        return nearest_stored(fi, src)

    def __repr__(self) -> str:
        return (
            f"RandomClipSampler(clip_len={self.clip_len}, frame_interval={self.frame_interval}, "
            f"out_of_bound={self.out_of_bound!r})"
        )


class FramePairSampler:
    """Two consecutive stored frames ``(i, i+1)`` (RCNN "random" training mode).

    Training: ``i`` uniform in ``0 .. n-2``. Testing (``test_mode=True``): the middle pair,
    ``i = (n - 2) // 2``. A one-frame row gives ``(0, 0)``.

    Returns ``(1, 2)`` int64 indices into the stored frames.
    """

    clip_len = 2

    def __init__(self, test_mode: bool = False) -> None:
        self.test_mode = bool(test_mode)

    def __call__(self, frame_index: FrameIndex, rng: np.random.Generator | None = None) -> np.ndarray:
        n = _as_frame_index(frame_index).size
        if n == 1:
            return np.zeros((1, 2), dtype=np.int64)
        i = (n - 2) // 2 if self.test_mode else int(_rng(rng).integers(0, n - 1))
        return np.array([[i, i + 1]], dtype=np.int64)

    def __repr__(self) -> str:
        return f"FramePairSampler(test_mode={self.test_mode})"


class SequentialSampler:
    """The whole row in order (RCNN "sequential" mode, LSTM over a video).

    ``max_len=None``: all ``n`` stored frames. When ``n > max_len``, a contiguous window of ``max_len``
    stored frames: random start in training, the centred window in testing (``test_mode=True``);
    for evaluation over a whole long video prefer ``max_len=None`` or ``UniformClipsSampler``.

    Returns ``(1, min(n, max_len))`` int64 indices into the stored frames (variable length).
    """

    def __init__(self, max_len: int | None = None, test_mode: bool = False) -> None:
        self.max_len = None if max_len is None else _check_pos("max_len", max_len)
        self.test_mode = bool(test_mode)

    def __call__(self, frame_index: FrameIndex, rng: np.random.Generator | None = None) -> np.ndarray:
        n = _as_frame_index(frame_index).size
        if self.max_len is None or n <= self.max_len:
            return np.arange(n, dtype=np.int64)[None, :]
        room = n - self.max_len + 1
        start = room // 2 if self.test_mode else int(_rng(rng).integers(0, room))
        return np.arange(start, start + self.max_len, dtype=np.int64)[None, :]

    def __repr__(self) -> str:
        return f"SequentialSampler(max_len={self.max_len}, test_mode={self.test_mode})"


class UniformClipsSampler:
    """Test-time multi-clip sampling: ``num_clips`` clips evenly spread over the row
    (MMAction2 ``SampleFrames(test_mode=True)``).

    With ``span`` and ``ori_clip_len`` as in :class:`RandomClipSampler` and
    ``avg = (span - ori_clip_len + 1) / num_clips``: clip ``j`` starts at source offset
    ``int(j*avg + avg/2)`` (all clips start at 0 when the row is shorter than one clip); frames past the
    end follow ``out_of_bound``. Deterministic; ``rng`` is ignored.

    Returns ``(num_clips, clip_len)`` int64 indices into the stored frames.
    """

    def __init__(
        self,
        num_clips: int,
        clip_len: int,
        frame_interval: int = 1,
        *,
        out_of_bound: OutOfBound = "loop",
    ) -> None:
        self.num_clips = _check_pos("num_clips", num_clips)
        self.clip_len = _check_pos("clip_len", clip_len)
        self.frame_interval = _check_pos("frame_interval", frame_interval)
        self.out_of_bound = out_of_bound

    def __call__(self, frame_index: FrameIndex, rng: np.random.Generator | None = None) -> np.ndarray:
        fi = _as_frame_index(frame_index)
        first, span = int(fi[0]), int(fi[-1] - fi[0] + 1)
        ori = (self.clip_len - 1) * self.frame_interval + 1
        if span >= ori:
            avg = (span - ori + 1) / self.num_clips
            starts = (np.arange(self.num_clips) * avg + avg / 2.0).astype(np.int64)
        else:
            starts = np.zeros(self.num_clips, dtype=np.int64)
        src = _clip_source_frames(first, span, starts, self.clip_len, self.frame_interval, self.out_of_bound)
        return nearest_stored(fi, src)

    def __repr__(self) -> str:
        return (
            f"UniformClipsSampler(num_clips={self.num_clips}, clip_len={self.clip_len}, "
            f"frame_interval={self.frame_interval}, out_of_bound={self.out_of_bound!r})"
        )


class WindowSampler:
    """Test-time windows: ``num_clips`` windows of ``length`` consecutive stored frames, evenly spread
    (:class:`UniformClipsSampler` over stored positions), in temporal order; a row shorter than
    ``length`` gives its frames padded by repeating the last. For models that read a sequence
    (RCNN pairs, LSTM), so per-frame outputs can be aggregated over time.

    Returns ``(num_clips, length)`` int64 indices into the stored frames.
    """

    def __init__(self, num_clips: int, length: int) -> None:
        self.num_clips = _check_pos("num_clips", num_clips)
        self.clip_len = _check_pos("length", length)

    def __call__(self, frame_index: FrameIndex, rng: np.random.Generator | None = None) -> np.ndarray:
        n = _as_frame_index(frame_index).size
        return _pad_to(UniformClipsSampler(self.num_clips, min(self.clip_len, n), 1)(n), self.clip_len)

    def __repr__(self) -> str:
        return f"WindowSampler(num_clips={self.num_clips}, length={self.clip_len})"


class PadTo:
    """Pad every sample of ``sampler`` to ``length`` frames by repeating its last index (a variable-length
    :class:`SequentialSampler` batched with fixed-length clips)."""

    def __init__(self, sampler: "Sampler", length: int) -> None:
        self.sampler = sampler
        self.clip_len = _check_pos("length", length)

    def __call__(self, frame_index: FrameIndex, rng: np.random.Generator | None = None) -> np.ndarray:
        return _pad_to(self.sampler(frame_index, rng), self.clip_len)

    def __repr__(self) -> str:
        return f"PadTo({self.sampler!r}, {self.clip_len})"


def _pad_to(idx: np.ndarray, length: int) -> np.ndarray:
    """Pad ``(N, t)`` indices to ``(N, length)`` by repeating each row's last index (or cut to it)."""
    if idx.shape[1] >= length:
        return idx[:, :length]
    return np.concatenate([idx, np.repeat(idx[:, -1:], length - idx.shape[1], axis=1)], axis=1)


class Sampler(Protocol):
    """``sampler(frame_index, rng) -> (num_clips, clip_len)`` int64 indices into the stored frames."""

    clip_len: int

    def __call__(self, frame_index: FrameIndex, rng: np.random.Generator | None = None) -> np.ndarray: ...


Mode = Literal["train", "val", "test"]


@SAMPLERS.register("tsn")
def _tsn(num_frames: int, frame_interval: int, mode: Mode, num_clips: int) -> Sampler:
    """num_frames segments, a random frame in each (val: the centres; test: num_clips offsets per segment)"""
    return TSNSampler(num_frames, test_mode=mode != "train", num_clips=num_clips if mode == "test" else 1)


@SAMPLERS.register("clip")
def _clip(num_frames: int, frame_interval: int, mode: Mode, num_clips: int) -> Sampler:
    """num_frames consecutive frames frame_interval source frames apart, random start (val: centre clip; test: num_clips evenly spread)"""
    if mode == "train":
        return RandomClipSampler(num_frames, frame_interval)
    return UniformClipsSampler(num_clips if mode == "test" else 1, num_frames, frame_interval)


@SAMPLERS.register("pair")
def _pair(num_frames: int, frame_interval: int, mode: Mode, num_clips: int) -> Sampler:
    """two consecutive stored frames, RCNN random mode (val: the middle pair; test: num_clips pairs)"""
    if mode == "test":
        return WindowSampler(num_clips, 2)
    return FramePairSampler(test_mode=mode == "val")


@SAMPLERS.register("sequential")
def _sequential(num_frames: int, frame_interval: int, mode: Mode, num_clips: int) -> Sampler:
    """the whole row, at most num_frames frames: a random window (val: centred), short rows padded with the last frame"""
    if mode == "test":
        return WindowSampler(num_clips, num_frames)
    return PadTo(SequentialSampler(num_frames, test_mode=mode == "val"), num_frames)


def build_sampler(name: str, num_frames: int = 8, frame_interval: int = 1, mode: Mode = "train",
                  num_clips: int = 1) -> Sampler:  # fmt: skip
    """The sampler ``name`` (:data:`vidray.registry.SAMPLERS`) for ``mode``:

    * ``train``: one random sample per call (draws from the ``rng`` it is called with);
    * ``val``: one deterministic sample (the centre);
    * ``test``: ``num_clips`` deterministic samples spread over the video.

    ``num_frames`` is ``T`` (segments / clip length / sequence length; ``pair`` always gives 2).
    """
    if mode not in ("train", "val", "test"):
        raise ValueError(f"mode must be train | val | test, got {mode!r}")
    return SAMPLERS.get(name)(int(num_frames), int(frame_interval), mode, int(num_clips))
