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

Resume: (1) a worker that dies is restarted by Ray Train (``ray.max_failures``) and continues from
``ray.train.get_checkpoint()``; (2) a killed driver is resumed by running the same command with the
same ``--out``: the latest ``epoch_*`` checkpoint is passed to the loop in ``train_loop_config``
(Train V2's replacement of ``resume_from_checkpoint``), and the same MLflow run continues.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vidray.config import TrainConfig
from vidray.train.checkpoint import CHECKPOINTS_DIR, latest_checkpoint, load_checkpoint

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "resolve_config", "run_training", "score_attribute"]


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
        m = {k: v for k, v in self.metrics.items() if k in ("epoch", "train_loss", "val_loss", "val_top1", "val_mAP")}
        return (
            f"vidray train -> {self.run_dir}\n"
            f"  status {self.status}; last checkpoint {self.checkpoint}\n"
            f"  metrics {json.dumps({k: round(float(v), 4) for k, v in m.items()})}\n"
            f"  MLflow run {self.mlflow_run_id} (experiment {self.experiment_id}) at {self.tracking_uri}\n"
            f"  browse: mlflow ui --backend-store-uri {self.tracking_uri} --host 127.0.0.1\n"
            f"  wall {self.wall_s:.1f} s" + (f", resumed after epoch {self.resumed_from_epoch}" if self.resumed_from_epoch else "")
        )


def resolve_config(cfg: TrainConfig, data_meta: dict[str, Any]) -> TrainConfig:
    """Fill in what depends on the model and the data, and refuse contradictions early (in the driver,
    before any worker starts): ``sampler.num_frames`` from ``model_info(name).num_frames``;
    ``model.kwargs.image_size`` = ``augment.crop_size`` for builders that take it; ``flow`` /
    ``rgb+flow`` need an ingest with flow; ``multitask`` needs ``rgb+flow``; ``gain`` /
    ``per_frame`` need a model with per-frame outputs (checked at the first step)."""
    from vidray.models import model_info

    if not cfg.model.name:
        raise ValueError("no model: pass --model NAME (or model.name in the config)")
    info = model_info(cfg.model.name)  # KeyError lists the registered names
    c = cfg.model_copy(deep=True)
    if c.sampler.num_frames is None:
        c.sampler = c.sampler.model_copy(update={"num_frames": 2 if c.sampler.name == "pair" else info.num_frames})
    import inspect

    params = inspect.signature(info.builder).parameters
    if "image_size" in params and "image_size" not in c.model.kwargs:
        # models whose head size depends on the input (Ng et al. pooling): built for the crop size
        c.model = c.model.model_copy(update={"kwargs": {**c.model.kwargs, "image_size": c.augment.crop_size}})
    flow_on = bool(((data_meta.get("config") or {}).get("flow") or {}).get("enabled"))
    if c.input.modality in ("flow", "rgb+flow") and not flow_on:
        raise ValueError(f"input.modality={c.input.modality} needs flow in the data: ingest with flow.enabled=true")
    if c.loss.name == "multitask" and c.input.modality != "rgb+flow":
        raise ValueError("loss.name=multitask regresses the ingested flow: set input.modality=rgb+flow")
    return c


def score_attribute(cfg: TrainConfig, has_val: bool) -> tuple[str, str]:
    """The metric that ranks checkpoints, and its order: ``checkpoint.score_attribute`` when the run
    reports it; ``val_mAP`` for multi-label (``bce``) runs left at the default ``val_top1``;
    ``train_loss`` (min) without validation."""
    attr, order = cfg.checkpoint.score_attribute, cfg.checkpoint.score_order
    if not has_val:
        return ("train_loss", "min") if attr.startswith("val_") else (attr, order)
    if cfg.loss.name == "bce" and attr == "val_top1":
        return "val_mAP", "max"
    return attr, order


def _split_rows(data_dir: str, split: str | None) -> tuple[list[str], list[list[int]]]:
    """Video ids (first appearance order, chunks merged) and label lists of one split."""
    from vidray.io.reader import IngestDataset

    if not split:
        return [], []
    t = IngestDataset(data_dir).table(columns=["video_id", "labels", "split"], split=split)
    ids: dict[str, list[int]] = {}
    for vid, labels in zip(t["video_id"].to_pylist(), t["labels"].to_pylist()):
        ids.setdefault(vid, list(labels or []))
    return list(ids), list(ids.values())


def read_blocks(files: list[str], workers: int, requested: int | None = None) -> int:
    """Read tasks per epoch: ``requested``, else one per ~128 MB of Parquet, at least 2 per worker, at
    most one per file. Ray Data's default (one task per file) pays a task's start-up per small file:
    with the ingest's 4-video parts, reading measured 17 rows/s on one core against 119 with 4 tasks
    and 300 with 1 (``benchmarks/loader.py``)."""
    if requested:
        return min(requested, len(files))
    total = sum(os.path.getsize(f) for f in files)
    return max(1, min(len(files), max(2 * max(workers, 1), -(-total // (128 << 20)))))


def _datasets(files: list[str], cfg: TrainConfig, num_classes: int, has_val: bool, workers: int) -> dict[str, Any]:
    """Ray Data over the committed Parquet parts: only the needed columns, one split each.

    Training (``input.decode_in: read_tasks``, the fastest here): every row is sampled, decoded and
    augmented inside the read task (:func:`vidray.data.loader.decode_augment_fn`); uint8 clips go to
    the workers. Validation (and ``decode_in: workers``): rows are cut to one sample's JPEGs in the read
    task (:func:`vidray.data.loader.select_frames`) and decoded in the workers' prefetch threads
    (validation shards the unsplit dataset by video id there)."""
    import ray.data
    from ray.data.expressions import col

    from vidray.data.loader import columns_for, decode_augment_fn, select_frames_fn
    from vidray.train.loop import clip_spec

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
        if train and cfg.input.decode_in == "read_tasks":
            return ds.map_batches(decode_augment_fn, fn_kwargs={"spec": spec}, batch_format="pyarrow",
                                  batch_size=max(cfg.batch_size, 16))  # fmt: skip
        return ds.map_batches(select_frames_fn, fn_kwargs={"spec": spec}, batch_format="pyarrow", batch_size=None)

    out = {"train": split_ds(cfg.input.train_split, True)}
    if has_val:
        out["val"] = split_ds(cfg.input.val_split, False)
    return out


def _mlflow_run(run_dir: Path, uri: str, cfg: TrainConfig, model: str) -> tuple[str, str]:
    """The run's MLflow experiment and run ids: created in the DRIVER before any worker logs (a fresh
    sqlite store hit by several processes at once fails); a resumed run folder reuses its run."""
    from mlflow.tracking import MlflowClient

    from vidray.tracking import setup_mlflow

    exp_id = setup_mlflow(uri, cfg.tracking.experiment)
    client = MlflowClient(uri)
    info_path = run_dir / "run.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        rid = info.get("mlflow_run_id")
        if rid and info.get("tracking_uri") == uri:
            try:
                client.get_run(rid)
                client.update_run(rid, status="RUNNING")
                return exp_id, rid
            except Exception:  # deleted or another store: start a new run
                pass
    name = cfg.tracking.run_name or f"{model}-{run_dir.name}"
    run = client.create_run(exp_id, run_name=name, tags={"vidray.run_dir": str(run_dir)})
    return exp_id, run.info.run_id


def _write_run_json(run_dir: Path, **fields: Any) -> None:
    p = run_dir / "run.json"
    info = json.loads(p.read_text()) if p.is_file() else {}
    info.update(fields)
    info["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    p.write_text(json.dumps(info, indent=2))


def _check_same_run(run_dir: Path, cfg: TrainConfig) -> None:
    """A run folder that holds checkpoints resumes only with the same settings (``run_hash``)."""
    p = run_dir / "config.yaml"
    if not p.is_file() or latest_checkpoint(run_dir) is None:
        return
    old = TrainConfig.model_validate(yaml.safe_load(p.read_text()))
    if old.run_hash() != cfg.run_hash():
        raise ValueError(
            f"{run_dir} holds a run with other settings (run hash {old.run_hash()} != {cfg.run_hash()}); "
            "use another --out to start a new run, or the same config to resume it"
        )


def run_training(
    data_dir: str | Path,
    cfg: TrainConfig,
    *,
    workers: int = 1,
    out: str | Path | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    callbacks: list[Any] | None = None,
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

    Raises the training error after marking the MLflow run ``FAILED`` (``KILLED`` on Ctrl-C).
    """
    from mlflow.tracking import MlflowClient
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from vidray.io.reader import IngestDataset
    from vidray.runtime import init_ray
    from vidray.tracking import default_tracking_uri
    from vidray.train.loop import input_channels, train_func_per_worker

    t0 = time.perf_counter()
    if workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    ds = IngestDataset(data_dir)
    data_dir = str(Path(data_dir).resolve())
    cfg = resolve_config(cfg, ds.meta)
    classes = ds.classes
    if not classes:
        raise ValueError(f"{data_dir}: dataset.json lists no classes")
    files = ds.files
    if not files:
        raise ValueError(f"{data_dir}: no committed clips parts")
    run_dir = Path(out) if out else Path("runs") / f"{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_same_run(run_dir, cfg)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    shutil.copyfile(Path(data_dir) / "dataset.json", run_dir / "dataset.json")

    val_ids, val_labels = _split_rows(data_dir, cfg.input.val_split)
    has_val = bool(val_ids)
    if cfg.input.val_split and not has_val:
        log.warning("no rows in split %r: training without validation", cfg.input.val_split)
    attr, order = score_attribute(cfg, has_val)
    resume = latest_checkpoint(run_dir)
    done = int(load_checkpoint(resume)["epoch"]) if resume is not None else 0

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(run_dir)
    exp_id, run_id = _mlflow_run(run_dir, uri, cfg, cfg.model.name) if track else (None, None)
    data_facts = {"path": data_dir, "manifest_sha256": (ds.meta.get("manifest") or {}).get("sha256"),
                  "data_hash": ds.meta.get("data_hash"), "schema_version": ds.meta.get("schema_version")}  # fmt: skip
    _write_run_json(run_dir, mlflow_run_id=run_id, tracking_uri=uri, experiment_id=exp_id, status="RUNNING",
                    model=cfg.model.name, data=data_facts, workers=workers, run_hash=cfg.run_hash())  # fmt: skip
    flow_cfg = (ds.meta.get("config") or {}).get("flow") or {}
    loop_config = {
        "train_config": cfg.model_dump(mode="json"), "run_dir": str(run_dir), "classes": classes,
        "in_channels": input_channels(cfg.input.modality, int(flow_cfg.get("stack_length") or 1)),
        "data": data_facts, "val_video_ids": val_ids, "val_labels": val_labels,
        "tracking_uri": uri if track else None, "mlflow_run_id": run_id, "resume_from": str(resume) if resume else None,
        "local_mode": workers == 0, "score_attribute": attr, "score_order": order,
    }  # fmt: skip
    client = MlflowClient(uri) if track else None
    status = "FAILED"
    try:
        init_ray(cfg.ray.ray_address)
        resources = {"CPU": cfg.ray.cpus_per_worker}
        if cfg.ray.use_gpu:
            resources["GPU"] = 1
        trainer = TorchTrainer(
            train_func_per_worker,
            train_loop_config=loop_config,
            torch_config=TorchConfig(backend="nccl" if cfg.ray.use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=cfg.ray.use_gpu,
                                         resources_per_worker=resources if workers > 0 else None),
            run_config=RunConfig(
                name=CHECKPOINTS_DIR, storage_path=str(run_dir),
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.num_to_keep,
                                                   checkpoint_score_attribute=attr, checkpoint_score_order=order),
                failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
                callbacks=list(callbacks or []),
            ),
            datasets=_datasets(files, cfg, len(classes), has_val, workers),
            dataset_config=DataConfig(datasets_to_split=["train"]),
        )  # fmt: skip
        result = trainer.fit()
        if getattr(result, "error", None):
            raise result.error
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            if client is not None:
                run = client.get_run(run_id)
                if status != "FINISHED" or run.info.status == "RUNNING":
                    client.set_terminated(run_id, status)
        except Exception as e:  # the store itself is unreachable: say so, keep the training error
            log.error("could not set MLflow run %s to %s: %s", run_id, status, e)
        _write_run_json(run_dir, status=status)
    last = latest_checkpoint(run_dir)
    metrics = dict(result.metrics or {})
    if not metrics and last is not None:
        metrics = dict(load_checkpoint(last).get("metrics") or {})
    return TrainResult(
        run_dir=str(run_dir), checkpoint=str(last) if last else None, metrics=metrics, mlflow_run_id=run_id,
        tracking_uri=uri if track else None, experiment_id=exp_id,
        status=client.get_run(run_id).info.status if client is not None else status,
        resumed_from_epoch=done, wall_s=time.perf_counter() - t0,
    )  # fmt: skip


def result_dict(r: TrainResult) -> dict[str, Any]:
    """JSON-able form of a :class:`TrainResult` (``vidray train --json``)."""
    d = asdict(r)
    d["metrics"] = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in r.metrics.items()}
    return d
