"""The network whose features ``vidray embed`` aggregates, and the descriptor built on it.

:class:`FrameDescriber` = a backbone of :mod:`vidray.models.backbones` cut at one tap + the frame
preprocessing + a fitted descriptor encoder (:mod:`vidray.retrieval.vlad`)::

    frames uint8 (N, H, W, 3) RGB, as stored by the ingest
      -> resize: short side input.short_side, long side <= input.max_long_side (aspect kept, no crop)
      -> float; per-frame channel standardisation (input.normalize=frame, the default: undoes global
         brightness / contrast changes) or (x/255 - mean) / std (dataset), (N, 3, h, w)
      -> backbone tap: conv map (N, C, h', w')  [vlad, gap]   or vector (N, D)  [fc]
      -> encoder: VLAD / global average pooling / as is -> L2 -> PCA-whitening -> L2   (N, out_dim)

Weights: a random-init network (seeded: every actor builds the same one; :func:`weights_fingerprint`
checks it), a torchvision weights name or local backbone file (``model.weights``), or the backbone of
a vidray training checkpoint (``model.checkpoint``: the ``backbone.body.*`` parameters of a model
built on :mod:`vidray.models.backbones`, e.g. ``single_frame``, ``conv_pooling``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from vidray.io.checkpoint import load_checkpoint
from vidray.io.video import output_size, resize_rgb
from vidray.models.backbones import VECTOR_TAPS, Backbone, backbone_spec, build_backbone, build_network
from vidray.retrieval.config import EmbedConfig, EmbedModelConfig
from vidray.registry import DESCRIPTORS
from vidray.retrieval.vlad import GlobalEncoder, VLADEncoder, encoder_from_state

__all__ = ["FrameDescriber", "build_feature_backbone", "feature_tap_name", "load_training_backbone",
           "weights_fingerprint", "make_encoder", "Descriptor"]

_BACKBONE_PREFIX = "backbone.body."


def feature_tap_name(cfg: EmbedConfig, backbone: str) -> str:
    """The tap the descriptor reads: ``model.layer`` (a conv map) for ``vlad`` / ``gap``, the vector
    tap ``model.fc_layer`` (default ``fc7``, or ``pool`` for backbones without fc layers) for ``fc``.

    Raises ``ValueError`` naming the key when the tap does not exist or has the wrong kind.
    """
    spec = backbone_spec(backbone)
    if DESCRIPTORS.get(cfg.descriptor.kind).vector_tap:
        tap = cfg.model.fc_layer or ("fc7" if "fc7" in spec.taps else "pool")
        key, want_vector = "model.fc_layer", True
    else:
        tap, key, want_vector = cfg.model.layer, "model.layer", False
    if tap not in spec.taps:
        raise ValueError(f"{key}={tap!r} is not a tap of {backbone}; known: {', '.join(spec.taps)}")
    if (tap in VECTOR_TAPS) != want_vector:
        kind = "a vector tap (fc6, fc7, pool)" if want_vector else "a conv tap"
        maps = [t for t in spec.taps if (t in VECTOR_TAPS) == want_vector]
        raise ValueError(f"{key}={tap!r}: descriptor.kind={cfg.descriptor.kind} needs {kind} of {backbone}: "
                         f"{', '.join(maps)}")
    return tap


def load_training_backbone(path: str | Path) -> tuple[str, dict[str, torch.Tensor]]:
    """``(backbone name, state dict in torchvision naming)`` of a vidray training checkpoint.

    ``path``: ``checkpoint.pt``, an ``epoch_NNNN`` folder or a run folder (its latest epoch). Read with
    ``torch.load(weights_only=True)``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model.checkpoint: {p} does not exist")
    try:
        state = load_checkpoint(p)  # vidray.io.checkpoint: file, epoch folder or run (its newest epoch)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"model.checkpoint: {e}") from None
    if int(state.get("in_channels", 3)) != 3:
        raise ValueError(f"model.checkpoint: {p} is a {state.get('in_channels')}-channel (flow) model; embed needs RGB")
    kwargs = ((state.get("config") or {}).get("model") or {}).get("kwargs") or {}
    name = str(kwargs.get("backbone", "tiny"))
    sd = {k[len(_BACKBONE_PREFIX):]: v for k, v in state["model"].items() if k.startswith(_BACKBONE_PREFIX)}
    if not sd:
        raise ValueError(f"model.checkpoint: {p} ({state.get('model_name')}) has no {_BACKBONE_PREFIX}* "
                         f"parameters; embed reads models built on vidray.models.backbones (single_frame, conv_pooling, ...)")
    return name, sd


def build_feature_backbone(model: EmbedModelConfig, tap_for: Any) -> tuple[Backbone, str]:
    """The backbone cut at the descriptor's tap; returns ``(backbone, tap)``.

    ``tap_for(backbone_name) -> tap``. Random init is seeded with ``model.seed`` (same weights in
    every process).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model.seed)
        if model.checkpoint:
            name, sd = load_training_backbone(model.checkpoint)
            tap = tap_for(name)
            spec = backbone_spec(name)
            net, _ = build_network(name)
            result = net.load_state_dict(sd, strict=False)
            if result.unexpected_keys:
                raise ValueError(f"model.checkpoint: unexpected keys for {name}: {result.unexpected_keys[:5]}")
            from torchvision.models.feature_extraction import create_feature_extractor

            body = create_feature_extractor(net, return_nodes={spec.taps[tap]: tap})
            lacking = sorted(set(body.state_dict()).intersection(result.missing_keys))
            if lacking:
                raise ValueError(f"model.checkpoint: the trained network was cut before tap {tap!r} "
                                 f"(missing {lacking[:3]}); choose an earlier model.layer")
            bb = Backbone(name, body, (tap,), spec.tap_channels)
        else:
            name = model.name
            tap = tap_for(name)
            bb = build_backbone(name, taps=(tap,), weights=model.weights)
    return bb.eval(), tap


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 (16 hex) of a module's parameters and buffers: the fit task and every actor must agree."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Descriptor:
    """An entry of :data:`vidray.registry.DESCRIPTORS` (``descriptor.kind``): which tap it reads
    (``vector_tap``: ``model.fc_layer``, else the conv map ``model.layer``) and its unfitted encoder."""

    vector_tap: bool
    make: Callable[[EmbedConfig], VLADEncoder | GlobalEncoder]


def _vlad(cfg: EmbedConfig) -> VLADEncoder:
    d = cfg.descriptor
    return VLADEncoder(k=d.k, pca_dim=d.pca_dim, whiten=d.whiten, whiten_shrink=d.whiten_shrink,
                       kmeans=d.kmeans, max_descriptors=cfg.fit.max_descriptors, seed=cfg.fit.seed)


def _global(kind: str) -> Callable[[EmbedConfig], GlobalEncoder]:
    def make(cfg: EmbedConfig) -> GlobalEncoder:
        d = cfg.descriptor
        return GlobalEncoder(kind=kind, pca_dim=d.pca_dim, whiten=d.whiten, whiten_shrink=d.whiten_shrink)

    return make


DESCRIPTORS.register("vlad", Descriptor(False, _vlad),
                     help="VLAD of a conv layer's local features (k-means vocabulary, intra-norm; thesis ch. 2)")
DESCRIPTORS.register("gap", Descriptor(False, _global("gap")),
                     help="global average pooling of the same conv layer (baseline)")
DESCRIPTORS.register("fc", Descriptor(True, _global("fc")),
                     help="a fully connected / pooled vector tap as it is (baseline: model.fc_layer)")


def make_encoder(cfg: EmbedConfig) -> VLADEncoder | GlobalEncoder:
    """An unfitted encoder of ``cfg.descriptor`` (its :data:`~vidray.registry.DESCRIPTORS` entry)."""
    return DESCRIPTORS.get(cfg.descriptor.kind).make(cfg)


class FrameDescriber:
    """Frames -> descriptors with one network (see the module docstring).

    Args:
        cfg: the embed configuration.
        encoder_state: a fitted encoder's arrays (:meth:`VLADEncoder.state`), or ``None`` before
            fitting (then only :meth:`features` works).
        device: ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, cfg: EmbedConfig, encoder_state: Mapping[str, np.ndarray] | None = None,
                 device: str = "cpu") -> None:
        self.cfg = cfg
        self.backbone, self.tap = build_feature_backbone(cfg.model, lambda name: feature_tap_name(cfg, name))
        self.fingerprint = weights_fingerprint(self.backbone)
        self.device = torch.device(device)
        self.backbone.to(self.device)
        self.encoder = encoder_from_state(encoder_state) if encoder_state is not None else None
        self._mean = torch.tensor(cfg.input.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(cfg.input.std, device=self.device).view(1, 3, 1, 1) * 255.0

    @property
    def out_dim(self) -> int:
        if self.encoder is None:
            raise RuntimeError("FrameDescriber has no fitted encoder")
        return int(self.encoder.out_dim)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """``(N, H, W, 3)`` uint8 -> ``(N, 3, h, w)`` float32 normalised, on the device."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) frames, got {frames.shape}")
        h, w = frames.shape[1:3]
        size = output_size(w, h, self.cfg.input.short_side, self.cfg.input.max_long_side)
        if size != (w, h):
            frames = np.stack([resize_rgb(f, size) for f in frames])
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float()
        if self.cfg.input.normalize == "frame":
            mu = x.mean(dim=(2, 3), keepdim=True)
            sd = x.std(dim=(2, 3), keepdim=True).clamp_min(1.0)  # a flat channel stays flat
            return x.sub_(mu).div_(sd)
        return x.sub_(self._mean).div_(self._std)

    @torch.no_grad()
    def features(self, frames: np.ndarray) -> torch.Tensor:
        """Tap output of ``frames`` (batched by ``execution.batch_size``), float32 on the CPU."""
        bs = self.cfg.execution.batch_size
        outs = [self.backbone(self.preprocess(frames[i:i + bs]))[self.tap].float().cpu()
                for i in range(0, len(frames), bs)]
        return torch.cat(outs)

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> np.ndarray:
        """Descriptors ``(N, out_dim)`` float32, unit L2 norm."""
        if self.encoder is None:
            raise RuntimeError("FrameDescriber has no fitted encoder")
        if len(frames) == 0:
            return np.zeros((0, self.out_dim), np.float32)
        bs = self.cfg.execution.batch_size
        outs = []
        for i in range(0, len(frames), bs):
            f = self.backbone(self.preprocess(frames[i:i + bs]))[self.tap].float()
            outs.append(self.encoder.encode(f.cpu() if self.device.type == "cpu" else f).cpu())
        return torch.cat(outs).numpy().astype(np.float32)
