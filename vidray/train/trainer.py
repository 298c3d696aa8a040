"""``vidray train``'s driver: resolve the config, open the MLflow run, build the Ray Train
``TorchTrainer`` (Train V2 API) and fit; resume a run folder from its last checkpoint.

Run folder (``--out RUN_DIR``)::

    RUN_DIR/config.yaml            the resolved TrainConfig (a re-run must match it to resume)
    RUN_DIR/run.json               MLflow run id / tracking URI / status, data facts
    RUN_DIR/dataset.json           copy of the ingest's dataset.json (logged to MLflow)
    RUN_DIR/checkpoints/epoch_NNNN/checkpoint.pt   (Ray Train storage: RunConfig(storage_path=RUN_DIR,
                                                    name="checkpoints"))
    RUN_DIR/final/                 curves.png, confusion_matrix.png, flow_samples.png, val_scores.npz
    RUN_DIR/mlflow.db, RUN_DIR/mlartifacts/        the embedded MLflow store (default)

``RUN_DIR`` may be an object-store URI (``--out s3://bucket/runs/x``), like ``--data``: every file of
the run goes through :class:`vidray.io.store.Store` (the filesystem layer ingest uses) and Ray Train
writes the checkpoints there (``RunConfig(storage_filesystem=...)``). The MLflow store cannot live on
S3: such a run needs ``--tracking-uri`` (or ``MLFLOW_TRACKING_URI``), e.g. the MLflow server of
``cluster.yaml``'s head.

Placement (``ray.node_labels``, default ``vidray-role=train``, cluster.yaml's ``gpu_train``): the Train
workers (``ScalingConfig(label_selector=...)``) AND the Ray Data tasks that feed them
(``DataConfig(execution_options=ExecutionOptions(label_selector=...))``; without it they ran on
ingest nodes) go to train-type nodes; on a Ray without such labels, anywhere.

Resume: (1) a worker that dies is restarted by Ray Train (``ray.max_failures``) and continues from
``ray.train.get_checkpoint()``; (2) a killed driver is resumed by running the same command with the
same ``--out``: the latest ``epoch_*`` checkpoint is passed to the loop in ``train_loop_config``
(Train V2's replacement of ``resume_from_checkpoint``), and the same MLflow run continues.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vidray.config import TrainConfig
from vidray.console import current, make_board
from vidray.io.checkpoint import CHECKPOINTS_DIR, check_resumable, latest_checkpoint, latest_epoch, load_checkpoint
from vidray.io.store import Store, is_uri
from vidray.recipe import is_multilabel, resolve_config

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "run_training", "score_attribute"]


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) training returns.

    Attributes:
        run_dir: the run folder; checkpoint: latest ``epoch_*`` folder; metrics: last epoch's metrics;
        mlflow_run_id / tracking_uri / experiment_id: where the MLflow run is; status: its status;
        resumed_from_epoch: completed epochs found at start (0: fresh run); wall_s: seconds.
    """

    run_dir: str
    checkpoint: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None
    experiment_id: str | None = None
    status: str = "FINISHED"
    resumed_from_epoch: int = 0
    wall_s: float = 0.0

    def format(self) -> str:
        m = {k: v for k, v in self.metrics.items() if k in ("train_loss", "val_loss", "val_top1", "val_mAP")}
        epoch = int(self.metrics.get("epoch", 0) or 0)
        return (
            f"vidray train -> {self.run_dir}\n"
            f"  status {self.status}; last checkpoint {self.checkpoint}\n"
            f"  epoch {epoch}: " + ", ".join(f"{k} {float(v):.4f}" for k, v in m.items()) + "\n"
            f"  MLflow run {self.mlflow_run_id} (experiment {self.experiment_id}) at {self.tracking_uri}\n"
            f"  browse: mlflow ui --backend-store-uri {self.tracking_uri} --host 127.0.0.1\n"
            f"  wall {self.wall_s:.1f} s" + (f", resumed after epoch {self.resumed_from_epoch}" if self.resumed_from_epoch else "")
        )


def score_attribute(cfg: TrainConfig, has_val: bool) -> tuple[str, str]:
    """The metric that ranks checkpoints, and its order: ``checkpoint.score_attribute`` when the run
    reports it; ``val_mAP`` for multi-label (``bce``) runs left at the default ``val_top1``;
    ``train_loss`` (min) without validation."""
    attr, order = cfg.checkpoint.score_attribute, cfg.checkpoint.score_order
    if not has_val:
        return ("train_loss", "min") if attr.startswith("val_") else (attr, order)
    if is_multilabel(cfg) and attr == "val_top1":
        return "val_mAP", "max"
    return attr, order


def _split_rows(status: Any, split: str | None) -> tuple[list[str], list[list[int]]]:
    """Video ids and label lists of the ``ok`` videos of one split, from the status table (one row per
    video, chunks included)."""
    import pyarrow.compute as pc

    if not split:
        return [], []
    t = status.filter(pc.and_(pc.equal(status["status"], "ok"), pc.equal(status["split"], split)))
    return t["video_id"].to_pylist(), [list(x or []) for x in t["labels"].to_pylist()]


def _check_splits(status: Any, cfg: TrainConfig, classes: list[str], data_dir: str) -> None:
    """The training split must have videos (else one line listing the splits present); a class without
    training videos is worth a warning (it can never be predicted right)."""
    import pyarrow.compute as pc

    ok = status.filter(pc.equal(status["status"], "ok"))
    counts = {k: v for k, v in zip(*[c.to_pylist() for c in pc.value_counts(ok["split"]).flatten()])}
    train = cfg.input.train_split
    if not counts.get(train):
        present = ", ".join(f"{k} ({v})" for k, v in sorted(counts.items())) or "none"
        raise ValueError(f"input.train_split={train!r}: no ingested videos in that split of {data_dir}; "
                         f"splits present (ok videos): {present}")
    _, labels = _split_rows(status, train)
    seen = {c for ls in labels for c in ls}
    missing = [classes[i] for i in range(len(classes)) if i not in seen]
    if missing:
        log.warning("%d of %d classes have no training videos (they cannot be learnt): %s%s", len(missing),
                    len(classes), ", ".join(missing[:10]), " ..." if len(missing) > 10 else "")


def read_blocks(files: list[str], workers: int, requested: int | None = None) -> int:
    """Read tasks per epoch: ``requested``, else one per ~128 MB of Parquet, at least 2 per worker, at
    most one per file. Ray Data's default (one task per file) pays a task's start-up per small file:
    with the ingest's 4-video parts, reading measured 17 rows/s on one core against 119 with 4 tasks
    and 300 with 1 (``benchmarks/loader.py``)."""
    if requested:
        return min(requested, len(files))
    total = total_bytes(files)
    return max(1, min(len(files), max(2 * max(workers, 1), -(-total // (128 << 20)))))


def total_bytes(files: list[str]) -> int:
    """Summed size of local paths or URIs of one filesystem (one listing call for a URI list)."""
    if not files:
        return 0
    if not is_uri(files[0]):
        return sum(os.path.getsize(f) for f in files)
    import pyarrow.fs as pafs

    fs, _ = pafs.FileSystem.from_uri(files[0])
    return sum(i.size or 0 for i in fs.get_file_info([f.split("://", 1)[1] for f in files]))


def _datasets(files: list[str], cfg: TrainConfig, num_classes: int, has_val: bool, workers: int) -> dict[str, Any]:
    """Ray Data over the committed Parquet parts: only the needed columns, one split each.

    Training (``input.decode_in: read_tasks``, the fastest here): every row is sampled, decoded and
    augmented inside the read task (:func:`vidray.data.loader.decode_augment_fn`); uint8 clips go to
    the workers. Validation (and ``decode_in: workers``, ``decode_on: gpu``): rows are cut to one
    sample's JPEGs in the read task (:func:`vidray.data.loader.select_frames`) and decoded in the
    workers' prefetch threads, or (``decode_on: gpu``) batched on the training device
    (:func:`vidray.data.loader.decode_clips`); validation shards the unsplit dataset by video id there."""
    import ray.data
    from ray.data.expressions import col

    from vidray.data.loader import columns_for, decode_augment_fn, select_frames_fn
    from vidray.recipe import clip_spec

    # Ray 2.60's default DataSourceV2 Parquet path lists files with 32 FooterReader actors per
    # execution, i.e. per epoch (measured ~8-10 s per epoch on 2 cores, vs ~0.3 s with V1).
    ctx = ray.data.DataContext.get_current()
    ctx.use_datasource_v2 = cfg.ray.parquet_v2
    ctx.enable_progress_bars = False  # per-epoch bars from every worker drown the training log
    def split_ds(split: str, train: bool):
        spec = clip_spec(cfg, num_classes, train)
        ds = ray.data.read_parquet(files, shuffle="files" if train and cfg.input.shuffle_files else None,
                                   override_num_blocks=read_blocks(files, workers, cfg.input.read_blocks))
        ds = ds.select_columns(columns_for(spec)).filter(expr=col("split") == split)
        # placement: the label selector is set for the whole dataset (every task) in _trainer's DataConfig,
        # not per operator, which would keep the read and this map from fusing into one task
        if train and cfg.input.decode_in == "read_tasks" and cfg.input.decode_on == "cpu":
            return ds.map_batches(decode_augment_fn, fn_kwargs={"spec": spec}, batch_format="pyarrow",
                                  batch_size=max(cfg.batch_size, 16))  # fmt: skip
        return ds.map_batches(select_frames_fn, fn_kwargs={"spec": spec}, batch_format="pyarrow", batch_size=None)

    out = {"train": split_ds(cfg.input.train_split, True)}
    if has_val:
        out["val"] = split_ds(cfg.input.val_split, False)
    return out


def _mlflow_run(run_dir: str, uri: str, cfg: TrainConfig, model: str) -> tuple[str, str]:
    """The run's MLflow experiment and run ids: created in the DRIVER before any worker logs (a fresh
    sqlite store hit by several processes at once fails); a resumed run folder reuses its run."""
    from mlflow.tracking import MlflowClient

    from vidray.tracking import setup_mlflow

    exp_id = setup_mlflow(uri, cfg.tracking.experiment)
    client = MlflowClient(uri)
    st = Store(run_dir)
    if st.is_file("run.json"):
        info = st.read_json("run.json")
        rid = info.get("mlflow_run_id")
        if rid and info.get("tracking_uri") == uri:
            try:
                client.get_run(rid)
                client.update_run(rid, status="RUNNING")
                return exp_id, rid
            except Exception:  # deleted or another store: start a new run
                pass
    name = cfg.tracking.run_name or f"{model}-{run_dir.rstrip('/').rsplit('/', 1)[-1]}"
    run = client.create_run(exp_id, run_name=name, tags={"vidray.run_dir": run_dir})
    return exp_id, run.info.run_id


def _write_run_json(run_dir: str, **fields: Any) -> None:
    st = Store(run_dir)
    info = st.read_json("run.json") if st.is_file("run.json") else {}
    info.update(fields)
    info["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    st.write_json(info, "run.json")


def _check_same_run(run_dir: str, cfg: TrainConfig) -> None:
    """A run folder that holds checkpoints resumes only with the same settings (``run_hash``)."""
    st = Store(run_dir)
    p = st.url("config.yaml")
    if not st.is_file("config.yaml") or latest_checkpoint(run_dir) is None:
        return
    try:
        old = TrainConfig.model_validate(yaml.safe_load(st.read_bytes("config.yaml")))
    except Exception as e:
        raise ValueError(f"{p}: not a vidray TrainConfig ({type(e).__name__}); use another --out, or restore the "
                         "run's config.yaml") from None
    if old.run_hash() != cfg.run_hash():
        raise ValueError(
            f"{run_dir} holds a run with other settings (run hash {old.run_hash()} != {cfg.run_hash()}); "
            "use another --out to start a new run, or the same config to resume it"
        )


@dataclass
class _Run:
    """A run folder prepared for fitting (:func:`_prepare_run`)."""

    data_dir: str
    cfg: TrainConfig
    meta: dict[str, Any]
    classes: list[str]
    files: list[str]
    run_dir: str  # an absolute local path or a URI
    val_ids: list[str]
    val_labels: list[list[int]]
    score: tuple[str, str]
    resume: Path | str | None
    done: int
    train_videos: int = 0


def absolute(path: str | os.PathLike) -> str:
    """A URI as given, a local path made absolute (what every process of a cluster can open)."""
    p = str(path)
    return p if is_uri(p) else str(Path(p.removeprefix("file://")).expanduser().resolve())


def default_run_dir(model: str | None) -> Path:
    """``runs/<model>-<YYYYmmdd-HHMMSS>``: where a run goes without ``--out``."""
    return Path("runs") / f"{model or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"


def _prepare_run(data_dir: str | Path, cfg: TrainConfig, out: str | Path | None) -> _Run:
    """Check the dataset and the config against each other, create/resume the run folder (config.yaml,
    dataset.json), and find the validation videos and the checkpoint to resume from."""
    from vidray.io.reader import IngestDataset

    ds = IngestDataset(data_dir)
    data_dir = absolute(data_dir)
    cfg = resolve_config(cfg, ds.meta)
    classes = ds.classes
    if not classes:
        raise ValueError(f"{data_dir}: dataset.json lists no classes")
    files = ds.files
    if not files:
        raise ValueError(f"{data_dir}: no committed clips parts")
    status = ds.status()
    _check_splits(status, cfg, classes, data_dir)
    run_dir = absolute(out or default_run_dir(cfg.model.name))
    st = Store(run_dir)
    if st.local:
        st.makedirs("")
    _check_same_run(run_dir, cfg)
    st.write_bytes(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).encode(), "config.yaml")
    st.write_bytes(ds.store.read_bytes("dataset.json"), "dataset.json")
    val_ids, val_labels = _split_rows(status, cfg.input.val_split)
    if cfg.input.val_split and not val_ids:
        log.warning("no rows in split %r: training without validation", cfg.input.val_split)
    resume, done = check_resumable(run_dir)
    return _Run(data_dir=data_dir, cfg=cfg, meta=ds.meta, classes=classes, files=files, run_dir=run_dir,
                val_ids=val_ids, val_labels=val_labels, score=score_attribute(cfg, bool(val_ids)), resume=resume,
                done=done, train_videos=len(_split_rows(status, cfg.input.train_split)[0]))  # fmt: skip


DATA_CPUS = 1.0
"""CPUs a training run leaves to Ray Data: its read tasks (which decode and augment) take 1 CPU each."""


def worker_cpus(workers: int, cpus_per_worker: float, cluster_cpus: float, data_cpus: float = DATA_CPUS) -> float:
    """CPUs per Train worker that fit the cluster next to ``data_cpus`` for Ray Data's read tasks.

    ``cpus_per_worker`` when ``workers * cpus_per_worker + data_cpus <= cluster_cpus``; else the share
    that fits (fractional CPUs, as the Tune path sizes trials); a ``ValueError`` saying what fits when
    even 0.1 CPU per worker does not (with every CPU taken by the workers, the read tasks never start
    and the run hangs: measured with ``--workers 2`` on 2 CPUs). ``workers=0`` (local mode) needs none.
    """
    if workers <= 0:
        return cpus_per_worker
    if workers * cpus_per_worker + data_cpus <= cluster_cpus + 1e-9:
        return cpus_per_worker
    share = math.floor((cluster_cpus - data_cpus) / workers * 100) / 100
    if share >= 0.1:
        return share
    most = max(0, int((cluster_cpus - data_cpus) / 0.1))
    raise ValueError(f"--workers {workers} does not fit: the cluster has {cluster_cpus:g} CPUs and Ray Data's read "
                     f"tasks need {data_cpus:g}; use --workers {min(most, int(cluster_cpus))} or fewer (or 0: the "
                     "loop in this process), or add nodes")


def _fit_cluster(cfg: TrainConfig, workers: int, selector: dict[str, str] | None = None) -> TrainConfig:
    """``cfg`` with ``ray.cpus_per_worker`` sized by :func:`worker_cpus` to the connected cluster (its
    train-type nodes when ``selector`` is set)."""
    from vidray.runtime import cluster_cpus

    total = cluster_cpus(selector)
    if selector and total <= 0:  # no train node up yet: the autoscaler starts them at cluster.yaml's size
        return cfg
    cpw = worker_cpus(workers, cfg.ray.cpus_per_worker, total)
    if cpw != cfg.ray.cpus_per_worker:
        log.info("%d workers x %g CPUs + %g for Ray Data exceed the cluster's %g CPUs: %g CPUs per worker", workers,
                 cfg.ray.cpus_per_worker, DATA_CPUS, total, cpw)
        cfg = cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"cpus_per_worker": cpw})})
    return cfg


def _data_facts(run: _Run) -> dict[str, Any]:
    m = run.meta
    return {"path": run.data_dir, "manifest_sha256": (m.get("manifest") or {}).get("sha256"),
            "data_hash": m.get("data_hash"), "schema_version": m.get("schema_version")}  # fmt: skip


def _trainer(run: _Run, workers: int, loop_config: dict[str, Any], callbacks: list[Any] | None,
             selector: dict[str, str] | None = None):  # fmt: skip
    """The Train V2 ``TorchTrainer`` of a prepared run; ``selector``: the node labels of its workers and
    of every Ray Data task feeding them (module doc)."""
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from vidray.train.loop import train_func_per_worker

    cfg = run.cfg
    resources = {**cfg.ray.worker_resources, "CPU": cfg.ray.cpus_per_worker}
    if cfg.ray.use_gpu:
        resources["GPU"] = 1
    attr, order = run.score
    exec_options: ExecutionOptions | None = None
    if selector:
        exec_options = DataConfig.default_ingest_options()
        exec_options.label_selector = dict(selector)
    st = Store(run.run_dir)
    return TorchTrainer(
        train_func_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if cfg.ray.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker=resources if workers > 0 else None,
                                     label_selector=dict(selector) if selector and workers > 0 else None),
        run_config=RunConfig(
            name=CHECKPOINTS_DIR, storage_path=st.base, storage_filesystem=None if st.local else st.fs,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.num_to_keep,
                                               checkpoint_score_attribute=attr, checkpoint_score_order=order),
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
            callbacks=list(callbacks or []),
        ),
        datasets=_datasets(run.files, cfg, len(run.classes), bool(run.val_ids), workers),
        dataset_config=DataConfig(datasets_to_split=["train"], execution_options=exec_options),
    )  # fmt: skip


class _Interrupted(KeyboardInterrupt):
    """``fit()`` was stopped by Ctrl-C."""


def _fit_interruptible(trainer: Any) -> Any:
    """``trainer.fit()`` with Ctrl-C told apart from a failure. Train V2's ``fit()`` installs its own SIGINT
    handler and never restores it; on Ctrl-C that handler aborts the controller and calls ``sys.exit``,
    so the interruption comes out of ``fit()`` as ``SystemExit``, not ``KeyboardInterrupt``
    (``ray/train/v2/api/data_parallel_trainer.py``); a Ctrl-C before it installed the handler is a plain
    ``KeyboardInterrupt``. Both become :class:`_Interrupted`; the previous handler is restored."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    try:
        return trainer.fit()
    except KeyboardInterrupt as e:
        raise _Interrupted() from e
    except SystemExit as e:
        handler = signal.getsignal(signal.SIGINT) if main else None
        if main and handler is not before and "sigint" in getattr(handler, "__qualname__", "").lower():
            raise _Interrupted() from e  # Ray Train's own Ctrl-C path
        raise
    finally:
        if main:
            signal.signal(signal.SIGINT, before)


def _steps_estimate(run: "_Run", workers: int) -> int:
    """Training steps still to run (for the progress bar): epochs left x train videos / global batch."""
    cfg = run.cfg
    per_epoch = max(1, run.train_videos // (cfg.batch_size * max(workers, 1)))
    if cfg.debug.max_steps_per_epoch:
        per_epoch = min(per_epoch, cfg.debug.max_steps_per_epoch)
    return per_epoch * max(cfg.epochs - run.done, 0)


def _render_progress(epochs: int) -> Any:
    def render(s: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        fields: dict[str, Any] = {"epoch": f"{s.get('epoch', s.get('epochs_done', 0))}/{epochs}"}
        for k, name in (("loss", "loss"), ("val_top1", "val top1"), ("val_mAP", "val mAP"),
                        ("clips_per_s", "clips/s")):  # fmt: skip
            if k in s:
                fields[name] = s[k]
        return float(s.get("steps", 0)), fields

    return render


def run_training(
    data_dir: str | Path,
    cfg: TrainConfig,
    *,
    workers: int = 1,
    out: str | Path | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    callbacks: list[Any] | None = None,
    fit_to_cluster: bool = True,
) -> TrainResult:
    """Train ``cfg.model.name`` on an ingest output with ``workers`` Ray Train workers.

    Args:
        data_dir: ``vidray ingest --out`` folder.
        cfg: the TrainConfig (``model.name`` set).
        workers: Ray Train workers (DDP, gloo on CPU / nccl on GPU); ``0`` runs the loop in this process
            (``ScalingConfig(num_workers=0)``, Train V2's local mode; Ray Data still reads the data).
        out: run folder (default ``runs/<model>-<YYYYmmdd-HHMMSS>``); an existing one is resumed.
        tracking_uri: MLflow server/store; default ``MLFLOW_TRACKING_URI`` if set, else
            ``sqlite:///RUN_DIR/mlflow.db``.
        track: ``False`` opens no MLflow run (a Tune trial: ``MLflowLoggerCallback`` logs it instead).
        callbacks: Ray Train ``UserCallback`` s for the ``RunConfig`` (Tune: ``TuneReportCallback``).
        fit_to_cluster: size ``ray.cpus_per_worker`` to the cluster (:func:`worker_cpus`); Tune trials
            share the cluster and are sized by the sweep instead.

    Raises the training error after marking the MLflow run ``FAILED``; on Ctrl-C the run is marked
    ``KILLED`` (MLflow and ``run.json``) and ``KeyboardInterrupt`` is raised.
    """
    from mlflow.tracking import MlflowClient

    from vidray.recipe import input_channels
    from vidray.runtime import init_ray, node_selector
    from vidray.tracking import default_tracking_uri

    t0 = time.perf_counter()
    if workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if track and not uri and out is not None and is_uri(str(out)):
        raise ValueError(f"--out {out}: the MLflow store cannot live on an object store; pass --tracking-uri (an "
                         "MLflow server every node reaches, e.g. http://HEAD:5000 as cluster.yaml runs) or set "
                         "MLFLOW_TRACKING_URI")
    run = _prepare_run(data_dir, cfg, out)
    init_ray(run.cfg.ray.ray_address)
    selector = node_selector(run.cfg.ray.node_labels, "Train workers and their data tasks")
    if fit_to_cluster:  # a usage error (workers that cannot fit) before any MLflow run is opened
        run.cfg = _fit_cluster(run.cfg, workers, selector)
    cfg, run_dir = run.cfg, run.run_dir
    uri = uri or (default_tracking_uri(run_dir) if track else None)
    exp_id, run_id = _mlflow_run(run_dir, uri, cfg, cfg.model.name) if track else (None, None)
    data_facts = _data_facts(run)
    _write_run_json(run_dir, mlflow_run_id=run_id, tracking_uri=uri, experiment_id=exp_id, status="RUNNING",
                    model=cfg.model.name, data=data_facts, workers=workers, run_hash=cfg.run_hash())  # fmt: skip
    flow_cfg = (run.meta.get("config") or {}).get("flow") or {}
    loop_config = {
        "train_config": cfg.model_dump(mode="json"), "run_dir": str(run_dir), "classes": run.classes,
        "in_channels": input_channels(cfg.input.modality, int(flow_cfg.get("stack_length") or 1)),
        "data": data_facts, "val_video_ids": run.val_ids, "val_labels": run.val_labels,
        "tracking_uri": uri if track else None, "mlflow_run_id": run_id,
        "resume_from": str(run.resume) if run.resume else None, "local_mode": workers == 0,
        "score_attribute": run.score[0], "score_order": run.score[1],
    }  # fmt: skip
    client = MlflowClient(uri) if track else None
    status = "FAILED"
    board = make_board()
    loop_config["progress_board"] = board
    try:
        with current().follow(board, f"train {cfg.model.name}", _steps_estimate(run, workers), "steps",
                              render=_render_progress(cfg.epochs)):  # fmt: skip
            result = _fit_interruptible(_trainer(run, workers, loop_config, callbacks, selector))
        if getattr(result, "error", None):
            raise result.error
        status = "FINISHED"
    except _Interrupted as e:
        status = "KILLED"
        raise KeyboardInterrupt(f"training interrupted after epoch {latest_epoch(run_dir)}; resume with the same "
                                f"command (--out {run_dir})") from e
    finally:
        try:
            if client is not None:
                mrun = client.get_run(run_id)
                if status != "FINISHED" or mrun.info.status == "RUNNING":
                    client.set_terminated(run_id, status)
        except Exception as e:  # the store itself is unreachable: say so, keep the training error
            log.error("could not set MLflow run %s to %s: %s", run_id, status, e)
        _write_run_json(run_dir, status=status)
    last = latest_checkpoint(run_dir)
    metrics = dict(result.metrics or {})
    if not metrics and last is not None:
        metrics = dict(load_checkpoint(last).get("metrics") or {})
    return TrainResult(
        run_dir=run_dir, checkpoint=str(last) if last else None, metrics=metrics, mlflow_run_id=run_id,
        tracking_uri=uri if track else None, experiment_id=exp_id,
        status=client.get_run(run_id).info.status if client is not None else status,
        resumed_from_epoch=run.done, wall_s=time.perf_counter() - t0,
    )  # fmt: skip


def result_dict(r: TrainResult) -> dict[str, Any]:
    """JSON-able form of a :class:`TrainResult` (``vidray train --json``)."""
    d = asdict(r)
    d["metrics"] = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in r.metrics.items()}
    return d
