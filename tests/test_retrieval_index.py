"""Retrieval without Ray: exact vs faiss indexes, near-duplicate grouping, encoder save/load, the
feature network (taps, seeded random init, a backbone read from a vidray training checkpoint)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from vidray.retrieval import GlobalEncoder, VLADEncoder, encoder_from_state
from vidray.retrieval.index import ExactIndex, FaissIndex, build_index, resolve_kind
from vidray.retrieval.query import connected_components, find_duplicates

faiss = pytest.importorskip("faiss")


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_and_faiss_flat_agree():
    x, q = _unit(500, 32, 0), _unit(40, 32, 1)
    es, ei = ExactIndex(x).search(q, 10)
    fs, fi = FaissIndex(x, "flat").search(q, 10)
    np.testing.assert_allclose(es, fs, atol=1e-5)
    assert (ei == fi).mean() > 0.99  # equal up to float ties
    ref = q @ x.T  # the reference: a plain matrix product
    np.testing.assert_array_equal(ei[:, 0], ref.argmax(axis=1))
    np.testing.assert_allclose(es[:, 0], ref.max(axis=1), atol=1e-6)


def test_approximate_indexes_find_the_exact_neighbours():
    x = _unit(3000, 16, 2)
    q = x[:50] + 0.01 * _unit(50, 16, 3)
    _, exact = ExactIndex(x).search(q, 5)
    ivf = FaissIndex(x, "ivf", nlist=16, nprobe=16)  # every cell visited: exact
    _, got = ivf.search(q, 5)
    assert (got == exact).mean() > 0.99
    _, got = FaissIndex(x, "hnsw", ef_search=64).search(q, 5)
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(got, exact)]) > 0.9
    assert (got[:, 0] == np.arange(50)).all()


def test_fewer_vectors_than_k_are_padded():
    x = _unit(3, 8, 4)
    for kind in ("exact", "flat"):
        s, i = build_index(x, kind).search(x[:2], 5)
        assert i.shape == (2, 5) and (i[:, 3:] == -1).all() and np.isneginf(s[:, 3:]).all()
        assert (i[:, 0] == [0, 1]).all()


def test_index_kind_resolution():
    assert resolve_kind("auto", 10) == "flat"
    assert resolve_kind("auto", 10_000_000) == "ivf"
    assert resolve_kind("exact", 10) == "exact"
    with pytest.raises(ValueError, match="unknown index kind"):
        resolve_kind("annoy", 10)


def test_connected_components_and_cross_split_groups():
    assert connected_components(5, [(0, 1), (3, 4), (1, 0)]) == [[0, 1], [3, 4]]
    e = np.eye(4, dtype=np.float32)
    # a: two copies of e0 (train + test: leakage), b: e1 and a near copy, both train; c: alone
    x = np.stack([e[0], e[0], e[1], 0.95 * e[1] + 0.31 * e[2], e[3]])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = ["a1", "a2", "b1", "b2", "c"]
    splits = ["train", "test", "train", "train", "val"]
    r = find_duplicates(ids, splits, x, 0.9, index="exact")
    assert r.groups == [["a1", "a2"], ["b1", "b2"]]
    assert r.cross_split == [["a1", "a2"]]
    assert find_duplicates(ids, splits, x, 0.99, index="exact").groups == [["a1", "a2"]]
    assert find_duplicates(ids, splits, x, 0.9, index="flat").to_json() == r.to_json()
    with pytest.raises(ValueError, match="threshold"):
        find_duplicates(ids, splits, x, 1.5)


def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_encoders_survive_npz_without_pickle():
    g = torch.Generator().manual_seed(0)
    maps = torch.relu(torch.randn(30, 8, 5, 5, generator=g))
    for enc in (VLADEncoder(k=4, pca_dim=12, kmeans="lloyd").fit(maps), GlobalEncoder("gap", pca_dim=6).fit(maps)):
        back = encoder_from_state(_roundtrip(enc.state()))
        assert type(back) is type(enc) and back.out_dim == enc.out_dim
        torch.testing.assert_close(back.encode(maps), enc.encode(maps))
    fc = GlobalEncoder("fc", pca_dim=None).fit(torch.randn(10, 7, generator=g))
    assert fc.encode(torch.randn(3, 7, generator=g)).shape == (3, 7)


def test_sklearn_lloyd_is_the_old_torch_kmeans():
    assert VLADEncoder(k=4, kmeans="torch").kmeans == "lloyd"
    with pytest.raises(ValueError):
        VLADEncoder(k=4, kmeans="faiss")


def test_taps_are_checked_and_random_init_is_seeded():
    from vidray.config import load_config
    from vidray.retrieval.config import EmbedConfig
    from vidray.retrieval.features import FrameDescriber, feature_tap_name

    cfg = load_config(EmbedConfig, None, ["model.name=tiny", "model.layer=conv3", "input.short_side=32"])
    assert feature_tap_name(cfg, "tiny") == "conv3"
    with pytest.raises(ValueError, match="model.layer='fc7'.*needs a conv tap"):
        feature_tap_name(cfg.model_copy(update={"model": cfg.model.model_copy(update={"layer": "fc7"})}), "tiny")
    fc = load_config(EmbedConfig, None, ["model.name=resnet18", "descriptor.kind=fc"])
    assert feature_tap_name(fc, "resnet18") == "pool"  # no fc7 in a ResNet
    with pytest.raises(ValueError, match="model.layer='nope' is not a tap of tiny"):
        feature_tap_name(load_config(EmbedConfig, None, ["model.name=tiny", "model.layer=nope"]), "tiny")
    a, b = FrameDescriber(cfg), FrameDescriber(cfg)
    other = FrameDescriber(load_config(EmbedConfig, None, ["model.name=tiny", "model.layer=conv3", "model.seed=1"]))
    assert a.fingerprint == b.fingerprint != other.fingerprint
    frames = np.random.default_rng(0).integers(0, 255, (3, 40, 48, 3), dtype=np.uint8)
    assert a.preprocess(frames).shape == (3, 3, 32, 38)  # short side 32, aspect kept
    torch.testing.assert_close(a.features(frames), b.features(frames))


def test_backbone_from_a_vidray_training_checkpoint(tmp_path):
    from vidray.config import load_config
    from vidray.models import create_model
    from vidray.retrieval.config import EmbedConfig
    from vidray.retrieval.features import FrameDescriber

    torch.manual_seed(3)
    model = create_model("single_frame", num_classes=5, backbone="tiny")  # cut at pool4
    state = {"format": "vidray-train-checkpoint", "version": 1, "model": model.state_dict(), "in_channels": 3,
             "model_name": "single_frame", "config": {"model": {"name": "single_frame", "kwargs": {"backbone": "tiny"}}}}
    ckpt = tmp_path / "run" / "checkpoints" / "epoch_0002" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save(state, ckpt)
    cfg = load_config(EmbedConfig, None, [f"model.checkpoint={tmp_path / 'run'}", "model.name=resnet50",
                                          "model.layer=conv3"])
    d = FrameDescriber(cfg)  # the run folder resolves to its latest checkpoint; name comes from it
    assert d.backbone.name == "tiny"
    w = dict(d.backbone.named_parameters())["body.features.6.weight"]
    torch.testing.assert_close(w, model.state_dict()["backbone.body.features.6.weight"])
    fc = cfg.model_copy(update={"descriptor": cfg.descriptor.model_copy(update={"kind": "fc"})})
    with pytest.raises(ValueError, match="cut before tap 'fc7'"):
        FrameDescriber(fc)
    with pytest.raises(FileNotFoundError, match="model.checkpoint"):
        FrameDescriber(load_config(EmbedConfig, None, [f"model.checkpoint={tmp_path / 'none'}"]))


def test_descriptor_and_index_kinds_are_registry_tables():
    from vidray.config import load_config
    from vidray.registry import DESCRIPTORS, INDEXES
    from vidray.retrieval.config import EmbedConfig
    from vidray.retrieval.features import make_encoder

    assert DESCRIPTORS.names() == ["vlad", "gap", "fc"] and INDEXES.names() == ["exact", "flat", "ivf", "hnsw"]
    assert isinstance(make_encoder(load_config(EmbedConfig, None, ["descriptor.kind=gap"])), GlobalEncoder)
    assert isinstance(make_encoder(load_config(EmbedConfig, None, [])), VLADEncoder)
    with pytest.raises(ValueError, match="vlad, gap, fc"):
        load_config(EmbedConfig, None, ["descriptor.kind=netvlad"])
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # unit vectors: inner product = cosine
    assert build_index(x, "exact").search(x[:2], 1)[1][:, 0].tolist() == [0, 1]
