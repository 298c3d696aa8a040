"""``vidray eval CHECKPOINT`` and ``vidray fuse SCORES...``: video-level evaluation as the papers do it.

For every video of a split (chunks of long videos merged)::

    N clips / segment samplings (deterministic, evenly spread; ``eval_indices``)
      x V crops (1 centre | 3 along the long side | 10 = 4 corners + centre and their flips)
      -> model -> logits (N*V, K) [and frame_logits (N*V, T', K)]
      -> mean over the V crops (pre-softmax)            -> clip rows (N, K)  or frame rows (N*T', K)
      -> aggregate over time: mean | max | logmean | last | weighted (LSTM gain g)  -> video (K,)

Metrics (:mod:`vidray.eval.metrics`): top-1 / top-5, mean class accuracy, mAP; ``clip_hit_at_k`` (each
clip row scored against its video's labels, Sports-1M's clip Hit@k) and ``video_hit_at_k``. Scores are
written as a ``.npz`` (:func:`vidray.eval.fusion.save_scores`, aligned by ``video_id``) for fusion.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from vidray.config import TrainConfig
from vidray.data.loader import RowView, iter_rows, make_eval_views, merge_rows, normalize_batch
from vidray.eval.aggregate import aggregate_scores
from vidray.eval.metrics import confusion_matrix, hit_at_k, summarize
from vidray.io import dataset as fmt
from vidray.io.checkpoint import load_checkpoint, resolve_checkpoint_file
from vidray.io.labels import multi_hot
from vidray.io.store import is_uri, join, local_file
from vidray.recipe import build_model, clip_spec, is_multilabel, video_scoring

log = logging.getLogger(__name__)

__all__ = ["EvalResult", "evaluate_checkpoint", "iter_split_videos", "default_aggregate", "fuse_files"]


@dataclass
class EvalResult:
    """Metrics and where the scores went."""

    metrics: dict[str, float]
    scores_path: str | None
    num_videos: int
    settings: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {**self.metrics, "num_videos": self.num_videos, "scores": self.scores_path, **self.settings,
                "wall_s": round(self.wall_s, 3)}  # fmt: skip


def default_aggregate(cfg: TrainConfig) -> str:
    """The paper's aggregation for a training loss (:func:`vidray.recipe.video_scoring`): ``weighted``
    (LSTM gain g) for ``gain``, ``logmean`` (RCNN) for ``per_frame``, else ``mean``."""
    return video_scoring(cfg)[0]


def iter_split_videos(data_dir: str | Path, split: str | None, columns: Sequence[str]) -> Iterator[RowView]:
    """Videos of ``split`` (all when ``None``), chunks merged in ``chunk_index`` order, streamed part
    by part (a video is kept in memory only until all its ``num_chunks`` rows were seen)."""
    from vidray.io.reader import IngestDataset

    ds = IngestDataset(data_dir)
    cols = list(dict.fromkeys([*columns, "chunk_index", "num_chunks", "split"]))

    def rows() -> Iterator[tuple[str, int, int, RowView]]:
        for t in ds.iter_tables(cols, split=split):
            chunk, nch = t["chunk_index"].to_pylist(), t["num_chunks"].to_pylist()
            for i, row in enumerate(iter_rows(t)):
                yield row.video_id, chunk[i], nch[i], row

    for parts in fmt.group_chunks(rows()):
        yield merge_rows(parts)


@torch.no_grad()
def _forward_views(model: torch.nn.Module, views: dict[str, Any], cfg: TrainConfig, batch_size: int,
                   device: torch.device) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """Run ``(N*V, T, ...)`` views in batches: ``logits (N*V, K)``, ``frame_logits (N*V, T', K)`` or None."""
    key = "flow" if cfg.input.modality == "flow" else "imgs"
    n = views[key].shape[0]
    logits, frames = [], []
    for s in range(0, n, batch_size):
        batch = {k: torch.from_numpy(np.ascontiguousarray(views[k][s : s + batch_size])) for k in ("imgs", "flow") if k in views}
        x = normalize_batch(batch, cfg.input.modality, mean=cfg.augment.mean, std=cfg.augment.std,
                            flow_scale=cfg.input.flow_scale, device=device)  # fmt: skip
        out = model(x, **cfg.model.eval_forward)
        logits.append(out["logits"].float().cpu().numpy())
        if out.get("frame_logits") is not None:
            frames.append(out["frame_logits"].float().cpu().numpy())
    return np.concatenate(logits), (np.concatenate(frames) if frames else None)


@dataclass
class _VideoScores:
    """What scoring a split gives: per video and per clip row."""

    ids: list[str] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)  # (K,) per video
    labels: list[list[int]] = field(default_factory=list)
    clip_scores: list[np.ndarray] = field(default_factory=list)  # (N, K) per video
    level: str | None = None


def _load_model(ck_file: Path | str, data_dir: str | Path, device: torch.device) -> tuple[dict, TrainConfig, torch.nn.Module]:
    """The checkpoint's state, config and model (in eval mode on ``device``); the data's classes must
    be the checkpoint's."""
    from vidray.io.reader import IngestDataset

    state = load_checkpoint(ck_file)
    cfg = TrainConfig.model_validate(state["config"])
    classes = list(state["classes"])
    data_classes = IngestDataset(data_dir).classes
    if data_classes != classes:
        raise ValueError(f"{data_dir} has classes {data_classes[:6]}..., the checkpoint was trained on {classes[:6]}...")
    model = build_model(cfg, len(classes), int(state["in_channels"]))
    model.load_state_dict(state["model"])
    return state, cfg, model.to(device).eval()


def _score_split(model: torch.nn.Module, cfg: TrainConfig, data_dir: str | Path, split: str | None, k: int,
                 n_clips: int, num_crops: int, method: str, act: str, level: str, batch_size: int,
                 device: torch.device, max_videos: int | None) -> _VideoScores:  # fmt: skip
    """Every video of ``split``: ``n_clips x num_crops`` views -> model -> crops averaged -> clip (or
    per-frame) rows -> aggregated to one video score."""
    from vidray.data.loader import columns_for

    spec = clip_spec(cfg, k, train=False)
    res = _VideoScores()
    for row in iter_split_videos(data_dir, split, columns_for(spec)):
        views = make_eval_views(row, spec, n_clips, num_crops)
        logits, frame_logits = _forward_views(model, views, cfg, batch_size, device)
        clip_scores = logits.reshape(n_clips, num_crops, k).mean(axis=1)  # (N, K), crops averaged
        if level == "frame" and frame_logits is None:
            raise ValueError(f"--level frame: model {cfg.model.name} gives no per-frame outputs")
        use_frames = frame_logits is not None and level in ("auto", "frame")
        if use_frames:
            tp = frame_logits.shape[1]
            rows = frame_logits.reshape(n_clips, num_crops, tp, k).mean(axis=1).reshape(n_clips * tp, k)
        else:
            rows = clip_scores
        res.level = "frame" if use_frames else "clip"
        res.scores.append(aggregate_scores(rows, method, act))
        res.ids.append(row.video_id)
        res.labels.append(list(row.labels))
        res.clip_scores.append(clip_scores)
        if max_videos and len(res.ids) >= max_videos:
            break
    return res


def _metrics(res: _VideoScores, k: int, multi: bool, n_clips: int) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Video metrics (:func:`summarize`) plus clip and video Hit@k; returns ``(metrics, scores, labels)``."""
    vs = np.stack(res.scores)
    clip_labels = [ls for ls in res.labels for _ in range(n_clips)]
    if multi:
        y, yc = multi_hot(res.labels, k, dtype=np.int64), multi_hot(clip_labels, k, dtype=np.int64)
    else:
        y = np.array([ls[0] for ls in res.labels], np.int64)
        yc = np.array([ls[0] for ls in clip_labels], np.int64)
    cs = np.concatenate(res.clip_scores)
    metrics = summarize(vs, y)
    metrics.pop("num_samples", None)
    for kk in sorted({1, min(5, k)}):
        metrics[f"clip_hit_at_{kk}"] = hit_at_k(cs, yc, kk)
        metrics[f"video_hit_at_{kk}"] = hit_at_k(vs, y, kk)
    return metrics, vs, y


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_dir: str | Path,
    *,
    split: str | None = "test",
    num_clips: int | None = None,
    num_crops: int = 1,
    aggregate: str | None = None,
    level: str = "auto",
    activation: str | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    out: str | Path | None = None,
    max_videos: int | None = None,
) -> EvalResult:
    """Evaluate a training checkpoint on one split of an ingest output.

    Args:
        checkpoint: ``checkpoint.pt``, an ``epoch_*`` folder, or a run folder (its latest checkpoint);
            local or a URI (``s3://...``: a run trained with ``--out s3://...``).
        data_dir: ingest output (local or a URI); its classes must be the checkpoint's.
        split: manifest split (``None``: every video).
        num_clips: clips / segment samplings per video (default: 1).
        num_crops: 1, 3 or 10 views per clip.
        aggregate: a name in :data:`vidray.registry.AGGREGATIONS` (default :func:`default_aggregate`).
        level: ``clip`` (aggregate clip scores), ``frame`` (aggregate per-frame outputs, for models
            that give ``frame_logits``), ``auto`` (frame when available).
        activation: ``softmax | sigmoid | none`` before aggregating (default: sigmoid for
            multi-label ``bce`` checkpoints, else softmax).
        batch_size: views per forward pass.
        out: ``.npz`` for the video scores (default ``<run>/eval/<split>-<N>x<V>-<aggregate>.npz``, on the
            run's own storage; a URI is written through a local temporary file).
        max_videos: stop after this many videos (smoke tests).
    """
    t0 = time.perf_counter()
    if num_crops not in (1, 3, 10):
        raise ValueError(f"--crops must be 1, 3 or 10, got {num_crops}")
    ck_file = resolve_checkpoint_file(checkpoint)
    dev = torch.device(device)
    state, cfg, model = _load_model(ck_file, data_dir, dev)
    classes = list(state["classes"])
    k = len(classes)
    n_clips = int(num_clips or 1)
    default_method, default_act = video_scoring(cfg)
    method, act = aggregate or default_method, activation or default_act
    res = _score_split(model, cfg, data_dir, split, k, n_clips, num_crops, method, act, level, batch_size, dev,
                       max_videos)  # fmt: skip
    if not res.ids:
        raise ValueError(f"no videos in split {split!r} of {data_dir}")
    multi = is_multilabel(cfg)
    metrics, vs, y = _metrics(res, k, multi, n_clips)
    from vidray.eval.fusion import save_scores

    target = str(out) if out else _default_out(ck_file, split, n_clips, num_crops, method)
    target = target if target.endswith(".npz") else target + ".npz"
    with local_file(target) as local:
        saved = save_scores(local, vs, y, res.ids)
        if not multi:
            try:
                from vidray.tracking import plot_confusion_matrix

                plot_confusion_matrix(confusion_matrix(y, vs.argmax(1), k), saved.with_suffix(".confusion.png"),
                                      classes, artifact_path=None,
                                      title=f"{cfg.model.name} {split} ({len(res.ids)} videos)")  # fmt: skip
            except Exception as e:  # a picture never fails an evaluation
                log.warning("confusion matrix not drawn: %s", e)
    settings = {"split": split, "clips": n_clips, "crops": num_crops, "aggregate": method, "level": res.level,
                "activation": act, "model": cfg.model.name, "checkpoint": str(ck_file),
                "epoch": int(state.get("epoch", 0))}  # fmt: skip
    return EvalResult(metrics=metrics, scores_path=str(saved) if not is_uri(target) else target, num_videos=len(res.ids), settings=settings,
                      wall_s=time.perf_counter() - t0)  # fmt: skip


def _default_out(ck_file: Path | str, split: str | None, clips: int, crops: int, method: str) -> str:
    """``RUN_DIR/eval/<split>-<clips>x<crops>-<method>-<epoch dir>.npz`` (RUN_DIR = above ``checkpoints/``),
    for a local path or a URI."""
    d = str(ck_file).rstrip("/").rsplit("/", 1)[0]
    parent, name = d.rsplit("/", 1) if "/" in d else ("", d)
    run = parent.rsplit("/", 1)[0] if parent.rsplit("/", 1)[-1] == "checkpoints" else d
    return join(run, "eval", f"{split or 'all'}-{clips}x{crops}-{method}-{name}.npz")


def fuse_files(paths: Sequence[str], weights: Sequence[float] | None = None, *, l1_norm: bool = False,
               method: str = "weighted", out: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Fuse score files (aligned by ``video_id``) and score the result: metrics, plus ``scores`` path
    when ``out`` is given. Each input's own metrics are reported too (``stream{i}_top1`` ...)."""
    from vidray.eval.fusion import fuse_score_files, load_scores, save_scores

    if len(paths) < 1:
        raise ValueError("fuse needs at least one score file")
    if weights is not None and len(weights) != len(paths):
        raise ValueError(f"{len(weights)} weights for {len(paths)} score files")
    fused = fuse_score_files(paths, weights, method=method, l1_norm=l1_norm)
    m = summarize(fused.scores, fused.labels)
    m.pop("num_samples", None)
    res: dict[str, Any] = {**m, "num_videos": int(fused.scores.shape[0]), "streams": len(paths),
                           "weights": list(weights) if weights else [1.0] * len(paths), "l1_norm": l1_norm,
                           "method": method}  # fmt: skip
    for i, p in enumerate(paths):
        s = load_scores(p)
        for kk, v in summarize(s.scores, s.labels).items():
            if kk in ("top1", "mAP", "hit_at_1"):
                res[f"stream{i}_{kk}"] = v
    if out:
        res["scores"] = str(save_scores(out, fused.scores, fused.labels, fused.video_ids))
    return res


def format_metrics(m: dict[str, Any], per_line: int = 4) -> str:
    """The metrics as a few indented lines, ``per_line`` ``name value`` pairs each (every metric; the
    JSON line follows with ``--json``)."""
    items = [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()]
    return "\n".join("  " + ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))


def json_line(m: dict[str, Any]) -> str:
    """One JSON object on one line (NaN -> null, so every JSON reader accepts it)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, (np.floating, np.integer)):
            return clean(v.item())
        return v

    return json.dumps({kk: clean(v) for kk, v in m.items()}, separators=(",", ":"))
