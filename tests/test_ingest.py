"""Ingest end to end on a real local Ray: bad inputs, resume, retry, a killed worker, chunking."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from vidray.cli import main as cli_main
from vidray.config import IngestConfig, load_config
from vidray.ingest import process_video, run_ingest
from vidray.io.dataset import clip_files, read_status
from vidray.io.reader import IngestDataset
from vidray.synth import SynthSpec, render_video, write_video

FAST = ["resize.short_side=32", "sampling.mode=segments", "sampling.num_segments=4",
        "output.videos_per_task=2"]


def _cfg(*extra: str) -> IngestConfig:
    return load_config(IngestConfig, None, FAST + list(extra))


def _good_video(path: Path, frames: int = 12, seed: int = 0) -> None:
    spec = SynthSpec(width=32, height=32, frames=frames)
    write_video(path, render_video(spec, "right", np.random.default_rng(seed)), fps=12)


@pytest.fixture()
def messy_corpus(tmp_path, sample_videos):
    """Good videos of every kind plus every bad input the issue lists. Returns (manifest, root, expected)."""
    root = tmp_path / "root"
    (root / "v").mkdir(parents=True)
    _good_video(root / "v" / "good1.mp4", seed=1)
    _good_video(root / "v" / "good2.mp4", seed=2)
    _good_video(root / "v" / "one_frame.mp4", frames=1)
    for name in ("h264_340x256", "mpeg4_avi", "rotated"):
        shutil.copy(sample_videos[name], root / "v" / sample_videos[name].name)
    rng = np.random.default_rng(0)
    write_video(root / "v" / "hd1080.mp4", rng.integers(0, 255, (3, 1080, 1920, 3), dtype=np.uint8), fps=30)
    (root / "v" / "zero.mp4").write_bytes(b"")
    data = sample_videos["h264_340x256"].read_bytes()
    (root / "v" / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "v" / "text.mp4").write_text("this is not a video\n" * 50)
    import av

    with av.open(str(root / "v" / "audio_only.mp4"), "w") as c:
        s = c.add_stream("aac", rate=16000)
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        fr.sample_rate = 16000
        for p in list(s.encode(fr)) + list(s.encode()):
            c.mux(p)
    shutil.copy(root / "v" / "good1.mp4", os.fsencode(str(root / "v")) + b"/caf\xe9.mp4")
    (tmp_path / "outside.mp4").write_bytes((root / "v" / "good1.mp4").read_bytes())
    (root / "v" / "link.mp4").symlink_to(tmp_path / "outside.mp4")  # inside by name, outside by target
    lines = [
        ("v/good1.mp4", "right", "g1", "ok"),
        ("v/good2.mp4", "left", "g2", "ok"),
        ("v/one_frame.mp4", "right", "one", "ok"),
        ("v/clip_340x256.mp4", "left", "h264", "ok"),
        ("v/clip_320x240_mpeg4.avi", "right", "avi", "ok"),
        ("v/rotated_90.mp4", "left", "rot", "ok"),
        ("v/hd1080.mp4", "right", "hd", "ok"),
        ("v/zero.mp4", "left", "zero", "failed"),
        ("v/truncated.mp4", "left", "trunc", "failed"),
        ("v/text.mp4", "left", "text", "failed"),
        ("v/audio_only.mp4", "left", "audio", "failed"),
        ("v/missing.mp4", "left", "missing", "failed"),
        ("../outside.mp4", "left", "escape", "failed"),
        ("v/link.mp4", "left", "link", "failed"),  # caught by the task right before opening
        ("v/good2.mp4", "left", "g1", "skipped"),  # duplicate video id
    ]
    body = "path,label,video_id\n" + "".join(f"{p},{lab},{vid}\n" for p, lab, vid, _ in lines)
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(body.encode() + b"v/caf\xe9.mp4,right,cafe\n")
    expected = [(vid, st) for _, _, vid, st in lines] + [("cafe", "ok")]
    return manifest, root, expected


def test_every_input_appears_exactly_once_with_a_clear_reason(ray_local, messy_corpus, tmp_path):
    manifest, root, expected = messy_corpus
    out = tmp_path / "out"
    cfg = _cfg("flow.enabled=true", "flow.algorithm=dis_fast", "flow.stack_length=2")
    summary = run_ingest(manifest, out, root=root, cfg=cfg)

    status = read_status(out).to_pylist()
    assert len(status) == len(expected)  # exactly once per manifest entry
    by_row = {r["manifest_row"]: r for r in status}
    for row, (vid, want) in enumerate(expected):
        got = by_row[row]
        assert (got["video_id"], got["status"]) == (vid, want), got
        if want != "ok":
            assert got["error_type"] and got["error"]
    reasons = {r["video_id"]: (r["error_type"], r["error"]) for r in status if r["status"] != "ok"}
    assert "empty file" in reasons["zero"][1] and "zero.mp4" in reasons["zero"][1]
    assert "text.mp4" in reasons["text"][1] and "cannot open" in reasons["text"][1]
    assert "no video stream" in reasons["audio"][1]
    assert "file not found" in reasons["missing"][1]
    assert "truncated.mp4" in reasons["trunc"][1]
    assert reasons["escape"][0] == "PathOutsideRoot"
    assert reasons["link"][0] == "PathOutsideRoot" and "escapes the root" in reasons["link"][1]
    assert reasons["g1"][0] == "DuplicateVideoId"
    assert summary.ok == 8 and summary.failed == 7 and summary.skipped == 1

    ds = IngestDataset(out)
    videos = {v.video_id: v for v in ds.iter_videos()}
    assert set(videos) == {vid for vid, st in expected if st == "ok"}
    for v in videos.values():
        assert v.frames.shape[0] == 4 and v.frames.dtype == np.uint8 and min(v.frames.shape[1:3]) == 32
        assert v.flow.shape[:2] == (4, 4) and v.flow.shape[2:] == v.frames.shape[1:3]
        assert v.flow_meta["algorithm"] == "dis_fast" and v.flow_meta["stack_length"] == 2
    assert videos["rot"].frames.shape[1:3] == (64, 32)  # display orientation, short side 32
    assert videos["one"].frames.shape[0] == 4 and (videos["one"].frame_index == 0).all()
    assert (videos["one"].flow == 128).all()  # a single frame has zero motion
    assert videos["cafe"].path == "v/caf\\xe9.mp4"
    # flow says the synthetic texture moves right: mean x displacement > 0
    from vidray.io.flowcodec import dequantize_flow

    fx = dequantize_flow(np.ascontiguousarray(videos["g1"].flow[:, 0::2]), 20.0)
    assert fx.mean() > 0.3

    meta = json.loads((out / "dataset.json").read_text())
    assert meta["state"] == "complete" and meta["counts"]["entries"] == len(expected)
    assert meta["manifest"]["sha256"] and meta["schema_version"] == 1 and meta["classes"] == ["left", "right"]


def test_cli_exit_code_follows_the_failure_budget(ray_local, messy_corpus, tmp_path, capsys):
    manifest, root, _ = messy_corpus
    args = ["ingest", str(manifest), "--root", str(root), "--out", str(tmp_path / "o")] + sum(
        (["--set", s] for s in FAST), [])
    assert cli_main(args + ["--set", "execution.max_failure_fraction=0.2"]) == 1  # 7/16 failed
    out = capsys.readouterr()
    assert "failed 7" in out.out and "above the budget" in out.err
    assert cli_main(args + ["--set", "execution.max_failure_fraction=0.5"]) == 0  # resumed: nothing to do


def _clip_ids(out) -> list[str]:
    return [v for f in clip_files(out) for v in pq.read_table(f, columns=["video_id"])["video_id"].to_pylist()]


def _lose_status_of(out: Path, key: str) -> int:
    """Simulate a writer killed between its clips and status commits: the part's status rows vanish
    from the snapshot (its clips part stays, an orphan). Returns how many videos depended on it."""
    from vidray.io.dataset import load_status

    eff = load_status(out).effective()
    snap = sorted((out / "status").glob("compacted-*.parquet"))[-1]
    t = pq.read_table(snap)
    pq.write_table(t.filter(pc.not_equal(t["part"], key)), snap)
    return int(pc.sum(pc.equal(eff["part"], key)).as_py())


def test_resume_skips_done_and_retry_failed_reruns_only_failures(ray_local, tmp_path, monkeypatch, caplog, capsys):
    root = tmp_path / "root"
    root.mkdir()
    for i in range(5):
        _good_video(root / f"{i}.mp4", seed=i)
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"{i}.mp4,a\n" for i in range(6)))
    out = tmp_path / "out"
    cfg = _cfg("output.target_part_mb=0")  # one part per task of 2 videos: several parts
    s1 = run_ingest(tmp_path / "m.csv", out, root=root, cfg=cfg)
    assert (s1.ok, s1.failed, s1.processed_this_run, s1.run) == (5, 1, 6, 1)
    assert [p.name for p in (out / "status").iterdir()] == ["compacted-00000001.parquet"]  # compacted at the end
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}

    _good_video(root / "5.mp4", seed=5)  # the missing file appears
    s2 = run_ingest(tmp_path / "m.csv", out, root=root, cfg=cfg)
    assert s2.processed_this_run == 0 and s2.failed == 1  # failures are recorded, not retried
    s3 = run_ingest(tmp_path / "m.csv", out, root=root, cfg=cfg, retry_failed=True)
    assert (s3.processed_this_run, s3.ok, s3.failed, s3.entries, s3.run) == (1, 6, 0, 6, 3)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # done parts untouched (nor rewritten)

    # an interrupted run: one part's status lost -> only its videos run again, no duplicates
    victim = sorted((out / "clips").iterdir())[0].name[len("part-"):-len(".parquet")]
    n_victim = _lose_status_of(out, victim)
    s4 = run_ingest(tmp_path / "m.csv", out, root=root, cfg=cfg)
    assert s4.processed_this_run == n_victim > 0 and s4.ok == 6
    assert sorted(_clip_ids(out)) == [str(i) for i in range(6)]

    # a clips part truncated after its commit: the re-run names it, ingests its videos again
    part = sorted((out / "clips").iterdir())[-1]
    n_part = pq.read_metadata(part).num_rows
    part.write_bytes(part.read_bytes()[:-100])
    with caplog.at_level(logging.WARNING):
        s5 = run_ingest(tmp_path / "m.csv", out, root=root, cfg=cfg)
    assert part.name in caplog.text and "truncated" in caplog.text
    assert s5.processed_this_run == n_part and (s5.ok, s5.entries) == (6, 6) and not part.exists()
    assert sorted(_clip_ids(out)) == [str(i) for i in range(6)]

    # --dry-run: counts only, no Ray, nothing written
    import vidray.ingest

    monkeypatch.setattr(vidray.ingest, "init_ray", lambda *a, **k: pytest.fail("--dry-run started Ray"))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
    argv = ["ingest", str(tmp_path / "m.csv"), "--root", str(root), "--out", str(out), "--dry-run", "--json"]
    for extra, want in (([], (6, 6, 0, 0)), (["--set", "resize.short_side=32", "--retry-failed"], (6, 6, 0, 0))):
        assert cli_main(argv + extra + sum((["--set", x] for x in FAST), [])) == 0
        got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (got["entries"], got["done"], got["todo"], got["failed_to_retry"]) == want
        assert got["tasks"] == 0 and got["output_files"] == 0 and got["clip_files"] >= 1 and got["run"] == 6
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    fresh = tmp_path / "fresh"
    assert cli_main(argv[:5] + [str(fresh), "--dry-run", "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (got["entries"], got["done"], got["todo"], got["tasks"], got["output_files"]) == (6, 0, 6, 2, None)
    assert not fresh.exists()
    monkeypatch.undo()

    with pytest.raises(ValueError, match="other data settings"):
        run_ingest(tmp_path / "m.csv", out, root=root, cfg=_cfg("resize.short_side=48"))
    s6 = run_ingest(tmp_path / "m.csv", out, root=root, cfg=_cfg("resize.short_side=48"), overwrite=True)
    assert s6.processed_this_run == 6 and s6.run == 1


def test_worker_killed_between_commits_loses_and_duplicates_nothing(ray_local, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for i in range(6):
        _good_video(root / f"{i}.mp4", seed=i)
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"{i}.mp4,a\n" for i in range(6)))
    marker = tmp_path / "killed.txt"
    out = tmp_path / "out"
    s = run_ingest(tmp_path / "m.csv", out, root=root, cfg=_cfg(), _fault_kill_once=str(marker))
    assert marker.exists() and "killed pid" in marker.read_text()  # a worker really died
    assert (s.entries, s.ok) == (6, 6)
    status_ids = read_status(out)["video_id"].to_pylist()
    assert sorted(status_ids) == [str(i) for i in range(6)]
    assert sorted(_clip_ids(out)) == [str(i) for i in range(6)]
    assert not list((out / "clips").glob(".*.tmp")) and not list((out / "status").glob(".*.tmp"))
    # every clips file is a committed part (no orphan left), and the status is one snapshot
    assert len(list((out / "clips").iterdir())) == len(clip_files(out)) >= 1
    assert [p.name for p in (out / "status").iterdir()] == ["compacted-00000001.parquet"]


def test_long_videos_are_split_into_bounded_chunk_rows(tmp_path):
    _good_video(tmp_path / "long.mp4", frames=12)
    cfg = load_config(IngestConfig, None, ["sampling.mode=all", "output.max_frames_per_row=5",
                                           "resize.short_side=32"])
    entry = {"video_id": "long", "path": "long.mp4", "open_path": str(tmp_path / "long.mp4"), "labels": [0],
             "split": "train", "row": 0, "status": "", "error_type": "", "error": ""}
    rows = process_video(entry, cfg)
    assert [len(r["frames"]) for r in rows] == [5, 5, 2]
    assert [r["chunk_index"] for r in rows] == [0, 1, 2] and all(r["num_chunks"] == 3 for r in rows)
    assert sum((r["frame_index"] for r in rows), []) == list(range(12))
    assert rows[0]["num_frames"] == 12 and rows[0]["status"] == "ok"


def test_frames_are_never_upscaled_by_default(tmp_path):
    """resize.short_side is an upper bound: a 32x32 video stays 32x32 (8x the bytes for nothing else),
    unless resize.upscale asks for it."""
    _good_video(tmp_path / "small.mp4", frames=4)
    entry = {"video_id": "s", "path": "small.mp4", "open_path": str(tmp_path / "small.mp4"), "labels": [0],
             "split": "train", "row": 0, "status": "", "error_type": "", "error": ""}
    rows = process_video(dict(entry), IngestConfig())  # default short_side 256
    src = (rows[0]["height"], rows[0]["width"])
    assert (rows[0]["frame_height"], rows[0]["frame_width"]) == src and min(src) < 256
    up = process_video(dict(entry), load_config(IngestConfig, None, ["resize.upscale=true"]))
    assert min(up[0]["frame_height"], up[0]["frame_width"]) == 256


@pytest.fixture()
def s3_server(monkeypatch):
    """A real S3 API (moto's server) on 127.0.0.1, with a bucket holding two videos."""
    import socket

    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="test", secret_key="test",
                           region="us-east-1", allow_bucket_creation=True)
    fs.create_dir("corpus")
    fs.create_dir("out")
    yield fs, env
    server.stop()


def test_remote_inputs_and_outputs_on_s3(ray_local, s3_server, tmp_path):
    fs, env = s3_server
    for i in range(2):
        _good_video(tmp_path / f"{i}.mp4", seed=i)
        with fs.open_output_stream(f"corpus/v/{i}.mp4") as f:
            f.write((tmp_path / f"{i}.mp4").read_bytes())
    (tmp_path / "m.csv").write_text("path,label\nv/0.mp4,a\nv/1.mp4,b\nv/missing.mp4,a\n")
    cfg = _cfg(*[f"execution.env_vars.{k}={v}" for k, v in env.items()])
    s = run_ingest(tmp_path / "m.csv", "s3://out/data", root="s3://corpus", cfg=cfg)
    assert (s.ok, s.failed) == (2, 1)
    import pyarrow.fs as pafs

    names = [i.path for i in fs.get_file_info(pafs.FileSelector("out/data", recursive=True))]
    assert "out/data/dataset.json" in names and not any(n.endswith(".tmp") for n in names)
    ds = IngestDataset("s3://out/data")
    videos = {v.video_id: v for v in ds.iter_videos()}
    assert set(videos) == {"v/0", "v/1"} and videos["v/0"].frames.shape[0] == 4
    missing = [r for r in read_status("s3://out/data").to_pylist() if r["status"] == "failed"]
    assert len(missing) == 1 and "v/missing.mp4" in missing[0]["error"]


@pytest.mark.slow
def test_a_class_sorted_manifest_gives_class_mixed_parts_and_batches(ray_local, motion_corpus, tmp_path):
    """Manifests come sorted by class (this one: 6 classes x 4 videos in order); the seeded processing
    order (output.order_seed) must still give parts, and so training batches, of many classes."""
    from vidray.config import TrainConfig
    from vidray.io.dataset import StatusView
    from vidray.io.manifest import read_manifest
    from vidray.io.schema import SNAPSHOT_SCHEMA
    from vidray.ingest import plan_ingest
    from vidray.train.trainer import _datasets

    man = read_manifest(motion_corpus)
    labels = [e.labels[0] for e in man.entries]
    assert sum(a != b for a, b in zip(labels, labels[1:])) == 5  # grouped by class, as UCF101 / FCVID lists
    empty = StatusView(SNAPSHOT_SCHEMA.empty_table(), checked=True)

    def classes_per_window(order_seed, n=6) -> list[int]:
        todo, _ = plan_ingest(man, empty, _cfg(f"output.order_seed={order_seed}"))
        lab = [x[0] for x in todo["labels"].to_pylist()]
        return [len(set(lab[i:i + n])) for i in range(0, len(lab) - n + 1, n)]

    assert max(classes_per_window("null")) <= 2  # manifest order: one or two classes per 6 entries
    assert min(classes_per_window(0)) >= 3

    out = tmp_path / "out"
    s = run_ingest(motion_corpus, out, cfg=_cfg("output.target_part_mb=0.025"))  # ~5 videos per part
    assert s.ok == 24 and 3 <= s.clip_files <= 8, s.clip_files
    per_part = [len(set(x[0] for x in pq.read_table(f, columns=["labels"])["labels"].to_pylist()))
                for f in clip_files(out)]
    assert min(per_part) >= 3, per_part

    cfg = load_config(TrainConfig, None, ["augment.crop_size=24", "sampler.num_frames=4", "batch_size=6",
                                          "input.shuffle_buffer=0", "input.shuffle_files=false"])
    train = _datasets(clip_files(out), cfg, 6, False, workers=1)["train"]
    batches = [len(set(b["label"].tolist())) for b in train.iter_batches(batch_size=6, batch_format="numpy")]
    assert len(batches) >= 2 and min(batches) >= 3, batches  # no local shuffle: the parts alone mix classes


def test_keyframe_tolerance_records_the_frames_taken(sample_videos):
    """sampling.keyframe_tolerance: samples near a keyframe are stored as that keyframe, and frame_index /
    frame_time_s say so (the stored JPEG is that frame)."""
    from vidray.io.imcodec import decode_image
    from vidray.io.video import decode_frames, output_size, probe

    path = str(sample_videos["kinetics"])
    info = probe(path)
    entry = {"video_id": "k", "path": "k.mp4", "open_path": path, "labels": [0], "split": "train", "row": 0,
             "status": "", "error_type": "", "error": ""}
    base = ["sampling.mode=segments", "sampling.num_segments=8", "resize.short_side=64", "output.encoding=png"]
    exact = process_video(dict(entry), load_config(IngestConfig, None, base))[0]
    snapped = process_video(dict(entry), load_config(IngestConfig, None, base + ["sampling.keyframe_tolerance=0.5"]))[0]
    assert snapped["status"] == "ok" and len(snapped["frame_index"]) == 8 == len(set(snapped["frame_index"]))
    moved = [b for a, b in zip(exact["frame_index"], snapped["frame_index"]) if a != b]
    assert moved and set(moved) <= set(info.keyframes.tolist())
    np.testing.assert_allclose(snapped["frame_time_s"], info.timestamps[snapped["frame_index"]], atol=1e-6)
    size = output_size(info.width, info.height, 64)
    frames, _ = decode_frames(path, snapped["frame_index"], size=size, info=info)
    for img, buf in zip(frames, snapped["frames"]):
        np.testing.assert_array_equal(decode_image(buf, "png"), img)
