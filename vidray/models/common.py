"""Model-side helpers shared by several families: the LSTM gain g, and adapting a pretrained first
convolution to other input channels.

The gain of "Beyond Short Snippets" (Ng et al., CVPR 2015, sec. 3.2 / 4; Ng thesis ch. 3) is used in
three places, all through these functions: the LSTM model's ``aggregate="gain"`` output
(:mod:`vidray.models.pooling`), the ``gain`` training loss (:mod:`vidray.train.losses`) and the
``weighted`` evaluation aggregation (:mod:`vidray.eval.aggregate`).
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn as nn

__all__ = ["lstm_gain", "gain_weighted_scores", "adapt_conv_in_channels", "read_state_dict"]


def lstm_gain(num_frames: int, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:  # fmt: skip
    """The gain ``g`` of "Beyond Short Snippets": linear from 0 to 1 over the frames, ``g_t = t / (T - 1)``.

    Returns ``(T,)``; ``T = 1`` gives ``[1.0]``. Later frames, which have seen more of the video, weigh
    more (the first frame weighs 0).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_frames == 1:
        return torch.ones(1, device=device, dtype=dtype)
    return torch.arange(num_frames, device=device, dtype=dtype) / (num_frames - 1)


def gain_weighted_scores(frame_scores: torch.Tensor, gain: torch.Tensor | None = None,
                         softmax: bool = False) -> torch.Tensor:  # fmt: skip
    """g-weighted inference: ``sum_t g_t s_t / sum_t g_t`` over ``frame_scores`` ``(B, T, K)`` -> ``(B, K)``.

    ``softmax=True`` averages the per-frame softmax probabilities instead of the raw scores; ``gain``
    defaults to :func:`lstm_gain`.
    """
    s = frame_scores.softmax(dim=-1) if softmax else frame_scores
    t = s.shape[1]
    g = lstm_gain(t, s.device, s.dtype) if gain is None else gain.to(s)
    return (s * g.view(1, t, 1)).sum(dim=1) / g.sum()


def adapt_conv_in_channels(conv: nn.Conv2d, in_channels: int, *, pretrained: bool = True,
                           stacked_rgb: bool | None = None) -> nn.Conv2d:  # fmt: skip
    """A copy of ``conv`` (trained on RGB) that takes ``in_channels`` inputs. The ONE rule of vidray:

    * ``pretrained=False``: a fresh conv with PyTorch's default initialisation (nothing to transfer);
    * the input is ``k`` stacked RGB frames (``stacked_rgb``; default: ``in_channels`` is a multiple of 3,
      e.g. ActionFlowNet's 6-channel frame pair): the RGB filters tiled ``k`` times and divided by ``k``,
      so a stack of identical frames gives exactly the RGB response;
    * any other input (a ``2L``-channel flow stack): TSN's cross-modality initialisation, the filters
      averaged over their RGB channels and replicated ``in_channels`` times (Wang et al., ECCV 2016).

    Pass ``stacked_rgb=False`` for a flow stack whose ``2L`` happens to be a multiple of 3. Returns
    ``conv`` itself when it already has ``in_channels`` inputs.
    """
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode)  # fmt: skip
    if not pretrained:
        return new
    w = conv.weight.detach()
    stacked = (in_channels % w.shape[1] == 0) if stacked_rgb is None else stacked_rgb
    if stacked:
        reps = in_channels // w.shape[1]
        new_w = w.repeat(1, reps, 1, 1) / reps
    else:
        new_w = w.mean(dim=1, keepdim=True).expand(-1, in_channels, -1, -1)
    with torch.no_grad():
        new.weight.copy_(new_w)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def read_state_dict(path: str | os.PathLike, strip_prefixes: Sequence[str] = ("module.",)) -> dict[str, torch.Tensor]:
    """Read a local checkpoint with ``torch.load(path, map_location="cpu", weights_only=True)`` (no pickled
    code runs). Accepts a plain state dict or a dict holding it under ``"model"`` or ``"state_dict"``
    (torchvision's reference scripts, vidray's own checkpoints); ``strip_prefixes`` are removed from the
    keys (default: the ``module.`` of a (D)DP-wrapped model)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        for prefix in strip_prefixes:
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out
