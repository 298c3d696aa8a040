"""What a TrainConfig means for the model and its input: shared by training and evaluation.

Training (:mod:`vidray.train`) and evaluation (:mod:`vidray.eval`) both build the model and the clip
sampling of a run from its config through these few functions (and never from each other):

* :func:`resolve_config`: fill in what depends on the model and the data, refuse contradictions;
* :func:`build_model`: ``create_model(model.name, num_classes=K, in_channels=C, **model.kwargs)``;
* :func:`input_channels`: ``C`` from ``input.modality`` and the ingest's flow stack length;
* :func:`clip_spec`: the :class:`vidray.data.loader.ClipSpec` (sampler, crop, augmentation);
* :func:`video_scoring`: how a video's clip scores become one score (the loss's paper aggregation;
  sigmoid for multi-label losses).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch.nn as nn

from vidray.config import TrainConfig
from vidray.data.loader import ClipSpec
from vidray.registry import LOSSES

__all__ = ["resolve_config", "build_model", "input_channels", "clip_spec", "video_scoring", "is_multilabel"]


def resolve_config(cfg: TrainConfig, data_meta: dict[str, Any]) -> TrainConfig:
    """Fill in what depends on the model and the data, and refuse contradictions early (in the driver,
    before any worker starts), each as a one-line ``ValueError``:

    * ``sampler.num_frames`` from ``model_info(name).num_frames`` (2 for the ``pair`` sampler);
    * ``model.kwargs`` must be arguments of the model's builder; ``image_size`` = ``augment.crop_size``
      for builders that take it;
    * ``flow`` / ``rgb+flow`` need an ingest with flow; ``multitask`` needs ``rgb+flow``; ``gain`` /
      ``per_frame`` need a model with per-frame outputs (checked at the first step).
    """
    from vidray.models import model_info

    if not cfg.model.name:
        raise ValueError("no model: pass --model NAME (or model.name in the config)")
    info = model_info(cfg.model.name)
    c = cfg.model_copy(deep=True)
    if c.sampler.num_frames is None:
        c.sampler = c.sampler.model_copy(update={"num_frames": 2 if c.sampler.name == "pair" else info.num_frames})
    params = inspect.signature(info.builder).parameters
    takes = sorted(p for p in params if p not in ("num_classes", "in_channels"))
    unknown = sorted(set(c.model.kwargs) - set(params))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ValueError(f"model.kwargs: {', '.join(map(repr, unknown))} not accepted by model {cfg.model.name!r}; "
                         f"it takes: {', '.join(takes)}")
    if "image_size" in params and "image_size" not in c.model.kwargs:
        # models whose head size depends on the input (Ng et al. pooling): built for the crop size
        c.model = c.model.model_copy(update={"kwargs": {**c.model.kwargs, "image_size": c.augment.crop_size}})
    flow_on = bool(((data_meta.get("config") or {}).get("flow") or {}).get("enabled"))
    if c.input.modality in ("flow", "rgb+flow") and not flow_on:
        raise ValueError(f"input.modality={c.input.modality} needs flow in the data: ingest with flow.enabled=true")
    if c.loss.name == "multitask" and c.input.modality != "rgb+flow":
        raise ValueError("loss.name=multitask regresses the ingested flow: set input.modality=rgb+flow")
    return c


def build_model(cfg: TrainConfig, num_classes: int, in_channels: int) -> nn.Module:
    """``create_model(cfg.model.name, num_classes=K, in_channels=C, **cfg.model.kwargs)``."""
    from vidray.models import create_model

    kwargs = dict(cfg.model.kwargs)
    kwargs.pop("num_classes", None)
    kwargs.pop("in_channels", None)
    return create_model(cfg.model.name, num_classes=num_classes, in_channels=in_channels, **kwargs)


def input_channels(modality: str, stack_length: int) -> int:
    """``C`` of the model input: 3 for RGB (``rgb``, ``rgb+flow``), ``2L`` for the flow stream."""
    return 2 * int(stack_length) if modality == "flow" else 3


def clip_spec(cfg: TrainConfig, num_classes: int, train: bool) -> ClipSpec:
    """The :class:`ClipSpec` of a resolved config (``sampler.num_frames`` set)."""
    if cfg.sampler.num_frames is None:
        raise ValueError("sampler.num_frames is not resolved (run_training sets it from the model)")
    a = cfg.augment
    return ClipSpec(
        sampler=cfg.sampler.name, num_frames=cfg.sampler.num_frames, frame_interval=cfg.sampler.frame_interval,
        modality=cfg.input.modality, num_classes=num_classes, train=train, crop_size=a.crop_size,
        scales=tuple(a.scales), max_distort=a.max_distort, flip_ratio=a.flip_ratio,
        color_jitter=tuple(a.color_jitter) if a.color_jitter else None, resize_short=a.resize_short,
        # free on a GPU; on CPU the uint8 version in the read task is cheaper; decode_on=gpu: always the device
        jitter_on_device=cfg.ray.use_gpu or cfg.input.decode_on == "gpu", decode_on=cfg.input.decode_on,
    )  # fmt: skip


def is_multilabel(cfg: TrainConfig) -> bool:
    """Whether the run's loss is multi-label (sigmoid scores, multi-hot metrics)."""
    return bool(LOSSES.get(cfg.loss.name).multilabel)


def video_scoring(cfg: TrainConfig) -> tuple[str, str]:
    """``(aggregation, activation)`` that turn a video's clip scores into one score: the loss's paper
    aggregation (``weighted`` for the LSTM ``gain`` loss, ``logmean`` for RCNN's ``per_frame``, else
    ``mean``) and ``sigmoid`` for multi-label losses, ``softmax`` otherwise."""
    loss = LOSSES.get(cfg.loss.name)
    return loss.aggregate, ("sigmoid" if loss.multilabel else "softmax")
