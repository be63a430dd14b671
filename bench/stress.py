"""The reliability harness as a benchmark-style command: `python bench/stress.py [CATEGORY …] [--trials N]
[--seed S] [--summary]`, the same as `python -m tests.stress` (see tests/stress/__init__.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.stress.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
