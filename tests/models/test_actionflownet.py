"""ActionFlowNet (Ng et al., WACV 2018): shapes, T flows for T frames, decoder dropping, temporal halving,
the 2F pyramid and the stacked model, weight loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from vidray.models import create_model
from vidray.models.actionflownet import resolve_weights
from vidray.models.common import adapt_conv_in_channels
from vidray.train.losses import endpoint_error, multitask_loss


def test_actionflownet_outputs_t_flows_at_input_resolution():
    torch.manual_seed(0)
    model = create_model("actionflownet", num_classes=5)
    # odd, non-square sizes exercise the decoder's size matching
    out = model(torch.randn(2, 6, 3, 24, 40))
    assert out["logits"].shape == (2, 5)
    assert out["flow"].shape == (2, 6, 2, 24, 40)  # T flows for T frames (last = future flow)
    assert torch.isfinite(out["flow"]).all()


def test_temporal_resolution_halved_once_after_third_block():
    torch.manual_seed(0)
    model = create_model("actionflownet", num_classes=3)
    feats = model.features(torch.randn(1, 8, 3, 32, 32))
    # [conv1, res2, res3, res4, res5] as (B, C, T, H, W)
    assert [f.shape[2] for f in feats] == [8, 8, 8, 8, 4]
    assert [f.shape[3] for f in feats] == [16, 8, 4, 2, 1]
    moved = create_model("actionflownet", num_classes=3, temporal_stride_stage=3)
    assert [f.shape[2] for f in moved.features(torch.randn(1, 8, 3, 32, 32))] == [8, 8, 4, 4, 4]
    # every encoder conv is 3x3x3 (the 1x1x1 shortcut projections excepted)
    ks = {m.kernel_size for m in model.encoder.modules() if isinstance(m, nn.Conv3d)}
    assert ks == {(3, 3, 3), (1, 1, 1)}
    assert not any(isinstance(m, (nn.MaxPool3d, nn.AvgPool3d)) for m in model.encoder.modules())


def test_dropping_the_decoder_keeps_the_logits():
    torch.manual_seed(0)
    model = create_model("actionflownet", num_classes=4).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        no_flow = model(x, with_flow=False)
    assert "flow" not in no_flow
    n_before = sum(p.numel() for p in model.parameters())
    model.drop_decoder()
    assert sum(p.numel() for p in model.parameters()) < n_before
    with torch.no_grad():
        dropped = model(x)
    assert set(dropped) == {"logits"}
    torch.testing.assert_close(dropped["logits"], full["logits"])
    torch.testing.assert_close(no_flow["logits"], full["logits"])
    with pytest.raises(RuntimeError):
        model(x, with_flow=True)


def test_multitask_training_fits_flow_and_labels():
    """CE + lambda * EPE on one tiny batch: both terms fall (the decoder really learns the flow)."""
    torch.manual_seed(0)
    model = create_model("actionflownet", num_classes=3)
    x = torch.randn(2, 4, 3, 16, 16)
    labels = torch.tensor([0, 2])
    target = torch.zeros(2, 4, 2, 16, 16)
    target[:, :, 0] = 1.5  # a uniform 1.5 px shift to the right
    target[:, :, 1] = -0.5
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(25):
        out = model(x)
        losses = multitask_loss(out["logits"], labels, out["flow"], target, lam=0.01)
        if first is None:
            first = {k: v.item() for k, v in losses.items()}
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert endpoint_error(out["flow"], target, "mean") < 0.5 * first["epe"] / (4 * 16 * 16)
    assert multitask_loss(out["logits"], labels, out["flow"], target, lam=0.01)["ce"] < first["ce"]


def test_2f_pyramid_shapes_and_pair_averaging():
    torch.manual_seed(0)
    model = create_model("actionflownet_2f", num_classes=5).eval()
    assert model.flownet.trunk.conv1.in_channels == 6  # 6-channel frame pairs
    x = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert out["logits"].shape == (2, 5)
    shapes = [tuple(f.shape) for f in out["flow_pyramid"]]
    assert shapes == [(2, 2, 2, 16, 16), (2, 2, 2, 8, 8), (2, 2, 2, 4, 4), (2, 2, 2, 2, 2)]
    assert out["flow"] is out["flow_pyramid"][0]
    with torch.no_grad():  # video score = mean of the scores of the T-1 pairs
        per_pair = [model(x[:, t : t + 2])["logits"] for t in range(2)]
    torch.testing.assert_close(out["logits"], torch.stack(per_pair).mean(0), rtol=1e-5, atol=1e-5)
    model.drop_decoder()
    with torch.no_grad():
        assert set(model(x)) == {"logits"}
    with pytest.raises(ValueError):
        model(x[:, :1])


def test_stacked_model_classifies_predicted_flow_without_conv1_pool1():
    torch.manual_seed(0)
    model = create_model("actionflownet_stacked", num_classes=4)
    assert not hasattr(model, "conv1") and not hasattr(model, "maxpool")
    assert model.flow_stem[0].in_channels == 2 and model.flow_stem[0].stride == (1, 1)
    x = torch.randn(2, 2, 3, 64, 64)
    out = model(x)
    assert out["logits"].shape == (2, 4)
    assert out["flow"].shape == (2, 1, 2, 16, 16)
    # end to end: the classification loss reaches the flow network ...
    out["logits"].sum().backward()
    g = model.flownet.decoder.predict[-1].weight.grad
    assert g is not None and g.abs().sum() > 0
    # ... unless the flow is detached
    detached = create_model("actionflownet_stacked", num_classes=4, detach_flow=True)
    detached(x)["logits"].sum().backward()
    assert detached.flownet.decoder.predict[-1].weight.grad is None


def test_tiled_conv1_gives_the_rgb_response_on_identical_frames():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    six = adapt_conv_in_channels(conv, 6)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(six(torch.cat([x, x], 1)), conv(x), rtol=1e-5, atol=1e-5)
    two = adapt_conv_in_channels(conv, 2)  # not a multiple of 3: RGB-mean init
    torch.testing.assert_close(two.weight[:, 0], conv.weight.mean(1))


def test_weights_argument(tmp_path):
    torch.manual_seed(0)
    assert resolve_weights("IMAGENET1K_V1", __import__("torchvision").models.ResNet18_Weights)[0] == "torchvision"
    with pytest.raises(ValueError):  # the 3D model takes no ImageNet weights
        create_model("actionflownet", num_classes=3, weights="ResNet18_Weights.IMAGENET1K_V1")
    src = create_model("actionflownet_2f", num_classes=3).eval()
    path = tmp_path / "afn2f.pth"
    torch.save({"model": src.state_dict()}, path)
    loaded = create_model("actionflownet_2f", num_classes=3, weights=str(path)).eval()
    x = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["logits"], src(x)["logits"])
    with pytest.raises(FileNotFoundError):
        create_model("actionflownet_2f", num_classes=3, weights=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("name", ["actionflownet", "actionflownet_2f"])
def test_with_flow_false_declares_exactly_the_unused_decoder_parameters(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, with_flow=False)
    out = model(torch.randn(2, 3, 3, 32, 32))
    assert "flow" not in out
    out["logits"].sum().backward()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None}
    assert no_grad and no_grad == set(model.unused_parameter_names)
    assert create_model(name, num_classes=3).unused_parameter_names == []
