"""ConvGRU cell and GRU-RCN variants (Ballas et al., ICLR 2016, sec. 3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidray.models import create_model
from vidray.models.gru_rcn import ConvGRU, ConvGRUCell, ConvGRUCellReference, convgru_num_parameters


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _eqs_1_to_4(cell: ConvGRUCell, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Eqs. 1-4 transcribed with F.conv2d on the fused cell's weight slices."""
    ch, p = cell.hidden_channels, cell.kernel_size // 2
    wx, bx, wh, u = cell.conv_x.weight, cell.conv_x.bias, cell.conv_h.weight, cell.conv_c.weight
    w_z, w_r, w = wx[:ch], wx[ch : 2 * ch], wx[2 * ch :]
    b_z, b_r, b = bx[:ch], bx[ch : 2 * ch], bx[2 * ch :]
    u_z, u_r = wh[:ch], wh[ch:]
    z = torch.sigmoid(F.conv2d(x, w_z, b_z, padding=p) + F.conv2d(h, u_z, padding=p))  # (1)
    r = torch.sigmoid(F.conv2d(x, w_r, b_r, padding=p) + F.conv2d(h, u_r, padding=p))  # (2)
    h_tilde = torch.tanh(F.conv2d(x, w, b, padding=p) + F.conv2d(r * h, u, padding=p))  # (3)
    return (1 - z) * h + z * h_tilde  # (4)


@pytest.mark.parametrize("cx,ch,k", [(3, 5, 3), (4, 2, 1), (2, 3, 5)])
def test_cell_matches_equations(cx, ch, k):
    torch.manual_seed(0)
    cell = ConvGRUCell(cx, ch, k)
    x, h = torch.randn(2, cx, 7, 6), torch.randn(2, ch, 7, 6)
    with torch.no_grad():
        out = cell(x, h)
        assert out.shape == h.shape  # zero padding keeps the map size
        torch.testing.assert_close(out, _eqs_1_to_4(cell, x, h), rtol=1e-5, atol=1e-6)
        ref = ConvGRUCellReference.from_fused(cell)
        torch.testing.assert_close(out, ref(x, h), rtol=1e-5, atol=1e-6)
        # h_0 = None means zeros (the fused cell skips the recurrent convolutions then)
        zeros = torch.zeros_like(h)
        torch.testing.assert_close(cell(x), _eqs_1_to_4(cell, x, zeros), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ref(x), cell(x), rtol=1e-5, atol=1e-6)


def test_cell_gradients_match_reference():
    torch.manual_seed(0)
    cell = ConvGRUCell(3, 4)
    ref = ConvGRUCellReference.from_fused(cell)
    x, h = torch.randn(2, 3, 5, 5), torch.randn(2, 4, 5, 5)
    xa, ha = x.clone().requires_grad_(), h.clone().requires_grad_()
    xb, hb = x.clone().requires_grad_(), h.clone().requires_grad_()
    cell(xa, ha).square().sum().backward()
    ref(xb, hb).square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ha.grad, hb.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cell.conv_c.weight.grad, ref.u.weight.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cx,ch,k,bias", [(256, 256, 3, True), (512, 64, 3, True), (4096, 512, 1, True), (3, 5, 3, False)])
def test_parameter_count_formula(cx, ch, k, bias):
    # k1*k2*Ox*Oh per input-to-hidden kernel (W_z, W_r, W) and k1*k2*Oh*Oh per hidden-to-hidden kernel
    # (U_z, U_r, U), plus Oh biases per gate (z, r, candidate) when bias=True.
    expected = 3 * k * k * cx * ch + 3 * k * k * ch * ch + (3 * ch if bias else 0)
    assert convgru_num_parameters(cx, ch, k, bias) == expected
    for cls in (ConvGRUCell, ConvGRUCellReference):
        assert sum(p.numel() for p in cls(cx, ch, k, bias).parameters()) == expected


def test_sequence_layer_equals_cell_loop():
    torch.manual_seed(0)
    gru = ConvGRU(3, 4)
    x = torch.randn(2, 5, 3, 6, 6)
    with torch.no_grad():
        states, last = gru(x)
        h = None
        for t in range(5):
            h = gru.cell(x[:, t], h)
            torch.testing.assert_close(states[:, t], h, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(last, h)
        # reverse=True is the forward pass on the time-flipped input, re-indexed by frame
        rstates, rlast = gru(x, reverse=True)
        fstates, flast = gru(x.flip(1))
        torch.testing.assert_close(rstates, fstates.flip(1))
        torch.testing.assert_close(rlast, flast)


def _time_asymmetric_clip() -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.randn(2, 4, 3, 32, 32)
    return x + torch.linspace(-2, 2, 4).view(1, 4, 1, 1, 1)  # brightness ramp: not time-symmetric


def test_bidirectional_backward_pass_reverses_time():
    torch.manual_seed(0)
    model = create_model("gru_rcn_bidir", num_classes=5, backbone="tiny").eval()
    # give the backward ConvGRUs the forward ones' weights: the backward half of the features on x must then
    # equal the forward half on x reversed in time
    model.grus_backward.load_state_dict(model.grus.state_dict())
    x = _time_asymmetric_clip()
    with torch.no_grad():
        feats, feats_rev = model.forward_features(x), model.forward_features(x.flip(1))
    for tap, ch in zip(model.taps, model.hidden_channels):
        assert feats[tap].shape == (2, 2 * ch)
        torch.testing.assert_close(feats[tap][:, ch:], feats_rev[tap][:, :ch], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(feats[tap][:, :ch], feats_rev[tap][:, ch:], rtol=1e-4, atol=1e-5)
        assert not torch.allclose(feats[tap][:, :ch], feats[tap][:, ch:], atol=1e-4)  # the two directions differ


def test_forward_only_model_depends_on_frame_order():
    torch.manual_seed(0)
    model = create_model("gru_rcn", num_classes=5, backbone="tiny").eval()
    x = _time_asymmetric_clip()
    with torch.no_grad():
        assert not torch.allclose(model(x)["logits"], model(x.flip(1))["logits"], atol=1e-5)


def _perturbed_percepts(model, x):
    feats = model.tap_features(x)
    other = dict(feats)
    other["pool2"] = feats["pool2"] + torch.randn_like(feats["pool2"])
    return feats, other


@pytest.mark.parametrize("stacked", [True, False])
def test_stacked_layer_receives_lower_layer(stacked):
    torch.manual_seed(0)
    model = create_model("gru_rcn_stacked" if stacked else "gru_rcn", num_classes=5, backbone="tiny").eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        feats, other = _perturbed_percepts(model, x)
        a, b = model.encode(feats), model.encode(other)
    assert not torch.allclose(a["pool2"], b["pool2"])
    for tap in ("pool3", "pool4", "pool5", "fc7"):  # only the stacked model propagates pool2 upwards
        assert torch.allclose(a[tap], b[tap]) != stacked, tap
    if stacked:  # input channels of layer l = its percept + the hidden channels of layer l-1
        grus, taps, hidden = model.grus, model.taps, model.hidden_channels
        for i in range(1, len(taps)):
            assert grus[i].cell.input_channels == model.backbone.tap_channels[taps[i]] + hidden[i - 1]


def test_stacked_input_is_max_pooled_lower_state():
    torch.manual_seed(0)
    model = create_model("gru_rcn_stacked", num_classes=5, backbone="tiny").eval()
    feats = model.tap_features(torch.randn(1, 3, 3, 32, 32))
    seen = {}
    hook = model.grus[1].register_forward_pre_hook(lambda m, args, kwargs: seen.update(x=args[0]), with_kwargs=True)
    with torch.no_grad():
        states0, _ = model.grus[0](feats["pool2"])
        model.encode(feats)
    hook.remove()
    c3 = model.backbone.tap_channels["pool3"]
    expected = F.max_pool2d(states0.flatten(0, 1), 2).unflatten(0, (1, 3))  # 8x8 -> 4x4
    torch.testing.assert_close(seen["x"][:, :, :c3], feats["pool3"])
    torch.testing.assert_close(seen["x"][:, :, c3:], expected)


def test_vector_taps_use_1x1_kernels_and_vgg16_rnn_is_fc7_only():
    model = create_model("vgg16_rnn", num_classes=5, backbone="tiny")
    assert model.taps == ("fc7",) and model.grus[0].cell.kernel_size == 1
    assert create_model("gru_rcn", num_classes=5, backbone="tiny").grus[0].cell.kernel_size == 3


def test_freeze_backbone():
    torch.manual_seed(0)
    model = create_model("gru_rcn", num_classes=5, backbone="tiny", freeze_backbone=True).train()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not model.backbone.training and model.grus.training
    out = model(torch.randn(2, 3, 3, 32, 32))
    out["logits"].sum().backward()
    assert all(p.grad is not None for p in model.grus.parameters())


def test_mean_prob_combination():
    torch.manual_seed(0)
    model = create_model("gru_rcn", num_classes=5, backbone="tiny").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 3, 32, 32))
    probs = torch.stack([a.softmax(-1) for a in out["aux_logits"]]).mean(0)
    torch.testing.assert_close(out["logits"].softmax(-1), probs)
    torch.testing.assert_close(out["logits"].exp().sum(-1), torch.ones(2))
