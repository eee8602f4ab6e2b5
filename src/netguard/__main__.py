"""``python -m netguard`` and the ``netguard`` console script: see :mod:`netguard.cli`."""

from __future__ import annotations

import sys

from netguard.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
