"""The plan: a frozen value, versioned as JSON, that apply carries out exactly.

Actions and reasons are enums whose string values are part of the JSON contract
(`format_version` 1, `kind` "plan": the envelope of every `--json` document, docs/json.md). Plans saved
before the envelope (`format_version` "1", a string, and no `kind`) still load. Whether a plan has anything to do is decided in one place, `Plan.has_changes`;
whether it may be applied in `Plan.can_apply` (nothing the provider cannot do yet, `Plan.blocked`, and no
policy violation, `Plan.violations`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

PLAN_FORMAT_VERSION = 1  # views/documents.py FORMAT_VERSION: one contract for every JSON document
PLAN_KIND = "plan"


class Action(StrEnum):
    NOOP = "no-op"
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"


class Reason(StrEnum):
    NONE = "none"
    CREATE_BECAUSE_NEW = "create_because_new"
    CREATE_BECAUSE_MISSING = "create_because_missing"  # in state, gone in the world (drift)
    CREATE_BECAUSE_PENDING = "create_because_pending"  # an earlier run started it: adopt and wait
    CREATE_BECAUSE_RENEWED = "create_because_renewed"  # an expired deployment brought back on purpose
    UPDATE_BECAUSE_CHANGED = "update_because_changed"
    UPDATE_BECAUSE_UPSTREAM_REPLACED = "update_because_upstream_replaced"
    REPLACE_BECAUSE_CANNOT_UPDATE = "replace_because_cannot_update"
    REPLACE_BECAUSE_UPSTREAM_REPLACED = "replace_because_upstream_replaced"
    REPLACE_BECAUSE_TAINTED = "replace_because_tainted"  # the last operation failed
    REPLACE_BY_REQUEST = "replace_by_request"
    DELETE_BECAUSE_NO_RESOURCE_CONFIG = "delete_because_no_resource_config"
    DELETE_BECAUSE_TTL_EXPIRED = "delete_because_ttl_expired"
    DELETE_BECAUSE_IDLE_TTL_EXPIRED = "delete_because_idle_ttl_expired"
    DELETE_BECAUSE_DESTROY = "delete_because_destroy"
    DELETE_BECAUSE_DEPOSED = "delete_because_deposed"  # an old instance a crashed replace left behind
    NOOP_BECAUSE_EXPIRED = "noop_because_expired"  # torn down by TTL; stays down until renewed


SYMBOLS = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.REPLACE: "-/+",
    Action.DELETE: "-",
    Action.NOOP: " ",
}


@dataclass(frozen=True)
class Change:
    address: str
    kind: str
    name: str
    action: Action
    reason: Reason
    detail: str = ""
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    changed_paths: tuple[str, ...] = ()
    replace_paths: tuple[str, ...] = ()
    after_unknown: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    identity: str = ""
    physical_name: str | None = None
    expires_at: str | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    blocked: str | None = None  # why the provider cannot carry this out yet
    deposed: str | None = None  # for DELETE_BECAUSE_DEPOSED: the old instance's physical name
    generation: int = 0  # forced rebuilds of the same inputs (part of the physical name)
    restore: dict[str, Any] | None = None  # a kept earlier result to restore instead of redoing the work
    dataset_diff: dict[str, Any] | None = None  # a dataset whose file changed: rows and labels (plan/datadiff.py)

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "kind": self.kind,
            "name": self.name,
            "action": str(self.action),
            "reason": str(self.reason),
            "detail": self.detail,
            "before": self.before,
            "after": self.after,
            "changed_paths": list(self.changed_paths),
            "replace_paths": list(self.replace_paths),
            "after_unknown": list(self.after_unknown),
            "depends_on": list(self.depends_on),
            "identity": self.identity,
            "physical_name": self.physical_name,
            "expires_at": self.expires_at,
            "cost": self.cost,
            "blocked": self.blocked,
            "deposed": self.deposed,
            "generation": self.generation,
            "restore": self.restore,
            "dataset_diff": self.dataset_diff,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Change:
        return cls(
            address=d["address"], kind=d["kind"], name=d["name"], action=Action(d["action"]),
            reason=Reason(d["reason"]), detail=d.get("detail", ""), before=d.get("before"),
            after=d.get("after"), changed_paths=tuple(d.get("changed_paths", ())),
            replace_paths=tuple(d.get("replace_paths", ())), after_unknown=tuple(d.get("after_unknown", ())),
            depends_on=tuple(d.get("depends_on", ())), identity=d.get("identity", ""),
            physical_name=d.get("physical_name"), expires_at=d.get("expires_at"), cost=d.get("cost") or {},
            blocked=d.get("blocked"), deposed=d.get("deposed"), generation=int(d.get("generation", 0)),
            restore=d.get("restore"), dataset_diff=d.get("dataset_diff"),
        )


@dataclass(frozen=True)
class Violation:
    """A guard-rail the plan breaks (plan/policy.py): the rule, the resource (None: the plan as a whole),
    the figure found and the limit, both as people read them ("$7.09/h", "$5.00/h"), where the rule came
    from (`spec` or `policy_file`) and what breaks it in words ("would cost $7.09/h (5 × ml.g5.xlarge)")."""

    rule: str
    address: str | None
    figure: str
    limit: str
    source: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "address": self.address, "figure": self.figure, "limit": self.limit,
                "source": self.source, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Violation:
        return cls(rule=d["rule"], address=d.get("address"), figure=d.get("figure", ""), limit=d.get("limit", ""),
                   source=d.get("source", ""), detail=d.get("detail", ""))


@dataclass(frozen=True)
class Plan:
    project: str
    workspace: str
    provider: str
    mode: str  # "normal" | "destroy" | "refresh-only" | "reap" (only expired resources are deleted)
    created_at: str
    lineage: str | None
    serial: int
    spec_file: str
    spec_sha256: str
    changes: tuple[Change, ...]
    waves: tuple[tuple[str, ...], ...]  # create/update order (dependencies first)
    destroy_waves: tuple[tuple[str, ...], ...]  # delete order (dependents first)
    refresh: dict[str, dict[str, Any]] = field(default_factory=dict)  # observed outputs to record
    diagnostics: tuple[dict[str, Any], ...] = ()
    fastuner_version: str = ""
    targets: tuple[str, ...] = ()  # --target: the plan covers only these and what they need (partial)
    policy: dict[str, Any] | None = None  # the guard-rails it was checked against, each with its source
    violations: tuple[Violation, ...] = ()  # the guard-rails it breaks: it is never applied

    @property
    def has_changes(self) -> bool:
        """The one place that decides whether there is anything to do (for a refresh-only plan: drift
        to record in state)."""
        if self.mode == "refresh-only":
            return bool(self.refresh)
        return any(c.action is not Action.NOOP for c in self.changes)

    @property
    def blocked(self) -> list[Change]:
        return [c for c in self.changes if c.blocked and c.action is not Action.NOOP]

    @property
    def can_apply(self) -> bool:
        return not self.blocked and not self.violations

    def change(self, address: str) -> Change:
        for c in self.changes:
            if c.address == address:
                return c
        raise KeyError(address)

    def summary(self) -> dict[str, int]:
        counts = {str(a): 0 for a in (Action.CREATE, Action.UPDATE, Action.REPLACE, Action.DELETE, Action.NOOP)}
        for c in self.changes:
            counts[str(c.action)] += 1
        return counts

    def cost(self) -> dict[str, Any]:
        hourly = sum(c.cost.get("hourly_usd", 0.0) for c in self.changes if c.action is not Action.DELETE)
        new = [c for c in self.changes if c.action in (Action.CREATE, Action.REPLACE)]
        one_time = sum(c.cost.get("max_one_time_usd", 0.0) for c in new)
        # the estimate from the work where there is one, else the bound (a job of unknown size)
        estimate = sum(c.cost.get("estimate_usd", c.cost.get("max_one_time_usd", 0.0)) for c in new)
        saved = sum(c.cost.get("hourly_usd", 0.0) for c in self.changes if c.action is Action.DELETE)
        out = {"hourly_usd": round(hourly, 4), "max_one_time_usd": round(one_time, 2),
               "estimate_usd": round(estimate, 2), "hourly_usd_saved": round(saved, 4)}
        if self.provider == "local" and not any(c.cost for c in self.changes) and \
                any(c.action in (Action.CREATE, Action.REPLACE, Action.UPDATE) for c in self.changes):
            out["note"] = "$0: the local provider trains and serves on this machine"
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": PLAN_FORMAT_VERSION,
            "kind": PLAN_KIND,
            "fastuner_version": self.fastuner_version,
            "project": self.project,
            "workspace": self.workspace,
            "provider": self.provider,
            "mode": self.mode,
            "created_at": self.created_at,
            "prior_state": {"lineage": self.lineage, "serial": self.serial},
            "spec": {"file": self.spec_file, "sha256": self.spec_sha256},
            "summary": self.summary(),
            "has_changes": self.has_changes,
            "can_apply": self.can_apply,
            "cost": self.cost(),
            "changes": [c.to_dict() for c in self.changes],
            "waves": [list(w) for w in self.waves],
            "destroy_waves": [list(w) for w in self.destroy_waves],
            "refresh": self.refresh,
            "diagnostics": list(self.diagnostics),
            "targets": list(self.targets),
            "policy": self.policy,
            "violations": [v.to_dict() for v in self.violations],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        version = str(d.get("format_version"))  # "1" before the envelope (a string), 1 since
        if version != str(PLAN_FORMAT_VERSION):
            raise ValueError(f"plan format_version {version!r} is not supported (expected {PLAN_FORMAT_VERSION})")
        if d.get("kind", PLAN_KIND) != PLAN_KIND:
            raise ValueError(f"it is a {d['kind']!r} document, not a plan")
        prior = d.get("prior_state") or {}
        spec = d.get("spec") or {}
        return cls(
            project=d["project"], workspace=d["workspace"], provider=d["provider"], mode=d["mode"],
            created_at=d["created_at"], lineage=prior.get("lineage"), serial=int(prior.get("serial", 0)),
            spec_file=spec.get("file", ""), spec_sha256=spec.get("sha256", ""),
            changes=tuple(Change.from_dict(c) for c in d["changes"]),
            waves=tuple(tuple(w) for w in d.get("waves", ())),
            destroy_waves=tuple(tuple(w) for w in d.get("destroy_waves", ())),
            refresh=d.get("refresh") or {}, diagnostics=tuple(d.get("diagnostics", ())),
            fastuner_version=d.get("fastuner_version", ""), targets=tuple(d.get("targets", ())),
            policy=d.get("policy"), violations=tuple(Violation.from_dict(v) for v in d.get("violations") or ()),
        )


def recorded_expiry(planned: str | None, planned_at: str, started: datetime | None, *, new: bool) -> datetime | None:
    """The expiry the planner decided (a change's or a refresh record's `expires_at`), as state records
    it. The planner counts a new instance's lifetime from the plan's `created_at` (`planned_at`), but the
    instance starts when it is ready (`started`): its expiry moves by as much. An instance that had
    already started keeps the planned time. None until it starts."""
    if planned is None or started is None:
        return None
    at = datetime.fromisoformat(planned)
    return at + (started - datetime.fromisoformat(planned_at)) if new else at
