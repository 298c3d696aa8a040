"""Ray Tune sweeps over vidray train (Train V2 inside Tune), MLflow parent/child runs, retries, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from vidray.tune import SweepConfig, build_space, max_concurrent, trial_config, tune_fusion


def test_space_and_resource_rules(tmp_path):
    from ray.tune.search.sample import Categorical, Float

    space = build_space({"optim.lr": {"loguniform": [1e-4, 1e-1]}, "loss.lam": {"choice": [0.0, 0.1]},
                         "sampler.num_frames": {"grid": [4, 8]}})
    assert isinstance(space["optim.lr"], Float) and isinstance(space["loss.lam"], Categorical)
    assert space["sampler.num_frames"] == {"grid_search": [4, 8]}
    with pytest.raises(ValueError, match="unknown distribution"):
        build_space({"optim.lr": {"gaussian": [0, 1]}})
    # 2 CPUs: 0.5 (trial) + 0.5 (worker) per trial, one CPU left for Ray Data -> one trial at a time
    assert max_concurrent(2, SweepConfig()) == 1
    assert max_concurrent(16, SweepConfig(workers=2)) == 10
    (tmp_path / "base.yaml").write_text("epochs: 3\nbatch_size: 4\n")
    sweep = SweepConfig(base="base.yaml", data="d", model="single_frame", overrides=["optim.lr=0.5"])
    cfg, data = trial_config(sweep, tmp_path, {"optim.lr": 0.01, "data": "other"})
    assert (cfg.epochs, cfg.optim.lr, cfg.model.name, data) == (3, 0.01, "single_frame", "other")
    assert cfg.ray.cpus_per_worker == 0.5


def test_fusion_weights_are_tuned_on_saved_scores(ray_local, tmp_path, capsys):
    from vidray.eval.fusion import save_scores

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    rgb = rng.normal(size=(200, 5))
    flow = rng.normal(size=(200, 5))
    rgb[np.arange(200), y] += 1.0  # both streams are weakly right, with independent errors
    flow[np.arange(200), y] += 1.2
    ids = [f"v{i}" for i in range(200)]
    save_scores(tmp_path / "rgb.npz", rgb, y, ids)
    save_scores(tmp_path / "flow.npz", flow[::-1], y[::-1], ids[::-1])  # other order: aligned by id
    res = tune_fusion([str(tmp_path / "rgb.npz"), str(tmp_path / "flow.npz")], num_samples=10)
    assert res["trials"] == 10
    assert res["top1"] > max(res["single_stream_top1"]) + 0.03  # fusion of independent errors helps
    assert 0.3 < res["best"]["w"] < 4.0

    # the same search through the command line: `vidray tune-fusion ... --json` (last line = the result)
    from vidray.cli import main as cli_main

    capsys.readouterr()
    assert cli_main(["tune-fusion", str(tmp_path / "rgb.npz"), str(tmp_path / "flow.npz"), "--samples", "6",
                     "--max-weight", "2.0", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cli["trials"] == 6 and 0.0 <= cli["best"]["w"] <= 2.0
    assert cli["single_stream_top1"] == res["single_stream_top1"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from vidray.synth import make_corpus

    out = tmp_path_factory.mktemp("tune_data")
    manifest = make_corpus(out / "corpus", num_videos=18, width=32, height=32, frames=8, seed=3)
    return out, manifest


@pytest.fixture(scope="module")
def tune_data(ray_local, tiny_data):
    """The tiny corpus ingested once (shared by every trial of every sweep here) and a base TrainConfig."""
    from vidray.config import IngestConfig, load_config
    from vidray.ingest import run_ingest

    out, manifest = tiny_data
    run_ingest(manifest, out / "data", cfg=load_config(IngestConfig, None, [
        "sampling.mode=all", "resize.short_side=32", "output.videos_per_task=9"]))
    (out / "base.yaml").write_text(yaml.safe_dump({
        "epochs": 2, "batch_size": 4, "augment": {"crop_size": 32, "flip_ratio": 0.0, "color_jitter": None},
        "sampler": {"name": "tsn", "num_frames": 2}, "optim": {"name": "adam", "lr": 0.001},
        "checkpoint": {"num_to_keep": 1}, "tracking": {"flow_samples": 0},
    }))
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sweep_asha_mlflow_and_resume(tune_data):
    from mlflow.tracking import MlflowClient

    from vidray.tune import run_sweep

    out = tune_data
    (out / "sweep.yaml").write_text(yaml.safe_dump({
        "base": "base.yaml", "model": "single_frame", "data": str(out / "data"), "num_samples": 1,
        # the second trial diverges (Adam at lr 0.5): ASHA stops it at the first rung, and the third trial
        # must then get the CPUs the stopped trial's Train workers held
        "space": {"optim.lr": {"grid": [1e-3, 0.5, 3e-3]}},
        "metric": "train_loss", "mode": "min",
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
        "max_failures": 1, "name": "t1",
    }))
    # the session's Ray runs its dashboard: Train V2 needs the State API to free the workers of a trial
    # that ASHA stopped, else the second trial waits forever for their CPUs (vidray/runtime.py)
    summary = run_sweep(out / "sweep.yaml", out=out / "sweeps")
    assert summary["trials"] == 3 and summary["errored"] == 0
    assert summary["stopped_early"] >= 1
    import pandas as pd

    df = pd.read_csv(out / "sweeps" / "t1" / "results.csv")
    assert set(df.loc[df["training_iteration"] < 2, "config/optim.lr"]) >= {0.5}  # the diverging one
    assert summary["best_params"]["optim.lr"] != 0.5
    trial_dirs = list((out / "sweeps" / "t1" / "trials").glob("*/train"))
    assert len(trial_dirs) == 3  # each trial's Train V2 run folder lives on the sweep's storage
    assert summary["best_checkpoint"] and Path(summary["best_checkpoint"]).exists()
    assert yaml.safe_load((out / "sweeps" / "t1" / "best_params.yaml").read_text()) == summary["best_params"]

    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    parent = summary["mlflow"]["parent_run_id"]
    children = client.search_runs([summary["mlflow"]["experiment_id"]],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) >= 3
    assert all(r.info.status != "RUNNING" for r in children)
    assert client.get_run(parent).info.status == "FINISHED"
    assert all("train_loss" in r.data.metrics for r in children)  # every trial, the stopped one too

    again = run_sweep(out / "sweep.yaml", out=out / "sweeps", resume=True)  # Tuner.restore
    assert again["trials"] == 3 and again["errored"] == 0
    assert again["mlflow"]["parent_run_id"] == parent
    assert json.loads((out / "sweeps" / "t1" / "summary.json").read_text())["trials"] == 3


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_failing_trial_is_retried(tune_data):
    """A trial whose data is missing at first (a shared filesystem not yet mounted) fails; Tune retries it
    (FailureConfig.max_failures) and the retry, which finds the data, finishes. No MLflow run stays RUNNING."""
    import threading
    import time

    from mlflow.tracking import MlflowClient

    from vidray.tune import run_sweep

    out = tune_data
    late = out / "data_late"
    (out / "retry.yaml").write_text(yaml.safe_dump({
        "base": "base.yaml", "model": "single_frame", "data": str(late), "num_samples": 1,
        "overrides": ["epochs=1"], "metric": "train_loss", "mode": "min", "scheduler": {"name": "fifo"},
        "max_failures": 3, "name": "t2",
    }))
    sweep_dir = out / "sweeps" / "t2"
    done = threading.Event()

    def mount_after_first_failure() -> None:
        while not done.is_set():
            if list(sweep_dir.glob("tune/*/error.txt")):
                late.symlink_to(out / "data", target_is_directory=True)
                return
            time.sleep(0.1)

    t = threading.Thread(target=mount_after_first_failure, daemon=True)
    t.start()
    try:
        summary = run_sweep(out / "retry.yaml", out=out / "sweeps")
    finally:
        done.set()
    assert summary["trials"] == 1 and summary["errored"] == 0
    (err,) = sweep_dir.glob("tune/*/error.txt")
    text = err.read_text()
    assert "Failure # 1" in text and "data_late" in text  # it failed, naming the missing folder ...
    assert summary["best_metric"] is not None  # ... and the retry trained
    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    runs = client.search_runs([summary["mlflow"]["experiment_id"]])
    assert runs and all(r.info.status != "RUNNING" for r in runs)


def test_shipped_sweep_config_resolves_to_valid_trials():
    from vidray.config import load_config
    from vidray.models import model_info

    root = Path(__file__).resolve().parents[1] / "configs"
    sweep = load_config(SweepConfig, root / "sweep_demo.yaml", None)
    assert set(build_space(sweep.space)) == {"optim.lr", "model.kwargs.dropout"}
    cfg, data = trial_config(sweep, root, {"optim.lr": 3e-3, "model.kwargs.dropout": 0.25})
    assert (cfg.optim.lr, cfg.model.kwargs["dropout"], data) == (3e-3, 0.25, "demo/data")
    assert cfg.model.kwargs["backbone"] == "tiny"  # the base recipe's kwargs survive the override
    model_info(cfg.model.name)  # a registered model
