"""Manifest readers: which videos to ingest, with labels and splits.

Formats (chosen by :func:`read_manifest` from the path):

* CSV with a header ``path,label[,split][,video_id]`` (``labels`` is accepted for ``label``). A label
  is a class name or an integer; several labels are written ``a|b`` or as a JSON list ``[1, 2]``.
* JSONL: one object per line with ``path``, ``label`` or ``labels``, optional ``split``, ``video_id``.
* A folder tree ``ROOT/<class>/<video>`` (UCF101 layout): every video file under a class folder.
* UCF101 split lists: pass ``.../trainlist0N.txt`` (or ``testlist0N.txt``); ``classInd.txt`` beside it
  gives the class order and both lists of split N are read (train and test).

Paths are relative to ``root`` (default: the manifest's folder). A relative path that leaves the root
(``../x.mp4``), or an absolute path outside an explicit ``root``, is refused: the entry is recorded
as failed (``PathOutsideRoot``), never opened. URIs (``s3://``, ``gs://``) are passed through.

``video_id`` defaults to the path relative to the root without its extension: stable across runs and
independent of the row order. File names that are not valid UTF-8 are kept byte-exact for opening
(``open_path``) and shown with ``\\x..`` escapes in ``path``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vidray.io.store import is_uri

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
_UCF_LIST = re.compile(r"^(train|test)list(\d+)\.txt$")


@dataclass
class ManifestEntry:
    """One manifest row.

    Attributes:
        video_id: stable id.
        path: the path as given (display form: valid UTF-8).
        open_path: the filesystem path or URI to open (may hold undecodable bytes as surrogates).
        labels: class indices (a list of one for single-label corpora).
        split: ``train`` | ``val`` | ``test`` (or whatever the manifest says).
        row: 0-based row number in the manifest.
        error_type, error: set when the entry is invalid before any decoding (e.g. ``PathOutsideRoot``).
        status: ``""`` (to process), ``failed`` or ``skipped`` (decided from the manifest alone).
    """

    video_id: str
    path: str
    open_path: str
    labels: list[int]
    split: str = "train"
    row: int = 0
    error_type: str = ""
    error: str = ""
    status: str = ""


@dataclass
class Manifest:
    """A parsed manifest: entries plus the class names (``classes[label] = name``)."""

    source: str
    entries: list[ManifestEntry]
    classes: list[str]
    sha256: str
    root: str = ""
    extra: dict = field(default_factory=dict)


def display_path(p: str) -> str:
    """A UTF-8-safe rendering of a path (undecodable bytes become ``\\xNN``)."""
    return p.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def resolve_path(path: str, root: str, explicit_root: bool) -> tuple[str, str]:
    """Resolve a manifest path against ``root``. Returns ``(open_path, error)``; ``error`` is empty when
    the path is acceptable, else a reason (the path escapes the root)."""
    if is_uri(path):
        return path, ""
    if is_uri(root) and not os.path.isabs(path):
        joined = root.rstrip("/") + "/" + path
        norm = os.path.normpath(path)
        if norm.startswith("..") or os.path.isabs(norm):
            return joined, f"path {display_path(path)!r} escapes the root {root!r}"
        return joined, ""
    root_real = os.path.realpath(root)
    if os.path.isabs(path):
        cand = os.path.realpath(path)
        if explicit_root and os.path.commonpath([cand, root_real]) != root_real:
            return path, f"absolute path {display_path(path)!r} is outside the root {root!r}"
        return path, ""
    cand = os.path.realpath(os.path.join(root_real, path))
    if os.path.commonpath([cand, root_real]) != root_real:
        return cand, f"path {display_path(path)!r} escapes the root {root!r}"
    return os.path.join(root, path), ""


def _split_labels(raw) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, (list, tuple)):
        return [str(x).strip() for x in raw if str(x).strip() != ""]
    s = str(raw).strip()
    if s.startswith("["):
        try:
            return [str(x).strip() for x in json.loads(s)]
        except json.JSONDecodeError:
            pass
    return [x.strip() for x in s.split("|") if x.strip() != ""]


def _default_id(path: str, root: str) -> str:
    p = path
    if not is_uri(p) and os.path.isabs(p):
        try:
            p = os.path.relpath(p, root)
        except ValueError:
            pass
    p = display_path(p).replace("\\", "/")
    if "://" in p:
        p = p.split("://", 1)[1]
    stem, ext = os.path.splitext(p)
    return stem if ext.lower() in VIDEO_EXTENSIONS else p


def _build(
    source: str, rows: list[dict], root: str, explicit_root: bool, classes: list[str] | None, digest: str
) -> Manifest:
    """Turn raw rows (``path``, ``labels`` list of str, ``split``, ``video_id``) into a Manifest."""
    if classes is None:
        names = {lab for r in rows for lab in r["labels"]}
        if names and all(re.fullmatch(r"-?\d+", n) for n in names):
            classes = [str(i) for i in range(max(int(n) for n in names) + 1)]
        else:
            classes = sorted(names)
    index = {c: i for i, c in enumerate(classes)}
    entries: list[ManifestEntry] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(rows):
        raw_path = r["path"]
        open_path, err = resolve_path(raw_path, root, explicit_root)
        vid = (r.get("video_id") or "").strip() or _default_id(raw_path, root)
        e = ManifestEntry(vid, display_path(raw_path), open_path, [], (r.get("split") or "train").strip(), i)
        if err:
            e.status, e.error_type, e.error = "failed", "PathOutsideRoot", err
        try:
            e.labels = [index[lab] if lab in index else int(lab) for lab in r["labels"]]
        except ValueError:
            if not e.status:
                e.status, e.error_type = "failed", "UnknownLabel"
                e.error = f"{display_path(raw_path)}: label(s) {r['labels']} not in the class list"
        if not r["labels"] and not e.status:
            e.status, e.error_type, e.error = "failed", "MissingLabel", f"{display_path(raw_path)}: no label"
        if vid in seen:
            e.status, e.error_type = "skipped", "DuplicateVideoId"
            e.error = f"video_id {vid!r} already used by manifest row {seen[vid]}"
        else:
            seen[vid] = i
        entries.append(e)
    return Manifest(source, entries, classes, digest, root)


KNOWN_COLUMNS = ("path", "label", "labels", "split", "video_id")


def _check_columns(source: str, fields: list[str]) -> None:
    """Refuse a header with an unknown column (a typo such as ``lable`` would otherwise make every row
    fail as "no label") or without ``path`` / a label column, naming what is accepted."""
    unknown = [f for f in fields if f not in KNOWN_COLUMNS]
    if unknown:
        raise ValueError(f"manifest {source}: unknown column(s) {', '.join(map(repr, unknown))}; "
                         f"the columns are {', '.join(KNOWN_COLUMNS)} (label or labels)")
    if "path" not in fields:
        raise ValueError(f"manifest {source}: no 'path' column (header: {', '.join(fields) or 'empty'})")
    if "label" not in fields and "labels" not in fields:
        raise ValueError(f"manifest {source}: no 'label' (or 'labels') column (header: {', '.join(fields)})")


def _read_csv(text: str, source: str = "CSV") -> list[dict]:
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in reader.fieldnames or []]
    if not fields:
        raise ValueError(f"manifest {source}: empty file (expected a header {','.join(KNOWN_COLUMNS[:4])})")
    _check_columns(source, fields)
    rows = []
    for r in reader:
        r = {k.strip(): v for k, v in r.items() if k is not None}
        rows.append({
            "path": (r.get("path") or "").strip(),
            "labels": _split_labels(r.get("label", r.get("labels"))),
            "split": r.get("split"),
            "video_id": r.get("video_id"),
        })
    return rows


def _read_jsonl(text: str, source: str) -> list[dict]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}:{n}: not valid JSON: {e}") from e
        if not isinstance(obj, dict):
            raise ValueError(f"{source}:{n}: expected a JSON object per line, got {type(obj).__name__}")
        _check_columns(f"{source}:{n}", [str(k) for k in obj])
        labels = obj["labels"] if "labels" in obj else obj.get("label")
        rows.append({"path": str(obj["path"]), "labels": _split_labels(labels), "split": obj.get("split"),
                     "video_id": obj.get("video_id")})
    return rows


def _read_folder(root: str) -> tuple[list[dict], list[str]]:
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    rows = []
    for c in classes:
        for dirpath, _, files in sorted(os.walk(os.path.join(root, c))):
            for f in sorted(files):
                if f.lower().endswith(VIDEO_EXTENSIONS):
                    rel = os.path.relpath(os.path.join(dirpath, f), root)
                    rows.append({"path": rel, "labels": [display_path(c)], "split": "train", "video_id": None})
    return rows, [display_path(c) for c in classes]


def _read_ucf101(list_path: Path) -> tuple[list[dict], list[str], str]:
    m = _UCF_LIST.match(list_path.name)
    assert m is not None
    n = m.group(2)
    folder = list_path.parent
    class_file = folder / "classInd.txt"
    if not class_file.exists():
        raise ValueError(f"{list_path}: UCF101 split list needs classInd.txt beside it")
    classes = [ln.split()[1] for ln in class_file.read_text().splitlines() if ln.strip()]
    rows, digest = [], hashlib.sha256(class_file.read_bytes())
    for split in ("train", "test"):
        f = folder / f"{split}list{n}.txt"
        if not f.exists():
            continue
        digest.update(f.read_bytes())
        for ln in f.read_text().splitlines():
            if not ln.strip():
                continue
            rel = ln.split()[0]
            rows.append({"path": rel, "labels": [rel.split("/")[0]], "split": split, "video_id": None})
    return rows, classes, digest.hexdigest()


def read_manifest(source: str | Path, root: str | Path | None = None) -> Manifest:
    """Read a manifest (CSV, JSONL, folder tree or UCF101 split list; see module doc).

    Raises ``ValueError`` naming the file when the manifest itself is unreadable; problems of single
    entries are recorded on the entries instead (they never stop an ingest).
    """
    src = Path(source)
    explicit_root = root is not None
    if src.is_dir():
        base = str(root) if root is not None else str(src)
        rows, classes = _read_folder(str(src))
        digest = hashlib.sha256("\n".join(r["path"] for r in rows).encode("utf-8", "surrogateescape")).hexdigest()
        return _build(str(src), rows, base, explicit_root or True, classes, digest)
    if not src.exists():
        raise ValueError(f"manifest {src} does not exist")
    base = str(root) if root is not None else str(src.parent)
    if _UCF_LIST.match(src.name):
        rows, classes, digest = _read_ucf101(src)
        return _build(str(src), rows, base, explicit_root, classes, digest)
    data = src.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    text = data.decode("utf-8", "surrogateescape")
    if src.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = _read_jsonl(text, str(src))
    elif src.suffix.lower() in (".csv", ".tsv", ".txt"):
        rows = _read_csv(text, str(src))
    else:
        raise ValueError(f"manifest {src}: unknown format (expected .csv, .jsonl, a folder, or a UCF101 list)")
    if not rows:
        raise ValueError(f"manifest {src}: no entries (a header and no rows)")
    return _build(str(src), rows, base, explicit_root, None, digest)
