"""Faults: a locked state fails fast naming the holder; a crash (SIGKILL) between operations leaves a
valid state that the next run completes from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fastuner.state.local import LocalStateStore
from fastuner.state.store import parse_state
from tests.cli.helpers import fastuner_subprocess, intents_rows, write_jsonl

HOLD_LOCK = """
import sys
from pathlib import Path
from fastuner.state.local import LocalStateStore
with LocalStateStore(Path(sys.argv[1])).lock("apply (test holder)") as info:
    print(info.id, flush=True)
    sys.stdin.readline()
"""


def test_apply_against_a_locked_state_fails_fast(project: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(project / "state" / "demo.json")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        lock_id = holder.stdout.readline().strip()
        proc = fastuner_subprocess("apply", "--auto-approve", cwd=project, timeout=60)  # refused, not queued
        assert proc.returncode == 1
        assert "the state is locked" in proc.stderr
        assert f"pid {holder.pid}" in proc.stderr and lock_id in proc.stderr
        assert "apply (test holder)" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        holder.communicate("\n", timeout=30)
    assert not (project / ".fastuner" / "objects").exists()


def test_sigkill_mid_apply_leaves_a_valid_state(tmp_path: Path) -> None:
    n = 16
    spec = ["version: 1", "project: crash", "datasets:"]
    for i in range(n):
        write_jsonl(tmp_path / "data" / f"d{i}.jsonl", intents_rows(150, seed=i))
        spec += [f"  d{i}:", f"    path: data/d{i}.jsonl", "    task: classification"]
    (tmp_path / "fastuner.yaml").write_text("\n".join(spec) + "\n")
    state_file = tmp_path / "state" / "crash.json"
    proc = subprocess.Popen([sys.executable, "-m", "fastuner.cli.main", "apply", "--auto-approve",
                             "--parallelism", "1"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    serial = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            serial = json.loads(state_file.read_text())["serial"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            serial = 0  # an atomic rename never shows a half-written file, but it may not exist yet
        if serial >= 6:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "apply finished before it could be killed; make the test bigger"
    state = parse_state(state_file.read_text(), str(state_file))  # valid JSON, valid schema
    ready = [a for a, r in state.resources.items() if r.status == "ready"]
    assert 0 < len(ready) < n
    assert (tmp_path / "state" / "crash.json.lock").exists()  # left by the killed process
    again = fastuner_subprocess("apply", "--auto-approve", cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "released a stale lock" in again.stdout
    final = LocalStateStore(state_file).read()
    assert len(final.resources) == n and all(r.status == "ready" for r in final.resources.values())
    assert fastuner_subprocess("plan", "--detailed-exitcode", cwd=tmp_path).returncode == 0
