"""Metrics and clip aggregation against values computed by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vidray.eval import aggregate as agg
from vidray.eval import metrics as M
from vidray.models.common import lstm_gain

# single-label example: 4 videos, 3 classes
S1 = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.2, 0.5, 0.3]])
Y1 = np.array([2, 0, 1, 1])
# multi-label example: 3 videos, 4 classes
S2 = np.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.1, 0.6], [0.4, 0.3, 0.2, 0.1]])
Y2 = np.array([[0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 1]])


def test_top_k_accuracy():
    # top-1 predictions 1, 0, 2, 1 -> rows 1 and 3 right
    assert M.top_k_accuracy(S1, Y1, 1) == 0.5
    # top-2: {1,2} has 2; {0,1} has 0; row 2 (tie 0.3/0.3 -> lower index first) {2,0} lacks 1; {1,2} has 1
    assert M.top_k_accuracy(S1, Y1, 2) == 0.75
    assert M.top_k_accuracy(S1, Y1, 3) == 1.0


def test_mean_class_accuracy_and_confusion():
    # class 0: 1/1, class 1: rows 2, 3 -> 1/2, class 2: row 0 -> 0/1; mean = 0.5
    assert M.mean_class_accuracy(S1, Y1) == pytest.approx(0.5)
    cm = M.confusion_matrix(Y1, S1.argmax(1), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 0]]
    # a class absent from the labels does not count: drop the only class-2 row
    assert M.mean_class_accuracy(S1[1:], Y1[1:]) == pytest.approx((1 + 0.5) / 2)


def test_hit_at_k_multi_label():
    # top-1: 0 / 1 / 0, none among the labels {2,3} / {0} / {3}
    assert M.hit_at_k(S2, Y2, 1) == 0.0
    # top-2: {0,2} hits; {1,3} misses; {0,1} misses
    assert M.hit_at_k(S2, Y2, 2) == pytest.approx(1 / 3)
    # top-3: {0,2,3} hits; {1,3,0} hits; {0,1,2} misses
    assert M.hit_at_k(S2, Y2, 3) == pytest.approx(2 / 3)
    assert M.hit_at_k(S2, Y2, 4) == 1.0
    # single labels: Hit@k is top-k accuracy
    assert M.hit_at_k(S1, Y1, 2) == M.top_k_accuracy(S1, Y1, 2)


def test_mean_average_precision_hand_computed():
    # class 0: ranking 0.9(-) 0.4(-) 0.2(+)            -> AP = 1/3
    # class 1: no positives                            -> skipped
    # class 2: ranking 0.5(+) ...                      -> AP = 1
    # class 3: ranking 0.6(-) 0.3(+) 0.1(+)            -> AP = (1/2 + 2/3) / 2 = 7/12
    assert M.average_precision(S2[:, 0], Y2[:, 0]) == pytest.approx(1 / 3)
    assert math.isnan(M.average_precision(S2[:, 1], Y2[:, 1]))
    assert M.average_precision(S2[:, 3], Y2[:, 3]) == pytest.approx(7 / 12)
    assert M.mean_average_precision(S2, Y2) == pytest.approx((1 / 3 + 1 + 7 / 12) / 3)
    # ties are one threshold: precision 1/2 at recall 1
    assert M.average_precision(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)
    assert M.average_precision(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)


def test_average_precision_matches_sklearn():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    s = np.round(rng.random((60, 5)), 1)  # rounded: many ties
    y = (rng.random((60, 5)) < 0.3).astype(int)
    for c in range(5):
        assert M.average_precision(s[:, c], y[:, c]) == pytest.approx(average_precision_score(y[:, c], s[:, c]))


def test_summarize_keys():
    single = M.summarize(S1, Y1, topk=(1, 5))
    assert single["top1"] == 0.5 and single["top3"] == 1.0  # k capped at K = 3
    assert single["mean_class_accuracy"] == pytest.approx(0.5)
    multi = M.summarize(S2, Y2, topk=(1, 3))
    assert multi["hit_at_3"] == pytest.approx(2 / 3) and "top1" not in multi
    assert multi["num_samples"] == 3


def test_bad_labels_refused():
    with pytest.raises(ValueError, match="0..2"):
        M.top_k_accuracy(S1, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        M.hit_at_k(S2, Y2 * 2)


# --------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------
Z = np.array([[0.0, math.log(3)], [0.0, 0.0], [math.log(4), 0.0]])  # softmax: [.25,.75] [.5,.5] [.8,.2]


def test_logmean_aggregation_hand_computed():
    v = agg.aggregate_scores(Z[:2], "logmean")
    np.testing.assert_allclose(v, [(math.log(0.25) + math.log(0.5)) / 2, (math.log(0.75) + math.log(0.5)) / 2])
    # log-mean punishes a class that one clip rules out, where the mean does not:
    # p = (.9,.1), (.9,.1), (.001,.999): mean (0.600, 0.400) -> class 0;
    # mean logs ((2 ln .9 + ln .001)/3, (2 ln .1 + ln .999)/3) = (-2.373, -1.535) -> class 1
    z = np.log(np.array([[0.9, 0.1], [0.9, 0.1], [0.001, 0.999]]))
    np.testing.assert_allclose(agg.aggregate_scores(z, "mean"), [0.6003, 0.3997], atol=1e-4)
    np.testing.assert_allclose(agg.aggregate_scores(z, "logmean"), [-2.373, -1.535], atol=1e-3)


def test_other_aggregations_hand_computed():
    np.testing.assert_allclose(agg.aggregate_scores(Z[:2], "mean"), [0.375, 0.625])
    np.testing.assert_allclose(agg.aggregate_scores(Z[:2], "max"), [0.5, 0.75])
    np.testing.assert_allclose(agg.aggregate_scores(Z, "last"), [0.8, 0.2])
    # g = (0, 0.5, 1): (0.5*[.5,.5] + [.8,.2]) / 1.5
    np.testing.assert_allclose(agg.aggregate_scores(Z, "weighted"), [1.05 / 1.5, 0.45 / 1.5])
    np.testing.assert_allclose(lstm_gain(3), [0, 0.5, 1])
    np.testing.assert_allclose(agg.aggregate_scores(Z[:1], "weighted"), [0.25, 0.75])
    # raw-score mean (activation none) and multi-label sigmoid
    np.testing.assert_allclose(agg.aggregate_scores(Z[:2], "mean", "none"), [0.0, math.log(3) / 2])
    np.testing.assert_allclose(agg.aggregate_scores(np.array([[0.0, math.log(3)]]), "mean", "sigmoid"), [0.5, 0.75])


def test_aggregate_by_video_and_video_hit():
    clips = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    ids, v = agg.aggregate_by_video(clips, ["b", "a", "b"], "mean", "none")
    assert ids.tolist() == ["b", "a"]
    np.testing.assert_allclose(v, [[1.0, 1.5], [0.0, 1.0]])
    labels_by_video = {"a": 1, "b": 0}
    clip_labels = np.array([labels_by_video[i] for i in ["b", "a", "b"]])
    assert M.hit_at_k(clips, clip_labels, 1) == pytest.approx(2 / 3)  # clip level: rows 0, 1 right
    video_labels = np.array([labels_by_video[i] for i in ids])
    assert M.hit_at_k(v, video_labels, 1) == pytest.approx(1 / 2)  # video b: mean (1, 1.5) -> 1, wrong
    with pytest.raises(ValueError, match="unknown aggregation"):
        agg.aggregate_scores(clips, "median")
