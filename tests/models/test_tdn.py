"""Temporal Difference Network (Ng & Davis, WACV 2018): the difference inputs are the image-net feature
differences of adjacent frames, scores are the average of the two averages, partial BN freezes what it says."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from vidray.models import create_model
from vidray.models.tdn import DEFAULT_TAPS


def _model(**kw):
    torch.manual_seed(0)
    return create_model("tdn", num_classes=5, **kw)


def test_difference_inputs_equal_feature_differences_of_adjacent_frames():
    model = _model().eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        out = model(x, return_diff_inputs=True)
        # image-net features computed frame by frame, independently of the batched forward
        per_frame = [model.image_features(x[:, t]) for t in range(4)]
    assert tuple(out["diff_inputs"]) == DEFAULT_TAPS == ("input", "conv1", "res2", "res3")
    torch.testing.assert_close(out["diff_inputs"]["input"], x[:, 1:] - x[:, :-1])
    expected_hw = {"input": 32, "conv1": 16, "res2": 8, "res3": 4}  # right before each spatial reduction
    for tap, d in out["diff_inputs"].items():
        assert d.shape[:2] == (2, 3) and d.shape[-1] == expected_hw[tap]
        for t in range(3):
            torch.testing.assert_close(d[:, t], per_frame[t + 1][tap] - per_frame[t][tap], rtol=1e-4, atol=1e-5)


def test_scores_are_the_average_of_image_and_difference_averages():
    model = _model().eval()
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        out = model(x, return_diff_inputs=True)
        image = torch.stack([model.image_scores(x[:, t]) for t in range(3)], 1).mean(1)
        diff = torch.stack(
            [model.difference_scores({k: v[:, p] for k, v in out["diff_inputs"].items()}) for p in range(2)], 1
        ).mean(1)
    assert out["logits"].shape == (2, 5)
    torch.testing.assert_close(out["image_logits"], image, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["diff_logits"], diff, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["logits"], (image + diff) / 2, rtol=1e-4, atol=1e-5)


def test_difference_branch_sees_only_differences():
    """A static clip (identical frames) feeds zeros at every tap: its diff score is that of a zero input."""
    model = _model().eval()
    frame = torch.randn(1, 1, 3, 32, 32)
    x = frame.expand(1, 3, 3, 32, 32).contiguous()
    with torch.no_grad():
        out = model(x, return_diff_inputs=True)
        zeros = {k: torch.zeros_like(v[:, 0]) for k, v in out["diff_inputs"].items()}
        torch.testing.assert_close(out["diff_logits"], model.difference_scores(zeros))
        assert all(v.abs().max() == 0 for v in out["diff_inputs"].values())


def test_configurable_taps_start_the_difference_net_at_the_first_tap():
    model = _model(taps=("res3", "res2"))
    assert model.taps == ("res2", "res3")
    assert list(model.diff_net) == ["res3", "res4", "res5"]  # no conv1/res2 stages built
    out = model(torch.randn(2, 3, 3, 32, 32), return_diff_inputs=True)
    assert set(out["diff_inputs"]) == {"res2", "res3"}
    assert out["logits"].shape == (2, 5)
    with pytest.raises(ValueError):
        _model(taps=("res5",))
    with pytest.raises(ValueError):
        model(torch.randn(2, 1, 3, 32, 32))  # one segment has no difference


def test_gradients_of_the_difference_branch_reach_the_image_net_unless_detached():
    x = torch.randn(2, 3, 3, 32, 32)
    for detach in (False, True):
        model = _model(detach_diff=detach, dropout=0.0)
        model(x)["diff_logits"].sum().backward()
        g = model.image_net["res3"][0].conv1.weight.grad
        assert (g is not None and g.abs().sum() > 0) == (not detach)


def test_partial_bn_freezes_all_but_the_first_bn_of_each_subnetwork():
    model = _model(dropout=0.8)
    assert model.image_dropout.p == 0.8 and model.diff_dropout.p == 0.8
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    first = model.first_batchnorms()
    assert first[0] is model.image_net["conv1"][1] and first[1] is model.diff_net["conv1"][1]
    frozen = [m for m in bns if all(m is not f for f in first)]
    model.partial_bn(True)
    model.train()
    assert all(f.training for f in first) and not any(m.training for m in frozen)
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for f in first for p in f.parameters())
    before = [m.running_mean.clone() for m in frozen]
    first_before = [f.running_mean.clone() for f in first]
    model(torch.randn(2, 3, 3, 32, 32) * 3 + 1)["logits"].sum().backward()
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, frozen))
    assert all(not torch.equal(b, f.running_mean) for b, f in zip(first_before, first))
    assert all(m.weight.grad is None for m in frozen)
    model.partial_bn(False)
    model.train()
    assert all(m.training for m in bns) and all(p.requires_grad for p in model.parameters())
    assert _model(partial_bn=True)._partial_bn


def test_paper_backbone_is_resnet50():
    torch.manual_seed(0)
    model = create_model("tdn", num_classes=3, backbone="resnet50").eval()
    assert model.image_fc.in_features == 2048 and model.diff_fc.in_features == 2048
    with torch.no_grad():
        assert model(torch.randn(1, 2, 3, 64, 64))["logits"].shape == (1, 3)
