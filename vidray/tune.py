"""``vidray tune``: hyperparameter sweeps with Ray Tune over ``vidray train``, logged to MLflow.

Sweep file (YAML, :class:`SweepConfig`)::

    base: ../train_demo.yaml           # a TrainConfig file (relative to the sweep file)
    model: gru_rcn
    data: runs/data                    # an ingest output, computed once and shared by all trials
    space:                             # dotted TrainConfig keys (or "data") -> a distribution
      optim.lr: {loguniform: [1.0e-4, 1.0e-1]}
      model.kwargs.dropout: {uniform: [0.3, 0.8]}
      loss.lam: {choice: [0.0, 0.01, 0.1]}           # ActionFlowNet's lambda
      sampler.num_frames: {choice: [4, 8]}           # clip length / segments
      data: {choice: [runs/data_flow, runs/data_rgb]}  # which ingested variant (e.g. flow on/off)
    num_samples: 8
    scheduler: {name: asha, grace_period: 1, reduction_factor: 2}

Each trial is a function that builds a Train V2 ``TorchTrainer`` (via :func:`vidray.train.trainer.
run_training`) whose metrics and checkpoints reach Tune through Ray's ``TuneReportCallback``. ASHA
stops poor trials early; a failing trial is retried (``FailureConfig(max_failures)``); an interrupted
sweep resumes with ``Tuner.restore`` (``vidray tune SWEEP --resume``). MLflow: one parent run per sweep,
one child run per trial through ``MLflowLoggerCallback``; when the sweep ends, any trial run still
``RUNNING`` (a trial killed with its actor) is closed as ``KILLED`` and counted in the summary.

Resources on a small machine: a trial holds ``trial_cpus`` plus ``workers x cpus_per_worker``; with
whole CPUs for both on 2 CPUs the worker group never starts (measured: deadlock), so the defaults are
0.5 and 0.5, and :func:`max_concurrent` leaves ``data_cpus`` free for Ray Data's read tasks. On a GPU
cluster: ``use_gpu: true``, ``cpus_per_worker`` = the data-loading CPUs per GPU, ``trial_cpus: 0.5``.
Ray must run its dashboard (State API): a trial stopped by ASHA is freed by Train V2's placement-group
cleaner, which asks that API whether the trial's controller is dead (see :func:`vidray.runtime.init_ray`).
That cleaner finds its cluster by auto-detection, which fails when several Ray instances run on one
machine ("Found multiple active Ray instances"): run one Ray per machine for sweeps.

Fusion weights are tuned without retraining (:func:`tune_fusion`): a cheap search over the saved
validation scores of two streams (weight, l1-norm on/off, weighted sum vs log-average).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from vidray.config import TrainConfig, _Strict, apply_overrides, load_config
from vidray.console import current, echo, set_log_dir

log = logging.getLogger(__name__)



class SchedulerConfig(_Strict):
    """Trial scheduler: ``asha`` (default) or ``fifo`` (no early stopping)."""

    name: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1, description="epochs every trial gets")
    reduction_factor: float = Field(2.0, gt=1)


class SweepConfig(_Strict):
    """A ``vidray tune`` sweep (see the module doc)."""

    base: str | None = Field(None, description="TrainConfig YAML, relative to the sweep file")
    overrides: list[str] = Field(default_factory=list, description="--set style overrides of the base")
    model: str | None = None
    data: str | None = Field(None, description="ingest output shared by every trial")
    space: dict[str, dict[str, Any]] = Field(default_factory=dict)
    num_samples: int = Field(4, ge=1)
    metric: str = "val_top1"
    mode: Literal["max", "min"] = "max"
    scheduler: SchedulerConfig = SchedulerConfig()
    workers: int = Field(1, ge=1, description="Ray Train workers per trial")
    cpus_per_worker: float = Field(0.5, gt=0)
    trial_cpus: float = Field(0.5, gt=0)
    use_gpu: bool = False
    node_labels: dict[str, str] = Field(
        default_factory=lambda: {"vidray-role": "train"},
        description="Ray node labels of the trials and their Train workers (cluster.yaml's gpu_train); applied "
        "only when a node of the cluster carries these label keys; {} = any node",
    )
    data_cpus: float = Field(1.0, ge=0, description="CPUs left free for Ray Data when sizing concurrency")
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(1, ge=0, description="retries of a failing trial")
    experiment: str = "vidray-sweep"
    name: str = "sweep"


_DISTRIBUTIONS = ("uniform", "loguniform", "choice", "grid", "randint", "quniform")


def build_space(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Turn ``{key: {distribution: args}}`` into a Ray Tune ``param_space``.

    ``uniform: [lo, hi]``, ``loguniform: [lo, hi]``, ``quniform: [lo, hi, q]``, ``randint: [lo, hi]``,
    ``choice: [...]`` (random), ``grid: [...]`` (every value, times ``num_samples``).
    """
    from ray import tune

    out: dict[str, Any] = {}
    for key, spec in space.items():
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ValueError(f"space.{key}: expected one of {{{', '.join(_DISTRIBUTIONS)}: ...}}, got {spec!r}")
        (dist, args), = spec.items()
        if dist not in _DISTRIBUTIONS:
            raise ValueError(f"space.{key}: unknown distribution {dist!r}; use one of {_DISTRIBUTIONS}")
        if dist in ("choice", "grid"):
            if not isinstance(args, list) or not args:
                raise ValueError(f"space.{key}.{dist}: expected a non-empty list")
            out[key] = tune.choice(args) if dist == "choice" else tune.grid_search(args)
        else:
            out[key] = getattr(tune, dist)(*args)
    return out


def total_trials(sweep: SweepConfig) -> int:
    """Trials of a sweep: ``num_samples`` x the product of the ``grid`` sizes."""
    n = sweep.num_samples
    for spec in sweep.space.values():
        if isinstance(spec, dict) and "grid" in spec and isinstance(spec["grid"], list):
            n *= len(spec["grid"])
    return n


def _trial_progress(metric: str, mode: str) -> Any:
    """A Tune callback (it runs in the driver) that draws the sweep's progress bar: trials finished,
    running, best metric so far. ``.update`` is set to the bar's update function."""
    from ray.tune import Callback

    class TrialProgress(Callback):
        def __init__(self) -> None:
            self.update: Any = None
            self.done: set[str] = set()
            self.best: float | None = None

        def _draw(self, trials: list) -> None:
            if self.update is not None:
                fields: dict[str, Any] = {"running": sum(1 for t in trials if t.status == "RUNNING")}
                if self.best is not None:
                    fields[f"best {metric}"] = round(self.best, 4)
                self.update(len(self.done), **fields)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            v = result.get(metric)
            if isinstance(v, (int, float)) and (self.best is None or (v > self.best if mode == "max" else v < self.best)):
                self.best = float(v)
            self._draw(trials)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done.add(trial.trial_id)
            self._draw(trials)

        on_trial_error = on_trial_complete

    return TrialProgress()


def max_concurrent(cluster_cpus: float, sweep: SweepConfig) -> int:
    """How many trials fit at once: ``(cpus - data_cpus) // (trial_cpus + workers * cpus_per_worker)``,
    at least 1 (the deadlock rule, see the module doc)."""
    per_trial = sweep.trial_cpus + sweep.workers * sweep.cpus_per_worker
    return max(1, int(math.floor((cluster_cpus - sweep.data_cpus) / per_trial + 1e-9)))


def trial_config(sweep: SweepConfig, base_dir: Path, params: dict[str, Any]) -> tuple[TrainConfig, str]:
    """The TrainConfig and dataset of one trial: base file + sweep overrides + the trial's params."""
    base: dict[str, Any] = {}
    if sweep.base:
        base = yaml.safe_load((base_dir / sweep.base).read_text()) or {}
    data = params.get("data", sweep.data)
    if not data:
        raise ValueError("the sweep needs `data:` (or a `data` entry in `space`)")
    sets = list(sweep.overrides) + [f"{k}={json.dumps(v)}" for k, v in params.items() if k != "data"]
    if sweep.model:
        sets.append(f"model.name={sweep.model}")
    d = apply_overrides(base, sets)
    d.setdefault("ray", {}).update(cpus_per_worker=sweep.cpus_per_worker, use_gpu=sweep.use_gpu,
                                   node_labels=dict(sweep.node_labels))
    return TrainConfig.model_validate(d), str(data)


def _trial(params: dict[str, Any], sweep_json: str, base_dir: str, sweep_dir: str) -> None:
    """One trial: build the Train V2 trainer and forward its reports to Tune.

    The trial's run folder is ``<sweep_dir>/trials/<trial_id>/train`` (on the sweep's storage, not in
    Ray's session temp), so a retried or restored trial resumes its own checkpoints and the best
    checkpoint outlives the Ray session."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from vidray.runtime import trace_placement
    from vidray.train.trainer import run_training

    trace_placement("tune_trial", trial_id=tune.get_context().get_trial_id())
    sweep = SweepConfig.model_validate_json(sweep_json)
    cfg, data = trial_config(sweep, Path(base_dir), params)
    trial_dir = Path(sweep_dir) / "trials" / tune.get_context().get_trial_id()
    run_training(data, cfg, workers=sweep.workers, out=trial_dir / "train", track=False,
                 callbacks=[TuneReportCallback()], fit_to_cluster=False)


def run_sweep(sweep_path: str | Path, *, out: str | Path = "runs/sweeps", overrides: list[str] | None = None,
              resume: bool = False, tracking_uri: str | None = None) -> dict[str, Any]:
    """Run (or ``resume``) the sweep described by ``sweep_path``. Returns the summary written to
    ``<out>/<name>/summary.json`` (best config, best checkpoint, counts, MLflow ids)."""
    import ray
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from vidray.runtime import cluster_cpus, init_ray, node_selector
    from vidray.tracking import default_tracking_uri, log_params_flat, setup_mlflow

    sweep_path = Path(sweep_path).resolve()
    sweep = load_config(SweepConfig, sweep_path, overrides)
    root = Path(out).resolve()
    sweep_dir = root / sweep.name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or default_tracking_uri(sweep_dir)
    exp_id = setup_mlflow(uri, sweep.experiment)  # created here, in the driver, before any trial
    client = MlflowClient(uri)
    parent_file = sweep_dir / "parent_run.json"
    if resume and parent_file.exists():
        parent_id = json.loads(parent_file.read_text())["run_id"]
        client.update_run(parent_id, "RUNNING")
    else:
        parent = client.create_run(exp_id, run_name=sweep.name, tags={"vidray.kind": "sweep"})
        parent_id = parent.info.run_id
        parent_file.write_text(json.dumps({"run_id": parent_id, "tracking_uri": uri}))
        log_params_flat(sweep, run_id=parent_id)

    set_log_dir(sweep_dir)
    init_ray(None)
    _warn_without_state_api()
    first_cfg, _ = trial_config(sweep, sweep_path.parent, {})
    epochs = first_cfg.epochs
    if sweep.scheduler.name == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=sweep.scheduler.grace_period,
                                  reduction_factor=sweep.scheduler.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    # trials (and, through trial_config, their Train workers and data tasks) on train-type nodes only
    selector = node_selector(sweep.node_labels, "trials")
    cpus = cluster_cpus(selector) or float(ray.cluster_resources().get("CPU", 1))
    concurrent = sweep.max_concurrent_trials or max_concurrent(cpus, sweep)
    trial_resources: Any = {"CPU": sweep.trial_cpus}
    if selector:
        trial_resources = tune.PlacementGroupFactory([trial_resources], bundle_label_selector=[selector])
    trainable = tune.with_resources(
        tune.with_parameters(_trial, sweep_json=sweep.model_dump_json(), base_dir=str(sweep_path.parent),
                             sweep_dir=str(sweep_dir)),
        trial_resources,
    )
    progress_cb = _trial_progress(sweep.metric, sweep.mode)
    mlflow_cb = MLflowLoggerCallback(tracking_uri=uri, experiment_name=sweep.experiment, save_artifact=False,
                                     tags={"mlflow.parentRunId": parent_id, "vidray.kind": "trial"})
    t0 = time.perf_counter()
    if resume and tune.Tuner.can_restore(str(sweep_dir / "tune")):
        tuner = tune.Tuner.restore(str(sweep_dir / "tune"), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=build_space(sweep.space),
            tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
                                        scheduler=scheduler, max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir), callbacks=[mlflow_cb, progress_cb],
                                      failure_config=tune.FailureConfig(max_failures=sweep.max_failures)),
        )
    status = "FAILED"
    try:
        with current().progress(f"tune {sweep.name}", total_trials(sweep), "trials") as update:
            progress_cb.update = update
            results = tuner.fit()
        status = "FINISHED"
    finally:
        closed = _close_running_trial_runs(client, exp_id, parent_id)
        client.set_terminated(parent_id, status)
    summary = _summarise_sweep(results, sweep, sweep_dir, time.perf_counter() - t0)
    summary.update(mlflow={"tracking_uri": uri, "experiment_id": exp_id, "parent_run_id": parent_id,
                           "closed_running_runs": closed}, max_concurrent_trials=concurrent)
    (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    client.log_artifact(parent_id, str(sweep_dir / "summary.json"))
    client.log_artifact(parent_id, str(sweep_dir / "results.csv"))
    if summary.get("best_metric") is not None:
        client.log_metric(parent_id, f"best_{sweep.metric}", float(summary["best_metric"]))
    return summary


def _warn_without_state_api() -> None:
    """Train V2 frees a stopped trial's worker placement group through the State API (the dashboard);
    on a Ray started without it (``ray.init(include_dashboard=False)``), say what will happen."""
    from ray.util.state import list_actors

    try:
        list_actors(limit=1, timeout=10, raise_on_missing_output=False)
    except Exception as e:  # no dashboard / API server
        log.warning("Ray's State API is unavailable (%s): trials stopped early by the scheduler may keep "
                    "their Train workers' CPUs reserved and later trials may wait for them forever; start "
                    "Ray with its dashboard (the default of `ray start` and of vidray's local Ray)", e)


def _close_running_trial_runs(client, exp_id: str, parent_id: str) -> int:
    """Trial runs left RUNNING (their actor was killed before the callback ended them): set KILLED."""
    runs = client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=10000)
    n = 0
    for r in runs:
        if r.info.status == "RUNNING":
            client.set_terminated(r.info.run_id, "KILLED")
            n += 1
    return n


def _summarise_sweep(results, sweep: SweepConfig, sweep_dir: Path, wall: float) -> dict[str, Any]:
    df = results.get_dataframe()
    df.to_csv(sweep_dir / "results.csv", index=False)
    errors = sum(1 for r in results if r.error is not None)
    summary: dict[str, Any] = {"trials": len(results), "errored": errors, "wall_s": round(wall, 1),
                               "metric": sweep.metric, "mode": sweep.mode, "results_csv": str(sweep_dir / "results.csv")}
    try:
        best = results.get_best_result(metric=sweep.metric, mode=sweep.mode, scope="all")
    except RuntimeError:
        best = None
    iters = [r.metrics.get("training_iteration", 0) for r in results if r.metrics]
    summary["stopped_early"] = sum(1 for i in iters if i and i < max(iters))
    if best is not None and best.metrics:
        summary["best_metric"] = best.metrics.get(sweep.metric)
        summary["best_params"] = best.config
        summary["best_checkpoint"] = best.metrics.get("checkpoint_path")
        (sweep_dir / "best_params.yaml").write_text(yaml.safe_dump(best.config, sort_keys=False))
    return summary


# ------------------------------------------------------------------------------------------------
# Fusion weights on saved scores (no retraining)
# ------------------------------------------------------------------------------------------------
def fusion_objective(params: dict[str, Any], streams: list, labels) -> float:
    """Validation top-1 of fusing ``streams`` (``[(N, K)] * 2``) with ``params`` =
    ``{"w": weight of the second stream (first = 1), "l1_norm": bool, "method": "weighted"|"logmean"}``."""
    import numpy as np

    from vidray.eval.fusion import log_average_fusion, weighted_fusion
    from vidray.eval.metrics import top_k_accuracy

    w = [1.0, float(params["w"])]
    if params["method"] == "logmean":
        fused = log_average_fusion(streams, w)
    else:
        fused = weighted_fusion(streams, w, l1_norm=bool(params["l1_norm"]))
    return float(top_k_accuracy(np.asarray(fused), labels, 1))


def tune_fusion(score_files: list[str], *, num_samples: int = 40, max_weight: float = 4.0, seed: int = 0) -> dict:
    """Search the fusion of two score files (``vidray eval`` output on the validation split) with Ray
    Tune: the second stream's weight in ``[0, max_weight]``, l1-norm on/off, weighted vs log-mean.
    Returns ``{"best": params, "top1": ..., "trials": n}``; ties go to the first found."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from vidray.eval.fusion import align_scores, load_scores
    from vidray.eval.metrics import top_k_accuracy

    if len(score_files) != 2:
        raise ValueError(f"tune_fusion takes two score files (e.g. rgb, flow), got {len(score_files)}")
    ref = load_scores(score_files[0])
    other = align_scores(ref, load_scores(score_files[1]))
    streams, labels = [ref.scores, other.scores], ref.labels

    def trainable(params: dict[str, Any]) -> dict[str, float]:
        return {"top1": fusion_objective(params, streams, labels)}

    tuner = tune.Tuner(
        trainable,
        param_space={"w": tune.uniform(0.0, max_weight), "l1_norm": tune.choice([True, False]),
                     "method": tune.choice(["weighted", "logmean"])},
        tune_config=tune.TuneConfig(metric="top1", mode="max", num_samples=num_samples,
                                    search_alg=BasicVariantGenerator(random_state=seed)),
        run_config=tune.RunConfig(verbose=0),
    )
    results = tuner.fit()
    best = results.get_best_result()
    return {"best": best.config, "top1": best.metrics["top1"], "trials": len(results),
            "single_stream_top1": [float(top_k_accuracy(s, labels, 1)) for s in streams]}


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def _cmd_tune(a) -> int:
    summary = run_sweep(a.sweep, out=a.out, overrides=a.overrides, resume=a.resume, tracking_uri=a.tracking_uri)
    echo(f"vidray tune -> {Path(a.out) / summary.get('name', '')}".rstrip("/"))
    echo(f"  trials {summary['trials']} (errored {summary['errored']}, stopped early {summary['stopped_early']}), "
          f"wall {summary['wall_s']} s")
    if "best_metric" in summary:
        echo(f"  best {summary['metric']} = {summary['best_metric']}: {json.dumps(summary['best_params'])}")
        echo(f"  best checkpoint: {summary.get('best_checkpoint')}")
    echo(f"  results: {summary['results_csv']}; MLflow parent run {summary['mlflow']['parent_run_id']} at "
          f"{summary['mlflow']['tracking_uri']}")
    if a.json:
        echo(json.dumps(summary, default=str))
    return 0


def _cmd_tune_fusion(a) -> int:
    res = tune_fusion(a.scores, num_samples=a.samples, max_weight=a.max_weight, seed=a.seed)
    echo(f"best fusion of {a.scores[0]} + {a.scores[1]}: {json.dumps(res['best'])} -> top1 {res['top1']:.4f} "
          f"(streams alone: {', '.join(f'{x:.4f}' for x in res['single_stream_top1'])}; {res['trials']} trials)")
    if a.json:
        echo(json.dumps(res))
    return 0


def add_tune_parsers(sub: Any, commands: dict) -> None:
    """Register ``vidray tune`` and ``vidray tune-fusion``."""
    p = sub.add_parser("tune", help="hyperparameter sweep with Ray Tune (ASHA) over vidray train, logged to MLflow")
    p.add_argument("sweep", help="sweep YAML (see vidray/tune.py)")
    p.add_argument("--out", default="runs/sweeps", help="sweeps folder; the sweep goes to OUT/<name>")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sweep key, e.g. --set num_samples=8")
    p.add_argument("--resume", action="store_true", help="resume an interrupted sweep (Tuner.restore)")
    p.add_argument("--tracking-uri", help="MLflow store/server (default: sqlite under the sweep folder)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    commands["tune"] = _cmd_tune
    p = sub.add_parser("tune-fusion", help="tune two-stream fusion weights on saved validation scores")
    p.add_argument("scores", nargs=2, help="two score files from vidray eval (e.g. rgb.npz flow.npz)")
    p.add_argument("--samples", type=int, default=40, help="fusion settings tried (Ray Tune trials; default 40)")
    p.add_argument("--max-weight", type=float, default=4.0, help="largest weight of the second stream (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the search")
    p.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    commands["tune-fusion"] = _cmd_tune_fusion
