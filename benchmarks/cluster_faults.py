"""What a lost ingest node costs: the same ingest with and without a node SIGKILLed half-way, on one warm
multi-node cluster (``scripts/local_cluster.py``: a head with 0 CPUs and 2 ingest nodes of 1 CPU).

    python benchmarks/cluster_faults.py --videos 240 --repeats 3

A warm-up ingest first (the nodes start their Python workers), then ``--repeats`` pairs in alternation:
a fault-free ingest and a faulted one (one ingest node's process group and workers SIGKILLed once half
of the parts are committed; a replacement node started at once, as the autoscaler would). Every run is
a ``vidray ingest`` driver subprocess into a new folder. Prints one JSON line per run, then the medians:
wall time of the command, its ratio faulted/fault-free, rows lost and duplicate clip rows (both must be
0), detection and replacement times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from local_cluster import start_cluster  # noqa: E402


def ingest(c, manifest: Path, out: Path, sets: list[str], kill_at: int | None, names: Counter) -> dict:
    args = [sys.executable, "-m", "vidray", "ingest", str(manifest), "--out", str(out), "--json"]
    for s in sets:
        args += ["--set", s]
    t0 = time.monotonic()
    p = subprocess.Popen(args, env=c.driver_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ended: dict = {}
    output: list[str] = []

    def watch() -> None:
        output.append(p.communicate()[0])
        ended["t"] = time.monotonic()

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    row: dict = {"fault": kill_at is not None}
    if kill_at is not None:
        status = out / "status"
        while p.poll() is None and (len(list(status.glob("part-*.parquet"))) if status.is_dir() else 0) < kill_at:
            time.sleep(0.05)
        victim = c.alive_names("ingest")[0]
        row["committed_at_kill"] = len(list(status.glob("part-*.parquet")))
        c.kill_node(victim)
        row["dead_detect_s"] = round(c.wait_dead(victim), 1)
        names["ingest"] += 1
        t1 = time.monotonic()
        c.add_node(f"ingest-{names['ingest']}", "ingest", num_cpus=1, timeout=300, retries=4)
        row["replacement_up_s"] = round(time.monotonic() - t1, 1)
    th.join()
    if p.returncode != 0:
        raise RuntimeError(output[0][-3000:])
    summary = json.loads([ln for ln in output[0].splitlines() if ln.startswith("{")][-1])
    row["wall_s"] = round(ended["t"] - t0, 1)
    row["ingest_s"] = round(summary["wall_s"], 1)
    row.update(check(out, summary["entries"]))
    return row


def check(out: Path, entries: int) -> dict:
    import pyarrow.parquet as pq

    from vidray.io.dataset import clip_files, read_status

    status = read_status(out).to_pylist()
    ids = Counter(r["video_id"] for r in status)
    clips = pq.read_table(clip_files(out), columns=["video_id", "chunk_index"]).to_pylist()
    keys = Counter((r["video_id"], r["chunk_index"]) for r in clips)
    return {"rows_lost": entries - len(ids), "duplicate_status_rows": sum(n - 1 for n in ids.values()),
            "duplicate_clip_rows": sum(n - 1 for n in keys.values()),
            "not_ok": sum(1 for r in status if r["status"] != "ok"),
            "tmp_files": sum(1 for p in out.rglob("*.tmp"))}  # fmt: skip


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=240)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    from vidray.synth import SynthSpec, make_corpus

    work = Path(tempfile.mkdtemp(prefix="vidray-cluster-faults-"))
    manifest = make_corpus(work / "corpus", SynthSpec(kind="motion", num_videos=a.videos, width=32, height=32,
                                                      frames=8, fps=12, seed=11))  # fmt: skip
    sets = ["resize.short_side=32", "sampling.mode=all", "output.videos_per_task=4"]
    tasks = -(-a.videos // 4)
    t0 = time.monotonic()
    c = start_cluster(ingest=2, train=0, timeout=300, retries=4)
    print(json.dumps({"cluster_up_s": round(time.monotonic() - t0, 1), "start_failures": len(c.start_failures)}),
          flush=True)  # fmt: skip
    names: Counter = Counter({"ingest": 2})
    rows = []
    try:
        ingest(c, manifest, work / "warmup", sets, None, names)
        for i in range(a.repeats):
            for fault in (False, True):
                row = ingest(c, manifest, work / f"run{i}-{'fault' if fault else 'base'}", sets,
                             tasks // 2 if fault else None, names)  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        c.stop(remove=True)
    base = [r["wall_s"] for r in rows if not r["fault"]]
    fault = [r for r in rows if r["fault"]]
    ratios = [f["wall_s"] / b for f, b in zip([r["wall_s"] for r in fault], base)]
    print(json.dumps({
        "videos": a.videos, "tasks": tasks, "repeats": a.repeats,
        "median_wall_s": statistics.median(base), "median_wall_fault_s": statistics.median(r["wall_s"] for r in fault),
        "median_extra_s": round(statistics.median(f["wall_s"] - b for f, b in zip(fault, base)), 1),
        "median_ratio": round(statistics.median(ratios), 2), "ratios": [round(x, 2) for x in ratios],
        "median_dead_detect_s": statistics.median(r["dead_detect_s"] for r in fault),
        "median_replacement_up_s": statistics.median(r["replacement_up_s"] for r in fault),
        "rows_lost": sum(r["rows_lost"] for r in rows), "duplicates": sum(r["duplicate_clip_rows"] +
                                                                          r["duplicate_status_rows"] for r in rows),
        "not_ok": sum(r["not_ok"] for r in rows), "tmp_files": sum(r["tmp_files"] for r in rows),
    }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
