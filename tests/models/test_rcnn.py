"""RCNN: recurrent convolutional layers (Xu, Hu, Deng, ICME 2016, sec. 3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidray.models import create_model
from vidray.models.backbones import TinyVGG
from vidray.models.rcnn import RecurrentConv2d, detach_state


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(**kw):
    torch.manual_seed(0)
    return create_model("rcnn", num_classes=5, backbone="tiny", **kw)


def test_every_conv_is_recurrent_and_predicts_every_frame():
    model = _tiny().eval()
    assert model.num_recurrent_layers == 5
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.net.features)  # folded into the RCLs
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out["frame_logits"].shape == (2, 3, 5)
    torch.testing.assert_close(out["logits"], out["frame_logits"].mean(1))


def test_recurrent_layer_follows_equations():
    model = _tiny().eval()
    x = torch.randn(2, 2, 3, 32, 32)
    rcl = model.net.features[0]
    assert isinstance(rcl, RecurrentConv2d)
    with torch.no_grad():
        s0 = model(x[:, :1], return_state=True)["state"]
        s1 = model(x, return_state=True)["state"]
        v0 = F.relu(rcl.conv(x[:, 0]))  # v^{1,1} = f(W * x^1 + b): no previous frame
        v1 = F.relu(rcl.conv(x[:, 1]) + rcl.temporal(v0))  # v^{2,1} = f(W * x^2 + b + Ŵ * v^{1,1})
    torch.testing.assert_close(s0[0], v0)
    torch.testing.assert_close(s1[0], v1, rtol=1e-5, atol=1e-6)
    # layer 2 reads layer 1's current output and its own previous output
    rcl2 = model.net.features[3]
    with torch.no_grad():
        v2_prev = F.relu(rcl2.conv(F.max_pool2d(v0, 2)))
        v2 = F.relu(rcl2.conv(F.max_pool2d(v1, 2)) + rcl2.temporal(v2_prev))
    torch.testing.assert_close(s1[1], v2, rtol=1e-5, atol=1e-6)


def test_sequential_state_carries_over_clips():
    model = _tiny().eval()
    x = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        whole = model(x)["frame_logits"]
        first = model(x[:, :2], return_state=True)
        second = model(x[:, 2:], state=detach_state(first["state"]))
    torch.testing.assert_close(torch.cat([first["frame_logits"], second["frame_logits"]], 1), whole)
    assert [s.shape[1] for s in first["state"]] == [8, 16, 32, 32, 32]


def test_random_mode_uses_only_the_last_pair():
    model = _tiny().eval()
    x = torch.randn(2, 5, 3, 32, 32, requires_grad=True)
    out = model(x, mode="random")
    assert out["frame_logits"].shape == (2, 1, 5)
    out["logits"].sum().backward()
    assert torch.all(x.grad[:, :3] == 0) and x.grad[:, 3:].abs().sum() > 0
    with torch.no_grad():
        other = x.detach().clone()
        other[:, :3] = torch.randn_like(other[:, :3])
        torch.testing.assert_close(model(other, mode="random")["logits"], out["logits"].detach())
        # v^{t-1} is the feed-forward of x^{t-1}: the same as a 2-frame sequential pass's last frame
        torch.testing.assert_close(out["logits"].detach(), model(x[:, 3:].detach())["frame_logits"][:, 1])
    with pytest.raises(ValueError):
        model(x[:, :1], mode="random")


def test_two_stage_parameter_groups():
    model = _tiny()
    groups = model.param_groups()
    assert len(groups["temporal"]) == 5 and len(groups["head"]) == 2  # Ŵ per RCL; new fc8 weight + bias
    total = sum(len(g) for g in groups.values())
    assert total == len(list(model.parameters()))
    model.set_training_stage(1)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in groups["temporal"] + groups["head"]}
    model.set_training_stage(2)
    assert all(p.requires_grad for p in model.parameters())


def test_half_pretrained_spatial_weights_and_xavier_temporal(tmp_path):
    torch.manual_seed(0)
    ref = TinyVGG()
    path = tmp_path / "tiny.pt"
    torch.save(ref.state_dict(), path)
    model = create_model("rcnn", num_classes=5, backbone="tiny", weights=str(path))
    for i, rcl in zip((0, 3, 6, 9, 12), model._rcls):
        torch.testing.assert_close(rcl.conv.weight, 0.5 * ref.features[i].weight)
        torch.testing.assert_close(rcl.conv.bias, ref.features[i].bias)
        w = rcl.temporal.weight
        c, k = w.shape[0], w.shape[-1]
        bound = math.sqrt(6.0 / (2 * c * k * k))  # Xavier-uniform bound, fan_in = fan_out = c*k*k
        assert w.abs().max() <= bound and w.abs().max() > 0.5 * bound
    torch.testing.assert_close(model.net.classifier[0].weight, ref.classifier[0].weight)  # fc6 kept as is


def test_vgg16_rcnn_small_input():
    torch.manual_seed(0)
    model = create_model("rcnn", num_classes=4, backbone="vgg16").eval()
    assert model.num_recurrent_layers == 13
    with torch.no_grad():
        out = model(torch.randn(1, 2, 3, 32, 32))
    assert out["frame_logits"].shape == (1, 2, 4) and "aux_logits" not in out


def test_googlenet_rcnn_low_medium_high_outputs():
    torch.manual_seed(0)
    model = create_model("rcnn", num_classes=4, backbone="googlenet", in_channels=2).train()
    assert model.num_recurrent_layers == 57  # 3 stem convs + 9 inception blocks x 6 convs
    x = torch.randn(2, 2, 2, 64, 64)
    out = model(x)
    assert out["frame_logits"].shape == (2, 2, 4)
    assert [a.shape for a in out["aux_logits"]] == [(2, 4), (2, 4)]  # low (after 4a), medium (after 4d)
    with torch.no_grad():
        assert "aux_logits" not in model.eval()(x)
