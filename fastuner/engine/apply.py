"""Apply: carry out exactly the plan, persisting state after every resource operation.

Order: forward work (create, update, replace) starts as soon as the resource's dependencies in this
plan are done, up to `parallelism` at a time; then deletes (removed resources, expired deployments,
and the old instances of replacements) run dependents first. Before each operation the resource is
marked pending in state, so a crash leaves a trace and the next run adopts the work (names are
deterministic). A failure fails only its descendants; independent work completes. When `cancel` is
set (the first Ctrl-C) nothing new starts; running operations see `ctx.cancelled` and return. The state
lock is checked before each operation starts and while operations run (`StateStore.check_lock`): once
it is lost (a lease taken over, not renewed, or the lock object deleted), nothing new starts, running
operations see `ctx.cancelled` as on Ctrl-C (one waiting for a training job stops waiting and is recorded
as pending, so a run without the lock does not wait on for hours), and the run fails. A state write that
fails (persisting is never optional) stops the run the same way, and `apply_plan` raises its error once
the running operations have returned: never a bug report, whichever write it was.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from fastuner.config.sensitive import Sensitive
from fastuner.engine.events import NullReporter, Reporter, Result
from fastuner.engine.ledger import Ledger
from fastuner.errors import DiagnosticsError, UserError
from fastuner.plan.model import Action, Change, Plan, Reason, recorded_expiry
from fastuner.plan.observed import ObservationStatus
from fastuner.plan.pricing import cost_record
from fastuner.plan.status import ApplyOutcome, ResultStatus
from fastuner.providers.base import Context, Outcome, OutcomeStatus, Provider, ProviderError, utcnow
from fastuner.state.model import Deposed, Operation, ResourceState, State, Status, Trained, empty_state
from fastuner.state.store import LockLostError, StateStore

FORWARD = (Action.CREATE, Action.UPDATE, Action.REPLACE)


class StalePlanError(UserError):
    pass


class BlockedPlanError(UserError):
    pass


class PolicyRefusedError(UserError):
    """A plan that breaks the policy reached the engine (the CLI refuses it before, with exit 3): the
    engine never carries one out either."""


@dataclass
class ApplyResult:
    results: list[Result] = field(default_factory=list)
    bugs: list[tuple[str, BaseException, str]] = field(default_factory=list)
    cancelled: bool = False
    state: State | None = None
    lock_lost: str = ""  # why the state lock was lost, when that stopped new work

    def count(self, status: ResultStatus) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return not self.bugs and self.count(ResultStatus.FAILED) == 0 and self.count(ResultStatus.SKIPPED) == 0 \
            and not self.cancelled and not self.lock_lost

    @property
    def outcome(self) -> ApplyOutcome:
        """Failed before interrupted: a run that was both reports the failure, which needs fixing."""
        if self.bugs or self.lock_lost or self.count(ResultStatus.FAILED) or self.count(ResultStatus.SKIPPED):
            return ApplyOutcome.FAILED
        if self.cancelled or self.count(ResultStatus.CANCELLED):
            return ApplyOutcome.INTERRUPTED
        return ApplyOutcome.COMPLETE


def check_fresh(plan: Plan, state: State) -> None:
    """Refuse a plan computed against another state, or against this one before it changed."""
    if state.project and plan.project != state.project:
        raise StalePlanError(f"the plan is for project {plan.project}, the state for {state.project}")
    if plan.workspace != state.workspace:
        raise StalePlanError(f"the plan is for workspace {plan.workspace}, the state for {state.workspace}")
    if plan.lineage is None:
        if state.serial != 0:
            raise StalePlanError(
                "the plan is stale: it was computed when no state existed, and the state now has "
                f"serial {state.serial}", "Run `fastuner plan` again." + _moved(plan, state))
        return
    if state.lineage != plan.lineage:
        raise StalePlanError(f"the plan belongs to another state (lineage {plan.lineage}, state {state.lineage})",
                             "Run `fastuner plan` again against this state.")
    if state.serial != plan.serial:
        raise StalePlanError(
            f"the plan is stale: the state moved from serial {plan.serial} to {state.serial} since it was made",
            "Run `fastuner plan` again." + _moved(plan, state))


def _moved(plan: Plan, state: State) -> str:
    try:
        made = datetime.fromisoformat(plan.created_at)
    except ValueError:
        return ""
    moved = sorted(a for a, rs in state.resources.items() if rs.updated_at and rs.updated_at > made)
    planned = {c.address for c in plan.changes}
    gone = sorted(a for a in planned if a not in state.resources and any(
        c.address == a and c.action is not Action.CREATE for c in plan.changes))
    parts = []
    if moved:
        parts.append("changed since: " + ", ".join(moved))
    if gone:
        parts.append("no longer in state: " + ", ".join(gone))
    return (" " + "; ".join(parts) + ".") if parts else ""


def apply_plan(plan: Plan, store: StateStore, provider: Provider, *, spec_dir: Path, parallelism: int = 10,
               reporter: Reporter | None = None, cancel: threading.Event | None = None, wait_for: bool = True,
               clock: Callable[[], datetime] = utcnow, operation: str = "apply",
               sensitive: Sensitive | None = None) -> ApplyResult:
    """`sensitive`: the values of the run's sensitive variables (config/sensitive.py). A plan holds
    them as markers, and so does state; a provider is handed them revealed, and what it returns is
    masked again before it is recorded."""
    reporter = reporter or NullReporter()
    cancel = cancel or threading.Event()
    with store.lock(operation):
        state = store.read() or empty_state(plan.project, plan.workspace)
        check_fresh(plan, state)
        blocked = plan.blocked
        if blocked:
            raise BlockedPlanError(
                f"this plan cannot be applied by the {plan.provider} provider yet",
                "\n".join(f"{c.address}: {c.blocked}" for c in blocked) + "\nNothing was changed.")
        if plan.violations:
            raise PolicyRefusedError(
                "this plan breaks the policy and is never applied",
                "\n".join(f"{v.rule}: {v.address or 'the plan'} {v.detail}" for v in plan.violations)
                + "\nNothing was changed.")
        sensitive = sensitive or Sensitive()
        clear = {id(c): dataclasses.replace(c, after=sensitive.reveal(c.after)) if c.after else c
                 for c in plan.changes if c.action in FORWARD}  # a marker this run cannot reveal fails here
        ledger = Ledger(store, state)
        if plan.refresh:
            ledger.mutate(lambda s: _record_refresh(s, plan, clock()))
        run = _Run(plan, ledger, provider, spec_dir, parallelism, reporter, cancel, wait_for, clock, store.check_lock)
        run.clear, run.sensitive = clear, sensitive
        run.forward()
        if run.unsaved is None:
            run.deletes()
        if run.unsaved is not None:  # after the running operations returned: none is left behind
            raise run.unsaved
        run.result.state = ledger.state
        run.result.cancelled = cancel.is_set()
        return run.result


def _record_refresh(state: State, plan: Plan, now: datetime) -> None:
    """What refresh saw, written into state (for a --refresh-only plan, a failure or a resource that
    no longer exists too); work that finished gets the expiry the planner decided."""
    for address, rec in plan.refresh.items():
        rs = state.resources.get(address)
        if rs is None:
            continue
        if rec.get("forget"):
            del state.resources[address]
            continue
        rs.outputs = dict(rec.get("outputs", rs.outputs))
        cost = cost_record(rs.outputs.get("cost") or {}, rs.outputs)  # a job left running reports its bill here
        if cost is not None:
            rs.outputs["cost"] = cost
        if rec.get("status") == ObservationStatus.FAILED:
            rs.status = Status.FAILED
            rs.pending = None
            rs.error = rec.get("error")
        if rec.get("status") == ObservationStatus.READY and rs.status is Status.PENDING:
            rs.status = Status.READY
            rs.pending = None
            new = rs.created_at is None
            rs.created_at = rs.created_at or now
            rs.expires_at = recorded_expiry(rec.get("expires_at"), plan.created_at, rs.created_at, new=new)
        rs.updated_at = now


class _Run:
    def __init__(self, plan: Plan, ledger: Ledger, provider: Provider, spec_dir: Path, parallelism: int,
                 reporter: Reporter, cancel: threading.Event, wait_for: bool, clock: Callable[[], datetime],
                 check_lock: Callable[[], None]) -> None:
        self.plan = plan
        self.ledger = ledger
        self.provider = provider
        self.spec_dir = spec_dir
        self.parallelism = max(1, parallelism)
        self.reporter = reporter
        self.cancel = cancel
        self.wait_for = wait_for
        self.clock = clock
        self.check_lock = check_lock
        # what running operations see as `ctx.cancelled`: Ctrl-C (`cancel`) or the state lock lost
        self.halt = threading.Event()
        self.unsaved: UserError | None = None  # the failed state write that stopped the run
        self.result = ApplyResult()
        self.outcome: dict[str, ResultStatus] = {}  # address -> what became of its change
        self.replaced: list[str] = []
        self.clear: dict[int, Change] = {}  # id of a forward change -> it as its provider sees it
        self.sensitive = Sensitive()

    # --- scheduling ----------------------------------------------------------------------------

    def forward(self) -> None:
        """In the plan's create waves, each change as soon as what it depends on in this plan is done
        (the dependencies the planner recorded on it; nothing is derived again here)."""
        rank = {a: i for i, a in enumerate(a for wave in self.plan.waves for a in wave)}
        by_address = {c.address: c for c in self.plan.changes if c.action in FORWARD}
        waiting = {a: {d for d in c.depends_on if d in by_address} for a, c in by_address.items()}
        self._schedule(by_address, waiting, rank, self._forward_one)

    def deletes(self) -> None:
        changes = []
        for c in self.plan.changes:
            if c.action is not Action.DELETE:
                continue
            if c.deposed is not None and self._dependents_unsettled(c.address):
                self.reporter.notice(f"{c.address}: keeping old instance {c.deposed} until its dependents are "
                                     "updated (the next apply deletes it)")
                continue
            changes.append(c)
        # the old instances of resources replaced in this run, deleted after their dependents moved on
        for address in self.replaced:
            rs = self.ledger.state.get(address)
            for old in rs.deposed if rs else []:
                if self._dependents_unsettled(address):
                    self.reporter.notice(f"{address}: keeping old instance {old.physical_name} until its "
                                         "dependents are updated (the next apply deletes it)")
                    continue
                change = self.plan.change(address)
                changes.append(Change(address=address, kind=change.kind, name=change.name, action=Action.DELETE,
                                      reason=Reason.DELETE_BECAUSE_DEPOSED, detail="old instance of the replacement",
                                      before=old.inputs, depends_on=change.depends_on, identity=old.identity,
                                      physical_name=old.physical_name, deposed=old.physical_name or ""))
        rank = {a: i for i, a in enumerate(a for w in self.plan.destroy_waves for a in w)}
        changes.sort(key=lambda c: (rank.get(c.address, -1), c.address))
        keys = [f"{c.address}#{c.deposed}" if c.deposed is not None else c.address for c in changes]
        by_key = dict(zip(keys, changes, strict=True))
        deleting = {c.address for c in changes if c.deposed is None}
        # a resource is deleted only after everything in this phase that depends on it
        waiting = {k: {kk for kk, cc in by_key.items() if cc.deposed is None and c.address in cc.depends_on
                       and cc.address in deleting and kk != k}
                   for k, c in by_key.items()}
        order = {k: i for i, k in enumerate(keys)}
        self._schedule(by_key, waiting, order, self._delete_one)

    def _schedule(self, items: dict[str, Change], waiting: dict[str, set[str]], order: dict[str, int],
                  work: Callable[[Change], Result]) -> None:
        pending = dict(waiting)
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="fastuner") as pool:
            while pending or running:
                for key in sorted((k for k, deps in pending.items() if not deps), key=order.__getitem__):
                    if len(running) >= self.parallelism or self.cancel.is_set() or not self._may_go_on():
                        break
                    del pending[key]
                    running[pool.submit(self._guard, work, items[key])] = key
                if running and (self.cancel.is_set() or not self._may_go_on()):
                    self.halt.set()  # running operations stop waiting
                if self.cancel.is_set() or self.result.lock_lost or self.unsaved:
                    status, why = ((ResultStatus.SKIPPED, "not started: the state lock was lost")
                                   if self.result.lock_lost else
                                   (ResultStatus.SKIPPED, "not started: the state could not be written")
                                   if self.unsaved else (ResultStatus.CANCELLED, "not started: interrupted"))
                    for key in sorted(pending, key=order.__getitem__):
                        self._finish(items[key], Result(items[key].address, str(items[key].action), status, why))
                    pending.clear()
                if not running:
                    if pending:  # only blocked items remain: their upstream failed or is pending
                        key = min(pending, key=order.__getitem__)
                        self._skip(items[key], pending, items)
                    continue
                done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                for fut in done:
                    key = running.pop(fut)
                    result = fut.result()
                    self._finish(items[key], result)
                    for deps in pending.values():
                        deps.discard(key)
                    if result.status is not ResultStatus.DONE:
                        for other in [k for k, deps in pending.items() if self._blocked_by(k, key, items)]:
                            self._skip(items[other], pending, items, cause=(key, result.status))

    def _may_go_on(self) -> bool:
        """Whether work may start or go on: the state is being written, and the lock is still held."""
        return self.unsaved is None and self._lock_held()

    def _lock_held(self) -> bool:
        """Asked before each operation starts; once the lock is lost, no operation starts again."""
        if not self.result.lock_lost:
            try:
                self.check_lock()
            except LockLostError as exc:
                self.result.lock_lost = exc.reason
                self.reporter.notice(f"{exc.diagnostics[0].summary}. {exc.diagnostics[0].detail}")
        return not self.result.lock_lost

    @staticmethod
    def _blocked_by(key: str, failed: str, items: Mapping[str, Change]) -> bool:
        return items[failed].address in items[key].depends_on

    def _skip(self, change: Change, pending: dict[str, set[str]], items: Mapping[str, Change],
              cause: tuple[str, ResultStatus] | None = None) -> None:
        key = next(k for k, c in items.items() if c is change)
        if key not in pending:
            return
        del pending[key]
        if cause and cause[1] is ResultStatus.PENDING:
            msg = f"deferred: {items[cause[0]].address} is still in progress"
        elif cause:
            msg = f"skipped: upstream failed ({items[cause[0]].address})"
        else:
            msg = "skipped: upstream did not complete"
        status = ResultStatus.DEFERRED if cause and cause[1] is ResultStatus.PENDING else ResultStatus.SKIPPED
        self._finish(change, Result(change.address, str(change.action), status, msg))
        for other in [k for k in pending if self._blocked_by(k, key, items)]:
            self._skip(items[other], pending, items, cause=cause or (key, ResultStatus.FAILED))  # name the root cause

    def _finish(self, change: Change, result: Result) -> None:
        self.outcome[change.address] = result.status
        self.result.results.append(result)
        self.reporter.finished(change, result)

    def _guard(self, work: Callable[[Change], Result], change: Change) -> Result:
        start = time.monotonic()
        self.reporter.started(change)
        try:
            return work(change)
        except ProviderError as exc:
            return Result(change.address, str(change.action), ResultStatus.FAILED, str(exc), time.monotonic() - start,
                          change.deposed)
        except DiagnosticsError as exc:
            if self.ledger.unsaved is not None and isinstance(exc, UserError):  # the state could not be written
                return self._unsaved(change, exc, time.monotonic() - start)
            try:  # a user error of a layer below the provider (a full disk under the store): it failed
                self._record_failure(change, str(exc))
            except UserError as again:
                return self._unsaved(change, again, time.monotonic() - start)
            return Result(change.address, str(change.action), ResultStatus.FAILED, str(exc), time.monotonic() - start,
                          change.deposed)
        except Exception as exc:  # a bug: recorded, reported with its traceback, never silently lost
            self.result.bugs.append((change.address, exc, traceback.format_exc()))
            self._record_failure(change, f"internal error: {exc!r}")
            return Result(change.address, str(change.action), ResultStatus.FAILED, f"internal error: {exc!r}",
                          time.monotonic() - start, change.deposed)

    def _unsaved(self, change: Change, exc: UserError, took: float) -> Result:
        """Persisting state is never optional: once a write fails, nothing new starts, running operations
        stop waiting (work left running stays pending in the last state written, for the next run to
        adopt), and `apply_plan` raises the error when they have returned."""
        d = exc.diagnostics[0]
        why = f"{d.summary}{f' — {d.detail}' if d.detail else ''}"
        if self.unsaved is None:
            self.unsaved = exc
        self.halt.set()
        return Result(change.address, str(change.action), ResultStatus.FAILED, f"not recorded in state: {why}", took,
                      change.deposed)

    def _ctx(self, change: Change) -> Context:
        state = self.ledger.state
        upstream = {d: state.resources[d] for d in change.depends_on if d in state.resources}
        return Context(address=change.address, spec_dir=self.spec_dir, upstream=upstream,
                       progress=lambda text: self.reporter.progress(change.address, text),
                       warning=lambda text: self.reporter.notice(f"{change.address}: warning: {text}"),
                       cancelled=self.halt, wait=self.wait_for, now=self.clock,
                       referenced=lambda: referenced_values(self.ledger.state, change.address, change.deposed))

    def _dependents_unsettled(self, address: str) -> bool:
        for c in self.plan.changes:
            if address in c.depends_on and c.action in FORWARD and self.outcome.get(c.address) is not ResultStatus.DONE:
                return True
        return False

    # --- one operation -------------------------------------------------------------------------

    def _forward_one(self, change: Change) -> Result:
        start = time.monotonic()
        provider = self.provider.for_kind(change.kind)
        now = self.clock()
        if change.action is Action.UPDATE:
            prior = self.ledger.state.get(change.address)
            self.ledger.mutate(lambda s: _mark_pending(s, change, "update", now))
            try:
                outcome = provider.update(self.clear.get(id(change), change), prior, self._ctx(change))
            except ProviderError as exc:
                self._record_failure(change, str(exc))
                raise
            self._record(change, outcome)
            return Result(change.address, str(change.action), ResultStatus.DONE, "", time.monotonic() - start)

        self.ledger.mutate(lambda s: _mark_pending(s, change, "create", now))
        try:
            outcome = provider.create(self.clear.get(id(change), change), self._ctx(change))
        except ProviderError as exc:
            self._record_failure(change, str(exc))
            raise
        self._record(change, outcome)
        if change.action is Action.REPLACE:
            self.replaced.append(change.address)
        if outcome.status is OutcomeStatus.PENDING:
            return Result(change.address, str(change.action), ResultStatus.PENDING,
                          outcome.detail or "started; the next plan or apply picks up the result",
                          time.monotonic() - start)
        return Result(change.address, str(change.action), ResultStatus.DONE, "", time.monotonic() - start)

    def _record(self, change: Change, outcome: Outcome) -> None:
        """Record the outcome; then delete the kept results it pushed out of the adapter cache."""
        evicted: list[Trained] = []
        if self.sensitive:  # outputs that echo an input (a tag, a URL) record its marker, as the inputs do
            outcome = dataclasses.replace(outcome, outputs=self.sensitive.mask(dict(outcome.outputs)))
        self.ledger.mutate(lambda s: evicted.extend(
            _record_outcome(s, change, outcome, self.clock(), planned_at=self.plan.created_at,
                            keep=self.provider.keep_previous)))
        rs = self.ledger.state.get(change.address)
        live = {rs.physical_name, *(d.physical_name for d in rs.deposed)} if rs else set()
        provider = self.provider.for_kind(change.kind)
        for old in evicted:
            if old.physical_name in live:
                continue  # still an instance: its own deletion removes it, once nothing uses it
            gone = ResourceState(address=change.address, kind=change.kind, name=change.name, identity=old.identity,
                                 physical_name=old.physical_name, outputs={"artifact": old.artifact})
            ctx = dataclasses.replace(self._ctx(change), referenced=lambda: referenced_values(self.ledger.state))
            try:
                provider.delete(gone, ctx)
            except ProviderError as exc:  # a leftover file, not a failed resource
                self.reporter.notice(f"{change.address}: could not delete the kept run {old.physical_name}: {exc}")

    def _delete_one(self, change: Change) -> Result:
        start = time.monotonic()
        provider = self.provider.for_kind(change.kind)
        state = self.ledger.state
        rs = state.get(change.address)
        if rs is None:
            return Result(change.address, "delete", ResultStatus.DONE, "already gone from state", 0.0, change.deposed)
        if change.deposed is not None:
            old = next((d for d in rs.deposed if (d.physical_name or "") == change.deposed), None)
            if old is None:
                return Result(change.address, "delete", ResultStatus.DONE, "old instance already deleted", 0.0, change.deposed)
            provider.delete(rs.deposed_state(old), self._ctx(change))
            self.ledger.mutate(lambda s: _drop_deposed(s, change.address, change.deposed))
            return Result(change.address, "delete", ResultStatus.DONE, f"old instance {change.deposed}",
                          time.monotonic() - start, change.deposed)
        users = sorted(a for a, other in state.resources.items()
                       if change.address in other.depends_on and other.status is not Status.EXPIRED
                       and self.outcome.get(a) is not ResultStatus.DONE and a != change.address)
        if users:
            return Result(change.address, "delete", ResultStatus.SKIPPED, f"skipped: still used by {', '.join(users)}",
                          0.0)
        now = self.clock()
        self.ledger.mutate(lambda s: _mark_pending(s, change, "delete", now))
        try:
            for old in list(rs.deposed):
                provider.delete(rs.deposed_state(old), self._ctx(change))
            provider.delete(rs, self._ctx(change))
        except ProviderError as exc:
            self._record_failure(change, str(exc))
            raise
        expire = change.reason in (Reason.DELETE_BECAUSE_TTL_EXPIRED, Reason.DELETE_BECAUSE_IDLE_TTL_EXPIRED)
        self.ledger.mutate(lambda s: _record_deleted(s, change, expire, self.clock()))
        return Result(change.address, "delete", ResultStatus.DONE, "", time.monotonic() - start)

    def _record_failure(self, change: Change, message: str) -> None:
        self.ledger.mutate(lambda s: _mark_failed(s, change, message, self.clock()))


# --- state transitions (pure functions of the draft state) --------------------------------------


def _mark_pending(state: State, change: Change, op: str, now: datetime) -> None:
    rs = state.resources.get(change.address)
    if op == "create":
        if rs is None:
            rs = ResourceState(address=change.address, kind=change.kind, name=change.name)
            state.resources[change.address] = rs
        elif rs.physical_name and rs.physical_name != change.physical_name and rs.status is not Status.EXPIRED:
            rs.deposed.append(Deposed(physical_name=rs.physical_name, identity=rs.identity, inputs=rs.inputs,
                                      outputs=rs.outputs, created_at=rs.created_at))
            _keep(rs)
            rs.outputs = {}
        # an old instance awaiting deletion under this very name is this instance again (a revert): keep it
        rs.deposed = [d for d in rs.deposed if d.physical_name != change.physical_name]
        rs.created_at = None  # a new instance (replaced, recreated, renewed): its ttl starts when it is ready
        rs.status = Status.PENDING
        rs.identity = change.identity
        rs.generation = change.generation
        rs.physical_name = change.physical_name
        rs.inputs = dict(change.after or {})
        rs.depends_on = list(change.depends_on)
        rs.error = None
        if rs.status is Status.PENDING and change.reason is Reason.CREATE_BECAUSE_RENEWED:
            rs.expires_at = None
    if rs is None:
        return
    rs.pending = Operation(action=op, started_at=now, run_id=change.physical_name)
    rs.updated_at = now


def _record_outcome(state: State, change: Change, outcome: Outcome, now: datetime, *, planned_at: str,
                    keep: int = 3) -> list[Trained]:
    """Record what the operation produced and the expiry the planner decided (at `planned_at`); returns
    the kept results pushed out of the history (the current instance is never in it, and at most `keep`
    earlier ones are)."""
    rs = state.resources[change.address]
    rs.outputs = {**(rs.outputs if change.action is Action.UPDATE else {}), **outcome.outputs}
    cost = cost_record(change.cost, rs.outputs)  # the plan's estimate, and what the job cost once billed
    if cost is not None:
        rs.outputs["cost"] = cost
    rs.updated_at = now
    rs.error = None
    if change.action is Action.UPDATE:
        rs.inputs = dict(change.after or {})
        rs.depends_on = list(change.depends_on)
        rs.pending = None
    elif outcome.status is OutcomeStatus.READY:
        rs.status = Status.READY
        rs.pending = None
        rs.created_at = rs.created_at or now
    else:
        rs.status = Status.PENDING
        if rs.pending is not None:
            rs.pending.detail = dict(outcome.outputs)
    rs.expires_at = recorded_expiry(change.expires_at, planned_at, rs.created_at, new=change.action is not Action.UPDATE)
    rs.history = [t for t in rs.history if t.identity != rs.identity or rs.status is not Status.READY]
    evicted, rs.history = rs.history[keep:], rs.history[:keep]
    return evicted


def _keep(rs: ResourceState) -> None:
    """Put the instance being replaced at the head of the history if its result is in the store."""
    artifact = rs.outputs.get("artifact")
    if rs.status is not Status.READY or not artifact or not rs.physical_name:
        return
    rs.history = [Trained(identity=rs.identity, generation=rs.generation, physical_name=rs.physical_name,
                          artifact=dict(artifact), outputs=dict(rs.outputs), created_at=rs.created_at),
                  *(t for t in rs.history if t.identity != rs.identity)]


def _mark_failed(state: State, change: Change, message: str, now: datetime) -> None:
    rs = state.resources.get(change.address)
    if rs is None:
        return
    rs.pending = None
    rs.error = message
    rs.updated_at = now
    if change.action in (Action.CREATE, Action.REPLACE) and change.deposed is None:
        rs.status = Status.FAILED


def _record_deleted(state: State, change: Change, expire: bool, now: datetime) -> None:
    rs = state.resources.get(change.address)
    if rs is None:
        return
    if expire:  # the planner decided it: keep when it ended and the lifetime it ended under
        rs.status = Status.EXPIRED
        rs.pending = None
        # the estimate stays: `fastuner cost` bills the endpoint from its creation to this moment
        rs.outputs = {"expired_at": now.isoformat(), **({"cost": rs.outputs["cost"]} if "cost" in rs.outputs else {})}
        rs.deposed = []
        rs.updated_at = now
        rs.inputs = {**rs.inputs, **(change.after or {})}  # the planner's `after`: the lifetime it ended under
        rs.expires_at = datetime.fromisoformat(change.expires_at) if change.expires_at else now
    else:
        del state.resources[change.address]


def _drop_deposed(state: State, address: str, physical_name: str) -> None:
    rs = state.resources.get(address)
    if rs is not None:
        rs.deposed = [d for d in rs.deposed if (d.physical_name or "") != physical_name]


def referenced_values(state: State, exclude: str | None = None, deposed: str | None = None) -> set[str]:
    """Every string that state still points at: in current outputs, old instances awaiting deletion,
    kept earlier results (history) and operations in flight. Among them are the object-store keys still
    in use; which strings are keys is the store's business, so a provider deletes only its own keys that
    are not in this set. `exclude` leaves out one resource being deleted, or with `deposed` only that
    old instance of it."""
    values: set[str] = set()
    for address, rs in state.resources.items():
        if address == exclude and deposed is None:
            continue
        _collect_strings(rs.outputs, values)
        _collect_strings(rs.pending.detail if rs.pending else {}, values)
        for old in rs.deposed:
            if address != exclude or (old.physical_name or "") != deposed:
                _collect_strings(old.outputs, values)
        for kept in rs.history:
            _collect_strings(kept.artifact, values)
    return values


def _collect_strings(value, values: set[str]) -> None:
    if isinstance(value, str):
        values.add(value)
    elif isinstance(value, dict):
        for v in value.values():
            _collect_strings(v, values)
    elif isinstance(value, list):
        for v in value:
            _collect_strings(v, values)
