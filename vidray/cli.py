"""The ``vidray`` command line.

Each subcommand is a thin wrapper: it parses arguments, builds the typed config
(:mod:`vidray.config`) and calls the stage's function. Heavy imports happen inside the handlers so
``vidray --help`` is instant. Usage errors are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from vidray.console import echo, set_log_dir

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}



class _Formatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions; keeps text that has its own line breaks (examples, lists) as is."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose help can end with text computed only when help is shown
    (``epilog_fn``): the model list of ``vidray train --help`` imports the model zoo, which
    ``vidray --help`` must not pay for."""

    def __init__(self, *args, epilog_fn: Callable[[], str] | None = None, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)
        self.epilog_fn = epilog_fn

    def format_help(self) -> str:
        if self.epilog_fn is not None and self.epilog is None:
            self.epilog = self.epilog_fn()
        return super().format_help()


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set flow.algorithm=dis_fast (repeatable)")


def _parse_size(s: str) -> tuple[int, int]:
    try:
        w, h = s.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 64x64, got {s!r}") from None


# ---------------------------------------------------------------------------------------- synth
def _cmd_synth(a: argparse.Namespace) -> int:
    import time

    from vidray.synth import SynthSpec, make_corpus

    spec = SynthSpec(kind=a.kind, num_videos=a.videos, width=a.size[0], height=a.size[1], frames=a.frames,
                     fps=a.fps, seed=a.seed)
    t0 = time.perf_counter()
    manifest = make_corpus(a.out, spec)
    dt = time.perf_counter() - t0
    echo(f"wrote {a.videos} videos ({len(spec.classes())} classes, {a.kind}) and {manifest} in {dt:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------- ingest
def _cmd_ingest(a: argparse.Namespace) -> int:
    from vidray.config import IngestConfig, load_config
    from vidray.ingest import run_ingest

    cfg = load_config(IngestConfig, a.config, a.overrides)
    if a.dry_run:  # reads only: no log folder in the output, no Ray
        plan = run_ingest(a.manifest, a.out, root=a.root, cfg=cfg, retry_failed=a.retry_failed,
                          overwrite=a.overwrite, dry_run=True)
        echo(plan.format())
        if a.json:
            echo(json.dumps(plan.to_dict()))
        return 0
    set_log_dir(a.out)
    summary = run_ingest(a.manifest, a.out, root=a.root, cfg=cfg, retry_failed=a.retry_failed,
                         overwrite=a.overwrite)
    echo(summary.format())
    if a.json:
        from dataclasses import asdict

        echo(json.dumps({k: v for k, v in asdict(summary).items() if k != "failures"}))
    budget = cfg.execution.max_failure_fraction
    if summary.failure_fraction > budget:
        echo(f"FAILED: {summary.failure_fraction:.1%} of entries failed, above the budget of {budget:.1%} "
              f"(execution.max_failure_fraction)", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------- config
def _cmd_config(a: argparse.Namespace) -> int:
    from vidray.config import IngestConfig, TrainConfig, format_reference

    classes: dict[str, type] = {"ingest": IngestConfig, "train": TrainConfig}
    if a.stage == "embed":
        from vidray.retrieval.config import EmbedConfig

        classes["embed"] = EmbedConfig
    if a.stage == "sweep":
        from vidray.tune import SweepConfig

        classes["sweep"] = SweepConfig
    echo(format_reference(classes[a.stage], markdown=a.markdown))
    return 0


# ---------------------------------------------------------------------------------------- inspect
def _cmd_inspect(a: argparse.Namespace) -> int:
    from vidray import inspection as I

    if I.is_run_dir(a.path):
        report: Any = I.inspect_run(a.path)
        if a.html:
            raise ValueError("--html is for ingest outputs; a run's plots are listed above")
    else:
        report = I.inspect_dataset(a.path)
        if a.html:
            Path(a.html).write_text(I.dataset_html(report, a.path))
    echo(report.format())
    if a.html:
        echo(f"  page: {Path(a.html).resolve()}")
    if a.json:
        echo(json.dumps(I.report_dict(report), default=str))
    return 0


DESCRIPTION = """\
vidray turns video corpora into training data and trains video classifiers on a Ray cluster
(a local Ray when none is configured). Typical use:

  vidray synth --out runs/corpus --videos 60                       a small corpus to try things on
  vidray ingest runs/corpus/manifest.csv --out runs/data           decode, sample, flow -> Parquet
  vidray train --data runs/data --model gru_rcn --out runs/run     train (Ray Train), log to MLflow
  vidray eval runs/run --data runs/data --split test               video-level evaluation

Every stage reads a YAML config (--config) and --set key=value overrides: `vidray config ingest|train`
lists every key with its default and meaning."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = Parser(prog="vidray", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Ray's and MLflow's own logs on the console too (and debug messages)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("synth", help="write a synthetic video corpus (real H.264 files) and its manifest",
                       description="Write OUT/videos/<class>/<id>.mp4 and OUT/manifest.csv: a corpus whose "
                       "classes are known by construction (motion: 6 classes that differ only by motion).")
    p.add_argument("--out", required=True, help="output folder (videos/ and manifest.csv)")
    p.add_argument("--videos", type=int, default=120, help="number of videos (default 120)")
    p.add_argument("--kind", choices=["motion", "appearance_motion"], default="motion",
                   help="motion: 6 classes that differ only by motion; appearance_motion: 12 classes = shape x "
                   "direction (default motion)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives byte-identical files")
    p.add_argument("--size", type=_parse_size, default=(64, 64), help="frame size WxH, even numbers (default 64x64)")
    p.add_argument("--frames", type=int, default=24, help="frames per video (default 24)")
    p.add_argument("--fps", type=int, default=12, help="frame rate of the files (default 12)")
    _COMMANDS["synth"] = _cmd_synth

    p = sub.add_parser("config", help="list every config key of a stage with its default and meaning",
                       description="Every key of a stage's config (YAML file or --set key=value), its default "
                       "and meaning; values chosen from a table list what is accepted.")
    p.add_argument("stage", choices=["ingest", "train", "sweep", "embed"], help="which stage's config")
    p.add_argument("--markdown", action="store_true", help="as a Markdown table (the README's)")
    _COMMANDS["config"] = _cmd_config

    p = sub.add_parser("inspect", help="summarise an ingest output or a training run (counts, failures, metrics)",
                       description="DATA (an ingest output): state, counts by split / class / status, frames, bytes, "
                       "settings, failures by error type; --html writes one self-contained page with a contact "
                       "sheet per class (frames and colour-coded flow). RUN (a vidray train --out folder): config, "
                       "status, best and last metrics, checkpoints, plots.")
    p.add_argument("path", help="an ingest output (folder or s3:// URI) or a run folder")
    p.add_argument("--json", action="store_true", help="also print the report as one JSON object on the last line")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML page (ingest outputs)")
    _COMMANDS["inspect"] = _cmd_inspect

    p = sub.add_parser("ingest", help="decode, sample, flow and write a corpus to Parquet on Ray Data")
    p.add_argument("manifest", help="CSV/JSONL manifest, class-folder tree, or UCF101 trainlist0N.txt")
    p.add_argument("--out", required=True, help="output folder (clips/, status/, dataset.json)")
    p.add_argument("--root", help="folder (or URI) that manifest paths are relative to")
    _add_config_args(p)
    p.add_argument("--retry-failed", action="store_true", help="re-run only the entries that failed")
    p.add_argument("--overwrite", action="store_true", help="replace an output made with other settings")
    p.add_argument("--dry-run", action="store_true",
                   help="read the manifest and the output, say what a run would do (entries, done, to do, failed "
                   "to retry, tasks, output files) and stop: no Ray, nothing written")
    p.add_argument("--json", action="store_true", help="print the summary (or the --dry-run plan) as JSON on the last line")
    _COMMANDS["ingest"] = _cmd_ingest

    for register in _EXTRA_COMMANDS:
        register(sub, _COMMANDS)
    return parser


# Other stages add their subcommands here: functions (subparsers, commands) -> None.
_EXTRA_COMMANDS: list[Callable] = []

from vidray.plan import add_plan_parser  # noqa: E402  (light: measures/imports only when run)

_EXTRA_COMMANDS.append(add_plan_parser)

from vidray.commands import add_eval_parsers, add_train_parser  # noqa: E402  (light: argparse only)

_EXTRA_COMMANDS += [add_train_parser, add_eval_parsers]

from vidray.tune import add_tune_parsers  # noqa: E402  (light: Ray Tune is imported when run)

_EXTRA_COMMANDS.append(add_tune_parsers)

from vidray.retrieval.commands import add_retrieval_parsers  # noqa: E402  (light: argparse only)

_EXTRA_COMMANDS.append(add_retrieval_parsers)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vidray`` console script."""
    parser = build_parser()
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from vidray.console import command_log, session

    # Ray's and MLflow's output goes to a log file from the moment Ray starts (-v: on the console); the
    # stages that write an output folder put it there (Console.log_file), the others in ~/.cache/vidray.
    with session(command_log(None, a.command), verbose=a.verbose) as con:
        try:
            return _COMMANDS[a.command](a)
        except (ValueError, FileNotFoundError) as e:
            con.error(f"vidray {a.command}: error: {e}")
            return 2
        except KeyboardInterrupt as e:
            con.error(f"vidray {a.command}: {e or 'interrupted'}")
            return 130


if __name__ == "__main__":
    sys.exit(main())
