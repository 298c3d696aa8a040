"""MLflow set-up and logging helpers (embedded store; nothing here starts a server or binds a port).

Default store: sqlite in the run folder, ``sqlite:///<run_dir>/mlflow.db`` (MLflow 3 refuses a plain
``file:`` store unless ``MLFLOW_ALLOW_FILE_STORE=true``), with artifacts in ``<run_dir>/mlartifacts``.
A ``--tracking-uri`` pointing at a server works the same way.

Create the store in the DRIVER before any worker or trial logs: a fresh sqlite store hit concurrently
fails while MLflow creates its tables. Typical use::

    uri = default_tracking_uri(run_dir)
    exp_id = setup_mlflow(uri, "vidray")                       # driver, once (idempotent)
    with mlflow.start_run(experiment_id=exp_id):               # rank 0 only
        log_params_flat(config.model_dump(mode="json"))
        mlflow.log_metrics({"train_loss": 0.7}, step=epoch)
        plot_training_curves(history, run_dir / "curves.png")  # PNG + artifact "plots/curves.png"

Plots use matplotlib's object API on the Agg canvas (no pyplot, no global backend switch, no display).
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import mlflow
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

from vidray.config import flatten

__all__ = [
    "default_tracking_uri",
    "default_artifact_location",
    "setup_mlflow",
    "sanitize_key",
    "log_params_flat",
    "log_epoch_metrics",
    "training_curves_figure",
    "plot_training_curves",
    "plot_confusion_matrix",
    "plot_flow_grid",
]

_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


# --------------------------------------------------------------------------------------------
# store and experiment
# --------------------------------------------------------------------------------------------
def default_tracking_uri(run_dir: str | Path) -> str:
    """``sqlite:///<absolute run_dir>/mlflow.db`` (the folder is created)."""
    d = Path(run_dir).expanduser().resolve()
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'mlflow.db'}"


def default_artifact_location(tracking_uri: str) -> str | None:
    """For a ``sqlite:///PATH`` store: ``file://<dir of PATH>/mlartifacts`` (artifacts next to the db,
    not in MLflow's default ``./mlruns`` of the current directory). ``None`` for other stores (a
    server decides)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = tracking_uri[len("sqlite:///"):]
    if not db or db == ":memory:":
        return None
    return (Path(db).resolve().parent / "mlartifacts").as_uri()


def setup_mlflow(
    tracking_uri: str, experiment: str = "vidray", artifact_location: str | None = None
) -> str:
    """Point MLflow at ``tracking_uri`` and make ``experiment`` the active one; returns its id.

    Idempotent: an existing experiment is reused (a deleted one is restored), so a second call or
    another process gets the same id. Creating a sqlite store builds its tables: do it here, in the
    driver, before workers or trials log concurrently.

    Args:
        tracking_uri: e.g. :func:`default_tracking_uri` or ``http://host:5000``.
        experiment: experiment name.
        artifact_location: for a NEW experiment; default :func:`default_artifact_location`.
    """
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        try:
            exp_id = client.create_experiment(
                experiment, artifact_location=artifact_location or default_artifact_location(tracking_uri)
            )
        except MlflowException:  # created meanwhile by another process
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp_id)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


# --------------------------------------------------------------------------------------------
# params and metrics
# --------------------------------------------------------------------------------------------
def sanitize_key(key: str) -> str:
    """Make a string a valid MLflow param/metric key: characters other than letters, digits,
    ``_ - . / : space`` become ``_`` (``hit@5`` -> ``hit_5``); at most 250 characters."""
    return _BAD_KEY_CHARS.sub("_", str(key))[:MAX_ENTITY_KEY_LENGTH]


def _param_value(v: Any) -> str:
    if isinstance(v, str):
        s = v
    elif isinstance(v, (list, tuple, dict)):
        s = json.dumps(v, default=str)
    else:
        s = str(v)
    if len(s) > MAX_PARAM_VAL_LENGTH:
        s = s[: MAX_PARAM_VAL_LENGTH - 3] + "..."
    return s


def _run_id(run_id: str | None) -> str:
    if run_id is not None:
        return run_id
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: call mlflow.start_run() first or pass run_id")
    return run.info.run_id


def log_params_flat(config: Mapping[str, Any] | Any, *, run_id: str | None = None) -> dict[str, str]:
    """Log a nested config as flat params: ``{"a": {"b": 1}}`` -> ``a.b = "1"``.

    Lists/tuples/dicts at the leaves become JSON; values are truncated to MLflow's 6000 characters
    (ending in ``...``), keys sanitised (:func:`sanitize_key`). A pydantic model is dumped first.
    Logs to ``run_id`` or the active run (``RuntimeError`` if neither), in batches of 100.

    Returns:
        The ``{key: value}`` strings logged.
    """
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    flat = {sanitize_key(k): _param_value(v) for k, v in flatten(dict(config)).items()}
    rid = _run_id(run_id)
    client = MlflowClient()
    items = [Param(k, v) for k, v in flat.items()]
    for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(rid, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])
    return flat


def log_epoch_metrics(metrics: Mapping[str, Any], epoch: int, *, run_id: str | None = None) -> dict[str, float]:
    """Log the finite numeric entries of ``metrics`` at ``step=epoch`` (keys sanitised; others skipped).

    Returns:
        The ``{key: value}`` logged.
    """
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            continue
        if math.isfinite(float(v)):
            out[sanitize_key(k)] = float(v)
    if out:
        rid = _run_id(run_id)
        MlflowClient().log_batch(
            rid, metrics=[Metric(k, v, _now_ms(), int(epoch)) for k, v in out.items()]
        )
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
def _save(fig: Figure, path: str | Path, artifact_path: str | None, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (PNG) and, if ``artifact_path`` is not None, log it to the active run."""
    if artifact_path is not None:
        _run_id(None)  # refuse before writing anything, rather than let MLflow auto-start a run
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=dpi)
    if artifact_path is not None:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
    return path


def _history_columns(
    history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, Any]],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-epoch history -> (epochs, {metric: values}) with NaN where an epoch lacks a metric."""
    if isinstance(history, Mapping):
        cols = {k: np.asarray(v, dtype=np.float64) for k, v in history.items() if k != "epoch"}
        n = max((c.size for c in cols.values()), default=0)
        epochs = np.asarray(history["epoch"], dtype=np.float64) if "epoch" in history else np.arange(1, n + 1)
        return epochs, cols
    rows = list(history)
    keys = sorted({k for r in rows for k, v in r.items() if k != "epoch" and _is_num(v)})
    cols = {k: np.array([float(r[k]) if _is_num(r.get(k)) else np.nan for r in rows]) for k in keys}
    epochs = np.array([float(r.get("epoch", i + 1)) for i, r in enumerate(rows)])
    return epochs, cols


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def training_curves_figure(history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, Any]],
                           title: str | None = None) -> Figure:
    """The figure of :func:`plot_training_curves`: losses on the left panel with the learning rate (``lr``)
    on its own log axis to their right, every other numeric metric (accuracies, mAP) on the right
    panel; integer epoch ticks."""
    from matplotlib.ticker import MaxNLocator

    epochs, cols = _history_columns(history)
    if not cols:
        raise ValueError("history has no numeric metrics to plot")
    fig = Figure(figsize=(10, 4))
    ax_l, ax_r = fig.subplots(1, 2)
    panels = ((ax_l, lambda k: "loss" in k.lower(), "loss"),
              (ax_r, lambda k: "loss" not in k.lower() and k != "lr", "accuracy / metric"))  # fmt: skip
    for ax, pick, ylabel in panels:
        names = [k for k in cols if pick(k)]
        for k in names:
            y = cols[k]
            ax.plot(epochs[: y.size], y, marker="o", markersize=3, label=k)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if names:
            ax.legend(fontsize=8, loc="upper left")
    if "lr" in cols and np.isfinite(cols["lr"]).any():
        ax_lr = ax_l.twinx()  # the learning rate on its own (log) axis, not on the accuracy scale
        lr = cols["lr"]
        ax_lr.plot(epochs[: lr.size], lr, color="gray", linestyle="--", label="lr")
        if (lr[np.isfinite(lr)] > 0).all():
            ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate")
        ax_lr.legend(fontsize=8, loc="upper right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_training_curves(
    history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    artifact_path: str | None = "plots",
    title: str | None = None,
) -> Path:
    """Loss and accuracy curves per epoch (:func:`training_curves_figure`), written as a PNG (and logged
    as an artifact).

    Args:
        history: ``{"train_loss": [...], "val_top1": [...]}`` (one value per epoch; an optional
            ``"epoch"`` list gives the x axis) or a list of per-epoch dicts as reported by Ray Train.
        path: PNG to write.
        artifact_path: artifact folder in the active run, or ``None`` to only write the file.
    """
    return _save(training_curves_figure(history, title), path, artifact_path)


def plot_confusion_matrix(
    cm: np.ndarray,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    *,
    normalize: bool = True,
    artifact_path: str | None = "plots",
    max_named: int = 30,
    title: str | None = None,
) -> Path:
    """Confusion matrix image (rows: true class, columns: predicted), PNG (+ artifact).

    Args:
        cm: ``(K, K)`` counts (:func:`vidray.eval.metrics.confusion_matrix`).
        path: PNG to write.
        class_names: ``K`` names, shown on the axes when ``K <= max_named`` (indices otherwise).
        normalize: colour by row-normalised rates (each true class sums to 1); counts are written in
            the cells when ``K <= 15``.
        artifact_path: artifact folder in the active run, or ``None``.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be (K, K), got {cm.shape}")
    k = cm.shape[0]
    if class_names is not None and len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for a {k}x{k} matrix")
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    side = min(4 + 0.35 * min(k, max_named), 16)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.subplots()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="rate" if normalize else "count")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= max_named:
        names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
        ax.set_xticks(range(k), names, rotation=90, fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
    if k <= 15:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 * (rates.max() or 1) else "black")  # fmt: skip
    ax.set_title(title or f"confusion matrix ({int(cm.sum())} samples)")
    fig.tight_layout()
    return _save(fig, path, artifact_path)


def plot_flow_grid(
    flow: np.ndarray,
    path: str | Path,
    images: np.ndarray | None = None,
    *,
    max_samples: int = 8,
    artifact_path: str | None = "plots",
    titles: Sequence[str] | None = None,
) -> Path:
    """A grid of flow fields coloured by :func:`vidray.flow.flow_to_rgb` (+ the frames), with the colour
    key (:func:`vidray.flow.flow_color_key`) in the last column.

    Each sample is coloured on its own (hue = direction, saturation = magnitude relative to that
    sample's largest displacement), so weak and strong motions are both visible.

    Args:
        flow: ``(N, 2L, H, W)`` float, pixels (dequantised); the first field (channels 0, 1 = x, y) of
            each sample is shown.
        path: PNG to write.
        images: optional ``(N, H', W', 3)`` uint8 RGB frames shown above their flow.
        max_samples: at most this many samples (columns).
        artifact_path: artifact folder in the active run, or ``None``.
    """
    from vidray.flow import flow_color_key, flow_to_rgb

    f = np.asarray(flow, dtype=np.float32)
    if f.ndim == 3:
        f = f[None]
    if f.ndim != 4 or f.shape[1] < 2 or f.shape[1] % 2:
        raise ValueError(f"flow must be (N, 2L, H, W), got {np.shape(flow)}")
    n = min(f.shape[0], max_samples)
    if n == 0:
        raise ValueError("no flow samples to plot")
    colored = [flow_to_rgb(f[i, :2].transpose(1, 2, 0)) for i in range(n)]
    rows = 2 if images is not None else 1
    fig = Figure(figsize=(2.2 * (n + 1), 2.2 * rows + 0.3))
    axes = np.asarray(fig.subplots(rows, n + 1, squeeze=False))
    key = axes[rows - 1, n]  # the colour key, in the last column of the flow row
    key.imshow(flow_color_key(96))
    key.set_title("key: hue = direction,\nsaturation = speed", fontsize=7)
    key.axis("off")
    if rows == 2:
        axes[0, n].axis("off")
    for i in range(n):
        if images is not None:
            axes[0, i].imshow(np.asarray(images[i]))
        axes[rows - 1, i].imshow(colored[i])
        mag = float(np.sqrt((f[i, :2] ** 2).sum(axis=0)).max())
        axes[0, i].set_title(titles[i] if titles is not None else f"max {mag:.1f} px", fontsize=8)
        for r in range(rows):
            axes[r, i].axis("off")
    fig.tight_layout()
    return _save(fig, path, artifact_path)
