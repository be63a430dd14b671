"""--lock-timeout: a held lock is waited for, retrying, and refused naming its holder once the time is up."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fastuner.state.local import LocalStateStore
from fastuner.state.store import StateLockedError


def hold(store: LocalStateStore, taken: threading.Event, release: threading.Event) -> None:
    with store.lock("apply (holder)"):
        taken.set()
        release.wait(30)


def test_a_lock_released_in_time_is_taken(tmp_path: Path) -> None:
    holder = LocalStateStore(tmp_path / "s.json")
    notes: list[str] = []
    waiter = LocalStateStore(tmp_path / "s.json", lock_timeout=30, on_notice=notes.append)
    taken, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=hold, args=(holder, taken, release))
    thread.start()
    assert taken.wait(10)
    threading.Timer(0.3, release.set).start()
    with waiter.lock("apply (waiter)") as info:
        assert waiter.current_lock() == info
        assert release.is_set()  # it was taken only after the holder let go
    thread.join(10)
    assert len(notes) == 1 and "waiting for it" in notes[0] and "apply (holder)" in notes[0]


def test_a_lock_held_past_the_timeout_is_refused_naming_the_holder(tmp_path: Path) -> None:
    holder = LocalStateStore(tmp_path / "s.json")
    waiter = LocalStateStore(tmp_path / "s.json", lock_timeout=0.4)
    with holder.lock("apply (holder)") as info:
        start = time.monotonic()
        with pytest.raises(StateLockedError) as refused, waiter.lock("apply"):
            pass
        assert time.monotonic() - start >= 0.4  # it did wait
    d = refused.value.diagnostics[0]
    assert "the state is locked" in d.summary and "waited 0.4s" in d.summary
    assert info.id in d.detail and f"pid {info.pid}" in d.detail and "apply (holder)" in d.detail


def test_no_timeout_refuses_at_once_and_suggests_one(tmp_path: Path) -> None:
    holder = LocalStateStore(tmp_path / "s.json")
    with holder.lock("apply"), pytest.raises(StateLockedError) as refused, \
            LocalStateStore(tmp_path / "s.json").lock("apply"):
        pass
    d = refused.value.diagnostics[0]
    assert "waited" not in d.summary and "--lock-timeout" in d.detail
