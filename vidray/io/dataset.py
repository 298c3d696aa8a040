"""The ingest dataset format on disk: parts, the commit protocol, the status table, ``dataset.json``.

An ingest output (a local folder or an object-store prefix, through :class:`vidray.io.store.Store`)::

    OUT/dataset.json                 format, schema version, state, manifest facts, classes, config, counts
    OUT/clips/part-<key>.parquet     clip rows (vidray.io.schema.CLIP_SCHEMA) of one write task
    OUT/status/part-<key>.parquet    one status row per manifest entry of that task (STATUS_SCHEMA)

The commit protocol (every writer goes through :class:`PartWriter`):

1. clip rows stream into a hidden temporary file ``clips/.part-<uuid>.<uuid>.tmp``;
2. the task's part name is ``part-<key>.parquet`` with ``key = part_key(its video ids)``, so a task that
   Ray retries after its worker died rewrites the SAME names (no duplicate, nothing lost);
3. the clips part is committed first (rename; on an object store a complete object appears at once),
   then the status part. A clips part counts only once its status part exists
   (:func:`committed_parts`); a crash between the two leaves an orphan that :func:`clean_orphans`
   deletes before the next run.

Readers (:mod:`vidray.io.reader`, training, evaluation) see only committed parts.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidray.io.schema import CLIP_SCHEMA, SCHEMA_VERSION, STATUS_SCHEMA
from vidray.io.store import Store

__all__ = [
    "FORMAT",
    "CLIPS_DIR",
    "STATUS_DIR",
    "part_key",
    "as_store",
    "PartWriter",
    "write_status_part",
    "committed_parts",
    "clip_files",
    "read_status",
    "clean_orphans",
    "drop_failed",
    "read_dataset_json",
    "write_dataset_json",
    "group_chunks",
]

FORMAT = "vidray-ingest"
CLIPS_DIR = "clips"
STATUS_DIR = "status"
DATASET_JSON = "dataset.json"


def part_key(video_ids: Iterable[str]) -> str:
    """Deterministic part name of a set of videos (a retried task rewrites the same files)."""
    h = hashlib.sha256("\n".join(sorted(video_ids)).encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:20]


def as_store(out: str | os.PathLike | Store) -> Store:
    """``out`` as a :class:`Store` (a path or URI is opened)."""
    return out if isinstance(out, Store) else Store(out)


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
class PartWriter:
    """One write task's clips part and status part, committed atomically in that order.

    >>> w = PartWriter(store)                                  # doctest: +SKIP
    >>> w.add_clips(clip_table); w.add_status(status_table)    # any number of times
    >>> w.commit()                                             # -> {"videos": n, "rows": m, "part": name}

    ``fault_kill_once``: a test hook, the path of a marker file: the first writer to find it absent
    creates it and SIGKILLs its own process BETWEEN the clips commit and the status commit (the worst
    moment), so a retry must leave no duplicate and lose nothing.
    """

    def __init__(self, store: Store, fault_kill_once: str | None = None) -> None:
        self.store = store
        self.fault_kill_once = fault_kill_once
        self._tmp = store.temp_name(f"{CLIPS_DIR}/part-{uuid.uuid4().hex}")
        self._writer: pq.ParquetWriter | None = None
        self._status: list[pa.Table] = []
        self._rows = 0

    def add_clips(self, table: pa.Table) -> None:
        """Append clip rows (``CLIP_SCHEMA`` columns) to the temporary clips file."""
        if table.num_rows == 0:
            return
        t = table.select(CLIP_SCHEMA.names).cast(CLIP_SCHEMA)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.store.path(self._tmp), CLIP_SCHEMA, filesystem=self.store.fs)
        self._writer.write_table(t)
        self._rows += t.num_rows

    def add_status(self, table: pa.Table) -> None:
        """Append status rows (``STATUS_SCHEMA`` columns), one per manifest entry of this task."""
        if table.num_rows:
            self._status.append(table.select(STATUS_SCHEMA.names).cast(STATUS_SCHEMA))

    def commit(self) -> dict[str, Any]:
        """Commit clips then status under ``part-<part_key(video ids)>``; returns what was written."""
        try:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if not self._status:
                return {"videos": 0, "rows": 0}
            status = pa.concat_tables(self._status)
            ids = status["video_id"].to_pylist()
            final = f"part-{part_key(ids)}.parquet"
            if self._rows:
                # a rename on filesystems; on object stores a server-side copy of a complete object,
                # which is never visible half-written either
                self.store.commit(self._tmp, f"{CLIPS_DIR}/{final}")
            if self.fault_kill_once and not os.path.exists(self.fault_kill_once):
                Path(self.fault_kill_once).write_text(f"killed pid {os.getpid()} before committing {final}\n")
                os.kill(os.getpid(), signal.SIGKILL)
            self.store.write_table(status, f"{STATUS_DIR}/{final}")
            return {"videos": len(ids), "rows": self._rows, "part": final}
        finally:
            self.abort()

    def abort(self) -> None:
        """Close and delete the temporary clips file (after a commit it is already gone)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.store.delete(self._tmp)


def write_status_part(store: Store, status: pa.Table) -> str:
    """Commit a status-only part (entries without clip rows, e.g. videos lost with their tasks)."""
    t = status.select(STATUS_SCHEMA.names).cast(STATUS_SCHEMA)
    name = f"part-{part_key(t['video_id'].to_pylist())}.parquet"
    store.write_table(t, f"{STATUS_DIR}/{name}")
    return name


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def committed_parts(out: str | os.PathLike | Store) -> list[tuple[str | None, str]]:
    """``(clips_part or None, status_part)`` paths relative to ``out`` for every committed part."""
    st = as_store(out)
    clips = set(st.list(CLIPS_DIR, "part-", ".parquet"))
    return [(f"{CLIPS_DIR}/{n}" if n in clips else None, f"{STATUS_DIR}/{n}")
            for n in st.list(STATUS_DIR, "part-", ".parquet")]  # fmt: skip


def clip_files(out: str | os.PathLike | Store) -> list[str]:
    """Paths/URIs of the committed clips parts (what readers and training read)."""
    st = as_store(out)
    return [st.url(c) for c, _ in committed_parts(st) if c is not None]


def read_status(out: str | os.PathLike | Store) -> pa.Table:
    """The whole status table (``STATUS_SCHEMA``), one row per manifest entry."""
    st = as_store(out)
    parts = [st.read_table(s, schema=STATUS_SCHEMA) for _, s in committed_parts(st)]
    return pa.concat_tables(parts) if parts else STATUS_SCHEMA.empty_table()


def clean_orphans(st: Store) -> int:
    """Delete temp files and clips parts whose status part was never committed. Returns how many."""
    n = 0
    for d in (CLIPS_DIR, STATUS_DIR):
        for tmp in st.list(d, ".", ".tmp"):
            st.delete(f"{d}/{tmp}")
            n += 1
    status = set(st.list(STATUS_DIR, "part-", ".parquet"))
    for name in st.list(CLIPS_DIR, "part-", ".parquet"):
        if name not in status:
            st.delete(f"{CLIPS_DIR}/{name}")
            n += 1
    return n


def drop_failed(st: Store) -> int:
    """For ``--retry-failed``: remove failed rows from the status parts. Returns how many."""
    dropped = 0
    for cp, sp in committed_parts(st):
        t = st.read_table(sp, schema=STATUS_SCHEMA)
        keep = pc.not_equal(t["status"], "failed")
        n_failed = t.num_rows - pc.sum(keep.cast(pa.int64())).as_py()
        if n_failed == 0:
            continue
        dropped += n_failed
        kept = t.filter(keep)
        if kept.num_rows == 0:
            if cp is not None:  # a status part with only failures has no clip rows
                raise RuntimeError(f"{st.url(cp)} holds rows for a part whose entries all failed")
            st.delete(sp)
        else:
            st.write_table(kept, sp)
    return dropped


# ------------------------------------------------------------------------------------------------
# dataset.json
# ------------------------------------------------------------------------------------------------
def read_dataset_json(st: Store) -> dict[str, Any]:
    """``dataset.json`` of an ingest output; ``FileNotFoundError`` / ``ValueError`` (schema) naming it."""
    if not st.exists(DATASET_JSON):
        raise FileNotFoundError(f"{st.uri} is not an ingest output (no {DATASET_JSON})")
    meta = st.read_json(DATASET_JSON)
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{st.uri}: schema version {meta.get('schema_version')} is not {SCHEMA_VERSION}; re-ingest it")
    return meta


def write_dataset_json(st: Store, *, vidray_version: str, state: str, manifest: dict[str, Any],
                       classes: Sequence[str], data_hash: str, config: dict[str, Any],
                       counts: dict[str, Any], **extra: Any) -> None:  # fmt: skip
    """Write ``dataset.json`` atomically (``state``: ``running`` | ``complete``)."""
    meta = {
        "format": FORMAT, "schema_version": SCHEMA_VERSION, "vidray_version": vidray_version, "state": state,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "manifest": manifest, "classes": list(classes),
        "data_hash": data_hash, "config": config, "counts": counts, **extra,
    }  # fmt: skip
    st.write_json(meta, DATASET_JSON)


# ------------------------------------------------------------------------------------------------
# long videos: chunk rows back to one video
# ------------------------------------------------------------------------------------------------
R = TypeVar("R")


def group_chunks(rows: Iterable[tuple[str, int, int, R]]) -> Iterator[list[R]]:
    """Group ``(video_id, chunk_index, num_chunks, row)`` items into one list per video, in
    ``chunk_index`` order, streaming: a video is yielded as soon as all its ``num_chunks`` rows were
    seen (only incomplete videos are held). Videos whose chunks never all arrive are yielded at the
    end with what exists."""
    pending: dict[str, list[tuple[int, R]]] = {}
    for vid, chunk, nch, row in rows:
        if nch <= 1:
            yield [row]
            continue
        parts = pending.setdefault(vid, [])
        parts.append((int(chunk), row))
        if len(parts) == nch:
            del pending[vid]
            yield [r for _, r in sorted(parts, key=lambda x: x[0])]
    for parts in pending.values():
        yield [r for _, r in sorted(parts, key=lambda x: x[0])]
