"""The local Ray that a `vidray` command starts for itself (vidray/runtime.py): every socket on 127.0.0.1,
nothing left after the command is SIGKILLed; Ctrl-C during training: KILLED, one line, rc 130, and the
same command resumes from the epoch it announces, each MLflow step once; a quiet console."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train_data import fast_train_overrides, tiny_dataset

from vidray.runtime import _stat, descendants, listening_sockets

LOOPBACK = {"127.0.0.1", "::1"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.pop("VIDRAY_LOCAL_RAY_ADDRESS", None)
    return env


def _wait(pred, timeout: float, every: float = 0.5):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    return None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from vidray.synth import make_corpus

    # TV-L1 flow keeps the ingest busy for a while (about a second per video on 2 quiet cores): enough videos that
    # the run is still going when the test kills it, even on an idle machine (it never runs to the end)
    return make_corpus(tmp_path_factory.mktemp("rt") / "c", num_videos=60, width=64, height=64, frames=24, seed=5)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_local_ingest_listens_on_loopback_only_and_leaves_nothing_when_killed(corpus, tmp_path):
    out = tmp_path / "data"
    p = subprocess.Popen([sys.executable, "-m", "vidray", "ingest", str(corpus), "--out", str(out), "--set",
                          "flow.enabled=true", "--set", "flow.algorithm=tvl1", "--set", "output.videos_per_task=1",
                          "--set", "output.target_part_mb=0"],
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        # wait until Ray is up and tasks run (a raylet and at least one worker below the driver)
        procs = _wait(lambda: (d := descendants(p.pid)) and len(d) >= 6 and
                      any(b"raylet" in Path(f"/proc/{q}/cmdline").read_bytes() for q in d if Path(f"/proc/{q}").exists())
                      and d, 180)  # fmt: skip
        assert procs, "the local Ray did not start"
        _wait(lambda: (out / "status").is_dir() and list((out / "status").glob("part-*")), 120)
        seen: dict[int, int] = {}
        socks = []
        for _ in range(3):  # sample a few times while the ingest runs
            d = descendants(p.pid)
            seen.update(d)
            socks += listening_sockets([p.pid, *d])
            time.sleep(1)
        assert len(socks) >= 4, socks  # GCS, raylet, object manager, dashboard, agents...
        wild = [s for s in socks if s[1] not in LOOPBACK]
        assert wild == [], f"listening on more than loopback: {wild}"
        assert p.poll() is None, "the ingest finished before it could be killed: make it longer"
        os.kill(p.pid, signal.SIGKILL)  # the driver only, as a crash or the OOM killer would
        p.wait(timeout=30)
        alive = lambda: [q for q, start in seen.items() if (st := _stat(q)) is not None and st[1] == start]  # noqa: E731
        left = _wait(lambda: not alive(), 20) or alive()
        assert left is True or left == [], f"Ray processes outlived the driver: {left}"
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def data(tmp_path_factory, ray_local):
    return tiny_dataset(tmp_path_factory)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_marks_the_run_killed_and_the_same_command_resumes_where_it_says(data, tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "vidray", "train", "--data", str(data), "--model", "late_pooling", "--workers", "1",
            "--out", str(out)]  # fmt: skip
    for s in fast_train_overrides("epochs=4", "checkpoint.num_to_keep=4"):
        argv += ["--set", s]
    p = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait(lambda: (out / "checkpoints" / "epoch_0001" / "checkpoint.pt").is_file() or p.poll() is not None,
                 300), "no first checkpoint"  # fmt: skip
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)  # Ctrl-C
    stdout, stderr = p.communicate(timeout=180)
    assert p.returncode == 130, (p.returncode, stderr[-3000:])
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "resume" in lines[0], stderr
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "KILLED"
    client = MlflowClient(info["tracking_uri"])
    assert client.get_run(info["mlflow_run_id"]).info.status == "KILLED"
    assert (out / "vidray.log").is_file() and "logs of Ray and MLflow" in stdout

    # the same command resumes after the NEWEST complete epoch (the one it announces), and every MLflow step once
    from vidray.io.checkpoint import latest_epoch

    done = latest_epoch(out)
    r = subprocess.run(argv + ["--json"], env=_env(), capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["resumed_from_epoch"] == done >= 1 and res["status"] == "FINISHED"
    steps = [m.step for m in client.get_metric_history(info["mlflow_run_id"], "train_loss")]
    assert sorted(steps) == [1, 2, 3, 4], steps
    hist = [m.value for m in client.get_metric_history(info["mlflow_run_id"], "resumed_at_epoch")]
    assert hist == [float(done)]
    # a quiet console: no Ray internals among the lines
    noisy = [ln for ln in r.stdout.splitlines() if any(x in ln for x in ("TrainingReport", "(RayTrainWorker",
                                                                          "streaming_executor", "core_worker"))]
    assert noisy == []


def test_resume_point_takes_the_newest_complete_epoch(tmp_path):
    """Ray Train's own record can lag the run folder (a Ctrl-C while workers still wrote epochs): the
    worker resumes from the newest complete checkpoint, the one the driver announces."""
    from ray.train import Checkpoint

    from vidray.io.checkpoint import make_state, save_checkpoint
    from vidray.train.loop import _resume_point

    for e in (1, 2, 3):
        save_checkpoint(tmp_path / "checkpoints" / f"epoch_{e:04d}", make_state(epoch=e))
    ray_ck = Checkpoint(str(tmp_path / "checkpoints" / "epoch_0001"))
    assert Path(_resume_point(ray_ck, tmp_path, None).path).name == "epoch_0003"
    assert Path(_resume_point(None, tmp_path / "nothing", str(tmp_path / "checkpoints" / "epoch_0002")).path).name \
        == "epoch_0002"
    assert _resume_point(None, tmp_path / "nothing", None) is None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_12_video_ingest_and_2_epoch_training_print_under_30_lines(tmp_path):
    """The console of a small run: vidray's own lines (a progress line or bar per stage, a summary),
    none of Ray's; Ray's and MLflow's output is in the log files whose paths are printed."""
    env = _env()
    run = lambda *a: subprocess.run([sys.executable, "-m", "vidray", *a], env=env, capture_output=True, text=True,
                                    timeout=400)  # noqa: E731
    steps = [
        run("synth", "--out", str(tmp_path / "c"), "--videos", "12", "--size", "32x32", "--frames", "8"),
        run("ingest", str(tmp_path / "c" / "manifest.csv"), "--out", str(tmp_path / "d"),
            "--set", "resize.short_side=32", "--set", "sampling.mode=all"),
        run("train", "--data", str(tmp_path / "d"), "--model", "single_frame", "--workers", "1", "--out",
            str(tmp_path / "r"), *sum((["--set", s] for s in fast_train_overrides("input.val_split=test")), [])),
    ]  # fmt: skip
    for p in steps:
        assert p.returncode == 0, p.stderr[-3000:]
    lines = [ln for p in steps for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    assert len(lines) <= 30, "\n".join(lines)
    ray_lines = [ln for ln in lines if any(x in ln for x in ("ray::", "(RayTrainWorker", "TrainingReport",
                                                              "streaming_executor", "core_worker", "Checkpoint "
                                                              "successfully", "RayDeprecationWarning", "pid="))]
    assert ray_lines == [], ray_lines
    assert (tmp_path / "d" / "vidray.log").stat().st_size > 0 and (tmp_path / "r" / "vidray.log").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_workers_on_two_cpus_are_sized_to_fit_instead_of_hanging(data, tmp_path):
    """`--workers 2` with the default 1 CPU per worker on a 2-CPU Ray: the workers took both CPUs and Ray
    Data's read tasks never started (hung forever). They are now sized to leave Ray Data one CPU."""
    from vidray.config import TrainConfig, load_config
    from vidray.train.trainer import run_training

    cfg = load_config(TrainConfig, None, fast_train_overrides("epochs=1", "model.name=single_frame"))
    assert cfg.ray.cpus_per_worker == 1.0
    r = run_training(data, cfg, workers=2, out=tmp_path / "run")
    assert r.status == "FINISHED" and r.metrics["world_size"] == 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_second_command_in_the_same_process_starts_its_own_local_ray(tmp_path):
    """The first command's local Ray is shut down when it ends; the address it exported must not send the
    second command's init_ray to a dead GCS (it hung there: benchmarks run several commands in one process)."""
    code = f"""
import os, ray
from vidray.console import session
from vidray.runtime import init_ray
seen = []
for i in range(2):
    with session({str(tmp_path)!r} + f"/log{{i}}.txt"):
        init_ray(num_cpus=1, dashboard=False)
        seen.append(ray.get_runtime_context().gcs_address)
        assert os.environ["RAY_ADDRESS"] == seen[-1]
    assert not ray.is_initialized() and "RAY_ADDRESS" not in os.environ
print("GCS", *seen)
"""
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    first, second = r.stdout.split("GCS")[-1].split()
    assert first != second

