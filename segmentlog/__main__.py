"""``python -m segmentlog``: the same as the ``segmentlog`` command."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
