"""Image backbones with named feature taps, shared by the video models of the zoo.

Every backbone is a torchvision classification network (or :class:`TinyVGG`, a 5-stage CNN with the same
layout as VGG-16 that runs on a CPU in milliseconds) cut with
:func:`torchvision.models.feature_extraction.create_feature_extractor` at *taps*: named layers whose
outputs the video models consume (``"pool2"``..``"pool5"``, ``"fc7"`` of VGG-16 for GRU-RCN, the last conv
map for feature pooling, ...).

>>> bb = build_backbone("tiny", taps=("pool3", "fc7"))
>>> out = bb(torch.randn(2, 3, 32, 32))
>>> out["pool3"].shape, out["fc7"].shape
(torch.Size([2, 32, 4, 4]), torch.Size([2, 64]))

Tap tables (channels; spatial size at a 224x224 input in brackets):

========== =====================================================================================
backbone   taps
========== =====================================================================================
tiny       conv1..conv5, pool1 (8) pool2 (16) pool3 (32) pool4 (32) pool5 (32), fc6 (64) fc7 (64);
           pool<k> has stride 2**k (a 32x32 input gives pool5 1x1)
vgg16      conv1_2 pool1 (64, 112) conv2_2 pool2 (128, 56) conv3_3 pool3 (256, 28)
           conv4_3 pool4 (512, 14) conv5_3 pool5 (512, 7) fc6 fc7 (4096)
alexnet    conv1 pool1 (64) conv2 pool2 (192) conv3 (384) conv4 conv5 pool5 (256, 6) fc6 fc7 (4096)
googlenet  conv1 pool1 (64) conv3 pool2 (192) inception3a (256) inception3b pool3 (480)
           inception4a..4e (512, 512, 512, 528, 832) pool4 (832) inception5a (832)
           inception5b (1024, 7) pool (1024)
resnet18   conv1 pool1 (64) res2 (64, 56) res3 (128) res4 (256) res5 (512, 7) pool (512)
resnet50   conv1 pool1 (64) res2 (256, 56) res3 (512) res4 (1024) res5 (2048, 7) pool (2048)
========== =====================================================================================

``conv*`` taps are the post-ReLU conv outputs, ``fc6``/``fc7`` the post-ReLU fully connected outputs
(before dropout), ``pool`` the globally average-pooled, flattened features; vector taps are ``(N, D)``,
map taps ``(N, C, H, W)``.

Weights (``weights=``): ``None`` (random init), a torchvision weights enum member or its string name
(``"VGG16_Weights.IMAGENET1K_V1"``, or ``"IMAGENET1K_V1"`` / ``"DEFAULT"`` given the backbone), or the path
of a local checkpoint: a plain state dict, or a dict holding it under ``"state_dict"`` or ``"model"``, with
either torchvision's key names or those of a saved :class:`Backbone` (``body.`` prefix). Enum weights are
downloaded by torchvision on first use (cached under ``$TORCH_HOME``); this machine has no internet, so
the tests use random init and local checkpoints.

``in_channels != 3`` (flow stream: ``2L`` stacked flow channels) replaces the first convolution; with
pretrained RGB weights its filters are initialised with the cross-modality initialisation of TSN (Wang et
al., ECCV 2016, sec. 3.2): the RGB filters averaged over the input channels and replicated
``in_channels`` times.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

import torch
import torch.nn as nn
import torchvision
from torchvision.models import WeightsEnum
from torchvision.models.feature_extraction import create_feature_extractor

from vidray.models.common import adapt_conv_in_channels, read_state_dict

__all__ = [
    "Backbone",
    "BackboneSpec",
    "TinyVGG",
    "VECTOR_TAPS",
    "backbone_spec",
    "WeightsLike",
    "adapt_first_conv",
    "build_backbone",
    "build_network",
    "list_backbones",
    "load_checkpoint_state_dict",
    "resolve_weights",
]

WeightsLike = Union[None, str, os.PathLike, WeightsEnum]


# --------------------------------------------------------------------------------------------------
# Tiny CPU backbone
# --------------------------------------------------------------------------------------------------
class TinyVGG(nn.Module):
    """A 5-stage VGG-shaped CNN for CPU tests and demos (not from a paper).

    Each stage is one 3x3 conv (padding 1) + ReLU + 2x2 max-pool, so ``pool<k>`` has stride ``2**k``;
    then global average pooling and VGG's classifier layout (He-initialised) ``fc6 -> ReLU -> Dropout -> fc7 -> ReLU ->
    Dropout -> fc8``. Module names mirror torchvision's VGG (``features.<i>``, ``classifier.<i>``), so the
    same code paths (tap nodes, first-conv replacement, RCNN conversion) apply to both.

    Args:
        in_channels: input channels ``C``.
        widths: output channels of the 5 conv stages.
        fc_dim: width of fc6 and fc7.
        num_classes: outputs of fc8.
        dropout: dropout probability in the classifier (default 0: the fc7 tap is noise-free in training).

    Shapes: input ``(N, C, H, W)``, output ``(N, num_classes)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (8, 16, 32, 32, 32),
        fc_dim: int = 64,
        num_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(c, fc_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc_dim, fc_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc_dim, num_classes),
        )
        # He init everywhere (zero biases) keeps the activation scale through the 7 layers, so random-init
        # features still tell inputs apart (PyTorch's default init shrinks them ~3x per layer).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)


def _tiny(*, weights: WeightsEnum | None = None, **kwargs) -> TinyVGG:
    if weights is not None:
        raise ValueError("the tiny backbone has no torchvision weights; pass a checkpoint path")
    return TinyVGG(**kwargs)


# --------------------------------------------------------------------------------------------------
# Backbone specs
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackboneSpec:
    """How to build and cut one backbone.

    Attributes:
        name: backbone name (``build_backbone(name)``).
        factory: torchvision-style builder ``factory(weights=..., **kwargs) -> nn.Module``.
        taps: tap name -> graph node (or module) name for ``create_feature_extractor``.
        tap_channels: tap name -> channels ``C`` (maps) or dimension ``D`` (vectors).
        first_conv: dotted name of the first ``nn.Conv2d`` (replaced when ``in_channels != 3``).
        default_taps: taps used when ``build_backbone(taps=None)``.
        weights_enum: the torchvision weights enum class, if any.
        factory_kwargs: extra keyword arguments to the factory.
    """

    name: str
    factory: Callable[..., nn.Module]
    taps: Mapping[str, str]
    tap_channels: Mapping[str, int]
    first_conv: str
    default_taps: tuple[str, ...]
    weights_enum: type[WeightsEnum] | None = None
    factory_kwargs: Mapping[str, object] = field(default_factory=dict)


def _tiny_spec() -> BackboneSpec:
    widths, fc = (8, 16, 32, 32, 32), 64
    taps, ch = {}, {}
    for k in range(5):
        taps[f"conv{k + 1}"], ch[f"conv{k + 1}"] = f"features.{3 * k + 1}", widths[k]
        taps[f"pool{k + 1}"], ch[f"pool{k + 1}"] = f"features.{3 * k + 2}", widths[k]
    taps.update(fc6="classifier.1", fc7="classifier.4")
    ch.update(fc6=fc, fc7=fc)
    return BackboneSpec(
        "tiny", _tiny, taps, ch, "features.0", ("pool2", "pool3", "pool4", "pool5", "fc7")
    )


def _vgg16_spec() -> BackboneSpec:
    taps = {
        "conv1_2": "features.3", "pool1": "features.4",
        "conv2_2": "features.8", "pool2": "features.9",
        "conv3_3": "features.15", "pool3": "features.16",
        "conv4_3": "features.22", "pool4": "features.23",
        "conv5_3": "features.29", "pool5": "features.30",
        "fc6": "classifier.1", "fc7": "classifier.4",
    }  # fmt: skip
    ch = {"conv1_2": 64, "pool1": 64, "conv2_2": 128, "pool2": 128, "conv3_3": 256, "pool3": 256,
          "conv4_3": 512, "pool4": 512, "conv5_3": 512, "pool5": 512, "fc6": 4096, "fc7": 4096}  # fmt: skip
    return BackboneSpec(
        "vgg16", torchvision.models.vgg16, taps, ch, "features.0",
        ("pool2", "pool3", "pool4", "pool5", "fc7"), torchvision.models.VGG16_Weights,
    )  # fmt: skip


def _alexnet_spec() -> BackboneSpec:
    taps = {"conv1": "features.1", "pool1": "features.2", "conv2": "features.4", "pool2": "features.5",
            "conv3": "features.7", "conv4": "features.9", "conv5": "features.11", "pool5": "features.12",
            "fc6": "classifier.2", "fc7": "classifier.5"}  # fmt: skip
    ch = {"conv1": 64, "pool1": 64, "conv2": 192, "pool2": 192, "conv3": 384, "conv4": 256, "conv5": 256,
          "pool5": 256, "fc6": 4096, "fc7": 4096}  # fmt: skip
    return BackboneSpec(
        "alexnet", torchvision.models.alexnet, taps, ch, "features.0", ("pool5", "fc7"),
        torchvision.models.AlexNet_Weights,
    )  # fmt: skip


def _googlenet_spec() -> BackboneSpec:
    ch = {"conv1": 64, "pool1": 64, "conv2": 64, "conv3": 192, "pool2": 192, "inception3a": 256,
          "inception3b": 480, "pool3": 480, "inception4a": 512, "inception4b": 512, "inception4c": 512,
          "inception4d": 528, "inception4e": 832, "pool4": 832, "inception5a": 832, "inception5b": 1024,
          "pool": 1024}  # fmt: skip
    taps = {k: k for k in ch}
    taps.update(pool1="maxpool1", pool2="maxpool2", pool3="maxpool3", pool4="maxpool4", pool="flatten")
    return BackboneSpec(
        "googlenet", torchvision.models.googlenet, taps, ch, "conv1.conv",
        ("inception3b", "inception4e", "inception5b", "pool"), torchvision.models.GoogLeNet_Weights,
        {"aux_logits": False},
    )  # fmt: skip


def _resnet_spec(name: str, expansion: int) -> BackboneSpec:
    taps = {"conv1": "relu", "pool1": "maxpool", "res2": "layer1", "res3": "layer2", "res4": "layer3",
            "res5": "layer4", "pool": "flatten"}  # fmt: skip
    ch = {"conv1": 64, "pool1": 64, "res2": 64 * expansion, "res3": 128 * expansion,
          "res4": 256 * expansion, "res5": 512 * expansion, "pool": 512 * expansion}  # fmt: skip
    enum = {"resnet18": torchvision.models.ResNet18_Weights, "resnet50": torchvision.models.ResNet50_Weights}
    return BackboneSpec(
        name, getattr(torchvision.models, name), taps, ch, "conv1",
        ("res2", "res3", "res4", "res5", "pool"), enum[name],
    )  # fmt: skip


#: Taps whose output is a ``(N, D)`` vector rather than a ``(N, C, H, W)`` map, in every backbone.
VECTOR_TAPS = frozenset({"fc6", "fc7", "pool"})

_SPECS: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        _tiny_spec(),
        _vgg16_spec(),
        _alexnet_spec(),
        _googlenet_spec(),
        _resnet_spec("resnet18", 1),
        _resnet_spec("resnet50", 4),
    )
}


def list_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone`."""
    return sorted(_SPECS)


def backbone_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` of ``name``."""
    try:
        return _SPECS[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}") from None


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------
def resolve_weights(weights: WeightsLike, backbone: str | None = None) -> WeightsEnum | Path | None:
    """Normalise a ``weights=`` argument.

    Args:
        weights: ``None``; a torchvision weights enum member; a string naming one
            (``"ResNet18_Weights.IMAGENET1K_V1"``; ``"IMAGENET1K_V1"`` or ``"DEFAULT"`` need ``backbone``);
            or the path (``str`` / ``os.PathLike``) of an existing local checkpoint file.
        backbone: backbone name, to resolve short enum member names.

    Returns:
        ``None``, the enum member, or the checkpoint ``Path``. Nothing is downloaded here.

    Raises:
        ValueError: a string that is neither an existing file nor a known weights name.
    """
    if weights is None or isinstance(weights, WeightsEnum):
        return weights
    if isinstance(weights, os.PathLike):
        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"checkpoint {path} does not exist")
        return path
    if not isinstance(weights, str):
        raise TypeError(f"weights must be None, a WeightsEnum, a name or a path, not {type(weights)}")
    if os.path.isfile(weights):
        return Path(weights)
    if "." in weights and not weights.endswith((".pt", ".pth", ".ckpt", ".bin")):
        try:
            return torchvision.models.get_weight(weights)
        except (ValueError, KeyError, AttributeError) as e:
            raise ValueError(f"unknown torchvision weights {weights!r}") from e
    if backbone is not None:
        enum = backbone_spec(backbone).weights_enum
        if enum is not None and weights in enum.__members__:
            return enum[weights]
    raise ValueError(f"weights {weights!r} is neither an existing checkpoint file nor a torchvision weights name")


def load_checkpoint_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A local checkpoint's state dict (:func:`vidray.models.common.read_state_dict`) with the ``module.``
    prefix of (D)DP-wrapped models and the ``body.`` prefix of a saved :class:`Backbone` stripped, so keys
    come out in torchvision's naming."""
    return read_state_dict(path, strip_prefixes=("module.", "body."))


def _get_submodule_parent(model: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = dotted.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attr


def adapt_first_conv(model: nn.Module, first_conv: str, in_channels: int, *, pretrained: bool) -> None:
    """Replace ``model.<first_conv>`` by a conv taking ``in_channels`` inputs (in place), by the rule of
    :func:`vidray.models.common.adapt_conv_in_channels` for a non-RGB input (a flow stack): with
    ``pretrained=True`` the filters averaged over RGB and replicated (TSN cross-modality init), else
    PyTorch's default init. A no-op when the conv already has ``in_channels`` inputs.
    """
    parent, attr = _get_submodule_parent(model, first_conv)
    old = getattr(parent, attr)
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"{first_conv} is {type(old).__name__}, not Conv2d")
    setattr(parent, attr, adapt_conv_in_channels(old, in_channels, pretrained=pretrained, stacked_rgb=False))


def build_network(
    name: str,
    *,
    weights: WeightsLike = None,
    in_channels: int = 3,
    **factory_kwargs,
) -> tuple[nn.Module, list[str]]:
    """The full (uncut) classification network ``name`` with its weights loaded.

    Args:
        name: a backbone name (:func:`list_backbones`).
        weights: see :func:`resolve_weights`.
        in_channels: input channels (first conv replaced when ``!= 3``, see :func:`adapt_first_conv`).
        **factory_kwargs: extra arguments of the torchvision builder (e.g. ``aux_logits=True``).

    Returns:
        ``(model, missing_keys)``: ``missing_keys`` lists parameters a partial checkpoint file did not
        contain (e.g. a saved :class:`Backbone` cut before the classifier); callers must check that they
        do not use them (:func:`build_backbone` does).

    Raises:
        ValueError: a checkpoint with unexpected keys, or first-conv channels that are neither 3 nor
            ``in_channels``.
    """
    spec = backbone_spec(name)
    w = resolve_weights(weights, name)
    kwargs = {**spec.factory_kwargs, **factory_kwargs}
    if name == "googlenet":
        # torchvision's ImageNet GoogLeNet expects its input re-normalised by ``transform_input``; this
        # only makes sense for 3-channel RGB input.
        kwargs.setdefault("transform_input", isinstance(w, WeightsEnum) and in_channels == 3)
        kwargs.setdefault("init_weights", w is None)
    model = spec.factory(weights=w if isinstance(w, WeightsEnum) else None, **kwargs)
    missing: list[str] = []
    pretrained = isinstance(w, WeightsEnum)
    if isinstance(w, Path):
        sd = load_checkpoint_state_dict(w)
        if name == "googlenet" and getattr(model, "aux1", None) is None:
            sd = {k: v for k, v in sd.items() if not k.startswith(("aux1.", "aux2."))}
        conv_key = spec.first_conv + ".weight"
        if conv_key not in sd:
            raise ValueError(f"{w}: no {conv_key!r}; not a {name} checkpoint")
        ckpt_in = sd[conv_key].shape[1]
        if ckpt_in == in_channels:
            adapt_first_conv(model, spec.first_conv, in_channels, pretrained=False)
        elif ckpt_in != 3:
            raise ValueError(f"{w}: first conv has {ckpt_in} input channels, expected 3 or {in_channels}")
        result = model.load_state_dict(sd, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"{w}: unexpected keys for {name}: {result.unexpected_keys[:8]}")
        missing = list(result.missing_keys)
        pretrained = ckpt_in == 3
    adapt_first_conv(model, spec.first_conv, in_channels, pretrained=pretrained)
    return model, missing


# --------------------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------------------
class Backbone(nn.Module):
    """An image network cut at named taps (``create_feature_extractor``).

    Attributes:
        name: backbone name.
        taps: tuple of tap names, in the order given.
        tap_channels: tap -> channels ``C`` (maps) or dimension ``D`` (vectors).
        vector_taps: the taps that are ``(N, D)`` vectors (``fc6``, ``fc7``, ``pool``).
        body: the ``torch.fx.GraphModule`` returned by ``create_feature_extractor``; it holds only the
            layers needed for the requested taps.

    Forward: ``x`` ``(N, C_in, H, W)`` -> ``dict`` tap -> ``(N, C, H', W')`` (maps) or ``(N, D)``
    (vector taps such as ``fc7``, ``pool``). Video models fold time into the batch, ``N = B*T``.
    """

    def __init__(self, name: str, body: nn.Module, taps: Sequence[str], tap_channels: Mapping[str, int]):
        super().__init__()
        self.name = name
        self.body = body
        self.taps = tuple(taps)
        self.tap_channels = {t: int(tap_channels[t]) for t in self.taps}
        self.vector_taps = frozenset(t for t in self.taps if t in VECTOR_TAPS)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.body(x))


def build_backbone(
    name: str,
    *,
    taps: Sequence[str] | None = None,
    in_channels: int = 3,
    weights: WeightsLike = None,
) -> Backbone:
    """Build backbone ``name`` cut at ``taps``.

    Args:
        name: ``"tiny"``, ``"vgg16"``, ``"alexnet"``, ``"googlenet"``, ``"resnet18"`` or ``"resnet50"``.
        taps: tap names (module docstring table); ``None``: the backbone's default taps.
        in_channels: input channels; ``2L`` for an L-field stacked-flow stream.
        weights: ``None``, a torchvision weights enum / its name, or a local checkpoint path
            (:func:`resolve_weights`).

    Returns:
        A :class:`Backbone`; ``forward((N, C, H, W)) -> {tap: tensor}``.
    """
    spec = backbone_spec(name)
    taps = tuple(spec.default_taps if taps is None else taps)
    unknown = [t for t in taps if t not in spec.taps]
    if unknown:
        raise ValueError(f"unknown taps {unknown} for {name}; known: {', '.join(spec.taps)}")
    model, missing = build_network(name, weights=weights, in_channels=in_channels)
    body = create_feature_extractor(model, return_nodes={spec.taps[t]: t for t in taps})
    needed = set(body.state_dict())
    lacking = sorted(needed.intersection(missing))
    if lacking:
        raise ValueError(f"checkpoint lacks parameters needed by taps {taps}: {lacking[:8]}")
    return Backbone(name, body, taps, spec.tap_channels)
