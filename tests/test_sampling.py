import numpy as np
import pytest

from vidray.config import SamplingConfig
from vidray.sampling import (
    flow_indices, flow_step, sample_clips, sample_fps, sample_frames, sample_segments, video_seed,
)


def ts(n, fps=30.0):
    return np.arange(n) / fps


def test_fps_one_per_second_of_a_30fps_video():
    idx = sample_fps(ts(300), fps=1.0)  # 10 s
    assert idx.tolist() == [0, 30, 60, 90, 120, 150, 180, 210, 240, 270]


def test_fps_respects_max_seconds_and_loops_short_videos():
    assert len(sample_fps(ts(3000), fps=1.0, max_seconds=5)) == 5
    # Sports-1M recipe: 1 fps of the first 300 s, repeating a 4 s video from its start
    idx = sample_fps(ts(120), fps=1.0, max_seconds=10, loop=True)
    assert idx.tolist() == [0, 30, 60, 90, 0, 30, 60, 90, 0, 30]


def test_fps_uses_timestamps_on_variable_frame_rate():
    # 10 frames in the first second, then 1 frame per second: VFR
    t = np.concatenate([np.arange(10) / 10.0, 1.0 + np.arange(5)])
    idx = sample_fps(t, fps=1.0)
    assert t[idx].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_every_s_fcvid():
    cfg = SamplingConfig(mode="every_s", interval_s=3.0)
    idx = sample_frames(ts(30 * 10), cfg)
    assert idx.tolist() == [0, 90, 180, 270]


def test_segments_centre_and_random_offsets_stay_in_their_segment():
    assert sample_segments(80, 8).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    rng = np.random.default_rng(0)
    idx = sample_segments(80, 8, random_offset=True, rng=rng)
    assert all(10 * k <= i < 10 * (k + 1) for k, i in enumerate(idx))
    assert sample_segments(3, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]  # short video repeats frames


def test_segment_seed_is_per_video_and_stable():
    cfg = SamplingConfig(mode="segments", num_segments=4, random_offset=True, seed=3)
    a = sample_frames(ts(400), cfg, "video_a")
    assert sample_frames(ts(400), cfg, "video_a").tolist() == a.tolist()
    assert video_seed("a", 3) != video_seed("b", 3)


def test_clips_clip_len_x_frame_interval_x_num_clips():
    idx = sample_clips(100, clip_len=4, frame_interval=2, num_clips=3).reshape(3, 4)
    assert idx[0].tolist() == [0, 2, 4, 6]
    assert idx[-1].tolist() == [93, 95, 97, 99]
    assert (np.diff(idx, axis=1) == 2).all()
    assert sample_clips(3, clip_len=5).tolist() == [0, 1, 2, 2, 2]


def test_all_and_max_frames():
    assert sample_frames(ts(7), SamplingConfig(mode="all")).tolist() == list(range(7))
    assert len(sample_frames(ts(70), SamplingConfig(mode="all", max_frames=5))) == 5
    assert len(sample_frames(ts(300), SamplingConfig(mode="all", max_seconds=2))) == 60


def test_flow_indices_spans_and_end_of_video():
    spans = flow_indices(np.array([0, 10, 98]), num_frames=100, stack_length=3, step=2)
    assert spans.tolist() == [[0, 2, 4, 6], [10, 12, 14, 16], [93, 95, 97, 99]]
    assert flow_indices(np.array([0]), 1, 2, 1).tolist() == [[0, 0, 0]]  # one-frame video
    assert flow_step(30.0, 15.0) == 2 and flow_step(25.0, None) == 1


@pytest.mark.parametrize("mode", ["fps", "every_s", "segments", "clip", "all"])
def test_every_mode_returns_valid_indices(mode):
    idx = sample_frames(ts(45), SamplingConfig(mode=mode, clip_len=8, num_clips=2))
    assert len(idx) > 0 and idx.min() >= 0 and idx.max() < 45


# ------------------------------------------------------------------------------------------------
# keyframe tolerance (opt-in)
# ------------------------------------------------------------------------------------------------
def test_snap_to_keyframes_moves_near_samples_and_never_merges_two():
    from vidray.sampling import snap_to_keyframes

    keys = np.array([0, 250, 500])
    assert snap_to_keyframes(np.array([10, 120, 240]), keys, 15).tolist() == [0, 120, 250]
    # 245 and 255 are both 5 from keyframe 250: the earlier takes it, the other keeps its frame
    assert snap_to_keyframes(np.array([245, 255]), keys, 10).tolist() == [250, 255]
    # a sample that IS a keyframe keeps it; a neighbour does not take it from it
    assert snap_to_keyframes(np.array([248, 250, 252]), keys, 10).tolist() == [248, 250, 252]
    # the nearer of two candidates wins the keyframe; order is kept
    assert snap_to_keyframes(np.array([240, 247]), keys, 20).tolist() == [240, 250]
    # repeated indices (looped fps sampling) move together
    assert snap_to_keyframes(np.array([3, 100, 3, 100]), keys, 5).tolist() == [0, 100, 0, 100]
    assert snap_to_keyframes(np.array([3, 100]), keys, 0.5).tolist() == [3, 100]  # < 1 frame: unchanged


def test_keyframe_tolerance_in_sample_frames():
    t = ts(1800)  # 60 s at 30 fps, keyframe every 250 frames
    keys = np.arange(0, 1800, 250)
    tsn = SamplingConfig(mode="segments", num_segments=8)
    exact = sample_frames(t, tsn, keyframes=keys)
    assert exact.tolist() == sample_frames(t, tsn).tolist()  # tolerance 0: the keyframes change nothing
    snapped = sample_frames(t, tsn.model_copy(update={"keyframe_tolerance": 0.5}), keyframes=keys)
    assert len(np.unique(snapped)) == 8 and np.all(np.diff(snapped) > 0)
    assert np.all(np.abs(snapped - exact) <= 0.5 * 1800 / 8)
    assert set(snapped.tolist()) <= set(keys.tolist()) | set(exact.tolist())
    # fps: the interval is 30 frames, so at 0.4 only samples within 12 frames of a keyframe move
    fps = SamplingConfig(mode="fps", fps=1.0, keyframe_tolerance=0.4)
    got, want = sample_frames(t, fps, keyframes=keys), sample_frames(t, SamplingConfig(mode="fps", fps=1.0))
    moved = got != want
    assert moved.sum() == 5 and np.all(np.abs(got - want)[moved] <= 12) and set(got[moved].tolist()) <= set(keys.tolist())


def test_keyframe_tolerance_keeps_earlier_data_hashes():
    from vidray.config import IngestConfig

    base = IngestConfig()
    assert "keyframe_tolerance" not in str(base.data_hash())  # a hash, but: the default adds no key
    d = base.model_dump(mode="json")
    assert d["sampling"]["keyframe_tolerance"] == 0.0
    tol = IngestConfig.model_validate({"sampling": {"keyframe_tolerance": 0.25}})
    assert tol.data_hash() != base.data_hash()
    import hashlib, json  # noqa: E401

    d.pop("execution")
    for k in ("videos_per_task", "target_part_mb", "row_group_mb", "order_seed"):
        d["output"].pop(k)
    d["sampling"].pop("keyframe_tolerance")
    assert base.data_hash() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
