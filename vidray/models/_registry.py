"""timm-style model registry: one decorated builder per variant (the table
:data:`vidray.registry.MODELS`, which ``model.name`` / ``vidray train --model`` choose from).

Contract shared by every registered model (so that training, evaluation and the registry tests treat
them alike):

* Builder: keyword-only ``builder(*, num_classes: int, backbone: str = "tiny" | paper backbone,
  in_channels: int = 3, dropout: float = ..., weights=None, **kwargs) -> nn.Module``.
  ``in_channels=2*L`` builds the flow-stream variant (stacked flow, x/y interleaved per field).
* Input: one tensor ``x`` of shape ``(B, T, C, H, W)``, float, normalised; ``T`` frames (or TSN
  segments), ``C = in_channels``.
* Output: a ``dict[str, Tensor]`` with at least ``"logits"``: ``(B, num_classes)`` video-level,
  pre-softmax scores. Optional extras: ``"frame_logits"`` ``(B, T', num_classes)`` for models that
  predict every step (LSTM, RCNN; aggregated at evaluation), ``"flow"`` ``(B, T', 2, H', W')`` predicted
  flow in pixels (ActionFlowNet), ``"aux_logits"`` list of ``(B, num_classes)`` auxiliary heads.
* :class:`ModelInfo` records the input a model's small (``backbone="tiny"``) variant expects, so tests and
  the demo can build an example batch for any registered name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from vidray.registry import MODELS


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of a registered model.

    Attributes:
        name: registry name.
        builder: the builder function.
        num_frames: ``T`` of the example input for the tiny variant.
        input_size: ``(C, H, W)`` of the example input for the tiny variant.
        paper: citation and section, for docs.
        tags: free-form tags, e.g. ``("rgb", "flow", "per_frame", "multitask")``.
    """

    name: str
    builder: Callable[..., nn.Module]
    num_frames: int = 4
    input_size: tuple[int, int, int] = (3, 32, 32)
    paper: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    num_frames: int = 4,
    input_size: tuple[int, int, int] = (3, 32, 32),
    paper: str = "",
    tags: tuple[str, ...] = (),
):
    """Register ``fn`` under ``name`` (default: the function's name). Usable bare or with arguments."""

    def deco(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        doc = (f.__doc__ or "").strip().splitlines()
        MODELS.register(key, ModelInfo(key, f, num_frames, tuple(input_size), paper, tuple(tags)),
                        help=(doc[0] if doc else paper))
        return f

    return deco(fn) if fn is not None else deco


def list_models() -> list[str]:
    """Sorted names of every registered model."""
    return sorted(MODELS.names())


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; ``ValueError`` lists the registered names."""
    return MODELS.get(name)


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``."""
    return model_info(name).builder


def create_model(name: str, *, num_classes: int, **kwargs) -> nn.Module:
    """Build the registered model ``name`` (timm's ``create_model``)."""
    return get_model_builder(name)(num_classes=num_classes, **kwargs)
