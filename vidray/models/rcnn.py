"""RCNN: recurrent convolutional layers for video classification (Xu, Hu, Deng, ICME 2016).

"Recurrent Convolutional Neural Network for Video Classification", sec. 3. Every convolutional layer
``l`` of an image CNN becomes a *recurrent convolutional layer* (RCL) that also sees its own output at the
previous frame (eqs. 1-4)::

    a^{t,l} = W^l * v^{t,l-1} + Ŵ^l * v^{t-1,l} + b^l          (spatial + temporal input)
    v^{t,l} = f(a^{t,l})                                        (f = ReLU; BN before it where the CNN has BN)

with ``v^{t,0} = x^t`` (the frame) and ``v^{0,l} = 0``. ``W^l`` (spatial) keeps the CNN's kernel, stride and
padding; ``Ŵ^l`` (temporal, no bias) is a stride-1, size-preserving ``k x k`` convolution on the layer's
output map with ``k = min(spatial kernel, 3)`` (our choice: the paper does not fix it for large kernels).
The network predicts every frame (``frame_logits``).

::

    x^1 ---> RCL_1 ---> RCL_2 ---> ... ---> classifier ---> y^1
               |          |
               v Ŵ_1      v Ŵ_2                  (v^{t-1,l} feeds layer l at frame t)
    x^2 ---> RCL_1 ---> RCL_2 ---> ... ---> classifier ---> y^2
               :          :

Initialisation: with pretrained ``weights`` the spatial weights start from **half** the pretrained ones
(``spatial_init_scale=0.5``), so that at the start the spatial and temporal terms share the activation
budget; temporal weights are Xavier-uniform.

Training modes (``forward(x, mode=...)``):

* ``"sequential"``: frames in order, state carried from frame to frame (back-propagation through time over
  the clip). Pass ``state=`` and ``return_state=True`` to continue over consecutive clips of a long video;
  truncating BPTT (``detach_state``) is the caller's choice.
* ``"random"``: a pair of consecutive frames ``(x^{t-1}, x^t)`` (the last two of the input): ``v^{t-1,l}``
  is approximated by the plain feed-forward of ``x^{t-1}`` (zero state), then frame ``t`` is predicted.
  The data sampler supplies random pairs.

Two-stage training (temporal first): :meth:`RCNN.set_training_stage` ``(1)`` trains only the temporal
weights ``Ŵ`` and the new classifier(s), ``(2)`` everything; :meth:`RCNN.param_groups` gives the groups
for an optimizer.

Backbones: ``"tiny"``, ``"vgg16"``, ``"alexnet"`` (conv + ReLU layers) and ``"googlenet"`` (conv + BN +
ReLU units; its two auxiliary classifiers give the low and medium outputs, the main one the high output,
returned as ``aux_logits = [low, medium]`` in training mode). ResNets are not supported (their residual
additions break the conv -> activation pattern an RCL replaces).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.googlenet import BasicConv2d

from vidray.models._registry import register_model
from vidray.models.backbones import WeightsLike, build_network

__all__ = ["RCNN", "RecurrentConv2d", "detach_state", "rcnn"]

State = list[torch.Tensor]


class RecurrentConv2d(nn.Module):
    """One recurrent convolutional layer: ``v^t = relu(bn(W * x^t + b + Ŵ * v^{t-1}))`` (eqs. 1-4).

    The previous output ``v^{t-1}`` is handed in through :attr:`prev` and the new one read from
    :attr:`out` by the owning :class:`RCNN` (the layer sits inside an unmodified torchvision forward, so it
    cannot take extra arguments). ``prev=None`` means ``v^{t-1} = 0``.

    Args:
        conv: the spatial convolution ``W, b`` (taken over, weights kept).
        bn: batch norm applied to the sum, or ``None``.
        temporal_kernel_size: ``k`` of ``Ŵ``; default ``min(conv kernel, 3)``.

    Shapes: ``(N, C_in, H, W)`` -> ``(N, C_out, H', W')``; ``prev`` ``(N, C_out, H', W')``.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, temporal_kernel_size: int | None = None):
        super().__init__()
        self.conv = conv
        self.bn = bn
        k = temporal_kernel_size or min(conv.kernel_size[0], 3)
        self.temporal = nn.Conv2d(conv.out_channels, conv.out_channels, k, padding=k // 2, bias=False)
        nn.init.xavier_uniform_(self.temporal.weight)
        self.prev: torch.Tensor | None = None
        self.out: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        if self.prev is not None:
            a = a + self.temporal(self.prev)
        if self.bn is not None:
            a = self.bn(a)
        v = F.relu(a)
        self.out = v
        return v


def _convert_sequential(seq: nn.Sequential) -> tuple[nn.Sequential, list[RecurrentConv2d]]:
    """Conv2d + ReLU pairs of ``seq`` -> RecurrentConv2d + Identity (indices kept)."""
    mods, rcls = list(seq), []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            if i + 1 >= len(mods) or not isinstance(mods[i + 1], nn.ReLU):
                raise ValueError(f"conv at index {i} is not followed by a ReLU")
            mods[i] = RecurrentConv2d(m)
            mods[i + 1] = nn.Identity()
            rcls.append(mods[i])
    return nn.Sequential(*mods), rcls


class _RecurrentBasicConv2d(nn.Module):
    """GoogLeNet's ``BasicConv2d`` (conv, BN, ReLU) as a recurrent layer; keeps its parameter names."""

    def __init__(self, basic: BasicConv2d):
        super().__init__()
        self.rcl = RecurrentConv2d(basic.conv, basic.bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rcl(x)


def _convert_googlenet(net: nn.Module) -> list[RecurrentConv2d]:
    """Every ``BasicConv2d`` of the trunk (not of the auxiliary classifiers) -> recurrent (registration order)."""
    rcls = []
    for name, module in list(net.named_modules()):
        if name.startswith(("aux1", "aux2")):
            continue
        for child_name, child in list(module.named_children()):
            if isinstance(child, BasicConv2d):
                new = _RecurrentBasicConv2d(child)
                setattr(module, child_name, new)
                rcls.append(new.rcl)
    return rcls


def detach_state(state: State | None) -> State | None:
    """Cut the graph between clips (truncated BPTT): the state's tensors, detached."""
    return None if state is None else [s.detach() for s in state]


class RCNN(nn.Module):
    """An image CNN whose conv layers are recurrent (Xu, Hu, Deng 2016); see the module docstring.

    Args:
        net: the converted torchvision-style network (``net(frame) -> logits``, or GoogLeNet's
            ``(logits, aux2, aux1)`` in training mode).
        rcls: its recurrent layers, input to output.
        head_modules: the newly created classifier layers (trained in stage 1 with the temporal weights).

    Forward: ``x`` ``(B, T, C, H, W)`` ->
    ``{"logits": (B, K), "frame_logits": (B, T', K)}`` (+ ``"aux_logits": [(B, K), (B, K)]`` for GoogLeNet in
    training mode, + ``"state"`` with ``return_state=True``). ``T' = T`` in sequential mode, ``1`` in random
    mode. ``logits`` is the mean of ``frame_logits`` over frames (a log-average of frame probabilities up to
    normalisation).
    """

    def __init__(self, net: nn.Module, rcls: Sequence[RecurrentConv2d], head_modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.net = net
        self._rcls = list(rcls)  # plain list: the layers are registered under ``net``
        self._head_ids = {id(p) for m in head_modules for p in m.parameters()}

    @property
    def num_recurrent_layers(self) -> int:
        return len(self._rcls)

    # -- parameters ------------------------------------------------------------------------------
    def temporal_parameters(self) -> Iterator[nn.Parameter]:
        """The temporal weights ``Ŵ^l`` of every recurrent layer."""
        for rcl in self._rcls:
            yield from rcl.temporal.parameters()

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"temporal": Ŵ, "head": new classifier layers, "spatial": everything else}``."""
        temporal = list(self.temporal_parameters())
        t_ids = {id(p) for p in temporal}
        head = [p for p in self.parameters() if id(p) in self._head_ids]
        spatial = [p for p in self.parameters() if id(p) not in t_ids and id(p) not in self._head_ids]
        return {"temporal": temporal, "head": head, "spatial": spatial}

    def set_training_stage(self, stage: int, *, train_head: bool = True) -> None:
        """Two-stage training: ``1``: only ``Ŵ`` (and the new head if ``train_head``) require grad; ``2``: all."""
        if stage not in (1, 2):
            raise ValueError("stage must be 1 or 2")
        groups = self.param_groups()
        for p in groups["spatial"]:
            p.requires_grad_(stage == 2)
        for p in groups["head"]:
            p.requires_grad_(stage == 2 or train_head)
        for p in groups["temporal"]:
            p.requires_grad_(True)

    # -- forward ---------------------------------------------------------------------------------
    def _step(self, frame: torch.Tensor, state: State | None) -> tuple[torch.Tensor, list[torch.Tensor], State]:
        for i, rcl in enumerate(self._rcls):
            rcl.prev = None if state is None else state[i]
        try:
            out = self.net(frame)
            new_state = [rcl.out for rcl in self._rcls]
        finally:
            for rcl in self._rcls:
                rcl.prev = rcl.out = None
        if isinstance(out, tuple):  # GoogLeNet training outputs (logits, aux2, aux1)
            main, aux2, aux1 = out
            return main, [aux1, aux2], new_state
        return out, [], new_state

    def forward(
        self,
        x: torch.Tensor,
        *,
        mode: str = "sequential",
        state: State | None = None,
        return_state: bool = False,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Per-frame predictions of ``x`` ``(B, T, C, H, W)``.

        Args:
            mode: ``"sequential"`` (all frames in order) or ``"random"`` (the last two frames as the pair
                ``(x^{t-1}, x^t)``; only frame ``t`` is predicted; needs ``T >= 2``).
            state: sequential mode: the ``state`` returned for the previous clip (``None``: zeros).
            return_state: add ``"state"``, a list of ``(B, C_l, H_l, W_l)`` per recurrent layer.
        """
        if mode == "random":
            if x.shape[1] < 2:
                raise ValueError("random mode needs a pair of consecutive frames (T >= 2)")
            _, _, prev_state = self._step(x[:, -2], None)
            frames, state = [x[:, -1]], prev_state
        elif mode == "sequential":
            frames = list(x.unbind(1))
        else:
            raise ValueError(f"mode must be 'sequential' or 'random', not {mode!r}")
        logits, auxs = [], []
        for frame in frames:
            out, aux, state = self._step(frame, state)
            logits.append(out)
            auxs.append(aux)
        frame_logits = torch.stack(logits, 1)
        result: dict = {"logits": frame_logits.mean(1), "frame_logits": frame_logits}
        if auxs[0]:
            result["aux_logits"] = [torch.stack([a[i] for a in auxs], 1).mean(1) for i in range(len(auxs[0]))]
        if return_state:
            result["state"] = state
        return result


_PAPER = "Xu, Hu, Deng. Recurrent Convolutional Neural Network for Video Classification. ICME 2016"


@register_model(
    name="rcnn", num_frames=4, input_size=(3, 32, 32), paper=f"{_PAPER}, sec. 3 (eqs. 1-4)",
    tags=("rgb", "recurrent", "per_frame"),
)  # fmt: skip
def rcnn(
    *,
    num_classes: int,
    backbone: str = "tiny",
    in_channels: int = 3,
    dropout: float = 0.5,
    weights: WeightsLike = None,
    spatial_init_scale: float | None = None,
    aux_logits: bool = True,
) -> RCNN:
    """RCNN: every conv layer of ``backbone`` made recurrent (Xu, Hu, Deng 2016, sec. 3).

    Args:
        num_classes: ``K``.
        backbone: ``"tiny"`` (default, CPU tests), ``"googlenet"`` (auxiliary low/medium outputs),
            ``"vgg16"`` or ``"alexnet"``.
        in_channels: 3 (RGB) or ``2L`` (stacked flow).
        dropout: dropout of the classifier (VGG/AlexNet/tiny fc dropouts, GoogLeNet's pre-fc dropout).
        weights: ImageNet weights of the backbone (enum, name or local checkpoint path).
        spatial_init_scale: factor on the loaded spatial conv weights; default 0.5 with ``weights``
            ("half the pretrained weights"), 1.0 without.
        aux_logits: GoogLeNet only: keep the two auxiliary classifiers (low, medium).

    Shapes: ``(B, T, C, H, W)`` -> ``logits`` ``(B, K)``, ``frame_logits`` ``(B, T, K)``; GoogLeNet in
    training mode adds ``aux_logits`` ``[(B, K), (B, K)]`` (low, medium). GoogLeNet needs ``H, W >= 64``.
    """
    if backbone == "googlenet":
        net, _ = build_network(backbone, weights=weights, in_channels=in_channels, aux_logits=aux_logits)
    elif backbone in ("vgg16", "alexnet", "tiny"):
        net, _ = build_network(backbone, weights=weights, in_channels=in_channels)
    else:
        raise ValueError(f"rcnn supports googlenet, vgg16, alexnet, tiny; not {backbone!r}")
    if spatial_init_scale is None:
        spatial_init_scale = 0.5 if weights is not None else 1.0

    heads: list[nn.Module] = []
    if backbone == "googlenet":
        rcls = _convert_googlenet(net)
        net.dropout.p = dropout
        net.fc = nn.Linear(net.fc.in_features, num_classes)
        heads.append(net.fc)
        for aux in (net.aux1, net.aux2):
            if aux is not None:
                aux.fc2 = nn.Linear(aux.fc2.in_features, num_classes)
                heads.append(aux.fc2)
    else:
        net.features, rcls = _convert_sequential(net.features)
        for m in net.classifier:
            if isinstance(m, nn.Dropout):
                m.p = dropout
        last = net.classifier[-1]
        net.classifier[-1] = nn.Linear(last.in_features, num_classes)
        heads.append(net.classifier[-1])
    with torch.no_grad():
        for rcl in rcls:
            rcl.conv.weight.mul_(spatial_init_scale)
    return RCNN(net, rcls, heads)
