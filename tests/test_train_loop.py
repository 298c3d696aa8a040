"""Training pieces (objective, schedule, freezing, checkpoints) and a local-mode run that is killed and
resumed: MLflow contents, the same schedule after the resume, checkpoints readable with weights_only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_train_data import fast_train_overrides, tiny_dataset

from vidray.config import FreezeConfig, LossConfig, OptimConfig, ScheduleConfig, TrainConfig, load_config
from vidray.io.checkpoint import list_checkpoints, load_checkpoint, make_state, prune_checkpoints, save_checkpoint
from vidray.train.objective import align_flow_target, compute_loss
from vidray.train.optim import apply_phase, build_optimizer, build_scheduler, lr_at_epoch


# ---------------------------------------------------------------------------------- objective
def test_losses_of_the_papers_against_hand_computations():
    g = torch.Generator().manual_seed(0)
    b, t, k = 3, 4, 5
    fl = torch.randn(b, t, k, generator=g)
    label = torch.tensor([1, 4, 0])
    out = {"logits": fl.mean(1), "frame_logits": fl}
    ce = compute_loss(out, label, torch.zeros(b, k), LossConfig(name="ce"))["loss"]
    assert torch.allclose(ce, F.cross_entropy(fl.mean(1), label))
    per = compute_loss(out, label, torch.zeros(b, k), LossConfig(name="per_frame"))["loss"]
    manual = torch.stack([F.cross_entropy(fl[:, i], label) for i in range(t)]).mean()
    assert torch.allclose(per, manual)
    gain = compute_loss(out, label, torch.zeros(b, k), LossConfig(name="gain"))["loss"]
    w = torch.arange(t) / (t - 1)  # g_t = t / (T - 1)
    manual_g = (torch.stack([F.cross_entropy(fl[:, i], label, reduction="none") for i in range(t)], 1) * w).sum(1) / w.sum()
    assert torch.allclose(gain, manual_g.mean())
    y = torch.tensor([[0, 1, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 1, 1, 0]], dtype=torch.float32)
    bce = compute_loss(out, label, y, LossConfig(name="bce"))["loss"]
    assert torch.allclose(bce, F.binary_cross_entropy_with_logits(fl.mean(1), y))


def test_multitask_loss_aligns_pairs_and_resolution():
    b, t, s = 2, 4, 16
    target = torch.randn(b, t, 2, s, s)
    # 3D model: one field per frame at the input size -> EPE against the target itself
    out = {"logits": torch.zeros(b, 3), "flow": target.clone()}
    r = compute_loss(out, torch.tensor([0, 1]), torch.zeros(b, 3), LossConfig(name="multitask", lam=0.5), target)
    assert r["epe"].item() == pytest.approx(0.0, abs=1e-6)
    assert r["loss"].item() == pytest.approx(np.log(3), rel=1e-5)
    # 2F model: T-1 pair fields at H/4: the target is cut to the pairs and resized with its values scaled
    aligned = align_flow_target(torch.zeros(b, t - 1, 2, s // 4, s // 4), torch.full((b, t, 2, s, s), 4.0))
    assert aligned.shape == (b, t - 1, 2, 4, 4) and torch.allclose(aligned, torch.ones_like(aligned))
    with pytest.raises(ValueError, match="fields for"):
        align_flow_target(torch.zeros(b, 2, 2, s, s), target)


# ---------------------------------------------------------------------------------- schedule, freeze
def test_schedules_step_per_epoch():
    o = OptimConfig(lr=0.1)
    step = ScheduleConfig(name="step", milestones=[2, 4], gamma=0.1)
    assert [round(lr_at_epoch(o, step, 6, e), 6) for e in range(6)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    exp = ScheduleConfig(name="exponential", gamma=0.5)
    assert [lr_at_epoch(o, exp, 4, e) for e in range(4)] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    cos = ScheduleConfig(name="cosine", min_lr=0.0)
    assert [lr_at_epoch(o, cos, 4, e) for e in range(4)] == pytest.approx(
        [0.05 * (1 + np.cos(np.pi * e / 4)) for e in range(4)])
    warm = ScheduleConfig(name="step", milestones=[3], gamma=0.1, warmup_epochs=2, warmup_factor=0.1)
    assert [lr_at_epoch(o, warm, 5, e) for e in range(5)] == pytest.approx([0.01, 0.055, 0.1, 0.01, 0.01])


def test_scheduler_state_resumes_the_same_curve():
    o, s = OptimConfig(lr=1.0), ScheduleConfig(name="step", milestones=[2], gamma=0.5)
    p = nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], o)
    sch = build_scheduler(opt, s, 4)
    for _ in range(2):
        opt.step()
        sch.step()
    opt2 = build_optimizer([p], o)
    sch2 = build_scheduler(opt2, s, 4)
    opt2.load_state_dict(opt.state_dict())
    sch2.load_state_dict(sch.state_dict())
    assert opt2.param_groups[0]["lr"] == 0.5
    # the rest of the curve continues from the restored epoch counter (a fresh scheduler would restart it)
    rest, rest2 = [], []
    for o_, s_, out in ((opt, sch, rest), (opt2, sch2, rest2)):
        for _ in range(2):
            o_.step()
            s_.step()
            out.append(o_.param_groups[0]["lr"])
    assert rest2 == rest == [0.5, 0.5]
    assert sch2.last_epoch == sch.last_epoch == 4


def test_two_phase_freezes_then_unfreezes_and_refuses_typos():
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
    model.add_module("head", nn.Linear(4, 2))
    frozen = apply_phase(model, 1, FreezeConfig(epochs=1, prefixes=["backbone."]))
    assert frozen == ["backbone.0.weight", "backbone.0.bias", "backbone.1.weight", "backbone.1.bias"]
    assert all(p.requires_grad for p in model.head.parameters())
    before = model.backbone[0].weight.detach().clone()
    opt = build_optimizer(model.parameters(), OptimConfig(lr=0.1))
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    assert torch.equal(model.backbone[0].weight, before)  # no gradient, no weight decay
    assert apply_phase(model, 2, FreezeConfig(epochs=1, prefixes=["backbone."])) == []
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="match no parameter"):
        apply_phase(model, 1, FreezeConfig(epochs=1, prefixes=["bakcbone."]))


# ---------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_and_retention(tmp_path):
    m = nn.Linear(3, 2)
    for e, score in ((1, 0.5), (2, 0.9), (3, 0.1), (4, 0.2)):
        d = tmp_path / "checkpoints" / f"epoch_{e:04d}"
        save_checkpoint(d, make_state(model=m.state_dict(), epoch=e, metrics={"val_top1": np.float64(score)}))
        (d / "metrics.json").write_text(json.dumps({"val_top1": score}))
        prune_checkpoints(tmp_path, 2, "val_top1", "max")
    # best two (epochs 2, 1) plus always the latest (4)
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1, 2, 4]
    state = load_checkpoint(tmp_path)  # a run folder resolves to its latest checkpoint
    assert state["epoch"] == 4 and isinstance(state["metrics"]["val_top1"], float)
    torch.save({"model": m.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a vidray training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


# ---------------------------------------------------------------------------------- local mode, kill, resume
@pytest.fixture(scope="module")
def data(tmp_path_factory, ray_local):
    return tiny_dataset(tmp_path_factory)


@pytest.mark.timeout(300)
def test_local_mode_run_killed_then_resumed_continues_schedule_and_mlflow_run(data, tmp_path):
    from mlflow.tracking import MlflowClient

    from vidray.train.trainer import run_training

    out = tmp_path / "run"
    over = fast_train_overrides("epochs=3", "debug.fail_after_epoch=1", "debug.fail_mode=raise",
                                "checkpoint.num_to_keep=1")  # fmt: skip
    cfg = load_config(TrainConfig, None, over + ["model.name=late_pooling"])
    with pytest.raises(RuntimeError, match="injected fault in epoch 2"):
        run_training(data, cfg, workers=0, out=out)
    info = json.loads((out / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    assert client.get_run(info["mlflow_run_id"]).info.status == "FAILED"  # never left RUNNING
    assert [e for e, _ in list_checkpoints(out)] == [1]

    r = run_training(data, cfg, workers=0, out=out)  # same command: resumes from epoch_0001
    assert r.status == "FINISHED" and r.resumed_from_epoch == 1 and r.mlflow_run_id == info["mlflow_run_id"]
    run = client.get_run(r.mlflow_run_id)
    assert run.info.status == "FINISHED"
    # the schedule continued: lr per epoch = the uninterrupted step schedule (x0.5 after epoch 1)
    lrs = {m.step: m.value for m in client.get_metric_history(r.mlflow_run_id, "lr")}
    assert lrs == pytest.approx({1: 0.01, 2: 0.005, 3: 0.005})
    assert sorted(m.step for m in client.get_metric_history(r.mlflow_run_id, "train_loss")) == [1, 2, 3]
    assert [m.value for m in client.get_metric_history(r.mlflow_run_id, "resumed_at_epoch")] == [1.0]
    # params: the flattened config and the dataset facts
    p = run.data.params
    assert p["model.name"] == "late_pooling" and p["sampler.num_frames"] == "4" and p["optim.lr"] == "0.01"
    meta = json.loads((data / "dataset.json").read_text())
    assert p["data.manifest_sha256"] == meta["manifest"]["sha256"] and p["data.data_hash"] == meta["data_hash"]
    assert json.loads(p["data.classes"]) == meta["classes"]
    arts = {a.path for d in ("", "plots", "scores") for a in client.list_artifacts(r.mlflow_run_id, d or None)}
    assert {"config.yaml", "dataset.json", "plots/curves.png", "plots/confusion_matrix.png",
            "plots/flow_samples.png", "scores/val_scores.npz"} <= arts  # fmt: skip
    # checkpoints: latest always kept; plain dict loadable with weights_only
    assert 3 in [e for e, _ in list_checkpoints(out)]
    state = torch.load(out / "checkpoints" / "epoch_0003" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3 and state["classes"] == meta["classes"] and len(state["history"]) == 3
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]
    # a different config does not silently reuse the run folder
    with pytest.raises(ValueError, match="other settings"):
        run_training(data, load_config(TrainConfig, None, over + ["model.name=late_pooling", "optim.lr=0.5"]),
                     workers=0, out=out)  # fmt: skip


@pytest.mark.timeout(300)
def test_decode_on_gpu_trains_end_to_end_on_a_cpu_device(data, tmp_path):
    """input.decode_on: gpu wired through the datasets, the train loop's collate and validation: on a CPU
    worker the JPEGs are decoded by the same code (decode_clips on the CPU); the run finishes and validates."""
    from vidray.train.trainer import run_training

    cfg = load_config(TrainConfig, None, fast_train_overrides("epochs=1", "input.decode_on=gpu")
                      + ["model.name=late_pooling"])  # fmt: skip
    r = run_training(data, cfg, workers=0, out=tmp_path / "run")
    assert r.status == "FINISHED"
    assert np.isfinite(r.metrics["train_loss"]) and "val_top1" in r.metrics
