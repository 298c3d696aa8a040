"""Optimizer, learning-rate schedule and two-phase (freeze, then fine-tune) set-up from a TrainConfig.

Optimizers and schedules are the tables :data:`vidray.registry.OPTIMIZERS` (``optim.name``) and
:data:`vidray.registry.SCHEDULES` (``schedule.name``).

All pure functions of the config and the model; the schedule is stepped once per epoch, so a resumed
run that loads the scheduler's state continues the same curve.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from vidray.config import FreezeConfig, OptimConfig, ScheduleConfig
from vidray.registry import OPTIMIZERS, SCHEDULES

__all__ = ["build_optimizer", "build_scheduler", "lr_at_epoch", "phase_of", "apply_phase", "frozen_modules"]


@OPTIMIZERS.register("sgd")
def _sgd(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum (Nesterov optional) and weight decay (the papers)"""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)  # fmt: skip


@OPTIMIZERS.register("adam")
def _adam(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam (weight decay as L2 in the gradient)"""
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adamw")
def _adamw(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay)"""
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg.name`` (:data:`vidray.registry.OPTIMIZERS`) over ``params`` at ``cfg.lr``.

    Frozen parameters may be included: they get no gradient, and every optimizer here skips parameters
    whose ``grad`` is ``None`` (so their weight decay is not applied either).
    """
    return OPTIMIZERS.get(cfg.name)(list(params), cfg)


_sched = torch.optim.lr_scheduler


@SCHEDULES.register("step")
def _step(opt: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int) -> _sched.LRScheduler:
    """multiply by gamma at each epoch in milestones"""
    w = cfg.warmup_epochs
    return _sched.MultiStepLR(opt, milestones=[m - w for m in cfg.milestones if m - w > 0], gamma=cfg.gamma)


@SCHEDULES.register("exponential")
def _exponential(opt: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int) -> _sched.LRScheduler:
    """multiply by gamma every epoch"""
    return _sched.ExponentialLR(opt, gamma=cfg.gamma)


@SCHEDULES.register("cosine")
def _cosine(opt: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int) -> _sched.LRScheduler:
    """cosine from lr to min_lr over the epochs after warm-up"""
    return _sched.CosineAnnealingLR(opt, T_max=max(1, epochs - cfg.warmup_epochs), eta_min=cfg.min_lr)


@SCHEDULES.register("constant")
def _constant(opt: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int) -> _sched.LRScheduler:
    """the same learning rate every epoch"""
    return _sched.ConstantLR(opt, factor=1.0, total_iters=0)


def build_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int) -> _sched.LRScheduler:
    """Per-epoch schedule ``cfg.name`` (:data:`vidray.registry.SCHEDULES`; ``scheduler.step()`` after
    each epoch): ``step`` = ``MultiStepLR(milestones, gamma)``; ``exponential`` = ``ExponentialLR(gamma)``;
    ``cosine`` = ``CosineAnnealingLR(T_max = epochs - warmup_epochs, eta_min = min_lr)``; ``constant``.
    With ``warmup_epochs > 0`` a ``LinearLR`` from ``warmup_factor`` to 1 runs first (``SequentialLR``);
    milestones stay counted from epoch 0.
    """
    main = SCHEDULES.get(cfg.name)(opt, cfg, epochs)
    w = cfg.warmup_epochs
    if w == 0:
        return main
    warm = _sched.LinearLR(opt, start_factor=cfg.warmup_factor, end_factor=1.0, total_iters=w)
    return _sched.SequentialLR(opt, [warm, main], milestones=[w])


def lr_at_epoch(cfg: OptimConfig, sched_cfg: ScheduleConfig, epochs: int, epoch: int) -> float:
    """The learning rate used during 0-based ``epoch`` (a reference for tests and docs): builds a
    throw-away optimizer and steps the schedule ``epoch`` times."""
    p = nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], cfg)
    s = build_scheduler(opt, sched_cfg, epochs)
    for _ in range(epoch):
        opt.step()
        s.step()
    return float(opt.param_groups[0]["lr"])


def phase_of(epoch: int, cfg: FreezeConfig) -> int:
    """1 while ``epoch < cfg.epochs`` (frozen part), else 2 (everything trains)."""
    return 1 if epoch < cfg.epochs else 2


def _matches(name: str, prefixes: list[str]) -> bool:
    return any(name.startswith(p) for p in prefixes)


def apply_phase(model: nn.Module, phase: int, cfg: FreezeConfig) -> list[str]:
    """Set ``requires_grad`` for ``phase`` (1: freeze ``cfg.prefixes``; 2: train all).

    ``prefixes: [stages]`` delegates to the model's ``set_training_stage(phase)`` (RCNN). Returns the
    names of the frozen parameters (empty in phase 2). Raises ``ValueError`` if phase 1 freezes nothing
    (a typo in a prefix would otherwise silently train everything).
    """
    if cfg.prefixes == ["stages"]:
        if not hasattr(model, "set_training_stage"):
            raise ValueError(f"{type(model).__name__} has no set_training_stage(); freeze by parameter prefixes")
        model.set_training_stage(phase)
        return [n for n, p in model.named_parameters() if not p.requires_grad]
    frozen = []
    for n, p in model.named_parameters():
        freeze = phase == 1 and _matches(n, cfg.prefixes)
        p.requires_grad_(not freeze)
        if freeze:
            frozen.append(n)
    if phase == 1 and not frozen:
        names = sorted({n.split(".")[0] for n, _ in model.named_parameters()})
        raise ValueError(f"freeze.prefixes {cfg.prefixes} match no parameter; top-level modules: {names}")
    return frozen


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """Modules whose parameters are all frozen (and that have some): their BatchNorm layers are put in
    eval mode during phase 1, so the frozen part's running statistics stay fixed too."""
    out = []
    for m in model.modules():
        ps = list(m.parameters(recurse=False))
        if ps and all(not p.requires_grad for p in ps) and isinstance(m, nn.modules.batchnorm._BatchNorm):
            out.append(m)
    return out
