"""The training objective of a config: model outputs + batch -> loss terms (pure, any device).

Built on :mod:`vidray.train.losses` (EPE, multitask, LSTM gain, BCE). One function,
:func:`compute_loss`, so the training loop and the validation pass compute the same thing.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from vidray.config import LossConfig
from vidray.train.losses import gain_weighted_cross_entropy, multilabel_bce, multitask_loss, resize_flow

__all__ = ["compute_loss", "align_flow_target"]


def align_flow_target(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Match a ``(B, T, 2, S, S)`` flow target to a prediction ``(B, T', 2, h, w)``.

    ``T' = T``: one field per frame (3D ActionFlowNet: frame ``t``'s flow ``t -> t+1``). ``T' = T - 1``:
    one per consecutive pair (2F / stacked: pair ``(t, t+1)`` regresses frame ``t``'s flow). Other
    ``T'`` are refused. The target is resized to ``(h, w)`` with its values rescaled to those pixels
    (:func:`vidray.train.losses.resize_flow`) when the sizes differ.
    """
    target = _align_time(pred.shape[1], target)
    if pred.shape[-2:] != target.shape[-2:]:
        target = resize_flow(target, pred.shape[-2:], mode="area")
    return target


def _align_time(tp: int, target: torch.Tensor) -> torch.Tensor:
    t = target.shape[1]
    if tp not in (t, t - 1):
        raise ValueError(f"flow prediction has {tp} fields for {t} frames (expected {t} or {t - 1})")
    return target[:, :tp]


def compute_loss(
    out: Mapping[str, Any],
    label: torch.Tensor,
    targets: torch.Tensor,
    cfg: LossConfig,
    flow_target: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Loss of one batch.

    Args:
        out: model output: ``logits`` ``(B, K)``, optional ``frame_logits`` ``(B, T', K)``, ``flow``
            ``(B, T', 2, h, w)`` / ``flow_pyramid`` (list, finest first), ``aux_logits`` (list of
            ``(B, K)``).
        label: ``(B,)`` int64 first label (-1 = none; ignored by the CE terms).
        targets: ``(B, K)`` float multi-hot (``bce``).
        cfg: :class:`vidray.config.LossConfig`.
        flow_target: ``(B, T, 2, S, S)`` pixels (``multitask``); when the model did not predict flow
            (evaluation mode without a decoder) the flow term is skipped.

    Returns:
        ``{"loss": total, ...terms}``: ``ce`` / ``bce`` / ``epe`` (pixels, summed per sample, before
        ``lam``) / ``aux`` as present; all scalars.
    """
    logits = out["logits"].float()
    terms: dict[str, torch.Tensor] = {}
    name = cfg.name
    if name == "ce":
        terms["ce"] = F.cross_entropy(logits, label, ignore_index=-1)
        total = terms["ce"]
    elif name == "bce":
        terms["bce"] = multilabel_bce(logits, targets)
        total = terms["bce"]
    elif name == "multitask":
        if flow_target is not None and ("flow" in out or "flow_pyramid" in out):
            if cfg.alphas is not None and "flow_pyramid" in out:
                # multi-resolution: multiscale_epe resizes the full-resolution target to each level
                pyr = [p.float() for p in out["flow_pyramid"]]
                tgt = _align_time(pyr[0].shape[1], flow_target)
                parts = multitask_loss(logits, label.clamp_min(0), pyr, tgt, cfg.lam, cfg.alphas)
            else:
                pred = out["flow"].float()
                parts = multitask_loss(logits, label.clamp_min(0), pred, align_flow_target(pred, flow_target), cfg.lam)
            terms["ce"], terms["epe"] = parts["ce"], parts["epe"]
            total = parts["loss"]
        else:
            terms["ce"] = F.cross_entropy(logits, label, ignore_index=-1)
            total = terms["ce"]
    elif name in ("gain", "per_frame"):
        fl = out.get("frame_logits")
        if fl is None:
            raise ValueError(f"loss {name!r} needs a model with per-frame outputs ('frame_logits')")
        fl = fl.float()
        if name == "gain":
            terms["ce"] = gain_weighted_cross_entropy(fl, label.clamp_min(0))
        else:
            b, t, k = fl.shape
            terms["ce"] = F.cross_entropy(fl.reshape(b * t, k), label.repeat_interleave(t), ignore_index=-1)
        total = terms["ce"]
    else:
        raise ValueError(f"unknown loss {name!r}")
    aux = out.get("aux_logits")
    if cfg.aux_weight > 0 and aux:
        terms["aux"] = sum(F.cross_entropy(a.float(), label, ignore_index=-1) for a in aux)
        total = total + cfg.aux_weight * terms["aux"]
    return {"loss": total, **terms}
