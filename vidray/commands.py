"""``vidray train``, ``vidray eval`` and ``vidray fuse``: argument parsing and thin handlers.

Registered by :mod:`vidray.cli`; heavy imports (torch, Ray, MLflow) happen inside the handlers so
``vidray --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from vidray.console import echo, set_log_dir



def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"weights must look like 1,1.5 got {s!r}") from None


# ---------------------------------------------------------------------------------------- train
def _cmd_train(a: argparse.Namespace) -> int:
    import json

    from vidray.config import TrainConfig, load_config
    from vidray.train.trainer import default_run_dir, result_dict, run_training

    overrides = list(a.overrides)
    if a.model:
        overrides.append(f"model.name={a.model}")
    cfg = load_config(TrainConfig, a.config, overrides)
    out = a.out or default_run_dir(cfg.model.name)
    set_log_dir(out)
    result = run_training(a.data, cfg, workers=a.workers, out=out, tracking_uri=a.tracking_uri)
    echo(result.format())
    if a.json:
        echo(json.dumps(result_dict(result), default=str))
    return 0 if result.status == "FINISHED" else 1


def _models_epilog() -> str:
    from vidray.registry import MODELS

    width = max(len(n) for n in MODELS.names())
    lines = [f"  {n:<{width}}  {MODELS.help(n)}" for n in MODELS.names()]
    return ("models (--model):\n" + "\n".join(lines) + "\n\nConfig keys for --config / --set: `vidray config train`; "
            "recipes of the papers: configs/recipes/.")


def add_train_parser(sub: argparse._SubParsersAction, commands: dict[str, Callable]) -> None:
    """Register ``vidray train``."""
    p = sub.add_parser("train", help="train a model on an ingest output with Ray Train (DDP), log to MLflow",
                       description="Train a registered model on an ingest output (Ray Train DDP; a local Ray "
                       "when none is configured), logging to MLflow. An existing --out folder with checkpoints "
                       "is resumed from its last complete epoch.", epilog_fn=_models_epilog)  # fmt: skip
    p.add_argument("--data", required=True, help="ingest output folder (clips/, dataset.json)")
    p.add_argument("--model", help="registered model name (listed below)")
    p.add_argument("--config", help="YAML TrainConfig, e.g. configs/train_demo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=0.001 (repeatable)")  # fmt: skip
    p.add_argument("--workers", type=int, default=1,
                   help="Ray Train workers (DDP); 0 = run the loop in this process (local mode)")  # fmt: skip
    p.add_argument("--out", help="run folder (default runs/<model>-<time>); an existing one is resumed")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///RUN_DIR/mlflow.db)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    commands["train"] = _cmd_train


# ---------------------------------------------------------------------------------------- eval
def _cmd_eval(a: argparse.Namespace) -> int:
    from vidray.eval.evaluate import evaluate_checkpoint, format_metrics, json_line

    r = evaluate_checkpoint(a.checkpoint, a.data, split=None if a.split in ("", "all") else a.split,
                            num_clips=a.clips, num_crops=a.crops, aggregate=a.aggregate, level=a.level,
                            activation=a.activation, batch_size=a.batch_size, device=a.device, out=a.out,
                            max_videos=a.max_videos)  # fmt: skip
    s = r.settings
    echo(f"vidray eval {s['model']} epoch {s['epoch']} on {s['split']}: {r.num_videos} videos, "
          f"{s['clips']} clips x {s['crops']} crops, {s['aggregate']} over {s['level']} scores "
          f"({r.wall_s:.1f} s)")  # fmt: skip
    echo(format_metrics(r.metrics))
    echo(f"  scores: {r.scores_path}")
    if a.json:
        echo(json_line(r.as_json()))
    return 0


def _cmd_fuse(a: argparse.Namespace) -> int:
    from vidray.eval.evaluate import format_metrics, fuse_files, json_line

    m = fuse_files(a.scores, a.weights, l1_norm=a.l1_norm, method=a.method, out=a.out)
    echo(f"vidray fuse: {m['streams']} streams, weights {m['weights']}, {m['method']}"
          f"{' (l1-normalised)' if a.l1_norm else ''}, {m['num_videos']} videos")  # fmt: skip
    echo(format_metrics({k: v for k, v in m.items() if k not in ("weights", "streams", "method", "l1_norm")}))
    if a.json:
        echo(json_line(m))
    return 0


def add_eval_parsers(sub: argparse._SubParsersAction, commands: dict[str, Callable]) -> None:
    """Register ``vidray eval`` and ``vidray fuse``."""
    p = sub.add_parser("eval", help="video-level evaluation of a checkpoint (clips x crops, aggregation)")
    p.add_argument("checkpoint", help="checkpoint.pt, an epoch_* folder, or a run folder (latest checkpoint)")
    p.add_argument("--data", required=True, help="ingest output folder")
    p.add_argument("--split", default="test", help="manifest split ('all' = every video); default test")
    p.add_argument("--clips", type=int, default=None, help="clips / segment samplings per video (default 1)")
    p.add_argument("--crops", type=int, choices=[1, 3, 10], default=1, help="views per clip")
    p.add_argument("--aggregate", choices=["mean", "max", "logmean", "last", "weighted"],
                   help="video score from clip/frame scores (default: the loss's paper choice)")  # fmt: skip
    p.add_argument("--level", choices=["auto", "clip", "frame"], default="auto",
                   help="aggregate clip scores or per-frame outputs (auto: frames when the model gives them)")  # fmt: skip
    p.add_argument("--activation", choices=["softmax", "sigmoid", "none"],
                   help="per-row activation before aggregating (default softmax; sigmoid for bce)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16, help="views per forward pass")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    p.add_argument("--out", help="score file (.npz); default RUN_DIR/eval/<split>-<N>x<V>-<agg>-<epoch>.npz")
    p.add_argument("--max-videos", type=int, help="stop after this many videos (smoke tests)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object on the last line")
    commands["eval"] = _cmd_eval

    p = sub.add_parser("fuse", help="late fusion of score files (aligned by video id)")
    p.add_argument("scores", nargs="+", help="score files written by vidray eval")
    p.add_argument("--weights", type=_floats, help="one weight per file, e.g. 1,1.5 (default all 1)")
    p.add_argument("--l1-norm", action="store_true", help="l1-normalise each video's scores first (TDN)")
    p.add_argument("--method", choices=["weighted", "logaverage"], default="weighted",
                   help="weighted sum of the (l1-normalised) scores, or the weighted mean of their logs")
    p.add_argument("--out", help="write the fused scores (.npz)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object on the last line")
    commands["fuse"] = _cmd_fuse


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the vidray command")
