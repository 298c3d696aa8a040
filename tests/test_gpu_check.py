"""benchmarks/gpu_check.py (issue 12 item 4) in its ``--smoke`` mode on the CPU: every figure it reports is
there, finite and positive. The real run needs a GPU (README, Benchmarks); this keeps the script working."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_cpu(tmp_path):
    out = tmp_path / "g.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--smoke", "--device", "cpu", "--json", str(out)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(out.read_text())
    figs = res["figures"]
    models = ("tdn_resnet50", "gru_rcn_vgg16")
    expected = {f"{kind}.{m}" for kind in ("train_clips_per_s", "eval_clips_per_s") for m in models}
    expected |= {f"{kind}.{d}" for kind in ("data_wait_fraction", "data_loop_clips_per_s") for d in ("cpu", "gpu")}
    assert set(figs) == expected
    for k, v in figs.items():
        assert isinstance(v, float) and math.isfinite(v) and v > 0, (k, v)
    for d in ("cpu", "gpu"):
        assert figs[f"data_wait_fraction.{d}"] < 1
    assert res["data_rows"] > 0
