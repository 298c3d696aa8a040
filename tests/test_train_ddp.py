"""A 2-worker DDP run (gloo, workers at 0.5 CPU) whose rank 0 process is killed with ``os._exit`` in
epoch 2: Ray Train restarts the worker group, both ranks resume from epoch 1's checkpoint, the run
finishes and MLflow holds one FINISHED run with every epoch once."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_data import fast_train_overrides, tiny_dataset

from vidray.cli import main as cli_main
from vidray.io.checkpoint import list_checkpoints, load_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory, ray_local):
    return tiny_dataset(tmp_path_factory)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_worker_ddp_run_survives_a_killed_rank(data, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "ddp"
    sets = fast_train_overrides("epochs=2", "ray.cpus_per_worker=0.5", "ray.max_failures=1", "debug.fail_after_epoch=1")
    argv = ["train", "--data", str(data), "--model", "late_pooling", "--workers", "2", "--out", str(out), "--json"]
    for s in sets:
        argv += ["--set", s]
    assert cli_main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "FINISHED" and result["metrics"]["world_size"] == 2
    assert (out / "fault_injected").is_file()  # rank 0 really died once

    state = load_checkpoint(out)
    assert state["epoch"] == 2 and [h["world_size"] for h in state["history"]] == [2, 2]
    assert not any(k.startswith("module.") for k in state["model"])  # the bare model, not the DDP wrapper
    assert [e for e, _ in list_checkpoints(out)] == [1, 2]
    assert (out / "checkpoints" / "checkpoint_manager_snapshot.json").is_file()  # Ray Train's own record

    client = MlflowClient(result["tracking_uri"])
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss")) == [1, 2]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "resumed_at_epoch")] == [1.0]
    assert run.data.metrics["val_videos"] == 6  # each val video scored once, across the two ranks
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "scores")}
    assert arts == {"scores/val_scores.npz"}
    # both ranks trained the same model: a checkpoint loads into a fresh one with weights_only
    sd = torch.load(out / "checkpoints" / "epoch_0002" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
