"""fastuner's training entry point (SageMaker script mode, torchrun, or a plain subprocess).

    python train.py --task text_generation --base_model Qwen/Qwen2.5-0.5B --epochs 1

See README.md in this folder and containers/README.md for the contract.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastuner_train.cli import main


def exit_without_teardown(code: int) -> None:
    """End the process as soon as its work is done: Python's own teardown of torch, transformers and
    peft (modules, then every object they hold) costs about 2 s of CPU and does nothing the program
    needs. Logs and the standard streams are flushed first; every file the program writes is closed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_without_teardown(main())
