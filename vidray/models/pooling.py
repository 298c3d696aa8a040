"""Feature pooling and LSTM over per-frame CNN features (Ng et al., "Beyond Short Snippets", CVPR 2015;
Ng, PhD thesis, ch. 3).

One CNN, shared across frames, turns every frame into its last convolutional map ``f_t`` ``(C, h, w)``.
The architectures differ only in *where* information is pooled across time (thesis sec. 3.3.1, Fig. 3.2):

::

    conv_pooling       f_1..f_T --max_t--> FC stack -> linear                      (pool the conv maps)
    late_pooling       f_t -> FC stack (shared) --max_t--> linear                  (pool after the FCs)
    slow_pooling       f_1..f_T --max over windows (10, stride 5)--> FC stack (shared) --max--> linear
    local_pooling      f_1..f_T --max over windows--> FC stack (shared) --concat--> linear
    time_conv_pooling  f_1..f_T --3D conv (256 kernels, 10 x 3 x 3, stride 5 in time) + ReLU--max_t-->
                       FC stack -> linear
    lstm               f_t -> features -> 5 x LSTM(512) -> linear at every frame  (sec. 3.3.2)
    single_frame       f_t -> FC stack -> linear at every frame, scores averaged   (appearance baseline)

"FC stack" is ``(spatial reduce) -> [Linear -> ReLU -> Dropout] * len(fc_dims)``; spatial reduce flattens
the map (AlexNet / VGG / tiny, as their fc6 does) or averages it over space (GoogLeNet / ResNet, as their
classifiers do). The FC layers after pooling are new layers (pretrained fc6/fc7 are not reused). The
final ``linear`` is the softmax layer (``logits`` are pre-softmax).

Window sizes: the paper's 10-frame windows with stride 5 (slow, local, time-domain conv) are the default
for the paper backbones; the tiny variant uses 4-frame windows with stride 2 and 16 kernels so it runs on
8 frames. ``T`` must be at least the window size; windows start at 0 and the trailing frames that do not
fill a window are dropped (as an unpadded pooling/convolution does).

The LSTM predicts every frame: ``frame_logits`` ``(B, T, K)``; ``logits`` aggregates them
(``aggregate="mean"`` default, ``"last"``, ``"max"``, or ``"gain"``: frame log-probabilities weighted by the
linear gain ``g_t = t / (T - 1)`` of the thesis, :func:`vidray.models.common.lstm_gain`, which trusts later
frames more).

Flow stream: ``in_channels=2L`` (stacked flow) or 3 for the thesis' 3-channel flow image (x, y, magnitude
rescaled to [0, 255]; produced by the data pipeline).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidray.models._registry import register_model
from vidray.models.backbones import Backbone, WeightsLike, build_backbone
from vidray.models.common import gain_weighted_scores

__all__ = [
    "FramePoolingNet",
    "LSTMNet",
    "POOLINGS",
    "conv_pooling",
    "late_pooling",
    "local_pooling",
    "lstm",
    "num_windows",
    "single_frame",
    "slow_pooling",
    "temporal_windows_max",
    "time_conv_pooling",
]

POOLINGS = ("conv", "late", "slow", "local", "time_conv", "single_frame")

#: Per-backbone frame features: the "last conv map" tap, how FCs see it, default FC widths, LSTM input tap.
_FRAME_SPECS: dict[str, dict] = {
    "tiny": dict(conv_tap="pool4", reduce="flatten", fc_dims=(64,), lstm_tap="fc7"),  # (32, 2, 2) at 32x32
    "alexnet": dict(conv_tap="pool5", reduce="flatten", fc_dims=(4096, 4096), lstm_tap="fc6"),
    "vgg16": dict(conv_tap="pool5", reduce="flatten", fc_dims=(4096, 4096), lstm_tap="fc6"),
    "googlenet": dict(conv_tap="inception5b", reduce="avg", fc_dims=(4096,), lstm_tap="pool"),
    "resnet18": dict(conv_tap="res5", reduce="avg", fc_dims=(512,), lstm_tap="pool"),
    "resnet50": dict(conv_tap="res5", reduce="avg", fc_dims=(2048,), lstm_tap="pool"),
}
_PAPER = (
    "Ng, Hausknecht, Vijayanarasimhan, Vinyals, Monga, Toderici. Beyond Short Snippets. CVPR 2015; "
    "Ng, thesis ch. 3"
)


def num_windows(num_frames: int, window: int, stride: int) -> int:
    """Number of temporal windows ``(T - window) // stride + 1`` (``ValueError`` if ``T < window``)."""
    if num_frames < window:
        raise ValueError(f"{num_frames} frames are fewer than the window size {window}")
    return (num_frames - window) // stride + 1


def temporal_windows_max(f: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """Max over temporal windows: ``(B, T, ...)`` -> ``(B, W, ...)``, ``W = num_windows(T, window, stride)``."""
    n = num_windows(f.shape[1], window, stride)
    return torch.stack([f[:, i * stride : i * stride + window].amax(1) for i in range(n)], 1)


class _FCStack(nn.Module):
    """Spatial reduce then ``[Linear -> ReLU -> Dropout] * n``: ``(N, C, h, w)`` or ``(N, D)`` -> ``(N, D')``."""

    def __init__(self, in_shape: tuple[int, int, int], reduce: str, dims: Sequence[int], dropout: float):
        super().__init__()
        c, h, w = in_shape
        self.reduce = reduce
        d = c * h * w if reduce == "flatten" else c
        layers: list[nn.Module] = []
        for out in dims:
            layers += [nn.Linear(d, out), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            d = out
        self.layers = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if f.dim() == 4:
            f = f.flatten(1) if self.reduce == "flatten" else f.mean(dim=(2, 3))
        return self.layers(f)


class FramePoolingNet(nn.Module):
    """CNN shared across frames + temporal feature pooling (Ng et al. 2015, sec. 3.1; thesis sec. 3.3.1).

    Args:
        backbone: a :class:`Backbone` with one tap, the last conv map ``(C, h, w)``.
        conv_shape: ``(C, h, w)`` of that tap at the model's input size.
        num_classes: ``K``.
        pooling: one of :data:`POOLINGS` (module docstring).
        fc_dims: widths of the FC stack.
        reduce: ``"flatten"`` or ``"avg"`` (spatial reduction before the FCs).
        dropout: after each FC layer.
        window, stride: temporal windows of slow / local / time-conv pooling (frames).
        time_conv_channels: kernels of the time-domain convolution (paper: 256).
        num_frames: ``T``; needed by ``local`` pooling (the classifier sees all windows concatenated).

    Forward: ``x`` ``(B, T, C_in, H, W)`` -> ``{"logits": (B, K)}``; ``single_frame`` adds
    ``"frame_logits"`` ``(B, T, K)``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        conv_shape: tuple[int, int, int],
        num_classes: int,
        pooling: str,
        fc_dims: Sequence[int],
        reduce: str = "flatten",
        dropout: float = 0.5,
        window: int = 10,
        stride: int = 5,
        time_conv_channels: int = 256,
        num_frames: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        if len(backbone.taps) != 1:
            raise ValueError("the backbone must have exactly one tap (the last conv map)")
        self.backbone, self.tap = backbone, backbone.taps[0]
        self.pooling, self.window, self.stride = pooling, window, stride
        c, h, w = conv_shape
        self.time_conv = None
        if pooling == "time_conv":
            self.time_conv = nn.Conv3d(c, time_conv_channels, (window, 3, 3), stride=(stride, 1, 1), padding=(0, 1, 1))
            c = time_conv_channels
        self.fc = _FCStack((c, h, w), reduce, fc_dims, dropout)
        cls_in = self.fc.out_dim
        if pooling == "local":
            if num_frames is None:
                raise ValueError("local pooling needs num_frames (its classifier sees every window)")
            self.num_frames = num_frames
            cls_in *= num_windows(num_frames, window, stride)
        self.classifier = nn.Linear(cls_in, num_classes)

    def frame_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame last conv maps: ``(B, T, C_in, H, W)`` -> ``(B, T, C, h, w)``."""
        b, t = x.shape[:2]
        return self.backbone(x.flatten(0, 1))[self.tap].unflatten(0, (b, t))

    def _fc_per_step(self, f: torch.Tensor) -> torch.Tensor:
        """Shared FC stack over the time/window axis: ``(B, S, C, h, w)`` -> ``(B, S, D)``."""
        b, s = f.shape[:2]
        return self.fc(f.flatten(0, 1)).unflatten(0, (b, s))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.frame_maps(x)
        p = self.pooling
        if p == "conv":
            return {"logits": self.classifier(self.fc(f.amax(1)))}
        if p == "late":
            return {"logits": self.classifier(self._fc_per_step(f).amax(1))}
        if p == "single_frame":
            frame_logits = self.classifier(self._fc_per_step(f))
            return {"logits": frame_logits.mean(1), "frame_logits": frame_logits}
        if p == "time_conv":
            g = F.relu(self.time_conv(f.transpose(1, 2)))  # (B, K, T', h, w)
            return {"logits": self.classifier(self.fc(g.amax(2)))}
        windows = self._fc_per_step(temporal_windows_max(f, self.window, self.stride))  # (B, W, D)
        if p == "slow":
            return {"logits": self.classifier(windows.amax(1))}
        if windows.shape[1] * self.fc.out_dim != self.classifier.in_features:
            raise ValueError(f"local pooling was built for {self.num_frames} frames, got {x.shape[1]}")
        return {"logits": self.classifier(windows.flatten(1))}  # local


class LSTMNet(nn.Module):
    """Stacked LSTM over per-frame CNN features (Ng et al. 2015, sec. 3.2; thesis sec. 3.3.2).

    Args:
        backbone: a :class:`Backbone` with one vector tap (frame features ``D``).
        num_classes: ``K``.
        hidden_size, num_layers: LSTM cells per layer and layers (paper: 512, 5).
        dropout: on the LSTM output before the classifier (and between LSTM layers).
        aggregate: video ``logits`` from the frame predictions: ``"mean"``, ``"last"``, ``"max"``, ``"gain"``.

    Forward: ``x`` ``(B, T, C, H, W)`` -> ``{"logits": (B, K), "frame_logits": (B, T, K)}`` (softmax of
    ``frame_logits`` at every frame is the per-frame prediction).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_classes: int,
        hidden_size: int = 512,
        num_layers: int = 5,
        dropout: float = 0.5,
        aggregate: str = "mean",
    ) -> None:
        super().__init__()
        if aggregate not in ("mean", "last", "max", "gain"):
            raise ValueError(f"unknown aggregate {aggregate!r}")
        self.backbone, self.tap, self.aggregate = backbone, backbone.taps[0], aggregate
        feat_dim = backbone.tap_channels[self.tap]
        self.lstm = nn.LSTM(
            feat_dim, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, t = x.shape[:2]
        f = self.backbone(x.flatten(0, 1))[self.tap]
        if f.dim() == 4:
            f = f.mean(dim=(2, 3))
        h, _ = self.lstm(f.unflatten(0, (b, t)))
        frame_logits = self.classifier(self.dropout(h))  # (B, T, K)
        if self.aggregate == "mean":
            logits = frame_logits.mean(1)
        elif self.aggregate == "last":
            logits = frame_logits[:, -1]
        elif self.aggregate == "max":
            logits = frame_logits.amax(1)
        else:
            logits = gain_weighted_scores(F.log_softmax(frame_logits, -1))
        return {"logits": logits, "frame_logits": frame_logits}


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------
def _frame_spec(backbone: str) -> dict:
    try:
        return _FRAME_SPECS[backbone]
    except KeyError:
        raise ValueError(f"unsupported backbone {backbone!r}; one of {', '.join(_FRAME_SPECS)}") from None


@torch.no_grad()
def _conv_shape(bb: Backbone, in_channels: int, image_size: int) -> tuple[int, int, int]:
    was = bb.training
    bb.eval()
    shape = bb(torch.zeros(1, in_channels, image_size, image_size))[bb.taps[0]].shape[1:]
    bb.train(was)
    return tuple(shape)  # type: ignore[return-value]


def _pooling_model(
    pooling: str,
    *,
    num_classes: int,
    backbone: str,
    in_channels: int,
    dropout: float,
    weights: WeightsLike,
    image_size: int | None,
    fc_dims: Sequence[int] | None,
    window: int | None = None,
    stride: int | None = None,
    time_conv_channels: int | None = None,
    num_frames: int | None = None,
) -> FramePoolingNet:
    spec = _frame_spec(backbone)
    tiny = backbone == "tiny"
    image_size = image_size or (32 if tiny else 224)
    bb = build_backbone(backbone, taps=(spec["conv_tap"],), in_channels=in_channels, weights=weights)
    return FramePoolingNet(
        bb,
        conv_shape=_conv_shape(bb, in_channels, image_size),
        num_classes=num_classes,
        pooling=pooling,
        fc_dims=spec["fc_dims"] if fc_dims is None else fc_dims,
        reduce=spec["reduce"],
        dropout=dropout,
        window=window or (4 if tiny else 10),
        stride=stride or (2 if tiny else 5),
        time_conv_channels=time_conv_channels or (16 if tiny else 256),
        num_frames=num_frames or (8 if tiny else 120),
    )


_COMMON_DOC = """
    Args:
        num_classes: ``K``.
        backbone: ``"tiny"`` (default, CPU tests), ``"googlenet"`` or ``"alexnet"`` (the paper's),
            ``"vgg16"``, ``"resnet18"``, ``"resnet50"``.
        in_channels: 3 (RGB or 3-channel flow image) or ``2L`` (stacked flow).
        dropout: after each FC layer.
        weights: backbone weights (enum, name, or local checkpoint path).
        image_size: input ``H = W`` the FC layers are sized for (flattening backbones); default 224, tiny 32.
        fc_dims: FC widths after pooling (default per backbone: tiny 64; AlexNet/VGG 4096, 4096;
            GoogLeNet 4096; ResNet one layer of the feature width).
"""


@register_model(
    name="conv_pooling", num_frames=8, input_size=(3, 32, 32), paper=f"{_PAPER} (Conv Pooling)", tags=("rgb",)
)
def conv_pooling(
    *, num_classes: int, backbone: str = "tiny", in_channels: int = 3, dropout: float = 0.5,
    weights: WeightsLike = None, image_size: int | None = None, fc_dims: Sequence[int] | None = None,
) -> FramePoolingNet:  # fmt: skip
    """Conv pooling: max over time of the last conv map, then FCs and softmax (thesis sec. 3.3.1).

    Shapes: ``(B, T, C, H, W)`` -> ``logits`` ``(B, K)``; invariant to the order of the frames.
    """
    return _pooling_model("conv", **locals())


@register_model(
    name="late_pooling", num_frames=8, input_size=(3, 32, 32), paper=f"{_PAPER} (Late Pooling)", tags=("rgb",)
)
def late_pooling(
    *, num_classes: int, backbone: str = "tiny", in_channels: int = 3, dropout: float = 0.5,
    weights: WeightsLike = None, image_size: int | None = None, fc_dims: Sequence[int] | None = None,
) -> FramePoolingNet:  # fmt: skip
    """Late pooling: per-frame FCs (shared), then max over time, then softmax (thesis sec. 3.3.1).

    Shapes: ``(B, T, C, H, W)`` -> ``logits`` ``(B, K)``.
    """
    return _pooling_model("late", **locals())


@register_model(
    name="slow_pooling", num_frames=8, input_size=(3, 32, 32), paper=f"{_PAPER} (Slow Pooling)", tags=("rgb",)
)
def slow_pooling(
    *, num_classes: int, backbone: str = "tiny", in_channels: int = 3, dropout: float = 0.5,
    weights: WeightsLike = None, image_size: int | None = None, fc_dims: Sequence[int] | None = None,
    window: int | None = None, stride: int | None = None,
) -> FramePoolingNet:  # fmt: skip
    """Slow pooling: max over windows of the conv maps (10 frames, stride 5), shared FCs, max over windows.

    ``window``/``stride`` default 10/5 (tiny: 4/2). Shapes: ``(B, T >= window, C, H, W)`` -> ``logits``
    ``(B, K)``.
    """
    return _pooling_model("slow", **locals())


@register_model(
    name="local_pooling", num_frames=8, input_size=(3, 32, 32), paper=f"{_PAPER} (Local Pooling)", tags=("rgb",)
)
def local_pooling(
    *, num_classes: int, backbone: str = "tiny", in_channels: int = 3, dropout: float = 0.5,
    weights: WeightsLike = None, image_size: int | None = None, fc_dims: Sequence[int] | None = None,
    window: int | None = None, stride: int | None = None, num_frames: int | None = None,
) -> FramePoolingNet:  # fmt: skip
    """Local pooling: max over local windows of the conv maps, shared FCs per window, then one softmax
    layer over the concatenated window features (thesis sec. 3.3.1).

    ``num_frames`` (default 120, tiny 8) fixes the number of windows the classifier sees.
    Shapes: ``(B, num_frames, C, H, W)`` -> ``logits`` ``(B, K)``.
    """
    return _pooling_model("local", **locals())


@register_model(
    name="time_conv_pooling", num_frames=8, input_size=(3, 32, 32), paper=f"{_PAPER} (Time-Domain Convolution)",
    tags=("rgb",),
)  # fmt: skip
def time_conv_pooling(
    *, num_classes: int, backbone: str = "tiny", in_channels: int = 3, dropout: float = 0.5,
    weights: WeightsLike = None, image_size: int | None = None, fc_dims: Sequence[int] | None = None,
    window: int | None = None, stride: int | None = None, time_conv_channels: int | None = None,
) -> FramePoolingNet:  # fmt: skip
    """Time-domain convolution: 256 kernels of 3x3 over 10 frames, frame stride 5, ReLU, max over time,
    FCs, softmax (thesis sec. 3.3.1). Tiny: 16 kernels over 4 frames, stride 2.

    Shapes: ``(B, T >= window, C, H, W)`` -> ``logits`` ``(B, K)``.
    """
    return _pooling_model("time_conv", **locals())


@register_model(
    name="single_frame", num_frames=4, input_size=(3, 32, 32), paper=f"{_PAPER} (single-frame baseline)",
    tags=("rgb", "per_frame"),
)  # fmt: skip
def single_frame(
    *, num_classes: int, backbone: str = "tiny", in_channels: int = 3, dropout: float = 0.5,
    weights: WeightsLike = None, image_size: int | None = None, fc_dims: Sequence[int] | None = None,
) -> FramePoolingNet:  # fmt: skip
    """Appearance-only baseline: the CNN + FCs on every frame, frame scores (logits) averaged.

    Shapes: ``(B, T, C, H, W)`` -> ``logits`` ``(B, K)``, ``frame_logits`` ``(B, T, K)``.
    """
    return _pooling_model("single_frame", **locals())


for _f in (conv_pooling, late_pooling, slow_pooling, local_pooling, time_conv_pooling, single_frame):
    _f.__doc__ = (_f.__doc__ or "") + _COMMON_DOC


@register_model(
    name="lstm", num_frames=4, input_size=(3, 32, 32), paper=f"{_PAPER} (LSTM)", tags=("rgb", "per_frame", "recurrent")
)
def lstm(
    *,
    num_classes: int,
    backbone: str = "tiny",
    in_channels: int = 3,
    dropout: float = 0.5,
    weights: WeightsLike = None,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    aggregate: str = "mean",
) -> LSTMNet:
    """LSTM over per-frame CNN features, a prediction at every frame (thesis sec. 3.3.2).

    Args:
        num_classes: ``K``.
        backbone: as for the pooling models; features: GoogLeNet/ResNet ``pool``, AlexNet/VGG ``fc6``, tiny
            ``fc7``.
        in_channels, dropout, weights: as for the pooling models.
        hidden_size, num_layers: default 512 x 5 (paper); tiny 32 x 2.
        aggregate: video score from the frame scores (``"mean"``, ``"last"``, ``"max"``, ``"gain"``).

    Shapes: ``(B, T, C, H, W)`` -> ``logits`` ``(B, K)``, ``frame_logits`` ``(B, T, K)``.
    """
    spec = _frame_spec(backbone)
    tiny = backbone == "tiny"
    bb = build_backbone(backbone, taps=(spec["lstm_tap"],), in_channels=in_channels, weights=weights)
    return LSTMNet(
        bb,
        num_classes=num_classes,
        hidden_size=hidden_size or (32 if tiny else 512),
        num_layers=num_layers or (2 if tiny else 5),
        dropout=dropout,
        aggregate=aggregate,
    )
