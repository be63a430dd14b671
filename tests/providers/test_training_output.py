"""What a user reads from a real training run in apply's output without a terminal (a CI log), and in
the training log: a progress line before the slow imports, every logged step as its own line, the
program's warnings kept in apply's output, one duration format; a log of single plain lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.helpers import fastuner_subprocess
from tests.providers.test_local_adapters import state_of, write_project

pytestmark = pytest.mark.slow

TRUNCATING = """\
  intents-lora:
    base_model: ${var.bert}
    dataset: intents
    lora: {r: 4, alpha: 8, dropout: 0.0}
    training: {epochs: 1, max_steps: 6, batch_tokens: 64, max_seq_len: 8}
"""


def test_apply_output_and_training_log_without_a_terminal(tmp_path: Path, tiny_models) -> None:
    root = write_project(tmp_path / "p", tiny_models, adapters=TRUNCATING)
    proc = fastuner_subprocess("apply", "--auto-approve", cwd=root, timeout=600)  # stdout is a pipe
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("adapter.intents-lora: ")]

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    # the program reports before importing torch and transformers (seconds), then each phase
    assert first("dataset: 96 train, 12 validation, 12 test examples; importing torch") < first(
        "loading the base model") < first("evaluating the base model on 12 test examples") < first("step 1/")
    # every step, each once, as it is logged (not the latest of every 10 s)
    total = int(re.search(r"step \d+/(\d+) ", "\n".join(lines)).group(1))
    for step in range(1, total + 1):
        assert sum(f"step {step}/{total} · loss " in line for line in lines) == 1, (step, proc.stdout)
    assert any(" · ETA " in line for line in lines)
    # the program's warning that matters, in apply's own output
    assert "adapter.intents-lora: warning: 120 of 120 examples are longer than max_seq_len (8 tokens) and " \
           "were truncated" in proc.stdout
    # one duration format: never a bare count of 60 seconds or more
    assert not re.search(r"\b([6-9]\d|\d{3,})s\b", proc.stdout)

    log = Path(state_of(root).resources["adapter.intents-lora"].outputs["log"]).read_text()
    assert "\x1b" not in log and "\r" not in log and "Writing model shards" not in log
    for line in log.splitlines():
        assert re.match(r"^\[[\w.-]+\] ", line), line  # one record a line, tagged with its source
    report = [line for line in log.splitlines() if "LOAD REPORT" in line]
    assert len(report) == 1 and report[0].startswith("[transformers] WARNING: ") and "MISSING" in report[0]
