"""Corpus scale: the driver's bookkeeping at FCVID and Sports-1M sizes, on local disk and on S3.

Simulated corpora, no decoding: a generated manifest (class-sorted ``path,label,split,video_id`` rows as
``vidray.io.convert`` writes them; Sports-1M: 487 classes, 5% of rows with two labels) and a synthetic
COMPLETE output in the real on-disk format (``dataset.json``, a status snapshot of every entry, the
status parts a killed run leaves uncompacted, and one clips part per ``output.target_part_mb`` of the
assumed bytes per video; the clips parts are one valid small Parquet file each, since only their
listing and sizes are read here). For each corpus and store it measures, median of ``--repeats``:

* ``fresh_plan``: ``vidray ingest MANIFEST --out EMPTY --dry-run --json`` in a subprocess (manifest
  read + plan, the driver's work before Ray starts): wall seconds and the process's peak RSS;
* ``resume_plan``: the same over the complete output (LIST + status snapshot + uncovered parts +
  LIST of clips + anti-join), and with ``--retry-failed``;
* ``open_for_training``: ``IngestDataset(out).files`` + the status counts (what ``vidray train`` does
  before Ray Data starts), in this process;
* ``prepare_run``: what a resumed ``vidray ingest`` does first (fold the uncovered parts into a new
  snapshot, delete them and the orphans);
* ``per_part_baseline``: reading the status one file per part as before this design (a sample of
  ``--baseline-parts`` parts, sequential as ``read_status`` did), extrapolated to one part per
  4-video task (283,290 parts for Sports-1M) -- the ratio against ``resume_plan`` is the gain.

S3 is moto's server on loopback in its own process (the store the tests use): its per-request cost is
not AWS's (~35 ms per GET here, one process serialising requests), so read the S3 rows as an upper
bound on request count effects, not as AWS latency.

    python benchmarks/scale.py                 # FCVID + Sports-1M, local + S3, 3 repeats (~10-20 min on 2 cores)
    python benchmarks/scale.py --quick         # FCVID only, 1 repeat (~2 min)
    python benchmarks/scale.py --sizes sports1m --stores local --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vidray.config import IngestConfig  # noqa: E402
from vidray.io import dataset as fmt  # noqa: E402
from vidray.io.schema import CLIP_SCHEMA, SNAPSHOT_SCHEMA  # noqa: E402
from vidray.io.store import Store  # noqa: E402

CORPORA = {  # videos, classes, assumed MB of clips per video (frames + flow at the recipes' settings)
    "fcvid": {"videos": 91_223, "classes": 239, "mb_per_video": 3.0, "multi": 0.0},
    "sports1m": {"videos": 1_133_158, "classes": 487, "mb_per_video": 7.0, "multi": 0.05},
}
TARGETS = {"fresh_plan_s": 15.0, "fresh_plan_rss_mb": 1024.0, "resume_local_s": 30.0, "resume_s3_s": 120.0,
           "open_s": 30.0}
CREDS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


# ------------------------------------------------------------------------------------------------
# the corpus
# ------------------------------------------------------------------------------------------------
def write_manifest(path: Path, videos: int, classes: int, multi: float, seed: int = 0) -> None:
    """Class-sorted rows like the converters write (ids of 11 characters, as YouTube's)."""
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    cls = np.sort(rng.integers(0, classes, videos))
    names = np.array([f"sport_{c:03d}" for c in range(classes)], dtype=object)
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"))
    ids = ["".join(r) for r in alphabet[rng.integers(0, 64, (videos, 11))]]
    ids = [f"{v}{i:x}" for i, v in enumerate(ids)]  # unique
    label = names[cls]
    two = rng.random(videos) < multi
    label = np.where(two, label + "|" + names[(cls + 1) % classes], label)
    split = np.where(rng.random(videos) < 0.8, "train", "test")
    paths = [f"{n}/{v}.mp4" for n, v in zip(names[cls], ids)]
    pcsv.write_csv(pa.table({"path": paths, "label": label.astype(str), "split": split, "video_id": ids}), str(path))


def synth_output(st: Store, manifest: Path, mb_per_video: float, target_mb: float, uncovered: int,
                 threads: int = 16) -> dict[str, Any]:  # fmt: skip
    """A complete ingest output of every manifest entry in the real format (see module doc)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from vidray.io.manifest import read_manifest

    t0 = time.perf_counter()
    man = read_manifest(manifest)
    cfg = IngestConfig()
    n = len(man)
    per_part = max(1, int(target_mb / mb_per_video))
    order = np.random.default_rng(0).permutation(n)  # the seeded order: parts mix classes
    part_of = np.empty(n, np.int64)
    part_of[order] = np.arange(n) // per_part
    n_parts = int(part_of.max()) + 1
    keys = np.array([f"{k:020x}" for k in range(n_parts)], dtype=object)
    # one small valid clips file, the same bytes for every part (only listings and sizes are read)
    tmpl = pa.Table.from_pylist([{"video_id": "x", "labels": [0], "frames": [b"\xff\xd8"]}], schema=CLIP_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(tmpl, sink)
    clip_bytes = sink.getvalue().to_pybytes()
    for d in (fmt.CLIPS_DIR, fmt.STATUS_DIR):
        st.makedirs(d)

    def put(name: str) -> None:
        with st.fs.open_output_stream(st.path(f"{fmt.CLIPS_DIR}/part-{name}.parquet")) as f:
            f.write(clip_bytes)

    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(put, keys))
    t_clips = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    failed = rng.random(n) < 0.03
    nbytes = np.where(failed, 0, int(mb_per_video * 1e6)).astype(np.int64)
    t = man.table
    status = pa.table({
        "video_id": t["video_id"], "path": t["path"], "manifest_row": t["row"], "labels": t["labels"],
        "split": t["split"], "status": pa.array(np.where(failed, "failed", "ok")),
        "error_type": pa.array(np.where(failed, "VideoDecodeError", "")),
        "error": pc.if_else(pa.array(failed), pc.binary_join_element_wise(t["path"], ": cannot open container: "
                                                                          "InvalidDataError", ""), ""),
        "num_frames": pa.array(np.where(failed, 0, 300), pa.int64()), "num_flow": pa.array(np.where(failed, 0, 300)),
        "num_chunks": pa.array(np.where(failed, 0, 3), pa.int32()), "bytes": pa.array(nbytes),
        "seconds": pa.array(np.full(n, 9.5)), "run": pa.array(np.ones(n, np.int32)),
        "clips_bytes": pa.array(np.full(n, len(clip_bytes), np.int64)), "part": pa.array(keys[part_of], pa.string()),
    }).cast(SNAPSHOT_SCHEMA)  # fmt: skip
    # the last `uncovered` parts are still per-part files (a run killed before its next compaction)
    last = part_of >= n_parts - uncovered
    snap = status.filter(pa.array(~last))
    snap = snap.take(pc.sort_indices(snap["part"]))
    t1 = time.perf_counter()
    with st.fs.open_output_stream(st.path(f"{fmt.STATUS_DIR}/compacted-00000001.parquet")) as f:
        pq.write_table(snap, f, row_group_size=fmt.SNAPSHOT_ROW_GROUP)
    rest = status.filter(pa.array(last))
    groups = rest.group_by("part").aggregate([]).column("part").to_pylist()

    def put_status(key: str) -> None:
        part = rest.filter(pc.equal(rest["part"], key)).drop_columns(["part"])
        with st.fs.open_output_stream(st.path(f"{fmt.STATUS_DIR}/part-{key}.parquet")) as f:
            pq.write_table(part, f)

    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(put_status, groups))
    fmt.write_dataset_json(st, vidray_version="bench", state="running", manifest={"source": str(manifest),
                           "sha256": man.sha256, "entries": n, "root": man.root}, classes=man.classes,
                           data_hash=cfg.data_hash(), config=cfg.model_dump(mode="json"), counts={}, runs=1,
                           order_seed=0)  # fmt: skip
    return {"videos": n, "clips_parts": n_parts, "videos_per_part": per_part, "uncovered_parts": len(groups),
            "failed": int(failed.sum()), "snapshot_mb": round(st.size(f"{fmt.STATUS_DIR}/compacted-00000001.parquet")
                                                                / 1e6, 1),
            "write_clips_s": round(t_clips, 1), "write_status_s": round(time.perf_counter() - t1, 1)}


# ------------------------------------------------------------------------------------------------
# measurements
# ------------------------------------------------------------------------------------------------
_CHILD = ("import atexit, resource, runpy, sys\n"
          "r = lambda: resource.getrusage(resource.RUSAGE_SELF)\n"
          "atexit.register(lambda: sys.stderr.write('\\nPEAK_RSS_MB %.0f CPU_S %.2f\\n' % "
          "(r().ru_maxrss / 1024, r().ru_utime + r().ru_stime)))\n"
          "sys.argv = ['vidray'] + sys.argv[1:]\n"
          "runpy.run_module('vidray', run_name='__main__')\n")


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, float, float, dict]:
    """``python -m vidray ARGS`` in a child: (wall s, its CPU s (user+sys, all threads), its peak RSS MB,
    its --json last line). On a shared machine the CPU seconds are the steadier figure."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"vidray {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    tail = p.stderr.rsplit("PEAK_RSS_MB", 1)[1].split()
    return wall, float(tail[2]), float(tail[0]), json.loads(p.stdout.strip().splitlines()[-1])


def median_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    ts, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def open_for_training(uri: str) -> dict[str, Any]:
    import pyarrow.compute as pc

    from vidray.io.reader import IngestDataset

    ds = IngestDataset(uri)
    files = ds.files
    st = ds.status()
    return {"files": len(files), "entries": st.num_rows, "ok": int(pc.sum(pc.equal(st["status"], "ok")).as_py())}


def per_part_baseline(st: Store, sample: int, manifest_rows: int, per_task: int = 4) -> dict[str, Any]:
    """The status as one file per task, read one by one (before this design): seconds per part on a
    sample, extrapolated to ``manifest_rows / per_task`` parts."""
    import pyarrow.parquet as pq

    from vidray.io.schema import STATUS_SCHEMA

    base = [f.name for f in STATUS_SCHEMA if f.name not in ("run", "clips_bytes")]
    rows = pa.Table.from_pylist([{"video_id": f"b{i}", "path": f"c/b{i}.mp4", "manifest_row": i, "labels": [1],
                                  "split": "train", "status": "ok", "error_type": "", "error": "", "num_frames": 300,
                                  "num_flow": 300, "num_chunks": 3, "bytes": 7_000_000, "seconds": 9.5}
                                 for i in range(per_task)]).select(base)  # fmt: skip
    st.makedirs("baseline")

    def put(k: int) -> None:
        with st.fs.open_output_stream(st.path(f"baseline/part-{k:020x}.parquet")) as f:
            pq.write_table(rows, f)

    with ThreadPoolExecutor(16) as ex:
        list(ex.map(put, range(sample)))
    t0 = time.perf_counter()
    names = st.list("baseline", "part-", ".parquet")
    for name in names:
        pq.read_table(st.path(f"baseline/{name}"), filesystem=st.fs)
    per = (time.perf_counter() - t0) / len(names)
    parts = -(-manifest_rows // per_task)
    return {"sample_parts": len(names), "ms_per_part": round(per * 1e3, 2), "parts": parts,
            "extrapolated_s": round(per * parts, 1)}


@contextlib.contextmanager
def moto() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 in a child process (its own GIL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("from moto.server import ThreadedMotoServer; import sys\n"
            f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False); s.start()\n"
            "print('up', flush=True)\nsys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert p.stdout.readline().strip() == "up"
        yield f"http://127.0.0.1:{port}"
    finally:
        p.stdin.close()
        p.terminate()
        p.wait(10)


def bench_store(name: str, corpus: str, manifest: Path, uri: str, env: dict[str, str], a: argparse.Namespace,
                log: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    c = CORPORA[corpus]
    st = Store(uri)
    res: dict[str, Any] = {"corpus": corpus, "store": name}
    base = ["ingest", str(manifest), "--out", uri, "--dry-run", "--json"]
    walls, cpus, rss = [], [], []
    for _ in range(a.repeats):
        w, cp, r, d = run_cli([*base[:3], uri + "-empty", *base[4:]], env)
        walls.append(w)
        cpus.append(cp)
        rss.append(r)
    assert d["todo"] == c["videos"], d
    res["fresh_plan_s"], res["fresh_plan_cpu_s"] = round(statistics.median(walls), 1), round(statistics.median(cpus), 1)
    res["fresh_plan_rss_mb"] = round(max(rss))
    log(f"{corpus}/{name}: fresh plan {res['fresh_plan_s']} s ({res['fresh_plan_cpu_s']} CPU-s), peak RSS "
        f"{res['fresh_plan_rss_mb']} MB")
    res["synthetic_output"] = synth_output(st, manifest, c["mb_per_video"], a.target_mb, a.uncovered)
    log(f"{corpus}/{name}: synthetic output {res['synthetic_output']}")
    walls, cpus, rss = [], [], []
    for retry in [False] * a.repeats + [True]:
        w, cp, r, d = run_cli(base + (["--retry-failed"] if retry else []), env)
        if retry:
            res["resume_retry_failed_s"], res["retry_failed_todo"] = round(w, 1), d["todo"]
        else:
            walls.append(w)
            cpus.append(cp)
            rss.append(r)
    assert d["done"] == c["videos"] - res["retry_failed_todo"] and d["status_files_read"] == a.uncovered + 1, d
    res["resume_plan_s"], res["resume_plan_rss_mb"] = round(statistics.median(walls), 1), round(max(rss))
    res["resume_plan_cpu_s"] = round(statistics.median(cpus), 1)
    res["resume_status_files_read"] = d["status_files_read"]
    log(f"{corpus}/{name}: resume plan {res['resume_plan_s']} s ({res['resume_plan_cpu_s']} CPU-s, RSS "
        f"{res['resume_plan_rss_mb']} MB), "
        f"--retry-failed {res['resume_retry_failed_s']} s")
    t, o = median_of(a.repeats, lambda: open_for_training(uri))
    res["open_for_training_s"], res["clip_files"] = round(t, 2), o["files"]
    assert o["entries"] == c["videos"] and o["files"] == res["synthetic_output"]["clips_parts"], o
    log(f"{corpus}/{name}: open for training {res['open_for_training_s']} s ({o['files']} files)")
    t0 = time.perf_counter()
    fmt.prepare_run(st)
    res["prepare_run_s"] = round(time.perf_counter() - t0, 1)
    t, o = median_of(a.repeats, lambda: open_for_training(uri))
    res["open_after_compaction_s"] = round(t, 2)
    log(f"{corpus}/{name}: prepare_run (fold {a.uncovered} parts) {res['prepare_run_s']} s; open again {t:.2f} s")
    if a.baseline_parts:
        res["per_part_baseline"] = per_part_baseline(st, a.baseline_parts, c["videos"])
        res["speedup_vs_per_part"] = round(res["per_part_baseline"]["extrapolated_s"] / res["resume_plan_s"], 1)
        log(f"{corpus}/{name}: per-part baseline {res['per_part_baseline']} -> x{res['speedup_vs_per_part']}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="FCVID only, 1 repeat")
    ap.add_argument("--sizes", default=None, help="comma-separated: fcvid,sports1m (default both)")
    ap.add_argument("--stores", default="local,s3", help="comma-separated: local,s3")
    ap.add_argument("--repeats", type=int, default=None, help="median of N (default 3, --quick 1)")
    ap.add_argument("--target-mb", type=float, default=IngestConfig().output.target_part_mb)
    ap.add_argument("--uncovered", type=int, default=fmt.COMPACT_EVERY_PARTS,
                    help="status parts not yet compacted (a run killed just before its next compaction)")
    ap.add_argument("--baseline-parts", type=int, default=1000, help="per-part status sample (0: skip)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp dir, deleted)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    a.repeats = a.repeats or (1 if a.quick else 3)
    sizes = (a.sizes or ("fcvid" if a.quick else "fcvid,sports1m")).split(",")
    stores = a.stores.split(",")
    work = Path(a.work or tempfile.mkdtemp(prefix="vidray-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))

    def log(s: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {s}", flush=True)

    results: dict[str, Any] = {"machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
                               "targets": TARGETS, "runs": []}  # fmt: skip
    try:
        for corpus in sizes:
            c = CORPORA[corpus]
            manifest = work / f"{corpus}.csv"
            t0 = time.perf_counter()
            write_manifest(manifest, c["videos"], c["classes"], c["multi"])
            log(f"{corpus}: manifest {c['videos']:,} rows, {manifest.stat().st_size / 1e6:.0f} MB in "
                f"{time.perf_counter() - t0:.1f} s")
            for store in stores:
                if store == "local":
                    results["runs"].append(bench_store("local", corpus, manifest, str(work / f"{corpus}_out"), env, a,
                                                       log))
                else:
                    with moto() as endpoint:
                        s3env = dict(env, **CREDS, AWS_ENDPOINT_URL=endpoint)
                        os.environ.update(CREDS, AWS_ENDPOINT_URL=endpoint)
                        import pyarrow.fs as pafs

                        pafs.S3FileSystem(endpoint_override=endpoint, access_key="test", secret_key="test",
                                          region="us-east-1", allow_bucket_creation=True).create_dir("bench")
                        results["runs"].append(bench_store("s3", corpus, manifest, f"s3://bench/{corpus}_out", s3env,
                                                           a, log))
                        for k in ("AWS_ENDPOINT_URL", *CREDS):
                            os.environ.pop(k, None)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"] += f" -> {os.getloadavg()[0]:.1f} at the end"
    print(json.dumps(results))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
