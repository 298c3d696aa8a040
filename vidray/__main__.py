"""``python -m vidray``: the same command line as the ``vidray`` script."""

import sys

from vidray.cli import main

sys.exit(main())
