"""Run the segmentlog benchmark suite from a checkout: ``python benchmarks/run.py [--full] ...``.

The harness lives in the package (``segmentlog.bench``) so that ``segmentlog bench`` works from
any install; this file only forwards its arguments. ``--json benchmarks/results/NAME.json``
keeps the machine-readable results next to earlier ones.
"""

from __future__ import annotations

import sys

from segmentlog.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
