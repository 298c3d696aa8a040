"""Clip samplers: indices into the stored frames of a row, MMAction2 conventions."""

from __future__ import annotations

import numpy as np
import pytest

from vidray.data import clip_sampling as cs

ALL_SAMPLERS = [
    cs.TSNSampler(8),
    cs.TSNSampler(8, test_mode=True),
    cs.RandomClipSampler(8, 2),
    cs.RandomClipSampler(4, 3, out_of_bound="repeat_last"),
    cs.FramePairSampler(),
    cs.FramePairSampler(test_mode=True),
    cs.SequentialSampler(),
    cs.SequentialSampler(max_len=5),
    cs.UniformClipsSampler(3, 4, 2),
]


@pytest.mark.parametrize("sampler", ALL_SAMPLERS, ids=repr)
@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 31])
def test_indices_in_range_2d_int(sampler, n):
    rng = np.random.default_rng(n)
    for fi in (n, np.arange(n) * 30 + 1000):  # dense, and sparse source frames (1 fps of 30 fps)
        inds = sampler(fi, rng)
        assert inds.ndim == 2 and inds.dtype == np.int64
        assert inds.min() >= 0 and inds.max() < n


def test_tsn_train_one_frame_per_segment_and_seeded():
    draws = [cs.TSNSampler(8)(80, np.random.default_rng(s))[0] for s in range(20)]
    for d in draws:
        assert d.shape == (8,)
        assert np.array_equal(d // 10, np.arange(8))  # frame i lies in segment i = [10i, 10i+9]
    assert np.array_equal(draws[0], cs.TSNSampler(8)(80, np.random.default_rng(0))[0])
    assert len({tuple(d) for d in draws}) > 1  # offsets are random


def test_tsn_test_mode_takes_segment_centres():
    assert cs.TSNSampler(8, test_mode=True)(80)[0].tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    # n < k, centre rule: int(i*3/8 + 3/16) for i = 0..7
    assert cs.TSNSampler(8, test_mode=True)(3)[0].tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


def test_tsn_short_video_repeats_frames_in_order():
    inds = cs.TSNSampler(8)(3, np.random.default_rng(0))[0]
    # round(i * 3/8) = 0,0,1,1,2,2,2,3 -> last clipped to the last stored frame
    assert inds.tolist() == [0, 0, 1, 1, 2, 2, 2, 2]


def test_random_clip_dense_interval_and_start_range():
    starts = []
    for s in range(200):
        inds = cs.RandomClipSampler(8, 2)(100, np.random.default_rng(s))[0]
        assert np.all(np.diff(inds) == 2)
        starts.append(inds[0])
    # ori_clip_len = 15 -> start uniform in 0..85
    assert min(starts) >= 0 and max(starts) <= 85
    assert max(starts) - min(starts) > 40


def test_random_clip_interval_is_in_source_frames():
    stored = np.arange(0, 300, 10)  # every 10th source frame stored
    rng = np.random.default_rng(0)
    assert np.all(np.diff(cs.RandomClipSampler(4, 10)(stored, rng)[0]) == 1)
    assert np.all(np.diff(cs.RandomClipSampler(4, 20)(stored, rng)[0]) == 2)


def test_random_clip_short_video_loop_and_repeat_last():
    assert cs.RandomClipSampler(8, 1)(5)[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert cs.RandomClipSampler(8, 1, out_of_bound="repeat_last")(5)[0].tolist() == [0, 1, 2, 3, 4, 4, 4, 4]


def test_nearest_stored_ties_to_earlier():
    assert cs.nearest_stored([0, 10, 20], np.array([4, 5, 6, 25, -3])).tolist() == [0, 0, 1, 2, 0]


def test_frame_pair():
    for s in range(30):
        i, j = cs.FramePairSampler()(10, np.random.default_rng(s))[0]
        assert j == i + 1 and 0 <= i <= 8
    assert cs.FramePairSampler(test_mode=True)(10)[0].tolist() == [4, 5]
    assert cs.FramePairSampler()(1)[0].tolist() == [0, 0]


def test_sequential():
    assert cs.SequentialSampler()(5)[0].tolist() == [0, 1, 2, 3, 4]
    assert cs.SequentialSampler(max_len=8)(5)[0].tolist() == [0, 1, 2, 3, 4]
    assert cs.SequentialSampler(max_len=4, test_mode=True)(10)[0].tolist() == [3, 4, 5, 6]
    for s in range(20):
        w = cs.SequentialSampler(max_len=4)(10, np.random.default_rng(s))[0]
        assert np.all(np.diff(w) == 1) and 0 <= w[0] <= 6


def test_uniform_clips_hand_computed():
    # span 100, ori_clip_len 15, avg = 86/4 = 21.5 -> starts int(21.5 j + 10.75) = 10, 32, 53, 75
    inds = cs.UniformClipsSampler(4, 8, 2)(100)
    assert inds.shape == (4, 8)
    assert inds[:, 0].tolist() == [10, 32, 53, 75]
    assert np.all(np.diff(inds, axis=1) == 2)
    # indices are into the stored frames, whatever the source numbering
    assert np.array_equal(cs.UniformClipsSampler(4, 8, 2)(np.arange(100) + 1000), inds)
    # shorter than one clip: every clip starts at 0 and loops
    assert cs.UniformClipsSampler(2, 4)(3).tolist() == [[0, 1, 2, 0], [0, 1, 2, 0]]


def test_bad_inputs_refused():
    with pytest.raises(ValueError, match="ascending"):
        cs.TSNSampler(3)([0, 5, 5])
    with pytest.raises(ValueError, match="at least one"):
        cs.TSNSampler(3)([])
    with pytest.raises(ValueError, match=">= 1"):
        cs.RandomClipSampler(0)
    with pytest.raises(ValueError, match="unknown sampler"):
        cs.build_sampler("nope")
    assert isinstance(cs.build_sampler("tsn", num_frames=3, mode="val"), cs.TSNSampler)
