"""``vidray inspect``: look at an ingest output or a training run without writing Python.

* ``vidray inspect DATA``: state, counts by split / class / status, frames and bytes, the sampling and
  flow settings, failures grouped by error type (the first examples of each). ``--html FILE`` writes
  ONE self-contained page (images inlined as ``data:`` URIs): that summary, a contact sheet per class
  (a few videos, their sampled frames and flow coloured by :func:`vidray.flow.flow_to_rgb` with its
  colour key) and the failures table.
* ``vidray inspect RUN``: the config, status, best and last metrics, where the checkpoints and plots
  are.

Everything comes from the status table (one row per manifest entry: counts never decode anything) and
``dataset.json``; the contact sheet reads clip parts until it has its examples.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DatasetReport", "RunReport", "inspect_dataset", "inspect_run", "dataset_html", "is_run_dir"]


@dataclass
class DatasetReport:
    """What ``vidray inspect DATA`` shows (``--json``: this, as one object)."""

    path: str
    state: str
    entries: int
    by_status: dict[str, int]
    by_split: dict[str, dict[str, int]]  # split -> status -> count
    by_class: dict[str, dict[str, int]]  # class -> split -> ok videos
    frames: int
    flow_stacks: int
    bytes: int
    files: int
    sampling: dict[str, Any]
    resize: dict[str, Any]
    flow: dict[str, Any]
    failures: dict[str, dict[str, Any]]  # error_type -> {"count": n, "examples": [{"video_id", "error"}]}
    manifest: dict[str, Any] = field(default_factory=dict)

    def format(self) -> str:
        lines = [f"vidray dataset {self.path}  [{self.state}]",
                 f"  entries {self.entries}: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items())),
                 f"  frames {self.frames:,}, flow stacks {self.flow_stacks:,}, {self.bytes / 1e6:,.1f} MB encoded in "
                 f"{self.files} clips parts"]  # fmt: skip
        s = self.sampling
        keys = _MODE_KEYS.get(str(s.get("mode")), ()) + ("max_seconds", "max_frames")
        lines.append(f"  sampling {s.get('mode')}: " + (", ".join(f"{k}={s[k]}" for k in keys if s.get(k) is not None)
                                                         or "every frame"))
        lines.append(f"  frames stored at short side {self.resize.get('short_side')}; flow " +
                     (f"{self.flow.get('algorithm')} L={self.flow.get('stack_length')} bound {self.flow.get('bound')} px"
                      if self.flow.get("enabled") else "off"))  # fmt: skip
        lines.append("  split       " + "  ".join(f"{st:>8}" for st in ("ok", "failed", "skipped")))
        for split, c in sorted(self.by_split.items()):
            lines.append(f"  {split:<10}  " + "  ".join(f"{c.get(st, 0):>8}" for st in ("ok", "failed", "skipped")))
        splits = sorted({sp for c in self.by_class.values() for sp in c})
        lines.append(f"  {len(self.by_class)} classes (ok videos per split: {', '.join(splits)}):")
        for name, c in list(self.by_class.items())[:40]:
            lines.append(f"    {name[:28]:<28} " + " ".join(f"{c.get(sp, 0):>6}" for sp in splits))
        if len(self.by_class) > 40:
            lines.append(f"    ... {len(self.by_class) - 40} more (--json lists all)")
        empty = [n for n, c in self.by_class.items() if not c.get("train")]
        if empty:
            lines.append(f"  WARNING: {len(empty)} classes have no ok training video: {', '.join(empty[:8])}")
        for et, f in sorted(self.failures.items(), key=lambda x: -x[1]["count"]):
            lines.append(f"  {f['count']:>6} x {et}: {f['examples'][0]['error']}")
        return "\n".join(lines)


_MODE_KEYS = {"fps": ("fps", "loop"), "every_s": ("interval_s",), "segments": ("num_segments", "random_offset"),
              "clip": ("clip_len", "frame_interval", "num_clips"), "all": ()}


def _counts(col_a: list, col_b: list) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for a, b in zip(col_a, col_b):
        d = out.setdefault(str(a), {})
        d[str(b)] = d.get(str(b), 0) + 1
    return out


def inspect_dataset(data: str | Path, examples: int = 3) -> DatasetReport:
    """The :class:`DatasetReport` of an ingest output (local or ``s3://``)."""
    import pyarrow.compute as pc

    from vidray.io.reader import IngestDataset

    ds = IngestDataset(data)
    st = ds.status()
    meta, classes = ds.meta, ds.classes
    cfg = meta.get("config") or {}
    d = st.select(["video_id", "split", "status", "error_type", "error", "labels", "num_frames", "num_flow",
                   "bytes"]).to_pydict()  # fmt: skip
    ok = [s == "ok" for s in d["status"]]
    by_class: dict[str, dict[str, int]] = {c: {} for c in classes}
    for labels, split, good in zip(d["labels"], d["split"], ok):
        if good:
            for c in labels or []:
                name = classes[c] if 0 <= c < len(classes) else str(c)
                by_class.setdefault(name, {})[split] = by_class[name].get(split, 0) + 1
    failures: dict[str, dict[str, Any]] = {}
    for vid, s, et, err in zip(d["video_id"], d["status"], d["error_type"], d["error"]):
        if s != "ok":
            f = failures.setdefault(et or s, {"count": 0, "examples": []})
            f["count"] += 1
            if len(f["examples"]) < examples:
                f["examples"].append({"video_id": vid, "status": s, "error": err})
    return DatasetReport(
        path=ds.out, state=str(meta.get("state")), entries=st.num_rows, by_status=dict(Counter(d["status"])),
        by_split=_counts(d["split"], d["status"]), by_class=by_class,
        frames=int(pc.sum(st["num_frames"]).as_py() or 0), flow_stacks=int(pc.sum(st["num_flow"]).as_py() or 0),
        bytes=int(pc.sum(st["bytes"]).as_py() or 0), files=len(ds.files), sampling=cfg.get("sampling") or {},
        resize=cfg.get("resize") or {}, flow=cfg.get("flow") or {}, failures=failures,
        manifest=meta.get("manifest") or {},
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# the HTML page
# ------------------------------------------------------------------------------------------------
def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _jpeg(img: np.ndarray) -> bytes:
    from vidray.io.imcodec import encode_image

    return encode_image(img, "jpeg", 85)


def _contact_rows(data: str | Path, classes: list[str], per_class: int, frames: int,
                  max_parts: int = 64) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """Up to ``per_class`` ok videos per class, each with ``frames`` evenly spaced stored frames (their
    JPEG bytes as stored) and, when flow was ingested, the first flow field of each coloured."""
    from vidray.data.loader import iter_rows
    from vidray.flow import flow_to_rgb
    from vidray.io.reader import IngestDataset

    ds = IngestDataset(data)
    cols = ["video_id", "labels", "split", "frame_index", "frame_encoding", "frame_height", "frame_width", "frames",
            "flow", "flow_meta", "chunk_index"]  # fmt: skip
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in classes}
    import pyarrow.compute as pc

    for n, t in enumerate(ds.iter_tables(cols)):
        t = t.filter(pc.equal(t["chunk_index"], 0))
        for row in iter_rows(t):
            name = classes[row.labels[0]] if row.labels and 0 <= row.labels[0] < len(classes) else "?"
            bucket = out.setdefault(name, [])
            if len(bucket) >= per_class or row.num_frames == 0:
                continue
            idx = np.unique(np.linspace(0, row.num_frames - 1, min(frames, row.num_frames)).round().astype(int))
            item: dict[str, Any] = {"video_id": row.video_id, "frame_index": row.frame_index[idx].tolist(),
                                    "frames": [_jpeg(f) for f in row.frames(idx)], "flow": []}  # fmt: skip
            if row.flow_meta is not None:
                item["flow"] = [_jpeg(flow_to_rgb(f[:2].transpose(1, 2, 0))) for f in row.flow(idx)]
            bucket.append(item)
        if all(len(v) >= per_class for v in out.values()) or n + 1 >= max_parts:
            break
    return out


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222} h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} .cls{margin:1em 0} .vid{display:flex;gap:3px;align-items:center;
margin:3px 0} .vid img{height:72px} .vid .id{width:14em;font-size:.8em;overflow:hidden} .flow img{height:72px}
.key{float:right;text-align:center;font-size:.8em} .warn{color:#a30}
"""


def dataset_html(report: DatasetReport, data: str | Path, *, per_class: int = 3, frames: int = 6,
                 max_classes: int = 50) -> str:  # fmt: skip
    """One self-contained HTML page: summary, contact sheet per class (frames + coloured flow + the
    colour key), failures."""
    from vidray.flow import flow_color_key

    esc = html.escape
    classes = list(report.by_class)[:max_classes]
    sheet = _contact_rows(data, classes, per_class, frames)
    p: list[str] = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>vidray dataset "
                    f"{esc(report.path)}</title><style>{_CSS}</style></head><body>",
                    f"<h1>vidray dataset <code>{esc(report.path)}</code> ({esc(report.state)})</h1>"]  # fmt: skip
    p.append("<h2 id='summary'>Summary</h2><table><tr><th class='l'>split</th><th>ok</th><th>failed</th>"
             "<th>skipped</th></tr>")
    for split, c in sorted(report.by_split.items()):
        p.append(f"<tr><td class='l'>{esc(split)}</td>" + "".join(f"<td>{c.get(s, 0)}</td>"
                                                               for s in ("ok", "failed", "skipped")) + "</tr>")
    p.append("</table>")
    p.append(f"<p>{report.entries} entries; {report.frames:,} frames, {report.flow_stacks:,} flow stacks, "
             f"{report.bytes / 1e6:,.1f} MB in {report.files} clips parts. Sampling: <code>"
             f"{esc(json.dumps(report.sampling))}</code>; flow: <code>{esc(json.dumps(report.flow))}</code>.</p>")
    splits = sorted({sp for c in report.by_class.values() for sp in c})
    p.append("<h2 id='classes'>Classes</h2><table><tr><th class='l'>class</th>" +
             "".join(f"<th>{esc(s)}</th>" for s in splits) + "</tr>")  # fmt: skip
    for name, c in report.by_class.items():
        warn = " class='l warn'" if not c.get("train") else " class='l'"
        p.append(f"<tr><td{warn}>{esc(name)}</td>" + "".join(f"<td>{c.get(s, 0)}</td>" for s in splits) + "</tr>")
    p.append("</table>")
    p.append("<h2 id='contact-sheet'>Contact sheet</h2>")
    if report.flow.get("enabled"):
        key = _data_uri(_jpeg(flow_color_key(96)), "image/jpeg")
        p.append(f"<div class='key'><img src='{key}' alt='flow colour key' width='96'><br>flow colour key:<br>hue = "
                 "direction, saturation = speed<br>(each image scaled to its own maximum)</div>")
    for name in classes:
        p.append(f"<div class='cls'><h3>{esc(name)}</h3>")
        for v in sheet.get(name, []):
            imgs = "".join(f"<img src='{_data_uri(b, 'image/jpeg')}' alt='{esc(v['video_id'])} frame {i}' "
                           f"title='source frame {i}'>" for b, i in zip(v["frames"], v["frame_index"]))
            p.append(f"<div class='vid'><span class='id'>{esc(v['video_id'])}</span>{imgs}</div>")
            if v["flow"]:
                fl = "".join(f"<img src='{_data_uri(b, 'image/jpeg')}' alt='{esc(v['video_id'])} flow {i}'>"
                             for b, i in zip(v["flow"], v["frame_index"]))
                p.append(f"<div class='vid flow'><span class='id'>flow</span>{fl}</div>")
        if not sheet.get(name):
            p.append("<p class='warn'>no ok video</p>")
        p.append("</div>")
    p.append("<h2 id='failures'>Failures</h2>")
    if report.failures:
        p.append("<table id='failures-table'><tr><th class='l'>error type</th><th>count</th><th class='l'>video</th>"
                 "<th class='l'>error</th></tr>")
        for et, f in sorted(report.failures.items(), key=lambda x: -x[1]["count"]):
            for j, ex in enumerate(f["examples"]):
                head = f"<td class='l'>{esc(et)}</td><td>{f['count']}</td>" if j == 0 else "<td></td><td></td>"
                p.append(f"<tr>{head}<td class='l'>{esc(ex['video_id'])}</td><td class='l'>{esc(ex['error'])}</td></tr>")
        p.append("</table>")
    else:
        p.append("<p>none</p>")
    p.append("</body></html>")
    return "\n".join(p)


# ------------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------------
@dataclass
class RunReport:
    """What ``vidray inspect RUN`` shows."""

    path: str
    model: str | None
    status: str | None
    epochs_done: int
    epochs: int | None
    last: dict[str, float]
    best: dict[str, Any]
    checkpoints: list[str]
    plots: list[str]
    mlflow: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    def format(self) -> str:
        fmt = lambda m: ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())  # noqa: E731
        return "\n".join([
            f"vidray run {self.path}: {self.model}, {self.status}, {self.epochs_done}/{self.epochs} epochs",
            f"  last: {fmt(self.last)}",
            f"  best: {fmt(self.best)}",
            f"  checkpoints: {', '.join(self.checkpoints) or 'none'}",
            f"  plots: {', '.join(self.plots) or 'none yet (written when training ends)'}",
            f"  MLflow run {self.mlflow.get('run_id')} at {self.mlflow.get('tracking_uri')}",
        ])  # fmt: skip


def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / "run.json").is_file() or (p / "checkpoints").is_dir()


def inspect_run(run: str | Path) -> RunReport:
    """The :class:`RunReport` of a ``vidray train --out`` folder (from its newest checkpoint's history)."""
    import yaml

    from vidray.io.checkpoint import list_checkpoints, load_checkpoint

    p = Path(run)
    if not is_run_dir(p):
        raise FileNotFoundError(f"{p} is neither an ingest output (dataset.json) nor a run folder (run.json)")
    info = json.loads((p / "run.json").read_text()) if (p / "run.json").is_file() else {}
    cfg = yaml.safe_load((p / "config.yaml").read_text()) if (p / "config.yaml").is_file() else {}
    cks = list_checkpoints(p)
    history: list[dict[str, Any]] = []
    if cks:
        history = list(load_checkpoint(cks[-1][1]).get("history") or [])
    last = {k: v for k, v in (history[-1] if history else {}).items() if isinstance(v, (int, float))}
    attr = (cfg.get("checkpoint") or {}).get("score_attribute", "val_top1")
    scored = [h for h in history if isinstance(h.get(attr), (int, float))]
    if not scored:
        attr, scored = "train_loss", [h for h in history if isinstance(h.get("train_loss"), (int, float))]
    best: dict[str, Any] = {}
    if scored:
        pick = min if attr.endswith("loss") else max
        b = pick(scored, key=lambda h: h[attr])
        best = {"epoch": int(b["epoch"]), attr: float(b[attr])}
    plots = sorted(str(x) for x in (p / "final").glob("*.png")) if (p / "final").is_dir() else []
    return RunReport(path=str(p.resolve()), model=info.get("model") or (cfg.get("model") or {}).get("name"),
                     status=info.get("status"), epochs_done=cks[-1][0] if cks else 0, epochs=cfg.get("epochs"),
                     last=last, best=best, checkpoints=[d.name for _, d in cks], plots=plots,
                     mlflow={"run_id": info.get("mlflow_run_id"), "tracking_uri": info.get("tracking_uri")},
                     config=cfg)  # fmt: skip


def report_dict(r: DatasetReport | RunReport) -> dict[str, Any]:
    """JSON-able form (``--json``)."""
    return asdict(r)
