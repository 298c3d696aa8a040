"""GRU-RCN: convolutional GRUs over the percepts of a CNN (Ballas, Yao, Pal, Courville, ICLR 2016).

"Delving Deeper into Convolutional Networks for Learning Video Representations", sec. 3. A convolutional
GRU (sec. 3.1, eqs. 1-4) runs over time on each of several tapped maps of an image CNN (VGG-16 pool2,
pool3, pool4, pool5 and fc7 seen as a 1x1 map); the last hidden state of each is average-pooled over space
and classified by its own linear layer; the predictions are averaged.

::

    frames x_1..x_T (B, T, C, H, W)
        |  VGG-16, shared over frames (optionally frozen)
        +--- pool2 (128, 56x56) --> ConvGRU(64)  --> h_T --> avgpool -> dropout -> linear --> p_1 -+
        |                              | (stacked: max-pool h_t, concat to the next input)         |
        +--- pool3 (256, 28x28) --> ConvGRU(128) --> h_T --> avgpool -> dropout -> linear --> p_2 -+
        |                              |                                                           |
        +--- pool4 (512, 14x14) --> ConvGRU(256) --> h_T --> avgpool -> dropout -> linear --> p_3 -+--> mean
        |                              |                                                           |
        +--- pool5 (512, 7x7)   --> ConvGRU(256) --> h_T --> avgpool -> dropout -> linear --> p_4 -+
        |                              |                                                           |
        +--- fc7 (4096, 1x1)    --> ConvGRU(512) --> h_T --> ------- -> dropout -> linear --> p_5 -+

Variants (registered builders):

* ``gru_rcn``: the independent GRU-RCNs above (sec. 3.2).
* ``gru_rcn_stacked``: bottom-up connections (sec. 3.2, "Stacked GRU-RCN"): layer ``l`` also receives
  ``h_t^{l-1}``, max-pooled to its spatial size, through its own input kernels. Implemented by
  concatenating the pooled ``h_t^{l-1}`` to ``x_t^l`` on the channel axis before the input convolution,
  which is the sum ``W^l * x_t^l + W'^l * h_t^{l-1}`` of the paper.
* ``gru_rcn_bidir``: bidirectional (sec. 3.2): a second set of ConvGRUs, with their own weights, runs on
  the reversed sequence; for each tap, the average-pooled last states of the two directions (forward:
  after frame T, backward: after frame 1) are **concatenated** and fed to the tap's linear classifier.
* ``vgg16_rnn``: the "VGG-16 RNN" baseline, a GRU on fc7 only (a ConvGRU on a 1x1 map is a plain GRU).

On a 1x1 map (``fc7``) a zero-padded 3x3 convolution reduces to its centre tap, so vector taps use 1x1
kernels: the same function with 9x fewer parameters.

Combining the per-tap predictions: with ``combine="mean_prob"`` (default) ``logits`` is the log of the mean
of the per-tap softmax probabilities (a valid pre-softmax score: its softmax is the averaged prediction);
``combine="mean_logits"`` averages the per-tap logits. Per-tap logits are returned as ``aux_logits``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidray.models._registry import register_model
from vidray.models.backbones import Backbone, WeightsLike, build_backbone

__all__ = [
    "ConvGRU",
    "ConvGRUCell",
    "ConvGRUCellReference",
    "GRURCN",
    "convgru_num_parameters",
    "gru_rcn",
    "gru_rcn_bidir",
    "gru_rcn_stacked",
    "vgg16_rnn",
]


def convgru_num_parameters(input_channels: int, hidden_channels: int, kernel_size: int = 3, bias: bool = True) -> int:
    """Parameter count of a ConvGRU cell (both implementations).

    ``k*k*Cx*Ch`` per input kernel (W_z, W_r, W) and ``k*k*Ch*Ch`` per recurrent kernel (U_z, U_r, U), plus
    one bias vector of ``Ch`` per gate (z, r, candidate) when ``bias``:
    ``3*k*k*Cx*Ch + 3*k*k*Ch*Ch + 3*Ch``.
    """
    k2 = kernel_size * kernel_size
    biases = 3 * hidden_channels if bias else 0
    return 3 * k2 * input_channels * hidden_channels + 3 * k2 * hidden_channels**2 + biases


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell with fused gate convolutions (Ballas et al. 2016, sec. 3.1, eqs. 1-4).

    ::

        z_t = sigmoid(W_z * x_t + U_z * h_{t-1} + b_z)             (1)
        r_t = sigmoid(W_r * x_t + U_r * h_{t-1} + b_r)             (2)
        c_t = tanh(W * x_t + U * (r_t . h_{t-1}) + b)               (3)
        h_t = (1 - z_t) . h_{t-1} + z_t . c_t                       (4)

    ``*`` is a ``k x k`` convolution with zero padding ``k // 2`` (the hidden map keeps the input's size),
    ``.`` the element-wise product. The paper writes no biases; we add one per gate on the input side
    (``bias=True``); the recurrent convolutions have none.

    Fusion: ``conv_x`` computes ``[W_z; W_r; W] * x`` in one convolution (``3*Ch`` outputs) and ``conv_h``
    computes ``[U_z; U_r] * h`` in one (``2*Ch`` outputs); ``conv_c`` is ``U`` (it acts on ``r . h`` so it
    cannot be fused with the others). :meth:`input_projection` can be applied to all frames at once (see
    :class:`ConvGRU`), leaving two convolutions per step.

    Why fused (issue 12 item 6): ``benchmarks/convgru.py`` on CPU, one thread, CPU time, forward +
    backward: the unrolled layer (:class:`ConvGRU`, how the models use it) 1.03-1.05x the six-conv cell
    at 64 and at 256 hidden channels, 14x14-28x28 maps (earlier runs: 1.13-1.28x at 64, 0.99-1.10x at
    256-512); a single step alone 0.78-1.00x (earlier 0.85-1.14x). Fusion does not cut FLOPs, so the gain
    is small; it is kept as the only cell because the models' path measured faster
    (:class:`ConvGRUCellReference` is the plain one, for tests and the benchmark).

    Args:
        input_channels: ``Cx``.
        hidden_channels: ``Ch``.
        kernel_size: ``k`` (odd).
        bias: gate biases on the input side.

    Shapes: ``x`` ``(N, Cx, H, W)``, ``h`` ``(N, Ch, H, W)`` or ``None`` (zeros) -> ``(N, Ch, H, W)``.
    """

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd to keep the map size")
        p = kernel_size // 2
        self.input_channels, self.hidden_channels, self.kernel_size = input_channels, hidden_channels, kernel_size
        self.conv_x = nn.Conv2d(input_channels, 3 * hidden_channels, kernel_size, padding=p, bias=bias)
        self.conv_h = nn.Conv2d(hidden_channels, 2 * hidden_channels, kernel_size, padding=p, bias=False)
        self.conv_c = nn.Conv2d(hidden_channels, hidden_channels, kernel_size, padding=p, bias=False)

    def input_projection(self, x: torch.Tensor) -> torch.Tensor:
        """``[W_z; W_r; W] * x + b``: ``(N, Cx, H, W)`` -> ``(N, 3*Ch, H, W)``; batch over frames freely."""
        return self.conv_x(x)

    def step(self, gx: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        """One update from a precomputed input projection ``gx`` ``(N, 3*Ch, H, W)`` and ``h_{t-1}``."""
        ch = self.hidden_channels
        # split/chunk (not slicing): their backward concatenates the pieces' gradients once instead of
        # scattering each into a zero-filled full-size tensor
        gx_zr, gx_c = gx.split([2 * ch, ch], dim=1)
        if h is None:  # h_{t-1} = 0: the recurrent terms vanish and h_t = z_t . c_t
            z, _ = gx_zr.chunk(2, dim=1)
            return torch.sigmoid(z) * torch.tanh(gx_c)
        z, r = torch.sigmoid(gx_zr + self.conv_h(h)).chunk(2, dim=1)
        c = torch.tanh(gx_c + self.conv_c(r * h))
        return torch.lerp(h, c, z)  # h + z (c - h) = (1 - z) h + z c

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        return self.step(self.input_projection(x), h)


class ConvGRUCellReference(nn.Module):
    """The same cell written with six separate convolutions, one per kernel of eqs. 1-4.

    Used by the tests (equivalence with :class:`ConvGRUCell`) and by ``benchmarks/convgru.py`` (the
    unfused baseline). Biases live on ``w_z``, ``w_r``, ``w``. Same shapes as :class:`ConvGRUCell`.
    """

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        p = kernel_size // 2
        self.hidden_channels = hidden_channels
        self.w_z = nn.Conv2d(input_channels, hidden_channels, kernel_size, padding=p, bias=bias)
        self.w_r = nn.Conv2d(input_channels, hidden_channels, kernel_size, padding=p, bias=bias)
        self.w = nn.Conv2d(input_channels, hidden_channels, kernel_size, padding=p, bias=bias)
        self.u_z = nn.Conv2d(hidden_channels, hidden_channels, kernel_size, padding=p, bias=False)
        self.u_r = nn.Conv2d(hidden_channels, hidden_channels, kernel_size, padding=p, bias=False)
        self.u = nn.Conv2d(hidden_channels, hidden_channels, kernel_size, padding=p, bias=False)

    @classmethod
    def from_fused(cls, cell: ConvGRUCell) -> "ConvGRUCellReference":
        """A reference cell holding exactly the weights of ``cell``."""
        bias = cell.conv_x.bias is not None
        ref = cls(cell.input_channels, cell.hidden_channels, cell.kernel_size, bias)
        ch = cell.hidden_channels
        with torch.no_grad():
            for i, conv in enumerate((ref.w_z, ref.w_r, ref.w)):
                conv.weight.copy_(cell.conv_x.weight[i * ch : (i + 1) * ch])
                if bias:
                    conv.bias.copy_(cell.conv_x.bias[i * ch : (i + 1) * ch])
            ref.u_z.weight.copy_(cell.conv_h.weight[:ch])
            ref.u_r.weight.copy_(cell.conv_h.weight[ch:])
            ref.u.weight.copy_(cell.conv_c.weight)
        return ref.to(cell.conv_x.weight.device)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:])
        z = torch.sigmoid(self.w_z(x) + self.u_z(h))  # (1)
        r = torch.sigmoid(self.w_r(x) + self.u_r(h))  # (2)
        c = torch.tanh(self.w(x) + self.u(r * h))  # (3)
        return (1 - z) * h + z * c  # (4)


class ConvGRU(nn.Module):
    """A :class:`ConvGRUCell` unrolled over a sequence.

    The input projection is computed for all ``T`` frames in one convolution (over ``B*T`` maps), so each
    time step costs only the two recurrent convolutions.

    Shapes: ``x`` ``(B, T, Cx, H, W)``, ``h0`` ``(B, Ch, H, W)`` or ``None`` ->
    ``(states, h_last)``: all hidden states ``(B, T, Ch, H, W)`` indexed by frame, and the final state
    ``(B, Ch, H, W)``. With ``reverse=True`` the frames are consumed from ``T`` down to ``1``; ``states[:, t]``
    is still the state after reading frame ``t``, and ``h_last = states[:, 0]``.
    """

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.cell = ConvGRUCell(input_channels, hidden_channels, kernel_size, bias)

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | None = None, *, reverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = x.shape[:2]
        # unbind (not indexing): one backward op stacks the per-step gradients
        gx = self.cell.input_projection(x.flatten(0, 1)).unflatten(0, (b, t)).unbind(1)
        order = range(t - 1, -1, -1) if reverse else range(t)
        h, states = h0, [None] * t
        for i in order:
            h = self.cell.step(gx[i], h)
            states[i] = h
        return torch.stack(states, 1), h


def _as_map(f: torch.Tensor) -> torch.Tensor:
    """``(B, T, D)`` vector features -> ``(B, T, D, 1, 1)`` maps; maps unchanged."""
    return f[..., None, None] if f.dim() == 3 else f


class GRURCN(nn.Module):
    """GRU-RCN on the taps of an image backbone (Ballas et al. 2016, sec. 3).

    Args:
        backbone: a :class:`~vidray.models.backbones.Backbone` whose taps are the percepts, bottom to top.
        hidden_channels: ConvGRU hidden channels per tap.
        num_classes: ``K``.
        dropout: dropout on each pooled last state before its classifier (paper: 0.7).
        kernel_size: ConvGRU kernel on map taps (paper: 3); vector taps use 1.
        stacked: bottom-up connections between the ConvGRUs (Stacked GRU-RCN).
        bidirectional: add a backward-in-time ConvGRU per tap; classifiers see both last states
            concatenated.
        freeze_backbone: keep the CNN fixed (``requires_grad=False``, eval mode, no graph), as in the paper,
            which uses fixed ImageNet VGG-16 percepts.
        combine: ``"mean_prob"`` or ``"mean_logits"`` (module docstring).

    Forward: ``x`` ``(B, T, C, H, W)`` -> ``{"logits": (B, K), "aux_logits": [(B, K)] * n_taps}``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        hidden_channels: Sequence[int],
        num_classes: int,
        dropout: float = 0.7,
        kernel_size: int = 3,
        stacked: bool = False,
        bidirectional: bool = False,
        freeze_backbone: bool = False,
        combine: str = "mean_prob",
    ) -> None:
        super().__init__()
        taps = backbone.taps
        if len(hidden_channels) != len(taps):
            raise ValueError(f"{len(taps)} taps {taps} but {len(hidden_channels)} hidden_channels")
        if combine not in ("mean_prob", "mean_logits"):
            raise ValueError(f"combine must be 'mean_prob' or 'mean_logits', not {combine!r}")
        self.backbone = backbone
        self.taps = taps
        self.hidden_channels = tuple(int(c) for c in hidden_channels)
        self.stacked, self.bidirectional, self.combine = stacked, bidirectional, combine
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)

        def make_layers() -> nn.ModuleList:
            layers = []
            for i, tap in enumerate(taps):
                cin = backbone.tap_channels[tap] + (self.hidden_channels[i - 1] if stacked and i > 0 else 0)
                k = 1 if tap in backbone.vector_taps else kernel_size
                layers.append(ConvGRU(cin, self.hidden_channels[i], k))
            return nn.ModuleList(layers)

        self.grus = make_layers()
        self.grus_backward = make_layers() if bidirectional else None
        width = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Linear(width * c, num_classes) for c in self.hidden_channels)

    def train(self, mode: bool = True) -> "GRURCN":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def tap_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backbone percepts per frame: ``(B, T, C, H, W)`` -> tap -> ``(B, T, C_l, H_l, W_l)`` (vectors as 1x1)."""
        b, t = x.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            feats = self.backbone(x.flatten(0, 1))
        return {k: _as_map(v.unflatten(0, (b, t))) for k, v in feats.items()}

    def _run(self, feats: dict[str, torch.Tensor], grus: nn.ModuleList, reverse: bool) -> list[torch.Tensor]:
        lasts, below = [], None
        for tap, gru in zip(self.taps, grus):
            inp = feats[tap]
            if self.stacked and below is not None:
                b, t = below.shape[:2]
                pooled = F.adaptive_max_pool2d(below.flatten(0, 1), inp.shape[-2:]).unflatten(0, (b, t))
                inp = torch.cat([inp, pooled], dim=2)
            states, last = gru(inp, reverse=reverse)
            lasts.append(last.mean(dim=(2, 3)))  # spatial average pooling -> (B, Ch)
            below = states
        return lasts

    def encode(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pooled last hidden states per tap from percepts ``tap -> (B, T, C, H, W)``.

        Returns tap -> ``(B, Ch)``, or ``(B, 2*Ch)`` = ``[forward | backward]`` when bidirectional.
        """
        out = self._run(feats, self.grus, reverse=False)
        if self.grus_backward is not None:
            bwd = self._run(feats, self.grus_backward, reverse=True)
            out = [torch.cat([f, b], dim=1) for f, b in zip(out, bwd)]
        return dict(zip(self.taps, out))

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, T, C, H, W)`` -> tap -> pooled last state (see :meth:`encode`)."""
        return self.encode(self.tap_features(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        feats = self.forward_features(x)
        per_tap = [head(self.dropout(feats[tap])) for tap, head in zip(self.taps, self.heads)]
        stacked = torch.stack(per_tap, 0)
        if self.combine == "mean_prob":
            logits = torch.logsumexp(F.log_softmax(stacked, dim=-1), dim=0) - math.log(len(per_tap))
        else:
            logits = stacked.mean(0)
        return {"logits": logits, "aux_logits": per_tap}


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------
_DEFAULT_TAPS = {
    "vgg16": (("pool2", "pool3", "pool4", "pool5", "fc7"), (64, 128, 256, 256, 512)),
    "tiny": (("pool2", "pool3", "pool4", "pool5", "fc7"), (8, 16, 16, 16, 32)),
}
_RNN_TAPS = {"vgg16": (("fc7",), (512,)), "tiny": (("fc7",), (32,))}
_PAPER = (
    "Ballas, Yao, Pal, Courville. Delving Deeper into Convolutional Networks for Learning Video "
    "Representations. ICLR 2016"
)


def _build(
    defaults: dict[str, tuple[tuple[str, ...], tuple[int, ...]]],
    *,
    num_classes: int,
    backbone: str,
    in_channels: int,
    dropout: float,
    weights: WeightsLike,
    taps: Sequence[str] | None,
    hidden_channels: Sequence[int] | None,
    **kwargs,
) -> GRURCN:
    if taps is None or hidden_channels is None:
        if backbone not in defaults:
            raise ValueError(f"no default taps for backbone {backbone!r}; pass taps= and hidden_channels=")
        d_taps, d_hidden = defaults[backbone]
        taps = d_taps if taps is None else taps
        hidden_channels = d_hidden if hidden_channels is None else hidden_channels
    bb = build_backbone(backbone, taps=taps, in_channels=in_channels, weights=weights)
    return GRURCN(bb, hidden_channels=hidden_channels, num_classes=num_classes, dropout=dropout, **kwargs)


@register_model(
    name="gru_rcn", num_frames=4, input_size=(3, 32, 32), paper=f"{_PAPER}, sec. 3.1-3.2", tags=("rgb", "recurrent")
)
def gru_rcn(
    *,
    num_classes: int,
    backbone: str = "tiny",
    in_channels: int = 3,
    dropout: float = 0.7,
    weights: WeightsLike = None,
    taps: Sequence[str] | None = None,
    hidden_channels: Sequence[int] | None = None,
    kernel_size: int = 3,
    freeze_backbone: bool = False,
    combine: str = "mean_prob",
) -> GRURCN:
    """GRU-RCN: independent ConvGRUs on VGG-16 pool2..pool5 and fc7 (Ballas et al. 2016, sec. 3.2).

    Args:
        num_classes: ``K``.
        backbone: ``"tiny"`` (default, CPU tests; hidden 8, 16, 16, 16, 32) or ``"vgg16"`` (paper; hidden
            64, 128, 256, 256, 512); any other backbone with explicit ``taps`` and ``hidden_channels``.
        in_channels: 3 (RGB) or ``2L`` (stacked flow).
        dropout: before each classifier (paper: 0.7).
        weights: backbone weights (``"VGG16_Weights.IMAGENET1K_V1"``, a checkpoint path, or ``None``).
        taps, hidden_channels: override the percepts and the ConvGRU widths (bottom to top).
        kernel_size: ConvGRU kernel on maps (paper: 3).
        freeze_backbone: fixed CNN percepts as in the paper (default ``False``: trained end to end).
        combine: ``"mean_prob"`` (average of the per-tap probabilities) or ``"mean_logits"``.

    Shapes: ``(B, T, C, H, W)`` -> ``logits`` ``(B, K)``, ``aux_logits`` per-tap ``[(B, K)] * 5``.
    """
    return _build(
        _DEFAULT_TAPS, num_classes=num_classes, backbone=backbone, in_channels=in_channels, dropout=dropout,
        weights=weights, taps=taps, hidden_channels=hidden_channels, kernel_size=kernel_size,
        freeze_backbone=freeze_backbone, combine=combine,
    )  # fmt: skip


@register_model(
    name="gru_rcn_stacked", num_frames=4, input_size=(3, 32, 32), paper=f"{_PAPER}, sec. 3.2 (Stacked GRU-RCN)",
    tags=("rgb", "recurrent"),
)  # fmt: skip
def gru_rcn_stacked(
    *,
    num_classes: int,
    backbone: str = "tiny",
    in_channels: int = 3,
    dropout: float = 0.7,
    weights: WeightsLike = None,
    taps: Sequence[str] | None = None,
    hidden_channels: Sequence[int] | None = None,
    kernel_size: int = 3,
    freeze_backbone: bool = False,
    combine: str = "mean_prob",
) -> GRURCN:
    """Stacked GRU-RCN: layer ``l`` also reads ``h_t^{l-1}`` max-pooled to its size (Ballas et al., sec. 3.2).

    Same arguments and shapes as :func:`gru_rcn`.
    """
    return _build(
        _DEFAULT_TAPS, num_classes=num_classes, backbone=backbone, in_channels=in_channels, dropout=dropout,
        weights=weights, taps=taps, hidden_channels=hidden_channels, kernel_size=kernel_size,
        freeze_backbone=freeze_backbone, combine=combine, stacked=True,
    )  # fmt: skip


@register_model(
    name="gru_rcn_bidir", num_frames=4, input_size=(3, 32, 32), paper=f"{_PAPER}, sec. 3.2 (Bi-directional GRU-RCN)",
    tags=("rgb", "recurrent"),
)  # fmt: skip
def gru_rcn_bidir(
    *,
    num_classes: int,
    backbone: str = "tiny",
    in_channels: int = 3,
    dropout: float = 0.7,
    weights: WeightsLike = None,
    taps: Sequence[str] | None = None,
    hidden_channels: Sequence[int] | None = None,
    kernel_size: int = 3,
    freeze_backbone: bool = False,
    combine: str = "mean_prob",
    stacked: bool = False,
) -> GRURCN:
    """Bidirectional GRU-RCN: forward and backward ConvGRUs per tap, last states concatenated.

    Same arguments and shapes as :func:`gru_rcn`; ``stacked=True`` adds bottom-up connections within each
    direction. Each classifier sees ``[avgpool(h_T^fwd) | avgpool(h_1^bwd)]`` ``(B, 2*Ch)``.
    """
    return _build(
        _DEFAULT_TAPS, num_classes=num_classes, backbone=backbone, in_channels=in_channels, dropout=dropout,
        weights=weights, taps=taps, hidden_channels=hidden_channels, kernel_size=kernel_size,
        freeze_backbone=freeze_backbone, combine=combine, stacked=stacked, bidirectional=True,
    )  # fmt: skip


@register_model(
    name="vgg16_rnn", num_frames=4, input_size=(3, 32, 32), paper=f"{_PAPER}, sec. 4 (VGG-16 RNN baseline)",
    tags=("rgb", "recurrent"),
)  # fmt: skip
def vgg16_rnn(
    *,
    num_classes: int,
    backbone: str = "tiny",
    in_channels: int = 3,
    dropout: float = 0.7,
    weights: WeightsLike = None,
    hidden_channels: int | None = None,
    freeze_backbone: bool = False,
) -> GRURCN:
    """The "VGG-16 RNN" baseline: one GRU (512 units; tiny: 32) over the fc7 features of each frame.

    ``backbone="vgg16"`` for the paper's model (default ``"tiny"``); other arguments as :func:`gru_rcn`.

    Shapes: ``(B, T, C, H, W)`` -> ``logits`` ``(B, K)`` (``aux_logits``: the single head's, same values).
    """
    return _build(
        _RNN_TAPS, num_classes=num_classes, backbone=backbone, in_channels=in_channels, dropout=dropout,
        weights=weights, taps=None, hidden_channels=None if hidden_channels is None else (hidden_channels,),
        freeze_backbone=freeze_backbone, combine="mean_logits",
    )  # fmt: skip
