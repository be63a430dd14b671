"""What every state store does, run against the local store and the S3 store alike: serials, lineage,
refusing a state that moved underneath, the lock and its refusal naming the holder, waiting for a lock,
force-unlock, push, history."""

from __future__ import annotations

import threading
import time

import pytest

from fastuner.errors import UserError
from fastuner.state.model import ResourceState, State
from fastuner.state.store import StateLockedError


def a_state(**kw) -> State:
    return State(project="demo", resources={
        "dataset.ds": ResourceState(address="dataset.ds", kind="dataset", name="ds", physical_name="demo-ds-ds-1"),
    }, **kw)


def test_read_of_no_state_is_none(make_store) -> None:
    store = make_store()
    assert store.read() is None
    assert list(store.history()) == []


def test_write_bumps_the_serial_and_reads_back(make_store) -> None:
    store = make_store()
    s = a_state()
    first = store.write(s)
    assert (first.serial, s.serial) == (1, 0)  # the argument is not changed
    assert store.read() == first
    second = store.write(first.model_copy(update={"project": "demo2"}))
    assert second.serial == 2 and second.lineage == first.lineage
    assert make_store().read() == second  # as another process sees it
    [(_where, previous), *_] = list(store.history())
    assert previous == first


def test_writing_over_a_moved_serial_is_refused(make_store) -> None:
    store, other = make_store(), make_store()
    first = store.write(a_state())
    other.write(other.read())  # someone else moves it to serial 2, without the lock
    with pytest.raises(UserError, match=r"changed underneath \(serial 2, expected 1\)"):
        store.write(first)
    assert make_store().read().serial == 2


def test_writing_another_lineage_is_refused(make_store) -> None:
    store = make_store()
    store.write(a_state())
    stranger = a_state()
    with pytest.raises(UserError, match="another state lineage") as info:
        store.write(stranger)
    assert stranger.lineage in info.value.diagnostics[0].detail


def test_lock_records_its_holder_and_is_released(make_store) -> None:
    store = make_store()
    with store.lock("apply") as info:
        held = store.current_lock()
        assert held == info and held.operation == "apply"
        store.check_lock()  # held: never raises
    assert store.current_lock() is None


def test_lock_is_released_when_the_body_raises(make_store) -> None:
    store = make_store()
    with pytest.raises(RuntimeError), store.lock("apply"):
        raise RuntimeError("boom")
    assert store.current_lock() is None


def test_held_lock_is_refused_naming_the_holder(make_store) -> None:
    store, other = make_store(), make_store()
    with store.lock("apply") as info:
        with pytest.raises(StateLockedError) as refused, other.lock("plan"):
            pass
        assert refused.value.info == info
        d = refused.value.diagnostics[0]
        assert "the state is locked" in d.summary
        for needle in (info.id, info.who, f"pid {info.pid}", "for:     apply", f"force-unlock {info.id}"):
            assert needle in d.detail
        assert store.current_lock() == info  # the refusal left the holder's lock alone
    assert store.current_lock() is None


def test_a_lock_released_in_time_is_taken(make_store) -> None:
    holder = make_store()
    notes: list[str] = []
    waiter = make_store(lock_timeout=30, on_notice=notes.append)
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.lock("apply (holder)"):
            taken.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(10)
    threading.Timer(0.3, release.set).start()
    with waiter.lock("apply (waiter)") as info:
        assert waiter.current_lock() == info
        assert release.is_set()  # taken only after the holder let go
    thread.join(10)
    assert len(notes) == 1 and "waiting for it" in notes[0] and "apply (holder)" in notes[0]


def test_a_lock_held_past_the_timeout_is_refused(make_store) -> None:
    holder, waiter = make_store(), make_store(lock_timeout=0.4)
    with holder.lock("apply (holder)") as info:
        start = time.monotonic()
        with pytest.raises(StateLockedError) as refused, waiter.lock("apply"):
            pass
        assert time.monotonic() - start >= 0.4
    d = refused.value.diagnostics[0]
    assert "waited 0.4s" in d.summary and info.id in d.detail


def test_force_unlock(make_store) -> None:
    store, admin = make_store(), make_store()
    with pytest.raises(UserError, match="is not locked"):
        admin.force_unlock("anything")
    with store.lock("apply") as info:
        with pytest.raises(UserError, match="does not match") as wrong:
            admin.force_unlock("wrong-id")
        assert info.id in wrong.value.diagnostics[0].detail
        assert store.current_lock() == info
        assert admin.force_unlock(info.id) == info
        assert admin.current_lock() is None
        with admin.lock("apply"):  # free for the next run
            pass


def test_push_stores_the_document_as_given(make_store) -> None:
    store = make_store()
    with store.lock("state push"):
        assert store.read() is None
        pushed = store.push(a_state(serial=7), over=None)
    assert make_store().read() == pushed and pushed.serial == 7
    with store.lock("state push"):
        current = store.read()
        store.push(current.model_copy(update={"serial": 9}), over=current)
    assert make_store().read().serial == 9


def test_push_refuses_a_state_that_changed_since_it_was_read(make_store) -> None:
    store, other = make_store(), make_store()
    current = store.write(a_state())
    store.read()
    other.write(other.read())
    with pytest.raises(UserError, match=r"changed (while pushing|underneath)"):
        store.push(current.model_copy(update={"serial": 5}), over=current)
    assert make_store().read().serial == 2
