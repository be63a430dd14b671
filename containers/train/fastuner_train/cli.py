"""Composition root: parse the contract, run the job, turn every failure into a one-line reason in
the failure file and a stable exit code (errors.py). torch and transformers are imported only after
the hyperparameters are known to be valid.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Mapping, Sequence

from .errors import EXIT_BUG, EXIT_OK, EXIT_OUT_OF_MEMORY, TrainError, is_out_of_memory, write_failure
from .settings import failure_file, make_paths, parse_hyperparameters

log = logging.getLogger("fastuner.train")
USAGE = """usage: train.py --task TASK --base_model MODEL [--key value ...]

Hyperparameters also come from --config FILE (JSON) and SM_HPS; inputs from SM_CHANNEL_TRAIN /
SM_CHANNEL_VALIDATION / SM_CHANNEL_TEST, outputs to SM_MODEL_DIR, SM_OUTPUT_DATA_DIR and SM_OUTPUT_DIR.
Every key, its default and the exit codes: containers/train/README.md."""


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    if argv in (["--help"], ["-h"]):
        print(USAGE)
        return EXIT_OK
    failure = failure_file(environ)
    progress = {"phase": "startup"}
    try:
        hp = parse_hyperparameters(argv, environ)
        paths = make_paths(environ, hp)
        failure = paths.failure_file
        failure.unlink(missing_ok=True)  # a rerun (resume) must not leave the last run's reason behind
        from .job import run_job

        run_job(hp, paths, progress)
        return EXIT_OK
    except TrainError as error:
        print(f"[fastuner] error: {error}", file=sys.stderr, flush=True)
        write_failure(failure, str(error))
        return error.exit_code
    except Exception as error:
        if is_out_of_memory(error):
            reason = (f"out of memory during {progress['phase']}: lower batch_tokens or max_seq_len, "
                      f"set gradient_checkpointing=true, use method=qlora, or a larger instance "
                      f"({str(error).splitlines()[0][:200]})")
            print(f"[fastuner] error: {reason}", file=sys.stderr, flush=True)
            write_failure(failure, reason)
            return EXIT_OUT_OF_MEMORY
        traceback.print_exc()
        first = (str(error).splitlines() or [""])[0][:300]
        write_failure(failure, f"unexpected error during {progress['phase']}: {type(error).__name__}: {first}")
        return EXIT_BUG
