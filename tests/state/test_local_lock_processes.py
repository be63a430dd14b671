"""The local state lock under contention from several processes: each takes it, does a
read-modify-write under it and lets go, many times over, waiting for the others with a lock timeout.
Every acquisition is exclusive (nothing is lost) and none fails: a lock file is never seen by another
process before its creator holds it (found by the stress harness, `python -m tests.stress races`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastuner.state.local import LocalStateStore

ROOT = Path(__file__).resolve().parents[2]
WORKER = r"""
import sys, time
from pathlib import Path
from fastuner.state.local import LocalStateStore
from fastuner.state.model import empty_state
path, rounds = Path(sys.argv[1]), int(sys.argv[2])
counter = path.with_name("counter")
store = LocalStateStore(path, lock_timeout=60)
for _ in range(rounds):
    with store.lock("contender"):
        n = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(n + 1))
        store.write(store.read() or empty_state("demo", "default"))
"""


def test_processes_contending_for_the_lock_each_get_it_in_turn(tmp_path: Path) -> None:
    state, workers, rounds = tmp_path / "state" / "demo.json", 3, 30
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(state), str(rounds)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, "\n".join(errors)
    assert int((tmp_path / "state" / "counter").read_text()) == workers * rounds
    assert LocalStateStore(state).read().serial == workers * rounds
    assert not (tmp_path / "state" / "demo.json.lock").exists()
    assert sorted(p.name for p in state.parent.iterdir()) == ["counter", "demo.json", "demo.json.backup"]


def test_a_lock_file_is_never_seen_before_its_creator_holds_it(tmp_path: Path) -> None:
    """Another process looking at the lock file (as a waiting run does: open it, try its flock) at the
    very moment it appears must find it held and naming its holder — never free, never empty."""
    import fcntl
    import os
    import threading

    store = LocalStateStore(tmp_path / "demo.json")
    seen: list[str] = []
    stop = threading.Event()

    def look() -> None:
        while not stop.is_set():
            try:
                fd = os.open(store.lock_path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not os.read(fd, 4096):
                    seen.append("a held lock file without its holder's name")
            else:
                if os.path.exists(store.lock_path) and os.path.samestat(os.fstat(fd), os.stat(store.lock_path)):
                    seen.append("a lock file at its path that nobody held")
            finally:
                os.close(fd)

    looker = threading.Thread(target=look, daemon=True)
    looker.start()
    try:
        for _ in range(150):
            with store.lock("apply"):
                pass
    finally:
        stop.set()
        looker.join(5)
    assert not seen, seen[:3]
