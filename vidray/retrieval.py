"""VLAD on convolutional features for near-duplicate frame / video retrieval.

Paper: J. Y.-H. Ng, F. Yang, L. S. Davis, "Exploiting Local Features from Deep Networks for Image
Retrieval", CVPR Workshops 2015 (Sec. 3); J. Y.-H. Ng, PhD thesis, ch. 2. Normalisation follows
Arandjelovic & Zisserman, "All about VLAD" (CVPR 2013; intra-normalisation) and Jegou & Chum (ECCV 2012;
PCA + whitening).

Pipeline (:class:`VLADEncoder`)::

    feature map (N, C, H, W) of a chosen layer
      -> N x (H*W) local descriptors of dim C, each L2-normalised          (local_descriptors)
      -> hard assignment to the nearest of k centroids (k-means, k=100)
      -> residual sum per centroid  v_j = sum_{x in cluster j} (x - c_j)   (N, k, C)
      -> intra-normalisation: each v_j / ||v_j||  (empty clusters stay 0)
      -> L2 over the whole (k*C) vector                                    (VLADEncoder.vlad)
      -> PCA to pca_dim (128) + whitening (fit on a training set) -> L2    (VLADEncoder.encode)

Retrieval ranks a database by L2 distance (:func:`search`; on L2-normalised codes this is the cosine
ranking) and is scored with :func:`average_precision` / :func:`mean_average_precision`.

Use on an ingested dataset: decode frames to ``(N, 3, H, W)`` normalised tensors, pick a layer with
:func:`feature_tap` (e.g. ``feature_tap(torchvision.models.vgg16(), "features.29")`` or ResNet
``"layer4"``), :meth:`VLADEncoder.fit` on a training subset of frames (via :func:`extract_feature_maps`),
then :func:`encode_frames` the database and the queries; :func:`video_descriptor` pools the frame codes
of a video for video-level near-duplicate search.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "VLADEncoder",
    "local_descriptors",
    "search",
    "average_precision",
    "mean_average_precision",
    "feature_tap",
    "extract_feature_maps",
    "encode_frames",
    "video_descriptor",
]


def local_descriptors(feature_map: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-location descriptors of a conv feature map, each L2-normalised.

    ``feature_map``: ``(N, C, H, W)`` (or ``(C, H, W)``) -> ``(N, H*W, C)``.
    """
    if feature_map.dim() == 3:
        feature_map = feature_map.unsqueeze(0)
    if feature_map.dim() != 4:
        raise ValueError(f"expected (N, C, H, W), got {tuple(feature_map.shape)}")
    d = feature_map.flatten(2).transpose(1, 2).float()
    return F.normalize(d, p=2, dim=-1, eps=eps)


def _kmeans_torch(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    """Plain Lloyd k-means with k-means++ init on ``x`` ``(M, C)``; returns ``(k, C)`` centroids."""
    g = torch.Generator().manual_seed(seed)
    m = x.shape[0]
    centroids = x[torch.randint(m, (1,), generator=g)]
    for _ in range(1, k):  # k-means++ seeding
        d2 = torch.cdist(x, centroids).min(dim=1).values.pow(2)
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / m)
        centroids = torch.cat([centroids, x[torch.multinomial(probs, 1, generator=g)]])
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype).unsqueeze(1)
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        if torch.allclose(new, centroids):
            break
        centroids = new
    return centroids


class VLADEncoder:
    """VLAD of L2-normalised conv-feature descriptors, with intra-normalisation, PCA-whitening and L2.

    Args:
        k: vocabulary size (paper: 100).
        pca_dim: output dimension after PCA + whitening (paper: 128); ``None`` keeps the raw ``k*C`` VLAD.
            Clamped (with a warning) to the rank of the training VLADs.
        whiten: divide the PCA components by ``sqrt(eigenvalue + whiten_eps)``.
        kmeans: ``"minibatch"`` (scikit-learn ``MiniBatchKMeans``) or ``"torch"`` (Lloyd, k-means++ init).
        max_descriptors: random subsample of training descriptors used for k-means.
        seed: seed of the subsampling and of k-means.

    Attributes after :meth:`fit`: ``centroids`` ``(k, C)``, ``pca_mean`` ``(k*C,)``, ``pca_components``
    ``(k*C, pca_dim)`` (whitening folded in), ``out_dim``.
    """

    def __init__(self, k: int = 100, pca_dim: int | None = 128, *, whiten: bool = True, kmeans: str = "minibatch",
                 max_descriptors: int = 200_000, kmeans_iters: int = 100, whiten_eps: float = 1e-6,
                 seed: int = 0) -> None:
        if kmeans not in ("minibatch", "torch"):
            raise ValueError("kmeans must be 'minibatch' or 'torch'")
        self.k, self.pca_dim, self.whiten, self.kmeans = k, pca_dim, whiten, kmeans
        self.max_descriptors, self.kmeans_iters, self.whiten_eps, self.seed = (
            max_descriptors, kmeans_iters, whiten_eps, seed)
        self.centroids: torch.Tensor | None = None
        self.pca_mean: torch.Tensor | None = None
        self.pca_components: torch.Tensor | None = None
        self.out_dim: int | None = None

    # ---- fitting -------------------------------------------------------------------------------------

    def fit(self, features_list: Iterable[torch.Tensor] | torch.Tensor) -> "VLADEncoder":
        """Learn the vocabulary and the PCA-whitening on training feature maps.

        ``features_list``: feature maps ``(N_i, C, H, W)`` / ``(C, H, W)``, or one ``(N, C, H, W)`` tensor.
        The k-means uses (a subsample of) all their local descriptors; PCA uses their VLADs.
        """
        maps = [features_list] if torch.is_tensor(features_list) else list(features_list)
        maps = [m.unsqueeze(0) if m.dim() == 3 else m for m in maps]
        descs = torch.cat([local_descriptors(m).reshape(-1, m.shape[1]) for m in maps])
        if descs.shape[0] < self.k:
            raise ValueError(f"{descs.shape[0]} descriptors are fewer than k={self.k}")
        g = torch.Generator().manual_seed(self.seed)
        if descs.shape[0] > self.max_descriptors:
            descs = descs[torch.randperm(descs.shape[0], generator=g)[: self.max_descriptors]]
        if self.kmeans == "minibatch":
            from sklearn.cluster import MiniBatchKMeans

            km = MiniBatchKMeans(n_clusters=self.k, random_state=self.seed, n_init=3, max_iter=self.kmeans_iters,
                                 batch_size=max(1024, 3 * self.k))
            km.fit(descs.numpy().astype(np.float32))
            self.centroids = torch.from_numpy(km.cluster_centers_).float()
        else:
            self.centroids = _kmeans_torch(descs, self.k, self.kmeans_iters, self.seed)

        if self.pca_dim is None:
            self.out_dim = self.k * descs.shape[1]
            return self
        x = torch.cat([self.vlad(m) for m in maps]).double()  # (n, k*C)
        self.pca_mean = x.mean(dim=0)
        _, s, vh = torch.linalg.svd(x - self.pca_mean, full_matrices=False)
        eig = s.pow(2) / max(x.shape[0] - 1, 1)
        rank = int((eig > eig.max() * 1e-10).sum()) if eig.numel() else 0
        dim = min(self.pca_dim, rank)
        if dim < self.pca_dim:
            warnings.warn(f"pca_dim={self.pca_dim} exceeds the rank ({rank}) of the {x.shape[0]} training VLADs; "
                          f"using {dim}", stacklevel=2)
        comps = vh[:dim].T  # (D, dim)
        if self.whiten:
            comps = comps / torch.sqrt(eig[:dim] + self.whiten_eps)
        self.pca_mean, self.pca_components = self.pca_mean.float(), comps.float()
        self.out_dim = dim
        return self

    # ---- encoding ------------------------------------------------------------------------------------

    def _check_fitted(self) -> torch.Tensor:
        if self.centroids is None:
            raise RuntimeError("VLADEncoder is not fitted; call fit() first")
        return self.centroids

    def assign(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Nearest-centroid index of every local descriptor: ``(N, C, H, W)`` -> ``(N, H*W)``."""
        c = self._check_fitted()
        d = local_descriptors(feature_map)
        return torch.cdist(d, c.to(d).unsqueeze(0).expand(d.shape[0], -1, -1)).argmin(dim=-1)

    def residuals(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Unnormalised VLAD residual sums ``(N, k, C)``: ``v_j = sum_{x: NN(x)=j} (x - c_j)``."""
        c = self._check_fitted()
        d = local_descriptors(feature_map)  # (N, M, C)
        a = F.one_hot(self.assign(feature_map), self.k).to(d)  # (N, M, k)
        return a.transpose(1, 2) @ d - a.sum(dim=1).unsqueeze(-1) * c.to(d)

    def vlad(self, feature_map: torch.Tensor, *, intra_norm: bool = True, l2: bool = True) -> torch.Tensor:
        """The VLAD vector ``(N, k*C)`` before PCA: residuals, intra-normalised per cluster, then L2."""
        v = self.residuals(feature_map)
        if intra_norm:
            v = F.normalize(v, p=2, dim=-1)  # zero blocks (empty clusters) stay zero
        v = v.flatten(1)
        return F.normalize(v, p=2, dim=-1) if l2 else v

    def encode(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Final codes ``(N, out_dim)``: VLAD -> PCA + whitening -> L2 (unit norm)."""
        v = self.vlad(feature_map)
        if self.pca_components is not None:
            v = (v - self.pca_mean) @ self.pca_components
        return F.normalize(v, p=2, dim=-1)


# ---- retrieval and metrics -------------------------------------------------------------------------


def search(db: torch.Tensor, queries: torch.Tensor, topk: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 nearest neighbours: ``db`` ``(M, D)``, ``queries`` ``(Q, D)`` -> ``(distances, indices)`` ``(Q, topk)``,
    nearest first (``topk`` is clamped to ``M``)."""
    d = torch.cdist(queries.float(), db.float())
    dist, idx = d.topk(min(topk, db.shape[0]), dim=1, largest=False)
    return dist, idx


def average_precision(ranking: Sequence[int], relevant: Iterable[int]) -> float:
    """Non-interpolated AP of one ranked list: mean over relevant items of the precision at their rank.

    Relevant items missing from a (truncated) ranking contribute precision 0. ``relevant`` must be non-empty.
    """
    rel = set(int(r) for r in relevant)
    if not rel:
        raise ValueError("average_precision needs at least one relevant item")
    hits, total = 0, 0.0
    for rank, item in enumerate(ranking, start=1):
        if int(item) in rel:
            hits += 1
            total += hits / rank
    return total / len(rel)


def mean_average_precision(rankings: Sequence[Sequence[int]] | torch.Tensor,
                           relevants: Sequence[Iterable[int]]) -> float:
    """mAP over queries: ``rankings[q]`` the ranked database ids of query ``q``, ``relevants[q]`` its
    ground-truth relevant ids."""
    if torch.is_tensor(rankings):
        rankings = rankings.tolist()
    if len(rankings) != len(relevants):
        raise ValueError("one relevant set per query is needed")
    return float(np.mean([average_precision(r, g) for r, g in zip(rankings, relevants)]))


# ---- frames of an ingested dataset -------------------------------------------------------------------


def feature_tap(model: nn.Module, node: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable ``(N, 3, H, W) -> (N, C, h, w)`` returning the output of layer ``node`` of ``model``.

    Built with ``torchvision.models.feature_extraction.create_feature_extractor`` (node names as in
    ``get_graph_node_names``, e.g. ``"layer4"`` of a ResNet, ``"features.29"`` = VGG-16 conv5_3 + ReLU).
    """
    from torchvision.models.feature_extraction import create_feature_extractor

    extractor = create_feature_extractor(model.eval(), return_nodes={node: "feat"})
    return lambda x: extractor(x)["feat"]


@torch.no_grad()
def extract_feature_maps(frames: torch.Tensor | Iterable[torch.Tensor], backbone: Callable[[torch.Tensor], torch.Tensor],
                         batch_size: int = 64) -> list[torch.Tensor]:
    """Run ``backbone`` over frames ``(N, C, H, W)`` (or an iterable of frame batches) in batches, no grad.

    Returns a list of feature maps ``(n_i, C', h, w)`` on the CPU.
    """
    batches = frames.split(batch_size) if torch.is_tensor(frames) else frames
    return [backbone(b).cpu() for b in batches]


@torch.no_grad()
def encode_frames(frames: torch.Tensor | Iterable[torch.Tensor], backbone: Callable[[torch.Tensor], torch.Tensor],
                  encoder: VLADEncoder, batch_size: int = 64) -> torch.Tensor:
    """VLAD codes ``(N, encoder.out_dim)`` of frames ``(N, C, H, W)`` through ``backbone`` and a fitted encoder."""
    return torch.cat([encoder.encode(f) for f in extract_feature_maps(frames, backbone, batch_size)])


def video_descriptor(frame_codes: torch.Tensor) -> torch.Tensor:
    """Video-level code: mean of its frames' codes ``(T, D)`` (or ``(B, T, D)``), L2-normalised."""
    return F.normalize(frame_codes.mean(dim=-2), p=2, dim=-1)
