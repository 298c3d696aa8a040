"""Losses against hand computations: EPE, CE + lambda * EPE, the multi-resolution form, the LSTM gain g."""

from __future__ import annotations

import math

import pytest
import torch

from vidray.models.common import gain_weighted_scores, lstm_gain
from vidray.train.losses import (
    endpoint_error,
    gain_weighted_cross_entropy,
    multilabel_bce,
    multiscale_epe,
    multitask_loss,
    resize_flow,
    to_multi_hot,
)


def _flow_example():
    target = torch.zeros(2, 2, 2, 2)  # (B, 2, H, W)
    target[0, 0], target[0, 1] = 3.0, 4.0  # every pixel of sample 0 is off by (3, 4): 5 px
    target[1, 0, 1, 1] = 1.0  # one pixel of sample 1 is off by (1, 0): 1 px
    return torch.zeros_like(target), target


def test_epe_hand_computed():
    pred, target = _flow_example()
    # sum over pixels per sample: 4 * 5 = 20 and 1, then mean over the batch
    assert endpoint_error(pred, target).item() == pytest.approx(10.5)
    assert endpoint_error(pred, target, "mean").item() == pytest.approx(21 / 8)
    per_pixel = endpoint_error(pred, target, "none")
    assert per_pixel.shape == (2, 2, 2) and per_pixel[0, 0, 0].item() == pytest.approx(5.0)
    # (B, T, 2, H, W): the T fields of a sample are summed too
    t = torch.stack([target, target], 1)
    assert endpoint_error(torch.zeros_like(t), t).item() == pytest.approx(21.0)
    with pytest.raises(ValueError):
        endpoint_error(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))


def test_multitask_is_ce_plus_lambda_epe():
    pred, target = _flow_example()
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, 1])
    ce = -(
        (2.0 - math.log(math.exp(2) + 1 + math.exp(-1))) + (0.5 - math.log(2 * math.exp(0.5) + math.exp(3)))
    ) / 2
    out = multitask_loss(logits, labels, pred, target, lam=0.1)
    assert out["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert out["epe"].item() == pytest.approx(10.5)
    assert out["loss"].item() == pytest.approx(ce + 0.1 * 10.5, rel=1e-6)


def test_resize_flow_scales_values_to_the_new_pixels():
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0], flow[:, 1] = 2.0, 1.0
    small = resize_flow(flow, (4, 2))  # h: 8 -> 4 (y * 0.5), w: 8 -> 2 (x * 0.25)
    assert small.shape == (1, 2, 4, 2)
    torch.testing.assert_close(small[:, 0], torch.full((1, 4, 2), 0.5))
    torch.testing.assert_close(small[:, 1], torch.full((1, 4, 2), 0.5))
    assert resize_flow(torch.zeros(2, 3, 2, 8, 8), (4, 4), mode="area").shape == (2, 3, 2, 4, 4)


def test_multiscale_epe_alpha_form():
    target = torch.full((1, 2, 8, 8), 2.0)  # (2, 2) px at 8x8
    pyramid = [torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2)]
    # at 4x4 the target is (1, 1): sqrt(2) per pixel x 16; at 2x2 it is (0.5, 0.5): sqrt(0.5) x 4
    expected = 0.5 * 16 * math.sqrt(2) + 0.25 * 4 * math.sqrt(0.5)
    assert multiscale_epe(pyramid, target, [0.5, 0.25]).item() == pytest.approx(expected, rel=1e-6)
    logits, labels = torch.zeros(1, 3), torch.tensor([1])
    out = multitask_loss(logits, labels, pyramid, target, lam=2.0, alphas=[0.5, 0.25])
    assert out["loss"].item() == pytest.approx(math.log(3) + 2 * expected, rel=1e-6)
    with pytest.raises(ValueError):
        multiscale_epe(pyramid, target, [1.0])


def test_lstm_gain_values():
    torch.testing.assert_close(lstm_gain(5), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(lstm_gain(2), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(lstm_gain(1), torch.tensor([1.0]))


def test_gain_weighted_inference_hand_computed():
    scores = torch.tensor([[[1.0, 0.0], [2.0, 4.0], [4.0, 1.0]]])  # (B=1, T=3, K=2); g = [0, .5, 1]
    # (0 * [1, 0] + 0.5 * [2, 4] + 1 * [4, 1]) / 1.5 = [5, 3] / 1.5
    torch.testing.assert_close(gain_weighted_scores(scores), torch.tensor([[5 / 1.5, 2.0]]))
    probs = gain_weighted_scores(scores, softmax=True)
    p1, p2 = torch.softmax(scores[0, 1], 0), torch.softmax(scores[0, 2], 0)
    torch.testing.assert_close(probs[0], (0.5 * p1 + p2) / 1.5)


def test_gain_weighted_cross_entropy_hand_computed():
    logits = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]])  # (1, 3, 2), label 0
    ce = [math.log(2), math.log(1 + math.exp(-1)), math.log(1 + math.exp(2))]
    expected = (0 * ce[0] + 0.5 * ce[1] + 1 * ce[2]) / 1.5
    assert gain_weighted_cross_entropy(logits, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)
    uniform = gain_weighted_cross_entropy(logits, torch.tensor([0]), gain=torch.ones(3))
    assert uniform.item() == pytest.approx(sum(ce) / 3, rel=1e-6)


def test_multilabel_bce():
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    y = to_multi_hot([[0, 2]], 3)
    torch.testing.assert_close(y, torch.tensor([[1.0, 0.0, 1.0]]))

    def sig(v):
        return 1 / (1 + math.exp(-v))

    expected = -(math.log(sig(2)) + math.log(1 - sig(-1)) + math.log(sig(0))) / 3
    assert multilabel_bce(logits, [[0, 2]]).item() == pytest.approx(expected, rel=1e-6)
    assert multilabel_bce(logits, y).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        to_multi_hot([[3]], 3)
