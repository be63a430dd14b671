"""An in-memory provider whose behaviour tests can script: failures, pending work, drift, delays.

It keeps to the provider contract (deterministic names, idempotent create and delete) and records every
call, so engine tests assert on what the engine asked for, not on the fake's replies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastuner.config.kinds import KINDS
from fastuner.plan.model import Change
from fastuner.plan.observed import Observation, ObservationStatus
from fastuner.providers.base import Context, Outcome, OutcomeStatus, Provider, ProviderError, ResourceProvider
from fastuner.state.model import ResourceState


@dataclass
class Script:
    """How the fake behaves for one address."""

    fail_create: str | None = None
    fail_update: str | None = None
    fail_delete: str | None = None
    pending: bool = False  # create returns pending (like --no-wait training)
    delay: float = 0.0  # seconds an operation takes (polls ctx.cancelled)
    before: Callable[[], None] | None = None  # hook run at the start of an operation
    reports: dict[str, Any] = field(default_factory=dict)  # extra outputs the work reports (billed seconds, …)


@dataclass
class MemoryWorld:
    """The "cloud": objects by physical name, plus the log of calls."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (op, address, physical name)
    scripts: dict[str, Script] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: dict[str, int] = field(default_factory=dict)
    max_concurrent: int = 0

    def script(self, address: str) -> Script:
        return self.scripts.setdefault(address, Script())

    def _enter(self, op: str, address: str, phys: str) -> None:
        with self.lock:
            self.calls.append((op, address, phys))
            self.running[address] = 1
            self.max_concurrent = max(self.max_concurrent, len(self.running))

    def _leave(self, address: str) -> None:
        with self.lock:
            self.running.pop(address, None)


class MemoryResources(ResourceProvider):
    def __init__(self, kind: str, world: MemoryWorld) -> None:
        self.kind = kind
        self.world = world

    def read(self, rs: ResourceState) -> Observation:
        obj = self.world.objects.get(rs.physical_name or "")
        if obj is None:
            return Observation(ObservationStatus.MISSING, detail=f"{rs.physical_name} does not exist")
        return Observation(ObservationStatus(obj.get("status", "ready")), outputs=obj.get("outputs", {}))

    def create(self, change: Change, ctx: Context) -> Outcome:
        return self._run("create", change.address, change.physical_name or change.address, ctx,
                         lambda s: s.fail_create, change.after or {})

    def update(self, change: Change, prior: ResourceState, ctx: Context) -> Outcome:
        phys = prior.physical_name or change.address
        return self._run("update", change.address, phys, ctx, lambda s: s.fail_update, change.after or {})

    def delete(self, rs: ResourceState, ctx: Context) -> None:
        phys = rs.physical_name or rs.address
        script = self.world.script(rs.address)
        self.world._enter("delete", rs.address, phys)
        try:
            if script.before:
                script.before()
            self._sleep(script.delay, ctx)
            if script.fail_delete:
                raise ProviderError(script.fail_delete)
            self.world.objects.pop(phys, None)  # idempotent
        finally:
            self.world._leave(rs.address)

    def _run(self, op: str, address: str, phys: str, ctx: Context, failure, inputs: dict) -> Outcome:
        script = self.world.script(address)
        self.world._enter(op, address, phys)
        try:
            if script.before:
                script.before()
            interrupted = self._sleep(script.delay, ctx)
            message = failure(script)
            if message:
                raise ProviderError(message)
            upstream = {a: rs.outputs.get("id") for a, rs in ctx.upstream.items()}
            outputs = {"id": phys, "upstream": upstream, "generation": self._generation(phys) + 1, **script.reports}
            # like a real long operation, an interrupted one is left running and reported pending
            status = OutcomeStatus.PENDING if (script.pending and op == "create") or interrupted else OutcomeStatus.READY
            self.world.objects[phys] = {"status": status, "outputs": outputs, "inputs": inputs}
            return Outcome(status, outputs)
        finally:
            self.world._leave(address)

    def import_resource(self, change: Change, resource_id: str, ctx: Context) -> Outcome:
        """Adopt the object `resource_id` if it was made from the same inputs (the diff otherwise)."""
        obj = self.world.objects.get(resource_id)
        if obj is None:
            raise ProviderError(f"{resource_id} does not exist")
        after = change.after or {}
        differ = sorted(k for k in set(obj.get("inputs", {})) | set(after) if obj.get("inputs", {}).get(k) != after.get(k))
        if differ:
            raise ProviderError(f"it differs from the spec in {', '.join(differ)}")
        self.world.calls.append(("import", change.address, resource_id))
        return Outcome(OutcomeStatus(obj.get("status", "ready")), obj.get("outputs", {}))

    def _generation(self, phys: str) -> int:
        return int(self.world.objects.get(phys, {}).get("outputs", {}).get("generation", 0))

    @staticmethod
    def _sleep(seconds: float, ctx: Context) -> bool:
        """Take `seconds`, or less when `ctx.cancelled` is set meanwhile (then True)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if ctx.cancelled.wait(min(0.005, max(0.0, deadline - time.monotonic()))):
                return True
        return False


def memory_provider(world: MemoryWorld | None = None, *, unsupported: dict[str, str] | None = None) -> Provider:
    world = world or MemoryWorld()
    resources = {k: MemoryResources(k, world) for k in KINDS}
    return Provider(name="memory", resources=resources, importers=resources,
                    unsupported=unsupported or {}, training_code_hash=lambda: "memory")
