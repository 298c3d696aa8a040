"""``vidray plan``: the work counts and the arithmetic against hand-computed values, the CLI, a quick
measurement whose model must predict the real per-video pipeline."""

from __future__ import annotations

import json

import pytest

from vidray.config import IngestConfig, load_config
from vidray.plan import PRESETS, CorpusStats, Rates, load_plan_config, plan_corpus, task_slots, video_work


def _cfg(*sets: str) -> IngestConfig:
    return load_config(IngestConfig, None, list(sets))


# Round numbers so every figure below can be checked by hand.
RATES = Rates(decode_fps=1000, convert_fps=500, flow_pairs_per_s=50, jpeg_fps=1000, flow_stacks_per_s=500,
              write_mb_per_s=100, frame_bytes=20_000, flow_stack_bytes=10_000, parquet_overhead=1.0,
              source="hand")


def test_video_work_counts_sparse_sampling_with_seeks():
    # 10 s at 30 fps, a keyframe every 30 frames, 1 fps: targets 0, 30, ..., 270 are all keyframes.
    # The skip reader (PyAV, the default): per GOP, its keyframe up to its last target: 10 x 1, no seek.
    w = video_work(10, 30, 640, 360, 30, _cfg("sampling.mode=fps", "sampling.fps=1"))
    assert (w.src_frames, w.stored_frames, w.unique_frames, w.needed_frames) == (300, 10, 10, 10)
    assert (w.decode_cost_frames, w.seeks) == (10, 0)
    # The seek planner (decord, or files whose timestamps cannot identify frames): frame 0: decode 1;
    # each later target: seeking to it (8 + 1) beats decoding 29 frames: 9 x 9.
    w = video_work(10, 30, 640, 360, 30, _cfg("sampling.mode=fps", "sampling.fps=1", "execution.decoder=decord"))
    assert (w.decode_cost_frames, w.seeks) == (1 + 9 * 9, 9)
    assert (w.flow_pairs, w.flow_stacks, w.flow_size) == (0, 0, None)
    assert w.frame_size == (455, 256)  # short side 256, aspect kept: 640 * 256 / 360 = 455.1


def test_video_work_counts_flow_stacks():
    # Stack of L=2 on adjacent frames: each stored i needs i+1, i+2 (2 pairs): 30 frames, 20 pairs.
    # Skip reader: per GOP its keyframe i and i+1, i+2: 10 x 3. Seek planner: 0,1,2 sequentially (3),
    # then per second seek (8) + 3 frames: 9 x 11.
    sets = ("sampling.mode=fps", "sampling.fps=1", "flow.enabled=true", "flow.stack_length=2")
    w = video_work(10, 30, 640, 360, 30, _cfg(*sets))
    assert (w.needed_frames, w.flow_pairs, w.flow_stacks) == (30, 20, 10)
    assert (w.decode_cost_frames, w.seeks) == (10 * 3, 0)
    w = video_work(10, 30, 640, 360, 30, _cfg(*sets, "execution.decoder=decord"))
    assert (w.decode_cost_frames, w.seeks) == (3 + 9 * 11, 9)


def test_video_work_loop_and_long_gop():
    # Sports-1M style: 1 fps of the first 20 s, looped, on a 10 s video; flow at 15 fps = step 2.
    # One keyframe: everything is decoded sequentially up to frame 270 + 2.
    w = video_work(10, 30, 640, 360, 300, _cfg("sampling.mode=fps", "sampling.fps=1", "sampling.max_seconds=20",
                                               "sampling.loop=true", "flow.enabled=true", "flow.flow_fps=15"))
    assert (w.stored_frames, w.unique_frames, w.needed_frames, w.flow_pairs) == (20, 10, 20, 10)
    assert (w.decode_cost_frames, w.seeks) == (273, 0)


def test_plan_arithmetic_by_hand():
    cfg = _cfg("sampling.mode=fps", "sampling.fps=1", "flow.enabled=true", "flow.stack_length=2")
    corpus = CorpusStats("hand", videos=3600, mean_duration_s=10, width=640, height=360, fps=30, gop=30)
    p = plan_corpus(corpus, cfg, RATES, nodes=[1, 2], cores=4)
    decode = 30 / 1000 + 30 / 500  # decoded frame-equivalents / decode rate + converted frames / RGB rate
    flow = 20 / 50
    payload = 10 * (20_000 + 10_000)  # stored frames x (frame + flow stack) bytes
    encode = 10 / 1000 + 10 / 500 + payload / 1e6 / 100
    assert [s.name for s in p.stages] == ["decode+sample", "flow", "encode+write"]
    for stage, want in zip(p.stages, (decode, flow, encode)):
        assert stage.per_video_s == pytest.approx(want)
        assert stage.core_hours == pytest.approx(want * 3600 / 3600)  # 3,600 videos
    total_h = decode + flow + encode  # 0.09 + 0.4 + 0.033 = 0.523 core-hours
    assert p.core_hours == pytest.approx(0.523)
    assert p.core_hours == pytest.approx(total_h)
    assert p.wall_hours == pytest.approx({1: 0.523 / 4, 2: 0.523 / 8})  # 4 task slots per node
    assert p.node_hours == pytest.approx({1: 0.523 / 4, 2: 0.523 / 4})
    assert p.payload_bytes_per_video == 300_000
    assert p.output_bytes == pytest.approx(3600 * 300_000)


def test_plan_fixed_costs_and_overhead():
    cfg = _cfg("sampling.mode=fps", "sampling.fps=1")
    corpus = CorpusStats("hand", videos=100, mean_duration_s=10, width=640, height=360, fps=30, gop=30)
    rates = Rates(**{**RATES.__dict__, "video_open_s": 0.05, "demux_fps": 3000.0, "parquet_overhead": 1.25,
                     "meta": {}})
    p = plan_corpus(corpus, cfg, rates, nodes=[1], cores=1)
    assert p.stages[0].per_video_s == pytest.approx(0.05 + 300 / 3000 + 10 / 1000 + 10 / 500)  # 10 keyframes
    assert [s.name for s in p.stages] == ["decode+sample", "encode+write"]  # flow off: no flow stage
    assert p.stages[1].per_video_s == pytest.approx(10 / 1000 + 10 * 20_000 / 1e6 / 100)
    assert p.output_bytes == pytest.approx(100 * 10 * 20_000 * 1.25)


def test_task_slots():
    assert task_slots(8, 64, 1.0, None) == 512
    assert task_slots(8, 64, 2.0, None) == 256
    assert task_slots(8, 64, 1.5, None) == 8 * 42
    assert task_slots(8, 64, 1.0, 100) == 100
    with pytest.raises(ValueError):
        task_slots(1, 1, 2.0, None)


def test_execution_settings_change_wall_time_not_core_hours():
    corpus = CorpusStats("hand", videos=3600, mean_duration_s=10, width=640, height=360, fps=30, gop=30)
    base = plan_corpus(corpus, _cfg("sampling.fps=1"), RATES, [2], 8)
    two = plan_corpus(corpus, _cfg("sampling.fps=1", "execution.num_cpus_per_task=2"), RATES, [2], 8)
    capped = plan_corpus(corpus, _cfg("sampling.fps=1", "execution.concurrency=4"), RATES, [2], 8)
    assert base.core_hours == pytest.approx(two.core_hours) == pytest.approx(capped.core_hours)
    assert two.wall_hours[2] == pytest.approx(2 * base.wall_hours[2])
    assert capped.wall_hours[2] == pytest.approx(4 * base.wall_hours[2])


def test_presets_and_their_recipes():
    fc, sp = PRESETS["fcvid"], PRESETS["sports1m"]
    assert (fc.videos, fc.mean_duration_s) == (91_223, 167.0)
    assert 4_200 <= fc.hours <= 4_240
    assert sp.videos >= 1_100_000
    cfg, _ = load_plan_config(fc, None, [])
    assert (cfg.sampling.mode, cfg.sampling.interval_s) == ("every_s", 3.0)
    cfg, src = load_plan_config(sp, None, ["flow.enabled=false"])
    assert (cfg.sampling.mode, cfg.sampling.fps, cfg.sampling.max_seconds, cfg.sampling.loop) == ("fps", 1.0, 300.0, True)
    assert not cfg.flow.enabled and src.endswith("--set flow.enabled=false")
    # Sports-1M: only the first 300 s are sampled, so a 336 s mean video decodes at most 300 s of frames.
    w = video_work(sp.mean_duration_s, sp.fps, sp.width, sp.height, sp.gop, cfg)
    assert w.stored_frames == 300 and w.decode_cost_frames <= 300 * 30 + 8


def test_cli_plan_fcvid_from_saved_rates(tmp_path, capsys):
    """The CLI end to end without measuring: --rates-from a rates object, then from its own --json."""
    from vidray.cli import main

    rates_file = tmp_path / "rates.json"
    rates_file.write_text(json.dumps(RATES.__dict__))
    assert main(["plan", "--preset", "fcvid", "--rates-from", str(rates_file), "--nodes", "1,8", "--cores", "64",
                 "--json"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    d = json.loads(lines[-1])
    text = "\n".join(lines[:-1])
    assert "FCVID: 91,223 videos" in text and "wall 8x64c" in text and "decode 1,000 fr/s" in text
    stages = {s["name"]: s for s in d["stages"]}
    assert d["core_hours"] == pytest.approx(sum(s["core_hours"] for s in stages.values()))
    assert d["wall_hours"]["8"] == pytest.approx(d["core_hours"] / (8 * 64))
    w = d["work"]
    assert stages["flow"]["per_video_s"] == pytest.approx(w["flow_pairs"] / 50)
    assert stages["decode+sample"]["per_video_s"] == pytest.approx(w["decode_cost_frames"] / 1000 + w["needed_frames"] / 500)
    assert d["output_bytes"] == pytest.approx(91_223 * w["stored_frames"] * (20_000 + (10_000 if w["flow_stacks"] else 0)))

    # Round trip: the --json line is itself a valid --rates-from file, and gives the same plan.
    saved = tmp_path / "plan.json"
    saved.write_text(lines[-1])
    assert main(["plan", "--preset", "fcvid", "--rates-from", str(saved), "--nodes", "1,8", "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["core_hours"] == pytest.approx(d["core_hours"])


def test_cli_plan_errors(tmp_path, capsys):
    from vidray.cli import main

    assert main(["plan", "--videos", "10"]) == 2  # no duration
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**RATES.__dict__, "decode_per_s": 3}))
    assert main(["plan", "--preset", "fcvid", "--rates-from", str(bad)]) == 2
    assert "unknown rate fields" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_measure_quick_model_predicts_pipeline():
    """A quick measurement on a small generated sample: every rate positive, and the model's per-video
    CPU time within 2x of what the reader and process_video actually spend on the sample."""
    from vidray.plan import measure_rates

    corpus = CorpusStats("small", videos=1000, mean_duration_s=60, width=320, height=240, fps=30, gop=30)
    cfg = _cfg("sampling.mode=fps", "sampling.fps=4", "resize.short_side=128", "flow.enabled=true",
               "flow.algorithm=dis_fast", "flow.stack_length=2")
    r = measure_rates(corpus, cfg, quick=True)
    for name in ("decode_fps", "convert_fps", "flow_pairs_per_s", "jpeg_fps", "flow_stacks_per_s", "write_mb_per_s",
                 "frame_bytes", "flow_stack_bytes", "video_open_s", "demux_fps"):
        assert getattr(r, name) > 0, name
    assert 0.9 < r.parquet_overhead < 1.2  # incompressible payloads: Parquet adds little
    checks = r.meta["checks"]
    assert set(checks) == {"reader (decode+sample)", "process_video (all but write)"}
    for name, c in checks.items():
        assert 0.5 < c["ratio"] < 2.0, (name, c)
    p = plan_corpus(corpus, cfg, r, [1], 8)
    assert p.core_hours > 0 and p.output_bytes > 0


def test_output_files_and_resume_cost_by_hand():
    from vidray.io.dataset import COMPACT_EVERY_PARTS
    from vidray.plan import RESUME_S_PER_MILLION, RESUME_S_PER_PART, SNAPSHOT_BYTES_PER_ENTRY, output_files

    cfg = _cfg("output.target_part_mb=400")
    f = output_files(1_000_000, 4e12, cfg)  # 4 TB in 400 MB parts: 10,000 full ones + the last of the run
    assert f["files"] == 10_001 and f["mean_file_mb"] == pytest.approx(4e12 / 10_001 / 1e6)
    assert f["resume_status_files"] == 1 + COMPACT_EVERY_PARTS
    assert f["status_snapshot_mb"] == pytest.approx(SNAPSHOT_BYTES_PER_ENTRY)
    for store, per_m in RESUME_S_PER_MILLION.items():
        assert f["resume_s"][store] == pytest.approx(per_m + COMPACT_EVERY_PARTS * RESUME_S_PER_PART[store])
    one_per_task = output_files(10, 1e6, _cfg("output.target_part_mb=0", "output.videos_per_task=4"))
    assert one_per_task["files"] == 3 and one_per_task["resume_status_files"] == 4
    # the plan carries it, and the files fit the bound: total / 128 MB + a constant per run
    corpus = CorpusStats("hand", videos=3600, mean_duration_s=10, width=640, height=360, fps=30, gop=30)
    p = plan_corpus(corpus, _cfg("sampling.fps=1"), RATES, [1], 4)
    assert p.files["files"] <= p.output_bytes / 128e6 + 1
    assert "clips parts of" in __import__("vidray.plan", fromlist=["format_plan"]).format_plan(p)
