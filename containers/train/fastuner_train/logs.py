"""What the program writes, one line per message, for SageMaker metric definitions, the local executor
(fastuner/providers/local/trainlog.py) and a person reading the log:

    [fastuner] step=12 total_steps=300 epoch=0.40 train_loss=1.2345 lr=2.0e-04 tokens_per_s=15321.0 eta_s=310.0
    [fastuner] INFO: loading the base model Qwen/Qwen2.5-0.5B         (stdout lines above; these on stderr)
    [fastuner] WARNING: 12 of 96 train examples are longer than ...   (apply shows this program's warnings)
    [transformers] WARNING: ...                                        (libraries: the log file only)
    [warnings] FutureWarning: ... (transformers/modeling_utils.py:3314)

Every record is one line without terminal colour codes, whatever the library printed; library progress
bars are off. Step lines match metric_definitions.json.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from typing import Any

PREFIX = "[fastuner]"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SOURCE_ROOT = re.compile(r".*/(?:site|dist)-packages/")


def format_value(key: str, value: Any) -> str:
    if isinstance(value, float):
        if key == "lr":
            return f"{value:.1e}"
        if key == "epoch":
            return f"{value:.2f}"
        if key.endswith(("tokens_per_s", "_s")):
            return f"{value:.1f}"
        return f"{value:.4f}"
    return str(value)


def format_line(step: int, total_steps: int, epoch: float, **pairs: Any) -> str:
    parts = [f"step={step}", f"total_steps={total_steps}", f"epoch={epoch:.2f}"]
    parts += [f"{key}={format_value(key, value)}" for key, value in pairs.items() if value is not None]
    return f"{PREFIX} " + " ".join(parts)


def emit(step: int, total_steps: int, epoch: float, **pairs: Any) -> None:
    print(format_line(step, total_steps, epoch, **pairs), flush=True)


class OneLine(logging.Formatter):
    """`[source] LEVEL: message` on one line: `fastuner` for this program, else the library's name."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = f" rank{rank}" if rank else ""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += " " + self.formatException(record.exc_info)
        source = "fastuner" if record.name.startswith("fastuner") else record.name.split(".")[0]
        return f"[{source}]{self.rank} {record.levelname}: {one_line(text)}"


def one_line(text: str) -> str:
    return " ".join(ANSI.sub("", text).split())


def setup_logging(rank: int) -> None:
    """Before anything imports transformers: one handler on stderr for every logger, library warnings
    kept (one line each), Python warnings as log records, no progress bars."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLine(rank))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h.formatter, OneLine)]:
        root.removeHandler(old)  # a job run twice in one process (the tests) logs each line once
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("fastuner").setLevel(logging.INFO if rank == 0 else logging.WARNING)
    if rank:
        root.setLevel(logging.ERROR)  # the main rank already reports what the libraries say
    warnings.showwarning = _log_warning


def route_library_logs() -> None:
    """transformers has its own stderr handler and multi-line reports: send them through ours."""
    import transformers

    tf_logging = transformers.utils.logging
    tf_logging.disable_default_handler()
    tf_logging.enable_propagation()
    tf_logging.set_verbosity(logging.WARNING)
    tf_logging.disable_progress_bar()


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    where = SOURCE_ROOT.sub("", filename)
    logging.getLogger("warnings").warning("%s: %s (%s:%d)", category.__name__, message, where, lineno)
