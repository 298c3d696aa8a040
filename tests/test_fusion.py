"""Late fusion of stream scores and the score files, aligned by video id."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vidray.eval import fusion as F


def test_l1_normalised_weighted_fusion_hand_computed():
    rgb = np.array([[8.0, 0.0, -8.0], [1.0, 1.0, 2.0]])
    flow = np.array([[0.0, 1.0, 0.0], [0.0, -2.0, 2.0]])
    # l1: rgb rows / 16 and / 4 -> [.5, 0, -.5], [.25, .25, .5]; flow / 1 and / 4 -> [0, 1, 0], [0, -.5, .5]
    # 1 * rgb + 1.5 * flow -> [.5, 1.5, -.5], [.25, -.5, 1.25]
    fused = F.weighted_fusion([rgb, flow], (1, 1.5), l1_norm=True)
    np.testing.assert_allclose(fused, [[0.5, 1.5, -0.5], [0.25, -0.5, 1.25]])
    # without normalisation the large RGB logits win the first video: [8, 1.5, -8]
    raw = F.weighted_fusion([rgb, flow], (1, 1.5))
    np.testing.assert_allclose(raw[0], [8.0, 1.5, -8.0])
    assert raw[0].argmax() == 0 and fused[0].argmax() == 1
    np.testing.assert_allclose(F.l1_normalize(np.zeros((1, 3))), 0.0)


def test_log_average_fusion_hand_computed():
    a = np.array([[0.0, math.log(3)]])  # softmax (.25, .75)
    b = np.array([[0.0, 0.0]])  # softmax (.5, .5)
    np.testing.assert_allclose(
        F.log_average_fusion([a, b]),
        [[(math.log(0.25) + math.log(0.5)) / 2, (math.log(0.75) + math.log(0.5)) / 2]],
    )
    # weights 1 : 3
    np.testing.assert_allclose(
        F.log_average_fusion([a, b], (1, 3))[0, 0], (math.log(0.25) + 3 * math.log(0.5)) / 4
    )


def test_stream_shapes_checked():
    with pytest.raises(ValueError, match="shape"):
        F.weighted_fusion([np.zeros((2, 3)), np.zeros((3, 3))])
    with pytest.raises(ValueError, match="weights"):
        F.weighted_fusion([np.zeros((2, 3))] * 2, (1, 2, 3))


def _write_pair(tmp_path, labels):
    rng = np.random.default_rng(0)
    ids = np.array([f"v{i}" for i in range(6)])
    rgb = rng.normal(size=(6, 4))
    flow = rng.normal(size=(6, 4))
    perm = np.array([3, 0, 5, 1, 4, 2])
    p1 = F.save_scores(tmp_path / "rgb.npz", rgb, labels, ids)
    p2 = F.save_scores(tmp_path / "flow", flow[perm], labels[perm], ids[perm])  # other order
    return ids, rgb, flow, p1, p2


@pytest.mark.parametrize("multi_label", [False, True])
def test_score_files_align_by_video_id(tmp_path, multi_label):
    labels = (np.arange(24).reshape(6, 4) % 3 == 0).astype(int) if multi_label else np.array([0, 1, 2, 3, 0, 1])
    ids, rgb, flow, p1, p2 = _write_pair(tmp_path, labels)
    assert p2.suffix == ".npz"
    back = F.load_scores(p2)
    assert back.video_ids.tolist() == ["v3", "v0", "v5", "v1", "v4", "v2"]
    aligned = F.align_scores(F.load_scores(p1), back)
    np.testing.assert_allclose(aligned.scores, flow)
    np.testing.assert_array_equal(aligned.labels, labels)
    fused = F.fuse_score_files([p1, p2], weights=(1, 1.5), l1_norm=True)
    np.testing.assert_allclose(fused.scores, F.weighted_fusion([rgb, flow], (1, 1.5), l1_norm=True))
    assert fused.video_ids.tolist() == ids.tolist()
    logavg = F.fuse_score_files([p1, p2], method="logaverage")
    np.testing.assert_allclose(logavg.scores, F.log_average_fusion([rgb, flow]))


def test_mismatched_score_files_refused(tmp_path):
    labels = np.array([0, 1, 2, 3, 0, 1])
    ids, rgb, flow, p1, _ = _write_pair(tmp_path, labels)
    ref = F.load_scores(p1)
    missing = F.save_scores(tmp_path / "missing.npz", flow[:5], labels[:5], ids[:5])
    with pytest.raises(ValueError, match=r"1 only in .*rgb.npz.*v5"):
        F.fuse_score_files([p1, missing])
    renamed = ids.copy()
    renamed[0] = "zz"
    with pytest.raises(ValueError, match=r"only in .*'v0'.*'zz'"):
        F.align_scores(ref, F.ScoreFile(flow, labels, renamed))
    dup = ids.copy()
    dup[1] = "v0"
    with pytest.raises(ValueError, match="duplicate video ids"):
        F.align_scores(ref, F.ScoreFile(flow, labels, dup))
    bad = labels.copy()
    bad[2] = 3
    with pytest.raises(ValueError, match=r"labels differ for 1 videos.*v2"):
        F.align_scores(ref, F.ScoreFile(flow, bad, ids))
    with pytest.raises(ValueError, match="classes"):
        F.align_scores(ref, F.ScoreFile(flow[:, :3], labels, ids))
    np.savez(tmp_path / "other.npz", scores=rgb)
    with pytest.raises(ValueError, match="not a vidray score file"):
        F.load_scores(tmp_path / "other.npz")
