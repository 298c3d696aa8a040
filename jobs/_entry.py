"""Shared body of the ``jobs/*.py`` entrypoints for ``ray job submit``.

Each entrypoint is ``vidray <stage> ARGS...`` run inside a Ray job: the job supervisor sets
``RAY_ADDRESS`` so the stage's ``ray.init()`` joins the cluster instead of starting a local one, and
the ``--working-dir`` upload (``jobs/runtime_env.yaml``) puts the submitted checkout's ``vidray/`` first
on ``PYTHONPATH``, ahead of the copy installed on the nodes by ``cluster.yaml``. The first log line
says which ``vidray`` runs, so a job log always shows whether the submitted code was used.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# ``python jobs/x.py`` puts jobs/ (not the working dir) first on sys.path; add the checkout root so a
# plain local run (no Ray job, no PYTHONPATH) imports the same vidray/ as a submitted one.
_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "vidray" / "__init__.py").exists() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))


def run_stage(stage: str, argv: list[str]) -> int:
    """Run ``vidray <stage> *argv`` in this process and return its exit status.

    Prints ``vidray <version> from <package dir>`` and the Ray address first (to stderr, so a
    stage's ``--json`` last line on stdout stays last).
    """
    import vidray
    from vidray.cli import main

    where = Path(vidray.__file__).resolve().parent
    print(f"vidray {vidray.__version__} from {where} (stage {stage}, RAY_ADDRESS={os.environ.get('RAY_ADDRESS', '')})",
          file=sys.stderr, flush=True)
    return main([stage, *argv])
