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

**Corpus scale.** A manifest is held as ONE Arrow table (:data:`ENTRY_SCHEMA`, :attr:`Manifest.table`),
never an object per video: a CSV is parsed by ``pyarrow.csv`` and labels, splits, default ids, the
path checks and duplicate ids are computed with ``pyarrow.compute`` / numpy over whole columns. Only
rare rows take a per-row Python path: JSON-list labels, absolute paths, URIs, ``..`` components, names
that are not UTF-8, labels outside the class list. Relative paths are checked *lexically* here (no
``..`` component: they cannot leave the root by name); a symbolic link inside the root that points
outside it is caught right before opening by :func:`entry_open_path` (the ingest task calls it), so
1.1 M ``realpath`` calls never run in the driver. JSONL, folder trees and UCF101 lists are read in
Python and converted to the same table.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vidray.io.store import is_uri

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
_UCF_LIST = re.compile(r"^(train|test)list(\d+)\.txt$")
_EXT_RE = "(?i)\\.(" + "|".join(e[1:] for e in VIDEO_EXTENSIONS) + ")$"
_INT_RE = r"^-?\d+$"

ENTRY_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),  # 0-based row in the manifest
        ("video_id", pa.string()),
        ("path", pa.string()),  # display form (valid UTF-8)
        ("open_path", pa.binary()),  # null: Manifest.open_prefix + path (checked when opened); else this
        ("labels", pa.list_(pa.int32())),
        ("split", pa.string()),
        ("status", pa.string()),  # "" (to process), failed or skipped (decided from the manifest alone)
        ("error_type", pa.string()),
        ("error", pa.string()),
    ]
)


@dataclass
class ManifestEntry:
    """One manifest row (a convenience view of a row of :attr:`Manifest.table`).

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
    """A parsed manifest: the entries as one Arrow table (:data:`ENTRY_SCHEMA`) plus the class names
    (``classes[label] = name``).

    ``root`` is the folder (or URI) paths are relative to; ``open_prefix`` what a relative path is
    appended to for opening; ``explicit_root``: ``root`` was given (absolute paths must then lie in it).
    """

    source: str
    table: pa.Table
    classes: list[str]
    sha256: str
    root: str = ""
    explicit_root: bool = False
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def open_prefix(self) -> str:
        return open_prefix(self.root)

    @cached_property
    def entries(self) -> list[ManifestEntry]:
        """The rows as :class:`ManifestEntry` objects (small manifests, tests; the driver uses :attr:`table`)."""
        d = self.table.to_pydict()
        prefix = os.fsencode(self.open_prefix)
        out = []
        for i in range(self.table.num_rows):
            op = d["open_path"][i]
            if op is None:
                op = prefix + d["path"][i].encode("utf-8")
            out.append(ManifestEntry(d["video_id"][i], d["path"][i], os.fsdecode(op), list(d["labels"][i]),
                                     d["split"][i], d["row"][i], d["error_type"][i], d["error"][i], d["status"][i]))
        return out


def display_path(p: str) -> str:
    """A UTF-8-safe rendering of a path (undecodable bytes become ``\\xNN``)."""
    return p.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def open_prefix(root: str) -> str:
    """What a relative manifest path is appended to: ``os.path.join(root, p)`` locally, ``root/p`` for URIs."""
    if is_uri(root):
        return root.rstrip("/") + "/"
    return root if root.endswith("/") else root + "/"


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


def entry_open_path(path: str, open_path: bytes | None, root: str) -> tuple[str, str]:
    """What an ingest task opens for an entry of :attr:`Manifest.table`, and an error when it must not.

    ``open_path`` null means ``open_prefix(root) + path``, a relative path without ``..`` that was
    checked lexically only: here, right before opening, it is resolved (``realpath``) and refused when a
    symbolic link takes it outside ``root`` (``PathOutsideRoot``, the same message as at manifest time).
    """
    if open_path is not None:
        return os.fsdecode(open_path), ""
    if is_uri(root):
        return open_prefix(root) + path, ""
    return resolve_path(path, root, True)


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


# ------------------------------------------------------------------------------------------------
# The vectorised builder: raw columns -> ENTRY_SCHEMA table
# ------------------------------------------------------------------------------------------------
@dataclass
class _Raw:
    """Raw manifest columns, before any interpretation (what each reader produces)."""

    path: pa.Array  # binary, stripped (may hold bytes that are not UTF-8)
    labels: pa.Array  # list<string>: label names as written, empties dropped (_split_labels)
    split: pa.Array | None  # string, as written ("" = not given); None: no split column
    video_id: pa.Array | None  # string, as written; None: no video_id column


def _np_bool(a) -> np.ndarray:
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    return np.asarray(a.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _build(source: str, raw: _Raw, root: str, explicit_root: bool, classes: list[str] | None,
           digest: str) -> Manifest:  # fmt: skip
    """Interpret raw columns (vectorised; rare rows per row) into a :class:`Manifest` (module doc)."""
    n = len(raw.path)
    path_bin = raw.path
    # ---- display paths: valid UTF-8 is the rule; otherwise per row (\xNN escapes)
    try:
        path = path_bin.cast(pa.string())
        bad_utf8 = np.zeros(n, bool)
    except pa.ArrowInvalid:
        raw_py = path_bin.to_pylist()
        disp, bad = [], []
        for b in raw_py:
            try:
                disp.append(b.decode("utf-8"))
                bad.append(False)
            except UnicodeDecodeError:
                disp.append(b.decode("utf-8", "backslashreplace"))
                bad.append(True)
        path, bad_utf8 = pa.array(disp, pa.string()), np.array(bad, bool)

    # ---- paths: per row only where a name alone does not decide (URI, absolute, '..', not UTF-8)
    root_uri = is_uri(root)
    has_scheme = _np_bool(pc.match_substring(path, "://"))
    is_abs = _np_bool(pc.starts_with(path, "/"))
    dotdot = _np_bool(pc.match_substring(path, ".."))  # a plain scan first; the regex only when needed
    if dotdot.any() and not root_uri:  # (a URI root's check is os.path.normpath(...).startswith(".."))
        dotdot = _np_bool(pc.match_substring_regex(path, r"(^|/)\.\.(/|$)"))
    slow = has_scheme | is_abs | dotdot | bad_utf8
    open_path: list = [None] * n if slow.any() else []
    path_err: dict[int, str] = {}
    slow_idx = np.flatnonzero(slow)
    for i in slow_idx:
        p = path_bin[int(i)].as_py().decode("utf-8", "surrogateescape")
        op, err = resolve_path(p, root, explicit_root)
        open_path[int(i)] = os.fsencode(op)
        if err:
            path_err[int(i)] = err
    open_col = pa.array(open_path, pa.binary()) if open_path else pa.nulls(n, pa.binary())

    # ---- labels: names -> class indices
    labels = raw.labels
    flat = pc.list_flatten(labels)
    counts = pc.list_value_length(labels).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if classes is None:
        names = pc.unique(flat)
        if len(names) and pc.all(pc.match_substring_regex(names, _INT_RE)).as_py():
            classes = [str(i) for i in range(max(int(x) for x in names.to_pylist()) + 1)]
        else:
            classes = sorted(names.to_pylist())
    idx = pc.index_in(flat, value_set=pa.array(classes, pa.string()))
    unknown_row = np.zeros(n, bool)
    flat_idx = idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    miss = np.flatnonzero(idx.is_null().to_numpy(zero_copy_only=False)) if idx.null_count else np.zeros(0, np.int64)
    if len(miss):  # an integer label outside the names is taken as an index, as the per-row reader did
        parent = pc.list_parent_indices(labels).to_numpy()
        flat_py = flat.take(pa.array(miss)).to_pylist()
        for j, lab in zip(miss, flat_py):
            try:
                flat_idx[j] = int(lab)
            except ValueError:
                unknown_row[parent[j]] = True
    missing = counts == 0
    if unknown_row.any():  # a row with an unknown label keeps no label (as the per-row reader did)
        flat_idx = flat_idx[~unknown_row[pc.list_parent_indices(labels).to_numpy()]]
        counts = np.where(unknown_row, 0, counts)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    lab_arr = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat_idx.astype(np.int32)))

    # ---- splits
    if raw.split is None:
        split = pa.repeat(pa.scalar("train"), n)
    else:
        split = pc.if_else(pc.equal(raw.split, ""), "train", pc.utf8_trim_whitespace(raw.split))

    # ---- video ids: given, else the path without its video extension (relative, '/'-separated)
    given = pc.utf8_trim_whitespace(raw.video_id) if raw.video_id is not None else None
    need = np.ones(n, bool) if given is None else _np_bool(pc.equal(given, ""))
    slashed = pc.replace_substring(path, "\\", "/")
    base_dot = _np_bool(pc.or_(pc.starts_with(slashed, "."), pc.match_substring(slashed, "/.")))
    if base_dot.any():  # os.path.splitext keeps a basename's leading dots
        base_dot = _np_bool(pc.match_substring_regex(slashed, r"(^|/)\.[^/]*$"))
    slow_id = need & (has_scheme | is_abs | bad_utf8 | base_dot)
    dflt = pc.replace_substring_regex(slashed, _EXT_RE, "")
    vid = dflt if given is None else pc.if_else(pa.array(need), dflt, given)
    if slow_id.any():
        v = vid.to_pylist()
        for i in np.flatnonzero(slow_id):
            v[i] = _default_id(path_bin[int(i)].as_py().decode("utf-8", "surrogateescape"), root)
        vid = pa.array(v, pa.string())

    # ---- per-entry problems (rare: kept sparse), in the per-row reader's order of precedence
    problems: dict[int, tuple[str, str, str]] = {i: ("failed", "PathOutsideRoot", e) for i, e in path_err.items()}
    if unknown_row.any():
        lab_py = labels.take(pa.array(np.flatnonzero(unknown_row))).to_pylist()
        for i, labs in zip(np.flatnonzero(unknown_row), lab_py):
            problems.setdefault(int(i), ("failed", "UnknownLabel",
                                         f"{path[int(i)].as_py()}: label(s) {labs} not in the class list"))
    for i in np.flatnonzero(missing):
        problems.setdefault(int(i), ("failed", "MissingLabel", f"{path[int(i)].as_py()}: no label"))
    if n:
        codes = pc.dictionary_encode(vid).indices.to_numpy(zero_copy_only=False)
        if codes.max() + 1 < n:  # duplicates: the first row of an id wins
            _, first_of = np.unique(codes, return_index=True)
            first_row = first_of[codes]
            vid_py = None
            for i in np.flatnonzero(first_row != np.arange(n)):
                vid_py = vid[int(i)].as_py()
                problems[int(i)] = ("skipped", "DuplicateVideoId",
                                    f"video_id {vid_py!r} already used by manifest row {int(first_row[i])}")
    pick = np.zeros(n, np.int32)
    if problems:
        pick[np.fromiter(problems, np.int64, len(problems))] = np.arange(1, len(problems) + 1, dtype=np.int32)
    vals = [("", "", "")] + list(problems.values())
    status, etype, err = (pa.array([v[k] for v in vals], pa.string()).take(pa.array(pick)) for k in range(3))
    table = pa.table([pa.array(np.arange(n, dtype=np.int64)), vid, path, open_col, lab_arr, split, status, etype, err],
                     schema=ENTRY_SCHEMA)
    return Manifest(source, table, classes, digest, root, explicit_root)


def _raw_from_rows(rows: list[dict]) -> _Raw:
    """Raw columns from per-row readers (``path`` str, ``labels`` list of str, ``split``, ``video_id``)."""

    def s(x) -> str:
        return display_path(str(x)) if x is not None else ""

    try:
        labels = pa.array([r["labels"] for r in rows], pa.list_(pa.string()))
    except (UnicodeEncodeError, pa.ArrowException):
        labels = pa.array([[display_path(x) for x in r["labels"]] for r in rows], pa.list_(pa.string()))
    has_split = any(r.get("split") is not None for r in rows)
    has_id = any(r.get("video_id") is not None for r in rows)
    return _Raw(
        path=pa.array([str(r["path"]).strip().encode("utf-8", "surrogateescape") for r in rows], pa.binary()),
        labels=labels,
        split=pa.array([s(r.get("split")) for r in rows], pa.string()) if has_split else None,
        video_id=pa.array([s(r.get("video_id")) for r in rows], pa.string()) if has_id else None,
    )


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


def _read_csv_rows(text: str, source: str = "CSV") -> list[dict]:
    """The per-row CSV reader (rows the Arrow reader refuses: ragged rows)."""
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
            "split": r.get("split") or ("" if "split" in fields else None),
            "video_id": r.get("video_id") or ("" if "video_id" in fields else None),
        })
    return rows


def _labels_from_strings(label: pa.Array) -> pa.Array:
    """``a|b`` label cells -> list<string> (trimmed, empties dropped); JSON lists ``[1, 2]`` per row."""
    label = pc.utf8_trim_whitespace(label)
    is_json = _np_bool(pc.starts_with(label, "["))
    lists = pc.split_pattern(label, "|")
    flat = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    parent = pc.list_parent_indices(lists).to_numpy()
    keep = _np_bool(pc.not_equal(flat, ""))
    counts = np.bincount(parent[keep], minlength=len(label)).astype(np.int64)
    offsets = np.zeros(len(label) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    out = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), flat.filter(pa.array(keep)))
    if is_json.any():
        py = out.to_pylist()
        for i in np.flatnonzero(is_json):
            py[i] = _split_labels(label[int(i)].as_py())
        out = pa.array(py, pa.list_(pa.string()))
    return out


def _read_csv(data: bytes, source: str) -> _Raw:
    """A CSV manifest with ``pyarrow.csv`` (columns as bytes, then vectorised); ragged or non-UTF-8
    cells outside ``path`` fall back to the per-row reader."""
    import pyarrow.csv as pcsv

    first = data.split(b"\n", 1)[0].decode("utf-8", "surrogateescape")
    header = next(csv.reader([first]), [])
    fields = [f.strip() for f in header]
    if not fields or not data.strip():
        raise ValueError(f"manifest {source}: empty file (expected a header {','.join(KNOWN_COLUMNS[:4])})")
    _check_columns(source, fields)
    try:
        t = pcsv.read_csv(
            pa.BufferReader(data),
            read_options=pcsv.ReadOptions(use_threads=True, block_size=16 << 20),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(column_types={h: pa.binary() for h in header},
                                                strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
        cols = {}
        for name, col in zip(t.column_names, t.columns):
            key = name.strip()
            if key not in cols:  # csv.DictReader keeps the last of repeated names; rare, per-row below
                cols[key] = col.combine_chunks()
            else:
                raise pa.ArrowInvalid("repeated column")
        strings = {k: v.cast(pa.string()) for k, v in cols.items() if k != "path"}  # raises if not UTF-8
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return _raw_from_rows(_read_csv_rows(data.decode("utf-8", "surrogateescape"), source))
    path = cols["path"]
    try:
        path = pc.utf8_trim_whitespace(path.cast(pa.string())).cast(pa.binary())
    except pa.ArrowInvalid:
        path = pa.array([b.decode("utf-8", "surrogateescape").strip().encode("utf-8", "surrogateescape")
                         for b in path.to_pylist()], pa.binary())
    label = strings.get("label", strings.get("labels"))
    return _Raw(path=path, labels=_labels_from_strings(label), split=strings.get("split"),
                video_id=strings.get("video_id"))


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
        return _build(str(src), _raw_from_rows(rows), base, True, classes, digest)
    if not src.exists():
        raise ValueError(f"manifest {src} does not exist")
    base = str(root) if root is not None else str(src.parent)
    if _UCF_LIST.match(src.name):
        rows, classes, digest = _read_ucf101(src)
        return _build(str(src), _raw_from_rows(rows), base, explicit_root, classes, digest)
    data = src.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (spreadsheet exports)
        data = data[3:]
    suffix = src.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = _read_jsonl(data.decode("utf-8", "surrogateescape"), str(src))
        raw = _raw_from_rows(rows) if rows else None
    elif suffix in (".csv", ".tsv", ".txt"):
        raw = _read_csv(data, str(src))
    else:
        raise ValueError(f"manifest {src}: unknown format (expected .csv, .jsonl, a folder, or a UCF101 list)")
    del data
    if raw is None or len(raw.path) == 0:
        raise ValueError(f"manifest {src}: no entries (a header and no rows)")
    return _build(str(src), raw, base, explicit_root, None, digest)
