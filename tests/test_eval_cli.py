"""``vidray eval`` / ``vidray fuse`` on a real ingested split: the JSON line, the score files, and the
metrics recomputed by hand from the saved scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_data import tiny_dataset

from vidray.cli import main as cli_main
from vidray.config import TrainConfig, load_config
from vidray.io.checkpoint import make_state, save_checkpoint
from vidray.recipe import resolve_config


@pytest.fixture(scope="module")
def data(tmp_path_factory, ray_local):
    return tiny_dataset(tmp_path_factory)


def _checkpoint(data: Path, out: Path, model: str, *sets: str) -> Path:
    """A vidray checkpoint of a freshly initialised model (evaluation does not care how it was trained)."""
    from vidray.io.reader import IngestDataset
    from vidray.recipe import build_model

    ds = IngestDataset(data)
    cfg = resolve_config(load_config(TrainConfig, None, [f"model.name={model}", *sets]), ds.meta)
    torch.manual_seed(0)
    m = build_model(cfg, len(ds.classes), 3)
    state = make_state(model=m.state_dict(), optimizer={}, scheduler={}, scaler=None, epoch=1,
                       config=cfg.model_dump(mode="json"), model_name=model, num_classes=len(ds.classes),
                       in_channels=3, classes=ds.classes, data={}, metrics={}, history=[])  # fmt: skip
    return save_checkpoint(out / "checkpoints" / "epoch_0001", state)


def _run(capsys, argv: list[str]) -> dict:
    assert cli_main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    return json.loads(last)


def _labels(data: Path, ids: np.ndarray) -> np.ndarray:
    meta = json.loads((data / "dataset.json").read_text())
    return np.array([meta["classes"].index(v.rsplit("_", 1)[0]) for v in ids])


def test_eval_json_scores_and_metrics_by_hand(data, tmp_path, capsys):
    ck = _checkpoint(data, tmp_path / "run", "late_pooling", "augment.crop_size=24", "sampler.num_frames=4")
    res = _run(capsys, ["eval", str(tmp_path / "run"), "--data", str(data), "--split", "test", "--clips", "2",
                        "--crops", "10", "--json"])  # fmt: skip
    assert res["num_videos"] == 6 and res["clips"] == 2 and res["crops"] == 10 and res["level"] == "clip"
    assert res["checkpoint"] == str(ck) and res["aggregate"] == "mean"
    z = np.load(res["scores"], allow_pickle=False)
    scores, labels, ids = z["scores"], z["labels"], z["video_ids"]
    assert scores.shape == (6, 6) and np.allclose(scores.sum(1), 1.0)  # mean of softmax over clips
    assert np.array_equal(labels, _labels(data, ids))  # aligned by video id
    pred = scores.argmax(1)
    assert res["top1"] == pytest.approx(np.mean(pred == labels))
    assert res["video_hit_at_1"] == pytest.approx(res["top1"])
    top5 = np.argsort(-scores, 1, kind="stable")[:, :5]
    assert res["top5"] == pytest.approx(np.mean([labels[i] in top5[i] for i in range(6)]))
    recalls = [np.mean(pred[labels == c] == c) for c in np.unique(labels)]
    assert res["mean_class_accuracy"] == pytest.approx(np.mean(recalls))
    assert 0.0 <= res["clip_hit_at_1"] <= 1.0 and "mAP" in res
    assert Path(res["scores"]).with_suffix(".confusion.png").is_file()


def test_per_frame_models_aggregate_frame_scores(data, tmp_path, capsys):
    _checkpoint(data, tmp_path / "lstm", "lstm", "augment.crop_size=32", "sampler.num_frames=4",
                "sampler.name=sequential", "loss.name=gain")  # fmt: skip
    base = ["eval", str(tmp_path / "lstm"), "--data", str(data), "--split", "val", "--json"]
    w = _run(capsys, base + ["--out", str(tmp_path / "w.npz")])
    assert w["aggregate"] == "weighted" and w["level"] == "frame"  # the gain loss's paper aggregation
    assert np.allclose(np.load(w["scores"])["scores"].sum(1), 1.0)
    lm = _run(capsys, base + ["--aggregate", "logmean", "--out", str(tmp_path / "l.npz")])
    assert lm["aggregate"] == "logmean" and (np.load(lm["scores"])["scores"] <= 0).all()  # mean log-probs
    clip = _run(capsys, base + ["--level", "clip", "--aggregate", "max", "--out", str(tmp_path / "c.npz")])
    assert clip["level"] == "clip"


def test_fuse_weighted_l1_matches_hand_fusion(data, tmp_path, capsys):
    _checkpoint(data, tmp_path / "a", "late_pooling", "augment.crop_size=24", "sampler.num_frames=4")
    _checkpoint(data, tmp_path / "b", "single_frame", "augment.crop_size=32", "sampler.num_frames=2")
    a = _run(capsys, ["eval", str(tmp_path / "a"), "--data", str(data), "--activation", "none", "--out",
                      str(tmp_path / "a.npz"), "--json"])  # fmt: skip
    b = _run(capsys, ["eval", str(tmp_path / "b"), "--data", str(data), "--activation", "none", "--crops", "3",
                      "--out", str(tmp_path / "b.npz"), "--json"])  # fmt: skip
    res = _run(capsys, ["fuse", a["scores"], b["scores"], "--weights", "1,1.5", "--l1-norm", "--out",
                        str(tmp_path / "f.npz"), "--json"])  # fmt: skip
    za, zb = np.load(a["scores"]), np.load(b["scores"])
    pos = {v: i for i, v in enumerate(zb["video_ids"])}
    sb = zb["scores"][[pos[v] for v in za["video_ids"]]]
    l1 = lambda s: s / np.abs(s).sum(1, keepdims=True)  # noqa: E731
    fused = l1(za["scores"]) + 1.5 * l1(sb)
    assert res["top1"] == pytest.approx(np.mean(fused.argmax(1) == za["labels"]))
    assert np.allclose(np.load(res["scores"])["scores"], fused)
    assert res["weights"] == [1.0, 1.5] and res["stream0_top1"] == pytest.approx(a["top1"])


def test_fuse_refuses_files_of_other_videos(data, tmp_path, capsys):
    from vidray.eval.fusion import save_scores

    save_scores(tmp_path / "x.npz", np.eye(3), np.arange(3), ["a", "b", "c"])
    save_scores(tmp_path / "y.npz", np.eye(3), np.arange(3), ["a", "b", "d"])
    assert cli_main(["fuse", str(tmp_path / "x.npz"), str(tmp_path / "y.npz")]) == 2
    assert "video ids differ" in capsys.readouterr().err
