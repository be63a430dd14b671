"""Entry point: `python containers/serve/serve.py [serve] [flags]` (see README.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastuner_serve.main import main

if __name__ == "__main__":
    sys.exit(main())
