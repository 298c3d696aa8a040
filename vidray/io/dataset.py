"""The ingest dataset format on disk: parts, the commit protocol, the status table, ``dataset.json``.

An ingest output (a local folder or an object-store prefix, through :class:`vidray.io.store.Store`)::

    OUT/dataset.json                    format, schema version, state, run counter, manifest facts,
                                        classes, config, counts
    OUT/clips/part-<key>.parquet        clip rows (vidray.io.schema.CLIP_SCHEMA) of one write task,
                                        sized by bytes (output.target_part_mb), row groups of
                                        output.row_group_mb
    OUT/status/part-<key>.parquet       the status rows (STATUS_SCHEMA) of one write task, until the
                                        driver compacts them into a snapshot
    OUT/status/compacted-<seq>.parquet  snapshot: every row of every part it covers + column ``part``

**The commit protocol** (every writer goes through :class:`PartWriter`):

1. clip rows stream into a hidden temporary file ``clips/.part-<uuid>.<uuid>.tmp``, one row group per
   ``row_group_mb`` (only one row group is held in memory);
2. the part name is ``part-<key>.parquet`` with ``key = part_key(its video ids, run)``: a task that Ray
   retries (its worker died) gets the same input bundle and rewrites the SAME names (no duplicate,
   nothing lost); the run number in the key keeps a later run (``--retry-failed``) off earlier names;
3. the clips part is committed first (rename; on an object store a complete object appears at once),
   then the status part, whose rows carry ``run`` and ``clips_bytes`` (the committed clips file's size).
   A clips part counts only once status rows of its key exist; a crash between the two leaves an
   orphan that :func:`prepare_run` deletes before the next run.

**Status that scales** (Sports-1M: resume, ``--retry-failed``, summaries and training must not read one
file per task). Tasks keep committing their own status parts (they stay the source of truth: a killed
driver loses nothing a task committed; the driver never appends to a shared file). The DRIVER folds them
into a snapshot (:func:`compact`: at the start of a run, every ``COMPACT_EVERY_PARTS`` new parts or
``COMPACT_EVERY_S`` seconds during it, and at the end): it streams the newest snapshot plus the parts it
does not cover into snapshot ``seq+1`` (atomic: temp + rename, or one object), THEN deletes the parts it
now covers and the older snapshot. Readers (:func:`load_status`) take one LIST, the newest snapshot and
the parts it does not cover; a part whose key is in the snapshot's ``part`` column is covered and
ignored even if its file is still there. Every kill point leaves a readable state:

* killed while writing the snapshot: no new snapshot is visible; the parts are all still there;
* killed after the snapshot commit, before or during the deletes: the leftover parts are covered
  (ignored, deleted by the next compaction), the older snapshot is not the newest (ignored, deleted);
* a retried write task rewriting a covered part (same key, same videos, same run): ignored, deleted;
* a reader racing a compaction (a file it listed was deleted) lists again.

Several rows per video may exist: the effective row (:func:`effective`) is the one of the highest
``run`` (``dataset.json`` keeps a run counter that the driver bumps before any task starts), so
``--retry-failed`` rewrites nothing: failed videos are queued again and their new rows supersede.

**Damaged parts.** Each status row records its clips part's byte size; a reader compares it with the
LIST it makes anyway: a clips part that is missing or has another size is *damaged*: readers skip it
(with a warning) and the next ingest deletes it and its status rows so its videos are ingested again.
Parts written before these columns existed are checked for existence only.

Readers (:mod:`vidray.io.reader`, training, evaluation) see only committed, undamaged parts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidray.io.schema import CLIP_SCHEMA, SCHEMA_VERSION, SNAPSHOT_SCHEMA, STATUS_SCHEMA
from vidray.io.store import Store

__all__ = [
    "FORMAT",
    "CLIPS_DIR",
    "STATUS_DIR",
    "COMPACT_EVERY_PARTS",
    "COMPACT_EVERY_S",
    "part_key",
    "as_store",
    "PartWriter",
    "write_status_part",
    "StatusView",
    "load_status",
    "effective",
    "read_status",
    "clip_files",
    "compact",
    "Compactor",
    "prepare_run",
    "read_dataset_json",
    "write_dataset_json",
    "group_chunks",
]

logger = logging.getLogger(__name__)

FORMAT = "vidray-ingest"
CLIPS_DIR = "clips"
STATUS_DIR = "status"
DATASET_JSON = "dataset.json"
COMPACT_EVERY_PARTS = 500
"""During a run the driver compacts once this many status parts are uncovered (a resume then reads
the snapshot plus fewer than this many parts: on S3 ~35 ms a part)."""
COMPACT_EVERY_S = 600.0
"""... or when any part has been uncovered for this long."""
SNAPSHOT_ROW_GROUP = 128 * 1024
_SNAP_RE = re.compile(r"^compacted-(\d{8})\.parquet$")
_PART_RE = re.compile(r"^part-([0-9A-Za-z_-]+)\.parquet$")
_THREADS = 16


def part_key(video_ids: Iterable[str], run: int | None = None) -> str:
    """Deterministic part name of a set of videos in a run (a retried task rewrites the same files).
    ``run=None`` is the key of parts written before runs were numbered."""
    salt = "" if run is None else f"run={int(run)}\n"
    h = hashlib.sha256((salt + "\n".join(sorted(video_ids))).encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:20]


def part_name(key: str) -> str:
    return f"part-{key}.parquet"


def key_of(name: str) -> str | None:
    """The key of a part file name (``None`` for anything else)."""
    m = _PART_RE.match(name)
    return m.group(1) if m else None


def as_store(out: str | os.PathLike | Store) -> Store:
    """``out`` as a :class:`Store` (a path or URI is opened)."""
    return out if isinstance(out, Store) else Store(out)


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
class PartWriter:
    """One write task's clips part and status part, committed atomically in that order.

    >>> w = PartWriter(store, run=1)                           # doctest: +SKIP
    >>> w.add_clips(clip_table); w.add_status(status_table)    # any number of times
    >>> w.commit()                                             # -> {"videos": n, "rows": m, "part": name, ...}

    Clip rows are written in row groups of about ``row_group_bytes`` (one held in memory at a time).
    ``fault_kill_once``: a test hook, the path of a marker file: the first writer to find it absent
    creates it and SIGKILLs its own process BETWEEN the clips commit and the status commit (the worst
    moment), so a retry must leave no duplicate and lose nothing.
    """

    def __init__(self, store: Store, run: int = 0, row_group_bytes: float = 64e6,
                 fault_kill_once: str | None = None) -> None:  # fmt: skip
        self.store = store
        self.run = int(run)
        self.row_group_bytes = max(1, int(row_group_bytes))
        self.fault_kill_once = fault_kill_once
        self._tmp = store.temp_name(f"{CLIPS_DIR}/part-{uuid.uuid4().hex}")
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0
        self._status: list[pa.Table] = []
        self._rows = 0
        self._groups = 0

    def add_clips(self, table: pa.Table) -> None:
        """Append clip rows (``CLIP_SCHEMA`` columns) to the temporary clips file."""
        if table.num_rows == 0:
            return
        t = table.select(CLIP_SCHEMA.names).cast(CLIP_SCHEMA)
        self._pending.append(t)
        self._pending_bytes += t.nbytes
        self._rows += t.num_rows
        if self._pending_bytes >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        t = pa.concat_tables(self._pending)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.store.path(self._tmp), CLIP_SCHEMA, filesystem=self.store.fs)
        self._writer.write_table(t, row_group_size=t.num_rows)  # exactly one row group
        self._groups += 1
        self._pending, self._pending_bytes = [], 0

    def add_status(self, table: pa.Table) -> None:
        """Append status rows (``STATUS_SCHEMA`` columns but ``run``/``clips_bytes``), one per manifest
        entry of this task."""
        if table.num_rows:
            self._status.append(table)

    def commit(self) -> dict[str, Any]:
        """Commit clips then status under ``part-<part_key(video ids, run)>``; returns what was written."""
        try:
            self._flush()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if not self._status:
                return {"videos": 0, "rows": 0}
            ids = pa.concat_tables([t.select(["video_id"]) for t in self._status])["video_id"].to_pylist()
            key = part_key(ids, self.run)
            final = part_name(key)
            size = self.store.size(self._tmp) if self._rows else 0
            status = _with_part_columns(pa.concat_tables([_status_columns(t) for t in self._status]), self.run,
                                        size or 0)  # fmt: skip
            if self._rows:
                # a rename on filesystems; on object stores a server-side copy of a complete object,
                # which is never visible half-written either
                self.store.commit(self._tmp, f"{CLIPS_DIR}/{final}")
            if self.fault_kill_once and not os.path.exists(self.fault_kill_once):
                Path(self.fault_kill_once).write_text(f"killed pid {os.getpid()} before committing {final}\n")
                os.kill(os.getpid(), signal.SIGKILL)
            self.store.write_table(status, f"{STATUS_DIR}/{final}")
            return {"videos": len(ids), "rows": self._rows, "part": final, "bytes": int(size or 0),
                    "row_groups": self._groups}  # fmt: skip
        finally:
            self.abort()

    def abort(self) -> None:
        """Close and delete the temporary clips file (after a commit it is already gone)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.store.delete(self._tmp)


_STATUS_BASE = [f.name for f in STATUS_SCHEMA if f.name not in ("run", "clips_bytes")]


def _status_columns(t: pa.Table) -> pa.Table:
    return t.select(_STATUS_BASE).cast(pa.schema([STATUS_SCHEMA.field(n) for n in _STATUS_BASE]))


def _with_part_columns(t: pa.Table, run: int, clips_bytes: int) -> pa.Table:
    n = t.num_rows
    t = t.append_column(STATUS_SCHEMA.field("run"), pa.array(np.full(n, run, np.int32)))
    t = t.append_column(STATUS_SCHEMA.field("clips_bytes"), pa.array(np.full(n, clips_bytes, np.int64)))
    return t.cast(STATUS_SCHEMA)


def write_status_part(store: Store, status: pa.Table, run: int = 0) -> str:
    """Commit a status-only part (entries without clip rows, e.g. videos lost with their tasks)."""
    t = _with_part_columns(_status_columns(status), run, 0)
    name = part_name(part_key(t["video_id"].to_pylist(), run))
    store.write_table(t, f"{STATUS_DIR}/{name}")
    return name


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
NEEDED = ("video_id", "status", "run", "clips_bytes", "manifest_row", "error_type")
PLAN_COLUMNS = ("video_id", "status", "run", "clips_bytes", "bytes")


@dataclass
class StatusView:
    """Everything committed to ``status/`` (and, with ``check_clips``, the LIST of ``clips/``).

    Attributes:
        table: the rows of the newest snapshot and of the parts it does not cover, with ``part``
            (``SNAPSHOT_SCHEMA``, or the columns asked for plus ``video_id, status, run, clips_bytes,
            part``); several rows per video where a later run superseded one (see :func:`effective`).
        snapshot: the snapshot read (``None``: none yet); ``seq`` its number (0: none).
        uncovered: part files read one by one; ``stale``: covered parts and older snapshots still there.
        clips: ``{clips part name: size}`` from the LIST (empty without ``check_clips``).
        damaged: ``{key: reason}`` of parts whose clips file is missing or has another size.
        files_read: status files read (the snapshot counts one).
    """

    table: pa.Table
    snapshot: str | None = None
    seq: int = 0
    uncovered: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    clips: dict[str, int] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)
    files_read: int = 0
    checked: bool = False

    def valid(self) -> pa.Table:
        """Rows of undamaged parts."""
        if not self.damaged:
            return self.table
        return self.table.filter(pc.invert(pc.is_in(self.table["part"], value_set=pa.array(list(self.damaged)))))

    def effective(self) -> pa.Table:
        """One row per video (the newest run's), from undamaged parts."""
        return effective(self.valid())

    def ok_parts(self) -> set[str]:
        """Keys of the parts that hold clip rows (an ``ok`` status row), damaged or not."""
        t = self.table
        return set(pc.unique(t.filter(pc.equal(t["status"], "ok"))["part"]).to_pylist()) if t.num_rows else set()

    def clip_parts(self) -> list[str]:
        """Relative paths of the committed, undamaged clips parts (what training reads)."""
        live = self.ok_parts() - set(self.damaged)
        return [f"{CLIPS_DIR}/{n}" for n in sorted(self.clips) if key_of(n) in live]

    def orphans(self) -> list[str]:
        """Clips part names with no status rows (a writer died between its two commits). Only
        meaningful while no writer runs."""
        parts = set(pc.unique(self.table["part"]).to_pylist()) if self.table.num_rows else set()
        return [n for n in sorted(self.clips) if key_of(n) not in parts]


def _read_part(st: Store, name: str, columns: list[str] | None) -> pa.Table:
    t = pq.read_table(st.path(f"{STATUS_DIR}/{name}"), filesystem=st.fs, schema=STATUS_SCHEMA, columns=columns)
    return t.append_column("part", pa.array([key_of(name)] * t.num_rows, pa.string()))


def _map(fn, items: list, threads: int = _THREADS) -> list:
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(threads, len(items))) as ex:
        return list(ex.map(fn, items))


def _listing(st: Store) -> tuple[list[str], list[str], str | None, int]:
    """(snapshots, parts) of ``status/``, the newest snapshot and its number."""
    names = st.list(STATUS_DIR, "", ".parquet")
    snaps = sorted(n for n in names if _SNAP_RE.match(n))
    parts = [n for n in names if key_of(n)]
    newest = snaps[-1] if snaps else None
    return snaps, parts, newest, int(_SNAP_RE.match(newest).group(1)) if newest else 0


def _load(st: Store, columns: list[str] | None) -> StatusView:
    snaps, parts, snap, seq = _listing(st)
    cols = None if columns is None else [c for c in dict.fromkeys([*columns, *NEEDED]) if c != "part"]
    tables, covered = [], set()
    if snap:
        t = pq.read_table(st.path(f"{STATUS_DIR}/{snap}"), filesystem=st.fs,
                          columns=None if cols is None else [*cols, "part"])  # fmt: skip
        tables.append(t.cast(_schema(cols)))
        covered = set(pc.unique(t["part"]).to_pylist())
    uncovered = [n for n in parts if key_of(n) not in covered]
    stale = snaps[:-1] + [n for n in parts if key_of(n) in covered]
    tables += _map(lambda n: _read_part(st, n, cols).cast(_schema(cols)), uncovered)
    table = pa.concat_tables(tables) if tables else _schema(cols).empty_table()
    return StatusView(table, snap, seq, uncovered, stale, files_read=len(uncovered) + (1 if snap else 0))


def _schema(cols: list[str] | None) -> pa.Schema:
    return SNAPSHOT_SCHEMA if cols is None else pa.schema([SNAPSHOT_SCHEMA.field(c) for c in [*cols, "part"]])


def load_status(out: str | os.PathLike | Store, columns: Sequence[str] | None = None, *,
                check_clips: bool = True) -> StatusView:  # fmt: skip
    """Everything committed so far (see :class:`StatusView`): one LIST of ``status/``, the newest
    snapshot, the parts it does not cover (read in parallel); with ``check_clips`` also one LIST of
    ``clips/`` (after the status LIST, so every committed part's clips are in it) and the damaged parts.
    A file deleted by a concurrent compaction between the LIST and the read makes it list again."""
    st = as_store(out)
    for attempt in range(5):
        try:
            view = _load(st, None if columns is None else list(columns))
            break
        except FileNotFoundError:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    if check_clips:
        view.clips = st.list_sizes(CLIPS_DIR, "part-", ".parquet")
        view.damaged = _damaged(view.table, view.clips)
        view.checked = True
    return view


def _damaged(t: pa.Table, clips: dict[str, int]) -> dict[str, str]:
    """Parts whose status says they hold clips but whose clips file is missing or has another size."""
    if t.num_rows == 0:
        return {}
    ok = t.filter(pc.equal(t["status"], "ok")).select(["part", "clips_bytes"])
    g = ok.group_by("part").aggregate([("clips_bytes", "max")])
    bad = {}
    for key, size in zip(g["part"].to_pylist(), g["clips_bytes_max"].to_pylist()):
        name = part_name(key)
        listed = clips.get(name)
        if listed is None:
            bad[key] = f"{CLIPS_DIR}/{name} is missing (its status rows say it holds clip rows)"
        elif size and listed != size:
            bad[key] = f"{CLIPS_DIR}/{name} has {listed:,} bytes but {size:,} were committed (truncated or replaced)"
    return bad


def effective(table: pa.Table) -> pa.Table:
    """One row per manifest entry: per ``video_id`` the row of the highest ``run`` (rows written before
    runs were numbered count as run 0; among equal runs the later row in ``table``). An entry skipped
    as a ``DuplicateVideoId`` is an entry of its own (keyed by its manifest row too)."""
    n = table.num_rows
    if n == 0:
        return table
    run = table["run"].to_numpy(zero_copy_only=False) if "run" in table.column_names else np.zeros(n)
    run = np.nan_to_num(np.asarray(run, dtype=np.float64), nan=0.0).astype(np.int64)
    key = (run << 32) | np.arange(n, dtype=np.int64)
    dup = pc.fill_null(pc.equal(table["error_type"], "DuplicateVideoId"), False)
    second = pc.if_else(dup, table["manifest_row"], pa.scalar(-1, pa.int64()))
    g = pa.table({"v": table["video_id"], "d": second, "k": key}).group_by(["v", "d"], use_threads=False).aggregate(
        [("k", "max")])
    if g.num_rows == n:
        return table
    keep = np.sort(g["k_max"].to_numpy() & 0xFFFFFFFF)
    return table.take(pa.array(keep))


def read_status(out: str | os.PathLike | Store) -> pa.Table:
    """The status table (``STATUS_SCHEMA``): one row per manifest entry (the newest run's), from the
    committed, undamaged parts."""
    view = load_status(out)
    warn_damaged(view)
    eff = view.effective()
    return eff.drop_columns(["part"]).cast(STATUS_SCHEMA)


def warn_damaged(view: StatusView) -> None:
    for reason in list(view.damaged.values())[:10]:
        logger.warning("damaged part skipped: %s; re-run the ingest to ingest its videos again", reason)
    if len(view.damaged) > 10:
        logger.warning("... %d damaged parts in all", len(view.damaged))


def clip_files(out: str | os.PathLike | Store, view: StatusView | None = None) -> list[str]:
    """Paths/URIs of the committed, undamaged clips parts (what readers and training read)."""
    st = as_store(out)
    if view is None or not view.checked:
        view = load_status(st, columns=["part"])
        warn_damaged(view)
    return [st.url(c) for c in view.clip_parts()]


# ------------------------------------------------------------------------------------------------
# compaction (the driver's; one compactor at a time)
# ------------------------------------------------------------------------------------------------
def compact(out: str | os.PathLike | Store, drop_parts: Iterable[str] = ()) -> dict[str, Any]:
    """Fold the parts the newest snapshot does not cover into snapshot ``seq+1`` (streaming: the old
    snapshot is copied row group by row group), without the rows of ``drop_parts``; then delete what
    it supersedes. Returns ``{"snapshot", "folded", "deleted", "rows", "seconds"}``."""
    st = as_store(out)
    t0 = time.perf_counter()
    drop = set(drop_parts)
    snaps, parts, snap, seq = _listing(st)
    covered: set[str] = set()
    if snap:
        covered = set(pc.unique(pq.read_table(st.path(f"{STATUS_DIR}/{snap}"), filesystem=st.fs,
                                              columns=["part"])["part"]).to_pylist())  # fmt: skip
    uncovered = [n for n in parts if key_of(n) not in covered]
    stale = snaps[:-1] + [n for n in parts if key_of(n) in covered]
    if not uncovered and not (drop & covered):
        _delete(st, stale)
        return {"snapshot": snap, "folded": 0, "deleted": len(stale), "rows": None,
                "seconds": time.perf_counter() - t0}  # fmt: skip
    new = f"compacted-{seq + 1:08d}.parquet"
    rel = f"{STATUS_DIR}/{new}"
    target = st.temp_name(rel) if st.local else rel
    dropper = pa.array(sorted(drop), pa.string())
    rows = 0

    def keep(t: pa.Table) -> pa.Table:
        return t.filter(pc.invert(pc.is_in(t["part"], value_set=dropper))) if drop else t

    writer = pq.ParquetWriter(st.path(target), SNAPSHOT_SCHEMA, filesystem=st.fs)
    try:
        if snap:
            with st.fs.open_input_file(st.path(f"{STATUS_DIR}/{snap}")) as f:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=SNAPSHOT_ROW_GROUP):
                    t = keep(pa.Table.from_batches([batch]).cast(SNAPSHOT_SCHEMA))
                    writer.write_table(t, row_group_size=SNAPSHOT_ROW_GROUP)
                    rows += t.num_rows
        for i in range(0, len(uncovered), 256):  # bounded memory: 256 parts at a time
            chunk = _map(lambda n: _read_part(st, n, None).cast(SNAPSHOT_SCHEMA), uncovered[i:i + 256])
            t = keep(pa.concat_tables(chunk))
            writer.write_table(t, row_group_size=SNAPSHOT_ROW_GROUP)
            rows += t.num_rows
        writer.close()
        writer = None
        if st.local:
            st.commit(target, rel)
    finally:
        if writer is not None:  # failed: nothing was committed (an object store never saw the object)
            writer.close()
            if st.local:
                st.delete(target)
    gone = uncovered + stale + ([snap] if snap else [])
    _delete(st, gone)
    return {"snapshot": new, "folded": len(uncovered), "deleted": len(gone), "rows": rows,
            "seconds": time.perf_counter() - t0}  # fmt: skip


def _delete(st: Store, names: list[str]) -> None:
    _map(lambda n: st.delete(f"{STATUS_DIR}/{n}"), names)


class Compactor:
    """A driver thread that compacts while tasks commit: when ``every_parts`` parts are uncovered, or
    any part has waited ``every_s`` seconds (one LIST of ``status/`` per ``poll_s``). Errors are logged,
    never raised (the next run compacts anyway)."""

    def __init__(self, store: Store, every_parts: int = COMPACT_EVERY_PARTS, every_s: float = COMPACT_EVERY_S,
                 poll_s: float = 15.0) -> None:  # fmt: skip
        self.store, self.every_parts, self.every_s, self.poll_s = store, every_parts, every_s, poll_s
        self.compactions: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vidray-compactor", daemon=True)

    def __enter__(self) -> "Compactor":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        first_seen: float | None = None
        while not self._stop.wait(self.poll_s):
            try:
                n = len(self.store.list(STATUS_DIR, "part-", ".parquet"))
                if n and first_seen is None:
                    first_seen = time.monotonic()
                if n >= self.every_parts or (n and time.monotonic() - (first_seen or 0) >= self.every_s):
                    self.compactions.append(compact(self.store))
                    first_seen = None
            except Exception as e:  # noqa: BLE001  (a failed compaction loses nothing)
                logger.warning("status compaction failed (the next one retries): %s", e)


def clean_temp(st: Store) -> int:
    """Delete temporary files of writers that died (only while no writer runs)."""
    n = 0
    for d in (CLIPS_DIR, STATUS_DIR):
        for tmp in st.list(d, ".", ".tmp"):
            st.delete(f"{d}/{tmp}")
            n += 1
    return n


def prepare_run(out: str | os.PathLike | Store, columns: Sequence[str] = PLAN_COLUMNS) -> StatusView:
    """Before a run starts its tasks (no writer running): delete temporary files, fold the status
    parts into a snapshot, drop the status rows of damaged parts (warning, naming the file) and delete
    their clips files and the orphans. Returns the view to plan from (``columns``)."""
    st = as_store(out)
    clean_temp(st)
    view = load_status(st, columns)
    for key, reason in view.damaged.items():
        logger.warning("damaged part: %s; its videos are ingested again", reason)
    if view.uncovered or view.damaged or view.stale:
        compact(st, drop_parts=view.damaged)
    doomed = view.orphans() + [part_name(k) for k in view.damaged if part_name(k) in view.clips]
    _map(lambda n: st.delete(f"{CLIPS_DIR}/{n}"), doomed)
    if view.uncovered or view.damaged or doomed:
        view = load_status(st, columns)
    return view


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
