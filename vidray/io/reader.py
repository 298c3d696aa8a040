"""Read an ingest output back as numpy arrays (or as a Ray Dataset for training).

>>> ds = IngestDataset("runs/data")                      # doctest: +SKIP
>>> for video in ds.iter_videos(split="train"):          # doctest: +SKIP
...     video.frames.shape, video.flow.shape              # (T, H, W, 3), (T, 2L, Hf, Wf)

Only committed, undamaged parts are read (a clips part whose status rows exist and whose size is the
committed one, :mod:`vidray.io.dataset`), so a reader never sees the leftovers of a crashed writer.
Opening costs one LIST of ``status/``, the status snapshot (+ the few parts it does not cover) and one
LIST of ``clips/``: seconds at Sports-1M size, whatever the number of write tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vidray.io import dataset as fmt
from vidray.io.flowcodec import decode_flow_stack
from vidray.io.imcodec import decode_image
from vidray.io.schema import CLIP_SCHEMA
from vidray.io.store import Store


@dataclass
class VideoRecord:
    """One video with its chunks merged, decoded.

    Attributes:
        video_id, path, labels, split: from the manifest.
        frame_index: ``(T,)`` source frame numbers of the stored frames.
        frame_time_s: ``(T,)`` their times in seconds.
        frames: ``(T, H, W, 3)`` uint8 RGB.
        flow: ``(T, 2L, Hf, Wf)`` uint8 quantised flow (planes x1, y1, x2, y2, ...) or ``None``;
            :func:`vidray.io.flowcodec.dequantize_flow` turns it into pixels.
        flow_meta: algorithm, bound, step, stack_length, encoding, height, width (or ``None``).
        meta: the source columns (src_fps, src_frames, duration_s, width, height, rotation, codec).
    """

    video_id: str
    path: str
    labels: list[int]
    split: str
    frame_index: np.ndarray
    frame_time_s: np.ndarray
    frames: np.ndarray
    flow: np.ndarray | None
    flow_meta: dict | None
    meta: dict


def decode_frames_column(row: dict[str, Any]) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 from a row's ``frames`` cell."""
    shape = (row["frame_height"], row["frame_width"], 3)
    imgs = [decode_image(b, row["frame_encoding"], shape) for b in row["frames"]]
    return np.stack(imgs) if imgs else np.zeros((0, *shape), np.uint8)


def decode_flow_column(row: dict[str, Any]) -> np.ndarray | None:
    """``(T, 2L, Hf, Wf)`` uint8 from a row's ``flow`` cell (``None`` when flow is off)."""
    if row.get("flow") is None:
        return None
    m = row["flow_meta"]
    stacks = [decode_flow_stack(b, m["encoding"], m["stack_length"], m["height"], m["width"]) for b in row["flow"]]
    return np.stack(stacks)


class IngestDataset:
    """An ingest output folder (``clips/``, ``status/``, ``dataset.json``)."""

    def __init__(self, out: str | Path | Store):
        self.store = fmt.as_store(out)
        self.out = self.store.uri
        self.meta: dict = fmt.read_dataset_json(self.store)
        self._view: fmt.StatusView | None = None

    @property
    def view(self) -> fmt.StatusView:
        """The committed status rows and the clips listing (read once, on first use)."""
        if self._view is None:
            self._view = fmt.load_status(self.store)
            fmt.warn_damaged(self._view)
        return self._view

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes", []))

    @property
    def files(self) -> list[str]:
        """Committed clips parts (paths or URIs other tools can open)."""
        return fmt.clip_files(self.store, self.view)

    def status(self) -> pa.Table:
        """The status table (``STATUS_SCHEMA``): one row per manifest entry (the newest run's)."""
        from vidray.io.schema import STATUS_SCHEMA

        return self.view.effective().drop_columns(["part"]).cast(STATUS_SCHEMA)

    def table(self, columns: list[str] | None = None, split: str | None = None) -> pa.Table:
        """All committed clip rows (optionally some columns / one split) as one Arrow table."""
        parts = [pq.read_table(f, columns=columns, schema=CLIP_SCHEMA, filesystem=self.store.fs) for f in self._paths()]
        t = pa.concat_tables(parts) if parts else CLIP_SCHEMA.empty_table()
        if columns is not None:
            t = t.select(columns)
        if split is not None:
            import pyarrow.compute as pc

            if "split" not in t.column_names:
                raise ValueError("filtering by split needs the 'split' column")
            t = t.filter(pc.equal(t["split"], split))
        return t

    def iter_tables(self, columns: list[str] | None = None, split: str | None = None) -> Iterator[pa.Table]:
        """The committed clips parts one Arrow table at a time (some ``columns``, one ``split``)."""
        import pyarrow.compute as pc

        if columns is not None and split is not None and "split" not in columns:
            columns = [*columns, "split"]
        for f in self._paths():
            t = pq.read_table(f, columns=columns, schema=CLIP_SCHEMA, filesystem=self.store.fs)
            yield t if split is None else t.filter(pc.equal(t["split"], split))

    def iter_videos(self, split: str | None = None, decode: bool = True) -> Iterator[VideoRecord]:
        """Videos in part order, chunks merged in ``chunk_index`` order (:func:`vidray.io.dataset.
        group_chunks`, streaming), frames/flow decoded."""

        def rows() -> Iterator[tuple[str, int, int, dict]]:
            for t in self.iter_tables(split=split):
                for row in t.to_pylist():
                    yield row["video_id"], row["chunk_index"], row["num_chunks"], row

        for chunks in fmt.group_chunks(rows()):
            yield self._record(chunks, decode)

    @staticmethod
    def _record(chunks: list[dict], decode: bool) -> VideoRecord:
        r0 = chunks[0]
        frames = np.concatenate([decode_frames_column(r) for r in chunks]) if decode else np.zeros(0)
        flows = [decode_flow_column(r) for r in chunks] if decode else [None]
        flow = np.concatenate(flows) if flows and flows[0] is not None else None
        meta = {k: r0[k] for k in ("src_fps", "src_frames", "duration_s", "width", "height", "rotation", "codec")}
        return VideoRecord(
            video_id=r0["video_id"], path=r0["path"], labels=list(r0["labels"]), split=r0["split"],
            frame_index=np.concatenate([np.asarray(r["frame_index"], np.int64) for r in chunks]),
            frame_time_s=np.concatenate([np.asarray(r["frame_time_s"], np.float32) for r in chunks]),
            frames=frames, flow=flow, flow_meta=r0["flow_meta"], meta=meta,
        )

    def _paths(self) -> list[str]:
        """Committed clips parts as paths on :attr:`store`'s filesystem."""
        return [self.store.path(c) for c in self.view.clip_parts()]

    def ray_dataset(self, columns: list[str] | None = None):
        """A ``ray.data.Dataset`` over the committed clips parts (for training)."""
        import ray.data

        return ray.data.read_parquet(self.files, columns=columns, schema=CLIP_SCHEMA)
