"""The two kinds of failure: a job the user can fix (a one-line reason) and everything else (a bug).

Exit codes are part of the contract (containers/train/README.md):
0 success, 1 unexpected error (traceback on stderr), 2 bad input or configuration,
3 out of memory, 143 stopped by SIGTERM after saving a checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

EXIT_OK = 0
EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3
EXIT_TERMINATED = 143


class TrainError(Exception):
    """A problem with the job's inputs or settings; its message is the whole failure reason."""

    exit_code = EXIT_BAD_INPUT


class OutOfMemory(TrainError):
    exit_code = EXIT_OUT_OF_MEMORY


class Terminated(TrainError):
    """SIGTERM arrived; the current step finished and a checkpoint was saved."""

    exit_code = EXIT_TERMINATED


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA OOM and for the CPU allocator refusing an allocation (a RuntimeError there)."""
    if type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in text or "CUDA out of memory" in text or "out of memory" in text.lower()[:200]
    )


def write_failure(path: Path, reason: str) -> None:
    """Write the one-line reason SageMaker shows as FailureReason (it keeps the first 1,024 characters)."""
    line = " ".join(reason.split())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(line + "\n")
        tmp.replace(path)
    except OSError:
        pass
