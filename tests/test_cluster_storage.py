"""Shared storage: a run folder on an object store. ``vidray train --data s3://... --out s3://...`` and
``vidray eval`` on that run go through the filesystem layer ingest uses (:class:`vidray.io.store.Store`),
tested against moto's S3 server on 127.0.0.1 (a real S3 API, nothing mocked in-process)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1 with buckets ``data`` and ``runs``; ``(fs, env)`` where ``env`` holds
    the AWS_* variables that point pyarrow (and every Ray worker started with them) at it."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="test", secret_key="test",
                           region="us-east-1", allow_bucket_creation=True)  # fmt: skip
    for bucket in ("data", "runs"):
        fs.create_dir(bucket)
    try:
        yield fs, env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def _names(fs, prefix: str) -> list[str]:
    import pyarrow.fs as pafs

    return sorted(i.path[len(prefix) + 1:] for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True,
                                                                                          allow_not_found=True))
                  if i.type == pafs.FileType.File)  # fmt: skip


def test_checkpoints_and_run_files_on_s3(s3):
    """The checkpoint layer on an object store: save, list, resolve, load, prune; local staging files."""
    import torch

    from vidray.io.checkpoint import (
        check_resumable,
        latest_checkpoint,
        list_checkpoints,
        load_checkpoint,
        make_state,
        prune_checkpoints,
        resolve_checkpoint_file,
        save_checkpoint,
    )
    from vidray.io.store import Store, local_copy, local_file

    fs, _ = s3
    run = "s3://runs/unit"
    for e, top1 in ((1, 0.5), (2, 0.9), (3, 0.1)):
        d = f"{run}/checkpoints/epoch_{e:04d}"
        save_checkpoint(d, make_state(model={"w": torch.ones(2) * e}, epoch=e, metrics={"val_top1": top1}))
        Store(d).write_bytes(json.dumps({"val_top1": top1}).encode(), "metrics.json")
    assert [e for e, _ in list_checkpoints(run)] == [1, 2, 3]
    assert latest_checkpoint(run) == f"{run}/checkpoints/epoch_0003"
    assert resolve_checkpoint_file(run) == f"{run}/checkpoints/epoch_0003/checkpoint.pt"
    assert load_checkpoint(f"{run}/checkpoints/epoch_0002")["model"]["w"].tolist() == [2.0, 2.0]
    assert check_resumable(run) == (f"{run}/checkpoints/epoch_0003", 3)
    deleted = prune_checkpoints(run, 1, "val_top1", "max")  # the best (2) and the latest (3) stay
    assert deleted == [f"{run}/checkpoints/epoch_0001"]
    assert [e for e, _ in list_checkpoints(run)] == [2, 3]
    with local_file(f"{run}/eval/x.npz") as p:
        p.write_bytes(b"scores")
        p.with_suffix(".confusion.png").write_bytes(b"png")
    assert "eval/x.npz" in _names(fs, "runs/unit") and "eval/x.confusion.png" in _names(fs, "runs/unit")
    with local_copy(f"{run}/eval/x.npz") as p:
        assert p.read_bytes() == b"scores"
    assert not any(n.endswith(".tmp") for n in _names(fs, "runs/unit"))


def test_remote_run_folder_needs_a_reachable_tracking_store(s3, monkeypatch, capsys):
    """A run on S3 cannot hold MLflow's sqlite store: one line naming --tracking-uri, exit 2, before Ray."""
    from vidray.cli import main as cli_main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rc = cli_main(["train", "--data", "s3://data/none", "--out", "s3://runs/x", "--model", "single_frame"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--tracking-uri" in err[0], err


def _vidray(args: list[str], env: dict, cwd: Path, timeout: float = 900, rc: int = 0) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    full.update(env)
    p = subprocess.run([sys.executable, "-m", "vidray", *args], env=full, cwd=cwd, capture_output=True, text=True,
                       timeout=timeout)  # fmt: skip
    assert p.returncode == rc, (p.stdout + p.stderr)[-4000:]
    return p.stdout


def _last_json(out: str) -> dict:
    return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_train_resume_and_eval_with_data_and_run_on_s3(s3, tmp_path):
    """``vidray ingest/train/eval`` with every path on S3 (each command a process with its own local Ray,
    whose workers inherit the endpoint): the run folder, its checkpoints (Ray Train's storage on S3), the
    final plots and the evaluation scores land on S3; a training whose worker dies in epoch 2 is resumed
    by the same command from the S3 checkpoint of epoch 1; nothing named ``s3:`` appears locally."""
    from mlflow.tracking import MlflowClient

    from vidray.synth import SynthSpec, make_corpus

    fs, env = s3
    manifest = make_corpus(tmp_path / "corpus", SynthSpec(kind="motion", num_videos=24, width=32, height=32,
                                                          frames=8, fps=12, seed=5, splits=(0.5, 0.25, 0.25)))  # fmt: skip
    sets = ["--set", "resize.short_side=32", "--set", "sampling.mode=all", "--set", "output.videos_per_task=6"]
    ing = _last_json(_vidray(["ingest", str(manifest), "--out", "s3://data/d", *sets, "--json"], env, tmp_path))
    assert ing["ok"] == 24

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train = ["train", "--data", "s3://data/d", "--out", "s3://runs/r", "--model", "single_frame", "--workers", "1",
             "--tracking-uri", db, "--json"]
    for s in ("augment.crop_size=24", "sampler.num_frames=4", "batch_size=3", "input.shuffle_buffer=0",
              "tracking.flow_samples=2", "ray.prefetch_batches=1", "ray.cpus_per_worker=0.5", "epochs=2",
              "debug.fail_after_epoch=1"):  # rank 0 dies once (marker file on S3) early in epoch 2
        train += ["--set", s]
    _vidray(train, env, tmp_path, rc=1)
    run_json = json.loads(fs.open_input_stream("runs/r/run.json").read())
    assert run_json["status"] == "FAILED" and _names(fs, "runs/r/checkpoints").count("epoch_0001/checkpoint.pt") == 1
    assert "fault_injected" in _names(fs, "runs/r")
    second = _last_json(_vidray(train, env, tmp_path))  # the same command resumes from the S3 checkpoint
    assert second["status"] == "FINISHED" and second["run_dir"] == "s3://runs/r"
    assert second["resumed_from_epoch"] == 1 and second["checkpoint"] == "s3://runs/r/checkpoints/epoch_0002"
    assert second["mlflow_run_id"] == run_json["mlflow_run_id"]  # the same MLflow run continues
    files = _names(fs, "runs/r")
    for f in ("config.yaml", "run.json", "dataset.json", "checkpoints/epoch_0001/checkpoint.pt",
              "checkpoints/epoch_0002/checkpoint.pt", "final/curves.png", "final/val_scores.npz",
              "final/confusion_matrix.png"):  # fmt: skip
        assert f in files, (f, files)
    assert not [f for f in files if f.endswith(".tmp")]
    run_json = json.loads(fs.open_input_stream("runs/r/run.json").read())
    assert run_json["status"] == "FINISHED" and run_json["data"]["path"] == "s3://data/d"
    client = MlflowClient(db)
    run = client.get_run(second["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss")) == [1, 2]

    ev = _last_json(_vidray(["eval", "s3://runs/r", "--data", "s3://data/d", "--split", "all", "--json"], env,
                            tmp_path))  # fmt: skip
    assert ev["num_videos"] == 24 and ev["epoch"] == 2
    assert ev["scores"] == "s3://runs/r/eval/all-1x1-mean-epoch_0002.npz"
    assert {"eval/all-1x1-mean-epoch_0002.npz", "eval/all-1x1-mean-epoch_0002.confusion.png"} <= set(_names(fs, "runs/r"))
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith("s3:")], "a local folder named after the URI"
