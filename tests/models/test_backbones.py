"""Backbones with named taps: shapes, checkpoint loading, weights-name resolution, flow-input conv."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from vidray.models.backbones import TinyVGG, build_backbone, list_backbones, resolve_weights


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _shapes(bb, size, in_channels=3):
    with torch.no_grad():
        out = bb.eval()(torch.randn(2, in_channels, size, size))
    assert tuple(out) == bb.taps
    return {k: tuple(v.shape[1:]) for k, v in out.items()}


def test_list_backbones():
    assert set(list_backbones()) == {"tiny", "vgg16", "alexnet", "googlenet", "resnet18", "resnet50"}


def test_tiny_taps():
    torch.manual_seed(0)
    bb = build_backbone("tiny")
    assert bb.taps == ("pool2", "pool3", "pool4", "pool5", "fc7")
    assert _shapes(bb, 32) == {"pool2": (16, 8, 8), "pool3": (32, 4, 4), "pool4": (32, 2, 2), "pool5": (32, 1, 1), "fc7": (64,)}
    assert bb.tap_channels == {"pool2": 16, "pool3": 32, "pool4": 32, "pool5": 32, "fc7": 64}
    assert bb.vector_taps == {"fc7"}
    bb = build_backbone("tiny", taps=("conv1", "pool1", "fc6"))
    assert _shapes(bb, 32) == {"conv1": (8, 32, 32), "pool1": (8, 16, 16), "fc6": (64,)}


def test_vgg16_taps_small_input():
    torch.manual_seed(0)
    bb = build_backbone("vgg16")  # random init
    assert isinstance(bb.body, torch.fx.GraphModule)  # cut by create_feature_extractor
    assert _shapes(bb, 32) == {"pool2": (128, 8, 8), "pool3": (256, 4, 4), "pool4": (512, 2, 2), "pool5": (512, 1, 1), "fc7": (4096,)}
    assert bb.tap_channels == {"pool2": 128, "pool3": 256, "pool4": 512, "pool5": 512, "fc7": 4096}


def test_resnet18_taps_small_input():
    torch.manual_seed(0)
    bb = build_backbone("resnet18")
    assert bb.taps == ("res2", "res3", "res4", "res5", "pool")
    assert _shapes(bb, 64) == {"res2": (64, 16, 16), "res3": (128, 8, 8), "res4": (256, 4, 4), "res5": (512, 2, 2), "pool": (512,)}
    # only the layers up to the requested taps are kept
    bb = build_backbone("resnet18", taps=("conv1", "res3"))
    assert _shapes(bb, 64) == {"conv1": (64, 32, 32), "res3": (128, 8, 8)}
    assert not any(k.startswith(("layer3", "layer4", "fc")) for k in bb.state_dict())


def test_unknown_tap():
    with pytest.raises(ValueError, match="unknown taps"):
        build_backbone("tiny", taps=("res5",))


@pytest.mark.parametrize("in_channels", [3, 4])
def test_checkpoint_round_trip(tmp_path, in_channels):
    torch.manual_seed(0)
    a = build_backbone("tiny", taps=("pool3", "fc7"), in_channels=in_channels)
    path = tmp_path / "bb.pt"
    torch.save(a.state_dict(), path)
    torch.manual_seed(1)  # a different random init, overwritten by the checkpoint
    b = build_backbone("tiny", taps=("pool3", "fc7"), in_channels=in_channels, weights=str(path))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(1, in_channels, 32, 32)
    assert torch.equal(a(x)["fc7"], b(x)["fc7"])


def test_checkpoint_round_trip_resnet18_and_wrapped_formats(tmp_path):
    torch.manual_seed(0)
    a = build_backbone("resnet18", taps=("res3",))
    for i, obj in enumerate([a.state_dict(), {"state_dict": a.state_dict()}, {"model": a.state_dict()}]):
        path = tmp_path / f"r18_{i}.pth"
        torch.save(obj, path)
        b = build_backbone("resnet18", taps=("res3",), weights=path)  # os.PathLike works too
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_full_torchvision_state_dict_and_missing_keys(tmp_path):
    torch.manual_seed(0)
    net = TinyVGG()
    path = tmp_path / "tiny_full.pt"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)  # a DDP-style checkpoint
    bb = build_backbone("tiny", taps=("fc7",), weights=path)
    assert torch.equal(bb.state_dict()["body.classifier.3.weight"], net.classifier[3].weight)
    # a checkpoint cut at pool3 cannot provide fc7
    partial = build_backbone("tiny", taps=("pool3",), weights=path)
    torch.save(partial.state_dict(), tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="lacks"):
        build_backbone("tiny", taps=("fc7",), weights=tmp_path / "partial.pt")
    torch.save({"bogus.weight": torch.zeros(1)}, tmp_path / "bogus.pt")
    with pytest.raises(ValueError):
        build_backbone("tiny", weights=tmp_path / "bogus.pt")


def test_cross_modality_first_conv(tmp_path):
    torch.manual_seed(0)
    net = TinyVGG()
    path = tmp_path / "rgb.pt"
    torch.save(net.state_dict(), path)
    bb = build_backbone("tiny", taps=("pool1",), in_channels=10, weights=path)
    w = bb.state_dict()["body.features.0.weight"]
    assert w.shape == (8, 10, 3, 3)
    expected = net.features[0].weight.mean(dim=1, keepdim=True).expand(-1, 10, -1, -1)
    torch.testing.assert_close(w, expected)
    # random init: just the right shape
    assert build_backbone("resnet18", taps=("conv1",), in_channels=4).state_dict()["body.conv1.weight"].shape == (64, 4, 7, 7)


def test_resolve_weights_names_without_download(tmp_path):
    assert resolve_weights("ResNet18_Weights.IMAGENET1K_V1") is torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    assert resolve_weights("VGG16_Weights.IMAGENET1K_V1") is torchvision.models.VGG16_Weights.IMAGENET1K_V1
    assert resolve_weights("DEFAULT", "googlenet") is torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1
    enum = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    assert resolve_weights(enum) is enum and resolve_weights(None) is None
    path = tmp_path / "w.pt"
    torch.save({}, path)
    assert resolve_weights(str(path)) == Path(path)
    for bad in ("NoSuch_Weights.X", "IMAGENET1K_V1", str(tmp_path / "missing.pt")):
        with pytest.raises(ValueError):
            resolve_weights(bad)
    with pytest.raises(ValueError):
        build_backbone("tiny", weights="ResNet18_Weights.IMAGENET1K_V1")  # tiny has no torchvision weights
