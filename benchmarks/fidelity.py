"""The fidelity benchmark: the papers' claims checked on synthetic motion corpora (see fidelity_lib.py).

    python benchmarks/fidelity.py [--quick] [--out runs/fidelity] [--epochs N] [--videos-per-class N]
                                  [--seed S] [--only NAME ...] [--threads N] [--json PATH]

Full run (11 trainings + fusion + aggregation study): ~15 min on 2 idle CPU cores; ``--quick`` (claims 1
and 2: single_frame, gru_rcn, conv pooling over flow on A; RGB and flow streams on B + fusion): ~4 min.
Results and the reasons for the settings: docs/fidelity.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fidelity_lib import FidelitySettings, format_report, quick_settings, run_fidelity  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/fidelity")
    ap.add_argument("--quick", action="store_true", help="claims 1-2 subset (the slow test's), fewer epochs")
    ap.add_argument("--epochs", type=int, help="epochs of every run (default: 17, quick 12)")
    ap.add_argument("--videos-per-class", type=int, help="corpus size (default 48)")
    ap.add_argument("--seed", type=int, help="training seed (default 0; the corpora are fixed)")
    ap.add_argument("--only", nargs="+", help="run only these experiments (names as in the table)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    ap.add_argument("--json", help="also write the report here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = quick_settings() if a.quick else FidelitySettings()
    s = replace(s, threads=a.threads or None)
    report = run_fidelity(a.out, quick=a.quick, epochs=a.epochs, videos_per_class=a.videos_per_class, seed=a.seed,
                          settings=s, only=a.only)
    print(format_report(report))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
