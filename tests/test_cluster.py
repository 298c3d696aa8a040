"""vidray on a real multi-node Ray (``scripts/local_cluster.py``): placement by node type, and a node
lost in the middle of an ingest, of a DDP training and of a sweep.

One cluster for the module: a head with 0 CPUs, two ingest nodes (1 CPU) and two train nodes (2 CPUs,
``gpu_standin: 1`` each, the custom resource that stands in for one GPU). Every ``vidray`` command runs
as a driver subprocess on the head (``RAY_ADDRESS``). The nodes run with ``VIDRAY_PLACEMENT_LOG`` set, so
every ingest task, Train worker, Train data task and Tune trial records the node id Ray's runtime context
gives it (:func:`vidray.runtime.trace_placement`); each test takes the records written while its command
ran and asserts the node TYPE of every one (dead nodes included). (Set on the nodes rather than in each
job's runtime env: Ray then reuses its idle workers across the module's jobs.) Nodes are lost with SIGKILL to their process group
and worker pids; the harness starts a replacement as the autoscaler would. Each test prints one
``REPORT {...}`` line with its figures (``pytest -s``); docs/cluster.md quotes them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from local_cluster import LocalCluster, start_cluster  # noqa: E402

pytestmark = pytest.mark.slow

VIDEOS = 240  # 60 ingest tasks of 4 videos
# target_part_mb=0: one committed part per task, so "half of the parts committed" is observable mid-run
INGEST_SETS = ["resize.short_side=32", "sampling.mode=all", "output.videos_per_task=4", "output.target_part_mb=0"]
TRAIN_SETS = ["augment.crop_size=24", "sampler.num_frames=4", "batch_size=8", "input.shuffle_buffer=0",
              "tracking.flow_samples=0", "ray.prefetch_batches=1", "ray.worker_resources.gpu_standin=1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    placement = tmp_path_factory.mktemp("cluster_placement")
    c = start_cluster(ingest=2, train=2, ingest_cpus=1, train_cpus=2, timeout=300, retries=4,
                      env={"VIDRAY_PLACEMENT_LOG": str(placement)})  # fmt: skip
    c.placement = placement  # type: ignore[attr-defined]
    c.next_name = Counter({"ingest": 2, "train": 2})  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        c.stop(remove=os.environ.get("VIDRAY_KEEP_CLUSTER_LOGS") != "1")
        assert c.leftover_pids() == [], "cluster processes left behind"


def _replace(c: LocalCluster, role: str) -> tuple[str, float]:
    """Start a replacement node of ``role`` (as the autoscaler would); returns its name and start time."""
    c.next_name[role] += 1  # type: ignore[attr-defined]
    name = f"{role}-{c.next_name[role]}"  # type: ignore[attr-defined]
    t0 = time.monotonic()
    c.add_node(name, role, num_cpus=1 if role == "ingest" else 2, timeout=300, retries=4)
    return name, time.monotonic() - t0


class _Command:
    """A ``vidray`` driver subprocess, with its start and end times (a thread waits for it)."""

    def __init__(self, c: LocalCluster, args: list[str], log: Path):
        env = c.driver_env()
        env.pop("MLFLOW_TRACKING_URI", None)
        # Train V2 passes RAY_TRAIN_* on to its controller: a faster health check, and a worker group that
        # cannot start (its node lost, the replacement not up yet) is retried after 30 s instead of 60 s
        env.update(RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.5", RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="30")
        self.log, self.t0, self.ended = log, time.time(), None
        self.proc = subprocess.Popen([sys.executable, "-m", "vidray", *args], env=env, stdout=open(log, "w"),
                                     stderr=subprocess.STDOUT, cwd=log.parent)  # fmt: skip
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        self.proc.wait()
        self.ended = time.time()

    def poll(self) -> int | None:
        return self.proc.poll()

    @property
    def wall_s(self) -> float:
        return (self.ended or time.time()) - self.t0

    def records(self, c: LocalCluster, *kinds: str) -> list[dict]:
        """Placement records of ``kinds`` written while this command ran."""
        until = self.ended or time.time()
        return [r for k in kinds for r in _records(c.placement, k) if self.t0 <= r["t"] <= until + 1]  # type: ignore[attr-defined]


def _vidray(c: LocalCluster, args: list[str], log: Path) -> _Command:
    """``vidray ARGS`` as a driver of the cluster (on the head, like a ``ray job submit`` entrypoint)."""
    return _Command(c, args, log)


def _finish(cmd: _Command, log: Path, timeout: float) -> str:
    p = cmd.proc
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError(f"vidray timed out after {timeout} s:\n{log.read_text()[-4000:]}") from None
    out = log.read_text()
    assert p.returncode == 0, out[-4000:]
    return out


def _records(folder: Path, kind: str) -> list[dict]:
    """Placement records of ``kind`` (vidray.runtime.trace_placement), oldest first."""
    return sorted((json.loads(f.read_text()) for f in folder.glob(f"{kind}-*.json")), key=lambda r: r["t"])


def _assert_on(c: LocalCluster, recs: list[dict], role: str) -> dict[str, int]:
    """Every record on a node of ``role``; returns the records per node name."""
    roles, names = c.roles_by_id(), c.names_by_id()
    assert recs, f"no placement records (expected some on {role} nodes)"
    wrong = [(r["kind"], names.get(r["node_id"], r["node_id"])) for r in recs if roles.get(r["node_id"]) != role]
    assert not wrong, f"ran outside the {role} nodes: {wrong}"
    return dict(Counter(names[r["node_id"]] for r in recs))


def _json_tail(out: str) -> dict:
    return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])


def test_every_node_listens_on_loopback_only(cluster):
    """The harness's nodes (GCS, raylets, object managers, agents, dashboard, workers) bind 127.0.0.1 only."""
    from local_cluster import descendants

    from vidray.runtime import listening_sockets

    pids = sorted({p for n in cluster.nodes.values() if not n.killed for p in [*n.pids(), *descendants(n.proc.pid)]})
    socks = listening_sockets(pids)
    assert len({pid for pid, _, _ in socks}) >= 2 * len(cluster.nodes)  # raylet + agents of every node at least
    assert {ip for _, ip, _ in socks} == {"127.0.0.1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from vidray.synth import SynthSpec, make_corpus

    spec = SynthSpec(kind="motion", num_videos=VIDEOS, width=32, height=32, frames=8, fps=12, seed=11)
    return make_corpus(tmp_path_factory.mktemp("cluster_corpus"), spec)


def _check_ingest(out: Path, manifest: Path) -> dict[str, int]:
    """Every manifest row once in the status table, every good video ``ok`` with exactly one clip row,
    no temporary or orphan file. Returns counts."""
    import csv

    from vidray.io.dataset import clip_files, load_status, read_status

    ids = [r["video_id"] for r in csv.DictReader(open(manifest))]
    status = read_status(out).to_pylist()
    per_id = Counter(r["video_id"] for r in status)
    assert sorted(per_id) == sorted(ids) and set(per_id.values()) == {1}, "status rows != manifest rows, once each"
    assert Counter(r["status"] for r in status) == {"ok": len(ids)}, [r for r in status if r["status"] != "ok"][:3]
    clips = pq.read_table(clip_files(out), columns=["video_id", "chunk_index"]).to_pylist()
    keys = Counter((r["video_id"], r["chunk_index"]) for r in clips)
    assert len(keys) == len(clips), f"duplicate clip rows: {[k for k, n in keys.items() if n > 1][:3]}"
    assert {v for v, _ in keys} == set(ids)
    names = [p.name for p in out.rglob("*")]
    assert not [n for n in names if n.endswith(".tmp")], "temporary files left"
    view = load_status(out, check_clips=True)
    assert not view.orphans() and not view.damaged, (view.orphans(), view.damaged)  # every clips part committed
    assert sorted(f"clips/{n}" for n in view.clips) == view.clip_parts()
    return {"status_rows": len(status), "clip_rows": len(clips), "duplicates": len(clips) - len(keys)}


@pytest.fixture(scope="module")
def dataset(cluster, corpus, tmp_path_factory) -> dict:
    """The fault-free ingest (the baseline of the node-lost test, and the data of the training tests)."""
    work = tmp_path_factory.mktemp("cluster_ingest_base")
    out = work / "data"
    args = ["ingest", str(corpus), "--out", str(out), "--json"]
    for s in INGEST_SETS:
        args += ["--set", s]
    cmd = _vidray(cluster, args, work / "ingest.log")
    summary = _json_tail(_finish(cmd, work / "ingest.log", 900))
    return {"out": out, "wall_s": cmd.wall_s, "summary": summary,
            "records": cmd.records(cluster, "ingest_task", "ingest_write")}  # fmt: skip


@pytest.mark.timeout(1800)
def test_ingest_survives_a_lost_ingest_node(cluster, corpus, dataset, tmp_path):
    """Ingest tasks only on ingest nodes; SIGKILL one ingest node's process group and workers with about
    half of the parts committed, start a replacement: every manifest row once, no duplicate clip row, no
    temporary file, every (good) video ``ok``."""
    c = cluster
    base_nodes = _assert_on(c, dataset["records"], "ingest")
    assert _check_ingest(dataset["out"], corpus)["duplicates"] == 0

    out = tmp_path / "data"
    args = ["ingest", str(corpus), "--out", str(out), "--json"]
    for s in INGEST_SETS:
        args += ["--set", s]
    cmd = _vidray(c, args, tmp_path / "ingest.log")
    tasks = VIDEOS // 4
    status_dir = out / "status"
    while cmd.poll() is None and len(list(status_dir.glob("part-*.parquet")) if status_dir.is_dir() else []) < tasks // 2:
        time.sleep(0.1)
    assert cmd.poll() is None, "the ingest finished before half of it was committed"
    committed_at_kill = len(list(status_dir.glob("part-*.parquet")))
    victim = c.alive_names("ingest")[0]
    before = Counter(c.names_by_id().get(r["node_id"]) for r in cmd.records(c, "ingest_task"))
    killed = c.kill_node(victim)
    detect_s = c.wait_dead(victim, timeout=120)
    replacement, up_s = _replace(c, "ingest")
    summary = _json_tail(_finish(cmd, tmp_path / "ingest.log", 900))

    counts = _check_ingest(out, corpus)
    assert summary["ok"] == VIDEOS and summary["failed"] == 0
    nodes = _assert_on(c, cmd.records(c, "ingest_task"), "ingest")
    assert before.get(victim), "the lost node had done none of the work"
    _assert_on(c, cmd.records(c, "ingest_write"), "ingest")
    report = {"test": "ingest_node_lost", "videos": VIDEOS, "tasks": tasks, "committed_at_kill": committed_at_kill,
              "victim": victim, "victim_tasks_before_kill": before.get(victim, 0), "pids_killed": len(killed),
              "dead_detect_s": round(detect_s, 1), "replacement": replacement, "replacement_up_s": round(up_s, 1),
              "wall_s": round(cmd.wall_s, 1), "baseline_wall_s": round(dataset["wall_s"], 1),
              "extra_wall_s": round(cmd.wall_s - dataset["wall_s"], 1),
              "ingest_s": round(summary["wall_s"], 1), "baseline_ingest_s": round(dataset["summary"]["wall_s"], 1),
              "task_starts_per_node": nodes, "baseline_task_starts_per_node": base_nodes, **counts,
              "rows_lost": VIDEOS - counts["status_rows"]}  # fmt: skip
    print("REPORT", json.dumps(report))


@pytest.mark.timeout(1800)
def test_training_survives_a_lost_train_node(cluster, dataset, tmp_path):
    """Train workers and their data tasks only on train nodes; the node of DDP rank 1 is SIGKILLed in the
    middle of epoch 2 and a replacement started: Train V2 restarts the worker group from epoch 1's
    checkpoint and finishes the 3 epochs; one MLflow run, FINISHED, every epoch's metrics once."""
    from mlflow.tracking import MlflowClient

    from vidray.io.checkpoint import list_checkpoints, load_checkpoint

    c = cluster
    run = tmp_path / "run"
    args = ["train", "--data", str(dataset["out"]), "--model", "single_frame", "--workers", "2", "--out", str(run),
            "--json"]
    for s in [*TRAIN_SETS, "epochs=3", "ray.max_failures=1", "debug.step_sleep_s=0.4"]:
        args += ["--set", s]
    cmd = _vidray(c, args, tmp_path / "train.log")
    first = run / "checkpoints" / "epoch_0001" / "checkpoint.pt"
    while cmd.poll() is None and not first.is_file():
        time.sleep(0.1)
    assert cmd.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
    time.sleep(1.5)  # into epoch 2 (about 10 steps of 0.4 s)
    assert not (run / "checkpoints" / "epoch_0002").exists(), "epoch 2 ended before the kill"
    rank1 = [w for w in cmd.records(c, "train_worker") if w["rank"] == 1][-1]
    victim = c.names_by_id()[rank1["node_id"]]
    t_kill = time.time()
    c.kill_node(victim)
    detect_s = c.wait_dead(victim, timeout=120)
    replacement, up_s = _replace(c, "train")
    result = _json_tail(_finish(cmd, tmp_path / "train.log", 1500))

    assert result["status"] == "FINISHED" and result["metrics"]["epoch"] == 3
    workers = cmd.records(c, "train_worker")
    restarted = [w for w in workers if w["t"] > t_kill]
    assert sorted(w["rank"] for w in restarted) == [0, 1]  # one new worker group
    assert {w["start_epoch"] for w in restarted} == {1}  # from epoch 1's checkpoint, not from scratch
    per_node = _assert_on(c, workers, "train")
    data_nodes = _assert_on(c, cmd.records(c, "train_data_task"), "train")
    # checkpoints: the latest is epoch 4, each one complete and consistent with its folder
    cks = list_checkpoints(run)
    assert cks and cks[-1][0] == 3
    for epoch, folder in cks:
        st = load_checkpoint(folder)
        assert st["epoch"] == epoch and [h["epoch"] for h in st["history"]] == list(range(1, epoch + 1))
    # MLflow: one run, FINISHED, each epoch's metrics once
    client = MlflowClient(result["tracking_uri"])
    runs = client.search_runs([result["experiment_id"]])
    assert [r.info.run_id for r in runs] == [result["mlflow_run_id"]] and runs[0].info.status == "FINISHED"
    for key in ("train_loss", "val_top1"):
        assert sorted(m.step for m in client.get_metric_history(result["mlflow_run_id"], key)) == [1, 2, 3]
    assert [m.value for m in client.get_metric_history(result["mlflow_run_id"], "resumed_at_epoch")] == [1.0]
    restart_s = min(w["t"] for w in restarted) - t_kill
    print("REPORT", json.dumps({
        "test": "train_node_lost", "victim": victim, "dead_detect_s": round(detect_s, 1), "replacement": replacement,
        "replacement_up_s": round(up_s, 1), "workers_restarted_after_kill_s": round(restart_s, 1),
        "wall_s": round(cmd.wall_s, 1), "workers_per_node": per_node, "data_tasks_per_node": data_nodes,
        "checkpoints": [e for e, _ in cks],
    }))  # fmt: skip


@pytest.mark.timeout(1800)
def test_sweep_survives_a_lost_trial_node(cluster, dataset, tmp_path):
    """Tune trials (and their Train workers) only on train nodes; the node of a trial is SIGKILLed after
    its first epoch: Tune's FailureConfig retries the trial (from its checkpoint), the sweep completes,
    and no MLflow run is left RUNNING."""
    from mlflow.tracking import MlflowClient

    c = cluster
    train_cfg: dict = {}
    for item in [*TRAIN_SETS, "epochs=2", "debug.step_sleep_s=0.2"]:
        k, v = item.split("=", 1)
        node = train_cfg
        *path, last = k.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(v)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train_cfg))
    sweep = {"base": "train.yaml", "model": "single_frame", "data": str(dataset["out"]),
             "space": {"optim.lr": {"grid": [0.01, 0.02]}}, "num_samples": 1, "scheduler": {"name": "fifo"},
             "workers": 1, "cpus_per_worker": 0.5, "trial_cpus": 0.5, "max_failures": 1,
             "max_concurrent_trials": 2, "name": "s", "experiment": "cluster-sweep"}  # fmt: skip
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    out = tmp_path / "sweeps"
    cmd = _vidray(c, ["tune", str(tmp_path / "sweep.yaml"), "--out", str(out), "--json"], tmp_path / "tune.log")
    first: list[Path] = []
    while cmd.poll() is None and not first:
        first = sorted((out / "s" / "trials").glob("*/train/checkpoints/epoch_0001/checkpoint.pt"))
        time.sleep(0.2)
    assert cmd.poll() is None, (tmp_path / "tune.log").read_text()[-3000:]
    trial_id = first[0].parts[-5]
    trial_rec = [r for r in cmd.records(c, "tune_trial") if r["trial_id"] == trial_id][-1]
    victim = c.names_by_id()[trial_rec["node_id"]]
    t_kill = time.time()
    c.kill_node(victim)
    detect_s = c.wait_dead(victim, timeout=120)
    replacement, up_s = _replace(c, "train")
    summary = _json_tail(_finish(cmd, tmp_path / "tune.log", 1500))

    assert summary["trials"] == 2 and summary["errored"] == 0
    trials = cmd.records(c, "tune_trial")
    per_node = _assert_on(c, trials, "train")
    _assert_on(c, cmd.records(c, "train_worker"), "train")
    _assert_on(c, cmd.records(c, "train_data_task"), "train")
    retried = [r for r in trials if r["trial_id"] == trial_id and r["t"] > t_kill]
    assert retried, "the trial on the lost node was not retried"
    resumed = [w for w in cmd.records(c, "train_worker") if w["t"] > t_kill and w["start_epoch"] >= 1]
    assert resumed, "no retried trial resumed from its checkpoint"
    import csv

    rows = list(csv.DictReader(open(summary["results_csv"])))  # a retried trial counts its iterations anew
    assert sorted(int(float(r["epoch"])) for r in rows) == [2, 2]
    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    runs = client.search_runs([summary["mlflow"]["experiment_id"]])
    states = Counter(r.info.status for r in runs)
    assert "RUNNING" not in states, states
    print("REPORT", json.dumps({
        "test": "sweep_node_lost", "victim": victim, "trial": trial_id, "dead_detect_s": round(detect_s, 1),
        "replacement": replacement, "replacement_up_s": round(up_s, 1),
        "trial_retried_after_kill_s": round(min(r["t"] for r in retried) - t_kill, 1),
        "wall_s": round(cmd.wall_s, 1), "trials_per_node": per_node, "mlflow_runs": dict(states),
        "closed_running_runs": summary["mlflow"]["closed_running_runs"],
    }))  # fmt: skip
