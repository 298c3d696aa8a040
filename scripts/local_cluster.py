#!/usr/bin/env python3
"""A real multi-node Ray cluster on one machine (Ray 2.60): the test harness of docs/cluster.md.

Every node is its own ``ray start [--head] --block`` process, started in a session of its own
(``setsid``: its pid is its process-group id), with its own raylet, object store and agents. Nodes are
labelled like ``cluster.yaml``'s node types::

    head     --num-cpus 0, label vidray-role=head         (drivers only; cluster.yaml: head)
    ingest   label vidray-role=ingest                      (cluster.yaml: cpu_ingest)
    train    label vidray-role=train, resource gpu_standin: 1 (cluster.yaml: gpu_train; the custom resource
             stands in for {"GPU": n} on a machine without GPUs: ``--set ray.worker_resources.gpu_standin=1``)

plus ``vidray-node=<name>`` so a node id maps back to a name. Nothing here ever runs ``ray stop``, kills
by process name, or touches ``~/.ray``:

* **token auth with a token file of its own** (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN_PATH=<base>/
  auth_token``), its own free ports (disjoint worker port ranges per node), its own ``--temp-dir``
  under ``/tmp/vrc-*`` (short: Ray's AF_UNIX socket paths must stay under 108 bytes).
* **loopback only.** Ray rewrites a ``127.0.0.1`` node address to the machine's LAN address on Linux
  (``services.resolve_ip_for_localhost``) and then listens there; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
  (what :mod:`vidray.runtime` does for its private local Ray) would stop that but makes ``ray start``
  refuse to add worker nodes. Each node therefore runs ``ray start`` through a two-line wrapper that
  keeps loopback addresses as given; drivers get ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` from
  :meth:`LocalCluster.driver_env` (connecting, they only resolve the address).
* **a lost machine** (:meth:`LocalCluster.kill_node`): SIGKILL to the node's process group AND to its
  Ray worker processes by pid. Ray 2.60's raylet puts every worker in a process group of its own
  (``RAY_process_group_cleanup_enabled``), so a group kill alone left a running task's worker alive for
  1-5 s here. The pids are the descendants of the node's ``ray start``, read from /proc before the kill.
* **fast failure detection**: ``RAY_health_check_*`` (1 s period, 3 misses): a killed node is DEAD
  in ~3-5 s instead of ~15 s.
* **CI-safe start-up.** On a loaded 2-core machine a raylet gives its dashboard agent a hard-coded 15 s
  to write its port files and aborts otherwise (``Check failed`` in ``raylet.out``); at load 25-60 that
  killed about one start in three. Nodes therefore start one at a time, a start whose raylet died is
  seen at once and retried with back-off (``retries``), and the GCS gives raylets 120 s to register
  (``RAY_raylet_start_wait_time_s``). Retried starts are listed in ``start_failures``.

Python::

    from local_cluster import start_cluster          # scripts/ on sys.path
    c = start_cluster(ingest=2, train=2)              # head + nodes, all ALIVE on return
    env = c.driver_env()                              # RAY_ADDRESS + token: run `vidray ...` with it
    c.kill_node("ingest-1"); c.wait_dead("ingest-1")  # a lost machine, and Ray noticing it
    c.add_node("ingest-3", role="ingest", wait=True)  # its replacement (as the autoscaler would)
    c.stop()                                          # by pid: workers first, the head last

Command line::

    python scripts/local_cluster.py up --ingest 2 --train 2   # prints the env to export; Ctrl-C stops it

Test fixture: ``tests/test_cluster.py`` (module scope, one cluster for its tests).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from vidray.runtime import free_ports

PYTHON = os.environ.get("VIDRAY_CLUSTER_PYTHON", sys.executable)
ROLE_LABEL = "vidray-role"
NODE_LABEL = "vidray-node"
GPU_STANDIN = "gpu_standin"
"""Custom resource of train nodes that stands in for {"GPU": n} (``--set ray.worker_resources={gpu_standin: 1}``)."""

# `ray start` with loopback addresses kept as given (module doc); argv after -c is `ray`'s.
_RAY_START = (
    "import sys, ray._private.services as s; _r = s.resolve_ip_for_localhost; "
    "s.resolve_ip_for_localhost = lambda h: h if s.is_localhost(h) else _r(h); "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"
)

# Faster failure detection than Ray's default (3 s period x 5 misses): read by the GCS.
FAST_HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


# ------------------------------------------------------------------------------------------------
# ports and /proc
# ------------------------------------------------------------------------------------------------
def _port_free(p: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", p))
            return True
        except OSError:
            return False


def free_port_range(size: int, used: set[int], lo: int = 20000, hi: int = 60000) -> tuple[int, int]:
    """A run of ``size`` ports, free now (sampled) and not in ``used``: one node's Ray worker ports."""
    rnd = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        start = rnd.randrange(lo, hi - size)
        rng = range(start, start + size)
        if not any(p in used for p in rng) and all(_port_free(p) for p in rng[:: max(1, size // 10)]):
            used.update(rng)
            return start, start + size - 1
    raise RuntimeError("no free port range")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _all_stats() -> dict[int, list[str]]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st is not None and st[0] != "Z":
                out[int(d)] = st
    return out


def pids_in_group(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    return [p for p, st in _all_stats().items() if int(st[2]) == pgid]


def descendants(pid: int) -> list[int]:
    """Live processes below ``pid`` (any process group)."""
    children: dict[int, list[int]] = {}
    for p, st in _all_stats().items():
        children.setdefault(int(st[1]), []).append(p)
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------
# the cluster
# ------------------------------------------------------------------------------------------------
@dataclass
class Node:
    name: str
    role: str
    proc: subprocess.Popen
    log_path: Path
    num_cpus: float
    labels: dict[str, str]
    resources: dict[str, float]
    started_at: float
    killed: bool = False
    killed_at: float | None = None
    ready_s: float | None = None
    raylet_pid: int | None = None
    known_pids: set[int] = field(default_factory=set)

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session=True: `ray start` leads its own group

    def pids(self) -> list[int]:
        return pids_in_group(self.pgid)


class LocalCluster:
    """A head (``--num-cpus 0``) plus worker nodes, each a ``ray start --block`` in its own session."""

    def __init__(self, base: str | Path | None = None, *, head_cpus: float = 0, fast_health_check: bool = True,
                 env: dict[str, str] | None = None, object_store_mb: int = 100, worker_ports_per_node: int = 200):
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix="vrc-", dir="/tmp"))
        self.base.mkdir(parents=True, exist_ok=True)
        self._own_base = base is None
        self.temp_dir = self.base / "ray"
        self.token = secrets.token_hex(32)
        self.token_path = self.base / "auth_token"
        self.token_path.write_text(self.token)
        os.chmod(self.token_path, 0o600)
        self.object_store_bytes = object_store_mb * 1024 * 1024
        self.worker_ports_per_node = worker_ports_per_node
        self.head_cpus = head_cpus
        self._used_ports: set[int] = set()
        self.nodes: dict[str, Node] = {}
        self.start_failures: list[tuple[str, int, str]] = []  # (node, attempt, error) of retried starts
        # the nodes' environment: this process's (PYTHONPATH included, so Ray workers import the same
        # vidray) without any RAY_* setting of its own, plus the cluster's
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(
            PATH=f"{Path(PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.token_path),
            RAY_USAGE_STATS_ENABLED="0",
            RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # SIGTERM: exit now, not after a 30 s drain
            RAY_raylet_start_wait_time_s="120",  # default 30 s: too short on a loaded 2-core machine
            RAY_idle_worker_killing_time_threshold_ms="600000",  # as vidray's local Ray (runtime.py)
        )
        if fast_health_check:
            self.env.update(FAST_HEALTH_CHECK)
        self.env.update(env or {})
        self._new_head_ports()

    def _new_head_ports(self) -> None:
        self.gcs_port, self.dash_port, self.client_port = self._ports(3)
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dash_port}"

    def _ports(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            for p in free_ports(n - len(out)):
                if p not in self._used_ports:
                    self._used_ports.add(p)
                    out.append(p)
        return out

    def _node_args(self) -> list[str]:
        nm, om, metrics, agent_http, agent_grpc, rte = self._ports(6)
        wlo, whi = free_port_range(self.worker_ports_per_node, self._used_ports)
        return [
            "--node-ip-address", "127.0.0.1", "--node-manager-port", str(nm), "--object-manager-port", str(om),
            "--metrics-export-port", str(metrics), "--dashboard-agent-listen-port", str(agent_http),
            "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(rte),
            "--min-worker-port", str(wlo), "--max-worker-port", str(whi),
            "--object-store-memory", str(self.object_store_bytes),
            "--temp-dir", str(self.temp_dir), "--disable-usage-stats", "--block",
        ]  # fmt: skip

    def _spawn(self, name: str, role: str, args: list[str], num_cpus: float, labels: dict, resources: dict) -> Node:
        old = self.nodes.get(name)
        if old is not None and not old.killed and old.proc.poll() is None:
            raise ValueError(f"node {name} is running")
        log_path = self.base / f"{name}.log"
        with open(log_path, "a") as log:  # a retried start appends
            proc = subprocess.Popen([PYTHON, "-c", _RAY_START, "start", *args], stdout=log, stderr=subprocess.STDOUT,
                                    env=self.env, cwd=self.base, start_new_session=True)  # fmt: skip
        node = Node(name, role, proc, log_path, num_cpus, labels, resources, time.monotonic())
        self.nodes[name] = node
        return node

    @staticmethod
    def _labels_arg(labels: dict[str, str]) -> list[str]:
        return ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]

    def start_head(self, *, timeout: float = 180, retries: int = 3) -> Node:
        """Start the head (``--num-cpus head_cpus``, default 0; dashboard on 127.0.0.1 for the State API).
        Retried up to ``retries`` times on a failed start (module doc)."""
        labels = {ROLE_LABEL: "head", NODE_LABEL: "head"}
        for attempt in range(retries + 1):
            if attempt:
                self._new_head_ports()
            args = ["--head", "--port", str(self.gcs_port), "--ray-client-server-port", str(self.client_port),
                    "--num-cpus", str(self.head_cpus), *self._labels_arg(labels),
                    "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dash_port), *self._node_args()]
            node = self._spawn("head", "head", args, self.head_cpus, labels, {})
            try:
                self.wait_alive(["head"], timeout=timeout)
                return node
            except (RuntimeError, TimeoutError) as e:
                self.start_failures.append(("head", attempt, str(e)[-300:]))
                self.stop_node("head")
                if attempt == retries:
                    raise
                time.sleep(min(30, 3 * (attempt + 1)))
        raise AssertionError("unreachable")

    def add_node(self, name: str, role: str, *, num_cpus: float = 1, resources: dict[str, float] | None = None,
                 wait: bool = True, timeout: float = 180, retries: int = 3) -> Node:
        """Start a worker node of ``role`` (``ingest`` | ``train`` | anything): label ``vidray-role=<role>``;
        a ``train`` node also gets ``gpu_standin: 1`` (one "GPU") unless ``resources`` says otherwise.
        With ``wait``: until Ray reports it ALIVE, retried ``retries`` times with back-off."""
        if "head" not in self.nodes:
            self.start_head()
        labels = {ROLE_LABEL: role, NODE_LABEL: name}
        res = dict(resources or {})
        if role == "train":
            res.setdefault(GPU_STANDIN, 1.0)
        for attempt in range(retries + 1):
            args = ["--address", self.address, "--num-cpus", str(num_cpus), *self._labels_arg(labels)]
            if res:
                args += ["--resources", json.dumps(res)]
            node = self._spawn(name, role, args + self._node_args(), num_cpus, labels, res)
            if not wait:
                return node
            try:
                self.wait_alive([name], timeout=timeout)
                return node
            except (RuntimeError, TimeoutError) as e:
                self.start_failures.append((name, attempt, str(e)[-300:]))
                self.stop_node(name)
                if attempt == retries:
                    raise
                time.sleep(min(30, 3 * (attempt + 1)))  # back off: the failures come with load spikes
        raise AssertionError("unreachable")

    # --------------------------------------------------------------------------------------------
    # Ray's view (State API through the dashboard, with the token)
    # --------------------------------------------------------------------------------------------
    def api(self, path: str, timeout: float = 10.0) -> dict:
        req = urllib.request.Request(f"{self.dashboard_url}{path}", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def ray_nodes(self) -> list[dict]:
        """Ray's node table: node_id, state, labels, resources_total, start_time_ms, ..."""
        return self.api("/api/v0/nodes?limit=1000&detail=1")["data"]["result"]["result"]

    def node_states(self) -> dict[str, tuple[str, str]]:
        """``{name: (node_id, state)}`` of the latest start of every node name Ray knows."""
        out: dict[str, tuple[str, str, int]] = {}
        for n in self.ray_nodes():
            name = (n.get("labels") or {}).get(NODE_LABEL)
            t = n.get("start_time_ms") or 0
            if name and (name not in out or t >= out[name][2]):
                out[name] = (n["node_id"], n["state"], t)
        return {k: (v[0], v[1]) for k, v in out.items()}

    def node_id(self, name: str) -> str:
        return self.node_states()[name][0]

    def names_by_id(self) -> dict[str, str]:
        """``{node_id: name}`` of every node Ray knows (dead ones included)."""
        return {n["node_id"]: n["labels"][NODE_LABEL] for n in self.ray_nodes() if (n.get("labels") or {}).get(NODE_LABEL)}

    def roles_by_id(self) -> dict[str, str]:
        """``{node_id: role}`` of every node Ray knows (dead ones included)."""
        return {n["node_id"]: n["labels"][ROLE_LABEL] for n in self.ray_nodes() if (n.get("labels") or {}).get(ROLE_LABEL)}

    def alive_names(self, role: str | None = None) -> list[str]:
        return sorted(k for k, (_, s) in self.node_states().items()
                      if s == "ALIVE" and (role is None or self.nodes.get(k) and self.nodes[k].role == role))

    def _check_procs(self, names: list[str]) -> None:
        for name in names:
            n = self.nodes[name]
            if n.killed:
                continue
            if n.raylet_pid is None:
                n.raylet_pid = next((p for p in n.pids() if _comm(p) == "raylet"), None)
            if n.raylet_pid is not None and not alive(n.raylet_pid):
                raise RuntimeError(f"node {name}: its raylet {n.raylet_pid} died (raylet*.out under "
                                   f"{self.temp_dir}/session_latest/logs)")
            if n.proc.poll() is not None:
                raise RuntimeError(f"node {name} exited with {n.proc.returncode}:\n{self.node_log(name)}")

    def _poll(self, cond, timeout: float, what: str, names: list[str]):
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_procs(names)
            try:
                r = cond()
                if r:
                    return r
            except (urllib.error.URLError, ConnectionError, OSError, ValueError, KeyError) as e:
                last = e
            time.sleep(0.25)
        raise TimeoutError(f"{what} not reached in {timeout} s (last error {last}); logs in {self.base}")

    def wait_alive(self, names: list[str], timeout: float = 180) -> None:
        """Until Ray reports every node of ``names`` ALIVE (a node's raylet dying is an error at once)."""
        self._poll(lambda: all(self.node_states().get(nm, ("", ""))[1] == "ALIVE" for nm in names), timeout,
                   f"nodes {names} alive", names)  # fmt: skip
        for nm in names:
            node = self.nodes[nm]
            node.known_pids.update(node.pids())
            node.ready_s = time.monotonic() - node.started_at

    def wait_dead(self, name: str, timeout: float = 120) -> float:
        """Until Ray marks ``name`` DEAD; returns the seconds since it was killed (detection time)."""
        node = self.nodes[name]
        t_kill = node.killed_at or time.monotonic()
        self._poll(lambda: self.node_states().get(name, ("", ""))[1] == "DEAD", timeout, f"{name} DEAD", [])
        return time.monotonic() - t_kill

    def node_log(self, name: str, tail: int = 4000) -> str:
        try:
            return self.nodes[name].log_path.read_text()[-tail:]
        except OSError:
            return ""

    # --------------------------------------------------------------------------------------------
    # drivers
    # --------------------------------------------------------------------------------------------
    def driver_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a driver subprocess (``vidray ...``, a script calling ``ray.init()``): the
        cluster's address and token, and loopback kept as loopback (module doc)."""
        env = {k: v for k, v in (base if base is not None else os.environ).items() if k != "RAY_AUTH_TOKEN"}
        env.update(RAY_ADDRESS=self.address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path),
                   RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # fmt: skip
        return env

    def export_line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.driver_env({}).items())

    # --------------------------------------------------------------------------------------------
    # losing nodes, stopping
    # --------------------------------------------------------------------------------------------
    def kill_node(self, name: str, sig: int = signal.SIGKILL) -> list[int]:
        """A lost machine: ``sig`` (default SIGKILL) to the node's whole process group and to its Ray
        worker processes by pid (module doc). Returns every pid signalled."""
        node = self.nodes[name]
        group = node.pids()
        workers = [p for p in descendants(node.proc.pid) if p not in group]
        node.known_pids.update(group + workers)
        node.killed, node.killed_at = True, time.monotonic()
        try:
            os.killpg(node.pgid, sig)
        except ProcessLookupError:
            pass
        for p in workers:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        try:
            node.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        return group + workers

    def stop_node(self, name: str, timeout: float = 20) -> list[int]:
        """SIGTERM the node's ``ray start`` (it stops its processes), then SIGKILL what is left of its
        group and of the pids it ever had. Returns the pids that needed SIGKILL."""
        node = self.nodes[name]
        node.known_pids.update(node.pids())
        if node.proc.poll() is None:
            node.known_pids.update(descendants(node.proc.pid))
            node.proc.send_signal(signal.SIGTERM)
            try:
                node.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and node.pids():
            time.sleep(0.2)
        left = node.pids()
        if left:
            try:
                os.killpg(node.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stray = [p for p in node.known_pids if alive(p) and p not in left]  # by pid, never by name
        for p in stray:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if node.proc.poll() is None:
            node.proc.kill()
        node.proc.wait(10)
        node.killed = True
        return left + stray

    def stop(self, remove: bool = False) -> list[int]:
        """Stop every node (workers first, the head last); ``remove``: delete the cluster's folder
        (logs, token). Returns the pids that needed SIGKILL."""
        for n in self.nodes.values():
            n.known_pids.update(n.pids())
            if n.proc.poll() is None:
                n.known_pids.update(descendants(n.proc.pid))
        killed: list[int] = []
        for name in [k for k in self.nodes if k != "head"] + (["head"] if "head" in self.nodes else []):
            killed += self.stop_node(name)
        if remove and self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)
        return killed

    def leftover_pids(self) -> list[int]:
        """Pids of this cluster still alive (after :meth:`stop`: should be none)."""
        return sorted(p for n in self.nodes.values() for p in (set(n.pids()) | n.known_pids) if alive(p))

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_cluster(ingest: int = 2, train: int = 0, *, ingest_cpus: float = 1, train_cpus: float = 2,
                  timeout: float = 240, retries: int = 4, **kw) -> LocalCluster:
    """Head + ``ingest`` ingest nodes + ``train`` train nodes (``ingest-1..``, ``train-1..``), started
    one at a time (parallel starts overload 2 cores), all ALIVE on return; stopped again on failure."""
    c = LocalCluster(**kw)
    try:
        c.start_head(timeout=timeout, retries=retries)
        for i in range(ingest):
            c.add_node(f"ingest-{i + 1}", "ingest", num_cpus=ingest_cpus, timeout=timeout, retries=retries)
        for i in range(train):
            c.add_node(f"train-{i + 1}", "train", num_cpus=train_cpus, timeout=timeout, retries=retries)
        return c
    except BaseException:
        c.stop()
        raise


def _main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a cluster and block until Ctrl-C / SIGTERM, then stop it")
    up.add_argument("--ingest", type=int, default=2, help="ingest nodes (default 2)")
    up.add_argument("--train", type=int, default=1, help="train nodes (default 1)")
    up.add_argument("--ingest-cpus", type=float, default=1, help="CPUs per ingest node (default 1)")
    up.add_argument("--train-cpus", type=float, default=2, help="CPUs per train node (default 2)")
    up.add_argument("--keep", action="store_true", help="keep the cluster folder (logs) after stopping")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    c = start_cluster(ingest=a.ingest, train=a.train, ingest_cpus=a.ingest_cpus, train_cpus=a.train_cpus)
    print(f"cluster up in {time.monotonic() - t0:.1f} s; logs and token in {c.base}")
    print(f"export {c.export_line()}")
    print(f"dashboard {c.dashboard_url} (token in {c.token_path}); nodes: {json.dumps(c.node_states())}", flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping; needed SIGKILL:", c.stop(remove=not a.keep), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
