"""make_plan: the pure heart of fastuner.

`make_plan(spec, prior, observed, now)` compares the spec with the prior state and what refresh observed
and decides, for every resource, one action with one reason. It reads nothing and writes nothing; the
current time is an argument. Replacement propagates through derived inputs: an adapter's
`dataset_identity` changes when its dataset is replaced, a deployment's `adapter_identities` when an
adapter is retrained.

Expiry is decided here and nowhere else (by each kind's lifetime hooks, config/kinds.py); the engine only
records it. The rule: a deployment past its `ttl` (from creation) or `idle_ttl` (from its last
invocation) is deleted and kept in state as expired, with the lifetime (`Kind.lifetime`: ttl, idle_ttl)
it expired under and the moment it expired. It stays down
until renewed, by `apply --renew` or by a lifetime in the spec that differs from the one recorded at
the expiry: a change made after it. The change that made it expire is never a renewal.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from fastuner import __version__
from fastuner.config.kinds import KINDS, REPLACE, Kind, provider_inputs, resources
from fastuner.config.loader import Spec
from fastuner.errors import Diagnostic
from fastuner.graph import Graph, build_graph, graph_from_dependencies
from fastuner.plan.datadiff import dataset_diff
from fastuner.plan.estimate import ASSUMED_PARAMS_B, Work, calibration, params_from_name
from fastuner.plan.kinds import diff_flat, flatten, identity_flat, mode_of, physical_name
from fastuner.plan.model import Action, Change, Plan, Reason
from fastuner.plan.observed import Observation, ObservationStatus, Observed
from fastuner.plan.policy import EffectivePolicy, effective_policy, with_policy
from fastuner.plan.prices import RegionPrices, shipped_book
from fastuner.plan.pricing import DEFAULT_REGION, price
from fastuner.state.model import ResourceState, State, Status

UPSTREAM_PATHS = {"dataset_identity", "adapter_identities"}
# work that a kept earlier result can stand in for (not a rebuild asked for, not work being adopted)
RESTORABLE = {Reason.CREATE_BECAUSE_MISSING, Reason.REPLACE_BECAUSE_CANNOT_UPDATE,
              Reason.REPLACE_BECAUSE_UPSTREAM_REPLACED, Reason.REPLACE_BECAUSE_TAINTED}


def make_plan(spec: Spec, prior: State, observed: Observed, now: datetime, *, destroy: bool = False,
              replace: Iterable[str] = (), renew: Iterable[str] = (), target: Iterable[str] = (),
              refresh_only: bool = False, reap: bool = False, graph: Graph | None = None,
              policy: EffectivePolicy | None = None) -> Plan:
    """`target`: plan only these addresses and what they depend on (for destroy: what depends on
    them); the plan lists its targets and warns that it is partial. `reap`: only the deletes of
    expired resources (`fastuner reap`). `refresh_only`: no action at all, only what refresh saw
    differ from state (drift), recorded in state on apply. `graph`: the spec's graph from
    `build_graph`, which the caller built to check the spec (the dependencies are derived once per
    plan); built here when not given. `policy`: the guard-rails the plan is checked against
    (plan/policy.py; default: the spec's own); the plan records them and what it breaks."""
    plan = _plan(spec, prior, observed, now, destroy=destroy, replace=replace, renew=renew, target=target,
                 refresh_only=refresh_only, reap=reap, graph=graph)
    plan = _with_price_age(plan, _region_prices(spec, observed), now)
    rules = policy if policy is not None else effective_policy(spec.config.policy)
    plan = with_policy(plan, rules, known=(*resources(spec.config), *prior.resources))
    if spec.sensitive:  # what the inputs' markers do not cover: details and diagnostics that quote a value
        plan = Plan.from_dict(spec.sensitive.mask(plan.to_dict()))
    return plan


def _plan(spec: Spec, prior: State, observed: Observed, now: datetime, *, destroy: bool,
          replace: Iterable[str], renew: Iterable[str], target: Iterable[str], refresh_only: bool, reap: bool,
          graph: Graph | None) -> Plan:
    config = spec.config
    replace, renew, targets = set(replace), set(renew), tuple(sorted(set(target)))
    spec_sha = hashlib.sha256(spec.text.encode()).hexdigest()
    common = dict(project=config.project, workspace=prior.workspace, provider=config.provider.name,
                  created_at=now.isoformat(), lineage=prior.lineage if prior.serial else None,
                  serial=prior.serial, spec_file=spec.file.name, spec_sha256=spec_sha,
                  fastuner_version=__version__, targets=targets)
    recorded = graph_from_dependencies(prior.dependencies())
    if refresh_only:
        plan = Plan(mode="refresh-only", changes=(), waves=(), destroy_waves=(),
                    refresh=_drift(prior, observed, now), **common)
        return _targeted(plan, recorded.with_dependencies(targets)) if targets else plan
    if destroy:
        changes = [_delete(rs, Reason.DELETE_BECAUSE_DESTROY, "", observed, config.provider.name,
                           _region_prices(spec, observed), _region(spec))
                   for rs in prior.resources.values()]
        order = recorded.destroy_waves()
        plan = Plan(mode="destroy", changes=tuple(_ordered(changes, order)), waves=(),
                    destroy_waves=tuple(tuple(w) for w in order), **common)
        return _targeted(plan, recorded.with_dependents(targets)) if targets else plan

    graph = graph if graph is not None else build_graph(spec)
    waves = graph.create_waves()
    pricing = _Pricing(_region(spec), _region_prices(spec, observed), _finished_jobs(prior), observed)
    identities: dict[str, str] = {}
    changes: list[Change] = []
    refresh: dict[str, dict[str, Any]] = {}
    for address in (a for wave in waves for a in wave):
        kind_name, name = address.split(".", 1)
        kind = KINDS[kind_name]
        model = getattr(config, kind.section)[name]
        spec_inputs = model.model_dump(mode="json")
        # sensitive values as markers: compared with state (which records markers), shown in the plan;
        # the engine reveals them to the provider
        inputs = spec.sensitive.mask(provider_inputs(kind.name, spec_inputs, config.provider.name))
        inputs.update(kind.derive(name, model, lambda a: identities.get(a, ""), observed))
        flat = flatten(inputs)
        ident = identity_flat(kind.name, flat)
        identities[address] = ident
        rs = prior.get(address)
        obs = observed.resources.get(address)
        change = _decide(spec, kind, name, model, inputs, flat, ident, rs, obs, observed, now,
                         depends_on=tuple(graph.dependencies(address)), cost=pricing.cost(kind, name, spec_inputs),
                         cost_left=lambda hours, k=kind, n=name, i=spec_inputs: pricing.cost(k, n, i, hours_left=hours),
                         workspace=prior.workspace, replace=address in replace, renew=address in renew)
        if kind.name == "dataset" and rs is not None and "source_sha256" in change.changed_paths:
            change = dataclasses.replace(change, dataset_diff=dataset_diff(rs.outputs,
                                                                           observed.dataset_figures.get(name)))
        changes.append(change)
        if rs is not None and obs is not None and change.action is Action.NOOP and rs.status is not Status.EXPIRED:
            rec = _refresh_record(rs, obs, now)
            if rec:
                refresh[address] = rec

    in_spec = {c.address for c in changes}
    for address, rs in prior.resources.items():
        if address not in in_spec:
            detail = "expired earlier; forgetting its record" if rs.status is Status.EXPIRED else ""
            changes.append(_delete(rs, Reason.DELETE_BECAUSE_NO_RESOURCE_CONFIG, detail, observed,
                                   config.provider.name, pricing.prices, pricing.region))

    for address, rs in prior.resources.items():
        for old in rs.deposed:
            changes.append(Change(
                address=address, kind=rs.kind, name=rs.name, action=Action.DELETE,
                reason=Reason.DELETE_BECAUSE_DEPOSED, detail=f"old instance {old.physical_name} left by an "
                "interrupted replacement", before=dict(old.inputs), depends_on=tuple(rs.depends_on),
                identity=old.identity, physical_name=old.physical_name, deposed=old.physical_name or "",
                blocked=observed.unsupported.get(rs.kind)))

    doomed = {c.address for c in changes if c.action in (Action.DELETE, Action.REPLACE)}
    deps = prior.dependencies()
    for c in changes:
        deps.setdefault(c.address, list(c.depends_on))
    destroy_waves = graph_from_dependencies(deps, keep=lambda a: a in doomed).destroy_waves()
    rank = {a: i for i, a in enumerate(a for w in waves for a in w)}
    drank = {a: i for i, a in enumerate(a for w in destroy_waves for a in w)}
    ordered = sorted((c for c in changes if c.action is not Action.DELETE), key=lambda c: rank[c.address]) + \
        sorted((c for c in changes if c.action is Action.DELETE), key=lambda c: (drank.get(c.address, 0), c.address))
    plan = Plan(mode="normal", changes=tuple(ordered), waves=tuple(tuple(w) for w in waves),
                destroy_waves=tuple(tuple(w) for w in destroy_waves), refresh=refresh,
                diagnostics=(), **common)
    if reap:
        return _reaping(plan, prior)
    return _targeted(plan, graph.with_dependencies(targets)) if targets else plan


EXPIRY_REASONS = (Reason.DELETE_BECAUSE_TTL_EXPIRED, Reason.DELETE_BECAUSE_IDLE_TTL_EXPIRED)


def _reaping(plan: Plan, prior: State) -> Plan:
    """The reap plan: the deletes of expired resources and nothing else, in destroy order. The running
    resources that will expire later stay in it as no-ops, so that it can say when."""
    expired = tuple(c for c in plan.changes if c.reason in EXPIRY_REASONS)
    keep = {c.address for c in expired}
    later = tuple(dataclasses.replace(c, action=Action.NOOP, reason=Reason.NONE, detail="", cost={})
                  for c in plan.changes if c.address not in keep and c.expires_at
                  and (rs := prior.get(c.address)) is not None and rs.status is Status.READY)
    return dataclasses.replace(plan, mode="reap", changes=expired + later, waves=(), refresh={},
                               destroy_waves=tuple(tuple(a for a in w if a in keep) for w in plan.destroy_waves))


def _targeted(plan: Plan, keep: set[str]) -> Plan:
    """The plan cut down to `keep` (the targets and what they need), saying that it is partial."""
    one = len(plan.targets) == 1
    needs = ("what depends on it" if one else "what depends on them") if plan.mode == "destroy" else \
        ("what it depends on" if one else "what they depend on")
    warning = Diagnostic.warning(
        f"Resource targeting is in effect: this plan covers only {', '.join(plan.targets)} and {needs}; "
        "other changes may be pending. Plan without --target to see everything.")
    return dataclasses.replace(
        plan, changes=tuple(c for c in plan.changes if c.address in keep),
        waves=tuple(w for w in (tuple(a for a in wave if a in keep) for wave in plan.waves) if w),
        destroy_waves=tuple(w for w in (tuple(a for a in wave if a in keep) for wave in plan.destroy_waves) if w),
        refresh={a: r for a, r in plan.refresh.items() if a in keep},
        diagnostics=(*plan.diagnostics, warning.to_dict()))


def _drift(prior: State, observed: Observed, now: datetime) -> dict[str, dict[str, Any]]:
    """What the world says that state does not (for --refresh-only): a record per drifted resource,
    with `detail` for people. A ready resource that no longer exists is forgotten (`forget`), as
    Terraform forgets it; one whose work failed is recorded failed; new outputs are recorded."""
    drift: dict[str, dict[str, Any]] = {}
    for address, rs in sorted(prior.resources.items()):
        obs = observed.resources.get(address)
        if obs is None or rs.status is Status.EXPIRED:
            continue
        if not obs.exists:
            if rs.status is Status.READY:
                drift[address] = {"status": ObservationStatus.MISSING, "forget": True,
                                  "detail": (obs.detail or "no longer exists") + "; removed from state on apply"}
            continue
        if obs.status is ObservationStatus.FAILED and rs.status is not Status.FAILED:
            drift[address] = {"status": ObservationStatus.FAILED, "outputs": {**rs.outputs, **obs.outputs},
                              "error": obs.detail or "it failed", "detail": f"{rs.status} -> failed"}
            continue
        rec = _refresh_record(rs, obs, now)
        if rec:
            changed = sorted(k for k in rec["outputs"] if rs.outputs.get(k) != rec["outputs"][k])
            moved = f"{rs.status} -> {rec['status']}" if rec["status"] != str(rs.status) else ""
            drift[address] = {**rec, "detail": "; ".join(x for x in (
                moved, f"outputs changed: {', '.join(changed)}" if changed else "") if x)}
    return drift


def _ordered(changes: list[Change], order: list[list[str]]) -> list[Change]:
    rank = {a: i for i, a in enumerate(a for w in order for a in w)}
    return sorted(changes, key=lambda c: (rank.get(c.address, len(rank)), c.address))


def _decide(spec: Spec, kind: Kind, name: str, model: Any, inputs: dict[str, Any], flat: dict[str, Any],
            ident: str, rs: ResourceState | None, obs: Observation | None, observed: Observed, now: datetime, *,
            depends_on: tuple[str, ...], cost: dict[str, Any], workspace: str, replace: bool,
            renew: bool, cost_left: Callable[[float], dict[str, Any]] | None = None) -> Change:
    """One action and one reason for a resource of the spec. Its inputs are the spec's as the chosen
    provider uses them (fields of other providers left out) plus the kind's derived ones. `cost_left`:
    the estimate for a running instance with that many hours left before its ttl ends it."""
    address = f"{kind.name}.{name}"
    config = spec.config
    generation = rs.generation if rs is not None and rs.identity == ident else 0
    phys = physical_name(config.project, workspace, kind.name, name, ident, generation)
    # work already started under a name (pending, or failed and retried) keeps it: it is adopted or
    # resumed (a training run restarts from its last checkpoint) rather than started over elsewhere
    same = dict(physical_name=rs.physical_name, generation=rs.generation) if rs is not None and rs.identity == ident \
        and rs.physical_name else {}
    base = dict(address=address, kind=kind.name, name=name, after=inputs, depends_on=depends_on, identity=ident,
                physical_name=phys, generation=generation, blocked=observed.unsupported.get(kind.name), cost=cost)

    def change(action: Action, reason: Reason, detail: str = "", **kw: Any) -> Change:
        if action is Action.NOOP:
            kw.setdefault("blocked", None)
        if action in (Action.CREATE, Action.REPLACE):
            kw.setdefault("after_unknown", ("outputs",))
        kw.setdefault("expires_at", _expires_at(kind, inputs, rs, action, now))
        if action in (Action.UPDATE, Action.NOOP) and kw["expires_at"] and "cost" not in kw and cost_left:
            # a running instance keeps its lifetime: it costs only what is left of it
            left = (datetime.fromisoformat(kw["expires_at"]) - now).total_seconds() / 3600
            kw["cost"] = cost_left(left)
        kept = _restorable(rs, obs, ident) if reason in RESTORABLE else None
        if kept is not None:
            detail = "; ".join(filter(None, (detail, f"restored from a previous run ({kept['physical_name']}): "
                                                     "no training")))
            kw.update(restore=kept, physical_name=kept["physical_name"], generation=kept["generation"], cost={})
        return Change(**{**base, "action": action, "reason": reason, "detail": detail, **kw})

    if rs is None:
        return change(Action.CREATE, Reason.CREATE_BECAUSE_NEW)
    # state written before provider-only fields were left out still holds them: they are no change
    before = provider_inputs(kind.name, dict(rs.inputs), config.provider.name)
    changed = tuple(diff_flat(flatten(before), flat))
    forcing = tuple(p for p in changed if mode_of(kind.name, p) == REPLACE)

    if rs.status is Status.EXPIRED:
        why = "requested with --renew" if renew else _lifetime_change(kind, before, inputs)
        if why:
            return change(Action.CREATE, Reason.CREATE_BECAUSE_RENEWED, why, before=before, changed_paths=changed)
        ended = f" at {rs.expires_at.isoformat()}" if rs.expires_at else ""
        return change(Action.NOOP, Reason.NOOP_BECAUSE_EXPIRED,
                      f"ended{ended}; renew with `fastuner apply --renew {address}` or a new ttl/idle_ttl", before=before, changed_paths=changed, cost={}, expires_at=_iso(rs.expires_at))

    if rs.status is Status.FAILED:
        return change(Action.REPLACE, Reason.REPLACE_BECAUSE_TAINTED, rs.error or "the last operation failed",
                      before=before, changed_paths=changed, replace_paths=forcing, **same)

    if rs.status is Status.PENDING:
        if ident != rs.identity:
            return change(Action.REPLACE, Reason.REPLACE_BECAUSE_CANNOT_UPDATE,
                          "inputs changed while an operation was in flight", before=before,
                          changed_paths=changed, replace_paths=forcing)
        if obs is not None and obs.status is ObservationStatus.FAILED:
            return change(Action.REPLACE, Reason.REPLACE_BECAUSE_TAINTED, obs.detail or "the pending operation failed",
                          before=before, changed_paths=changed, **same)
        if obs is not None and obs.status is ObservationStatus.READY:
            return change(Action.NOOP, Reason.NONE, "the pending operation finished", before=before)
        op = rs.pending.action if rs.pending else "create"
        return change(Action.CREATE, Reason.CREATE_BECAUSE_PENDING,
                      f"{op} started {_when(rs)} still in flight; apply adopts it and waits"
                      + (f" ({obs.detail})" if obs is not None and obs.detail else ""), before=before,
                      changed_paths=changed, **same)

    # Ready in state. Expiry first: a resource past its lifetime is deleted whatever else changed.
    expired = kind.expiry(inputs, rs.created_at or now, obs.last_activity if obs is not None else None, now)
    if expired is not None:
        reason = Reason.DELETE_BECAUSE_IDLE_TTL_EXPIRED if expired.idle else Reason.DELETE_BECAUSE_TTL_EXPIRED
        # `after`: the lifetime it expires under, which the engine keeps in the expired record
        lifetime = {key: inputs.get(key) for key in kind.lifetime}
        return Change(address=address, kind=kind.name, name=name, action=Action.DELETE, reason=reason,
                      detail=expired.detail, before=before, after=lifetime, depends_on=tuple(rs.depends_on),
                      identity=rs.identity, physical_name=rs.physical_name, expires_at=expired.ended.isoformat(),
                      cost=cost, blocked=observed.unsupported.get(kind.name))
    if obs is not None and not obs.exists:
        return change(Action.CREATE, Reason.CREATE_BECAUSE_MISSING,
                      obs.detail or "recorded in state but no longer exists", before=before, changed_paths=changed)
    if obs is not None and obs.status is ObservationStatus.FAILED:
        return change(Action.REPLACE, Reason.REPLACE_BECAUSE_TAINTED, obs.detail or "it failed after it was created",
                      before=before, changed_paths=changed, replace_paths=forcing, **same)
    if replace:
        rebuilt = rs.generation + 1 if rs.identity == ident else 0
        return change(Action.REPLACE, Reason.REPLACE_BY_REQUEST, "requested with --replace", before=before,
                      changed_paths=changed, replace_paths=forcing, generation=rebuilt,
                      physical_name=physical_name(config.project, workspace, kind.name, name, ident, rebuilt))
    if forcing:
        upstream = all(p.split(".")[0] in UPSTREAM_PATHS for p in forcing)
        reason = Reason.REPLACE_BECAUSE_UPSTREAM_REPLACED if upstream else Reason.REPLACE_BECAUSE_CANNOT_UPDATE
        return change(Action.REPLACE, reason, kind.new_version(model) if upstream else _forcing_detail(kind, model, forcing),
                      before=before, changed_paths=changed, replace_paths=forcing)
    if changed:
        upstream = all(p.split(".")[0] in UPSTREAM_PATHS for p in changed)
        reason = Reason.UPDATE_BECAUSE_UPSTREAM_REPLACED if upstream else Reason.UPDATE_BECAUSE_CHANGED
        return change(Action.UPDATE, reason, "", before=before, changed_paths=changed,
                      physical_name=rs.physical_name, identity=rs.identity)
    return change(Action.NOOP, Reason.NONE, before=before, physical_name=rs.physical_name)


def _restorable(rs: ResourceState | None, obs: Observation | None, ident: str) -> dict[str, Any] | None:
    """The kept result of an earlier instance with this identity, if refresh found it whole in the store:
    from the history of replaced instances, or the current instance's own (its run was deleted)."""
    if rs is None or obs is None or ident not in obs.stored:
        return None
    kept = next((t for t in rs.history if t.identity == ident), None)
    if kept is not None:
        name, generation, artifact, outputs = kept.physical_name, kept.generation, kept.artifact, kept.outputs
    elif rs.identity == ident and rs.physical_name and rs.outputs.get("artifact"):
        name, generation, artifact, outputs = rs.physical_name, rs.generation, rs.outputs["artifact"], rs.outputs
    else:
        return None
    return {"physical_name": name, "generation": generation, "artifact": dict(artifact),
            "duration_s": outputs.get("duration_s")}


def _forcing_detail(kind: Kind, model: Any, forcing: tuple[str, ...]) -> str:
    words = kind.forcing_words(model, forcing)
    if words:
        return words
    shown = ", ".join(forcing[:3]) + (f" and {len(forcing) - 3} more" if len(forcing) > 3 else "")
    return f"{shown} cannot change in place"


def _delete(rs: ResourceState, reason: Reason, detail: str, observed: Observed, provider: str,
            prices: RegionPrices | None, region: str) -> Change:
    return Change(address=rs.address, kind=rs.kind, name=rs.name, action=Action.DELETE, reason=reason,
                  detail=detail, before=provider_inputs(rs.kind, dict(rs.inputs), provider),
                  depends_on=tuple(rs.depends_on), identity=rs.identity,
                  physical_name=rs.physical_name, expires_at=_iso(rs.expires_at),
                  cost=_state_cost(rs, observed, prices, region), blocked=observed.unsupported.get(rs.kind))


def _lifetime_change(kind: Kind, recorded: dict[str, Any], inputs: dict[str, Any]) -> str:
    """How the spec's lifetime differs from the one an expired resource ended under ("" if it does not)."""
    return "; ".join(f"{key} changed from {recorded.get(key) or 'none'} to {inputs.get(key) or 'none'}"
                     for key in kind.lifetime if recorded.get(key) != inputs.get(key))


def _expires_at(kind: Kind, inputs: dict[str, Any], rs: ResourceState | None, action: Action,
                now: datetime) -> str | None:
    """When the instance expires: its hard lifetime from its creation, counted from now for a new
    instance. The engine records this, moved to when the new instance really started (`Plan.expiry`)."""
    ttl = kind.ttl(inputs)
    if ttl is None:
        return None
    start = now if (rs is None or action in (Action.CREATE, Action.REPLACE) or rs.created_at is None) else rs.created_at
    return (start + ttl).isoformat()


class _Pricing:
    """The plan's estimates: the region's prices, the work refresh measured (token counts) and the
    calibration from the user's finished jobs in state."""

    def __init__(self, region: str, prices: RegionPrices | None, jobs: list[dict[str, Any]],
                 observed: Observed) -> None:
        self.region, self.prices, self.jobs, self.observed = region, prices, jobs, observed

    def cost(self, kind: Kind, name: str, inputs: dict[str, Any], hours_left: float | None = None) -> dict[str, Any]:
        """The estimate for a resource of the spec (its inputs with every provider's fields)."""
        if not self.observed.priced:
            return {}
        usage = kind.usage(inputs)
        if usage is None:
            return {}
        work = self._work(name, inputs) if kind.name == "adapter" else None
        calib = calibration(self.jobs, usage.instance_type) if work is not None else (1.0, 0)
        return price(usage, self.prices, region=self.region, hours_left=hours_left, work=work, calibration=calib)

    def _work(self, name: str, inputs: dict[str, Any]) -> Work | None:
        facts = self.observed.work.get(name)
        if not facts or not facts.get("tokens"):
            return None
        base = str(inputs.get("base_model") or "")
        size, source = facts.get("params_b"), "config"
        if not size:
            size, source = params_from_name(base), "name"
        if not size:
            size, source = ASSUMED_PARAMS_B, "assumed"
        training = inputs.get("training") or {}
        return Work(tokens=int(facts["tokens"]), counted=str(facts.get("counted") or "chars"),
                    epochs=float(training.get("epochs") or 1), params_b=float(size), params_from=source,
                    method=str(inputs.get("method") or "lora"),
                    checkpointing=bool(training.get("gradient_checkpointing")))


def _region(spec: Spec) -> str:
    sagemaker = spec.config.provider.sagemaker
    return sagemaker.region if sagemaker is not None else DEFAULT_REGION


def _region_prices(spec: Spec, observed: Observed) -> RegionPrices | None:
    return (observed.prices or shipped_book()).region(_region(spec))


def _finished_jobs(prior: State) -> list[dict[str, Any]]:
    """What state recorded of finished training jobs (estimate beside billed time): each adapter's earlier
    instances, oldest first, then its current one."""
    jobs = []
    for rs in prior.resources.values():
        if rs.kind != "adapter":
            continue
        for outputs in (*(t.outputs for t in reversed(rs.history)), rs.outputs):
            recorded = outputs.get("cost") if isinstance(outputs, dict) else None
            if isinstance(recorded, dict) and recorded.get("training_seconds"):
                jobs.append(recorded)
    return jobs


def _with_price_age(plan: Plan, prices: RegionPrices | None, now: datetime) -> Plan:
    """One note on a plan that prices something with figures older than STALE_AFTER."""
    if prices is None or not prices.stale(now) or not any(c.cost.get("usd_per_hour") for c in plan.changes):
        return plan
    age = (now.date() - prices.as_of).days
    warning = Diagnostic.warning(
        f"SageMaker prices for {prices.region} are {age} days old (as of {prices.as_of.isoformat()}); the "
        f"estimates may be off. Refresh them with `fastuner prices update --region {prices.region}`.",
        f"Source: {prices.describe()}.")
    return dataclasses.replace(plan, diagnostics=(*plan.diagnostics, warning.to_dict()))


def _state_cost(rs: ResourceState, observed: Observed, prices: RegionPrices | None, region: str) -> dict[str, Any]:
    """What deleting a recorded resource saves by the hour."""
    if not observed.priced or rs.status is Status.EXPIRED:
        return {}
    usage = KINDS[rs.kind].usage(rs.inputs)
    return price(usage, prices, region=region, running_only=True) if usage is not None else {}


def _refresh_record(rs: ResourceState, obs: Observation, now: datetime) -> dict[str, Any] | None:
    """What to record of an observation; work that finished starts the instance's lifetime, so the
    record says when it expires (counted from now, the engine moves it to when it records the start)."""
    status = ObservationStatus.READY if obs.status is ObservationStatus.READY else None
    merged = {**rs.outputs, **obs.outputs}
    if merged == rs.outputs and (status is None or rs.status is Status.READY):
        return None
    record: dict[str, Any] = {"status": status or str(rs.status), "outputs": merged}
    ttl = KINDS[rs.kind].ttl(rs.inputs) if status is not None and rs.status is Status.PENDING else None
    if ttl is not None:
        record["expires_at"] = ((rs.created_at or now) + ttl).isoformat()
    return record


def _when(rs: ResourceState) -> str:
    return f"at {rs.pending.started_at.isoformat()}" if rs.pending else "earlier"


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None
