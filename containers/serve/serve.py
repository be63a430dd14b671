"""Entry point: `python containers/serve/serve.py [serve] [flags]` (see README.md)."""

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastuner_serve.main import main


def exit_without_teardown(code: int) -> None:
    """End the process as soon as its work is done: Python's own teardown of torch and transformers
    (modules, then every object they hold) costs about 2 s of CPU and does nothing the program
    needs. Logs and the standard streams are flushed first; every file the program writes is closed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_without_teardown(main())
