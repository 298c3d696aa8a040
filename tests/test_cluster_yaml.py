"""``cluster.yaml`` validates offline, with Ray's own schema and the checks ``ray up`` runs first.

``ray up`` starts with ``_bootstrap_config``: ``prepare_config`` (merge the provider's defaults.yaml,
fold ``setup_commands`` into head/worker setup, fill per-type min/max workers: file reads only), then
the AWS provider's resource autodetection and ``validate_config`` (``ray-schema.json`` plus the
head-type and max-workers rules), then ``bootstrap_config`` (IAM, key pairs, subnets: AWS calls). The
offline path here is ``prepare_config`` + ``validate_config``; the AWS steps are skipped, which is why
cluster.yaml states every node type's ``resources`` itself (autodetection would ask AWS).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def _schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _ray_up_checks(config: dict) -> dict:
    """What ``ray up`` does to a config before it talks to the cloud. Returns the prepared config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_raw_file_matches_ray_schema(raw):
    jsonschema.validate(raw, _schema())


def test_prepare_and_validate_offline(raw):
    before = set(sys.modules)
    prepared = _ray_up_checks(raw)
    new = set(sys.modules) - before
    # Nothing that talks to AWS was even imported (the AWS node provider and config modules import boto3).
    assert not [m for m in new if m.startswith(("boto3", "botocore", "ray.autoscaler._private.aws"))]
    assert prepared["head_node_type"] == "head"
    # prepare_config merged the common setup into both head and worker setup.
    install = [c for c in prepared["setup_commands"] if "vidray-dist/vidray-" in c]
    assert install and install[0] in prepared["head_setup_commands"] and install[0] in prepared["worker_setup_commands"]
    assert any("boto3" in c for c in prepared["head_setup_commands"])  # the autoscaler's AWS provider needs it


def test_node_types_place_stages(raw):
    types = raw["available_node_types"]
    head, cpu, gpu = types["head"]["resources"], types["cpu_ingest"]["resources"], types["gpu_train"]["resources"]
    assert head.get("CPU") == 0 and not head.get("GPU")  # drivers only: work goes to workers
    assert cpu["CPU"] >= 32 and not cpu.get("GPU")  # ingest: many cores, no GPU
    assert gpu["GPU"] >= 1 and gpu["CPU"] >= 4 * gpu["GPU"]  # training: GPUs plus CPUs to feed them
    assert "GPU" not in cpu and "GPU" not in head  # only gpu_train satisfies ScalingConfig(use_gpu=True)
    workers = sum(t.get("max_workers", 0) for name, t in types.items() if name != raw["head_node_type"])
    assert workers <= raw["max_workers"]


def test_shared_storage_and_auth(raw):
    init = " ".join(raw["initialization_commands"])
    assert "mount -t nfs4" in init and "/mnt/vidray" in init
    env = " ".join(raw["setup_commands"])
    assert "RAY_AUTH_MODE=token" in env and "VIDRAY_SHARED=/mnt/vidray" in env
    assert raw["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    start = " ".join(raw["head_start_ray_commands"])
    assert "mlflow server --backend-store-uri sqlite:////mnt/vidray/" in start
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in " ".join(raw["worker_start_ray_commands"])


@pytest.mark.parametrize(
    "breakage",
    [
        ("unknown top-level key", lambda c: c.update(setup_command=["echo typo"])),
        ("head type not a node type", lambda c: c.update(head_node_type="ray.head.default")),
        ("fractional resource", lambda c: c["available_node_types"]["gpu_train"]["resources"].update(GPU=0.5)),
        ("node type without node_config", lambda c: c["available_node_types"]["cpu_ingest"].pop("node_config")),
        ("min_workers above max_workers", lambda c: c["available_node_types"]["cpu_ingest"].update(min_workers=40)),
    ],
    ids=lambda b: b[0],
)
def test_validation_rejects_broken_configs(raw, breakage):
    """The checks are real: each of these edits makes Ray refuse the config, offline."""
    _, edit = breakage
    broken = copy.deepcopy(raw)
    edit(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        _ray_up_checks(broken)


def test_node_labels_are_the_placement_defaults(raw):
    """vidray's placement defaults select cluster.yaml's node types by their labels."""
    from vidray.config import IngestConfig, TrainConfig
    from vidray.tune import SweepConfig

    types = raw["available_node_types"]
    assert types["cpu_ingest"]["labels"] == IngestConfig().execution.node_labels
    assert types["gpu_train"]["labels"] == TrainConfig().ray.node_labels == SweepConfig().node_labels
    assert types["head"]["labels"] not in (types["cpu_ingest"]["labels"], types["gpu_train"]["labels"])


def test_docs_use_the_paths_of_cluster_yaml():
    """Every shared path cluster.yaml mounts or creates is in docs/cluster.md, and every /mnt/vidray
    folder the docs use is one cluster.yaml creates (so a job copied from the docs finds its folders)."""
    import re

    text = (REPO / "cluster.yaml").read_text()
    docs = (REPO / "docs" / "cluster.md").read_text()
    yaml_paths = set(re.findall(r"/mnt/vidray(?:/[\w.-]+)*", text)) | set(re.findall(r"s3://\$VIDRAY_BUCKET(?:/[\w.-]+)*", text))
    assert {"/mnt/vidray", "/mnt/vidray/data", "/mnt/vidray/runs", "s3://$VIDRAY_BUCKET/mlflow-artifacts"} <= yaml_paths
    missing = sorted(p for p in yaml_paths if p not in docs)
    assert not missing, f"cluster.yaml paths not in docs/cluster.md: {missing}"
    created = set(re.search(r"mkdir -p ((?:/mnt/vidray/\S+ ?)+)", text).group(1).split())
    used = {"/".join(p.split("/")[:4]) for p in re.findall(r"/mnt/vidray/\w[\w.-]*(?:/[\w.-]+)*", docs)}
    assert used <= created, f"docs/cluster.md uses folders cluster.yaml never creates: {sorted(used - created)}"
