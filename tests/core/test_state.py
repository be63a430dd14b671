"""State: the document, parsing with version checks, the local store (atomic writes, backup, serial,
lineage) and its lock (holder info, stale locks, force-unlock, a live holder in another process)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fastuner.errors import UserError
from fastuner.state.local import LocalStateStore
from fastuner.state.model import FORMAT_VERSION, Deposed, ResourceState, State, Status, empty_state
from fastuner.state.store import LockInfo, StateLockedError, parse_state, serialize_state


@pytest.fixture
def store(tmp_path: Path) -> LocalStateStore:
    return LocalStateStore(tmp_path / "state" / "demo.json")


def a_state(**kw) -> State:
    return State(project="demo", resources={
        "dataset.ds": ResourceState(address="dataset.ds", kind="dataset", name="ds", physical_name="demo-ds-ds-1"),
        "adapter.ad": ResourceState(address="adapter.ad", kind="adapter", name="ad", depends_on=["dataset.ds"]),
    }, **kw)


# --- the model ----------------------------------------------------------------------------------------


def test_empty_state_is_born_with_a_lineage() -> None:
    a, b = empty_state("demo", "default"), empty_state("demo", "default")
    assert a.serial == 0 and a.format_version == FORMAT_VERSION and a.resources == {}
    assert a.lineage != b.lineage and len(a.lineage) == 36
    assert a.fastuner_version


def test_state_lookups() -> None:
    s = a_state()
    assert s.get("adapter.ad").depends_on == ["dataset.ds"]
    assert s.get("nope") is None
    assert s.dependencies() == {"dataset.ds": [], "adapter.ad": ["dataset.ds"]}


def test_deposed_state_is_the_old_instance() -> None:
    rs = ResourceState(address="adapter.ad", kind="adapter", name="ad", physical_name="new", identity="n",
                       depends_on=["dataset.ds"])
    old = Deposed(physical_name="old", identity="o", inputs={"a": 1}, outputs={"id": "old"})
    view = rs.deposed_state(old)
    assert (view.address, view.physical_name, view.identity, view.inputs, view.outputs) == \
        ("adapter.ad", "old", "o", {"a": 1}, {"id": "old"})
    assert view.depends_on == ["dataset.ds"] and view.deposed == []


def test_serialized_state_parses_back_equal() -> None:
    s = a_state(updated_at=datetime(2025, 1, 1, tzinfo=UTC))
    s.resources["adapter.ad"].status = Status.EXPIRED
    assert parse_state(serialize_state(s), "x") == s


# --- parsing -------------------------------------------------------------------------------------------


def test_corrupt_json_mentions_the_backup() -> None:
    with pytest.raises(UserError, match=r"not valid JSON \(line 1, column 2\)") as info:
        parse_state("{oops", "state/demo.json")
    assert ".backup" in info.value.diagnostics[0].detail


def test_newer_format_version_is_refused_with_an_upgrade_hint() -> None:
    with pytest.raises(UserError, match="format_version 99, newer than this fastuner understands") as info:
        parse_state(json.dumps({"format_version": 99}), "s.json")
    assert "pip install -U fastuner" in info.value.diagnostics[0].detail


@pytest.mark.parametrize("version", [0, -1])
def test_unknown_older_format_version_is_a_user_error(version: int) -> None:
    with pytest.raises(UserError, match=f"format_version {version}"):
        parse_state(json.dumps({"format_version": version}), "s.json")


@pytest.mark.parametrize("text", ["[]", "{}", '{"serial": 3}', '"x"'])
def test_not_a_state(text: str) -> None:
    with pytest.raises(UserError, match="is not a fastuner state"):
        parse_state(text, "s.json")


def test_damaged_field_is_named() -> None:
    data = json.loads(serialize_state(a_state()))
    data["resources"]["dataset.ds"]["status"] = "exploded"
    with pytest.raises(UserError, match=r"damaged: resources\.dataset\.ds\.status") as info:
        parse_state(json.dumps(data), "s.json")
    assert ".backup" in info.value.diagnostics[0].detail


def test_unknown_fields_are_refused() -> None:
    data = json.loads(serialize_state(a_state()))
    data["surprise"] = 1
    with pytest.raises(UserError, match="damaged: surprise"):
        parse_state(json.dumps(data), "s.json")


# --- the local store --------------------------------------------------------------------------------------


def test_read_of_no_state_is_none(store: LocalStateStore) -> None:
    assert store.read() is None
    assert list(store.history()) == []


def test_write_bumps_the_serial_and_keeps_the_previous_version(store: LocalStateStore) -> None:
    first = store.write(a_state())
    assert first.serial == 1
    assert not store.backup_path.exists()
    assert store.read() == first
    second = store.write(first.model_copy(update={"project": "demo2"}))
    assert second.serial == 2 and second.lineage == first.lineage
    assert store.read() == second
    assert parse_state(store.backup_path.read_text(), "b") == first
    [(where, previous)] = list(store.history())
    assert where.endswith("demo.json.backup") and previous == first
    leftovers = [p.name for p in store.path.parent.iterdir()]
    assert sorted(leftovers) == ["demo.json", "demo.json.backup"]  # no temp files left behind


def test_write_does_not_change_its_argument(store: LocalStateStore) -> None:
    s = a_state()
    store.write(s)
    assert s.serial == 0


def test_writing_over_a_moved_serial_is_refused(store: LocalStateStore) -> None:
    first = store.write(a_state())
    store.write(first)  # someone else moves it to serial 2
    on_disk = store.path.read_bytes()
    with pytest.raises(UserError, match=r"changed underneath \(serial 2, expected 1\)"):
        store.write(first)
    assert store.path.read_bytes() == on_disk


def test_writing_another_lineage_is_refused(store: LocalStateStore) -> None:
    store.write(a_state())
    stranger = a_state()
    with pytest.raises(UserError, match="another state lineage") as info:
        store.write(stranger)
    assert stranger.lineage in info.value.diagnostics[0].detail


def test_corrupt_state_file_is_a_user_error(store: LocalStateStore) -> None:
    store.write(a_state())
    store.path.write_text("{", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        store.read()


def test_non_utf8_state_file(store: LocalStateStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b"\xff\xfe{")
    with pytest.raises(UserError, match="not UTF-8"):
        store.read()


def test_newer_state_file_is_refused_on_read(store: LocalStateStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(UserError, match="newer than this fastuner understands"):
        store.read()


# --- locking ----------------------------------------------------------------------------------------------


def test_lock_records_its_holder_and_is_released(store: LocalStateStore) -> None:
    with store.lock("apply") as info:
        assert store.lock_path.exists()
        held = store.current_lock()
        assert held == info
        assert (held.operation, held.pid, held.host) == ("apply", os.getpid(), socket.gethostname())
        assert held.who.endswith(f"@{socket.gethostname()}")
    assert not store.lock_path.exists()
    assert store.current_lock() is None


def test_lock_is_released_when_the_body_raises(store: LocalStateStore) -> None:
    with pytest.raises(RuntimeError), store.lock("apply"):
        raise RuntimeError("boom")
    assert not store.lock_path.exists()


def test_held_lock_is_refused_naming_the_holder(store: LocalStateStore) -> None:
    other = LocalStateStore(store.path)
    with store.lock("apply") as info:
        with pytest.raises(StateLockedError) as refused, other.lock("plan"):
            pass
        assert refused.value.info == info
        d = refused.value.diagnostics[0]
        assert "the state is locked" in d.summary
        for needle in (info.id, info.who, f"pid {info.pid}", "for:     apply", f"force-unlock {info.id}"):
            assert needle in d.detail
        assert store.lock_path.exists()  # the refusal left the holder's lock alone
    assert not store.lock_path.exists()


def _dead_lock(store: LocalStateStore, host: str | None = None) -> LockInfo:
    info = LockInfo(id="11111111-2222-3333-4444-555555555555", operation="apply", who="ghost@here",
                    host=host or socket.gethostname(), pid=999_999, created="2025-01-01T00:00:00+00:00")
    store.lock_path.parent.mkdir(parents=True, exist_ok=True)
    store.lock_path.write_text(info.to_json())
    return info


def test_stale_lock_of_a_dead_process_here_is_released_with_a_notice(tmp_path: Path) -> None:
    notices: list[str] = []
    store = LocalStateStore(tmp_path / "demo.json", on_notice=notices.append)
    _dead_lock(store)
    with store.lock("apply") as info:
        assert store.current_lock() == info
    [notice] = notices
    assert "released a stale lock" in notice
    assert "ghost@here" in notice and "pid 999999" in notice and "apply" in notice


def test_stale_lock_from_another_host_is_not_released(store: LocalStateStore) -> None:
    stale = _dead_lock(store, host="elsewhere")
    with pytest.raises(StateLockedError) as refused, store.lock("apply"):
        pass
    detail = refused.value.diagnostics[0].detail
    assert "another host (elsewhere)" in detail and f"force-unlock {stale.id}" in detail
    assert store.current_lock() == stale


def test_unreadable_lock_file_left_by_a_crash_is_released(tmp_path: Path) -> None:
    """A process that died between creating the lock file and writing its holder leaves it empty."""
    notices: list[str] = []
    store = LocalStateStore(tmp_path / "demo.json", on_notice=notices.append)
    store.lock_path.write_bytes(b"")
    os.utime(store.lock_path, (0, 0))  # long ago: its creator is certainly not about to write it
    with store.lock("apply"):
        pass
    assert len(notices) == 1 and "lock" in notices[0]


def test_force_unlock(store: LocalStateStore) -> None:
    with pytest.raises(UserError, match="is not locked"):
        store.force_unlock("anything")
    stale = _dead_lock(store, host="elsewhere")
    with pytest.raises(UserError, match="does not match") as wrong:
        store.force_unlock("wrong-id")
    assert stale.id in wrong.value.diagnostics[0].detail
    assert store.lock_path.exists()
    assert store.force_unlock(stale.id) == stale
    assert not store.lock_path.exists()
    with store.lock("apply"):
        pass


def test_lock_info_json_round_trip() -> None:
    info = LockInfo.new("destroy", "state/demo.json")
    assert LockInfo.from_json(info.to_json()) == info
    assert info.path == "state/demo.json" and info.pid == os.getpid()
    assert info.id in info.describe() and "destroy" in info.describe()


HOLDER = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from fastuner.state.local import LocalStateStore
    with LocalStateStore(Path(sys.argv[1])).lock("apply from another process"):
        print("locked", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
""")


def _holder(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_held_by_another_live_process_is_refused_with_its_pid(store: LocalStateStore) -> None:
    proc = _holder(store.path)
    try:
        with pytest.raises(StateLockedError) as refused, store.lock("plan"):
            pass
        assert refused.value.info.pid == proc.pid
        assert refused.value.info.operation == "apply from another process"
        assert f"pid {proc.pid}" in refused.value.diagnostics[0].detail
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "released"
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    with store.lock("plan"):
        pass


def test_lock_of_a_killed_process_is_stale(tmp_path: Path) -> None:
    notices: list[str] = []
    store = LocalStateStore(tmp_path / "demo.json", on_notice=notices.append)
    proc = _holder(store.path)
    proc.kill()
    proc.wait(timeout=10)
    proc.stdin.close()
    proc.stdout.close()
    assert store.current_lock().pid == proc.pid  # the file outlived its holder
    with store.lock("apply"):
        pass
    assert len(notices) == 1 and f"pid {proc.pid}" in notices[0]
