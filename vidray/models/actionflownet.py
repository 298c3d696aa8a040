"""ActionFlowNet: a single RGB stream that learns motion by predicting optical flow while classifying.

Paper: J. Y.-H. Ng, J. Choi, J. Neumann, L. S. Davis, "ActionFlowNet: Learning Motion Representation for
Action Recognition", WACV 2018 (Sec. 3, "ActionFlowNet"); J. Y.-H. Ng, PhD thesis, ch. 4.

Three registered variants (all take ``x`` of shape ``(B, T, C, H, W)``, float, normalised pixels):

``actionflownet``
    3D-ResNet-18 encoder (every conv 3x3x3; spatial down-sampling by strided convolutions, no pooling
    layer; the temporal resolution is kept through res2-res4 and halved once, in res5) + deconvolutional
    decoder with encoder skip connections that regresses ``T`` flow fields for ``T`` frames, the last one
    being the *future* flow of frame ``T`` (``T -> T+1``), which the network has to anticipate. Classifier:
    global average pool of res5 + dropout 0.5 + linear. Trained with ``CE + lambda * EPE``
    (:func:`vidray.train.losses.multitask_loss`)::

        x (B,C,T,H,W)
          conv1  3x3x3 s(1,2,2) ──────────────────────────────────────┐ skip  (w0, T,   H/2)
          res2   2 blocks s(1,2,2) ──────────────────────────────┐    │       (w0, T,   H/4)
          res3   2 blocks s(1,2,2) ─────────────────────────┐    │    │       (w1, T,   H/8)
          res4   2 blocks s(1,2,2) ────────────────────┐    │    │    │       (w2, T,   H/16)
          res5   2 blocks s(2,2,2)                     │    │    │    │       (w3, T/2, H/32)
            │ ├─ avgpool ─ dropout 0.5 ─ fc ─> logits  │    │    │    │
            │ └─ deconv s(2,2,2) ─ cat ─ conv ─────────┘    │    │    │       (w2, T, H/16)
            │      deconv s(1,2,2) ─ cat ─ conv ────────────┘    │    │       (w1, T, H/8)
            │        deconv s(1,2,2) ─ cat ─ conv ───────────────┘    │       (w0, T, H/4)
            │          deconv s(1,2,2) ─ cat ─ conv ──────────────────┘       (w0, T, H/2)
            │            deconv s(1,2,2) ─ conv ─ 3x3x3 conv ─> flow (B, T, 2, H, W), pixels

``actionflownet_2f``
    The two-frame model: a 2D ResNet-18 on 6-channel frame pairs ``[x_t, x_{t+1}]`` with a FlowNet-style
    decoder that predicts flow at 4 resolutions (H/4, H/8, H/16, H/32); the multi-resolution loss is
    ``sum_r alpha_r EPE_r`` (:func:`vidray.train.losses.multiscale_epe`). Class scores are averaged over the
    ``T-1`` pairs.

``actionflownet_stacked``
    The stacked baseline: the 2F flow network, then a ResNet-18 *without conv1/pool1* (the predicted flow
    is already at H/4, the resolution res2 works at) that classifies from the predicted flow; a 3x3
    stride-1 conv (2 -> w0 channels) + BN + ReLU replaces conv1 to lift the 2 flow channels to res2's width.

Flow convention (all variants): ``flow[..., 0, :, :]`` is the x (horizontal) and ``flow[..., 1, :, :]`` the
y (vertical) displacement, in pixels *of the resolution it is predicted at*; ``"flow"`` of ``actionflownet``
is at the input resolution, ``"flow"`` of the 2F/stacked models is the finest pyramid level (H/4, W/4).

Backbones: ``backbone="tiny"`` builds a few-channel network for CPU tests; ``"resnet18_3d"`` (3D model) and
``"resnet18"`` (2F/stacked) build the paper's. The 3D model is trained from scratch in the paper (its
point is learning without ImageNet), so its ``weights=`` takes only a local checkpoint path; the 2F and
stacked models take torchvision's ``ResNet18_Weights`` (ImageNet init of the 2D trunk; conv1 is adapted
to 6 channels by tiling the RGB filters and dividing by 2) or a local checkpoint of the whole model.

The 2D ResNet helpers at the bottom of the first section (``staged_resnet2d``, ``torchvision_resnet2d``,
``load_model_weights``) are shared with :mod:`vidray.models.tdn`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
import torch.nn as nn
import torchvision
from torchvision.models import ResNet18_Weights, WeightsEnum, get_weight
from torchvision.models.resnet import BasicBlock, Bottleneck

from vidray.models._registry import register_model
from vidray.models.common import adapt_conv_in_channels, read_state_dict

PAPER = "Ng, Choi, Neumann, Davis: ActionFlowNet, WACV 2018 (Sec. 3); Ng thesis ch. 4"

# --------------------------------------------------------------------------------------------------
# Shared helpers: weights resolution, checkpoint loading, 2D ResNet trunks with a common interface.
# --------------------------------------------------------------------------------------------------

#: Widths of the tiny (CPU) variants, stage by stage (conv1/res2, res3, res4, res5).
TINY_WIDTHS: tuple[int, int, int, int] = (8, 16, 32, 64)


def resolve_weights(weights: Any, enum_cls: type[WeightsEnum] | None) -> tuple[str, Any] | None:
    """Interpret a builder's ``weights=`` argument.

    Args:
        weights: ``None``; a torchvision ``WeightsEnum`` member; its string name (``"IMAGENET1K_V1"``,
            ``"DEFAULT"`` or the qualified ``"ResNet18_Weights.IMAGENET1K_V1"``); or the path of a local
            checkpoint file.
        enum_cls: the weights enum the backbone accepts (``None``: only checkpoints are accepted).

    Returns:
        ``None``, ``("torchvision", enum_member)`` or ``("checkpoint", path)``.
    """
    if weights is None:
        return None
    if isinstance(weights, WeightsEnum):
        if enum_cls is None or not isinstance(weights, enum_cls):
            raise ValueError(f"weights {weights} do not fit this backbone (expected {enum_cls})")
        return ("torchvision", weights)
    if isinstance(weights, (str, os.PathLike)):
        s = os.fspath(weights)
        if os.path.exists(s) or s.endswith((".pt", ".pth", ".ckpt", ".bin")):
            if not os.path.exists(s):
                raise FileNotFoundError(f"checkpoint {s!r} does not exist")
            return ("checkpoint", s)
        if enum_cls is None:
            raise ValueError(f"this backbone takes no torchvision weights; got {s!r} (not an existing file)")
        member = get_weight(s) if "." in s else enum_cls[s]
        if not isinstance(member, enum_cls):
            raise ValueError(f"weights {s!r} do not fit this backbone (expected {enum_cls.__name__})")
        return ("torchvision", member)
    raise TypeError(f"weights must be None, a WeightsEnum, its name or a checkpoint path; got {type(weights)}")


def load_model_weights(model: nn.Module, resolved: tuple[str, Any] | None) -> nn.Module:
    """Load a whole-model checkpoint if ``resolved`` (from :func:`resolve_weights`) names one; strict."""
    if resolved is not None and resolved[0] == "checkpoint":
        model.load_state_dict(read_state_dict(resolved[1]), strict=True)
    return model


class StagedResNet2d(nn.Module):
    """A small ResNet with torchvision's attribute names (``conv1, bn1, relu, maxpool, layer1..4``).

    Used for the ``backbone="tiny"`` variants: conv1 is 3x3 stride 2 (instead of 7x7) and the widths are
    configurable; the stage strides are torchvision's (conv1 /2, maxpool /2, layer2-4 /2 each), so the
    tiny and the paper backbones tap features at the same relative resolutions.

    Input ``(N, C, H, W)``; ``layer4`` output ``(N, widths[3] * block.expansion, H/32, W/32)``.
    """

    def __init__(
        self,
        *,
        widths: Sequence[int] = TINY_WIDTHS,
        blocks: Sequence[int] = (1, 1, 1, 1),
        in_channels: int = 3,
        block: type[nn.Module] = BasicBlock,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers: list[nn.Module] = []
            for j in range(n):
                down = None
                out = w * block.expansion
                if j == 0 and (stride != 1 or inplanes != out):
                    down = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(out))
                layers.append(block(inplanes, w, stride if j == 0 else 1, down))
                inplanes = out
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.out_channels = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def staged_resnet2d(*, widths: Sequence[int] = TINY_WIDTHS, blocks: Sequence[int] = (1, 1, 1, 1),
                    in_channels: int = 3, bottleneck: bool = False) -> StagedResNet2d:
    """The tiny 2D ResNet trunk (see :class:`StagedResNet2d`)."""
    return StagedResNet2d(widths=widths, blocks=blocks, in_channels=in_channels,
                          block=Bottleneck if bottleneck else BasicBlock)


_TV_RESNETS = {
    "resnet18": (torchvision.models.resnet18, ResNet18_Weights),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights),
}


def torchvision_resnet2d(name: str, *, weights: Any = None, in_channels: int = 3) -> nn.Module:
    """A torchvision ResNet trunk (``fc`` removed), optionally with ImageNet weights and adapted conv1.

    Args:
        name: ``"resnet18"`` or ``"resnet50"``.
        weights: a torchvision weights enum member / name (downloaded by torchvision on first use), or
            ``None``. Whole-model checkpoints are loaded by the model builders, not here.
        in_channels: input channels; conv1 is adapted with :func:`vidray.models.common.adapt_conv_in_channels`.

    The returned module has ``conv1, bn1, relu, maxpool, layer1..4`` and ``out_channels``.
    """
    fn, enum_cls = _TV_RESNETS[name]
    resolved = resolve_weights(weights, enum_cls)
    tv_weights = resolved[1] if resolved is not None and resolved[0] == "torchvision" else None
    m = fn(weights=tv_weights)
    m.conv1 = adapt_conv_in_channels(m.conv1, in_channels)
    m.out_channels = m.fc.in_features
    del m.fc, m.avgpool  # the models own their heads
    return m


def resnet2d_features(m: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run a ResNet trunk and return the stage outputs ``conv1`` (after ReLU, before maxpool), ``res2``..``res5``.

    Input ``(N, C, H, W)``; outputs at H/2, H/4, H/8, H/16, H/32.
    """
    c1 = m.relu(m.bn1(m.conv1(x)))
    r2 = m.layer1(m.maxpool(c1))
    r3 = m.layer2(r2)
    r4 = m.layer3(r3)
    r5 = m.layer4(r4)
    return {"conv1": c1, "res2": r2, "res3": r3, "res4": r4, "res5": r5}


def _check_kwargs(kwargs: dict[str, Any], model: str) -> None:
    if kwargs:
        raise TypeError(f"{model}: unexpected keyword arguments {sorted(kwargs)}")


# --------------------------------------------------------------------------------------------------
# 3D ActionFlowNet
# --------------------------------------------------------------------------------------------------


def _conv3x3x3(cin: int, cout: int, stride: Sequence[int] | int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock3d(nn.Module):
    """3D residual basic block: two 3x3x3 convs (the first strided), BN, ReLU, projection shortcut if needed.

    Input ``(N, cin, T, H, W)``; output ``(N, cout, ceil(T/st), ceil(H/ss), ceil(W/ss))``.
    """

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        self.conv1 = _conv3x3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = _conv3x3x3(cout, cout)
        self.bn2 = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if tuple(stride) != (1, 1, 1) or cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


def _conv_bn_relu3d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_conv3x3x3(cin, cout), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class ResNet3dEncoder(nn.Module):
    """3D-ResNet-18 encoder of ActionFlowNet (3x3x3 kernels everywhere, strided convs, no pooling).

    Stages (``temporal_stride_stage=5``, the default): ``conv1`` s(1,2,2) -> ``res2`` s(1,2,2) (replaces
    pool1) -> ``res3`` s(1,2,2) -> ``res4`` s(1,2,2) -> ``res5`` s(2,2,2): the temporal resolution is kept
    through the first three residual stages and halved after the third (res4). Pass
    ``temporal_stride_stage`` in ``{2, 3, 4, 5}`` to halve time in another stage instead.

    Input ``(N, C, T, H, W)``; :meth:`forward` returns the list of the five stage outputs
    ``[conv1, res2, res3, res4, res5]`` (H/2 ... H/32).
    """

    STAGES = ("conv1", "res2", "res3", "res4", "res5")

    def __init__(self, *, in_channels: int = 3, widths: Sequence[int] = (64, 128, 256, 512),
                 blocks: Sequence[int] = (2, 2, 2, 2), temporal_stride_stage: int = 5) -> None:
        super().__init__()
        if temporal_stride_stage not in (2, 3, 4, 5):
            raise ValueError("temporal_stride_stage must be 2, 3, 4 or 5 (res2..res5)")
        self.strides: list[tuple[int, int, int]] = [(1, 2, 2)] + [
            (2 if s == temporal_stride_stage else 1, 2, 2) for s in (2, 3, 4, 5)
        ]
        self.widths = [widths[0], widths[0], widths[1], widths[2], widths[3]]
        self.conv1 = nn.Sequential(_conv3x3x3(in_channels, widths[0], self.strides[0]),
                                   nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True))
        cin = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers = [BasicBlock3d(cin if j == 0 else w, w, self.strides[i + 1] if j == 0 else (1, 1, 1))
                      for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            cin = w
        self.out_channels = cin
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.conv1(x)]
        for i in range(1, 5):
            feats.append(getattr(self, f"layer{i}")(feats[-1]))
        return feats


class FlowDecoder3d(nn.Module):
    """Deconvolutional decoder with encoder skips: res5 features -> ``(N, 2, T, H, W)`` flow in pixels.

    Each step: ``ConvTranspose3d`` (3x3x3, stride = the encoder stage's stride, so it undoes that
    stage's down-sampling; the exact size is taken from the skip) -> concat the encoder feature ->
    3x3x3 conv + BN + ReLU. A last deconvolution returns to the input resolution and a 3x3x3 conv
    predicts the 2 flow channels (x, y), with bias, no activation.
    """

    def __init__(self, widths: Sequence[int], strides: Sequence[tuple[int, int, int]],
                 out_width: int | None = None) -> None:
        super().__init__()
        # widths/strides: of the encoder stages conv1, res2, res3, res4, res5.
        self.ups = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in range(4, 0, -1):  # res5 -> res4, res4 -> res3, ..., res2 -> conv1
            self.ups.append(nn.ConvTranspose3d(widths[i], widths[i - 1], 3, stride=strides[i], padding=1))
            self.fuse.append(_conv_bn_relu3d(2 * widths[i - 1], widths[i - 1]))
        out_width = out_width or max(widths[0] // 2, 4)
        self.up_final = nn.ConvTranspose3d(widths[0], out_width, 3, stride=strides[0], padding=1)
        self.final = _conv_bn_relu3d(out_width, out_width)
        self.predict = nn.Conv3d(out_width, 2, 3, padding=1, bias=True)

    def forward(self, feats: Sequence[torch.Tensor], out_size: Sequence[int]) -> torch.Tensor:
        """``feats``: encoder outputs ``[conv1, res2, res3, res4, res5]``; ``out_size``: ``(T, H, W)``."""
        h = feats[4]
        for k, i in enumerate(range(3, -1, -1)):
            skip = feats[i]
            h = self.ups[k](h, output_size=skip.shape[-3:])
            h = self.fuse[k](torch.cat([h, skip], dim=1))
        h = self.final(self.up_final(h, output_size=tuple(out_size)))
        return self.predict(h)


class ActionFlowNet(nn.Module):
    """ActionFlowNet (3D, multitask): 3D-ResNet-18 encoder + flow decoder + action classifier.

    Input ``x``: ``(B, T, C, H, W)``. Output dict:

    * ``"logits"``: ``(B, num_classes)`` pre-softmax scores.
    * ``"flow"``: ``(B, T, 2, H, W)`` predicted flow in pixels at the input resolution; ``flow[:, t]`` is
      the flow from frame ``t`` to ``t+1`` (the last one is the future flow beyond the clip). Absent when
      the decoder is dropped (:meth:`drop_decoder`) or ``with_flow=False``.

    Paper: Ng et al., ActionFlowNet, WACV 2018, Sec. 3.1-3.2 (architecture, multitask loss).
    """

    def __init__(self, *, num_classes: int, in_channels: int = 3, widths: Sequence[int] = (64, 128, 256, 512),
                 blocks: Sequence[int] = (2, 2, 2, 2), temporal_stride_stage: int = 5, dropout: float = 0.5,
                 with_flow: bool = True) -> None:
        super().__init__()
        self.encoder = ResNet3dEncoder(in_channels=in_channels, widths=widths, blocks=blocks,
                                       temporal_stride_stage=temporal_stride_stage)
        self.decoder: FlowDecoder3d | None = FlowDecoder3d(self.encoder.widths, self.encoder.strides)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.encoder.out_channels, num_classes)
        self.with_flow = with_flow

    @property
    def unused_parameter_names(self) -> list[str]:
        """Decoder parameters, when the default forward does not run the decoder (``with_flow=False``)."""
        if self.with_flow or self.decoder is None:
            return []
        return [f"decoder.{n}" for n, _ in self.decoder.named_parameters()]

    def drop_decoder(self) -> "ActionFlowNet":
        """Delete the flow decoder (inference: only the classifier is needed). Returns ``self``."""
        self.decoder = None
        self.with_flow = False
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder stage outputs ``[conv1, res2, res3, res4, res5]``, each ``(B, C_s, T_s, H_s, W_s)``."""
        return self.encoder(x.transpose(1, 2))

    def forward(self, x: torch.Tensor, with_flow: bool | None = None) -> dict[str, torch.Tensor]:
        if x.dim() != 5:
            raise ValueError(f"expected (B, T, C, H, W), got {tuple(x.shape)}")
        feats = self.features(x)
        pooled = feats[-1].mean(dim=(2, 3, 4))
        out = {"logits": self.fc(self.dropout(pooled))}
        want = self.with_flow if with_flow is None else with_flow
        if want:
            if self.decoder is None:
                raise RuntimeError("the flow decoder was dropped; call with with_flow=False")
            t, h, w = x.shape[1], x.shape[3], x.shape[4]
            out["flow"] = self.decoder(feats, (t, h, w)).transpose(1, 2)  # (B, T, 2, H, W)
        return out


# --------------------------------------------------------------------------------------------------
# 2-frame ActionFlowNet and the stacked model
# --------------------------------------------------------------------------------------------------


def _conv_bn_relu2d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class FlowDecoder2d(nn.Module):
    """FlowNet-style refinement decoder over a ResNet trunk: 4 flow predictions, coarse to fine.

    ``flow5`` is predicted from res5 (H/32); then, for res4 (H/16), res3 (H/8), res2 (H/4): deconvolve the
    previous features (3x3, stride 2, size taken from the skip), deconvolve the previous flow (learned
    upsampling, as FlowNet), concat with the encoder skip, 3x3 conv + BN + ReLU, 3x3 conv -> 2-channel flow.

    :meth:`forward` returns the pyramid *finest first*: ``[H/4, H/8, H/16, H/32]``, each ``(N, 2, h, w)`` in
    pixels of its own resolution.
    """

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        # widths: channels of res2, res3, res4, res5
        self.predict5 = nn.Conv2d(widths[3], 2, 3, padding=1)
        self.ups = nn.ModuleList()
        self.flow_ups = nn.ModuleList()
        self.fuse = nn.ModuleList()
        self.predict = nn.ModuleList()
        for i in (2, 1, 0):
            prev = widths[i + 1]
            self.ups.append(nn.ConvTranspose2d(prev, widths[i], 3, stride=2, padding=1))
            self.flow_ups.append(nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1))
            self.fuse.append(_conv_bn_relu2d(2 * widths[i] + 2, widths[i]))
            self.predict.append(nn.Conv2d(widths[i], 2, 3, padding=1))

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``feats``: ``[res2, res3, res4, res5]``."""
        h = feats[3]
        flow = self.predict5(h)
        pyramid = [flow]
        for k, i in enumerate((2, 1, 0)):
            size = feats[i].shape[-2:]
            h = self.ups[k](h, output_size=size)
            up_flow = self.flow_ups[k](flow, output_size=size)
            h = self.fuse[k](torch.cat([feats[i], h, up_flow], dim=1))
            flow = self.predict[k](h)
            pyramid.append(flow)
        return pyramid[::-1]


def _frame_pairs(x: torch.Tensor) -> torch.Tensor:
    """``(B, T, C, H, W)`` -> ``(B*(T-1), 2C, H, W)``: channel-concatenated ``[x_t, x_{t+1}]``."""
    if x.dim() != 5 or x.shape[1] < 2:
        raise ValueError(f"expected (B, T>=2, C, H, W), got {tuple(x.shape)}")
    return torch.cat([x[:, :-1], x[:, 1:]], dim=2).flatten(0, 1)


def _build_trunk2d(backbone: str, in_channels: int, weights: Any) -> nn.Module:
    if backbone == "tiny":
        return staged_resnet2d(widths=TINY_WIDTHS, blocks=(1, 1, 1, 1), in_channels=in_channels)
    if backbone == "resnet18":
        return torchvision_resnet2d("resnet18", weights=weights, in_channels=in_channels)
    raise ValueError(f"backbone must be 'tiny' or 'resnet18', got {backbone!r}")


def _stage_widths(trunk: nn.Module) -> list[int]:
    widths = []
    for i in range(1, 5):
        last = getattr(trunk, f"layer{i}")[-1]
        bn = last.bn3 if hasattr(last, "bn3") else last.bn2
        widths.append(bn.num_features)
    return widths


class FlowNet2F(nn.Module):
    """The flow branch of ActionFlowNet-2F: 2D ResNet trunk on a frame pair + :class:`FlowDecoder2d`.

    Input ``(N, 2C, H, W)``; :meth:`forward` returns ``(res5 features, flow pyramid finest first)``.
    """

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.decoder = FlowDecoder2d(_stage_widths(trunk))

    def forward(self, pairs: torch.Tensor, with_flow: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        f = resnet2d_features(self.trunk, pairs)
        feats = [f["res2"], f["res3"], f["res4"], f["res5"]]
        return f["res5"], (self.decoder(feats) if with_flow else [])


def _unflatten_pairs(t: torch.Tensor, b: int) -> torch.Tensor:
    return t.unflatten(0, (b, t.shape[0] // b))


class ActionFlowNet2F(nn.Module):
    """ActionFlowNet-2F: 2D ResNet-18 on 6-channel frame pairs, flow at 4 resolutions + classifier.

    Input ``x``: ``(B, T, C, H, W)`` with ``T >= 2``; the ``T-1`` adjacent pairs are processed independently.
    Output dict:

    * ``"logits"``: ``(B, num_classes)``, the pair scores averaged over the ``T-1`` pairs.
    * ``"flow_pyramid"``: list of 4 tensors ``(B, T-1, 2, H/s, W/s)`` for ``s = 4, 8, 16, 32`` (finest
      first), in pixels of their own resolution (for :func:`vidray.train.losses.multiscale_epe`).
    * ``"flow"``: the finest level, ``(B, T-1, 2, H/4, W/4)``.

    Flow outputs are absent after :meth:`drop_decoder` or with ``with_flow=False``.
    """

    def __init__(self, *, trunk: nn.Module, num_classes: int, dropout: float = 0.5, with_flow: bool = True) -> None:
        super().__init__()
        self.flownet = FlowNet2F(trunk)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(trunk.out_channels, num_classes)
        self.with_flow = with_flow

    @property
    def unused_parameter_names(self) -> list[str]:
        """Decoder parameters, when the default forward does not run the decoder (``with_flow=False``)."""
        if self.with_flow or self.flownet.decoder is None:
            return []
        return [f"flownet.decoder.{n}" for n, _ in self.flownet.decoder.named_parameters()]

    def drop_decoder(self) -> "ActionFlowNet2F":
        """Delete the flow decoder (inference). Returns ``self``."""
        self.flownet.decoder = None
        self.with_flow = False
        return self

    def forward(self, x: torch.Tensor, with_flow: bool | None = None) -> dict[str, Any]:
        b = x.shape[0]
        want = self.with_flow if with_flow is None else with_flow
        if want and self.flownet.decoder is None:
            raise RuntimeError("the flow decoder was dropped; call with with_flow=False")
        r5, pyramid = self.flownet(_frame_pairs(x), with_flow=want)
        pair_logits = self.fc(self.dropout(r5.mean(dim=(2, 3))))
        out: dict[str, Any] = {"logits": _unflatten_pairs(pair_logits, b).mean(dim=1)}
        if want:
            out["flow_pyramid"] = [_unflatten_pairs(f, b) for f in pyramid]
            out["flow"] = out["flow_pyramid"][0]
        return out


class ActionFlowNetStacked(nn.Module):
    """Stacked model: the 2F flow network, then a ResNet without conv1/pool1 classifying the predicted flow.

    The flow network predicts flow at H/4 (its finest level) for each of the ``T-1`` frame pairs; a
    3x3 stride-1 conv (2 -> w0) + BN + ReLU (``flow_stem``, standing in for the removed conv1/pool1,
    which would down-sample already down-sampled flow) feeds res2..res5 of a second ResNet; global
    average pool + dropout + linear; scores averaged over pairs. Trained end to end (gradients of the
    classification loss reach the flow network) unless ``detach_flow=True``.

    Input ``(B, T, C, H, W)``, ``T >= 2``. Output: ``"logits"`` ``(B, K)``, ``"flow"`` ``(B, T-1, 2, H/4, W/4)``,
    ``"flow_pyramid"`` (as :class:`ActionFlowNet2F`).
    """

    def __init__(self, *, flow_trunk: nn.Module, cls_trunk: nn.Module, num_classes: int, dropout: float = 0.5,
                 detach_flow: bool = False) -> None:
        super().__init__()
        self.flownet = FlowNet2F(flow_trunk)
        w0 = cls_trunk.layer1[0].conv1.in_channels
        self.flow_stem = _conv_bn_relu2d(2, w0)
        self.layer1, self.layer2 = cls_trunk.layer1, cls_trunk.layer2
        self.layer3, self.layer4 = cls_trunk.layer3, cls_trunk.layer4
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cls_trunk.out_channels, num_classes)
        self.detach_flow = detach_flow

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        b = x.shape[0]
        _, pyramid = self.flownet(_frame_pairs(x))
        flow = pyramid[0].detach() if self.detach_flow else pyramid[0]
        h = self.layer4(self.layer3(self.layer2(self.layer1(self.flow_stem(flow)))))
        pair_logits = self.fc(self.dropout(h.mean(dim=(2, 3))))
        out: dict[str, Any] = {"logits": _unflatten_pairs(pair_logits, b).mean(dim=1)}
        out["flow_pyramid"] = [_unflatten_pairs(f, b) for f in pyramid]
        out["flow"] = out["flow_pyramid"][0]
        return out


# --------------------------------------------------------------------------------------------------
# Registered builders
# --------------------------------------------------------------------------------------------------


@register_model(name="actionflownet", num_frames=4, input_size=(3, 32, 32), paper=PAPER,
                tags=("rgb", "multitask", "flow", "3d"))
def actionflownet(*, num_classes: int, backbone: str = "tiny", in_channels: int = 3, dropout: float = 0.5,
                  weights: Any = None, with_flow: bool = True, temporal_stride_stage: int = 5,
                  **kwargs: Any) -> ActionFlowNet:
    """ActionFlowNet with the 3D-ResNet-18 encoder (Ng et al., WACV 2018, Sec. 3; thesis ch. 4).

    Args:
        num_classes: number of action classes.
        backbone: ``"tiny"`` (widths 8-16-32-64, one block per stage) or ``"resnet18_3d"`` (the paper's:
            widths 64-128-256-512, two blocks per stage; input 16 x 112 x 112 in the paper).
        in_channels: input channels (3 for RGB).
        dropout: dropout before the classifier (paper: 0.5).
        weights: ``None`` (from scratch, as in the paper) or a local checkpoint path of the whole model.
        with_flow: return ``"flow"`` by default (``forward(x, with_flow=...)`` overrides per call).
        temporal_stride_stage: the stage (2..5 = res2..res5) whose first block halves time (default 5).

    Input ``(B, T, C, H, W)``; output ``"logits"`` ``(B, K)`` and ``"flow"`` ``(B, T, 2, H, W)`` (pixels).
    """
    _check_kwargs(kwargs, "actionflownet")
    if backbone == "tiny":
        widths, blocks = TINY_WIDTHS, (1, 1, 1, 1)
    elif backbone in ("resnet18_3d", "resnet3d18", "r3d18"):
        widths, blocks = (64, 128, 256, 512), (2, 2, 2, 2)
    else:
        raise ValueError(f"backbone must be 'tiny' or 'resnet18_3d', got {backbone!r}")
    resolved = resolve_weights(weights, None)
    model = ActionFlowNet(num_classes=num_classes, in_channels=in_channels, widths=widths, blocks=blocks,
                          temporal_stride_stage=temporal_stride_stage, dropout=dropout, with_flow=with_flow)
    return load_model_weights(model, resolved)


@register_model(name="actionflownet_2f", num_frames=3, input_size=(3, 64, 64), paper=PAPER,
                tags=("rgb", "multitask", "flow", "frame_pairs"))
def actionflownet_2f(*, num_classes: int, backbone: str = "tiny", in_channels: int = 3, dropout: float = 0.5,
                     weights: Any = None, with_flow: bool = True, **kwargs: Any) -> ActionFlowNet2F:
    """ActionFlowNet-2F: 2D ResNet-18 on frame pairs (``2 * in_channels`` input channels), 4 flow outputs.

    Args:
        backbone: ``"tiny"`` or ``"resnet18"`` (paper).
        weights: ``ResNet18_Weights`` member/name (ImageNet trunk; conv1 tiled to 6 channels) or a local
            checkpoint of the whole model.

    Input ``(B, T>=2, C, H, W)``; output ``"logits"`` ``(B, K)``, ``"flow"`` ``(B, T-1, 2, H/4, W/4)``,
    ``"flow_pyramid"`` (4 levels, finest first).
    """
    _check_kwargs(kwargs, "actionflownet_2f")
    resolved = resolve_weights(weights, ResNet18_Weights if backbone == "resnet18" else None)
    tv = resolved[1] if resolved is not None and resolved[0] == "torchvision" else None
    trunk = _build_trunk2d(backbone, 2 * in_channels, tv)
    model = ActionFlowNet2F(trunk=trunk, num_classes=num_classes, dropout=dropout, with_flow=with_flow)
    return load_model_weights(model, resolved)


@register_model(name="actionflownet_stacked", num_frames=3, input_size=(3, 64, 64), paper=PAPER,
                tags=("rgb", "multitask", "flow", "frame_pairs", "stacked"))
def actionflownet_stacked(*, num_classes: int, backbone: str = "tiny", in_channels: int = 3, dropout: float = 0.5,
                          weights: Any = None, detach_flow: bool = False, **kwargs: Any) -> ActionFlowNetStacked:
    """Stacked model: 2F flow network then a ResNet-18 without conv1/pool1 on the predicted (H/4) flow.

    Args:
        backbone: ``"tiny"`` or ``"resnet18"`` (paper; both the flow trunk and the classifier trunk).
        weights: ``ResNet18_Weights`` member/name (ImageNet init of both trunks) or a whole-model checkpoint.
        detach_flow: stop the classification gradient at the predicted flow (two-stage training).

    Input ``(B, T>=2, C, H, W)``; output ``"logits"`` ``(B, K)``, ``"flow"`` ``(B, T-1, 2, H/4, W/4)``,
    ``"flow_pyramid"``.
    """
    _check_kwargs(kwargs, "actionflownet_stacked")
    resolved = resolve_weights(weights, ResNet18_Weights if backbone == "resnet18" else None)
    tv = resolved[1] if resolved is not None and resolved[0] == "torchvision" else None
    flow_trunk = _build_trunk2d(backbone, 2 * in_channels, tv)
    cls_trunk = _build_trunk2d(backbone, 3, tv)  # conv1/bn1 are dropped below; only res2..res5 are kept
    model = ActionFlowNetStacked(flow_trunk=flow_trunk, cls_trunk=cls_trunk, num_classes=num_classes,
                                 dropout=dropout, detach_flow=detach_flow)
    return load_model_weights(model, resolved)
