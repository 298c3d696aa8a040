"""Ray job entrypoint: ``vidray tune ...`` (Ray Tune sweep) on the cluster.

Every argument after the script name is passed to ``vidray tune`` unchanged (see
``vidray tune --help`` and docs/cluster.md for the exact ``ray job submit`` command)::

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env.yaml \\
        -- python jobs/tune.py ARGS...
"""

from __future__ import annotations

import sys

from _entry import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("tune", sys.argv[1:]))
