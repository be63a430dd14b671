"""Detached processes whose wrapper was killed outright (SIGKILL cannot be passed on): what they left
running is found by its session and folder, and stopped before the work starts again (found by the
reliability harness: a killed `sh` wrapper left the server running, and the next apply started another)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from fastuner.providers.local import processes

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _wait(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _orphan(run: Path) -> tuple[int, list[int]]:
    launched = processes.launch(SLEEPER, cwd=run, env=dict(os.environ), log=run / "out.log")
    assert _wait(lambda: len(processes.leftovers(launched.pid, run)) == 2)  # the wrapper and its program
    os.kill(launched.pid, signal.SIGKILL)
    assert _wait(lambda: not processes.alive(launched.pid))
    processes.reap(launched.pid)
    left = processes.leftovers(launched.pid, run)
    assert len(left) == 1 and left[0] != launched.pid  # the program runs on without its wrapper
    return launched.pid, left


def test_a_new_launch_in_the_folder_stops_what_the_killed_wrapper_left(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first, left = _orphan(run)
    second = processes.launch(SLEEPER, cwd=run, env=dict(os.environ), log=run / "out.log")
    try:
        assert not any(processes.alive(p) for p in left)
        assert processes.leftovers(first, run) == []
    finally:
        processes.stop(second.pid, grace=5)
    assert not processes.group_alive(second.pid)


def test_stop_reaches_the_program_when_the_wrapper_is_gone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first, left = _orphan(run)
    started = time.monotonic()
    processes.stop(first, grace=20)
    assert not any(processes.alive(p) for p in left)
    assert time.monotonic() - started < 10  # told directly (SIGTERM), not killed after the whole grace


def test_another_folders_processes_are_not_leftovers(tmp_path: Path) -> None:
    run = tmp_path / "run"
    launched = processes.launch(SLEEPER, cwd=run, env=dict(os.environ), log=run / "out.log")
    try:
        assert _wait(lambda: len(processes.leftovers(launched.pid, run)) == 2)
        assert processes.leftovers(launched.pid, tmp_path) == []
    finally:
        processes.stop(launched.pid, grace=5)
