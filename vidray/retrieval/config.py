"""Typed configuration of ``vidray embed`` (YAML file + ``--set key.sub=value``, as every vidray stage).

>>> cfg = load_config(EmbedConfig, None, ["descriptor.k=64", "model.layer=res3"])   # doctest: +SKIP

Every key with its default and meaning is in docs/retrieval.md. :meth:`EmbedConfig.settings_hash`
covers what changes the vectors (model, input, descriptor, fit); ``execution`` may change between
runs into the same output folder.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import Field

from vidray import registry
from vidray.config import _Strict

DescriptorKind = Annotated[str, registry.DESCRIPTORS.validator()]


class EmbedModelConfig(_Strict):
    """The network whose features are aggregated (:mod:`vidray.models.backbones`).

    ``layer`` is a conv tap for ``vlad`` / ``gap`` (e.g. ``res4`` of ResNet-18, ``conv4`` of AlexNet),
    ``fc_layer`` the vector tap for ``fc`` (``fc7``; ResNets have ``pool``).
    ``weights``: ``None`` (random init from ``seed``), a torchvision weights name
    (``"ResNet18_Weights.IMAGENET1K_V1"``; downloaded by torchvision unless already cached under
    ``$TORCH_HOME``) or a local checkpoint file of the backbone. ``checkpoint``: a vidray training
    checkpoint (file, epoch folder or run folder); its backbone name and weights are used and
    ``name`` / ``weights`` are ignored.
    """

    name: str = Field("resnet18", description="backbone name (vidray.models.backbones.list_backbones())")
    layer: str = Field("res3", description="conv tap aggregated by vlad / gap")
    fc_layer: str | None = Field(None, description="vector tap of descriptor.kind=fc (None: fc7, or pool)")
    weights: str | None = Field(None, description="None = random init; torchvision weights name or local file")
    checkpoint: str | None = Field(None, description="vidray training checkpoint whose backbone is used")
    seed: int = Field(0, description="seed of a random-init network")


class EmbedInputConfig(_Strict):
    """Frames as the network sees them: resized keeping the aspect ratio, then normalised.

    ``normalize``: ``dataset`` subtracts ``mean`` and divides by ``std`` (ImageNet's, what torchvision
    weights and vidray training use); ``frame`` standardises each frame's channels to zero mean and
    unit variance, which undoes global brightness / contrast changes before the network sees them.
    """

    short_side: int | None = Field(224, ge=16, description="resize the short side to this (None: as stored)")
    max_long_side: int | None = Field(400, ge=16, description="then cap the long side")
    normalize: Literal["dataset", "frame"] = Field(
        "frame", description="frame: per-frame channel standardisation; dataset: (x/255 - mean) / std")
    mean: tuple[float, float, float] = Field((0.485, 0.456, 0.406), description="channel mean (normalize=dataset)")
    std: tuple[float, float, float] = Field((0.229, 0.224, 0.225), description="channel std (normalize=dataset)")


class DescriptorConfig(_Strict):
    """Per-frame descriptor: ``vlad`` (thesis ch. 2), or the ``gap`` / ``fc`` baselines.

    Each is L2-normalised, PCA-whitened to ``pca_dim`` and L2-normalised again, so cosine similarity
    is an inner product. A video's descriptor is the mean of its frames' descriptors, L2-normalised.
    """

    kind: DescriptorKind = Field("vlad", description="the per-frame descriptor")
    k: int = Field(100, ge=2, description="VLAD vocabulary size (paper: 100)")
    pca_dim: int | None = Field(128, ge=1, description="PCA-whitened output dimension; None keeps the raw vector")
    whiten: bool = Field(False, description="PCA-whitening (thesis) instead of plain PCA; see docs/retrieval.md")
    whiten_shrink: float = Field(0.0, ge=0, description="whitening divides by sqrt(eig + shrink * mean eig)")
    kmeans: Literal["minibatch", "lloyd"] = Field(
        "minibatch", description="VLAD vocabulary k-means (scikit-learn MiniBatchKMeans or KMeans)")


class FitConfig(_Strict):
    """The sample the vocabulary and the PCA-whitening are fitted on (one Ray task, before embedding)."""

    max_frames: int = Field(1000, ge=2, description="frames in the fitting sample")
    frames_per_video: int = Field(4, ge=1, description="evenly spaced frames taken from each sampled video")
    max_descriptors: int = Field(100_000, ge=100, description="local descriptors given to k-means")
    seed: int = Field(0, description="seed of the fitting sample and of k-means")


class EmbedExecutionConfig(_Strict):
    """Where and how the Ray Data job runs."""

    ray_address: str | None = Field(None, description="None: RAY_ADDRESS or a local Ray")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: GPUs when the cluster has them")
    actors: int | None = Field(None, ge=1, description="actor pool size (None: one per GPU, or per CPU)")
    num_cpus_per_actor: float = Field(1.0, gt=0, description="also the torch threads of a CPU actor")
    batch_size: int = Field(32, ge=1, description="frames per forward pass")


class EmbedConfig(_Strict):
    """Full ``vidray embed`` configuration."""

    model: EmbedModelConfig = EmbedModelConfig()
    input: EmbedInputConfig = EmbedInputConfig()
    descriptor: DescriptorConfig = DescriptorConfig()
    fit: FitConfig = FitConfig()
    execution: EmbedExecutionConfig = EmbedExecutionConfig()

    def settings_hash(self) -> str:
        """Hash of the settings that change the vectors (everything but ``execution``)."""
        d = self.model_dump(mode="json")
        d.pop("execution")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
