"""Placement by node type without a cluster (fast): when a selector applies, how CPUs are counted, the
placement log. The multi-node behaviour itself is tests/test_cluster.py."""

from __future__ import annotations

import json
import logging

import pytest

from vidray import runtime

HEAD = {"Alive": True, "Labels": {"vidray-role": "head", "ray.io/node-id": "h"}, "Resources": {"CPU": 0.0}}
INGEST = {"Alive": True, "Labels": {"vidray-role": "ingest"}, "Resources": {"CPU": 64.0}}
TRAIN = {"Alive": True, "Labels": {"vidray-role": "train"}, "Resources": {"CPU": 48.0, "GPU": 4.0}}
PLAIN = {"Alive": True, "Labels": {"ray.io/node-id": "x"}, "Resources": {"CPU": 2.0}}


@pytest.fixture
def nodes(monkeypatch):
    live: list[dict] = []
    monkeypatch.setattr(runtime, "_alive_nodes", lambda: live)
    return live


def test_selector_applies_only_on_a_cluster_that_uses_the_label_keys(nodes, caplog):
    nodes[:] = [PLAIN]  # a plain local Ray: vidray's defaults must not make the work unschedulable
    assert runtime.node_selector({"vidray-role": "ingest"}) is None
    nodes[:] = [HEAD, INGEST, TRAIN]
    assert runtime.node_selector({"vidray-role": "ingest"}) == {"vidray-role": "ingest"}
    assert runtime.node_selector({}) is None and runtime.node_selector(None) is None
    # a labelled cluster whose train nodes are not up yet (autoscaler): the selector holds, with a warning
    nodes[:] = [HEAD, INGEST]
    with caplog.at_level(logging.WARNING, logger="vidray.runtime"):
        assert runtime.node_selector({"vidray-role": "train"}, "Train workers") == {"vidray-role": "train"}
    assert "Train workers wait" in caplog.text


def test_cpus_of_the_selected_nodes_size_the_workers(nodes):
    from vidray.train.trainer import worker_cpus

    nodes[:] = [HEAD, INGEST, TRAIN, dict(TRAIN)]
    assert runtime.cluster_cpus({"vidray-role": "train"}) == 96.0
    assert runtime.cluster_cpus({"vidray-role": "ingest"}) == 64.0
    # 8 workers x 10 CPUs + 1 for Ray Data fit the two train nodes; the ingest CPUs do not count
    assert worker_cpus(8, 10, runtime.cluster_cpus({"vidray-role": "train"})) == 10
    assert runtime._matches({"vidray-role": "train"}, {"vidray-role": "!ingest"})  # operators: Ray's to evaluate


def test_plain_local_ray_applies_no_selector(ray_local):
    assert runtime.node_selector({"vidray-role": "ingest"}) is None
    assert runtime.cluster_cpus(None) == runtime.cluster_cpus({}) == 2.0


def test_placement_log(tmp_path, monkeypatch):
    monkeypatch.delenv("VIDRAY_PLACEMENT_LOG", raising=False)
    runtime.trace_placement("x")  # off: nothing written anywhere
    monkeypatch.setenv("VIDRAY_PLACEMENT_LOG", str(tmp_path / "log"))
    runtime.trace_placement("ingest_task", videos=4)
    (f,) = (tmp_path / "log").iterdir()
    rec = json.loads(f.read_text())
    assert f.name.startswith("ingest_task-") and rec["kind"] == "ingest_task" and rec["videos"] == 4
    assert rec["pid"] > 0 and "node_id" in rec
