"""CPU seconds of a process tree from ``/proc`` (Linux; no psutil), for the benchmarks' ratios.

:func:`tree_cpu_s` sums user + system time of this process and every live descendant (a local Ray's
GCS, raylet, dashboard and workers are children of the driver that started them) plus the time of
descendants that already exited and were waited for by a live one (``cutime``/``cstime``: Ray's raylet
reaps the workers it retires), so a worker that exits between two readings is not lost.
:func:`tree_cpu_by_role` splits the same total by process role (``driver``, ``raylet``, ``gcs_server``,
``worker``, ...), which is how ``benchmarks/ingest.py --overhead`` separates Ray's daemons from the work.

On a machine shared with other jobs, CPU-seconds of the tree measure what a pipeline costs whatever
else runs; wall-clock seconds do not.
"""

from __future__ import annotations

import os
import time

_TICK = os.sysconf("SC_CLK_TCK")


def _read(pid: int) -> tuple[str, int, float] | None:
    """``(name, ppid, cpu seconds incl. waited-for children)`` of a process, ``None`` when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        name = raw[raw.index(b"(") + 1 : raw.rindex(b")")].decode(errors="replace")
        fields = raw.rsplit(b")", 1)[1].split()
        # fields[0] is the state; utime, stime, cutime, cstime are fields 14-17 of stat (1-based)
        ut, st, cut, cst = (int(x) for x in fields[11:15])
        return name, int(fields[1]), (ut + st + cut + cst) / _TICK
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _tree(root: int) -> dict[int, tuple[str, float]]:
    procs: dict[int, tuple[str, int, float]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            r = _read(int(d))
            if r is not None:
                procs[int(d)] = r
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, tuple[str, float]] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in procs and pid not in out:
            out[pid] = (procs[pid][0], procs[pid][2])
            stack.extend(children.get(pid, []))
    return out


def tree_cpu_s(root: int | None = None) -> float:
    """CPU seconds used so far by ``root`` (default: this process) and its descendants (module doc)."""
    return sum(cpu for _, cpu in _tree(root or os.getpid()).values())


def _role(pid: int, name: str, root: int) -> str:
    if pid == root:
        return "driver"
    if name.startswith("ray::"):
        return "worker"  # task and actor workers name themselves ray::<task or actor>
    for key in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor", "runtime_env", "agent"):
        if key in name:
            return key
    cmd = _cmdline(pid)
    for key in ("default_worker", "raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env",
                "agent"):
        if key in cmd:
            return "worker" if key == "default_worker" else key.removesuffix(".py")
    return "other"


def tree_cpu_by_role(root: int | None = None) -> dict[str, float]:
    """:func:`tree_cpu_s` split by role: ``driver`` (this process), ``worker`` (Ray task/actor
    workers), ``raylet``, ``gcs_server``, ``dashboard``, ``log_monitor``, ``monitor``, ..., ``other``."""
    root = root or os.getpid()
    out: dict[str, float] = {}
    for pid, (name, cpu) in _tree(root).items():
        role = _role(pid, name, root)
        out[role] = out.get(role, 0.0) + cpu
    return out


def diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """``b - a`` per role (roles missing in ``a`` count from 0)."""
    return {k: round(b[k] - a.get(k, 0.0), 3) for k in b}


# ------------------------------------------------------------------------------------------------
# The ingest UDF's own CPU (benchmarks/ingest.py --overhead)
# ------------------------------------------------------------------------------------------------
UDF_DIR_ENV = "VIDRAY_BENCH_UDF_DIR"


def process_videos_timed(batch, cfg, **kw):
    """:func:`vidray.ingest.process_videos`, appending the CPU it used (``time.process_time`` while
    the generator runs, not while it is suspended) to ``$VIDRAY_BENCH_UDF_DIR/<pid>``."""
    from vidray.ingest import process_videos as fn  # a Ray worker's own, unpatched import

    if fn is process_videos_timed:
        raise RuntimeError("process_videos_timed runs in Ray workers, not in the process that patched it")
    acc, t0 = 0.0, time.process_time()
    for out in fn(batch, cfg, **kw):
        acc += time.process_time() - t0
        yield out
        t0 = time.process_time()
    acc += time.process_time() - t0
    d = os.environ.get(UDF_DIR_ENV)
    if d:
        with open(os.path.join(d, str(os.getpid())), "a") as f:
            f.write(f"{acc}\n")
