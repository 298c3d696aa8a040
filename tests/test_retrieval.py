"""VLAD on conv features (Ng et al., CVPRW 2015): near-duplicate retrieval on a synthetic set, intra-
normalisation, whitening, AP/mAP against hand computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from vidray.retrieval import (
    VLADEncoder,
    average_precision,
    encode_frames,
    extract_feature_maps,
    feature_tap,
    local_descriptors,
    mean_average_precision,
    search,
    video_descriptor,
)

C, H, W = 16, 6, 6


def _maps(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(n, C, H, W, generator=g))  # conv-like, non-negative


@pytest.fixture(scope="module")
def encoder() -> VLADEncoder:
    torch.manual_seed(0)
    return VLADEncoder(k=8, pca_dim=32).fit([_maps(40, 1), _maps(40, 2)])


def test_vlad_recovers_near_duplicates(encoder):
    torch.manual_seed(0)
    db_maps = _maps(30, 3)
    perm = torch.randperm(30)
    queries = db_maps[perm] + 0.05 * torch.randn(30, C, H, W)  # slightly perturbed copies, shuffled
    db, q = encoder.encode(db_maps), encoder.encode(queries)
    assert db.shape == (30, 32)
    torch.testing.assert_close(db.norm(dim=1), torch.ones(30))
    _, idx = search(db, q, topk=30)
    assert torch.equal(idx[:, 0], perm)  # the nearest item is the original of every query
    relevant = [{int(p)} for p in perm]
    assert mean_average_precision(idx, relevant) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(5)
    random_rank = [torch.randperm(30, generator=g).tolist() for _ in range(30)]
    assert mean_average_precision(random_rank, relevant) < 0.3


def test_intra_normalisation_makes_each_cluster_block_unit_norm(encoder):
    fmap = _maps(3, 4)
    v = encoder.vlad(fmap, l2=False).view(3, 8, C)
    counts = torch.stack([torch.bincount(a, minlength=8) for a in encoder.assign(fmap)])
    norms = v.norm(dim=-1)
    torch.testing.assert_close(norms[counts > 0], torch.ones(int((counts > 0).sum())))
    assert (norms[counts == 0] == 0).all()
    torch.testing.assert_close(encoder.vlad(fmap).norm(dim=1), torch.ones(3))


def test_residual_aggregation_matches_a_loop(encoder):
    fmap = _maps(1, 6)
    d = local_descriptors(fmap)[0]  # (H*W, C), unit rows
    torch.testing.assert_close(d.norm(dim=1), torch.ones(H * W))
    c = encoder.centroids
    expected = torch.zeros(8, C)
    for x in d:
        j = int(((x - c) ** 2).sum(1).argmin())
        expected[j] += x - c[j]
    torch.testing.assert_close(encoder.residuals(fmap)[0], expected, rtol=1e-5, atol=1e-5)


def test_pca_whitening_whitens_the_training_set():
    torch.manual_seed(0)
    train = _maps(80, 7)
    enc = VLADEncoder(k=4, pca_dim=16, kmeans="torch").fit(train)
    z = (enc.vlad(train) - enc.pca_mean) @ enc.pca_components
    cov = z.T @ z / (z.shape[0] - 1)
    torch.testing.assert_close(cov, torch.eye(16), rtol=0, atol=1e-3)
    with pytest.warns(UserWarning):  # more dims asked than training VLADs can give
        VLADEncoder(k=4, pca_dim=64).fit(_maps(10, 8))


def test_torch_kmeans_finds_separated_clusters():
    torch.manual_seed(0)
    centers = torch.eye(C)[:4] * 5
    pts = centers.repeat_interleave(25, 0) + 0.01 * torch.randn(100, C)
    fmap = pts.T.reshape(1, C, 10, 10)
    enc = VLADEncoder(k=4, pca_dim=None, kmeans="torch").fit(fmap)
    found = torch.cdist(torch.eye(C)[:4], enc.centroids).min(dim=1).values
    assert (found < 0.05).all()
    assert enc.encode(fmap).shape == (1, 4 * C)


def test_average_precision_hand_computed():
    # relevant {1, 0} found at ranks 2 and 4: (1/2 + 2/4) / 2
    assert average_precision([3, 1, 2, 0], {1, 0}) == pytest.approx(0.5)
    assert average_precision([1], {1, 5}) == pytest.approx(0.5)  # 5 never retrieved
    assert mean_average_precision([[0, 1], [0, 1]], [{0}, {1}]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        average_precision([0], set())


def test_frames_through_a_backbone_tap():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    tap = feature_tap(net, "1")  # after the ReLU: (N, 16, 8, 8)
    frames = torch.randn(24, 3, 16, 16)
    maps = extract_feature_maps(frames, tap, batch_size=10)
    assert [m.shape[0] for m in maps] == [10, 10, 4] and maps[0].shape[1:] == (16, 8, 8)
    enc = VLADEncoder(k=8, pca_dim=16, kmeans="torch").fit(maps)
    db = encode_frames(frames, tap, enc)
    q = encode_frames(frames[:6] + 0.02 * torch.randn(6, 3, 16, 16), tap, enc)
    _, idx = search(db, q, topk=1)
    assert idx[:, 0].tolist() == list(range(6))
    vid = video_descriptor(db.view(4, 6, 16))
    assert vid.shape == (4, 16)
    torch.testing.assert_close(vid.norm(dim=1), torch.ones(4))
