"""fastuner's training entry point (SageMaker script mode, torchrun, or a plain subprocess).

    python train.py --task text_generation --base_model Qwen/Qwen2.5-0.5B --epochs 1

See README.md in this folder and containers/README.md for the contract.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastuner_train.cli import main

if __name__ == "__main__":
    sys.exit(main())
