"""Garbage collection of kept adapter runs never deletes an object that state still points at: current
outputs, old instances awaiting deletion, the history of kept runs, or an operation in flight. Real
object store and the local adapter provider's delete; no training."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastuner.data.store import LocalObjectStore
from fastuner.engine.apply import _record_outcome, referenced_values
from fastuner.plan.model import Action, Change, Reason
from fastuner.providers.base import Context, Outcome
from fastuner.providers.local.adapters import LocalAdapters
from fastuner.state.model import Deposed, Operation, ResourceState, State, Status, Trained

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def kept(store: LocalObjectStore, name: str, shared: str) -> Trained:
    """A kept run: its own weights plus a file every run shares (same bytes, same key)."""
    return Trained(identity=name, physical_name=f"demo-ad-x-{name}",
                   artifact={"model/adapter_model.safetensors": store.put_bytes(name.encode()),
                             "model/adapter_config.json": shared})


def test_deleting_an_evicted_run_spares_every_key_state_still_uses(tmp_path: Path) -> None:
    work = tmp_path / ".fastuner"
    adapters = LocalAdapters(work, tmp_path)
    store = adapters.store
    shared = store.put_bytes(b'{"r": 4}')
    evicted, in_history, deposed, in_flight, current = (kept(store, n, shared) for n in ("e", "h", "d", "f", "c"))
    x = ResourceState(address="adapter.x", kind="adapter", name="x", identity="c", physical_name="demo-ad-x-c",
                      outputs={"artifact": current.artifact}, history=[in_history],
                      deposed=[Deposed(physical_name="demo-ad-x-d", outputs={"artifact": deposed.artifact})])
    y = ResourceState(address="adapter.y", kind="adapter", name="y", status=Status.PENDING,
                      physical_name="demo-ad-y-f",
                      pending=Operation(action="create", started_at=NOW, detail={"artifact": in_flight.artifact}))
    state = State(project="demo", resources={"adapter.x": x, "adapter.y": y})
    # the evicted run shares a file (same bytes, same key) with each of the others
    overlap = {f"model/{t.identity}.bin": t.artifact["model/adapter_model.safetensors"]
               for t in (in_history, deposed, in_flight, current)}
    gone = ResourceState(address="adapter.x", kind="adapter", name="x", identity="e",
                         physical_name=evicted.physical_name, outputs={"artifact": {**evicted.artifact, **overlap}})
    (work / "runs" / evicted.physical_name / "model").mkdir(parents=True)
    adapters.delete(gone, Context(address="adapter.x", spec_dir=tmp_path,
                                  referenced=lambda: referenced_values(state)))
    assert not store.exists(evicted.artifact["model/adapter_model.safetensors"])
    assert not (work / "runs" / evicted.physical_name).exists()
    for survivor in (in_history, deposed, in_flight, current):
        assert all(store.exists(k) for k in survivor.artifact.values()), survivor.identity
    assert store.exists(shared)


def test_deleting_an_old_instance_spares_its_kept_copy_but_a_full_delete_does_not(tmp_path: Path) -> None:
    adapters = LocalAdapters(tmp_path / ".fastuner", tmp_path)
    old = kept(adapters.store, "old", adapters.store.put_bytes(b"cfg"))
    x = ResourceState(address="adapter.x", kind="adapter", name="x", identity="new", physical_name="demo-ad-x-new",
                      history=[old], deposed=[Deposed(physical_name=old.physical_name, identity="old",
                                                      outputs={"artifact": old.artifact})])
    state = State(project="demo", resources={"adapter.x": x})
    ctx = Context(address="adapter.x", spec_dir=tmp_path,
                  referenced=lambda: referenced_values(state, "adapter.x", old.physical_name))
    adapters.delete(x.deposed_state(x.deposed[0]), ctx)
    assert all(adapters.store.exists(k) for k in old.artifact.values())  # kept by the history
    adapters.delete(x, Context(address="adapter.x", spec_dir=tmp_path,
                               referenced=lambda: referenced_values(state, "adapter.x")))
    assert not any(adapters.store.exists(k) for k in old.artifact.values())  # the adapter is gone: so is its cache


def test_the_history_holds_at_most_keep_earlier_runs_never_the_current_one() -> None:
    runs = [Trained(identity=i, physical_name=f"p-{i}", artifact={"a": "sha256/aa/" + "a" * 64}) for i in "abc"]
    rs = ResourceState(address="adapter.x", kind="adapter", name="x", identity="b", physical_name="p-b",
                       status=Status.PENDING, history=list(runs))
    state = State(project="demo", resources={"adapter.x": rs})
    change = Change(address="adapter.x", kind="adapter", name="x", action=Action.REPLACE,
                    reason=Reason.REPLACE_BECAUSE_CANNOT_UPDATE, identity="b", physical_name="p-b")
    evicted = _record_outcome(state, change, Outcome.ready({"artifact": {}}), NOW, keep=1)
    assert [t.identity for t in rs.history] == ["a"] and [t.identity for t in evicted] == ["c"]
