"""Training checkpoints: plain dicts in ``checkpoint.pt``, one folder per epoch.

Layout (``RUN_DIR/checkpoints/``; Ray Train's ``RunConfig(storage_path=RUN_DIR, name="checkpoints")``
writes the same folders, plus its own ``checkpoint_manager_snapshot.json``)::

    RUN_DIR/checkpoints/epoch_0001/checkpoint.pt
    RUN_DIR/checkpoints/epoch_0002/checkpoint.pt
    ...

``RUN_DIR`` is a local (or shared, e.g. EFS) folder or an object-store URI (``s3://bucket/runs/x``):
every function here takes either, through :class:`vidray.io.store.Store`. Folders and files are
returned as ``Path`` for local run folders and as URI strings for remote ones.

``checkpoint.pt`` is a dict saved with ``torch.save`` and read back with ``torch.load(...,
weights_only=True)`` (no pickled code is ever executed): see :func:`make_state`. Keys:

* ``format`` (``"vidray-train-checkpoint"``), ``version`` (int)
* ``model``: state dict of the bare model (never the DDP wrapper: no ``module.`` prefix)
* ``optimizer``, ``scheduler``, ``scaler`` (or ``None``): state dicts
* ``epoch``: number of COMPLETED epochs (resume starts at this 0-based epoch)
* ``config``: the ``TrainConfig`` as JSON-able dict; ``model_name``, ``num_classes``, ``in_channels``
* ``classes``: class names (index = label id); ``data``: dataset.json facts (path, hashes)
* ``metrics``: the metrics reported with it; ``history``: one metrics dict per completed epoch
* ``mlflow_run_id``: the run this training logs to (a resumed run continues it)
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from vidray.io.store import Store, is_uri, join, split

FORMAT = "vidray-train-checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"
CHECKPOINTS_DIR = "checkpoints"
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")

__all__ = [
    "FORMAT",
    "VERSION",
    "FILENAME",
    "CHECKPOINTS_DIR",
    "epoch_dir_name",
    "epoch_of_dir",
    "make_state",
    "save_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint_file",
    "list_checkpoints",
    "latest_checkpoint",
    "check_resumable",
    "latest_epoch",
    "prune_checkpoints",
]


def epoch_dir_name(epoch: int) -> str:
    """Folder name of the checkpoint taken after ``epoch`` completed epochs: ``epoch_0003``."""
    return f"epoch_{int(epoch):04d}"


def epoch_of_dir(name: str) -> int:
    """Completed epochs of a checkpoint folder named ``epoch_NNNN`` (``-1`` for any other name)."""
    m = _EPOCH_DIR.match(name)
    return int(m.group(1)) if m else -1


def make_state(**fields: Any) -> dict[str, Any]:
    """A checkpoint dict with ``format``/``version`` set; metrics are cast to plain floats so that
    ``weights_only`` loading accepts them."""
    state = {"format": FORMAT, "version": VERSION, **fields}
    for key in ("metrics",):
        if state.get(key) is not None:
            state[key] = {k: _plain(v) for k, v in state[key].items()}
    if state.get("history") is not None:
        state["history"] = [{k: _plain(v) for k, v in h.items()} for h in state["history"]]
    return state


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item()
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalars
        return v.item()
    return v


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path | str:
    """Write ``state`` to ``directory/checkpoint.pt`` atomically (temp file + rename; one PUT on an
    object store). Returns the file."""
    if is_uri(str(directory)):
        buf = io.BytesIO()
        torch.save(state, buf)
        Store(directory).write_bytes(buf.getvalue(), FILENAME)
        return join(directory, FILENAME)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (FILENAME + ".tmp")
    torch.save(state, tmp)
    final = d / FILENAME
    tmp.replace(final)
    return final


def resolve_checkpoint_file(path: str | Path) -> Path | str:
    """``checkpoint.pt`` from a file path, a checkpoint folder, or a run folder (its latest checkpoint)."""
    if is_uri(str(path)):
        st = Store(path)
        if st.is_file(""):
            return str(path)
        if st.is_file(FILENAME):
            return join(path, FILENAME)
        latest = latest_checkpoint(path)
        if latest is not None:
            return join(latest, FILENAME)
        raise FileNotFoundError(f"no {FILENAME} in {path} (a checkpoint file, an epoch_* folder or a run folder)")
    p = Path(path)
    if p.is_file():
        return p
    if (p / FILENAME).is_file():
        return p / FILENAME
    latest = latest_checkpoint(p)
    if latest is not None:
        return latest / FILENAME
    raise FileNotFoundError(f"no {FILENAME} in {p} (a checkpoint file, an epoch_* folder or a run folder)")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (file, folder or run folder; see :func:`resolve_checkpoint_file`) with
    ``torch.load(weights_only=True)``; refuses files that are not vidray training checkpoints."""
    f = resolve_checkpoint_file(path)
    try:
        if is_uri(str(f)):
            st, name = split(f)
            src: Any = io.BytesIO(st.read_bytes(name))
        else:
            src = f
        state = torch.load(src, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated / corrupt file: name it (torch's own message does not)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{f}: unreadable checkpoint ({type(e).__name__}: {reason[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{f} is not a vidray training checkpoint (format {FORMAT!r})")
    if int(state.get("version", 0)) > VERSION:
        raise ValueError(f"{f} has checkpoint version {state.get('version')}, newer than {VERSION}")
    return state


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path | str]]:
    """``(epoch, folder)`` of every complete checkpoint under ``run_dir/checkpoints`` (or ``run_dir``
    itself when it is the checkpoints folder), sorted by epoch."""
    if is_uri(str(run_dir)):
        st = Store(run_dir)
        sub = CHECKPOINTS_DIR if st.is_dir(CHECKPOINTS_DIR) else ""
        found = []
        for name in st.list_dirs(sub):
            m = _EPOCH_DIR.match(name)
            if m and st.is_file("/".join(x for x in (sub, name, FILENAME) if x)):
                found.append((int(m.group(1)), join(run_dir, sub, name)))
        return sorted(found)
    root = Path(run_dir)
    if (root / CHECKPOINTS_DIR).is_dir():
        root = root / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        m = _EPOCH_DIR.match(d.name)
        if m and (d / FILENAME).is_file():
            out.append((int(m.group(1)), d))
    return sorted(out)


def latest_checkpoint(run_dir: str | Path) -> Path | str | None:
    """Folder of the checkpoint with the most completed epochs, or ``None``: THE last complete epoch of
    a run, for the resume message and for the workers alike (``checkpoint.pt`` is written atomically,
    so a folder that holds one is complete)."""
    cks = list_checkpoints(run_dir)
    return cks[-1][1] if cks else None


def latest_epoch(run_dir: str | Path) -> int:
    """Completed epochs of the newest checkpoint folder (0: none)."""
    cks = list_checkpoints(run_dir)
    return cks[-1][0] if cks else 0


def check_resumable(run_dir: str | Path) -> tuple[Path | str | None, int]:
    """The checkpoint a run resumes from and its completed epochs (``(None, 0)``: a fresh run).

    An unreadable newest checkpoint (a disk filled up, a copy cut short) is a ``ValueError`` naming it
    and offering the previous complete one: resuming silently from an older epoch would retrain epochs
    the user believes done."""
    cks = list_checkpoints(run_dir)
    if not cks:
        return None, 0
    epoch, newest = cks[-1]
    try:
        return newest, int(load_checkpoint(newest)["epoch"])
    except ValueError as e:
        prev = f"the previous one is {_name(cks[-2][1])}: move {newest} aside to resume from it" if len(cks) > 1 else \
            f"no earlier checkpoint: move {newest} aside to start over"
        raise ValueError(f"cannot resume {run_dir}: {e}; {prev}") from None


def prune_checkpoints(run_dir: str | Path, num_to_keep: int, score_attribute: str,
                      order: str = "max") -> list[Path | str]:  # fmt: skip
    """Keep the best ``num_to_keep`` checkpoints by ``metrics[score_attribute]`` and ALWAYS the latest
    (what resuming needs), delete the others; returns the deleted folders. The retention rule of Ray
    Train's ``CheckpointConfig``, for local mode (``--workers 0``), where Ray does not persist them.
    Scores are read from a small ``metrics.json`` next to each ``checkpoint.pt``."""
    cks = list_checkpoints(run_dir)
    if len(cks) <= num_to_keep:
        return []
    latest = cks[-1][1]

    def score(d: Path | str) -> float:
        try:
            v = json.loads(Store(d).read_bytes("metrics.json")).get(score_attribute)
            v = float(v)
        except (OSError, ValueError, TypeError):
            return float("-inf")
        return v if order == "max" else -v

    ranked = sorted((d for _, d in cks), key=lambda d: (score(d), _name(d)), reverse=True)
    keep = set(ranked[:num_to_keep]) | {latest}
    deleted = [d for _, d in cks if d not in keep]
    for d in deleted:
        if is_uri(str(d)):
            Store(d).delete_dir("")
        else:
            shutil.rmtree(d, ignore_errors=True)
    return deleted


def _name(folder: Path | str) -> str:
    return str(folder).rstrip("/").rsplit("/", 1)[-1]
