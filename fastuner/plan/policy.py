"""Guard-rails checked at plan time: the spec's `policy:` and a policy file's, over a plan's changes.

Pure, like the planner: a plan and the rules in, the violations out. A plan with a violation is still
a plan (it is shown and saved, so that a pull request can say what is wrong), but it is never applied:
`Plan.can_apply` is false, the CLI exits with its own code, and apply re-checks a saved plan against
the rules of the moment.

What each rule looks at (the README's "Guard-rails" says the same to users):
- `max_ttl`: every deployment a plan creates, updates or replaces; one without a ttl breaks it.
- `allowed_instance_types`: every instance type of a training job or endpoint a plan creates, updates or
  replaces. Types the provider does not use (the local provider's) are not in the plan: nothing to check.
- `max_hourly_cost`: each deployment a plan creates, updates or replaces, by the hour; and, when the plan
  touches one, all deployments it leaves running together (the plan's "Estimated cost" $/h).
- `max_cost_per_apply`: the plan's one-time bound (the sum the plan shows: training jobs at their
  max_runtime, new deployments until their ttl). New work with no bound (a deployment without a ttl) or
  no known price cannot be shown to fit and breaks it. The local provider prices nothing: it costs $0.
- `protect`: no delete or replace of a listed address, in every mode (plan, destroy, reap, a resource
  removed from the spec, --replace). The old instance a crashed replacement left behind is not the
  protected resource: removing it is allowed.

A policy file can only make the rules stricter (`effective_policy`): the lower maximum applies, a type
must be allowed by every list, protected addresses add up. A file's looser value is not an error (one
policy file serves many projects) but it has no effect, and the plan warns that it was ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any, Generic, TypeVar

from fastuner.config.duration import format_duration
from fastuner.config.kinds import KINDS, Usage
from fastuner.config.models import Policy
from fastuner.errors import Diagnostic
from fastuner.plan.model import Action, Change, Plan, Reason, Violation

SPEC = "spec"
POLICY_FILE = "policy_file"
RULES = ("max_ttl", "max_cost_per_apply", "max_hourly_cost", "allowed_instance_types", "protect")
CHANGING = (Action.CREATE, Action.UPDATE, Action.REPLACE)  # what a plan brings about, and so answers for

T = TypeVar("T")


@dataclass(frozen=True)
class Limit(Generic[T]):
    """One rule's value and where it came from (`spec` or `policy_file`)."""

    value: T
    source: str


@dataclass(frozen=True)
class EffectivePolicy:
    """The rules a plan is checked against: the spec's, made stricter by a policy file's."""

    max_ttl: Limit[timedelta] | None = None
    max_cost_per_apply: Limit[float] | None = None
    max_hourly_cost: Limit[float] | None = None
    allowed_instance_types: tuple[Limit[tuple[str, ...]], ...] = ()  # a type must match every list
    protect: dict[str, str] = field(default_factory=dict)  # address -> source (the spec's first)
    file: str | None = None  # the policy file, as it was named
    warnings: tuple[str, ...] = ()  # what the file tried to loosen, ignored

    @property
    def empty(self) -> bool:
        return not (self.max_ttl or self.max_cost_per_apply or self.max_hourly_cost
                    or self.allowed_instance_types or self.protect)

    def to_dict(self) -> dict[str, Any] | None:
        """The plan's record of the rules it was checked against, each with its source (None: no rules)."""
        if self.empty and self.file is None:
            return None

        def one(limit: Limit | None, shown: Any) -> dict[str, Any] | None:
            return None if limit is None else {"limit": shown, "source": limit.source}

        return {
            "file": self.file,
            "max_ttl": one(self.max_ttl, self.max_ttl and format_duration(self.max_ttl.value)),
            "max_cost_per_apply": one(self.max_cost_per_apply, self.max_cost_per_apply and self.max_cost_per_apply.value),
            "max_hourly_cost": one(self.max_hourly_cost, self.max_hourly_cost and self.max_hourly_cost.value),
            "allowed_instance_types": [{"limit": list(a.value), "source": a.source} for a in self.allowed_instance_types],
            "protect": [{"address": a, "source": s} for a, s in sorted(self.protect.items())],
        }


def effective_policy(spec: Policy, file: Policy | None = None, file_name: str | None = None) -> EffectivePolicy:
    """The spec's rules made stricter by a policy file's (`file`, read from `file_name`)."""
    if file is None:
        return EffectivePolicy(
            max_ttl=_limit(spec.max_ttl, SPEC), max_cost_per_apply=_limit(spec.max_cost_per_apply, SPEC),
            max_hourly_cost=_limit(spec.max_hourly_cost, SPEC),
            allowed_instance_types=_allowed(spec.allowed_instance_types, SPEC),
            protect=dict.fromkeys(spec.protect, SPEC), file=file_name)
    warnings: list[str] = []

    def lower(rule: str, words) -> Limit | None:
        ours, theirs = getattr(spec, rule), getattr(file, rule)
        if theirs is None or (ours is not None and ours <= theirs):
            if theirs is not None and ours is not None and ours < theirs:
                warnings.append(f"policy file {file_name}: {rule} {words(theirs)} is looser than the spec's "
                                f"{words(ours)} and was ignored (a policy file can only make rules stricter)")
            return _limit(ours, SPEC)
        return Limit(theirs, POLICY_FILE)

    return EffectivePolicy(
        max_ttl=lower("max_ttl", format_duration),
        max_cost_per_apply=lower("max_cost_per_apply", usd),
        max_hourly_cost=lower("max_hourly_cost", usd_per_hour),
        allowed_instance_types=(*_allowed(spec.allowed_instance_types, SPEC),
                                *_allowed(file.allowed_instance_types, POLICY_FILE)),
        protect={**dict.fromkeys(file.protect, POLICY_FILE), **dict.fromkeys(spec.protect, SPEC)},
        file=file_name, warnings=tuple(warnings))


def with_policy(plan: Plan, policy: EffectivePolicy, known: Iterable[str]) -> Plan:
    """The plan with the rules it was checked against, what it breaks, and warnings: what a policy file
    tried to loosen, and protected addresses that are neither in the spec nor in state (`known`), which
    may be a typo protecting nothing."""
    known = set(known)
    warnings = [*policy.warnings, *(f"policy protect lists {a}, which is neither in the spec nor in state"
                                    for a in sorted(policy.protect) if a not in known)]
    return dataclasses.replace(
        plan, policy=policy.to_dict(), violations=check_plan(plan, policy),
        diagnostics=(*plan.diagnostics, *(Diagnostic.warning(w).to_dict() for w in warnings)))


def check_plan(plan: Plan, policy: EffectivePolicy) -> tuple[Violation, ...]:
    """Every rule the plan breaks, in the order of `RULES`, then of the plan's changes."""
    if policy.empty:
        return ()
    return (*_max_ttl(plan, policy), *_max_cost_per_apply(plan, policy), *_max_hourly_cost(plan, policy),
            *_allowed_instance_types(plan, policy), *_protect(plan, policy))


def usd(value: float) -> str:
    return f"${value:,.2f}"


def usd_per_hour(value: float) -> str:
    return f"${value:,.2f}/h"


# --- the rules -----------------------------------------------------------------------------------


def _max_ttl(plan: Plan, policy: EffectivePolicy) -> Iterator[Violation]:
    rule = policy.max_ttl
    if rule is None:
        return
    limit = format_duration(rule.value)
    for c in _changing(plan):
        kind = KINDS.get(c.kind)
        if kind is None or not kind.lifetime:
            continue
        ttl = kind.ttl(c.after or {})
        if ttl is None:
            yield Violation("max_ttl", c.address, "no ttl", limit, rule.source, "has no ttl")
        elif ttl > rule.value:
            yield Violation("max_ttl", c.address, format_duration(ttl), limit, rule.source,
                            f"has ttl {format_duration(ttl)}")


def _max_cost_per_apply(plan: Plan, policy: EffectivePolicy) -> Iterator[Violation]:
    rule = policy.max_cost_per_apply
    if rule is None:
        return
    limit = usd(rule.value)
    new = [c for c in plan.changes if c.action in (Action.CREATE, Action.REPLACE)]
    for c in new:
        usage = _usage(c)
        if usage is None or not c.cost:
            continue  # nothing billed (the local provider; work restored from a kept result)
        if "max_one_time_usd" in c.cost:
            continue
        if "hourly_usd" in c.cost:
            yield Violation("max_cost_per_apply", c.address, "no bound", limit, rule.source,
                            f"has no ttl, so what it costs has no bound ({usd_per_hour(c.cost['hourly_usd'])} "
                            "for as long as it runs)")
        else:
            yield _unpriced("max_cost_per_apply", c, usage, limit, rule.source)
    total = plan.cost()["max_one_time_usd"]
    if total > rule.value:
        parts = ", ".join(f"{c.address} {usd(c.cost['max_one_time_usd'])}" for c in new
                          if c.cost.get("max_one_time_usd"))
        yield Violation("max_cost_per_apply", None, usd(total), limit, rule.source,
                        f"may cost up to {usd(total)} ({parts})")


def _max_hourly_cost(plan: Plan, policy: EffectivePolicy) -> Iterator[Violation]:
    rule = policy.max_hourly_cost
    if rule is None:
        return
    limit = usd_per_hour(rule.value)
    touched = False
    for c in _changing(plan):
        usage = _usage(c)
        if usage is None or not usage.hourly or not c.cost:
            continue
        touched = True
        hourly = c.cost.get("hourly_usd")
        if hourly is None:
            yield _unpriced("max_hourly_cost", c, usage, limit, rule.source)
        elif hourly > rule.value:
            yield Violation("max_hourly_cost", c.address, usd_per_hour(hourly), limit, rule.source,
                            f"would cost {usd_per_hour(hourly)} ({usage.count} × {usage.instance_type})")
    running = [c for c in plan.changes if c.action is not Action.DELETE and c.cost.get("hourly_usd")]
    total = plan.cost()["hourly_usd"]
    if touched and len(running) > 1 and total > rule.value:
        parts = ", ".join(f"{c.address} {usd_per_hour(c.cost['hourly_usd'])}" for c in running)
        yield Violation("max_hourly_cost", None, usd_per_hour(total), limit, rule.source,
                        f"would leave deployments running at {usd_per_hour(total)} together ({parts})")


def _allowed_instance_types(plan: Plan, policy: EffectivePolicy) -> Iterator[Violation]:
    for c in _changing(plan):
        usage = _usage(c)
        if usage is None or not usage.instance_type:
            continue  # the provider does not use instance types (local): the plan holds none
        what = "an endpoint" if usage.hourly else "a training job"
        for rule in policy.allowed_instance_types:
            if not any(fnmatchcase(usage.instance_type, pattern) for pattern in rule.value):
                yield Violation("allowed_instance_types", c.address, usage.instance_type,
                                ", ".join(rule.value) or "none", rule.source,
                                f"would run {what} on {usage.instance_type}")


def _protect(plan: Plan, policy: EffectivePolicy) -> Iterator[Violation]:
    for c in plan.changes:
        source = policy.protect.get(c.address)
        if source is None:
            continue
        if c.action is Action.REPLACE:
            yield Violation("protect", c.address, "replace", "", source, "must be replaced")
        elif c.action is Action.DELETE and c.reason is not Reason.DELETE_BECAUSE_DEPOSED:
            yield Violation("protect", c.address, "delete", "", source, "would be destroyed")


# --- helpers -------------------------------------------------------------------------------------


def _changing(plan: Plan) -> Iterator[Change]:
    return (c for c in plan.changes if c.action in CHANGING)


def _usage(change: Change) -> Usage | None:
    kind = KINDS.get(change.kind)
    return kind.usage(change.after or {}) if kind is not None else None


def _unpriced(rule: str, change: Change, usage: Usage, limit: str, source: str) -> Violation:
    return Violation(rule, change.address, "unknown", limit, source,
                     f"runs on {usage.instance_type}, whose price fastuner does not know, so it cannot be shown "
                     "to fit")


def _limit(value: T | None, source: str) -> Limit[T] | None:
    return None if value is None else Limit(value, source)


def _allowed(patterns: list[str] | None, source: str) -> tuple[Limit[tuple[str, ...]], ...]:
    return () if patterns is None else (Limit(tuple(patterns), source),)
