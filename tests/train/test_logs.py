"""The program's log: every record one line without colour codes, tagged with its source, so that the
local executor can show this program's lines in apply and leave library noise in the log file."""

from __future__ import annotations

import logging
import subprocess
import sys

from fastuner_train.logs import OneLine

from tests.train.jobs import TRAIN_DIR


def record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_a_multi_line_coloured_library_report_becomes_one_plain_line() -> None:
    report = "\x1b[1mBertForSequenceClassification LOAD REPORT\x1b[0m from: m\nKey | Status\n\tclassifier.bias | MISSING\n"
    line = OneLine(rank=0).format(record("transformers.modeling_utils", logging.WARNING, report))
    assert line == "[transformers] WARNING: BertForSequenceClassification LOAD REPORT from: m Key | Status " \
                   "classifier.bias | MISSING"
    assert OneLine(rank=2).format(record("fastuner.train", logging.INFO, "x")) == "[fastuner] rank2 INFO: x"


def test_python_warnings_and_library_logs_are_single_lines_on_stderr() -> None:
    code = (
        "import logging, warnings\n"
        "from fastuner_train.logs import setup_logging\n"
        "setup_logging(0)\n"
        "logging.getLogger('fastuner.train').info('loading the base model m')\n"
        "logging.getLogger('peft.tuners').info('not shown: below WARNING')\n"
        "logging.getLogger('peft.tuners').warning('two\\nlines')\n"
        "warnings.warn('`x` is deprecated', FutureWarning)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=TRAIN_DIR, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "[fastuner] INFO: loading the base model m",
        "[peft] WARNING: two lines",
        "[warnings] WARNING: FutureWarning: `x` is deprecated (<string>:7)",
    ]
