"""Ray job entrypoint: ``vidray eval ...`` on the cluster.

Every argument after the script name is passed to ``vidray eval`` unchanged (see
``vidray eval --help`` and docs/cluster.md for the exact ``ray job submit`` command)::

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env.yaml \\
        -- python jobs/eval.py ARGS...
"""

from __future__ import annotations

import sys

from _entry import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("eval", sys.argv[1:]))
