"""Detached processes that outlive `fastuner apply`: started in their own session, their exit code
written to a file by the shell that runs them, found again by pid and session."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fastuner.providers.base import ProviderError

# The shell runs the program in the background and waits for it, forwarding SIGTERM/SIGINT to it (a
# plain `sh -c 'prog'` would die at once on SIGTERM and leave the program behind, unrecorded), then
# records the exit code atomically, whoever is watching.
_WRAPPER = (
    '"$@" & child=$!; '
    "trap 'kill -TERM \"$child\" 2>/dev/null' TERM INT; "
    'wait "$child"; ec=$?; '
    'while kill -0 "$child" 2>/dev/null; do wait "$child"; ec=$?; done; '
    'echo "$ec" > exit_code.tmp && mv exit_code.tmp exit_code; exit "$ec"'
)


@dataclass(frozen=True)
class Launched:
    pid: int
    started_at: float


def launch(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path) -> Launched:
    """Start `argv` in `cwd` as a new session (Ctrl-C in the terminal does not reach it), appending
    stdout and stderr to `log`; `cwd/exit_code` appears when it ends. What an earlier launch in `cwd`
    left running without its wrapper is stopped first (`clear_leftovers`)."""
    cwd.mkdir(parents=True, exist_ok=True)
    clear_leftovers(cwd)
    (cwd / "exit_code").unlink(missing_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(["/bin/sh", "-c", _WRAPPER, "fastuner-run", *argv], cwd=cwd, env=dict(env),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    info = Launched(pid=proc.pid, started_at=time.time())
    (cwd / "process.json").write_text(json.dumps({"pid": info.pid, "started_at": info.started_at,
                                                  "argv": list(argv)}))
    return info


def recorded(cwd: Path) -> dict | None:
    try:
        return json.loads((cwd / "process.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def exit_code(cwd: Path) -> int | None:
    try:
        return int((cwd / "exit_code").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def reap(pid: int) -> None:
    """Collect our own child's exit status if it has ended (avoids zombies in long-lived processes)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group (the wrapper and everything it started) still runs."""
    reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(pid: int, *, grace: float = 20.0) -> None:
    """SIGTERM the program through its wrapper (the program checkpoints or drains, then exits), wait
    for the whole process group to end, and SIGKILL what is left after `grace` seconds."""
    if not group_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:  # the wrapper was killed outright; its program was not: tell it directly
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while group_alive(pid) and time.monotonic() < deadline + 5:
        time.sleep(0.05)


def leftovers(pgid: int, cwd: Path) -> list[int]:
    """Processes of the session `pgid` that still run in `cwd`. A wrapper killed outright (SIGKILL, the
    OOM killer) cannot pass the signal on: its program runs on, unrecorded, and `alive(pid)` says the
    work is gone. The folder check keeps a reused process-group ID from naming someone else's processes.
    Empty where /proc is not there to ask."""
    found = []
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return []
    where = os.path.realpath(cwd)
    for name in entries:
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            if os.path.realpath(f"/proc/{name}/cwd") != where:
                continue
        except (OSError, ValueError, IndexError):
            continue
        found.append(int(name))
    return found


def clear_leftovers(cwd: Path, *, grace: float = 20.0) -> None:
    """Stop what the launch recorded in `cwd` left running after its wrapper died: SIGTERM (a training
    run checkpoints, a server drains), then SIGKILL after `grace` seconds."""
    info = recorded(cwd)
    if not info or alive(int(info.get("pid") or 0)):
        return
    pgid = int(info["pid"])
    pids = leftovers(pgid, cwd)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = [p for p in pids if alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def read_log(address: str, path: Path, running: Callable[[], bool], *, follow: bool,
             poll: float = 0.5) -> Iterator[str]:
    """A detached program's log in chunks; with `follow`, more as it is written while `running()` says
    the program still is (`fastuner logs ADDRESS -f`)."""
    if not path.exists():
        raise ProviderError(f"no log yet for {address} (expected {path})")
    return _chunks(path, running() if follow else False, running, poll)


def _chunks(path: Path, still: bool, running: Callable[[], bool], poll: float) -> Iterator[str]:
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                yield chunk.decode("utf-8", "replace")
                continue
            if not still:
                return
            time.sleep(poll)
            still = running()
