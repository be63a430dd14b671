"""`python -m tests.stress.faultcli ARGS…`: the fastuner CLI with the fault injector of
tests/stress/inject.py installed from `FASTUNER_FAULTS` (unset: the plain CLI). Test support only:
fastuner itself never reads that variable."""

from __future__ import annotations

import sys

from tests.stress.inject import install_from_env

if __name__ == "__main__":
    install_from_env()
    from fastuner.cli.main import main

    sys.exit(main(sys.argv[1:]))
