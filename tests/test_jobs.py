"""``ray job submit`` end to end: a local head (token auth on), the ingest entrypoint, its output.

The test starts its own single-node cluster with ``ray start --head --block`` on 127.0.0.1, every port
chosen free and a temp dir of its own (so it never meets the session's ``ray_local`` fixture or another
engineer's Ray), with a token made for this test (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN_PATH``: the
shared ``~/.ray/auth_token`` is neither read nor written). It submits ``jobs/ingest.py`` with the
checkout as ``--working-dir`` and ``jobs/runtime_env.yaml``, waits for SUCCEEDED, checks the ingest
output and what was uploaded, and in a ``finally`` stops exactly the processes it started (by pid).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from vidray.runtime import free_ports

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _children(pid: int) -> list[int]:
    """All live descendants of ``pid`` (from /proc), deepest last."""
    parent_of: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent_of[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        out.extend(kids)
        frontier.extend(kids)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _http_json(url: str, token: str | None, timeout: float = 5.0) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
        return json.loads(r.read())


class LocalHead:
    """A ``ray start --head --block`` process and everything it spawned, stopped by pid only."""

    def __init__(self, tmp: Path, num_cpus: int = 2):
        self.tmp = tmp
        self.token = secrets.token_hex(32)
        (tmp / "auth_token").write_text(self.token)
        (gcs, self.dash, agent_http, agent_grpc, rte, metrics, client, nm, om) = free_ports(9)
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_API_SERVER_ADDRESS")}
        self.env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the job's `python` is this venv's
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(tmp / "auth_token"),
            RAY_USAGE_STATS_ENABLED="0",
            RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # SIGTERM tears down now, not after a 30 s drain
        )
        self.address = f"http://127.0.0.1:{self.dash}"
        cmd = [
            str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
            "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dash),
            "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
            "--runtime-env-agent-port", str(rte), "--metrics-export-port", str(metrics),
            "--ray-client-server-port", str(client), "--node-manager-port", str(nm),
            "--object-manager-port", str(om), "--num-cpus", str(num_cpus),
            "--temp-dir", str(tmp / "ray"), "--disable-usage-stats",
        ]
        self.log = open(tmp / "head.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        """Until the dashboard answers an authenticated request (and refuses an anonymous one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{self.head_log()}")
            try:
                _http_json(f"{self.address}/api/version", self.token, timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                time.sleep(0.5)
        raise TimeoutError(f"dashboard not up after {timeout} s:\n{self.head_log()}")

    def head_log(self) -> str:
        self.log.flush()
        return (self.tmp / "head.log").read_text()[-4000:]

    def stop(self, timeout: float = 20.0) -> list[int]:
        """SIGTERM the ``ray start --block`` process (it kills its node's processes), then SIGKILL
        whatever of its own process tree is left. Returns the pids that needed SIGKILL."""
        tree = _children(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in tree):
            time.sleep(0.25)
        killed = [p for p in tree if _alive(p)]
        for p in killed:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        return killed


def test_runtime_env_excludes_keep_code_drop_data():
    """jobs/runtime_env.yaml, read by Ray's own packaging matcher: data and venvs out, all code in.

    Fast (no cluster). The patterns must be anchored: a bare ``data/`` would drop vidray/data/.
    """
    import yaml
    from ray._private.runtime_env.packaging import _get_excludes

    env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    excluded = _get_excludes(REPO, env["excludes"])
    for rel in (".venv/lib/python3.11/site-packages/x.py", ".git/HEAD", "data/clips/part-0.parquet",
                "runs/exp/checkpoint.pt", "demo/corpus/videos/a.mp4", "tests/data/clip_340x256.mp4",
                "benchmarks/out/x.json", "mlflow.db", "vidray.egg-info/PKG-INFO"):
        assert excluded(REPO / rel), rel
    for rel in ("vidray/data/__init__.py", "vidray/data/clip_sampling.py", "vidray/ingest.py", "jobs/ingest.py",
                "jobs/runtime_env.yaml", "configs/demo_ingest.yaml", "tests/test_jobs.py", "pyproject.toml"):
        assert not excluded(REPO / rel), rel


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_ray_job_submit_ingest(tmp_path):
    """Submit ``jobs/ingest.py`` to a local head with token auth and check the ingest it wrote."""
    from vidray.io.dataset import read_status
    from vidray.io.manifest import read_manifest
    from vidray.io.reader import IngestDataset
    from vidray.synth import make_corpus

    t0 = time.perf_counter()
    manifest = make_corpus(tmp_path / "corpus", num_videos=6, kind="motion", width=32, height=32, frames=8, seed=3)
    out = tmp_path / "out"
    # The AF_UNIX socket paths under the temp dir must stay short: not pytest's long tmp_path.
    tmp = Path(tempfile.mkdtemp(prefix="vrj-", dir="/tmp"))
    head = LocalHead(tmp)
    timings: dict[str, float] = {}
    try:
        head.wait_ready(timeout=180)
        timings["head_up_s"] = time.perf_counter() - t0

        # Token auth is on: an anonymous request is refused.
        with pytest.raises(urllib.error.HTTPError) as e:
            _http_json(f"{head.address}/api/jobs/", None)
        assert e.value.code in (401, 403)

        sub_id = f"vidray-ingest-test-{secrets.token_hex(4)}"
        cmd = [
            str(VENV_BIN / "ray"), "job", "submit", "--address", head.address, "--submission-id", sub_id,
            "--working-dir", ".", "--runtime-env", "jobs/runtime_env.yaml", "--no-wait", "--",
            "python", "jobs/ingest.py", str(manifest), "--out", str(out),
            "--set", "resize.short_side=32", "--set", "sampling.mode=all", "--json",
        ]
        r = subprocess.run(cmd, cwd=REPO, env=head.env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"ray job submit failed:\n{r.stdout}\n{r.stderr}"
        timings["submitted_s"] = time.perf_counter() - t0

        status, info = None, {}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            info = _http_json(f"{head.address}/api/jobs/{sub_id}", head.token)
            status = info.get("status")
            if status in TERMINAL:
                break
            time.sleep(1.0)
        logs = _http_json(f"{head.address}/api/jobs/{sub_id}/logs", head.token).get("logs", "")
        timings["job_done_s"] = time.perf_counter() - t0
        assert status == "SUCCEEDED", f"job {sub_id} ended {status}: {info.get('message')}\n{logs[-4000:]}"

        # The job ran the vidray/ uploaded with --working-dir, not the copy installed in the venv.
        line = next((ln for ln in logs.splitlines() if ln.startswith("vidray ") and " from " in ln), "")
        assert "working_dir_files" in line, f"unexpected vidray origin line {line!r}\n{logs[-2000:]}"
        # The ingest's --json summary is the last line of the job's stdout.
        summary = json.loads([ln for ln in logs.splitlines() if ln.startswith("{")][-1])
        assert summary["entries"] == summary["ok"] == 6

        # Output: one status row per manifest entry, every one ok; clip rows for every video.
        entries = read_manifest(manifest).entries
        status_table = read_status(out)
        assert status_table.num_rows == len(entries) == 6
        assert set(status_table["status"].to_pylist()) == {"ok"}
        assert sorted(status_table["video_id"].to_pylist()) == sorted(e.video_id for e in entries)
        ds = IngestDataset(out)
        assert ds.meta["state"] == "complete"
        assert sorted(ds.table(columns=["video_id"])["video_id"].to_pylist()) == sorted(e.video_id for e in entries)
        assert all(len(v.frames) == 8 for v in ds.iter_videos())  # sampling.mode=all: every frame

        # The upload is the code only: the excludes of jobs/runtime_env.yaml held, vidray/data/ was kept.
        pkgs = [p for p in (tmp / "ray").glob("session_2*/runtime_resources/working_dir_files/_ray_pkg_*")
                if p.is_dir()]
        assert len(pkgs) == 1, pkgs
        files = [p for p in pkgs[0].rglob("*") if p.is_file()]
        rel = {p.relative_to(pkgs[0]).as_posix() for p in files}
        assert "jobs/ingest.py" in rel and "vidray/ingest.py" in rel and "vidray/data/__init__.py" in rel
        assert not any(r.startswith((".venv/", ".git/", "tests/data/")) for r in rel)
        assert not any(r.endswith((".mp4", ".avi", ".parquet")) for r in rel)
        upload = sum(p.stat().st_size for p in files)
        assert upload < 5_000_000, f"working dir upload is {upload / 1e6:.1f} MB"
    finally:
        killed = head.stop()
        timings["total_s"] = time.perf_counter() - t0
        print(f"timings {json.dumps({k: round(v, 1) for k, v in timings.items()})}; SIGKILLed leftovers: {killed}")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    assert head.proc.poll() is not None  # the head process is gone
