"""Losses and score aggregation of the papers: flow EPE, multitask CE + lambda * EPE, the LSTM gain g, BCE.

All functions are pure (no state, no Ray) and work on any device.

Flow layout: ``(..., 2, H, W)`` with channel 0 = x (horizontal) and channel 1 = y (vertical) displacement,
in pixels of the resolution ``(H, W)``; typical shapes are ``(B, 2, H, W)`` or ``(B, T, 2, H, W)``.

References:
    * EPE / multitask / multi-resolution loss: Ng et al., "ActionFlowNet", WACV 2018, Sec. 3.2; Ng thesis
      ch. 4; the multi-resolution weights follow FlowNet (Dosovitskiy et al., ICCV 2015).
    * The gain g: Ng, Hausknecht, Vijayanarasimhan, Vinyals, Monga, Toderici, "Beyond Short Snippets:
      Deep Networks for Video Classification", CVPR 2015, Sec. 3.2 / 4 (LSTM training and inference);
      Ng thesis ch. 3.
    * Multi-label BCE: Sports-1M / FCVID videos carry several labels.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from vidray.io.labels import multi_hot
from vidray.models.common import lstm_gain


def endpoint_error(pred: torch.Tensor, target: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """End-point error between two flow fields ``(B, ..., 2, H, W)`` (pixels).

    The per-pixel error is the L2 norm of the 2-vector difference, ``sqrt((u - u*)^2 + (v - v*)^2)``, in
    pixels. Reductions:

    * ``"sum"`` (the training loss of ActionFlowNet): summed over every pixel (and every flow field of a
      sample, e.g. the ``T`` fields of ``(B, T, 2, H, W)``), then averaged over the batch dim 0. Units:
      pixels (summed over pixels), so it grows with resolution.
    * ``"mean"``: averaged over every pixel and sample (the usual "average EPE" metric, pixels).
    * ``"none"``: the per-pixel map ``(B, ..., H, W)``.
    """
    if pred.shape != target.shape or pred.shape[-3] != 2:
        raise ValueError(f"expected equal shapes (..., 2, H, W); got {tuple(pred.shape)} and {tuple(target.shape)}")
    err = torch.linalg.vector_norm(pred - target, ord=2, dim=-3)
    if reduction == "none":
        return err
    if reduction == "mean":
        return err.mean()
    if reduction == "sum":
        return err.flatten(1).sum(dim=1).mean() if err.dim() > 1 else err.sum()
    raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")


def resize_flow(flow: torch.Tensor, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Resize a flow field ``(..., 2, H, W)`` to ``(..., 2, h, w)`` AND rescale its values to the new pixels.

    x displacements are multiplied by ``w / W`` and y displacements by ``h / H``, so the flow stays
    in pixels of its (new) resolution. ``mode="area"`` is the better choice to shrink by large factors.
    """
    h, w = int(size[0]), int(size[1])
    lead = flow.shape[:-3]
    H, W = flow.shape[-2:]
    flat = flow.reshape(-1, 2, H, W)
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(flat, size=(h, w), mode=mode, **kw)
    scale = torch.tensor([w / W, h / H], dtype=out.dtype, device=out.device).view(1, 2, 1, 1)
    return (out * scale).reshape(*lead, 2, h, w)


def multiscale_epe(pyramid: Sequence[torch.Tensor], target: torch.Tensor, alphas: Sequence[float],
                   mode: str = "area") -> torch.Tensor:
    """Multi-resolution flow loss ``sum_r alpha_r * EPE_r`` (ActionFlowNet-2F; FlowNet).

    Args:
        pyramid: predictions ``(B, ..., 2, h_r, w_r)``, each in pixels of its own resolution.
        target: ground-truth flow ``(B, ..., 2, H, W)`` in pixels at full resolution; it is resized and
            scaled to each level with :func:`resize_flow` (``mode``, default area averaging).
        alphas: one weight per level.

    Returns the scalar loss; each ``EPE_r`` uses the ``"sum"`` reduction of :func:`endpoint_error`.
    """
    if len(pyramid) != len(alphas):
        raise ValueError(f"{len(pyramid)} pyramid levels but {len(alphas)} alphas")
    total = target.new_zeros(())
    for pred, a in zip(pyramid, alphas):
        tgt = target if pred.shape[-2:] == target.shape[-2:] else resize_flow(target, pred.shape[-2:], mode)
        total = total + a * endpoint_error(pred, tgt, "sum")
    return total


def multitask_loss(logits: torch.Tensor, labels: torch.Tensor, flow_pred: torch.Tensor | Sequence[torch.Tensor],
                   flow_target: torch.Tensor, lam: float, alphas: Sequence[float] | None = None
                   ) -> dict[str, torch.Tensor]:
    """ActionFlowNet's multitask loss ``L = CE(logits, labels) + lam * EPE(flow_pred, flow_target)``.

    Args:
        logits: ``(B, K)`` pre-softmax scores; labels: ``(B,)`` class indices.
        flow_pred: ``(B, ..., 2, H, W)`` flow in pixels, or a pyramid (list) with ``alphas`` given, in
            which case the flow term is :func:`multiscale_epe`.
        flow_target: ``(B, ..., 2, H, W)`` ground-truth flow (pixels).
        lam: the weight lambda of the flow term.

    Returns ``{"loss": total, "ce": ..., "epe": ...}`` (scalars; ``epe`` before weighting by ``lam``).
    """
    ce = F.cross_entropy(logits, labels)
    if alphas is not None:
        epe = multiscale_epe(list(flow_pred), flow_target, alphas)
    else:
        if not torch.is_tensor(flow_pred):
            raise TypeError("a flow pyramid needs alphas")
        epe = endpoint_error(flow_pred, flow_target, "sum")
    return {"loss": ce + lam * epe, "ce": ce, "epe": epe}


def gain_weighted_cross_entropy(frame_logits: torch.Tensor, labels: torch.Tensor,
                                gain: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame cross-entropy weighted by ``g``: ``sum_t g_t CE_t / sum_t g_t``, averaged over the batch.

    Args:
        frame_logits: ``(B, T, K)`` pre-softmax scores of every step (LSTM output at every frame).
        labels: ``(B,)`` video labels (every frame carries its video's label).
        gain: ``(T,)`` weights; default :func:`lstm_gain`.
    """
    b, t, k = frame_logits.shape
    g = lstm_gain(t, frame_logits.device, frame_logits.dtype) if gain is None else gain.to(frame_logits)
    ce = F.cross_entropy(frame_logits.reshape(b * t, k), labels.repeat_interleave(t), reduction="none").view(b, t)
    return ((ce * g).sum(dim=1) / g.sum()).mean()


def to_multi_hot(labels: Sequence[Sequence[int]] | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label lists (one list of class indices per video) -> ``(B, num_classes)`` float multi-hot targets
    (:func:`vidray.io.labels.multi_hot` as a tensor; a ``(B, K)`` tensor is returned as float)."""
    if torch.is_tensor(labels) and labels.dim() == 2 and labels.shape[1] == num_classes:
        return labels.float()
    return torch.from_numpy(multi_hot(labels, num_classes))


def multilabel_bce(logits: torch.Tensor, targets: torch.Tensor | Sequence[Sequence[int]],
                   pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-label loss for Sports-1M / FCVID: mean binary cross-entropy with logits over ``(B, K)``.

    ``targets``: ``(B, K)`` multi-hot (0/1 floats) or per-video lists of class indices.
    """
    y = to_multi_hot(targets, logits.shape[1]).to(logits) if not torch.is_tensor(targets) else targets.to(logits)
    return F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
