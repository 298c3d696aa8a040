"""The training objective of a config: model outputs + batch -> loss terms (pure, any device).

Built on :mod:`vidray.train.losses` (EPE, multitask, LSTM gain, BCE). The losses a config can name
(``loss.name``) are the table :data:`vidray.registry.LOSSES`; each entry also says how its models are
scored at test time (the paper's aggregation; sigmoid for multi-label). One function,
:func:`compute_loss`, so the training loop and the validation pass compute the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from vidray.config import LossConfig
from vidray.registry import LOSSES
from vidray.train.losses import gain_weighted_cross_entropy, multilabel_bce, multitask_loss, resize_flow

__all__ = ["Loss", "compute_loss", "align_flow_target", "loss_info"]


@dataclass(frozen=True)
class Loss:
    """A training loss: ``terms(out, label, targets, cfg, flow_target) -> {"loss": ..., terms}`` (before
    ``aux_weight``); ``aggregate``: the paper's video aggregation at evaluation
    (:data:`vidray.registry.AGGREGATIONS`); ``multilabel``: sigmoid scores and mAP-ranked checkpoints."""

    terms: Callable[..., dict[str, torch.Tensor]]
    aggregate: str = "mean"
    multilabel: bool = False


def loss_info(name: str) -> Loss:
    """The :class:`Loss` registered as ``name``."""
    return LOSSES.get(name)


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


def _ce(out, label, targets, cfg: LossConfig, flow_target) -> dict[str, torch.Tensor]:
    ce = F.cross_entropy(out["logits"].float(), label, ignore_index=-1)
    return {"loss": ce, "ce": ce}


def _bce(out, label, targets, cfg: LossConfig, flow_target) -> dict[str, torch.Tensor]:
    bce = multilabel_bce(out["logits"].float(), targets)
    return {"loss": bce, "bce": bce}


def _multitask(out, label, targets, cfg: LossConfig, flow_target) -> dict[str, torch.Tensor]:
    if flow_target is None or ("flow" not in out and "flow_pyramid" not in out):
        return _ce(out, label, targets, cfg, flow_target)  # evaluation mode without a flow decoder
    logits = out["logits"].float()
    if cfg.alphas is not None and "flow_pyramid" in out:
        # multi-resolution: multiscale_epe resizes the full-resolution target to each level
        pyr = [p.float() for p in out["flow_pyramid"]]
        parts = multitask_loss(logits, label.clamp_min(0), pyr, _align_time(pyr[0].shape[1], flow_target),
                               cfg.lam, cfg.alphas)  # fmt: skip
    else:
        pred = out["flow"].float()
        parts = multitask_loss(logits, label.clamp_min(0), pred, align_flow_target(pred, flow_target), cfg.lam)
    return {"loss": parts["loss"], "ce": parts["ce"], "epe": parts["epe"]}


def _frame_logits(out: Mapping[str, Any], name: str) -> torch.Tensor:
    fl = out.get("frame_logits")
    if fl is None:
        raise ValueError(f"loss {name!r} needs a model with per-frame outputs ('frame_logits')")
    return fl.float()


def _gain(out, label, targets, cfg: LossConfig, flow_target) -> dict[str, torch.Tensor]:
    ce = gain_weighted_cross_entropy(_frame_logits(out, "gain"), label.clamp_min(0))
    return {"loss": ce, "ce": ce}


def _per_frame(out, label, targets, cfg: LossConfig, flow_target) -> dict[str, torch.Tensor]:
    fl = _frame_logits(out, "per_frame")
    b, t, k = fl.shape
    ce = F.cross_entropy(fl.reshape(b * t, k), label.repeat_interleave(t), ignore_index=-1)
    return {"loss": ce, "ce": ce}


LOSSES.register("ce", Loss(_ce), help="cross-entropy against the first label")
LOSSES.register("bce", Loss(_bce, multilabel=True),
                help="multi-label binary cross-entropy against all labels (Sports-1M / FCVID)")
LOSSES.register("multitask", Loss(_multitask),
                help="ActionFlowNet: CE + lam * EPE against the ingested flow (input.modality: rgb+flow)")
LOSSES.register("gain", Loss(_gain, aggregate="weighted"),
                help="LSTM: sum_t g_t CE_t / sum_t g_t over frame_logits (Beyond Short Snippets)")
LOSSES.register("per_frame", Loss(_per_frame, aggregate="logmean"),
                help="mean CE over frame_logits (RCNN: every frame predicts the video label)")


def compute_loss(
    out: Mapping[str, Any],
    label: torch.Tensor,
    targets: torch.Tensor,
    cfg: LossConfig,
    flow_target: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Loss of one batch: the registered loss ``cfg.name`` plus ``aux_weight`` x CE of auxiliary heads.

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
    terms = dict(LOSSES.get(cfg.name).terms(out, label, targets, cfg, flow_target))
    aux = out.get("aux_logits")
    if cfg.aux_weight > 0 and aux:
        terms["aux"] = sum(F.cross_entropy(a.float(), label, ignore_index=-1) for a in aux)
        terms["loss"] = terms["loss"] + cfg.aux_weight * terms["aux"]
    return terms
