"""The local state, its backup, its lock and the copies fastuner writes of it are private (0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fastuner.state.local import LocalStateStore, write_private
from fastuner.state.model import ResourceState, State


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def a_state() -> State:
    return State(project="demo", resources={
        "dataset.ds": ResourceState(address="dataset.ds", kind="dataset", name="ds", physical_name="demo-ds-ds-1")})


def test_state_backup_and_lock_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, which left the state world-readable (found by tests/stress/secrets.py)
    try:
        store = LocalStateStore(tmp_path / "state" / "demo.json")
        with store.lock("apply"):
            assert mode(store.lock_path) == 0o600
            first = store.write(a_state())
            assert mode(store.path) == 0o600
            os.chmod(store.path, 0o644)  # written by an earlier version
            store.write(first)
        assert mode(store.path) == 0o600 and mode(store.backup_path) == 0o600
        stale = store.path.with_name(f".{store.path.name}.{os.getpid()}.tmp")
        stale.write_text("left by a crash")
        os.chmod(stale, 0o666)
        store.write(store.read())
        assert mode(store.path) == 0o600
        write_private(tmp_path / "pulled.json", b"{}")
        assert mode(tmp_path / "pulled.json") == 0o600
    finally:
        os.umask(old)
