"""The per-worker training loop: what every Ray Train worker (or the driver, ``--workers 0``) runs.

:func:`train_func_per_worker` reads like a plain PyTorch loop (Ray's own examples' style)::

    model, optimizer, scheduler <- config (+ the last checkpoint when resuming)
    for epoch in range(start_epoch, epochs):
        for batch in train_shard.iter_torch_batches():        # uint8 clips, decoded by Ray Data tasks
            loss = objective(model(normalize(batch)), batch); backward; step
        scheduler.step(); validate (every rank a disjoint set of videos, gathered on rank 0)
        ray.train.report(metrics, checkpoint=epoch checkpoint)        # rank 0 writes checkpoint.pt
        rank 0 -> MLflow: metrics of the epoch
    rank 0 -> MLflow: curves, confusion matrix, flow samples, val scores (.npz); run FINISHED

The loop's ``config`` (``train_loop_config``) is built by :func:`vidray.train.trainer.run_training`;
its keys are listed in :func:`train_func_per_worker`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from vidray.config import TrainConfig
from vidray.data.loader import ClipCollate, ClipSpec, flow_target, normalize_batch
from vidray.eval.aggregate import activate, aggregate_by_video
from vidray.eval.metrics import summarize
from vidray.io.labels import multi_hot
from vidray.io.checkpoint import (
    FILENAME,
    epoch_dir_name,
    epoch_of_dir,
    latest_checkpoint,
    load_checkpoint,
    make_state,
    prune_checkpoints,
    save_checkpoint,
)
from vidray.io.store import Store, join, local_copy
from vidray.recipe import build_model, clip_spec, is_multilabel
from vidray.runtime import trace_placement
from vidray.train.objective import compute_loss
from vidray.train.optim import apply_phase, build_optimizer, build_scheduler, frozen_modules, phase_of

log = logging.getLogger(__name__)

__all__ = ["train_func_per_worker", "FAULT_MARKER"]

FAULT_MARKER = "fault_injected"


# --------------------------------------------------------------------------------------------
# device
# --------------------------------------------------------------------------------------------
def _autocast(cfg: TrainConfig, device: torch.device):
    """bf16/fp16 autocast on CUDA only; a no-op context on CPU (CPU training runs in fp32)."""
    if device.type != "cuda" or cfg.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if cfg.precision == "bf16" else torch.float16)


# --------------------------------------------------------------------------------------------
# MLflow on rank 0
# --------------------------------------------------------------------------------------------
class _Tracker:
    """Rank 0's MLflow logging (every method is a no-op on other ranks or without a run id)."""

    def __init__(self, enabled: bool, uri: str | None, run_id: str | None, run_dir: str) -> None:
        self.on = bool(enabled and uri and run_id)
        self.uri, self.run_id, self.run_dir = uri, run_id, run_dir
        self.client = None
        if self.on:
            import mlflow
            from mlflow.tracking import MlflowClient

            mlflow.set_tracking_uri(uri)
            if mlflow.active_run() is not None and mlflow.active_run().info.run_id != run_id:
                mlflow.end_run()
            if mlflow.active_run() is None:
                mlflow.start_run(run_id=run_id)
            self.client = MlflowClient(uri)

    def log_setup(self, cfg: TrainConfig, data: dict[str, Any], classes: list[str]) -> None:
        """Params (flattened config + dataset facts), tags, config and dataset.json artifacts; once."""
        if not self.on:
            return
        import mlflow

        from vidray.tracking import log_params_flat

        if self.client.get_run(self.run_id).data.params:
            return  # a resumed run: params are already there (and may not change)
        log_params_flat(cfg.model_dump(mode="json"), run_id=self.run_id)
        log_params_flat({"data": {
            "path": data.get("path"), "manifest_sha256": data.get("manifest_sha256"),
            "data_hash": data.get("data_hash"), "num_classes": len(classes), "classes": classes,
        }}, run_id=self.run_id)  # fmt: skip
        mlflow.set_tags({"vidray.data_hash": str(data.get("data_hash")),
                         "vidray.manifest_sha256": str(data.get("manifest_sha256")),
                         "vidray.model": str(cfg.model.name)})  # fmt: skip
        st = Store(self.run_dir)
        for name in ("config.yaml", "dataset.json"):
            if st.is_file(name):
                with local_copy(join(self.run_dir, name)) as p:
                    mlflow.log_artifact(str(p))
        try:  # MLflow's dataset tracking: a metadata-only entry (source path + data_hash digest)
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            from mlflow.data.meta_dataset import MetaDataset

            src = resolve_dataset_source(str(data.get("path")))
            mlflow.log_input(MetaDataset(src, name="vidray-ingest", digest=str(data.get("data_hash"))[:36]),
                             context="training")  # fmt: skip
        except Exception as e:  # optional nicety; the params above carry the same facts
            log.debug("mlflow.log_input skipped: %s", e)

    def _logged_epochs(self) -> set[int]:
        if not hasattr(self, "_logged"):
            self._logged = {int(m.step) for m in self.client.get_metric_history(self.run_id, "train_loss")}
        return self._logged

    def backfill(self, history: list[dict[str, Any]]) -> None:
        """Log epochs of a resumed run's history that MLflow missed (killed between report and log)."""
        for h in history if self.on else []:
            self.log_epoch(h, int(h["epoch"]))

    def log_epoch(self, metrics: dict[str, Any], epoch: int) -> None:
        """The metrics of one epoch at ``step=epoch``, once: a step already in the run (a resumed run that
        repeats an epoch) is not logged again."""
        if self.on and int(epoch) not in self._logged_epochs():
            from vidray.tracking import log_epoch_metrics

            log_epoch_metrics(metrics, epoch, run_id=self.run_id)
            self._logged.add(int(epoch))

    def log_metric(self, key: str, value: float, step: int) -> None:
        if self.on:
            import mlflow

            mlflow.log_metric(key, value, step=step)

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.on:
            import mlflow

            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def end(self, status: str) -> None:
        if self.on:
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.end_run(status)


# --------------------------------------------------------------------------------------------
# distributed helpers (no-ops in a single process)
# --------------------------------------------------------------------------------------------
def _dist_on(world: int) -> bool:
    return world > 1 and dist.is_available() and dist.is_initialized()


def _all_reduce_sum(values: list[float], world: int) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if _dist_on(world):
        dist.all_reduce(t)  # gloo/nccl: CPU float64 tensors work with gloo; nccl gets the device copy
    return t.tolist()


def _gather(obj: Any, world: int) -> list[Any]:
    if not _dist_on(world):
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _broadcast(obj: Any, world: int) -> Any:
    if not _dist_on(world):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _wrap_ddp(model: nn.Module, device: torch.device, find_unused: bool) -> nn.Module:
    """``ray.train.torch.prepare_model`` over the bare model: DDP when there are several workers (it is
    re-created after a freeze phase change: DDP records which parameters need gradients when built)."""
    from ray.train.torch import prepare_model

    return prepare_model(model, move_to_device=device, parallel_strategy_kwargs={"find_unused_parameters": find_unused})


# --------------------------------------------------------------------------------------------
# epochs
# --------------------------------------------------------------------------------------------
def _train_epoch(net: nn.Module, model: nn.Module, shard: Any, collate: ClipCollate | None, opt: torch.optim.Optimizer,
                 scaler: Any, cfg: TrainConfig, device: torch.device, world: int, rank: int, epoch: int,
                 run_dir: str, local_mode: bool, progress: "_Progress | None" = None) -> dict[str, float]:  # fmt: skip
    """One pass over this worker's shard (``collate`` decodes the sampled JPEGs here when
    ``input.decode_in: workers``, or passes them on for ``normalize_batch`` to decode on ``device``
    when ``input.decode_on: gpu``; else the batches arrive decoded). Returns summed-over-ranks
    ``train_loss`` / ``train_top1`` and this rank's throughput."""
    net.train()
    for m in frozen_modules(model):
        m.eval()
    loss_sum = correct = n = 0.0
    steps = 0
    t_data = t_step = 0.0
    t0 = time.perf_counter()
    it = shard.iter_torch_batches(
        batch_size=cfg.batch_size, drop_last=True, prefetch_batches=cfg.ray.prefetch_batches,
        local_shuffle_buffer_size=max(cfg.input.shuffle_buffer, cfg.batch_size) if cfg.input.shuffle_buffer else None,
        device="cpu", **({"collate_fn": collate} if collate is not None else {}),
    )  # fmt: skip
    ta = time.perf_counter()
    for batch in it:
        tb = time.perf_counter()
        t_data += tb - ta
        x = normalize_batch(batch, cfg.input.modality, mean=cfg.augment.mean, std=cfg.augment.std,
                            flow_scale=cfg.input.flow_scale, device=device)  # fmt: skip
        label = batch["label"].to(device, non_blocking=True)
        targets = batch["targets"].to(device, non_blocking=True)
        ftarget = flow_target(batch, device) if cfg.input.modality == "rgb+flow" else None
        with _autocast(cfg, device):
            out = net(x, **cfg.model.forward)
            terms = compute_loss(out, label, targets, cfg.loss, ftarget)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(terms["loss"]).backward()
            scaler.unscale_(opt)
        else:
            terms["loss"].backward()
        if cfg.optim.clip_grad_norm:
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.optim.clip_grad_norm)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        b = int(label.shape[0])
        loss_sum += float(terms["loss"].detach()) * b
        correct += float((out["logits"].detach().argmax(1) == label).sum())
        n += b
        steps += 1
        ta = time.perf_counter()
        t_step += ta - tb
        if progress is not None:
            progress.step(epoch, steps, loss_sum / max(n, 1), n / max(ta - t0, 1e-9))
        _maybe_fault(cfg, rank, epoch, steps, run_dir, local_mode)
        if cfg.debug.step_sleep_s:
            time.sleep(cfg.debug.step_sleep_s)
        if cfg.debug.max_steps_per_epoch and steps >= cfg.debug.max_steps_per_epoch:
            break
    wall = time.perf_counter() - t0
    if steps == 0:
        raise RuntimeError(
            f"rank {rank}: no training batch in epoch {epoch + 1} (batch_size={cfg.batch_size} is larger than "
            "this worker's share of the training rows; lower batch_size or use fewer workers)"
        )
    tot_loss, tot_correct, tot_n = _all_reduce_sum([loss_sum, correct, n], world)
    return {
        "train_loss": tot_loss / max(tot_n, 1), "train_top1": tot_correct / max(tot_n, 1),
        "train_clips_per_s": n / max(wall, 1e-9), "train_data_wait_s": t_data, "train_step_s": t_step,
    }  # fmt: skip


def _maybe_fault(cfg: TrainConfig, rank: int, epoch: int, steps: int, run_dir: str, local_mode: bool) -> None:
    """Fault injection (tests): rank 0 dies once, after the first step of epoch ``fail_after_epoch + 1``
    (0-based ``epoch == fail_after_epoch``), i.e. after epoch ``fail_after_epoch``'s checkpoint."""
    k = cfg.debug.fail_after_epoch
    if k is None or rank != 0 or epoch != k or steps != 1:
        return
    st = Store(run_dir)
    if st.exists(FAULT_MARKER):
        return
    st.write_bytes(f"killed rank 0 in epoch {epoch + 1} at {time.time():.0f}\n".encode(), FAULT_MARKER)
    if cfg.debug.fail_mode == "raise":
        raise RuntimeError(f"injected fault in epoch {epoch + 1} (debug.fail_after_epoch={k})")
    time.sleep(2.0)  # let the controller collect epoch k's report before the process disappears
    os._exit(1)


@torch.no_grad()
def _validate(model: nn.Module, shard: Any, spec: ClipSpec, cfg: TrainConfig, device: torch.device, rank: int,
              world: int, val_ids: list[str], val_labels: list[list[int]], num_classes: int) -> tuple[dict[str, float], dict | None]:  # fmt: skip
    """Single-clip, centre-crop validation. Every rank decodes a disjoint set of videos (crc32 of the
    id) of the unsplit val dataset, with the bare model (no DDP collectives); rank 0 gathers the clip
    scores, averages each video's rows (chunks) as softmax/sigmoid, and computes the metrics, which
    it broadcasts so every rank reports the same numbers.

    Returns ``(metrics, scores)``; ``scores`` (rank 0 only) holds ``video_ids``, ``scores`` ``(V, K)``,
    ``labels`` for the .npz and the confusion matrix.
    """
    model.eval()
    collate = ClipCollate(spec, seed=cfg.seed, rank=rank, world_size=world, shard_by_video=True, video_ids=val_ids)
    loss_sum = n = 0.0
    idx_parts, logit_parts = [], []
    for batch in shard.iter_torch_batches(batch_size=cfg.eval_batch_size or cfg.batch_size, collate_fn=collate,
                                          prefetch_batches=cfg.ray.prefetch_batches, device="cpu"):  # fmt: skip
        b = int(batch["label"].shape[0])
        if b == 0:
            continue
        x = normalize_batch(batch, cfg.input.modality, mean=cfg.augment.mean, std=cfg.augment.std,
                            flow_scale=cfg.input.flow_scale, device=device)  # fmt: skip
        label = batch["label"].to(device)
        ftarget = flow_target(batch, device) if cfg.input.modality == "rgb+flow" else None
        with _autocast(cfg, device):
            out = model(x, **cfg.model.eval_forward)
            terms = compute_loss(out, label, batch["targets"].to(device), cfg.loss, ftarget)
        loss_sum += float(terms["loss"]) * b
        n += b
        idx_parts.append(batch["index"].numpy())
        logit_parts.append(out["logits"].float().cpu().numpy())
    k = num_classes
    mine = (np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int64),
            np.concatenate(logit_parts) if logit_parts else np.zeros((0, k), np.float32), loss_sum, n)
    parts = _gather(mine, world)
    metrics: dict[str, float] | None = None
    scores = None
    if rank == 0:
        idx = np.concatenate([p[0] for p in parts])
        logits = np.concatenate([p[1] for p in parts])
        tot_loss, tot_n = sum(p[2] for p in parts), sum(p[3] for p in parts)
        multi = is_multilabel(cfg)
        probs = activate(logits, "sigmoid" if multi else "softmax")
        keep = idx >= 0
        if keep.any():  # a video's rows (its chunks) averaged, in order of first appearance
            seen, vs = aggregate_by_video(probs[keep], idx[keep], "mean", "none")
        else:
            seen, vs = np.zeros(0, np.int64), np.zeros((0, k))
        labels_l = [val_labels[i] for i in seen]
        if multi:
            y = multi_hot(labels_l, k, dtype=np.int64)
        else:
            y = np.array([ls[0] if ls else -1 for ls in labels_l], np.int64)
            keep = y >= 0
            vs, y, seen = vs[keep], y[keep], seen[keep]
        metrics = {"val_loss": tot_loss / max(tot_n, 1), "val_videos": float(seen.size)}
        if seen.size:
            metrics.update({f"val_{kk}": v for kk, v in summarize(vs, y).items() if kk != "num_samples"})
        scores = {"video_ids": [val_ids[i] for i in seen], "scores": vs, "labels": y}
    metrics = _broadcast(metrics, world)
    return metrics, scores


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
class _Progress:
    """Rank 0 tells the driver's progress bar (a :class:`vidray.console.ProgressBoard` actor) where the
    run is, at most twice a second; fire-and-forget, so a lost board never stops training."""

    def __init__(self, board: Any, start_epoch: int) -> None:
        self.board, self.last, self.total_steps = board, 0.0, 0
        self.start_epoch = start_epoch

    def step(self, epoch: int, steps: int, loss: float, clips_per_s: float) -> None:
        self.total_steps += 1
        now = time.perf_counter()
        if now - self.last >= 0.5:
            self.last = now
            self.board.set.remote(steps=self.total_steps, epoch=epoch + 1, epoch_step=steps, loss=round(loss, 4),
                                  clips_per_s=round(clips_per_s, 1))  # fmt: skip

    def epoch_done(self, metrics: dict[str, Any]) -> None:
        self.board.set.remote(steps=self.total_steps, epochs_done=int(metrics["epoch"]),
                              **{k: round(float(v), 4) for k, v in metrics.items()
                                 if k in ("train_loss", "val_top1", "val_mAP", "val_loss")})  # fmt: skip


@dataclasses.dataclass
class _Worker:
    """Everything one worker trains with (built by :func:`_setup`)."""

    cfg: TrainConfig
    config: dict[str, Any]
    run_dir: str  # local path or URI
    classes: list[str]
    rank: int
    world: int
    device: torch.device
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    local_mode: bool
    start_epoch: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def k(self) -> int:
        return len(self.classes)


def _setup(config: dict[str, Any]) -> _Worker:
    """Model, optimizer, schedule on this worker's device; resumed from the run's checkpoint if any
    (Ray Train's after a worker-group restart, else ``config["resume_from"]``)."""
    import ray.train

    cfg = TrainConfig.model_validate(config["train_config"])
    ctx = ray.train.get_context()
    if cfg.ray.use_gpu and torch.cuda.is_available():
        import ray.train.torch as rtt

        device = rtt.get_device()
    else:
        device = torch.device("cpu")
    classes = list(config["classes"])
    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(cfg, len(classes), int(config["in_channels"])).to(device)
    opt = build_optimizer(model.parameters(), cfg.optim)
    w = _Worker(
        cfg=cfg, config=config, run_dir=str(config["run_dir"]), classes=classes, rank=ctx.get_world_rank(),
        world=ctx.get_world_size(), device=device, model=model, opt=opt,
        sched=build_scheduler(opt, cfg.schedule, cfg.epochs),
        scaler=torch.amp.GradScaler("cuda") if device.type == "cuda" and cfg.precision == "fp16" else None,
        local_mode=bool(config.get("local_mode")),
    )  # fmt: skip
    ckpt = _resume_point(ray.train.get_checkpoint(), w.run_dir, config.get("resume_from"))
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = load_checkpoint(d, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        w.sched.load_state_dict(state["scheduler"])
        if w.scaler is not None and state.get("scaler"):
            w.scaler.load_state_dict(state["scaler"])
        w.start_epoch, w.history = int(state["epoch"]), list(state.get("history") or [])
        log.info("rank %d: resumed from %s at epoch %d", w.rank, ckpt.path, w.start_epoch)
    trace_placement("train_worker", rank=w.rank, world=w.world, start_epoch=w.start_epoch)
    return w


def _resume_point(ray_ckpt: Any, run_dir: str, resume_from: str | None) -> Any:
    """The checkpoint to continue from: the one with the most completed epochs among Ray Train's (after
    a worker-group restart), the run folder's newest complete one NOW (:func:`vidray.io.checkpoint.
    latest_checkpoint`, the rule the driver announces) and the driver's ``resume_from``.

    Ray Train keeps its own list of reported checkpoints (``checkpoint_manager_snapshot.json``); after
    a Ctrl-C the workers may still write epochs the controller never recorded, so Ray's list can lag
    the run folder: trusting it alone resumed an older epoch than the one announced and logged MLflow
    steps twice."""
    from ray.train import Checkpoint

    cands = [c for c in (ray_ckpt, latest_checkpoint(run_dir), resume_from) if c is not None]
    cands = [c if isinstance(c, Checkpoint) else Checkpoint(str(c)) for c in cands]
    if not cands:
        return None
    return max(cands, key=lambda c: epoch_of_dir(str(c.path).rstrip("/").rsplit("/", 1)[-1]))


def _checkpoint_state(w: _Worker, epoch: int, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Rank 0: the ``checkpoint.pt`` dict after ``epoch`` completed epochs (other ranks: None)."""
    if w.rank != 0:
        return None
    return make_state(
        model=w.model.state_dict(), optimizer=w.opt.state_dict(), scheduler=w.sched.state_dict(),
        scaler=w.scaler.state_dict() if w.scaler is not None else None, epoch=epoch,
        config=w.cfg.model_dump(mode="json"), model_name=w.cfg.model.name, num_classes=w.k,
        in_channels=int(w.config["in_channels"]), classes=w.classes, data=w.config.get("data") or {},
        metrics=metrics, history=w.history, mlflow_run_id=w.config.get("mlflow_run_id"),
    )  # fmt: skip


def train_func_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Train one worker's part of a run (Ray Train's ``train_loop_per_worker``).

    ``config`` keys: ``train_config`` (TrainConfig as dict, resolved), ``run_dir``, ``classes``,
    ``in_channels``, ``data`` (dataset.json facts: path, manifest_sha256, data_hash), ``val_video_ids``,
    ``val_labels``, ``tracking_uri``, ``mlflow_run_id``, ``resume_from`` (checkpoint folder or None),
    ``local_mode`` (``--workers 0``: this process is the driver and persists its own checkpoints),
    ``score_attribute``, ``score_order``.

    Returns ``{"metrics": ..., "epochs": ...}`` of the last epoch.
    """
    import ray.train

    w = _setup(config)
    cfg, k = w.cfg, w.k
    tracker = _Tracker(w.rank == 0, config.get("tracking_uri"), config.get("mlflow_run_id"), w.run_dir)
    try:
        tracker.log_setup(cfg, config.get("data") or {}, w.classes)
        if w.start_epoch > 0:
            tracker.backfill(w.history)
            tracker.log_metric("resumed_at_epoch", float(w.start_epoch), step=w.start_epoch)
        train_shard = ray.train.get_dataset_shard("train")
        val_ids, val_labels = list(config.get("val_video_ids") or []), list(config.get("val_labels") or [])
        val_shard = ray.train.get_dataset_shard("val") if val_ids else None
        # the datasets already cut each row to one sample (select_frames in the read tasks)
        train_spec = dataclasses.replace(clip_spec(cfg, k, True), presampled=True)
        val_spec = dataclasses.replace(clip_spec(cfg, k, False), presampled=True)

        def validate() -> tuple[dict[str, float], dict | None]:
            return _validate(w.model, val_shard, val_spec, cfg, w.device, w.rank, w.world, val_ids, val_labels, k)

        board = config.get("progress_board")
        progress = _Progress(board, w.start_epoch) if board is not None and w.rank == 0 else None
        net, net_phase = w.model, None
        last_val: dict | None = None  # rank 0: the latest validation scores
        validated = False  # every rank: whether the final model was validated (same on all ranks)
        metrics: dict[str, float] = {}
        for epoch in range(w.start_epoch, cfg.epochs):
            phase = phase_of(epoch, cfg.freeze) if cfg.freeze.epochs else 2
            if phase != net_phase:
                if cfg.freeze.epochs:
                    frozen = apply_phase(w.model, phase, cfg.freeze)
                    if w.rank == 0:
                        log.info("epoch %d: phase %d, %d frozen parameter tensors", epoch + 1, phase, len(frozen))
                net, net_phase = _wrap_ddp(w.model, w.device, cfg.ray.find_unused_parameters), phase
            lr = float(w.opt.param_groups[0]["lr"])
            # decode_in=read_tasks (decode_on=cpu): the rows arrive decoded and augmented (decode_augment_fn)
            collate = (ClipCollate(train_spec, seed=cfg.seed, rank=w.rank, world_size=w.world, epoch=epoch)
                       if cfg.input.decode_in == "workers" or cfg.input.decode_on == "gpu" else None)  # fmt: skip
            t0 = time.perf_counter()
            stats = _train_epoch(net, w.model, train_shard, collate, w.opt, w.scaler, cfg, w.device, w.world,
                                 w.rank, epoch, w.run_dir, w.local_mode, progress)  # fmt: skip
            w.sched.step()
            metrics = {"epoch": epoch + 1, "lr": lr, "phase": phase, "world_size": w.world, **stats}
            if val_shard is not None:
                vm, last_val = validate()
                metrics.update(vm)
                validated = True
            metrics["epoch_s"] = time.perf_counter() - t0
            w.history.append(dict(metrics))
            _report(metrics, _checkpoint_state(w, epoch + 1, metrics), epoch + 1, w.run_dir, w.local_mode, cfg, config)
            tracker.log_epoch(metrics, epoch + 1)
            if progress is not None:
                progress.epoch_done(metrics)
            if w.rank == 0:
                log.info("epoch %d/%d %s", epoch + 1, cfg.epochs,
                         " ".join(f"{kk}={v:.4g}" for kk, v in metrics.items() if isinstance(v, float)))  # fmt: skip

        if val_shard is not None and not validated:  # resumed after the last epoch: score the final model once
            _, last_val = validate()
        if w.rank == 0:
            _final_artifacts(tracker, cfg, w.history, last_val, w.classes, w.run_dir, config)
            tracker.end("FINISHED")
        return {"metrics": metrics, "epochs": cfg.epochs}
    except BaseException:
        tracker.end("FAILED")
        raise


def _report(metrics: dict[str, float], state: dict | None, epoch: int, run_dir: str, local_mode: bool,
            cfg: TrainConfig, config: dict[str, Any]) -> None:  # fmt: skip
    """Checkpoint of this epoch through ``ray.train.report``. Ray mode: rank 0 writes it to a temp
    folder that Ray copies to ``RUN_DIR/checkpoints/epoch_NNNN`` and prunes (``CheckpointConfig``).
    Local mode (Ray does not persist): written there directly and pruned by the same rule."""
    import ray.train
    from ray.train import Checkpoint

    name = epoch_dir_name(epoch)
    if local_mode:
        d = join(run_dir, "checkpoints", name)
        save_checkpoint(d, state)
        Store(d).write_bytes(json.dumps(metrics).encode(), "metrics.json")
        prune_checkpoints(run_dir, cfg.checkpoint.num_to_keep, config.get("score_attribute") or "epoch",
                          config.get("score_order") or "max")  # fmt: skip
        ray.train.report(metrics, checkpoint=Checkpoint(str(d)))
        return
    with tempfile.TemporaryDirectory(prefix="vidray-ckpt-") as tmp:
        ck = None
        if state is not None:
            save_checkpoint(tmp, state)
            (Path(tmp) / "metrics.json").write_text(json.dumps(metrics))
            ck = Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=ck, checkpoint_dir_name=name)


def _final_artifacts(tracker: _Tracker, cfg: TrainConfig, history: list[dict], last_val: dict | None,
                     classes: list[str], run_dir: str, config: dict[str, Any]) -> None:  # fmt: skip
    """Rank 0, end of training: curves, confusion matrix, flow samples, val scores, [model] in
    ``RUN_DIR/final`` (written locally, then uploaded when the run folder is a URI)."""
    st = Store(run_dir)
    if st.local:
        _write_final(tracker, cfg, history, last_val, classes, Path(st.path("final")), run_dir, config)
        return
    with tempfile.TemporaryDirectory(prefix="vidray-final-") as tmp:
        _write_final(tracker, cfg, history, last_val, classes, Path(tmp), run_dir, config)
        st.upload(tmp, "final")


def _write_final(tracker: _Tracker, cfg: TrainConfig, history: list[dict], last_val: dict | None,
                 classes: list[str], out: Path, run_dir: str, config: dict[str, Any]) -> None:  # fmt: skip
    from vidray.eval.fusion import save_scores
    from vidray.eval.metrics import confusion_matrix
    from vidray.tracking import plot_confusion_matrix, plot_flow_grid, plot_training_curves

    out.mkdir(parents=True, exist_ok=True)
    art = "plots" if tracker.on else None
    curves = [{kk: v for kk, v in h.items() if kk in ("epoch", "train_loss", "val_loss", "train_top1", "val_top1",
                                                       "val_mAP", "lr")} for h in history]  # fmt: skip
    if curves:
        plot_training_curves(curves, out / "curves.png", artifact_path=art, title=f"{cfg.model.name}")
    if last_val is not None and len(last_val["video_ids"]):
        p = save_scores(out / "val_scores.npz", last_val["scores"], last_val["labels"], last_val["video_ids"])
        tracker.artifact(p, "scores")
        y = np.asarray(last_val["labels"])
        if y.ndim == 1:
            cm = confusion_matrix(y, np.asarray(last_val["scores"]).argmax(1), len(classes))
            plot_confusion_matrix(cm, out / "confusion_matrix.png", classes, artifact_path=art)
    if cfg.tracking.flow_samples > 0:
        try:
            fl = flow_samples(config["data"]["path"], cfg.tracking.flow_samples)
        except Exception as e:  # never fail a finished training on a picture
            log.warning("flow visualisation skipped: %s", e)
            fl = None
        if fl is not None:
            plot_flow_grid(fl["flow"], out / "flow_samples.png", fl["images"], artifact_path=art, titles=fl["titles"])
    if cfg.tracking.log_model:
        from vidray.io.checkpoint import latest_checkpoint

        last = latest_checkpoint(run_dir)
        if last is not None:
            with local_copy(join(last, FILENAME)) as f:
                tracker.artifact(f, "model")


def flow_samples(data_dir: str, n: int) -> dict[str, Any] | None:
    """The middle frame and its flow stack of up to ``n`` rows with flow, one per label first (for a
    picture): ``images`` ``(n, H, W, 3)`` uint8, ``flow`` ``(n, 2L, Hf, Wf)`` float32 pixels, ``titles``."""
    import pyarrow.parquet as pq

    from vidray.data.loader import iter_rows
    from vidray.io.reader import IngestDataset

    ds = IngestDataset(data_dir)
    cols = ["video_id", "labels", "split", "frame_index", "frame_encoding", "frame_height", "frame_width",
            "frames", "flow", "flow_meta"]  # fmt: skip
    imgs, flows, titles = [], [], []
    seen: set[int] = set()
    for f in ds.files:
        for r in iter_rows(pq.read_table(f, columns=cols)):
            first = r.labels[0] if r.labels else -1
            if r.flow_meta is None or first in seen:
                continue
            seen.add(first)
            i = r.num_frames // 2
            fr, fl = r.frames([i])[0], r.flow([i])[0]
            if fr.shape[:2] != fl.shape[1:]:
                import cv2

                fr = cv2.resize(fr, (fl.shape[2], fl.shape[1]), interpolation=cv2.INTER_AREA)
            imgs.append(fr)
            flows.append(fl)
            titles.append(r.video_id)
            if len(imgs) >= n:
                return {"images": np.stack(imgs), "flow": np.stack(flows), "titles": titles}
    if not imgs:
        return None
    return {"images": np.stack(imgs), "flow": np.stack(flows), "titles": titles}
