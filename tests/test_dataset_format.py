"""The dataset format at corpus scale, without Ray: per-task parts, the driver's status snapshots at
every kill point, runs superseding failures, damaged (truncated / missing) clips parts, parts written
before runs were numbered."""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from vidray.io import dataset as fmt
from vidray.io.schema import CLIP_SCHEMA, STATUS_SCHEMA
from vidray.io.store import Store


def _rows(ids: list[str], status: str = "ok", run_row0: int = 0) -> tuple[pa.Table, pa.Table]:
    """(clip rows, status rows) of fake videos (one 3-byte frame each)."""
    clips = pa.Table.from_pylist([{"video_id": v, "path": f"{v}.mp4", "labels": [i % 3], "split": "train",
                                   "chunk_index": 0, "num_chunks": 1, "frames": [b"jpg"], "frame_index": [0],
                                   "frame_encoding": "jpeg", "frame_height": 1, "frame_width": 1}
                                  for i, v in enumerate(ids)], schema=CLIP_SCHEMA)  # fmt: skip
    status = pa.Table.from_pylist([{"video_id": v, "path": f"{v}.mp4", "manifest_row": run_row0 + i,
                                    "labels": [i % 3], "split": "train", "status": status,
                                    "error_type": "" if status == "ok" else "VideoDecodeError",
                                    "error": "" if status == "ok" else f"{v}.mp4: bad", "num_frames": 1,
                                    "num_flow": 0, "num_chunks": 1, "bytes": 3, "seconds": 0.1}
                                   for i, v in enumerate(ids)], schema=STATUS_SCHEMA)  # fmt: skip
    return clips, status


def _commit(st: Store, ids: list[str], run: int = 1, status: str = "ok") -> dict:
    clips, stat = _rows(ids, status)
    w = fmt.PartWriter(st, run=run)
    if status == "ok":
        w.add_clips(clips)
    w.add_status(stat)
    return w.commit()


@pytest.fixture()
def st(tmp_path) -> Store:
    s = Store(tmp_path / "out")
    for d in (fmt.CLIPS_DIR, fmt.STATUS_DIR):
        s.makedirs(d)
    for k in range(20):  # 20 parts of 4 videos; part 7 failed
        _commit(s, [f"v{4 * k + j:03d}" for j in range(4)], status="failed" if k == 7 else "ok")
    return s


def _ids(st: Store) -> list[str]:
    return fmt.read_status(st)["video_id"].to_pylist()


def _status_files(st: Store) -> list[str]:
    return st.list(fmt.STATUS_DIR, "", ".parquet")


def test_compaction_then_a_reader_reads_one_status_file(st):
    before = fmt.load_status(st)
    assert before.files_read == 20 and len(before.clip_parts()) == 19
    fmt.compact(st)
    v = fmt.load_status(st)
    assert v.files_read == 1 and _status_files(st) == ["compacted-00000001.parquet"]
    assert sorted(_ids(st)) == [f"v{i:03d}" for i in range(80)] and v.clip_parts() == before.clip_parts()
    assert v.table.num_rows == 80 and set(v.table.column_names) == set(STATUS_SCHEMA.names) | {"part"}


def test_killed_while_writing_the_snapshot_leaves_the_parts(st, monkeypatch):
    real = pq.ParquetWriter.close

    def die(self):  # the temp snapshot is written, never renamed into place
        real(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(pq.ParquetWriter, "close", die)
    with pytest.raises(KeyboardInterrupt):
        fmt.compact(st)
    monkeypatch.undo()
    v = fmt.load_status(st)
    assert v.snapshot is None and v.files_read == 20 and sorted(_ids(st)) == sorted(set(_ids(st)))
    assert len(_ids(st)) == 80


def test_killed_after_the_snapshot_commit_before_the_deletes(st, monkeypatch):
    monkeypatch.setattr(fmt, "_delete", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        fmt.compact(st)
    v = fmt.load_status(st)  # the snapshot + 20 covered parts still on disk: the parts are ignored
    assert v.files_read == 1 and len(v.stale) == 20 and len(_ids(st)) == 80 == len(set(_ids(st)))
    monkeypatch.undo()
    fmt.compact(st)
    assert _status_files(st) == ["compacted-00000001.parquet"]


def test_an_older_snapshot_left_behind_and_new_parts(st, monkeypatch):
    fmt.compact(st)
    for k in range(20, 25):
        _commit(st, [f"v{4 * k + j:03d}" for j in range(4)])
    real = fmt._delete
    monkeypatch.setattr(fmt, "_delete", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        fmt.compact(st)  # snapshot 2 committed; snapshot 1 and the 5 parts not deleted
    monkeypatch.setattr(fmt, "_delete", real)
    v = fmt.load_status(st)
    assert v.snapshot == "compacted-00000002.parquet" and v.files_read == 1 and len(v.stale) == 6
    assert len(_ids(st)) == 100 == len(set(_ids(st)))
    fmt.compact(st)
    assert _status_files(st) == ["compacted-00000002.parquet"]


def test_a_retried_task_rewriting_a_covered_part_adds_nothing(st):
    fmt.compact(st)
    _commit(st, [f"v{j:03d}" for j in range(4)])  # Ray retried an already committed task: same key
    v = fmt.load_status(st)
    assert v.files_read == 1 and len(v.stale) == 1 and len(_ids(st)) == 80


def test_a_reader_racing_a_compaction_lists_again(st, monkeypatch):
    real = fmt._listing
    calls = []

    def listing_then_compaction(store):
        out = real(store)
        calls.append(out)
        if len(calls) == 1:
            fmt.compact(store)  # between this reader's LIST and its reads: the parts it listed are gone
        return out

    monkeypatch.setattr(fmt, "_listing", listing_then_compaction)
    v = fmt.load_status(st)
    assert len(calls) == 3 and v.files_read == 1 and v.table.num_rows == 80  # compact's LIST, 2 of the reader


def test_retry_failed_rows_of_a_later_run_supersede_without_rewriting(st):
    fmt.compact(st)
    failed = [f"v{28 + j:03d}" for j in range(4)]
    assert set(fmt.read_status(st).filter(pc.equal(fmt.read_status(st)["status"], "failed"))["video_id"].to_pylist()) \
        == set(failed)
    mtime = st.mtime_ns("status/compacted-00000001.parquet")
    r = _commit(st, failed, run=2)  # the same videos in run 2: another key, nothing rewritten
    assert st.mtime_ns("status/compacted-00000001.parquet") == mtime and r["part"] != fmt.part_name(
        fmt.part_key(failed, 1))
    eff = fmt.read_status(st)
    assert eff.num_rows == 80 and pc.sum(pc.equal(eff["status"], "failed")).as_py() == 0
    assert fmt.load_status(st).table.num_rows == 84  # the old rows are kept, superseded
    ids = [r for f in fmt.clip_files(st) for r in pq.read_table(f, columns=["video_id"])["video_id"].to_pylist()]
    assert sorted(ids) == [f"v{i:03d}" for i in range(80)]  # clip rows exactly once


def test_a_truncated_clips_part_is_skipped_then_reingested(st, caplog):
    fmt.compact(st)
    victim = sorted(st.list(fmt.CLIPS_DIR, "part-", ".parquet"))[3]
    path = st.path(f"{fmt.CLIPS_DIR}/{victim}")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    lost = set(fmt.load_status(st).table.filter(pc.equal(fmt.load_status(st).table["part"],
                                                         fmt.key_of(victim)))["video_id"].to_pylist())  # fmt: skip
    with caplog.at_level(logging.WARNING):
        files = fmt.clip_files(st)
    assert len(files) == 18 and not any(victim in f for f in files)
    assert victim in caplog.text and "truncated" in caplog.text
    assert len(fmt.read_status(st)) == 76  # the damaged part's rows do not count as done
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        view = fmt.prepare_run(st)  # the next ingest: rows dropped, file deleted, warned
    assert victim in caplog.text and not st.exists(f"{fmt.CLIPS_DIR}/{victim}") and not view.damaged
    assert set(view.effective()["video_id"].to_pylist()).isdisjoint(lost) and view.effective().num_rows == 76
    _commit(st, sorted(lost), run=2)  # ingested again
    assert len(fmt.read_status(st)) == 80 and len(fmt.clip_files(st)) == 19
    # a missing clips part is damaged too
    st.delete(f"{fmt.CLIPS_DIR}/{sorted(st.list(fmt.CLIPS_DIR, 'part-', '.parquet'))[0]}")
    assert len(fmt.load_status(st).damaged) == 1 and "missing" in next(iter(fmt.load_status(st).damaged.values()))


def test_orphans_and_temp_files_are_deleted_before_a_run(st, monkeypatch):
    import os

    marker = st.path("killed")  # the writer dies between its clips commit and its status commit
    clips, stat = _rows(["o1", "o2"])
    w = fmt.PartWriter(st, run=1, fault_kill_once=marker)
    w.add_clips(clips)
    w.add_status(stat)
    monkeypatch.setattr(os, "kill", lambda *a: (_ for _ in ()).throw(SystemExit))
    with pytest.raises(SystemExit):
        w.commit()
    monkeypatch.undo()
    open(st.path(f"{fmt.CLIPS_DIR}/.part-x.y.tmp"), "wb").write(b"half")
    assert len(st.list(fmt.CLIPS_DIR, "part-", ".parquet")) == 20  # the orphan is not counted...
    assert len(fmt.clip_files(st)) == 19  # ...nor read
    view = fmt.prepare_run(st)
    assert len(st.list(fmt.CLIPS_DIR, "", "")) == 19 and view.files_read == 1
    assert "o1" not in view.effective()["video_id"].to_pylist()


def test_parts_written_before_runs_and_sizes_still_read_and_compact(tmp_path):
    st = Store(tmp_path / "old")
    for d in (fmt.CLIPS_DIR, fmt.STATUS_DIR):
        st.makedirs(d)
    base = [f.name for f in STATUS_SCHEMA if f.name not in ("run", "clips_bytes")]
    for k in range(3):  # the layout of earlier versions: key without run, status without run/clips_bytes
        ids = [f"w{4 * k + j}" for j in range(4)]
        clips, stat = _rows(ids)
        name = fmt.part_name(fmt.part_key(ids))
        pq.write_table(clips, st.path(f"{fmt.CLIPS_DIR}/{name}"))
        pq.write_table(stat.select(base), st.path(f"{fmt.STATUS_DIR}/{name}"))
    assert len(fmt.read_status(st)) == 12 and len(fmt.clip_files(st)) == 3
    fmt.compact(st)
    t = fmt.load_status(st).table
    assert t.num_rows == 12 and t["run"].null_count == 12 and len(fmt.clip_files(st)) == 3
    _commit(st, ["w0"], run=1, status="failed")  # a later run's row wins over run "0"
    assert fmt.read_status(st).filter(pc.equal(fmt.read_status(st)["video_id"], "w0"))["status"].to_pylist() == \
        ["failed"]


def test_the_compactor_thread_compacts_while_parts_arrive(tmp_path):
    import time

    st = Store(tmp_path / "c")
    for d in (fmt.CLIPS_DIR, fmt.STATUS_DIR):
        st.makedirs(d)
    with fmt.Compactor(st, every_parts=5, every_s=3600, poll_s=0.05) as c:
        for k in range(12):
            _commit(st, [f"c{k}"])
            time.sleep(0.03)
        deadline = time.time() + 10
        while len(c.compactions) < 2 and time.time() < deadline:
            time.sleep(0.05)
    assert len(c.compactions) >= 2 and len(fmt.read_status(st)) == 12
    assert len(st.list(fmt.STATUS_DIR, "part-", ".parquet")) < 5


def test_row_groups_follow_row_group_bytes(tmp_path):
    st = Store(tmp_path / "rg")
    for d in (fmt.CLIPS_DIR, fmt.STATUS_DIR):
        st.makedirs(d)
    w = fmt.PartWriter(st, run=1, row_group_bytes=2_000)
    for k in range(10):
        clips, stat = _rows([f"r{k}"])
        clips = clips.set_column(clips.schema.get_field_index("frames"), "frames",
                                 pa.array([[b"x" * 900]], pa.list_(pa.binary())))
        w.add_clips(clips)
        w.add_status(stat)
    r = w.commit()
    meta = pq.ParquetFile(st.path(f"{fmt.CLIPS_DIR}/{r['part']}")).metadata
    assert r["videos"] == 10 and meta.num_row_groups == r["row_groups"] and 3 <= r["row_groups"] <= 6
    assert r["bytes"] == st.size(f"{fmt.CLIPS_DIR}/{r['part']}")
    assert set(pq.read_table(st.path(f"{fmt.STATUS_DIR}/{r['part']}"))["clips_bytes"].to_pylist()) == {r["bytes"]}
