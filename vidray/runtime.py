"""Connecting to Ray: one place for every stage (ingest, train, tune, embed).

``init_ray(address)`` joins a cluster when one is configured (``address``, or ``RAY_ADDRESS`` as a
``ray job submit`` job sets it). Otherwise vidray starts a LOCAL Ray for itself, and that one is private:

* **loopback only.** Ray replaces a loopback node address by the machine's LAN address on Linux
  (``ray/_private/services.py``, gated by ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``), and then its GCS,
  raylet, object manager, workers and agents listen on every interface. vidray keeps the node address
  at 127.0.0.1 (``_node_ip_address`` with that gate off), so every Ray server binds to 127.0.0.1; the
  dashboard too (``dashboard_host``). A cluster is configured explicitly (``cluster.yaml``).
* **its own ports and address.** Free ports are chosen (the fixed defaults collide with any other local
  Ray), and ``RAY_ADDRESS`` is exported to Ray's processes, so code inside Ray that finds "its" cluster
  by auto-detection (Train V2's placement-group cleaner, through the State API) finds this one even
  when other Rays run on the machine.
* **nothing outlives the command.** Ray kills its GCS and raylet with the driver, but the raylet's
  agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) then wait a minute on the dead GCS: after a
  SIGKILLed ``vidray ingest`` they were alive 60-75 s later. A small reaper process (its own session,
  told of the driver's death by ``PR_SET_PDEATHSIG`` and a pipe) records the PIDs of the Ray processes
  the driver started and kills exactly those (start time checked, so a reused PID is never hit) as
  soon as the driver is gone.
* **with its dashboard** on 127.0.0.1: Ray's State API runs there, and Train V2's placement-group cleaner
  needs it to free the workers of a trial that Tune stopped (ray-project/ray#54305); without it a
  second trial waited forever on 2 CPUs.
* **idle workers kept** between epochs: by default Ray kills idle workers above the soft limit after
  1 s, so each epoch's Ray Data read tasks started fresh Python processes next to the Train workers
  (measured 4-5 s per epoch and dataset on 2 cores, 0.4 s with this; docs/training.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

__all__ = ["init_ray", "local_ray_address", "free_ports", "node_selector", "cluster_cpus", "trace_placement", "listening_sockets",
           "descendants"]

_REAPER: subprocess.Popen | None = None
_PR_SET_PDEATHSIG = 1


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1. The sockets stay bound until all are chosen: ports
    taken one after the other can repeat (the kernel may hand a just-released port out again; Ray then
    refused to start: "metrics_export is trying to use a port number ... used by other components")."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def init_ray(address: str | None = None, *, dashboard: bool = True, num_cpus: float | None = None,
             **local_kwargs: Any) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start vidray's private local Ray (module doc;
    ``num_cpus`` and ``local_kwargs`` go to its ``ray.init``, e.g. ``log_to_driver=False``).

    Does nothing when Ray is already initialised (a test session, a job driver).
    """
    import ray

    if ray.is_initialized():
        return
    from vidray.console import current

    current().capture()  # from here on Ray's (and MLflow's) output goes to the command's log file
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or os.environ["RAY_ADDRESS"])
        return
    _start_local(dashboard=dashboard, num_cpus=num_cpus, **local_kwargs)


def local_ray_address() -> str | None:
    """The GCS address of the local Ray this process started (``None``: none started here)."""
    return os.environ.get("VIDRAY_LOCAL_RAY_ADDRESS")


def _start_local(*, dashboard: bool, num_cpus: float | None, **kwargs: Any) -> None:
    import ray
    import ray._private.ray_constants as ray_constants

    port, dashboard_port, metrics_port = free_ports(3)
    addr = f"127.0.0.1:{port}"
    os.environ.setdefault("RAY_idle_worker_killing_time_threshold_ms", "600000")
    # Inherited by the GCS, raylet, workers and agents started below: the node address stays loopback,
    # the GCS takes the port chosen here, and auto-detection inside Ray finds THIS cluster.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    os.environ["VIDRAY_LOCAL_RAY_ADDRESS"] = addr
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time by services.resolve_ip_for_localhost
    try:
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=dashboard,
                 dashboard_host="127.0.0.1", dashboard_port=dashboard_port, _metrics_export_port=metrics_port,
                 num_cpus=num_cpus, **kwargs)  # fmt: skip
    finally:
        os.environ.pop("RAY_GCS_SERVER_PORT", None)
    os.environ["RAY_ADDRESS"] = addr  # this process's own later lookups (State API, ray.util.state)
    _start_reaper()


# ------------------------------------------------------------------------------------------------
# placement by node type (cluster.yaml's node labels)
# ------------------------------------------------------------------------------------------------
def _alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def _matches(node_labels: dict[str, str], selector: dict[str, str]) -> bool:
    """Whether a node's labels satisfy a selector of plain ``key: value`` pairs (Ray's operators such as
    ``!v`` or ``in(a,b)`` are Ray's to evaluate: they count as matching here)."""
    for k, v in selector.items():
        plain = not (v.startswith("!") or v.startswith("in(") or v.startswith("!in("))
        if plain and node_labels.get(k) != v:
            return False
    return True


def node_selector(labels: dict[str, str] | None, what: str = "tasks") -> dict[str, str] | None:
    """``labels`` as a Ray label selector for the connected cluster, or ``None`` (no constraint).

    Applied only when some live node carries every label KEY of ``labels``: on a cluster labelled like
    ``cluster.yaml`` (the head carries ``vidray-role=head`` from the start) the selector holds even
    before the autoscaler has started a matching node; on a plain local Ray (no such label anywhere)
    vidray's defaults do not leave the work unschedulable. With no live node matching yet, a warning
    says the work waits for one."""
    if not labels:
        return None
    nodes = _alive_nodes()
    keys = set(labels)
    if not any(keys <= set(n.get("Labels") or {}) for n in nodes):
        return None
    if not any(_matches(n.get("Labels") or {}, labels) for n in nodes):
        import logging

        logging.getLogger(__name__).warning(
            "no live node has the labels %s yet: the %s wait for one (on a cluster.yaml cluster the autoscaler "
            "starts it)", labels, what)
    return dict(labels)


def cluster_cpus(selector: dict[str, str] | None = None) -> float:
    """CPUs of the live nodes that ``selector`` admits (all live nodes without one)."""
    import ray

    if not selector:
        return float(ray.cluster_resources().get("CPU", 0.0))
    return float(sum((n.get("Resources") or {}).get("CPU", 0.0) for n in _alive_nodes()
                     if _matches(n.get("Labels") or {}, selector)))


def trace_placement(kind: str, **fields: object) -> None:
    """Record where a unit of work runs, when ``VIDRAY_PLACEMENT_LOG`` names a folder every node sees:
    one small JSON file ``{kind, node_id, pid, t, ...}`` per call (no appends: safe on NFS and with many
    writers). Called by ingest tasks, Train workers, their Ray Data tasks and Tune trials; a no-op
    (one environment lookup) otherwise. ``tests/test_cluster.py`` asserts placement with it."""
    folder = os.environ.get("VIDRAY_PLACEMENT_LOG")
    if not folder:
        return
    import json
    import uuid

    try:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        rec = {"kind": kind, "node_id": node, "pid": os.getpid(), "t": time.time(), **fields}
        os.makedirs(folder, exist_ok=True)
        name = f"{kind}-{uuid.uuid4().hex}"
        tmp = os.path.join(folder, f".{name}.tmp")
        with open(tmp, "w") as f:
            json.dump(rec, f, default=str)
        os.replace(tmp, os.path.join(folder, f"{name}.json"))
    except Exception:  # a debugging aid never fails the work
        pass


# ------------------------------------------------------------------------------------------------
# the reaper: kill what the driver started when the driver dies
# ------------------------------------------------------------------------------------------------
def _set_pdeathsig() -> None:  # between fork and exec of the reaper
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _start_reaper() -> None:
    global _REAPER
    if _REAPER is not None or not sys.platform.startswith("linux"):
        return
    _REAPER = subprocess.Popen(
        [sys.executable, "-m", "vidray.runtime", "--reap", str(os.getpid())],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=_set_pdeathsig, close_fds=True,
    )  # fmt: skip


def _stat(pid: int) -> tuple[int, int] | None:
    """``(ppid, start time in clock ticks)`` of a process, or ``None`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def descendants(root: int) -> dict[int, int]:
    """``{pid: start time}`` of every process below ``root`` (from ``/proc``; Linux)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[0], []).append(int(name))
                starts[int(name)] = st[1]
    out: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in out:
            out[pid] = starts[pid]
            todo += children.get(pid, [])
    return out


def _reap(driver: int) -> None:
    """The reaper's loop: every 0.5 s remember the driver's descendants; when the driver is gone
    (SIGTERM from PR_SET_PDEATHSIG, EOF on stdin, or it no longer exists), SIGKILL those still alive
    with the same start time."""
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is for the driver

    def watch_stdin() -> None:
        with contextlib.suppress(Exception):
            sys.stdin.buffer.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    me = os.getpid()
    known: dict[int, int] = {}
    while not stop.is_set():
        if _stat(driver) is None:
            break
        known.update({p: s for p, s in descendants(driver).items() if p != me})
        stop.wait(0.5)
    time.sleep(0.5)  # let Ray's own shutdown (ray.shutdown at a normal exit) finish first
    for pid, start in known.items():
        st = _stat(pid)
        if st is not None and st[1] == start:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------------
# what a process listens on (tests and `vidray inspect` of a local run)
# ------------------------------------------------------------------------------------------------
def listening_sockets(pids: list[int]) -> list[tuple[int, str, int]]:
    """``(pid, ip, port)`` of the TCP sockets in LISTEN state owned by ``pids`` (Linux ``/proc``)."""
    import ipaddress

    inodes: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes[target[8:-1]] = pid
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state != "0A" or inode not in inodes:  # 0A = LISTEN
                    continue
                hexip, hexport = local.split(":")
                raw = bytes.fromhex(hexip)
                if v6:  # four little-endian 32-bit words
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    ip = ipaddress.IPv6Address(raw)
                    ip_s = str(ip.ipv4_mapped) if ip.ipv4_mapped else str(ip)
                else:
                    ip_s = str(ipaddress.IPv4Address(raw[::-1]))
                out.append((inodes[inode], ip_s, int(hexport, 16)))
    return out


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--reap":
    _reap(int(sys.argv[2]))
