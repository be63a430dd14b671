"""apply against the in-memory provider and a real LocalStateStore: persistence after every operation,
failure isolation, pending work, create-before-destroy, parallelism, cancellation, stale and blocked
plans, provider bugs, destroy and TTL tombstones. Time comes from the harness clock."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from datetime import timedelta

import pytest

from fastuner.engine.apply import BlockedPlanError, StalePlanError
from fastuner.engine.events import Result
from fastuner.engine.ledger import Ledger
from fastuner.engine.refresh import refresh
from fastuner.errors import DiagnosticsError, UserError
from fastuner.plan.model import Action, Change, Plan, Reason
from fastuner.providers.base import Provider, ProviderError, ResourceProvider
from fastuner.providers.memory import MemoryResources, memory_provider
from fastuner.state.model import Status, empty_state

WIDE = """\
version: 1
project: demo
datasets:
  ds: {path: data/ds.jsonl, task: text_generation}
  other: {path: data/other.jsonl, task: text_generation}
adapters:
  ad: {base_model: base/model, dataset: ds}
  ad2: {base_model: base/model, dataset: other}
deployments:
  ep: {base_model: base/model, adapters: [ad], ttl: 8h}
  ep2: {base_model: base/model, adapters: [ad2]}
"""


def many(n: int) -> str:
    return "version: 1\nproject: demo\ndatasets:\n" + "".join(
        f"  d{i}: {{path: data/ds.jsonl, task: qa}}\n" for i in range(n))


class Recorder:
    """A reporter that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.notices: list[str] = []

    def started(self, change: Change) -> None:
        self.events.append(("started", change.address))

    def progress(self, address: str, text: str) -> None:
        pass

    def finished(self, change: Change, result: Result) -> None:
        self.events.append((result.status, change.address))

    def notice(self, text: str) -> None:
        self.notices.append(text)


def by_address(result) -> dict[str, Result]:
    return {r.address: r for r in result.results if r.deposed is None}


def statuses(result) -> dict[str, str]:
    return {a: r.status for a, r in by_address(result).items()}


# --- the happy path -------------------------------------------------------------------------------------


def test_create_all_then_no_changes(harness) -> None:
    result = harness.converge()
    assert statuses(result) == {"dataset.ds": "done", "adapter.ad": "done", "deployment.ep": "done"}
    assert harness.ops("create") == ["dataset.ds", "adapter.ad", "deployment.ep"]
    state = harness.state()
    assert result.state == state
    assert {a: rs.status for a, rs in state.resources.items()} == dict.fromkeys(
        ["dataset.ds", "adapter.ad", "deployment.ep"], Status.READY)
    ep = state.resources["deployment.ep"]
    assert ep.outputs["id"] == ep.physical_name in harness.world.objects
    assert ep.outputs["upstream"] == {"adapter.ad": state.resources["adapter.ad"].physical_name}
    assert ep.depends_on == ["adapter.ad"]
    assert ep.created_at == harness.now and ep.expires_at == harness.now + timedelta(hours=8)
    assert ep.pending is None and ep.error is None
    again = harness.plan()
    assert not again.has_changes and again.refresh == {}
    assert again.lineage == state.lineage and again.serial == state.serial


def test_state_is_persisted_after_every_operation(harness) -> None:
    seen = {}

    def look() -> None:  # runs inside the adapter's create: read what is on disk right now
        on_disk = harness.store.read()
        seen["adapter"] = on_disk.resources["adapter.ad"].model_copy()
        seen["dataset"] = on_disk.resources["dataset.ds"].status
        seen["lock"] = harness.store.current_lock()

    harness.world.script("adapter.ad").before = look
    harness.converge()
    assert seen["dataset"] is Status.READY
    assert seen["adapter"].status is Status.PENDING
    assert seen["adapter"].pending.action == "create"
    assert seen["adapter"].pending.run_id == seen["adapter"].physical_name
    assert seen["lock"].operation == "apply"
    # two writes per resource: pending before the call, the outcome after it
    assert harness.state().serial == 6
    assert harness.store.current_lock() is None


def test_updates_in_place(harness) -> None:
    harness.converge()
    created = harness.state().resources["deployment.ep"]
    harness.tick(hours=1)
    harness.load(harness.spec.text.replace("ttl: 8h", "ttl: 12h"))
    plan = harness.plan()
    assert plan.change("deployment.ep").action is Action.UPDATE
    result = harness.apply(plan)
    assert result.ok and harness.ops()[-1] == "deployment.ep" and harness.world.calls[-1][0] == "update"
    ep = harness.state().resources["deployment.ep"]
    assert ep.inputs["ttl"] == "12h"
    assert ep.physical_name == created.physical_name and ep.created_at == created.created_at
    assert ep.expires_at == created.created_at + timedelta(hours=12)
    assert ep.outputs["generation"] == 2
    assert not harness.plan().has_changes


def test_removed_resource_is_deleted(harness) -> None:
    harness.converge()
    phys = harness.state().resources["deployment.ep"].physical_name
    harness.load(harness.spec.text.split("deployments:")[0])
    result = harness.apply(harness.plan())
    assert statuses(result) == {"deployment.ep": "done"}
    assert harness.world.calls[-1] == ("delete", "deployment.ep", phys)
    assert "deployment.ep" not in harness.state().resources and phys not in harness.world.objects


def test_a_refresh_only_plan_is_recorded(harness) -> None:
    harness.converge()
    ad = harness.state().resources["adapter.ad"]
    harness.world.objects[ad.physical_name]["outputs"]["metrics"] = {"loss": 0.1}
    plan = harness.plan()
    assert not plan.has_changes and set(plan.refresh) == {"adapter.ad"}
    serial = harness.state().serial
    result = harness.apply(plan)
    assert result.ok and result.results == []
    assert harness.state().serial == serial + 1
    assert harness.state().resources["adapter.ad"].outputs["metrics"] == {"loss": 0.1}
    assert harness.plan().refresh == {}


def test_reporter_sees_every_operation(harness) -> None:
    recorder = Recorder()
    harness.load()
    harness.apply(harness.plan(), reporter=recorder)
    assert recorder.events == [("started", "dataset.ds"), ("done", "dataset.ds"), ("started", "adapter.ad"),
                               ("done", "adapter.ad"), ("started", "deployment.ep"), ("done", "deployment.ep")]


# --- failures ------------------------------------------------------------------------------------------


@pytest.fixture
def wide(harness):
    harness.write_data("other", "row 2\n")
    harness.load(WIDE)
    return harness


def test_a_failure_fails_only_its_descendants(wide) -> None:
    wide.world.script("adapter.ad").fail_create = "quota exceeded for ml.g5.2xlarge"
    result = wide.apply(wide.plan())
    got = by_address(result)
    assert got["adapter.ad"].status == "failed" and "quota exceeded" in got["adapter.ad"].message
    assert got["deployment.ep"].status == "skipped"
    assert got["deployment.ep"].message == "skipped: upstream failed (adapter.ad)"
    for independent in ("dataset.ds", "dataset.other", "adapter.ad2", "deployment.ep2"):
        assert got[independent].status == "done"
    assert not result.ok and result.bugs == []
    state = wide.state()
    assert state.resources["adapter.ad"].status is Status.FAILED
    assert "quota exceeded" in state.resources["adapter.ad"].error
    assert state.resources["adapter.ad"].pending is None
    assert "deployment.ep" not in state.resources
    assert "deployment.ep" not in wide.ops()
    # the next run replaces the tainted adapter and creates what was skipped
    plan = wide.plan()
    assert (plan.change("adapter.ad").action, plan.change("adapter.ad").reason) == \
        (Action.REPLACE, Reason.REPLACE_BECAUSE_TAINTED)
    assert plan.change("deployment.ep").reason is Reason.CREATE_BECAUSE_NEW
    wide.world.script("adapter.ad").fail_create = None
    assert wide.apply(plan).ok
    assert not wide.plan().has_changes


def test_a_failure_skips_every_descendant(wide) -> None:
    wide.world.script("dataset.ds").fail_create = "bucket not found"
    got = by_address(wide.apply(wide.plan()))
    assert got["dataset.ds"].status == "failed"
    assert got["adapter.ad"].message == "skipped: upstream failed (dataset.ds)"
    assert got["deployment.ep"].message == "skipped: upstream failed (dataset.ds)"  # the root cause
    assert got["deployment.ep2"].status == "done"
    assert wide.ops("create").count("adapter.ad") == 0


def test_a_provider_bug_is_recorded_without_corrupting_state(harness) -> None:
    def crash() -> None:
        raise RuntimeError("boom")

    harness.world.script("adapter.ad").before = crash
    harness.load()
    result = harness.apply(harness.plan())
    [(address, exc, tb)] = result.bugs
    assert address == "adapter.ad" and isinstance(exc, RuntimeError)
    assert "RuntimeError: boom" in tb and "Traceback" in tb
    got = by_address(result)
    assert got["adapter.ad"].status == "failed" and "internal error" in got["adapter.ad"].message
    assert got["deployment.ep"].status == "skipped"
    state = harness.state()  # parses: the file is intact
    assert state.resources["dataset.ds"].status is Status.READY
    assert state.resources["adapter.ad"].status is Status.FAILED
    assert "RuntimeError" in state.resources["adapter.ad"].error
    assert harness.store.current_lock() is None
    with harness.store.lock("check"):
        pass


def test_a_failed_update_keeps_the_old_inputs(harness) -> None:
    harness.converge()
    harness.load(harness.spec.text.replace("ttl: 8h", "ttl: 9h"))
    harness.world.script("deployment.ep").fail_update = "throttled"
    result = harness.apply(harness.plan())
    assert statuses(result) == {"deployment.ep": "failed"}
    ep = harness.state().resources["deployment.ep"]
    assert ep.status is Status.READY and ep.inputs["ttl"] == "8h"
    assert ep.error == "throttled" and ep.pending is None
    assert harness.plan().change("deployment.ep").action is Action.UPDATE


# --- pending work ----------------------------------------------------------------------------------------


def test_pending_work_defers_its_dependents_and_is_picked_up_later(harness) -> None:
    harness.world.script("adapter.ad").pending = True
    harness.load()
    result = harness.apply(harness.plan())
    got = by_address(result)
    assert got["dataset.ds"].status == "done"
    assert got["adapter.ad"].status == "pending"
    assert got["deployment.ep"].status == "deferred"
    assert got["deployment.ep"].message == "deferred: adapter.ad is still in progress"
    assert result.ok  # --no-wait work in flight is not a failure
    ad = harness.state().resources["adapter.ad"]
    assert ad.status is Status.PENDING and ad.pending.action == "create"
    assert "deployment.ep" not in harness.state().resources
    # still running: the next plan adopts it
    plan = harness.plan()
    assert plan.change("adapter.ad").reason is Reason.CREATE_BECAUSE_PENDING
    # finished meanwhile: recorded from refresh, and its dependents go ahead
    harness.world.objects[ad.physical_name]["status"] = "ready"
    harness.world.script("adapter.ad").pending = False
    plan = harness.plan()
    assert plan.change("adapter.ad").action is Action.NOOP and "adapter.ad" in plan.refresh
    assert plan.change("deployment.ep").action is Action.CREATE
    calls = len(harness.world.calls)
    assert harness.apply(plan).ok
    assert harness.ops()[calls:] == ["deployment.ep"]
    assert harness.state().resources["adapter.ad"].status is Status.READY
    assert not harness.plan().has_changes


def test_pending_defers_every_descendant(harness) -> None:
    harness.world.script("dataset.ds").pending = True
    harness.load()
    got = by_address(harness.apply(harness.plan()))
    assert got["dataset.ds"].status == "pending"
    assert got["adapter.ad"].message == "deferred: dataset.ds is still in progress"
    assert got["deployment.ep"].message == "deferred: dataset.ds is still in progress"


# --- replacement -------------------------------------------------------------------------------------------


def test_replace_creates_before_it_destroys(harness) -> None:
    harness.converge()
    old = {a: rs.physical_name for a, rs in harness.state().resources.items()}
    harness.write_data("ds", "row 1\nrow 2\n")
    plan = harness.plan()
    assert [c.action for c in plan.changes] == [Action.REPLACE, Action.REPLACE, Action.UPDATE]
    new = {c.address: c.physical_name for c in plan.changes}
    start = len(harness.world.calls)
    result = harness.apply(plan)
    assert result.ok
    assert harness.world.calls[start:] == [
        ("create", "dataset.ds", new["dataset.ds"]),
        ("create", "adapter.ad", new["adapter.ad"]),
        ("update", "deployment.ep", old["deployment.ep"]),
        ("delete", "adapter.ad", old["adapter.ad"]),
        ("delete", "dataset.ds", old["dataset.ds"]),
    ]
    state = harness.state()
    assert all(rs.deposed == [] for rs in state.resources.values())
    assert state.resources["deployment.ep"].outputs["upstream"] == {"adapter.ad": new["adapter.ad"]}
    assert old["adapter.ad"] not in harness.world.objects and new["adapter.ad"] in harness.world.objects
    assert not harness.plan().has_changes


def test_old_instance_is_kept_deposed_while_a_dependent_update_fails(harness) -> None:
    harness.converge()
    old_ad = harness.state().resources["adapter.ad"].physical_name
    harness.write_data("ds", "row 1\nrow 2\n")
    harness.world.script("deployment.ep").fail_update = "endpoint busy"
    recorder = Recorder()
    result = harness.apply(harness.plan(), reporter=recorder)
    assert statuses(result)["deployment.ep"] == "failed"
    ad = harness.state().resources["adapter.ad"]
    assert ad.status is Status.READY and ad.physical_name != old_ad
    assert [d.physical_name for d in ad.deposed] == [old_ad]
    assert old_ad in harness.world.objects  # still served by the deployment
    assert any(old_ad in n and "adapter.ad" in n for n in recorder.notices)
    # the next plan retries the update and deletes the old instance after it
    harness.world.script("deployment.ep").fail_update = None
    plan = harness.plan()
    assert plan.change("deployment.ep").action is Action.UPDATE
    [deposed] = [c for c in plan.changes if c.reason is Reason.DELETE_BECAUSE_DEPOSED]
    assert deposed.deposed == old_ad
    start = len(harness.world.calls)
    assert harness.apply(plan).ok
    assert [(op, a) for op, a, _ in harness.world.calls[start:]] == [("update", "deployment.ep"),
                                                                    ("delete", "adapter.ad")]
    assert harness.world.calls[-1][2] == old_ad
    assert harness.state().resources["adapter.ad"].deposed == []
    assert not harness.plan().has_changes


def test_old_instance_left_by_a_failed_replace_outlives_a_failing_dependent(harness) -> None:
    harness.converge()
    old_ad = harness.state().resources["adapter.ad"].physical_name
    harness.write_data("ds", "row 1\nrow 2\n")
    harness.world.script("adapter.ad").fail_create = "capacity"
    assert statuses(harness.apply(harness.plan()))["adapter.ad"] == "failed"
    ad = harness.state().resources["adapter.ad"]
    assert ad.status is Status.FAILED and [d.physical_name for d in ad.deposed] == [old_ad]
    # retried: the adapter succeeds, but the deployment still serving the old one fails to move
    harness.world.script("adapter.ad").fail_create = None
    harness.world.script("deployment.ep").fail_update = "endpoint busy"
    recorder = Recorder()
    plan = harness.plan()
    assert any(c.reason is Reason.DELETE_BECAUSE_DEPOSED and c.deposed == old_ad for c in plan.changes)
    result = harness.apply(plan, reporter=recorder)
    assert statuses(result)["deployment.ep"] == "failed"
    assert old_ad in harness.world.objects, "deleted while deployment.ep still serves it"
    assert [d.physical_name for d in harness.state().resources["adapter.ad"].deposed] == [old_ad]
    assert any(old_ad in n for n in recorder.notices)
    # once the deployment moves on, the old instance goes
    harness.world.script("deployment.ep").fail_update = None
    assert harness.apply(harness.plan()).ok
    assert old_ad not in harness.world.objects
    assert not harness.plan().has_changes


def test_replace_by_request_leaves_a_ready_resource(harness) -> None:
    harness.converge()
    old = harness.state().resources["adapter.ad"].physical_name
    plan = harness.plan(replace=["adapter.ad"])
    assert plan.change("adapter.ad").reason is Reason.REPLACE_BY_REQUEST
    result = harness.apply(plan)
    assert result.ok
    ad = harness.state().resources["adapter.ad"]
    assert ad.status is Status.READY and ad.deposed == []
    # a forced rebuild gets a fresh name (it must not adopt what it replaces); the old one is deleted
    assert ad.generation == 1 and ad.physical_name != old
    assert old not in harness.world.objects and ad.physical_name in harness.world.objects
    assert not harness.plan().has_changes


# --- scheduling -------------------------------------------------------------------------------------------


def _meet(harness, n: int, parties: int) -> None:
    """n independent datasets whose operations wait until `parties` of them run at once."""
    barrier = threading.Barrier(parties, timeout=5)
    harness.load(many(n))
    for i in range(n):
        harness.world.script(f"dataset.d{i}").before = barrier.wait


@pytest.mark.parametrize("parallelism", [1, 2, 3])
def test_parallelism_bound_is_respected(harness, parallelism: int) -> None:
    _meet(harness, 6, parallelism)  # a broken barrier (too few at once) would fail the operations
    result = harness.apply(harness.plan(), parallelism=parallelism)
    assert result.ok and result.bugs == [] and len(result.results) == 6
    assert harness.world.max_concurrent == parallelism
    # two durable writes per operation at most (pending, then done); concurrent ones are group-committed
    assert 2 <= harness.state().serial <= 12
    assert all(rs.status is Status.READY for rs in harness.state().resources.values())


def test_independent_work_runs_in_parallel_up_to_the_default(harness) -> None:
    _meet(harness, 5, 5)
    result = harness.apply(harness.plan(), parallelism=10)
    assert result.ok and harness.world.max_concurrent == 5


def test_more_work_than_parallelism_waits_its_turn(harness) -> None:
    harness.load(many(5))
    for i in range(5):
        harness.world.script(f"dataset.d{i}").delay = 0.01
    assert harness.apply(harness.plan(), parallelism=2).ok
    assert harness.world.max_concurrent <= 2 and len(harness.state().resources) == 5


def test_cancel_stops_scheduling_and_keeps_state_valid(harness, cancel) -> None:
    harness.world.script("dataset.ds").before = cancel.set
    harness.load()
    result = harness.apply(harness.plan(), cancel=cancel)
    assert result.cancelled and not result.ok
    got = by_address(result)
    assert got["dataset.ds"].status == "done"  # in flight when interrupted: it finishes and is saved
    assert got["adapter.ad"].status == got["deployment.ep"].status == "cancelled"
    assert got["adapter.ad"].message == "not started: interrupted"
    assert harness.ops() == ["dataset.ds"]
    state = harness.state()
    assert list(state.resources) == ["dataset.ds"] and state.resources["dataset.ds"].status is Status.READY
    assert harness.store.current_lock() is None
    # the next apply continues where it stopped
    plan = harness.plan()
    assert [c.action for c in plan.changes] == [Action.NOOP, Action.CREATE, Action.CREATE]
    assert harness.apply(plan).ok


def test_cancel_among_independent_work(harness, cancel) -> None:
    harness.load(many(4))
    harness.world.script("dataset.d0").before = cancel.set
    result = harness.apply(harness.plan(), cancel=cancel, parallelism=1)
    assert statuses(result) == {"dataset.d0": "done", "dataset.d1": "cancelled", "dataset.d2": "cancelled",
                                "dataset.d3": "cancelled"}
    assert list(harness.state().resources) == ["dataset.d0"]


def test_cancel_leaves_long_running_work_pending(harness, cancel) -> None:
    harness.load(many(2))
    harness.world.script("dataset.d0").delay = 30  # returns early only if it honours the interrupt
    harness.world.script("dataset.d1").before = cancel.set
    result = harness.apply(harness.plan(), cancel=cancel, parallelism=2)
    assert statuses(result) == {"dataset.d0": "pending", "dataset.d1": "done"}
    assert result.cancelled
    d0 = harness.state().resources["dataset.d0"]
    assert d0.status is Status.PENDING and d0.pending.action == "create"
    # the next run adopts the work left running
    assert harness.plan().change("dataset.d0").reason is Reason.CREATE_BECAUSE_PENDING


def test_a_crash_mid_operation_leaves_a_trace_the_next_run_adopts(harness) -> None:
    def die() -> None:
        raise KeyboardInterrupt  # the process is going down: nothing catches this

    harness.world.script("adapter.ad").before = die
    harness.load()
    with pytest.raises(KeyboardInterrupt):
        harness.apply(harness.plan())
    ad = harness.state().resources["adapter.ad"]
    assert ad.status is Status.PENDING and ad.pending.action == "create"
    assert harness.store.current_lock() is None
    harness.world.script("adapter.ad").before = None
    plan = harness.plan()
    assert plan.change("adapter.ad").reason is Reason.CREATE_BECAUSE_PENDING
    assert plan.change("adapter.ad").physical_name == ad.physical_name
    assert harness.apply(plan).ok
    assert not harness.plan().has_changes


def test_a_plan_read_back_from_json_applies_the_same(harness) -> None:
    harness.load()
    plan = Plan.from_dict(json.loads(json.dumps(harness.plan().to_dict())))
    assert harness.apply(plan).ok
    assert harness.ops("create") == ["dataset.ds", "adapter.ad", "deployment.ep"]
    assert not harness.plan().has_changes


def test_a_pending_deployment_gets_its_expiry_when_it_finishes(harness) -> None:
    harness.world.script("deployment.ep").pending = True
    harness.converge()
    ep = harness.state().resources["deployment.ep"]
    assert ep.status is Status.PENDING and ep.expires_at is None
    harness.world.objects[ep.physical_name]["status"] = "ready"
    harness.tick(minutes=10)
    plan = harness.plan()
    assert "deployment.ep" in plan.refresh
    assert harness.apply(plan).ok
    ep = harness.state().resources["deployment.ep"]
    assert ep.status is Status.READY and ep.created_at == harness.now
    assert ep.expires_at == harness.now + timedelta(hours=8)


# --- refusing to apply --------------------------------------------------------------------------------------


def test_stale_plan_is_refused_naming_what_moved(harness) -> None:
    harness.converge()
    base = harness.spec.text
    harness.tick(minutes=5)
    harness.load(base.replace("ttl: 8h", "ttl: 9h"))
    stale = harness.plan()
    harness.tick(minutes=5)
    harness.load(base.replace("text_generation", "text_generation\n    tags: {a: b}"))
    assert harness.apply(harness.plan()).ok  # someone else applied meanwhile
    before = (harness.store.path.read_bytes(), len(harness.world.calls))
    with pytest.raises(StalePlanError) as refused:
        harness.apply(stale)
    d = refused.value.diagnostics[0]
    assert "the plan is stale: the state moved from serial 6 to 8" in d.summary
    assert "changed since: dataset.ds" in d.detail and "fastuner plan" in d.detail
    assert (harness.store.path.read_bytes(), len(harness.world.calls)) == before
    assert harness.store.current_lock() is None


def test_plan_made_before_any_state_is_stale_once_state_exists(harness) -> None:
    harness.load()
    first = harness.plan()
    harness.converge()
    with pytest.raises(StalePlanError, match="computed when no state existed"):
        harness.apply(first)


def test_plan_for_another_lineage_is_refused(harness) -> None:
    harness.converge()
    plan = harness.plan(replace=["dataset.ds"])
    harness.store.path.unlink()
    harness.load()
    harness.apply(harness.plan())  # a new state is born
    with pytest.raises(StalePlanError, match="another state"):
        harness.apply(plan)


def test_blocked_plan_is_refused_before_touching_anything(harness) -> None:
    harness.provider = memory_provider(harness.world, unsupported={"deployment": "endpoints are not supported"})
    harness.load()
    plan = harness.plan()
    assert [c.address for c in plan.blocked] == ["deployment.ep"]
    with pytest.raises(BlockedPlanError) as refused:
        harness.apply(plan)
    d = refused.value.diagnostics[0]
    assert "deployment.ep: endpoints are not supported" in d.detail and "Nothing was changed" in d.detail
    assert harness.world.calls == []
    assert harness.store.read() is None
    assert harness.store.current_lock() is None


# --- deleting -------------------------------------------------------------------------------------------------


def test_destroy_removes_everything_dependents_first(wide) -> None:
    assert wide.apply(wide.plan()).ok
    plan = wide.plan(destroy=True)
    assert plan.summary()["delete"] == 6
    start = len(wide.world.calls)
    result = wide.apply(plan, operation="destroy")
    assert result.ok and wide.state().resources == {} and wide.world.objects == {}
    order = [a for op, a, _ in wide.world.calls[start:] if op == "delete"]
    assert sorted(order) == sorted(["deployment.ep", "deployment.ep2", "adapter.ad", "adapter.ad2",
                                    "dataset.ds", "dataset.other"])
    for dependent, dependency in [("deployment.ep", "adapter.ad"), ("adapter.ad", "dataset.ds"),
                                  ("deployment.ep2", "adapter.ad2"), ("adapter.ad2", "dataset.other")]:
        assert order.index(dependent) < order.index(dependency)
    assert not wide.plan(destroy=True).has_changes


def test_a_failed_delete_keeps_what_it_depends_on(harness) -> None:
    harness.converge()
    harness.world.script("deployment.ep").fail_delete = "endpoint in use"
    result = harness.apply(harness.plan(destroy=True))
    got = by_address(result)
    assert got["deployment.ep"].status == "failed"
    assert got["adapter.ad"].status == got["dataset.ds"].status == "skipped"
    assert harness.ops("delete") == ["deployment.ep"]
    state = harness.state()
    assert set(state.resources) == {"dataset.ds", "adapter.ad", "deployment.ep"}
    assert state.resources["deployment.ep"].error == "endpoint in use"
    assert state.resources["deployment.ep"].pending is None


def test_ttl_expiry_leaves_a_tombstone_that_is_not_recreated(harness) -> None:
    harness.converge()
    phys = harness.state().resources["deployment.ep"].physical_name
    harness.tick(hours=9)
    plan = harness.plan()
    assert plan.change("deployment.ep").reason is Reason.DELETE_BECAUSE_TTL_EXPIRED
    assert harness.apply(plan).ok
    ep = harness.state().resources["deployment.ep"]
    assert ep.status is Status.EXPIRED
    assert ep.outputs == {"expired_at": harness.now.isoformat()}
    assert ep.expires_at == harness.now - timedelta(hours=1)
    assert phys not in harness.world.objects
    harness.tick(days=2)
    later = harness.plan()
    assert later.change("deployment.ep").reason is Reason.NOOP_BECAUSE_EXPIRED
    assert not later.has_changes
    calls = len(harness.world.calls)
    harness.apply(later)
    assert len(harness.world.calls) == calls


def test_a_renewed_deployment_gets_a_fresh_ttl(harness) -> None:
    harness.converge()
    harness.tick(hours=9)
    assert harness.apply(harness.plan()).ok
    harness.tick(days=2)
    plan = harness.plan(renew=["deployment.ep"])
    assert plan.change("deployment.ep").reason is Reason.CREATE_BECAUSE_RENEWED
    assert harness.apply(plan).ok
    ep = harness.state().resources["deployment.ep"]
    assert ep.status is Status.READY
    assert ep.created_at == harness.now and ep.expires_at == harness.now + timedelta(hours=8)
    assert not harness.plan().has_changes  # not deleted again as expired


def test_ttl_transitions_shortened_expired_reaped_restored_renewed(harness) -> None:
    """Every step of a deployment's lifetime with the clock moved by hand (issue 7, bug 2)."""
    harness.converge()  # running, ttl 8h from NOW
    base, created = harness.spec.text, harness.now
    harness.tick(seconds=30)
    harness.load(base.replace("ttl: 8h", "ttl: 1m"))  # shortened while young: an in-place update
    plan = harness.plan()
    assert plan.change("deployment.ep").reason is Reason.UPDATE_BECAUSE_CHANGED
    assert harness.apply(plan).ok
    assert harness.state().resources["deployment.ep"].expires_at == created + timedelta(minutes=1)
    harness.tick(minutes=5)
    plan = harness.plan()
    assert [(c.address, c.reason) for c in plan.changes if c.action is not Action.NOOP] == \
        [("deployment.ep", Reason.DELETE_BECAUSE_TTL_EXPIRED)]
    assert harness.apply(plan).ok  # reaped
    ep = harness.state().resources["deployment.ep"]
    assert ep.status is Status.EXPIRED and ep.inputs["ttl"] == "1m"
    assert ep.expires_at == created + timedelta(minutes=1) < harness.now  # when it really ended
    for days in (0, 3):  # stays down: the change that made it expire is not a renewal
        harness.tick(days=days)
        later = harness.plan()
        assert later.change("deployment.ep").reason is Reason.NOOP_BECAUSE_EXPIRED and not later.has_changes
    harness.load(base)  # ttl back to 8h, after the expiry: renews it
    plan = harness.plan()
    ep_change = plan.change("deployment.ep")
    assert (ep_change.reason, ep_change.detail) == (Reason.CREATE_BECAUSE_RENEWED, "ttl changed from 1m to 8h")
    assert harness.apply(plan).ok
    ep = harness.state().resources["deployment.ep"]
    assert ep.status is Status.READY and ep.expires_at == harness.now + timedelta(hours=8)
    assert not harness.plan().has_changes
    harness.tick(hours=9)  # expires again under 8h, and --renew brings it back
    assert harness.apply(harness.plan()).ok
    assert harness.state().resources["deployment.ep"].expires_at == harness.now - timedelta(hours=1)
    assert not harness.plan().has_changes
    plan = harness.plan(renew=["deployment.ep"])
    assert plan.change("deployment.ep").detail == "requested with --renew"
    assert harness.apply(plan).ok
    assert harness.state().resources["deployment.ep"].expires_at == harness.now + timedelta(hours=8)


def test_a_ttl_shortened_past_its_end_expires_and_stays_down(harness) -> None:
    harness.converge()
    base, created = harness.spec.text, harness.now
    harness.tick(hours=2)
    harness.load(base.replace("ttl: 8h", "ttl: 1m"))  # already over: the same plan expires it
    plan = harness.plan()
    assert plan.change("deployment.ep").reason is Reason.DELETE_BECAUSE_TTL_EXPIRED
    assert harness.apply(plan).ok
    ep = harness.state().resources["deployment.ep"]
    assert ep.inputs["ttl"] == "1m" and ep.expires_at == created + timedelta(minutes=1)
    later = harness.plan()
    assert later.change("deployment.ep").reason is Reason.NOOP_BECAUSE_EXPIRED and not later.has_changes


def test_idle_ttl_expiry_records_when_it_went_idle(harness) -> None:
    idle = harness.load().text.replace("ttl: 8h", "idle_ttl: 1h")
    harness.converge(idle)
    created = harness.now
    harness.tick(hours=3)
    plan = harness.plan()
    assert plan.change("deployment.ep").reason is Reason.DELETE_BECAUSE_IDLE_TTL_EXPIRED
    assert harness.apply(plan).ok
    ep = harness.state().resources["deployment.ep"]
    assert ep.status is Status.EXPIRED and ep.expires_at == created + timedelta(hours=1)
    assert not harness.plan().has_changes
    harness.load(idle.replace("idle_ttl: 1h", "idle_ttl: 2h"))
    assert harness.plan().change("deployment.ep").reason is Reason.CREATE_BECAUSE_RENEWED


def test_a_recreated_deployment_gets_a_fresh_ttl(harness) -> None:
    harness.converge()
    phys = harness.state().resources["deployment.ep"].physical_name
    harness.tick(hours=7)
    del harness.world.objects[phys]  # deleted outside fastuner
    plan = harness.plan()
    assert plan.change("deployment.ep").reason is Reason.CREATE_BECAUSE_MISSING
    assert harness.apply(plan).ok
    ep = harness.state().resources["deployment.ep"]
    assert ep.created_at == harness.now and ep.expires_at == harness.now + timedelta(hours=8)
    harness.tick(hours=2)
    assert not harness.plan().has_changes


# --- persistence failures, refresh ------------------------------------------------------------------------


def test_failing_to_persist_state_is_fatal(harness) -> None:
    def write_behind_its_back() -> None:
        harness.store.write(harness.store.read())  # another writer without the lock

    harness.world.script("adapter.ad").before = write_behind_its_back
    harness.load()
    with pytest.raises(UserError, match="changed underneath"):
        harness.apply(harness.plan())
    assert "deployment.ep" not in harness.ops()
    assert harness.store.current_lock() is None


def test_ledger_keeps_its_state_when_a_write_fails(tmp_path) -> None:
    class Refusing:
        def write(self, state):
            raise UserError("disk full")

    state = empty_state("demo", "default")
    ledger = Ledger(Refusing(), state)
    with pytest.raises(UserError, match="disk full"):
        ledger.mutate(lambda s: setattr(s, "project", "changed"))
    assert ledger.state is state and state.project == "demo" and ledger.writes == 0


def test_plan_for_another_project_or_workspace_is_refused(harness) -> None:
    harness.converge()
    plan = harness.plan()
    with pytest.raises(StalePlanError, match="for project other"):
        harness.apply(dataclasses.replace(plan, project="other"))
    with pytest.raises(StalePlanError, match="for workspace staging"):
        harness.apply(dataclasses.replace(plan, workspace="staging"))


class _Unreadable(ResourceProvider):
    kind = "adapter"

    def read(self, rs):
        raise ProviderError("access denied to training jobs", "allow sagemaker:ListTrainingJobs")


def test_refresh_reports_a_provider_read_error_per_resource(harness) -> None:
    harness.converge()
    provider = Provider(name="memory", resources={**harness.provider.resources, "adapter": _Unreadable()})
    with pytest.raises(DiagnosticsError) as info:
        refresh(harness.spec, harness.state(), provider)
    [d] = info.value.diagnostics
    assert d.summary == "adapter.ad: cannot read it: access denied to training jobs"
    assert d.detail == "allow sagemaker:ListTrainingJobs" and d.address == "adapter.ad"


class _Listing(MemoryResources):
    """Reads every resource of its kind with one call, as a cloud provider's List call does."""

    def __init__(self, kind, world) -> None:
        super().__init__(kind, world)
        self.batches: list[list[str]] = []

    def read(self, rs):
        raise AssertionError("refresh reads a kind with read_many")

    def read_many(self, states):
        self.batches.append([rs.address for rs in states])
        return {rs.address: MemoryResources.read(self, rs) for rs in states}


def test_refresh_reads_each_kind_with_one_read_many(harness) -> None:
    harness.converge()
    listing = {k: _Listing(k, harness.world) for k in ("dataset", "adapter", "deployment")}
    observed = refresh(harness.spec, harness.state(), Provider(name="memory", resources=listing))
    assert [b for r in listing.values() for b in r.batches] == [["dataset.ds"], ["adapter.ad"], ["deployment.ep"]]
    assert list(observed.resources) == list(harness.state().resources)  # in state's order
    assert {o.status for o in observed.resources.values()} == {"ready"}


def test_refresh_hashes_sources_and_skips_tombstones(harness) -> None:
    harness.converge()
    harness.tick(hours=9)
    harness.apply(harness.plan())
    observed = refresh(harness.spec, harness.state(), harness.provider)
    assert set(observed.resources) == {"dataset.ds", "adapter.ad"}  # the expired deployment is not read
    assert observed.dataset_sources == {"ds": hashlib.sha256(b"row 1\n").hexdigest()}
    assert observed.training_code_hash == "memory"


def test_refresh_reports_a_missing_dataset_file_at_its_path(harness) -> None:
    spec = harness.load()
    (harness.root / "data" / "ds.jsonl").unlink()
    with pytest.raises(DiagnosticsError) as info:
        refresh(spec, harness.state(), harness.provider)
    [d] = info.value.diagnostics
    assert d.summary == "dataset.ds: file not found: data/ds.jsonl"
    assert (d.source.line, d.source.column) == (5, 11)


def test_group_commit_persists_every_mutation_and_isolates_a_failing_one(tmp_path) -> None:
    """Concurrent mutations share writes, each caller returns only once its own change is on disk,
    and a transition that raises fails alone."""
    from fastuner.engine.ledger import Ledger
    from fastuner.state.local import LocalStateStore
    from fastuner.state.model import ResourceState

    store = LocalStateStore(tmp_path / "s.json")
    ledger = Ledger(store, store.write(empty_state("demo", "default")))
    errors: list[BaseException] = []

    def add(i: int) -> None:
        def fn(s) -> None:
            if i == 7:
                raise KeyError("boom")
            s.resources[f"dataset.d{i}"] = ResourceState(address=f"dataset.d{i}", kind="dataset", name=f"d{i}")

        try:
            written = ledger.mutate(fn)
        except KeyError as exc:
            errors.append(exc)
            return
        on_disk = store.read()
        if f"dataset.d{i}" not in on_disk.resources or on_disk.serial < written.serial:
            errors.append(AssertionError(f"d{i} returned before its change was on disk"))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.read()
    assert [type(e) for e in errors] == [KeyError] and sorted(final.resources) == sorted(f"dataset.d{i}" for i in range(24) if i != 7)
    assert final.serial - 1 == ledger.writes <= 23


def test_group_commit_survives_readers_racing_the_writes(tmp_path) -> None:
    """Hundreds of rounds of concurrent mutations while other threads read the same store: a read that
    overlaps a write (bytes of one version, stat of the next) must never make the next write refuse
    with "it changed underneath". Fails within a few hundred writes on a store that reads the file and
    stats the path separately."""
    from fastuner.engine.ledger import Ledger
    from fastuner.state.local import LocalStateStore
    from fastuner.state.model import ResourceState

    store = LocalStateStore(tmp_path / "s.json")
    ledger = Ledger(store, store.write(empty_state("demo", "default")))
    errors: list[BaseException] = []
    stop = threading.Event()
    rounds, writers = 100, 3

    def write(w: int) -> None:
        try:
            for r in range(rounds):
                name = f"dataset.w{w}r{r}"
                ledger.mutate(lambda s, name=name: s.resources.__setitem__(
                    name, ResourceState(address=name, kind="dataset", name=name)))
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        while not stop.is_set():
            store.read()

    readers = [threading.Thread(target=read) for _ in range(2)]
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in readers + threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    final = store.read()
    assert len(final.resources) == rounds * writers
    assert final.serial - 1 == ledger.writes
