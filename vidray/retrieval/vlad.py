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

On an ingested dataset this is driven by ``vidray embed`` (:mod:`vidray.retrieval.embed`); by hand:
decode frames to ``(N, 3, H, W)`` normalised tensors, pick a layer with :func:`feature_tap` (e.g.
``feature_tap(torchvision.models.vgg16(), "features.29")`` or ResNet ``"layer4"``),
:meth:`VLADEncoder.fit` on a training subset of frames (via :func:`extract_feature_maps`), then
:func:`encode_frames` the database and the queries; :func:`video_descriptor` pools the frame codes of a
video for video-level near-duplicate search. :class:`GlobalEncoder` gives the baselines (global
average pooling of the same conv map, or a fully connected layer) with the same PCA-whitening.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "VLADEncoder",
    "GlobalEncoder",
    "encoder_from_state",
    "fit_pca_whitening",
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


def fit_pca_whitening(x: torch.Tensor, dim: int, *, whiten: bool = True, eps: float = 1e-6, shrink: float = 0.0,
                      name: str = "training vectors") -> tuple[torch.Tensor, torch.Tensor]:
    """PCA (+ whitening) of the rows of ``x`` ``(n, D)`` (Jegou & Chum, ECCV 2012).

    Returns ``(mean (D,), components (D, d))`` float32 with ``d = min(dim, rank)`` (a ``UserWarning``
    says when the rank clamps it); with ``whiten`` each component is divided by
    ``sqrt(eigenvalue + eps + shrink * mean of the d eigenvalues)``: ``shrink=0`` is full whitening
    (``(x - mean) @ components`` has identity covariance on ``x``), a larger ``shrink`` moves it
    towards plain PCA, which keeps estimates from few samples from blowing up noise directions.
    """
    x = x.double()
    mean = x.mean(dim=0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    eig = s.pow(2) / max(x.shape[0] - 1, 1)
    rank = int((eig > eig.max() * 1e-10).sum()) if eig.numel() else 0
    d = min(dim, rank)
    if d < dim:
        warnings.warn(f"pca_dim={dim} exceeds the rank ({rank}) of the {x.shape[0]} {name}; using {d}",
                      stacklevel=3)
    comps = vh[:d].T  # (D, d)
    if whiten:
        comps = comps / torch.sqrt(eig[:d] + eps + shrink * eig[:d].mean())
    return mean.float(), comps.float()


def _kmeans(descs: np.ndarray, k: int, method: str, iters: int, seed: int) -> np.ndarray:
    """scikit-learn k-means of ``descs`` ``(M, C)`` -> centroids ``(k, C)`` float32.

    ``minibatch``: ``MiniBatchKMeans`` (3 inits); ``lloyd``: ``KMeans`` (Lloyd iterations, k-means++
    seeding: what the hand-written torch version of this module did before).
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if method == "minibatch":
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, max_iter=iters, batch_size=max(1024, 3 * k))
    else:
        km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=iters, algorithm="lloyd", random_state=seed)
    km.fit(descs)
    return km.cluster_centers_.astype(np.float32)


class VLADEncoder:
    """VLAD of L2-normalised conv-feature descriptors, with intra-normalisation, PCA-whitening and L2.

    Args:
        k: vocabulary size (paper: 100).
        pca_dim: output dimension after PCA + whitening (paper: 128); ``None`` keeps the raw ``k*C`` VLAD.
            Clamped (with a warning) to the rank of the training VLADs.
        whiten: divide the PCA components by ``sqrt(eigenvalue + whiten_eps + whiten_shrink * mean
            eigenvalue)`` (:func:`fit_pca_whitening`).
        kmeans: ``"minibatch"`` (scikit-learn ``MiniBatchKMeans``) or ``"lloyd"`` (scikit-learn
            ``KMeans``: Lloyd, k-means++ init); ``"torch"`` is an old name of ``"lloyd"``.
        max_descriptors: random subsample of training descriptors used for k-means.
        seed: seed of the subsampling and of k-means.

    Attributes after :meth:`fit`: ``centroids`` ``(k, C)``, ``pca_mean`` ``(k*C,)``, ``pca_components``
    ``(k*C, pca_dim)`` (whitening folded in), ``out_dim``. :meth:`state` / :meth:`from_state` turn a
    fitted encoder into plain numpy arrays and back (saved with ``np.savez``, loaded without pickle).
    """

    kind = "vlad"

    def __init__(self, k: int = 100, pca_dim: int | None = 128, *, whiten: bool = True, kmeans: str = "minibatch",
                 max_descriptors: int = 200_000, kmeans_iters: int = 100, whiten_eps: float = 1e-6,
                 whiten_shrink: float = 0.0, seed: int = 0) -> None:
        if kmeans not in ("minibatch", "lloyd", "torch"):
            raise ValueError("kmeans must be 'minibatch' or 'lloyd'")
        self.k, self.pca_dim, self.whiten, self.whiten_shrink = k, pca_dim, whiten, whiten_shrink
        self.kmeans = "lloyd" if kmeans == "torch" else kmeans
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
        self.centroids = torch.from_numpy(
            _kmeans(descs.numpy().astype(np.float32), self.k, self.kmeans, self.kmeans_iters, self.seed))

        if self.pca_dim is None:
            self.out_dim = self.k * descs.shape[1]
            return self
        x = torch.cat([self.vlad(m) for m in maps])  # (n, k*C)
        self.pca_mean, self.pca_components = fit_pca_whitening(
            x, self.pca_dim, whiten=self.whiten, eps=self.whiten_eps, shrink=self.whiten_shrink, name="training VLADs")
        self.out_dim = self.pca_components.shape[1]
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
            v = (v - self.pca_mean.to(v)) @ self.pca_components.to(v)
        return F.normalize(v, p=2, dim=-1)

    # ---- saving --------------------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """The fitted encoder as numpy arrays (``np.savez``-able; no pickled objects)."""
        c = self._check_fitted()
        out = {"kind": np.array(self.kind), "k": np.array(self.k), "centroids": c.numpy()}
        if self.pca_components is not None:
            out.update(pca_mean=self.pca_mean.numpy(), pca_components=self.pca_components.numpy())
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> "VLADEncoder":
        """Inverse of :meth:`state`."""
        c = torch.from_numpy(np.array(state["centroids"], np.float32))
        enc = cls(k=c.shape[0], pca_dim=None)
        enc.centroids = c
        if "pca_components" in state:
            enc.pca_mean = torch.from_numpy(np.array(state["pca_mean"], np.float32))
            enc.pca_components = torch.from_numpy(np.array(state["pca_components"], np.float32))
            enc.pca_dim = enc.out_dim = enc.pca_components.shape[1]
        else:
            enc.out_dim = c.shape[0] * c.shape[1]
        return enc


class GlobalEncoder:
    """Baseline descriptors of the same network: a global vector per image -> L2 -> PCA-whitening -> L2.

    ``kind="gap"``: the conv map ``(N, C, H, W)`` averaged over its locations (global average pooling);
    ``kind="fc"``: a fully connected tap ``(N, D)`` as it is (Razavian et al.'s "CNN features off the
    shelf", the baseline of Ng et al. 2015). Same post-processing as :class:`VLADEncoder` so that only
    the aggregation differs.
    """

    def __init__(self, kind: str = "gap", pca_dim: int | None = 128, *, whiten: bool = True,
                 whiten_eps: float = 1e-6, whiten_shrink: float = 0.0) -> None:
        if kind not in ("gap", "fc"):
            raise ValueError("kind must be 'gap' or 'fc'")
        self.kind, self.pca_dim, self.whiten, self.whiten_eps = kind, pca_dim, whiten, whiten_eps
        self.whiten_shrink = whiten_shrink
        self.pca_mean: torch.Tensor | None = None
        self.pca_components: torch.Tensor | None = None
        self.in_dim: int | None = None
        self.out_dim: int | None = None

    def vector(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` (``gap``) or ``(N, D)`` -> L2-normalised ``(N, D)``."""
        if features.dim() == 4:
            features = features.float().mean(dim=(2, 3))
        if features.dim() != 2:
            raise ValueError(f"expected (N, C, H, W) or (N, D), got {tuple(features.shape)}")
        return F.normalize(features.float(), p=2, dim=-1)

    def fit(self, features_list: Iterable[torch.Tensor] | torch.Tensor) -> "GlobalEncoder":
        feats = [features_list] if torch.is_tensor(features_list) else list(features_list)
        x = torch.cat([self.vector(f) for f in feats])
        self.in_dim = x.shape[1]
        if self.pca_dim is None:
            self.out_dim = self.in_dim
            return self
        self.pca_mean, self.pca_components = fit_pca_whitening(
            x, self.pca_dim, whiten=self.whiten, eps=self.whiten_eps, shrink=self.whiten_shrink,
            name=f"training {self.kind} vectors")
        self.out_dim = self.pca_components.shape[1]
        return self

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        v = self.vector(features)
        if self.pca_components is not None:
            v = (v - self.pca_mean.to(v)) @ self.pca_components.to(v)
        return F.normalize(v, p=2, dim=-1)

    def state(self) -> dict[str, np.ndarray]:
        if self.out_dim is None:
            raise RuntimeError("GlobalEncoder is not fitted; call fit() first")
        out = {"kind": np.array(self.kind), "in_dim": np.array(self.in_dim)}
        if self.pca_components is not None:
            out.update(pca_mean=self.pca_mean.numpy(), pca_components=self.pca_components.numpy())
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> "GlobalEncoder":
        enc = cls(kind=str(state["kind"]), pca_dim=None)
        enc.in_dim = int(state["in_dim"])
        enc.out_dim = enc.in_dim
        if "pca_components" in state:
            enc.pca_mean = torch.from_numpy(np.array(state["pca_mean"], np.float32))
            enc.pca_components = torch.from_numpy(np.array(state["pca_components"], np.float32))
            enc.pca_dim = enc.out_dim = enc.pca_components.shape[1]
        return enc


def encoder_from_state(state: Mapping[str, np.ndarray]) -> "VLADEncoder | GlobalEncoder":
    """A fitted :class:`VLADEncoder` or :class:`GlobalEncoder` from its :meth:`state` arrays."""
    kind = str(state["kind"])
    return VLADEncoder.from_state(state) if kind == "vlad" else GlobalEncoder.from_state(state)


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
