"""Temporal Difference Network (Ng & Davis, WACV 2018).

Paper: J. Y.-H. Ng and L. S. Davis, "Temporal Difference Networks for Video Action Recognition", WACV 2018
(Sec. 3); J. Y.-H. Ng, PhD thesis, ch. 5. **Not** the 2021 "TDN: Temporal Difference Networks for Efficient
Action Recognition" of Wang et al. (CVPR 2021), which is a different architecture.

Two subnetworks of the same shape (ResNet-50 in the paper):

* the *image* subnetwork, shared across the ``s`` sampled frames (TSN segments), scores each frame;
* the *difference* subnetwork scores each of the ``s-1`` adjacent pairs. It is fed, at the layers right
  before each spatial reduction (default: the input, conv1, res2, res3), with the difference of the image
  subnetwork's features of the two frames, ``d^l_t = f^l(x_{t+1}) - f^l(x_t)``: at the input this is the
  RGB difference (the difference net's input); at the later taps it is added element-wise to the difference
  net's own activations.

Video score = ``(mean_t image_score_t + mean_t diff_score_t) / 2`` (image scores averaged over ``s`` frames,
difference scores over ``s-1`` pairs). Dropout 0.8 before both classifiers; partial BN as in TSN::

    x_1 ... x_s  (B, s, C, H, W)
      image net (shared)              difference net (one per adjacent pair)
      input ───────────── x_{t+1}-x_t ──> input
      conv1 (/2) ───────── d(conv1) ───(+)  after conv1      (before pool1,  /2)
      pool1 + res2 ─────── d(res2)  ───(+)  after res2       (before res3,   /4)
      res3 (/8) ────────── d(res3)  ───(+)  after res3       (before res4,   /8)
      res4 (/16)                            res4 (/16)
      res5 (/32)                            res5 (/32)
      avgpool, drop 0.8, fc                 avgpool, drop 0.8, fc
      mean over s frames ──┐       ┌── mean over s-1 pairs
                           └─ avg ─┘ -> logits (B, K)

Taps (``taps=``) are any subset of ``("input", "conv1", "res2", "res3", "res4")``; the difference net starts
at the earliest tap (its earlier stages are not built). By default gradients of the difference branch flow
into the image net through the feature differences (end-to-end); ``detach_diff=True`` stops them.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights

from vidray.models._registry import register_model
from vidray.models.actionflownet import (
    TINY_WIDTHS,
    load_model_weights,
    resolve_weights,
    staged_resnet2d,
    torchvision_resnet2d,
)

PAPER = "Ng & Davis: Temporal Difference Networks for Video Action Recognition, WACV 2018 (Sec. 3); Ng thesis ch. 5"

#: Stages of a ResNet trunk, in order; each tap name is the output of the stage of that name.
STAGES: tuple[str, ...] = ("conv1", "res2", "res3", "res4", "res5")
#: Points right before a spatial reduction where a feature difference can be injected.
TAPS: tuple[str, ...] = ("input", "conv1", "res2", "res3", "res4")
DEFAULT_TAPS: tuple[str, ...] = ("input", "conv1", "res2", "res3")


def _stage_modules(trunk: nn.Module) -> nn.ModuleDict:
    """Split a ResNet trunk into ``conv1`` (conv, BN, ReLU; before pool1), ``res2`` (pool1 + layer1), ``res3..5``."""
    return nn.ModuleDict({
        "conv1": nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu),
        "res2": nn.Sequential(trunk.maxpool, trunk.layer1),
        "res3": trunk.layer2,
        "res4": trunk.layer3,
        "res5": trunk.layer4,
    })


class TemporalDifferenceNetwork(nn.Module):
    """TDN of Ng & Davis (WACV 2018): image subnetwork + difference subnetwork fed feature differences.

    Args:
        image_trunk, diff_trunk: two ResNet trunks of the same shape (attributes ``conv1, bn1, relu,
            maxpool, layer1..4, out_channels``).
        num_classes: number of classes.
        taps: where the image features' adjacent differences are fed (subset of :data:`TAPS`).
        dropout: dropout before both classifiers (paper: 0.8).
        detach_diff: compute the feature differences without gradient into the image net.

    Input ``x``: ``(B, s, C, H, W)``, ``s >= 2`` segments (one frame each). Output dict:

    * ``"logits"`` ``(B, K)`` = ``(image_logits + diff_logits) / 2``;
    * ``"image_logits"`` ``(B, K)``: image scores averaged over the ``s`` frames;
    * ``"diff_logits"`` ``(B, K)``: difference scores averaged over the ``s-1`` pairs;
    * ``"diff_inputs"`` (only with ``forward(x, return_diff_inputs=True)``): ``dict`` tap ->
      ``(B, s-1, C_l, H_l, W_l)``, the differences fed to the difference net.
    """

    def __init__(self, *, image_trunk: nn.Module, diff_trunk: nn.Module, num_classes: int,
                 taps: Sequence[str] = DEFAULT_TAPS, dropout: float = 0.8, detach_diff: bool = False) -> None:
        super().__init__()
        taps = tuple(taps)
        unknown = set(taps) - set(TAPS)
        if not taps or unknown:
            raise ValueError(f"taps must be a non-empty subset of {TAPS}; got {taps}")
        self.taps = tuple(t for t in TAPS if t in taps)  # network order
        self.detach_diff = detach_diff
        self.image_net = _stage_modules(image_trunk)
        first = TAPS.index(self.taps[0])  # the difference net starts at the stage after the first tap
        diff_all = _stage_modules(diff_trunk)
        self.diff_net = nn.ModuleDict({name: diff_all[name] for name in STAGES[first:]})
        self.image_dropout = nn.Dropout(dropout)
        self.image_fc = nn.Linear(image_trunk.out_channels, num_classes)
        self.diff_dropout = nn.Dropout(dropout)
        self.diff_fc = nn.Linear(diff_trunk.out_channels, num_classes)
        self._partial_bn = False

    # ---- the two subnetworks -------------------------------------------------------------------------

    def image_features(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image-net activations of ``frames`` ``(N, C, H, W)``: ``{"input", "conv1", "res2", ..., "res5"}``."""
        feats = {"input": frames}
        h = frames
        for name in STAGES:
            h = self.image_net[name](h)
            feats[name] = h
        return feats

    def image_scores(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame image scores ``(N, K)`` of ``frames`` ``(N, C, H, W)``."""
        return self._image_head(self.image_features(frames)["res5"])

    def _image_head(self, res5: torch.Tensor) -> torch.Tensor:
        return self.image_fc(self.image_dropout(res5.mean(dim=(2, 3))))

    def difference_scores(self, diff_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Difference-net scores ``(N, K)`` from its inputs, ``dict`` tap -> ``(N, C_l, H_l, W_l)``."""
        h = diff_inputs[self.taps[0]]
        for name in self.diff_net:
            h = self.diff_net[name](h)
            if name in diff_inputs and name != self.taps[0]:
                h = h + diff_inputs[name]
        return self.diff_fc(self.diff_dropout(h.mean(dim=(2, 3))))

    # ---- forward ------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, return_diff_inputs: bool = False) -> dict[str, Any]:
        if x.dim() != 5 or x.shape[1] < 2:
            raise ValueError(f"expected (B, s>=2, C, H, W), got {tuple(x.shape)}")
        b, s = x.shape[:2]
        feats = self.image_features(x.flatten(0, 1))
        image_logits = self._image_head(feats["res5"]).unflatten(0, (b, s)).mean(dim=1)
        diffs: dict[str, torch.Tensor] = {}
        for tap in self.taps:
            f = feats[tap].unflatten(0, (b, s))
            if self.detach_diff:
                f = f.detach()
            diffs[tap] = f[:, 1:] - f[:, :-1]  # (B, s-1, C_l, H_l, W_l)
        diff_logits = self.difference_scores({k: v.flatten(0, 1) for k, v in diffs.items()})
        diff_logits = diff_logits.unflatten(0, (b, s - 1)).mean(dim=1)
        out: dict[str, Any] = {
            "logits": (image_logits + diff_logits) / 2,
            "image_logits": image_logits,
            "diff_logits": diff_logits,
        }
        if return_diff_inputs:
            out["diff_inputs"] = diffs
        return out

    # ---- partial BN (TSN) ---------------------------------------------------------------------------

    def first_batchnorms(self) -> list[nn.BatchNorm2d]:
        """The BN layers that stay trainable under partial BN: the first BN of each subnetwork."""
        firsts = []
        for net in (self.image_net, self.diff_net):
            firsts.append(next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d)))
        return firsts

    def partial_bn(self, enable: bool = True) -> "TemporalDifferenceNetwork":
        """Partial BN (TSN, Wang et al. 2016 Sec. 3.2): freeze every BN but the first of each subnetwork.

        Frozen BNs use (and no longer update) their running mean/var, even in ``train()`` mode, and their
        affine weight/bias get ``requires_grad=False``. The first BN of the image net and of the difference
        net keep training (the difference net's input distribution, RGB differences, is new). Returns
        ``self``; ``partial_bn(False)`` undoes it.
        """
        self._partial_bn = enable
        keep = {id(m) for m in self.first_batchnorms()}
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d) and id(m) not in keep:
                for p in m.parameters():
                    p.requires_grad_(not enable)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "TemporalDifferenceNetwork":
        super().train(mode)
        if mode and self._partial_bn:
            keep = {id(m) for m in self.first_batchnorms()}
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d) and id(m) not in keep:
                    m.eval()
        return self


def _trunk(backbone: str, in_channels: int, tv_weights: Any) -> nn.Module:
    if backbone == "tiny":
        return staged_resnet2d(widths=TINY_WIDTHS, blocks=(1, 1, 1, 1), in_channels=in_channels)
    if backbone in ("resnet50", "resnet18"):
        return torchvision_resnet2d(backbone, weights=tv_weights, in_channels=in_channels)
    raise ValueError(f"backbone must be 'tiny', 'resnet50' (paper) or 'resnet18', got {backbone!r}")


@register_model(name="tdn", num_frames=3, input_size=(3, 32, 32), paper=PAPER, tags=("rgb", "tsn", "segments"))
def tdn(*, num_classes: int, backbone: str = "tiny", in_channels: int = 3, dropout: float = 0.8, weights: Any = None,
        taps: Sequence[str] = DEFAULT_TAPS, partial_bn: bool = False, detach_diff: bool = False,
        **kwargs: Any) -> TemporalDifferenceNetwork:
    """Temporal Difference Network (Ng & Davis, WACV 2018, Sec. 3; not Wang et al.'s 2021 TDN).

    Args:
        num_classes: number of classes.
        backbone: ``"tiny"`` (staged ResNet, widths 8-16-32-64), ``"resnet50"`` (paper) or ``"resnet18"``.
        in_channels: input channels of both subnetworks (3 for RGB).
        dropout: before both classifiers (paper: 0.8).
        weights: torchvision ``ResNet50_Weights``/``ResNet18_Weights`` member or name (ImageNet init of
            *both* subnetworks), or a local checkpoint of the whole model.
        taps: where feature differences are fed, subset of ``("input", "conv1", "res2", "res3", "res4")``.
        partial_bn: enable :meth:`TemporalDifferenceNetwork.partial_bn` (TSN recipe; off by default so a
            randomly initialised model trains every parameter).
        detach_diff: no gradient from the difference branch into the image net.

    Input ``(B, s, C, H, W)`` with ``s >= 2`` segments; output ``"logits"`` ``(B, K)`` (+ see the class).
    """
    if kwargs:
        raise TypeError(f"tdn: unexpected keyword arguments {sorted(kwargs)}")
    enum_cls = {"resnet50": ResNet50_Weights, "resnet18": ResNet18_Weights}.get(backbone)
    resolved = resolve_weights(weights, enum_cls)
    tv = resolved[1] if resolved is not None and resolved[0] == "torchvision" else None
    model = TemporalDifferenceNetwork(image_trunk=_trunk(backbone, in_channels, tv),
                                      diff_trunk=_trunk(backbone, in_channels, tv), num_classes=num_classes,
                                      taps=taps, dropout=dropout, detach_diff=detach_diff)
    load_model_weights(model, resolved)
    if partial_bn:
        model.partial_bn(True)
    return model
