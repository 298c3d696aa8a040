"""The command line as a user meets it: help that explains itself, the config reference (one source of
truth with the README), and usage errors as ONE line with exit code 2, before any Ray starts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_data import tiny_dataset

from vidray.cli import main as cli_main
from vidray.config import IngestConfig, TrainConfig, format_reference
from vidray.io.checkpoint import make_state, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidray", *args], capture_output=True, text=True, timeout=timeout)


def _one_line_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------- help
def test_top_level_help_is_plain_text_and_lists_the_commands():
    p = _run("--help")
    assert p.returncode == 0
    assert "``" not in p.stdout and ":mod:" not in p.stdout  # no raw reStructuredText
    for cmd in ("synth", "ingest", "train", "eval", "inspect", "config", "tune"):
        assert re.search(rf"^\s+{cmd}\s", p.stdout, re.M), cmd


def test_train_help_lists_every_model_and_every_argument_has_help():
    import argparse

    from vidray.cli import build_parser
    from vidray.models import list_models

    out = _run("train", "--help").stdout
    assert all(re.search(rf"^\s+{m}\s+\S", out, re.M) for m in list_models())
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{cmd} {a.dest}" for cmd, p in sub.choices.items() for a in p._actions
               if not a.help and not isinstance(a, argparse._HelpAction)]  # fmt: skip
    assert missing == []


def test_config_reference_is_the_readme_and_docs_table():
    """`vidray config ingest|train --markdown` is what the README and docs/training.md show."""
    readme = (REPO / "README.md").read_text()
    assert format_reference(IngestConfig, markdown=True) in readme
    assert format_reference(TrainConfig, markdown=True) in (REPO / "docs" / "training.md").read_text()
    out = _run("config", "train").stdout
    assert re.search(r"^flow\.algorithm", _run("config", "ingest").stdout, re.M)
    line = next(ln for ln in out.splitlines() if ln.startswith("loss.name"))
    assert all(n in line for n in ("ce", "bce", "multitask", "gain", "per_frame"))  # allowed values, from the table
    assert "optim.lr" in out and "0.01" in out


# ---------------------------------------------------------------------------------- usage errors
def test_config_values_are_checked_in_one_line():
    for key, needle in (("sampling.fps=.inf", "finite"), ("flow.bound=.inf", "finite"),
                        ("flow.algorithm=raft", "tvl1"), ("sampling.mode=every", "every_s")):  # fmt: skip
        with pytest.raises(ValueError, match=needle) as e:
            from vidray.config import load_config

            load_config(IngestConfig, None, [key])
        assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def data(tmp_path_factory, ray_local):
    return tiny_dataset(tmp_path_factory)


def test_train_usage_errors_are_one_line_before_ray(data, tmp_path):
    base = ["train", "--data", str(data), "--workers", "0", "--out", str(tmp_path / "r")]
    _one_line_error(_run(*base, "--model", "nosuchmodel"), "unknown model 'nosuchmodel'", "gru_rcn")
    _one_line_error(_run(*base, "--model", "single_frame", "--set", "model.kwargs={nosuch: 1}"),
                    "'nosuch'", "single_frame", "backbone")  # fmt: skip
    _one_line_error(_run(*base, "--model", "single_frame", "--set", "input.train_split=trian"),
                    "'trian'", "train (", "test (")  # fmt: skip
    assert not (tmp_path / "r").exists()  # refused before the run folder was made


def test_eval_and_resume_name_an_unreadable_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    for e in (1, 2):
        save_checkpoint(run / "checkpoints" / f"epoch_{e:04d}", make_state(model={}, epoch=e))
    bad = run / "checkpoints" / "epoch_0002" / "checkpoint.pt"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    _one_line_error(_run("eval", str(bad), "--data", str(data)), str(bad), "unreadable")
    line = _one_line_error(_run("train", "--data", str(data), "--model", "single_frame", "--workers", "0",
                                "--out", str(run)), "epoch_0002", "unreadable")  # fmt: skip
    assert "epoch_0001" in line  # the previous complete epoch is offered


def test_a_missing_split_and_class_without_training_videos(data, caplog):
    import logging

    import pyarrow as pa

    from vidray.io.dataset import read_status
    from vidray.train.trainer import _check_splits

    status = read_status(data)
    cfg = TrainConfig()
    with caplog.at_level(logging.WARNING, logger="vidray.train.trainer"):
        _check_splits(status, cfg, ["right", "left", "up", "down", "rotate_cw", "rotate_ccw", "never"], str(data))
    assert "never" in caplog.text and "1 of 7 classes" in caplog.text
    empty = status.slice(0, 0)
    with pytest.raises(ValueError, match="no ingested videos"):
        _check_splits(empty, cfg, ["a"], str(data))
    assert isinstance(status, pa.Table)


def test_worker_cpus_fit_the_cluster_or_say_what_fits():
    from vidray.train.trainer import worker_cpus

    assert worker_cpus(1, 1.0, 2) == 1.0  # 1 worker + 1 CPU for Ray Data
    assert worker_cpus(2, 1.0, 2) == 0.5  # measured: 2 x 1 CPU on 2 CPUs hung forever
    assert worker_cpus(3, 1.0, 2) == pytest.approx(0.33)
    assert worker_cpus(0, 1.0, 1) == 1.0  # local mode runs in the driver
    with pytest.raises(ValueError, match="use --workers"):
        worker_cpus(16, 1.0, 2)
    assert worker_cpus(8, 4.0, 64) == 4.0


def test_checkpoint_reading_refuses_pickles(tmp_path):
    """weights_only loading: a checkpoint that would run code is refused, naming the file."""
    p = tmp_path / "evil.pt"
    torch.save({"format": "vidray-train-checkpoint", "x": object()}, p)
    from vidray.io.checkpoint import load_checkpoint

    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(p)
