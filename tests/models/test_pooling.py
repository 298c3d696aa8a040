"""Feature pooling and LSTM models (Ng et al., "Beyond Short Snippets"; thesis ch. 3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidray.models import create_model
from vidray.models.backbones import build_backbone
from vidray.models.pooling import LSTMNet, num_windows, temporal_windows_max
from vidray.models.common import gain_weighted_scores


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(name, **kw):
    torch.manual_seed(0)
    return create_model(name, num_classes=5, backbone="tiny", **kw).eval()


def _clip(t=8):
    torch.manual_seed(1)
    return torch.randn(2, t, 3, 32, 32)


def test_windows():
    assert num_windows(10, 10, 5) == 1 and num_windows(120, 10, 5) == 23 and num_windows(8, 4, 2) == 3
    f = torch.arange(8.0).view(1, 8, 1)
    assert temporal_windows_max(f, 4, 2).flatten().tolist() == [3.0, 5.0, 7.0]
    with pytest.raises(ValueError):
        num_windows(3, 4, 2)


def test_conv_pooling_is_max_over_time_of_conv_maps_and_order_invariant():
    model, x = _model("conv_pooling"), _clip()
    with torch.no_grad():
        out = model(x)["logits"]
        torch.testing.assert_close(model(x[:, torch.randperm(8)])["logits"], out)
        maps = model.frame_maps(x)
        assert maps.shape == (2, 8, 32, 2, 2)  # tiny: pool4
        torch.testing.assert_close(out, model.classifier(model.fc(maps.amax(1))))


def test_late_pooling_is_max_over_per_frame_fc():
    model, x = _model("late_pooling"), _clip()
    with torch.no_grad():
        per_frame = torch.stack([model.fc(model.frame_maps(x[:, t : t + 1])[:, 0]) for t in range(8)], 1)
        torch.testing.assert_close(model(x)["logits"], model.classifier(per_frame.amax(1)))
        torch.testing.assert_close(model(x.flip(1))["logits"], model(x)["logits"])


def test_slow_pooling_two_stage_max():
    model, x = _model("slow_pooling"), _clip()
    assert (model.window, model.stride) == (4, 2)  # tiny; the paper's 10 / 5 are the default otherwise
    with torch.no_grad():
        maps = model.frame_maps(x)
        windows = [model.fc(maps[:, s : s + 4].amax(1)) for s in (0, 2, 4)]
        torch.testing.assert_close(model(x)["logits"], model.classifier(torch.stack(windows, 1).amax(1)))
    with pytest.raises(ValueError):
        model(x[:, :3])


def test_local_pooling_concatenates_windows():
    model, x = _model("local_pooling"), _clip()
    assert model.classifier.in_features == 3 * model.fc.out_dim
    with torch.no_grad():
        maps = model.frame_maps(x)
        windows = [model.fc(maps[:, s : s + 4].amax(1)) for s in (0, 2, 4)]
        torch.testing.assert_close(model(x)["logits"], model.classifier(torch.cat(windows, 1)))
    with pytest.raises(ValueError):
        model(_clip(10))  # built for 8 frames
    assert create_model("local_pooling", num_classes=5, backbone="tiny", num_frames=12).classifier.in_features == 5 * 64


def test_time_conv_pooling():
    model, x = _model("time_conv_pooling"), _clip()
    conv = model.time_conv
    assert conv.kernel_size == (4, 3, 3) and conv.stride == (2, 1, 1) and conv.out_channels == 16
    with torch.no_grad():
        maps = model.frame_maps(x)  # (B, T, C, h, w)
        g = F.relu(F.conv3d(maps.permute(0, 2, 1, 3, 4), conv.weight, conv.bias, stride=(2, 1, 1), padding=(0, 1, 1)))
        assert g.shape[2] == 3
        torch.testing.assert_close(model(x)["logits"], model.classifier(model.fc(g.amax(2))))


def test_paper_sizes_of_time_conv():
    torch.manual_seed(0)
    bb = build_backbone("tiny", taps=("pool4",))
    from vidray.models.pooling import FramePoolingNet

    net = FramePoolingNet(bb, conv_shape=(32, 2, 2), num_classes=3, pooling="time_conv", fc_dims=(8,))
    assert net.time_conv.kernel_size == (10, 3, 3) and net.time_conv.stride == (5, 1, 1)
    assert net.time_conv.out_channels == 256


def test_single_frame_scores_are_averaged_and_frames_independent():
    model, x = _model("single_frame"), _clip(4)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out["logits"], out["frame_logits"].mean(1))
        alone = model(x[:, 2:3])["frame_logits"][:, 0]
        torch.testing.assert_close(out["frame_logits"][:, 2], alone)


def test_lstm_predicts_every_frame_causally():
    model, x = _model("lstm"), _clip(5)
    assert model.lstm.num_layers == 2 and model.lstm.hidden_size == 32  # tiny
    with torch.no_grad():
        out = model(x)
        assert out["frame_logits"].shape == (2, 5, 5)
        changed = x.clone()
        changed[:, 3:] = torch.randn_like(changed[:, 3:])
        out2 = model(changed)
        torch.testing.assert_close(out2["frame_logits"][:, :3], out["frame_logits"][:, :3])
        assert not torch.allclose(out2["frame_logits"][:, 3:], out["frame_logits"][:, 3:])
        g = _model("lstm", aggregate="gain")
        o = g(x)
        torch.testing.assert_close(o["logits"], gain_weighted_scores(F.log_softmax(o["frame_logits"], -1)))
        torch.testing.assert_close(_model("lstm", aggregate="last")(x)["logits"], out["frame_logits"][:, -1])


def test_lstm_paper_defaults():
    torch.manual_seed(0)
    net = LSTMNet(build_backbone("tiny", taps=("fc7",)), num_classes=3)
    assert net.lstm.num_layers == 5 and net.lstm.hidden_size == 512


@pytest.mark.parametrize("name", ["conv_pooling", "time_conv_pooling", "lstm"])
def test_flow_stream_input(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, backbone="tiny", in_channels=10).eval()  # L = 5 flow fields
    with torch.no_grad():
        assert model(torch.randn(1, 8, 10, 32, 32))["logits"].shape == (1, 5)
