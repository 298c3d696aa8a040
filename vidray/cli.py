"""The ``vidray`` command line: ``vidray synth|ingest|...``.

Each subcommand is a thin wrapper: it parses arguments, builds the typed config
(:mod:`vidray.config`) and calls the stage's function. Heavy imports happen inside the handlers so
``vidray --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


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
    print(f"wrote {a.videos} videos ({len(spec.classes())} classes, {a.kind}) and {manifest} in {dt:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------- ingest
def _cmd_ingest(a: argparse.Namespace) -> int:
    from vidray.config import IngestConfig, load_config
    from vidray.ingest import run_ingest

    cfg = load_config(IngestConfig, a.config, a.overrides)
    summary = run_ingest(a.manifest, a.out, root=a.root, cfg=cfg, retry_failed=a.retry_failed,
                         overwrite=a.overwrite)
    print(summary.format())
    if a.json:
        from dataclasses import asdict

        print(json.dumps({k: v for k, v in asdict(summary).items() if k != "failures"}))
    budget = cfg.execution.max_failure_fraction
    if summary.failure_fraction > budget:
        print(f"FAILED: {summary.failure_fraction:.1%} of entries failed, above the budget of {budget:.1%} "
              f"(execution.max_failure_fraction)", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="vidray", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic motion-defined video corpus and its manifest")
    p.add_argument("--out", required=True, help="output folder (videos/ and manifest.csv)")
    p.add_argument("--videos", type=int, default=120, help="number of videos")
    p.add_argument("--kind", choices=["motion", "appearance_motion"], default="motion")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=_parse_size, default=(64, 64), help="WxH, even")
    p.add_argument("--frames", type=int, default=24, help="frames per video")
    p.add_argument("--fps", type=int, default=12)
    _COMMANDS["synth"] = _cmd_synth

    p = sub.add_parser("ingest", help="decode, sample, flow and write a corpus to Parquet on Ray Data")
    p.add_argument("manifest", help="CSV/JSONL manifest, class-folder tree, or UCF101 trainlist0N.txt")
    p.add_argument("--out", required=True, help="output folder (clips/, status/, dataset.json)")
    p.add_argument("--root", help="folder (or URI) that manifest paths are relative to")
    _add_config_args(p)
    p.add_argument("--retry-failed", action="store_true", help="re-run only the entries that failed")
    p.add_argument("--overwrite", action="store_true", help="replace an output made with other settings")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    _COMMANDS["ingest"] = _cmd_ingest

    for register in _EXTRA_COMMANDS:
        register(sub, _COMMANDS)
    return parser


# Other stages add their subcommands here: functions (subparsers, commands) -> None.
_EXTRA_COMMANDS: list[Callable] = []

from vidray.plan import add_plan_parser  # noqa: E402  (light: measures/imports only when run)

_EXTRA_COMMANDS.append(add_plan_parser)

from vidray.train.commands import add_eval_parsers, add_train_parser  # noqa: E402  (light: argparse only)

_EXTRA_COMMANDS += [add_train_parser, add_eval_parsers]

from vidray.tune import add_tune_parsers  # noqa: E402  (light: Ray Tune is imported when run)

_EXTRA_COMMANDS.append(add_tune_parsers)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vidray`` console script."""
    parser = build_parser()
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _COMMANDS[a.command](a)
    except (ValueError, FileNotFoundError) as e:
        print(f"vidray {a.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
