"""Connecting to Ray: one place for every stage (ingest, train, tune)."""

from __future__ import annotations

import os


def init_ray(address: str | None = None, *, dashboard: bool = True) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a local Ray with its dashboard bound to
    127.0.0.1 (``dashboard=False``: without).

    Train V2 needs the dashboard: Ray's State API runs in it, and Train V2's placement-group
    cleaner uses that API to free the worker group of a trial that Tune stopped (ASHA). Without it
    the stopped trial's workers' CPUs stay reserved and the next trial waits forever (measured on
    2 CPUs; ray-project/ray#54305). Without it, every ``vidray train`` also logs the cleaner's
    "Failed to query Ray Train Controller actor state" every few seconds.

    Does nothing when Ray is already initialised (a test session, a job driver). A new local Ray keeps
    idle task workers alive between epochs: by default Ray kills idle workers above the soft limit
    (= CPUs) after 1 s, so each epoch's Ray Data read tasks started fresh Python processes next to the
    Train workers (measured 4-5 s per epoch and dataset on 2 cores, 0.4 s with this; docs/training.md).
    """
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or os.environ["RAY_ADDRESS"])
    else:
        os.environ.setdefault("RAY_idle_worker_killing_time_threshold_ms", "600000")
        ray.init(include_dashboard=dashboard, dashboard_host="127.0.0.1")
