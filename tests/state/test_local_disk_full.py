"""A state file that cannot be written (a full disk, a read-only folder; found by tests/stress/faults.py
on a small tmpfs) is a message naming the state and the reason, and the state file is as it was, with no
temporary file left beside it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from fastuner.errors import UserError
from fastuner.state import local as local_module
from fastuner.state.local import LocalStateStore
from tests.state.test_store_contract import a_state


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_a_state_write_the_disk_refuses(tmp_path: Path, monkeypatch, err: int) -> None:
    store = LocalStateStore(tmp_path / "state" / "demo.json")
    first = store.write(a_state())
    before = store.path.read_bytes()

    def refused(*_args, **_kw):
        raise OSError(err, "No space left on device" if err == errno.ENOSPC else "Read-only file system")

    monkeypatch.setattr(local_module.os, "write", refused)
    with pytest.raises(UserError, match=r"cannot write the state .*demo\.json: (No space|Read-only)") as raised:
        store.write(first)
    assert "the state file was not changed" in raised.value.diagnostics[0].detail
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["demo.json", "demo.json.backup"]


def test_a_lock_the_folder_refuses(tmp_path: Path, monkeypatch) -> None:
    store = LocalStateStore(tmp_path / "state" / "demo.json")
    store.path.parent.mkdir(parents=True)
    real_open = local_module.os.open

    def read_only(path, flags, *args):
        if flags & local_module.os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args)

    monkeypatch.setattr(local_module.os, "open", read_only)
    with pytest.raises(UserError, match=r"cannot take the lock on .*demo\.json: cannot write .*demo\.json\.lock: "
                                        r"Read-only file system") as raised, store.lock("apply"):
        pass
    assert "must be writable" in raised.value.diagnostics[0].detail
    assert list(store.path.parent.iterdir()) == []
