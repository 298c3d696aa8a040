"""Training-time data: ingest Parquet rows -> sampled, decoded, augmented clips as torch batches.

The path a training row takes (one row = one video, or one chunk of a long video; :mod:`vidray.io.schema`)::

    Ray Data read_parquet(committed parts, needed columns; ~128 MB per read task)
      -> map_batches(decode_augment_fn)   IN THE READ TASK: per row, sample indices (TSN / clip / pair /
                                          sequential), decode ONLY those frames (and flow stacks), one
                                          augmentation for every frame and the flow
      -> [streaming_split per Ray Train worker]
      -> iter_torch_batches()             {"imgs": uint8 (B, T, S, S, 3), "flow": float32
                                           (B, T, 2L, S, S), "label", "targets", "flip", "jitter"}
      -> train loop: normalize_batch() on the device (/255, colour jitter, mean/std)

Validation (and ``input.decode_in: workers``) cuts each row to one sample's JPEGs in the read task
(:func:`select_frames`) and decodes them in the worker's Ray Data prefetch threads
(``iter_torch_batches(collate_fn=ClipCollate(spec))``). With ``input.decode_on: gpu`` the training
rows are cut the same way, :class:`ClipCollate` only draws each sample's crop/flip/jitter
(:func:`collate_jpegs`) and :func:`normalize_batch` decodes the batch's JPEGs on the training device
(:func:`decode_clips`: nvjpeg on a GPU; the same code on a CPU is the tested twin of the CPU path).

Why: ``benchmarks/loader.py`` (one core) measured decoding in the read tasks fastest, ahead of decoding
the sampled JPEGs in the worker's prefetch threads, ``iter_batches`` + decoding in the training thread,
and far ahead of shipping float32 clips (Ray Data issue #50128). Frames stay uint8 until the device
(4x less to move than float32) and the colour jitter is applied there, where it is free on a GPU.

Everything here except the Ray Data glue is a pure function of its inputs (and an
``np.random.Generator``), tested without Ray.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import torch

from vidray.data.clip_sampling import Sampler, build_sampler
from vidray.data.transforms import (
    IMAGENET_MEAN, IMAGENET_STD, draw_jitter, eval_pipeline, jitter_frame, multi_crop_boxes, multi_scale_crop_box,
    train_pipeline,
)
from vidray.io.flowcodec import decode_flow_stack, dequantize_flow
from vidray.io.imcodec import decode_image
from vidray.io.labels import multi_hot
from vidray.runtime import trace_placement

try:  # Ray Data's base class: iter_torch_batches hands it the Arrow table of a batch.
    from ray.data.collate_fn import ArrowBatchCollateFn as _CollateBase
except Exception:  # pragma: no cover - Ray is a dependency; this only keeps the pure parts importable
    _CollateBase = object  # type: ignore[assignment,misc]

__all__ = [
    "ClipSpec",
    "columns_for",
    "sample_indices",
    "eval_indices",
    "RowView",
    "iter_rows",
    "make_sample",
    "FramePlan",
    "draw_frame_plan",
    "crop_frames",
    "make_eval_views",
    "ClipCollate",
    "select_frames",
    "select_frames_fn",
    "decode_augment_fn",
    "collate_numpy",
    "normalize_batch",
    "apply_jitter",
    "flow_target",
    "collate_samples",
    "collate_jpegs",
    "decode_clips",
]

BASE_COLUMNS = ["video_id", "labels", "split", "frame_index", "frame_encoding", "frame_height", "frame_width"]


@dataclass(frozen=True)
class ClipSpec:
    """Everything a worker needs to turn a row into a sample (picklable, shipped to every worker).

    Attributes:
        sampler: a name in :data:`vidray.registry.SAMPLERS` (``tsn`` | ``clip`` | ``pair`` |
            ``sequential``; see :func:`vidray.data.clip_sampling.build_sampler`).
        num_frames: ``T`` (segments / clip length / sequence length; ``pair`` always gives 2).
        frame_interval: ``clip``: source frames between clip frames.
        modality: ``rgb`` | ``flow`` | ``rgb+flow`` (frames as input, first flow field as a target).
        num_classes: ``K`` (multi-hot targets).
        train: training (random sampling + augmentation) or validation (centre sample, centre crop).
        crop_size: ``S`` pixels.
        scales, max_distort: TSN multi-scale crop (training).
        flip_ratio: horizontal flip probability (training).
        color_jitter: ``(brightness, contrast, saturation)`` or ``None`` (training, RGB only).
        jitter_on_device: draw the jitter factors here but apply them in :func:`normalize_batch` on
            the float batch: free on a GPU (the uint8 version cost ~0.65 ms per 224x224 frame on one
            core, more than the crop and flip together); on a CPU device the float version costs more
            than the uint8 one (``benchmarks/loader.py``), so training sets it to ``ray.use_gpu``.
            ``False``: apply :class:`vidray.data.transforms.ColorJitter` to the uint8 frames here.
        resize_short: validation/eval: resize the short side to this first (``None``: keep, unless
            the frame is smaller than the crop, then it is resized up to ``crop_size``).
        presampled: rows were already cut to one sample's frames by :func:`select_frames` (in Ray
            Data's read tasks), in sample order: take them all, draw nothing.
        decode_on: ``cpu``: :class:`ClipCollate` decodes and augments (uint8 clips); ``gpu``: it only
            draws each sample's :class:`FramePlan` and passes the JPEG bytes on, for
            :func:`decode_clips` to decode and crop on the training device (``input.decode_on``; RGB).
    """

    sampler: str = "tsn"
    num_frames: int = 8
    frame_interval: int = 1
    modality: str = "rgb"
    num_classes: int = 1
    train: bool = True
    crop_size: int = 224
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    max_distort: int = 1
    flip_ratio: float = 0.5
    color_jitter: tuple[float, float, float] | None = (0.4, 0.4, 0.4)
    jitter_on_device: bool = True
    resize_short: int | None = None
    presampled: bool = False
    decode_on: str = "cpu"

    @property
    def needs_frames(self) -> bool:
        return self.modality in ("rgb", "rgb+flow")

    @property
    def needs_flow(self) -> bool:
        return self.modality in ("flow", "rgb+flow")

    def build_sampler(self, mode: str | None = None, num_clips: int = 1) -> Sampler:
        """The sampler of this spec; ``mode`` defaults to ``train`` / ``val`` from :attr:`train`."""
        mode = mode or ("train" if self.train else "val")
        return build_sampler(self.sampler, self.num_frames, self.frame_interval, mode, num_clips)

    @property
    def clip_len(self) -> int:
        """Frames per sample (the sampler's: ``pair`` gives 2, the others ``num_frames``)."""
        return self.build_sampler().clip_len


def columns_for(spec: ClipSpec) -> list[str]:
    """The Parquet columns a spec reads (column pruning: flow bytes are not read for RGB)."""
    cols = list(BASE_COLUMNS)
    if spec.needs_frames:
        cols.append("frames")
    if spec.needs_flow:
        cols += ["flow", "flow_meta"]
    return cols


# --------------------------------------------------------------------------------------------
# sampling (pure): the sampler objects of vidray.data.clip_sampling
# --------------------------------------------------------------------------------------------
def _sampler_input(frame_index: np.ndarray | int) -> np.ndarray | int:
    """What a sampler gets: the source frame numbers when they are strictly ascending (``clip``
    counts ``frame_interval`` in source frames), else the number of stored frames (a looped ``fps``
    ingest repeats source numbers; the other samplers work on stored positions anyway)."""
    if isinstance(frame_index, (int, np.integer)):
        return int(frame_index)
    fi = np.asarray(frame_index, dtype=np.int64)
    if fi.size > 0 and (fi.size == 1 or bool(np.all(np.diff(fi) > 0))):
        return fi
    return int(fi.size)


def sample_indices(frame_index: np.ndarray | int, spec: ClipSpec, rng: np.random.Generator | None) -> np.ndarray:
    """Indices into a row's stored frames for ONE sample: ``(clip_len,)`` int64 (training draws with
    ``rng``; validation is deterministic). ``spec.build_sampler()`` decides (the table
    :data:`vidray.registry.SAMPLERS`)."""
    return spec.build_sampler()(_sampler_input(frame_index), rng)[0]


def eval_indices(frame_index: np.ndarray | int, spec: ClipSpec, num_clips: int) -> np.ndarray:
    """Deterministic test-time sampling of ``num_clips`` samples of a video: ``(num_clips, clip_len)``
    (the ``test`` mode of the spec's sampler: TSN offsets spread within each segment, evenly spread
    clips, or evenly spread windows of consecutive frames for ``pair`` / ``sequential``)."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    fi = _sampler_input(frame_index)
    if (fi if isinstance(fi, int) else fi.size) < 1:
        raise ValueError("a video needs at least one stored frame")
    return spec.build_sampler("test", num_clips)(fi, None)


# --------------------------------------------------------------------------------------------
# zero-copy row access to an Arrow batch
# --------------------------------------------------------------------------------------------
class _BinaryLists:
    """Zero-copy access to item ``j`` of row ``i`` of a ``list<binary>`` Arrow array.

    ``get(i, j)`` returns a ``uint8`` numpy view of the bytes (no Python ``bytes`` copy). Handles
    sliced arrays, ``large_list`` / ``large_binary`` and null rows (``count`` = 0).
    """

    def __init__(self, arr: pa.Array):
        self.valid = np.asarray(arr.is_valid())
        self.offs = np.asarray(arr.offsets)
        values = arr.values
        bufs = values.buffers()
        odt = np.int64 if pa.types.is_large_binary(values.type) else np.int32
        self.voffs = np.frombuffer(bufs[1], odt)[values.offset : values.offset + len(values) + 1]
        self.data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)

    def count(self, i: int) -> int:
        return int(self.offs[i + 1] - self.offs[i]) if self.valid[i] else 0

    def get(self, i: int, j: int) -> np.ndarray:
        k = int(self.offs[i]) + int(j)
        return self.data[int(self.voffs[k]) : int(self.voffs[k + 1])]


@dataclass
class RowView:
    """One row of an Arrow batch, with its frames/flow readable by index without decoding the rest.

    Attributes:
        video_id: id from the manifest; labels: class ids (first = the single label).
        frame_index: ``(n,)`` source frame numbers of the stored frames.
        encoding, height, width: stored frame encoding and size (pixels).
        flow_meta: the row's ``flow_meta`` struct (``None`` when flow is off or not read).
    """

    video_id: str
    labels: list[int]
    frame_index: np.ndarray
    encoding: str
    height: int
    width: int
    flow_meta: dict | None
    _frames: Any = field(default=None, repr=False)  # list of uint8 views or (_BinaryLists, row)
    _flow: Any = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return int(self.frame_index.size)

    def frames(self, idx: Sequence[int]) -> np.ndarray:
        """Decode the stored frames ``idx`` (each decoded once): ``(len(idx), H, W, 3)`` uint8 RGB."""
        if self._frames is None:
            raise ValueError(f"{self.video_id}: the frames column was not read")
        idx = np.asarray(idx, dtype=np.int64)
        uniq, inv = np.unique(idx, return_inverse=True)
        out = np.empty((uniq.size, self.height, self.width, 3), np.uint8)
        for k, i in enumerate(uniq):
            decode_image(self._item(self._frames, int(i)), self.encoding, (self.height, self.width, 3), out=out[k])
        return out if np.array_equal(uniq, idx) else out[inv]  # idx sorted and unique: no gather copy

    def flow(self, idx: Sequence[int]) -> np.ndarray:
        """Dequantised flow stacks of stored frames ``idx``: ``(len(idx), 2L, Hf, Wf)`` float32 pixels
        (planes ``x1, y1, x2, y2, ...``)."""
        m = self.flow_meta
        if self._flow is None or m is None:
            raise ValueError(f"{self.video_id}: this row has no flow (ingest with flow.enabled=true)")
        idx = np.asarray(idx, dtype=np.int64)
        uniq, inv = np.unique(idx, return_inverse=True)
        stacks = [
            decode_flow_stack(self._item(self._flow, int(i)), m["encoding"], m["stack_length"], m["height"], m["width"])
            for i in uniq
        ]
        return dequantize_flow(np.stack(stacks), float(m["bound"]))[inv]

    @staticmethod
    def _item(src: Any, i: int) -> np.ndarray:
        if isinstance(src, tuple):
            lists, row = src
            return lists.get(row, i)
        return src[i]


def iter_rows(table: pa.Table | pa.RecordBatch) -> Iterable[RowView]:
    """:class:`RowView` of every row of an Arrow batch (columns from :func:`columns_for`)."""
    batches = table.to_batches() if isinstance(table, pa.Table) else [table]
    for rb in batches:
        names = rb.schema.names
        col = {n: rb.column(i) for i, n in enumerate(names)}
        frames = _BinaryLists(col["frames"]) if "frames" in col else None
        flow = _BinaryLists(col["flow"]) if "flow" in col else None
        metas = col["flow_meta"].to_pylist() if "flow_meta" in col else [None] * rb.num_rows
        ids = col["video_id"].to_pylist()
        labels = col["labels"].to_pylist()
        fidx = col["frame_index"]
        encs = col["frame_encoding"].to_pylist()
        hs = col["frame_height"].to_pylist()
        ws = col["frame_width"].to_pylist()
        foffs = np.asarray(fidx.offsets)
        fvals = np.asarray(fidx.values)
        for i in range(rb.num_rows):
            has_flow = flow is not None and flow.count(i) > 0 and metas[i] is not None
            yield RowView(
                video_id=ids[i], labels=list(labels[i] or []),
                frame_index=fvals[foffs[i] : foffs[i + 1]].astype(np.int64),
                encoding=encs[i], height=int(hs[i]), width=int(ws[i]),
                flow_meta=metas[i] if has_flow else None,
                _frames=(frames, i) if frames is not None else None,
                _flow=(flow, i) if has_flow else None,
            )  # fmt: skip


def merge_rows(rows: Sequence[RowView]) -> RowView:
    """Merge the chunk rows of one long video (in ``chunk_index`` order) into one :class:`RowView`."""
    if len(rows) == 1:
        return rows[0]
    r0 = rows[0]

    def items(src: Any, n: int) -> list[np.ndarray]:
        return [RowView._item(src, i) for i in range(n)]

    frames = [b for r in rows for b in items(r._frames, r.num_frames)] if r0._frames is not None else None
    flow = [b for r in rows for b in items(r._flow, r.num_frames)] if all(r._flow is not None for r in rows) else None
    return RowView(
        video_id=r0.video_id, labels=r0.labels,
        frame_index=np.concatenate([r.frame_index for r in rows]),
        encoding=r0.encoding, height=r0.height, width=r0.width,
        flow_meta=r0.flow_meta if flow is not None else None, _frames=frames, _flow=flow,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# sample early: keep only one sample's frames of each row (runs in Ray Data's read tasks)
# --------------------------------------------------------------------------------------------
def _take_lists(col: pa.ChunkedArray | pa.Array, picks: list[np.ndarray]) -> pa.Array:
    """Row ``i`` of a list column -> the items ``picks[i]`` of it (Arrow ``take``: no Python copies).
    Null rows stay null (their picks are ignored)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    offs = np.asarray(arr.offsets, dtype=np.int64)
    valid = np.asarray(arr.is_valid())
    flat = arr.flatten()  # the values of rows 0..n-1 (slice offset applied)
    starts = offs[:-1] - offs[0]
    take = [starts[i] + p for i, p in enumerate(picks) if valid[i]]
    vals = flat.take(pa.array(np.concatenate(take) if take else np.zeros(0, np.int64)))
    lens = np.array([len(p) if valid[i] else 0 for i, p in enumerate(picks)], np.int64)
    new_offs = np.concatenate([[0], np.cumsum(lens)])
    list_cls = pa.LargeListArray if pa.types.is_large_list(arr.type) else pa.ListArray
    odt = np.int64 if list_cls is pa.LargeListArray else np.int32
    mask = pa.array(~valid) if not valid.all() else None
    return list_cls.from_arrays(pa.array(new_offs.astype(odt)), vals, mask=mask)


def select_frames(table: pa.Table, spec: ClipSpec, rng: np.random.Generator | None = None) -> pa.Table:
    """Cut every row to the frames of ONE sample (:func:`sample_indices`), in sample order.

    ``frames``, ``flow`` and ``frame_index`` keep only the sampled items (repeats included), so only
    ``T`` JPEGs per row leave the read task instead of the whole video (a 10 s video at 25 fps stored
    densely is ~250 frames, ~5 MB: moving whole rows to the trainer measured 4x slower on one core,
    ``benchmarks/loader.py``). Decode with a ``presampled=True`` spec. Other columns are unchanged.
    """
    if table.num_rows == 0:
        return table
    rng = rng if rng is not None else np.random.default_rng()
    fi = table.column("frame_index").combine_chunks()
    offs = np.asarray(fi.offsets, dtype=np.int64)
    vals = np.asarray(fi.flatten(), dtype=np.int64)
    base = offs[0]
    picks = [sample_indices(vals[offs[i] - base : offs[i + 1] - base], spec, rng) for i in range(table.num_rows)]
    out = table
    for name in ("frames", "flow", "frame_index", "frame_time_s"):
        if name in table.column_names:
            out = out.set_column(out.column_names.index(name), name, _take_lists(table.column(name), picks))
    return out


def select_frames_fn(table: pa.Table, spec: ClipSpec) -> pa.Table:
    """``Dataset.map_batches(select_frames_fn, fn_kwargs={"spec": spec}, batch_format="pyarrow")``: :func:`select_frames`
    with fresh OS entropy per batch (Ray Data re-runs the read every epoch, so every epoch samples new
    offsets); task-based, so it fuses with the read."""
    trace_placement("train_data_task")
    return select_frames(table, spec, np.random.default_rng())


# --------------------------------------------------------------------------------------------
# one sample (pure given rng)
# --------------------------------------------------------------------------------------------
def _first_label(labels: Sequence[int]) -> int:
    return int(labels[0]) if len(labels) else -1


def _eval_resize(spec: ClipSpec, hw: tuple[int, int]) -> int | None:
    """Short side to resize to before a centre/multi crop (``None``: keep)."""
    if spec.resize_short is not None:
        return max(spec.resize_short, spec.crop_size)
    return spec.crop_size if min(hw) < spec.crop_size else None


def _geometry_source(row: RowView, idx: np.ndarray, spec: ClipSpec, flow: np.ndarray | None) -> np.ndarray:
    """Frames the geometric transforms run on: the decoded frames, or (flow-only stream) a zero image
    of the flow's size, so crop boxes are drawn on the flow grid without decoding any JPEG."""
    if spec.needs_frames:
        return row.frames(idx)
    assert flow is not None
    return np.zeros((idx.size, flow.shape[2], flow.shape[3], 3), np.uint8)


@dataclass(frozen=True)
class FramePlan:
    """How one sample's decoded ``(H, W, 3)`` frames become its ``(S, S, 3)`` crops (the same for every
    frame of the sample), drawn by :func:`draw_frame_plan` with the random draws of the transform
    pipelines (:func:`vidray.data.transforms.train_pipeline` / ``eval_pipeline``), in their order.

    Attributes:
        resize_hw: ``(h, w)`` to resize the whole frame to first (validation's ``Resize``), or ``None``.
        box: ``(x0, y0, x1, y1)`` crop on the (resized) frame, resized to ``out_hw`` (bilinear).
        out_hw: ``(S, S)``.
        flip: mirror left-right.
        jitter: ``(6,)`` colour-jitter parameters (:func:`vidray.data.transforms.draw_jitter`) or ``None``.
    """

    resize_hw: tuple[int, int] | None
    box: tuple[int, int, int, int]
    out_hw: tuple[int, int]
    flip: bool
    jitter: np.ndarray | None


def draw_frame_plan(hw: tuple[int, int], spec: ClipSpec, rng: np.random.Generator) -> FramePlan:
    """The :class:`FramePlan` of one RGB sample of frames of size ``hw``: training: TSN multi-scale crop
    box, flip, colour-jitter factors (drawn as :func:`make_sample`'s pipeline draws them, so a seeded
    ``rng`` gives the same sample); validation: the optional short-side resize, then the centre crop."""
    s = spec.crop_size
    if spec.train:
        box = multi_scale_crop_box(hw, rng, spec.scales, spec.max_distort)
        flip = bool(rng.random() < spec.flip_ratio)
        jitter = draw_jitter(spec.color_jitter, rng) if spec.color_jitter is not None else None
        return FramePlan(None, box, (s, s), flip, jitter)
    short = _eval_resize(spec, hw)
    resize_hw = None
    if short is not None:  # as transforms.Resize
        scale = short / min(hw)
        resize_hw = (max(1, int(round(hw[0] * scale))), max(1, int(round(hw[1] * scale))))
    [(box, _)] = multi_crop_boxes(resize_hw or hw, s, 1)
    return FramePlan(resize_hw, box, (s, s), False, None)


_SCRATCH = threading.local()  # per thread (ClipCollate runs in several prefetch threads): one decode buffer


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """This thread's uint8 decode buffer of ``shape`` (``(H, W, 3)``), reallocated when the shape changes."""
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.shape != shape:
        buf = _SCRATCH.buf = np.empty(shape, np.uint8)
    return buf


def crop_frames(row: RowView, idx: np.ndarray, plan: FramePlan, out: np.ndarray, jitter_here: bool) -> np.ndarray:
    """Decode the stored frames ``idx`` of ``row`` and write their crops into ``out`` ``(T, S, S, 3)``.

    Each JPEG is decoded into one reused buffer (:func:`vidray.io.imcodec.decode_image` ``out=``), its
    crop resized straight into its slot of ``out``, flipped in place and (``jitter_here``) colour-
    jittered; a frame sampled twice is decoded once. The same OpenCV calls on the same pixels as the
    transform pipeline of :func:`make_sample` on whole decoded clips: bit-identical output, without a
    decoded clip, a crop copy or a flip copy per sample (``tests/test_train_data.py``).
    """
    import cv2

    if row._frames is None:
        raise ValueError(f"{row.video_id}: the frames column was not read")
    h, w = row.height, row.width
    buf = _scratch((h, w, 3))
    oh, ow = plan.out_hw
    x0, y0, x1, y1 = plan.box
    jit = None
    if jitter_here and plan.jitter is not None:
        names = ("brightness", "contrast", "saturation")
        jit = (dict(zip(names, plan.jitter[:3].astype(float).tolist())), [names[int(i)] for i in plan.jitter[3:]])
    idx = np.asarray(idx, dtype=np.int64)
    first: dict[int, int] = {}
    for k, i in enumerate(idx.tolist()):
        if i in first:
            out[k] = out[first[i]]
            continue
        first[i] = k
        img = decode_image(row._item(row._frames, i), row.encoding, (h, w, 3), out=buf)
        if plan.resize_hw is not None:
            img = cv2.resize(img, (plan.resize_hw[1], plan.resize_hw[0]), interpolation=cv2.INTER_LINEAR)
        crop = img[y0:y1, x0:x1]
        if crop.shape[:2] == (oh, ow):
            out[k] = crop
        else:
            cv2.resize(crop, (ow, oh), dst=out[k], interpolation=cv2.INTER_LINEAR)
        if plan.flip:
            cv2.flip(out[k], 1, dst=out[k])
        if jit is not None:
            out[k] = jitter_frame(out[k], *jit)
    return out


def make_sample(row: RowView, spec: ClipSpec, rng: np.random.Generator | None = None,
                out: np.ndarray | None = None) -> dict[str, Any]:
    """Sample, decode and augment one row: the SAME crop/flip/jitter for every frame and the flow.

    ``out``: a ``(T, S, S, 3)`` uint8 array (a slot of the batch) the frames are written into (RGB).

    Returns:
        ``imgs``: ``(T, S, S, 3)`` uint8 RGB (absent for ``modality=flow``);
        ``flow``: ``(T, 2L, S, S)`` float32 pixels of the crop grid, flow-x negated when flipped
        (absent for ``rgb``); ``label``: int (first label, -1 if none); ``targets``: ``(K,)`` float32
        multi-hot; ``indices``: ``(T,)`` stored-frame indices; ``flip``: bool; ``crop_box``.
    """
    rng = rng if rng is not None else np.random.default_rng()
    if spec.presampled:
        idx = np.arange(row.num_frames, dtype=np.int64)
        if idx.size != spec.clip_len:
            raise ValueError(f"{row.video_id}: a presampled row has {idx.size} frames, expected {spec.clip_len}")
    else:
        idx = sample_indices(row.frame_index, spec, rng)
    if spec.modality == "rgb":  # the fast path: decode straight into the batch (crop_frames)
        plan = draw_frame_plan((row.height, row.width), spec, rng)
        if out is None:
            out = np.empty((idx.size, spec.crop_size, spec.crop_size, 3), np.uint8)
        crop_frames(row, idx, plan, out, jitter_here=not spec.jitter_on_device)
        res_rgb: dict[str, Any] = {
            "label": _first_label(row.labels), "targets": multi_hot([row.labels], spec.num_classes)[0],
            "indices": idx, "flip": plan.flip, "crop_box": plan.box, "video_id": row.video_id, "imgs": out,
        }
        if spec.train and plan.jitter is not None and spec.jitter_on_device:
            res_rgb["jitter"] = plan.jitter
        return res_rgb
    flow = row.flow(idx) if spec.needs_flow else None
    res: dict[str, Any] = {"imgs": _geometry_source(row, idx, spec, flow), "flow": flow}
    if spec.train:
        train_pipeline(spec.crop_size, scales=spec.scales, max_distort=spec.max_distort, flip_ratio=spec.flip_ratio,
                       color_jitter=spec.color_jitter if spec.needs_frames else None,
                       jitter_on_device=spec.jitter_on_device)(res, rng)  # fmt: skip
        if not spec.jitter_on_device:
            res.pop("jitter", None)
    else:
        eval_pipeline(spec.crop_size, short_side=_eval_resize(spec, res["imgs"].shape[1:3]))(res, rng)
        res["flip"] = False
    res_out: dict[str, Any] = {
        "label": _first_label(row.labels),
        "targets": multi_hot([row.labels], spec.num_classes)[0],
        "indices": idx,
        "flip": bool(res.get("flip", False)),
        "crop_box": res.get("crop_box"),
        "video_id": row.video_id,
    }
    if spec.needs_frames:
        if out is not None:
            out[...] = res["imgs"]
        res_out["imgs"] = res["imgs"] if out is None else out
        if "jitter" in res:
            res_out["jitter"] = res["jitter"]
    if flow is not None:
        res_out["flow"] = np.ascontiguousarray(res["flow"], dtype=np.float32)
    return res_out


def apply_jitter(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Colour jitter of a float batch ``x`` ``(B, T, 3, H, W)`` in ``[0, 1]`` with per-sample
    ``params`` ``(B, 6)`` (:func:`vidray.data.transforms.draw_jitter`); every frame of a sample gets the same factors.

    torchvision's float semantics (each step clamped to ``[0, 1]``): brightness ``x*b``; contrast
    ``x*c + (1-c)*m`` with ``m`` the mean grey level of the frame; saturation ``x*s + (1-s)*g`` with
    ``g`` the per-pixel grey (``0.299 R + 0.587 G + 0.114 B``). In place; returns ``x``.
    """
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 1, 3, 1, 1)
    p = params.to(device=x.device, dtype=x.dtype)
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        for op in p[i, 3:].long().tolist():
            v = p[i, op]
            if op == 0:
                xi.mul_(v)
            else:
                grey = (xi * w).sum(dim=2, keepdim=True)
                ref = grey.mean(dim=(-2, -1), keepdim=True) if op == 1 else grey
                xi.mul_(v).add_((1 - v) * ref)
            xi.clamp_(0.0, 1.0)
    return x


def make_eval_views(row: RowView, spec: ClipSpec, num_clips: int, num_crops: int) -> dict[str, Any]:
    """Test-time views of one video: ``num_clips`` samples (:func:`eval_indices`) x ``num_crops`` crops.

    Returns ``imgs`` ``(num_clips * num_crops, T, S, S, 3)`` uint8 (clip-major: the crops of clip 0
    first) and/or ``flow`` ``(num_clips * num_crops, T, 2L, S, S)`` float32, plus ``indices``
    ``(num_clips, T)``. Flipped crops (10-crop) mirror the frames and negate flow-x.
    """
    idx = eval_indices(row.frame_index, spec, num_clips)
    flat = idx.reshape(-1)
    flow = row.flow(flat) if spec.needs_flow else None
    res: dict[str, Any] = {"imgs": _geometry_source(row, flat, spec, flow), "flow": flow}
    views = eval_pipeline(spec.crop_size, num_crops, short_side=_eval_resize(spec, res["imgs"].shape[1:3]))
    t = idx.shape[1]
    imgs, flows = [], []
    for c in range(num_clips):
        sl = slice(c * t, (c + 1) * t)
        part = views({"imgs": res["imgs"][sl], "flow": None if flow is None else res["flow"][sl]})
        imgs.append(part["imgs"])  # (V, T, S, S, 3)
        if flow is not None:
            flows.append(part["flow"])
    out: dict[str, Any] = {"indices": idx}
    if spec.needs_frames:
        out["imgs"] = np.concatenate(imgs)
    if flow is not None:
        out["flow"] = np.concatenate(flows).astype(np.float32, copy=False)
    return out


def collate_numpy(samples: Sequence[dict[str, Any]], spec: ClipSpec,
                  imgs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Stack samples into a batch of numpy arrays (keys and shapes as in :class:`ClipCollate`).
    ``imgs``: the batch's frames when the samples were already written into it (``make_sample(out=)``)."""
    b = len(samples)
    s, t = spec.crop_size, spec.clip_len
    out: dict[str, np.ndarray] = {
        "label": np.array([x["label"] for x in samples], dtype=np.int64),
        "targets": np.stack([x["targets"] for x in samples]) if b else np.zeros((0, spec.num_classes), np.float32),
        "flip": np.array([x["flip"] for x in samples], dtype=bool),
    }
    if spec.needs_frames:
        if imgs is not None:
            out["imgs"] = imgs
        else:
            out["imgs"] = np.stack([x["imgs"] for x in samples]) if b else np.zeros((0, t, s, s, 3), np.uint8)
        if spec.train and spec.color_jitter is not None and spec.jitter_on_device:
            out["jitter"] = np.stack([x["jitter"] for x in samples]) if b else np.zeros((0, 6), np.float32)
    if spec.needs_flow:
        out["flow"] = np.stack([x["flow"] for x in samples]) if b else np.zeros((0, t, 2, s, s), np.float32)
    return out


def collate_samples(samples: Sequence[dict[str, Any]], spec: ClipSpec,
                    imgs: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Stack samples into a batch of tensors (shapes in :class:`ClipCollate`)."""
    return {k: torch.from_numpy(v) for k, v in collate_numpy(samples, spec, imgs).items()}


def _decode_batch(rows: Sequence[RowView], spec: ClipSpec,
                  rng: np.random.Generator) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """:func:`make_sample` of every row, RGB frames written straight into one ``(B, T, S, S, 3)`` array."""
    imgs = None
    if spec.modality == "rgb":
        imgs = np.empty((len(rows), spec.clip_len, spec.crop_size, spec.crop_size, 3), np.uint8)
    samples = [make_sample(r, spec, rng, out=None if imgs is None else imgs[j]) for j, r in enumerate(rows)]
    return samples, imgs


def decode_augment_fn(table: pa.Table, spec: ClipSpec) -> dict[str, np.ndarray]:
    """``Dataset.map_batches(decode_augment_fn, fn_kwargs={"spec": spec}, batch_format="pyarrow")``:
    sample, decode and augment every row INSIDE the Ray Data task that read it, returning the numpy
    batch of :func:`collate_numpy` (uint8 frames: ``iter_torch_batches()`` then only converts). The
    training path: Ray Data spreads this work over every CPU of the cluster, and only T decoded frames
    per clip leave the task. Draws from OS entropy (a new sample every epoch)."""
    trace_placement("train_data_task")
    import cv2

    cv2.setNumThreads(1)  # Ray Data parallelises across tasks
    samples, imgs = _decode_batch(list(iter_rows(table)), spec, np.random.default_rng())
    return collate_numpy(samples, spec, imgs)


class ClipCollate(_CollateBase):
    """``iter_torch_batches(collate_fn=ClipCollate(spec))``: an Arrow batch of rows -> a batch of clips.

    Output (``B`` rows of the batch that this rank keeps):

    * ``imgs``: ``(B, T, S, S, 3)`` uint8 RGB (not for ``modality=flow``);
    * ``flow``: ``(B, T, 2L, S, S)`` float32 pixels (``flow`` / ``rgb+flow``);
    * ``label``: ``(B,)`` int64 first label (-1: none); ``targets``: ``(B, K)`` float32 multi-hot;
    * ``jitter``: ``(B, 6)`` float32 colour-jitter parameters (training with ``jitter_on_device``),
      applied by :func:`normalize_batch`;
    * ``flip``: ``(B,)`` bool; ``index``: ``(B,)`` int64 position of the video id in ``video_ids``
      (-1 when not given / unknown), to gather per-video scores without strings.

    With ``spec.decode_on == "gpu"`` nothing is decoded here: ``imgs`` is replaced by the sampled JPEGs
    and their crop plans (``jpeg``, ``jpeg_offsets``, ``plan``: :func:`collate_jpegs`), which
    :func:`normalize_batch` decodes on the training device.

    Args:
        spec: :class:`ClipSpec`.
        seed: base seed; each call draws a generator from ``(seed, rank, epoch, call number)``.
        rank, world_size: with ``shard_by_video=True`` only rows whose ``crc32(video_id) %
            world_size == rank`` are decoded (validation over an unsplit dataset: every video on
            exactly one rank, whatever the stream order).
        epoch: mixed into the seed.
        video_ids: ids to index (``index`` output).

    Called from Ray Data's prefetch threads (several at once): the call counter is locked; OpenCV
    releases the GIL while decoding and resizing, so threads overlap with the training step.
    """

    def __init__(
        self,
        spec: ClipSpec,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        shard_by_video: bool = False,
        video_ids: Sequence[str] | None = None,
    ) -> None:
        self.spec = spec
        self.seed, self.rank, self.world_size, self.epoch = int(seed), int(rank), int(world_size), int(epoch)
        self.shard_by_video = shard_by_video
        self.id_pos = {v: i for i, v in enumerate(video_ids or [])}
        self._lock = threading.Lock()
        self._calls = 0

    def keeps(self, video_id: str) -> bool:
        """Whether this rank handles ``video_id`` (always, unless ``shard_by_video``)."""
        if not self.shard_by_video or self.world_size == 1:
            return True
        return zlib.crc32(video_id.encode()) % self.world_size == self.rank

    def __call__(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        with self._lock:
            call = self._calls
            self._calls += 1
        rng = np.random.default_rng([self.seed, self.rank, self.epoch, call])
        rows = [r for r in iter_rows(batch) if self.keeps(r.video_id)]
        if self.spec.decode_on == "gpu":
            out = collate_jpegs(rows, self.spec, rng)
        else:
            samples, imgs = _decode_batch(rows, self.spec, rng)
            out = collate_samples(samples, self.spec, imgs)
        out["index"] = torch.tensor([self.id_pos.get(r.video_id, -1) for r in rows], dtype=torch.int64)
        return out


# --------------------------------------------------------------------------------------------
# decoding on the training device (input.decode_on: gpu)
# --------------------------------------------------------------------------------------------
PLAN_FIELDS = 9  # resize_h, resize_w (-1: none), x0, y0, x1, y1, out_h, out_w, flip


def collate_jpegs(rows: Sequence[RowView], spec: ClipSpec, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """``input.decode_on: gpu``: a batch of rows -> their sampled JPEGs and per-sample plans (no decoding).

    The random draws are :func:`make_sample`'s (sampling, then :func:`draw_frame_plan`), so a seeded
    ``rng`` gives the samples the CPU path gives. Output: ``jpeg`` uint8 ``(N,)`` (the ``B*T`` JPEGs
    back to back), ``jpeg_offsets`` int64 ``(B*T + 1,)``, ``plan`` int64 ``(B, 9)``, ``label``,
    ``targets``, ``flip`` and (training, jitter on the device) ``jitter``; :func:`decode_clips` (called
    by :func:`normalize_batch`) turns them into ``imgs``.
    """
    t = spec.clip_len
    bufs: list[np.ndarray] = []
    plans = np.zeros((len(rows), PLAN_FIELDS), np.int64)
    jitters, labels, targets = [], [], []
    for j, row in enumerate(rows):
        if row.encoding != "jpeg":
            raise ValueError(f"{row.video_id}: input.decode_on: gpu needs JPEG frames, the row holds {row.encoding!r}")
        if spec.presampled:
            idx = np.arange(row.num_frames, dtype=np.int64)
            if idx.size != t:
                raise ValueError(f"{row.video_id}: a presampled row has {idx.size} frames, expected {t}")
        else:
            idx = sample_indices(row.frame_index, spec, rng)
        p = draw_frame_plan((row.height, row.width), spec, rng)
        plans[j] = [*(p.resize_hw or (-1, -1)), *p.box, *p.out_hw, int(p.flip)]
        bufs += [row._item(row._frames, int(i)) for i in idx.tolist()]
        if spec.train and p.jitter is not None:
            jitters.append(p.jitter)
        labels.append(_first_label(row.labels))
        targets.append(row.labels)
    sizes = np.array([b.size for b in bufs], np.int64)
    out: dict[str, torch.Tensor] = {
        "jpeg": torch.from_numpy(np.concatenate(bufs) if bufs else np.zeros(0, np.uint8)),
        "jpeg_offsets": torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)),
        "plan": torch.from_numpy(plans),
        "label": torch.tensor(labels, dtype=torch.int64),
        "targets": torch.from_numpy(multi_hot(targets, spec.num_classes)) if rows
        else torch.zeros((0, spec.num_classes)),
        "flip": torch.from_numpy(plans[:, 8].astype(bool)),
    }
    if spec.train and spec.color_jitter is not None:
        out["jitter"] = torch.from_numpy(np.stack(jitters) if jitters else np.zeros((0, 6), np.float32))
    return out


def _resize_bilinear(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``(T, 3, h, w)`` float -> ``(T, 3, *hw)``: bilinear, half-pixel centres, no antialiasing (what
    OpenCV's ``INTER_LINEAR`` computes, in float instead of its 11-bit fixed point)."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return torch.nn.functional.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=False)


def decode_clips(batch: dict[str, torch.Tensor], device: torch.device | str | None = None) -> torch.Tensor:
    """The clips of a :func:`collate_jpegs` batch, decoded ON ``device``: ``(B, T, S, S, 3)`` uint8.

    All ``B*T`` JPEGs go to ``torchvision.io.decode_jpeg`` in one call (on a GPU: nvjpeg, batched);
    each sample's frames are then resized / cropped / resized to ``S`` / flipped as its plan says, in
    float on the device, rounded back to uint8. On the CPU this is the twin of the CPU path
    (:func:`crop_frames`): the same JPEG pixels, boxes and flips; the bilinear resizes may differ by
    one grey level (OpenCV's fixed point vs float: ~13% of the values of a resized crop;
    ``tests/test_train_data.py``).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    dev = torch.device(device) if device is not None else torch.device("cpu")
    data, offs, plans = batch["jpeg"], batch["jpeg_offsets"].tolist(), batch["plan"].tolist()
    b = len(plans)
    t = (len(offs) - 1) // max(b, 1)
    if b == 0:
        return torch.zeros((0, t, 1, 1, 3), dtype=torch.uint8, device=dev)
    chunks = [data[offs[k] : offs[k + 1]] for k in range(len(offs) - 1)]
    images = decode_jpeg(chunks, mode=ImageReadMode.RGB, device=dev)  # list of (3, H, W) uint8
    s_h, s_w = plans[0][6], plans[0][7]
    out = torch.empty((b, t, 3, s_h, s_w), dtype=torch.uint8, device=dev)
    for j, (rh, rw, x0, y0, x1, y1, oh, ow, flip) in enumerate(plans):
        x = torch.stack(images[j * t : (j + 1) * t]).float()
        if rh > 0:
            x = _resize_bilinear(x, (rh, rw))
        x = _resize_bilinear(x[:, :, y0:y1, x0:x1], (oh, ow))
        if flip:
            x = torch.flip(x, dims=(-1,))
        out[j] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out.permute(0, 1, 3, 4, 2)


# --------------------------------------------------------------------------------------------
# on-device normalisation
# --------------------------------------------------------------------------------------------
def normalize_batch(
    batch: dict[str, torch.Tensor],
    modality: str,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    flow_scale: float = 20.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Model input ``(B, T, C, S, S)`` float32 from a collated batch, on ``device``.

    * A :func:`collate_jpegs` batch (``input.decode_on: gpu``) is first decoded on ``device``
      (:func:`decode_clips`).
    * RGB: ``imgs`` uint8 ``(B, T, S, S, 3)`` -> ``x / 255`` -> colour jitter when the batch carries
      ``jitter`` (:func:`apply_jitter`) -> ``(x - mean) / std``, channels first.
    * Flow stream: ``flow`` ``(B, T, 2L, S, S)`` pixels -> minus each field's spatial mean (camera
      motion; two-stream convention), divided by ``flow_scale``.
    The one normalisation of vidray (training, validation, evaluation), done after the transfer so the
    host moves uint8 frames.
    """
    dev = torch.device(device) if device is not None else None
    if "jpeg" in batch:  # input.decode_on: gpu: the JPEGs are decoded here, on the device
        batch = {**batch, "imgs": decode_clips(batch, dev)}
    if modality in ("rgb", "rgb+flow"):
        u8 = batch["imgs"].to(dev, non_blocking=True) if dev is not None else batch["imgs"]
        b, t, h, w, _ = u8.shape
        x = torch.empty((b, t, 3, h, w), dtype=torch.float32, device=u8.device)
        x.copy_(u8.permute(0, 1, 4, 2, 3))  # one pass: uint8 HWC -> float CHW, contiguous
        m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 1, 3, 1, 1)
        sd = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 1, 3, 1, 1)
        if "jitter" in batch:
            apply_jitter(x.div_(255.0), batch["jitter"])
            return x.sub_(m).div_(sd)
        return x.sub_(m * 255.0).div_(sd * 255.0)  # (x/255 - m)/s without the extra pass
    if modality == "flow":
        f = batch["flow"].to(dev, non_blocking=True) if dev is not None else batch["flow"]
        f = f.float()
        return (f - f.mean(dim=(-2, -1), keepdim=True)).div_(flow_scale)
    raise ValueError(f"unknown modality {modality!r}")


def flow_target(batch: dict[str, torch.Tensor], device: torch.device | str | None = None) -> torch.Tensor:
    """ActionFlowNet target: the first flow field of every sampled frame, ``(B, T, 2, S, S)`` pixels
    (not mean-subtracted: the network regresses the displacement itself)."""
    f = batch["flow"][:, :, :2]
    return f.to(device, non_blocking=True).float() if device is not None else f.float()
