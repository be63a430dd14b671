"""make_plan is pure: spec + prior state + observations + now in, a plan out. No I/O, no clock."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from fastuner.plan.model import PLAN_FORMAT_VERSION, Action, Change, Plan, Reason
from fastuner.plan.observed import Observation, ObservationStatus, Observed
from fastuner.plan.planner import make_plan
from fastuner.state.model import Deposed, Operation, ResourceState, State, Status, Trained

SHA = "a" * 64
SHA2 = "b" * 64

SPEC = """\
version: 1
project: demo
datasets:
  ds: {path: data/ds.jsonl, task: text_generation}
  other: {path: data/other.jsonl, task: text_generation}
adapters:
  ad: {base_model: base/model, dataset: ds}
  ad2: {base_model: base/model, dataset: other}
deployments:
  ep:
    base_model: base/model
    adapters: [ad]
    ttl: 8h
"""
SAGEMAKER_PROVIDER = "provider: {sagemaker: {region: us-east-1, role_arn: r, bucket: b}}\n"
ALL = ["dataset.ds", "dataset.other", "adapter.ad", "adapter.ad2", "deployment.ep"]


def observed(state: State | None = None, *, sources: dict[str, str] | None = None, code: str = "code",
             **resources: Observation) -> Observed:
    """Everything in `state` reads as ready unless overridden (keys use `__` for `.`)."""
    seen: dict[str, Observation] = {}
    if state is not None:
        seen = {a: Observation(ObservationStatus.READY) for a, rs in state.resources.items() if rs.status is not Status.EXPIRED}
    seen.update({k.replace("__", "."): v for k, v in resources.items()})
    return Observed(resources=seen, dataset_sources=sources or {"ds": SHA, "other": SHA2},
                    training_code_hash=code)


def settle(plan: Plan, prior: State, now: datetime) -> State:
    """The state a fully successful apply of `plan` leaves (a pure stand-in for the engine)."""
    state = prior.model_copy(deep=True)
    state.serial += 1
    state.project = plan.project
    for c in plan.changes:
        old = state.resources.get(c.address)
        if c.action in (Action.CREATE, Action.REPLACE):
            state.resources[c.address] = ResourceState(
                address=c.address, kind=c.kind, name=c.name, identity=c.identity, physical_name=c.physical_name,
                inputs=dict(c.after or {}), depends_on=list(c.depends_on), created_at=now, updated_at=now,
                outputs={"id": c.physical_name})
        elif c.action is Action.UPDATE:
            assert old is not None
            old.inputs = dict(c.after or {})
            old.depends_on = list(c.depends_on)
            old.updated_at = now
        elif c.action is Action.DELETE:
            if c.deposed is not None:
                old.deposed = [d for d in old.deposed if d.physical_name != c.deposed]
            else:
                state.resources.pop(c.address, None)
    return state


@pytest.fixture
def spec(load):
    return load(SPEC)


@pytest.fixture
def applied(spec, now) -> State:
    """The state after creating everything in SPEC at `now`."""
    plan = make_plan(spec, State(project="demo"), observed(), now)
    return settle(plan, State(project="demo"), now)


def actions(plan: Plan) -> dict[str, tuple[Action, Reason]]:
    return {c.address: (c.action, c.reason) for c in plan.changes if c.deposed is None}


NOOP = (Action.NOOP, Reason.NONE)


# --- creating ------------------------------------------------------------------------------------------


def test_create_all(spec, now) -> None:
    prior = State(project="demo")
    plan = make_plan(spec, prior, observed(), now)
    assert [c.address for c in plan.changes] == ALL  # dependencies first
    assert all(c.action is Action.CREATE and c.reason is Reason.CREATE_BECAUSE_NEW for c in plan.changes)
    assert plan.has_changes and plan.mode == "normal"
    assert plan.summary() == {"create": 5, "update": 0, "replace": 0, "delete": 0, "no-op": 0}
    assert plan.waves == (("dataset.ds", "dataset.other"), ("adapter.ad", "adapter.ad2"), ("deployment.ep",))
    assert plan.lineage is None and plan.serial == 0
    assert plan.created_at == now.isoformat()
    ep = plan.change("deployment.ep")
    assert ep.depends_on == ("adapter.ad",)
    assert ep.expires_at == (now + timedelta(hours=8)).isoformat()
    assert ep.after_unknown == ("outputs",)
    assert ep.before is None and ep.after["adapter_identities"] == {"ad": plan.change("adapter.ad").identity}
    ad = plan.change("adapter.ad")
    assert ad.after["dataset_identity"] == plan.change("dataset.ds").identity
    assert ad.after["training_code_hash"] == "code"
    assert plan.change("dataset.ds").after["source_sha256"] == SHA
    assert ad.physical_name == f"demo-ad-ad-{ad.identity[:8]}"
    assert plan.refresh == {}


def test_plan_is_deterministic_and_leaves_its_inputs_alone(spec, applied, now) -> None:
    before = applied.model_dump()
    obs = observed(applied, sources={"ds": SHA2, "other": SHA2})
    first = make_plan(spec, applied, obs, now)
    second = make_plan(spec, applied, obs, now)
    assert first == second
    assert applied.model_dump() == before


def test_no_changes(spec, applied, now) -> None:
    plan = make_plan(spec, applied, observed(applied), now + timedelta(hours=1))
    assert {a: ar for a, ar in actions(plan).items()} == dict.fromkeys(ALL, NOOP)
    assert not plan.has_changes
    assert plan.refresh == {}
    assert plan.lineage == applied.lineage and plan.serial == applied.serial == 1
    assert plan.summary()["no-op"] == 5
    ep = plan.change("deployment.ep")
    assert ep.physical_name == applied.resources["deployment.ep"].physical_name
    assert ep.expires_at == (applied.resources["deployment.ep"].created_at + timedelta(hours=8)).isoformat()


def test_new_outputs_of_a_ready_resource_are_recorded_as_refresh(spec, applied, now) -> None:
    obs = observed(applied, adapter__ad=Observation(ObservationStatus.READY, outputs={"metrics": {"loss": 0.5}}))
    plan = make_plan(spec, applied, obs, now)
    assert not plan.has_changes
    assert plan.refresh == {"adapter.ad": {"status": "ready",
                                           "outputs": {"id": applied.resources["adapter.ad"].physical_name,
                                                       "metrics": {"loss": 0.5}}}}


# --- updating in place ---------------------------------------------------------------------------------


def test_update_in_place_tags(load, applied, now) -> None:
    spec = load(SPEC.replace("task: text_generation}\n  other", "task: text_generation, tags: {team: a}}\n  other"))
    plan = make_plan(spec, applied, observed(applied), now)
    ds = plan.change("dataset.ds")
    assert (ds.action, ds.reason) == (Action.UPDATE, Reason.UPDATE_BECAUSE_CHANGED)
    assert ds.changed_paths == ("tags",) and ds.replace_paths == ()
    assert ds.before["tags"] == {} and ds.after["tags"] == {"team": "a"}
    assert ds.physical_name == applied.resources["dataset.ds"].physical_name
    assert ds.identity == applied.resources["dataset.ds"].identity
    assert actions(plan)["adapter.ad"] == NOOP  # tags do not change the dataset version
    assert plan.summary() == {"create": 0, "update": 1, "replace": 0, "delete": 0, "no-op": 4}


def test_update_in_place_deployment_ttl(load, applied, now) -> None:
    plan = make_plan(load(SPEC.replace("ttl: 8h", "ttl: 12h")), applied, observed(applied), now)
    ep = plan.change("deployment.ep")
    assert (ep.action, ep.reason) == (Action.UPDATE, Reason.UPDATE_BECAUSE_CHANGED)
    assert ep.changed_paths == ("ttl",)
    assert ep.before["ttl"] == "8h" and ep.after["ttl"] == "12h"
    assert ep.expires_at == (applied.resources["deployment.ep"].created_at + timedelta(hours=12)).isoformat()


def on_sagemaker(text: str) -> str:
    return text.replace("project: demo\n", "project: demo\n" + SAGEMAKER_PROVIDER)


def test_update_in_place_compute_count(load, now) -> None:
    applied = settle(make_plan(load(on_sagemaker(SPEC)), State(project="demo"), observed(), now),
                     State(project="demo"), now)
    plan = make_plan(load(on_sagemaker(SPEC.replace("ttl: 8h", "ttl: 8h\n    compute: {count: 3}"))), applied,
                     observed(applied), now)
    ep = plan.change("deployment.ep")
    assert (ep.action, ep.reason) == (Action.UPDATE, Reason.UPDATE_BECAUSE_CHANGED)
    assert ep.changed_paths == ("compute.count",)


def test_adapter_compute_and_checkpointing_change_in_place(load, applied, now) -> None:
    text = SPEC.replace("ad: {base_model: base/model, dataset: ds}",
                        "ad: {base_model: base/model, dataset: ds, compute: {max_runtime: 1h},"
                        " training: {checkpoint_every: 5}}")
    plan = make_plan(load(text), applied, observed(applied), now)
    ad = plan.change("adapter.ad")
    assert (ad.action, ad.reason) == (Action.UPDATE, Reason.UPDATE_BECAUSE_CHANGED)
    assert ad.changed_paths == ("compute.max_runtime", "training.checkpoint_every")
    assert actions(plan)["deployment.ep"] == NOOP


def test_adding_an_adapter_to_a_deployment_is_an_update(load, applied, now) -> None:
    plan = make_plan(load(SPEC.replace("adapters: [ad]", "adapters: [ad, ad2]")), applied, observed(applied), now)
    ep = plan.change("deployment.ep")
    assert (ep.action, ep.reason) == (Action.UPDATE, Reason.UPDATE_BECAUSE_CHANGED)
    assert ep.changed_paths == ("adapter_identities", "adapters")
    assert ep.depends_on == ("adapter.ad", "adapter.ad2")


# --- replacing -----------------------------------------------------------------------------------------


def test_changed_dataset_replaces_it_and_its_adapters_and_updates_the_deployment(spec, applied, now) -> None:
    plan = make_plan(spec, applied, observed(applied, sources={"ds": "c" * 64, "other": SHA2}), now)
    got = actions(plan)
    assert got["dataset.ds"] == (Action.REPLACE, Reason.REPLACE_BECAUSE_CANNOT_UPDATE)
    assert got["adapter.ad"] == (Action.REPLACE, Reason.REPLACE_BECAUSE_UPSTREAM_REPLACED)
    assert got["deployment.ep"] == (Action.UPDATE, Reason.UPDATE_BECAUSE_UPSTREAM_REPLACED)
    assert got["dataset.other"] == got["adapter.ad2"] == NOOP
    ds, ad, ep = plan.change("dataset.ds"), plan.change("adapter.ad"), plan.change("deployment.ep")
    assert ds.replace_paths == ("source_sha256",)
    assert ds.physical_name != applied.resources["dataset.ds"].physical_name
    assert ds.after_unknown == ("outputs",)
    assert ad.replace_paths == ("dataset_identity",)
    assert ad.after["dataset_identity"] == ds.identity
    assert ad.detail == "dataset.ds gets a new version"
    assert ep.changed_paths == ("adapter_identities",)
    assert ep.after["adapter_identities"] == {"ad": ad.identity}
    assert ep.physical_name == applied.resources["deployment.ep"].physical_name
    # the replaced resources' old instances go dependents first
    assert plan.destroy_waves == (("adapter.ad",), ("dataset.ds",))
    assert plan.summary() == {"create": 0, "update": 1, "replace": 2, "delete": 0, "no-op": 2}


def test_own_change_plus_upstream_is_cannot_update(load, applied, now) -> None:
    spec = load(SPEC.replace("ad: {base_model: base/model, dataset: ds}",
                             "ad: {base_model: base/model, dataset: ds, training: {learning_rate: 0.001}}"))
    plan = make_plan(spec, applied, observed(applied, sources={"ds": "c" * 64, "other": SHA2}), now)
    ad = plan.change("adapter.ad")
    assert (ad.action, ad.reason) == (Action.REPLACE, Reason.REPLACE_BECAUSE_CANNOT_UPDATE)
    assert ad.replace_paths == ("dataset_identity", "training.learning_rate")


def test_new_training_code_replaces_every_adapter(spec, applied, now) -> None:
    plan = make_plan(spec, applied, observed(applied, code="new-code"), now)
    got = actions(plan)
    assert got["adapter.ad"] == got["adapter.ad2"] == (Action.REPLACE, Reason.REPLACE_BECAUSE_CANNOT_UPDATE)
    assert plan.change("adapter.ad").replace_paths == ("training_code_hash",)
    assert got["deployment.ep"] == (Action.UPDATE, Reason.UPDATE_BECAUSE_UPSTREAM_REPLACED)
    assert got["dataset.ds"] == NOOP


def test_deployment_base_model_forces_replacement(load, applied, now) -> None:
    text = SPEC.replace("ad: {base_model: base/model", "ad: {base_model: other/model").replace(
        "    base_model: base/model\n    adapters", "    base_model: other/model\n    adapters")
    plan = make_plan(load(text), applied, observed(applied), now)
    ep = plan.change("deployment.ep")
    assert (ep.action, ep.reason) == (Action.REPLACE, Reason.REPLACE_BECAUSE_CANNOT_UPDATE)
    assert "base_model" in ep.replace_paths
    assert ep.expires_at == (now + timedelta(hours=8)).isoformat()  # a new instance starts its ttl


def test_replace_by_request(spec, applied, now) -> None:
    plan = make_plan(spec, applied, observed(applied), now, replace=["adapter.ad2"])
    ad2 = plan.change("adapter.ad2")
    assert (ad2.action, ad2.reason) == (Action.REPLACE, Reason.REPLACE_BY_REQUEST)
    assert ad2.replace_paths == ()
    assert sum(c.action is not Action.NOOP for c in plan.changes) == 1


def test_failed_resource_is_replaced_as_tainted(spec, applied, now) -> None:
    applied.resources["adapter.ad"].status = Status.FAILED
    applied.resources["adapter.ad"].error = "out of memory"
    plan = make_plan(spec, applied, observed(applied), now)
    ad = plan.change("adapter.ad")
    assert (ad.action, ad.reason, ad.detail) == (Action.REPLACE, Reason.REPLACE_BECAUSE_TAINTED, "out of memory")
    assert actions(plan)["deployment.ep"] == NOOP  # same identity: nothing upstream-replaced


def test_a_ready_resource_observed_failed_is_replaced(spec, applied, now) -> None:
    obs = observed(applied, deployment__ep=Observation(ObservationStatus.FAILED, detail="endpoint status Failed"))
    plan = make_plan(spec, applied, obs, now)
    ep = plan.change("deployment.ep")
    assert (ep.action, ep.reason) == (Action.REPLACE, Reason.REPLACE_BECAUSE_TAINTED)
    assert ep.detail == "endpoint status Failed"
    assert plan.has_changes


# --- the adapter cache: an identity trained before is restored, not retrained ---------------------------

LR = SPEC.replace("ad: {base_model: base/model, dataset: ds}",
                  "ad: {base_model: base/model, dataset: ds, training: {learning_rate: 0.001}}")
KEPT = {"model/adapter_model.safetensors": "sha256/ab/" + "ab" * 32}


def _kept(state: State, earlier: ResourceState) -> State:
    """adapter.ad as the engine leaves it after replacing `earlier`: that result kept in the history."""
    state.resources["adapter.ad"].history = [Trained(identity=earlier.identity, physical_name=earlier.physical_name,
                                                     artifact=KEPT, outputs={"duration_s": 61.0})]
    return state


def test_reverting_to_a_kept_identity_restores_it(load, spec, applied, now) -> None:
    old = applied.resources["adapter.ad"]
    changed = settle(make_plan(load(LR), applied, observed(applied), now), applied, now)
    prior = _kept(changed, old)  # the history holds the run trained with the default learning rate
    kept = observed(prior, adapter__ad=Observation(ObservationStatus.READY, stored=frozenset({old.identity})))
    plan = make_plan(spec, prior, kept, now)
    ad = plan.change("adapter.ad")
    assert (ad.action, ad.reason) == (Action.REPLACE, Reason.REPLACE_BECAUSE_CANNOT_UPDATE)
    assert ad.identity == old.identity and ad.physical_name == old.physical_name
    assert ad.restore == {"physical_name": old.physical_name, "generation": 0, "artifact": KEPT, "duration_s": 61.0}
    assert ad.detail.endswith(f"restored from a previous run ({old.physical_name}): no training")
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))).change("adapter.ad").restore == ad.restore


def test_a_kept_identity_whose_files_are_gone_is_retrained(load, spec, applied, now) -> None:
    prior = _kept(settle(make_plan(load(LR), applied, observed(applied), now), applied, now),
                  applied.resources["adapter.ad"])
    plan = make_plan(spec, prior, observed(prior), now)  # refresh did not find it whole in the store
    ad = plan.change("adapter.ad")
    assert ad.action is Action.REPLACE and ad.restore is None and "restored" not in ad.detail


def test_replace_by_request_never_restores(spec, applied, now) -> None:
    rs = applied.resources["adapter.ad"]
    prior = _kept(applied.model_copy(deep=True), rs)
    plan = make_plan(spec, prior, observed(prior, adapter__ad=Observation(ObservationStatus.READY, stored=frozenset({rs.identity}))),
                     now, replace=["adapter.ad"])
    assert plan.change("adapter.ad").restore is None


def test_a_deleted_run_is_restored_from_its_own_kept_files(spec, applied, now) -> None:
    rs = applied.resources["adapter.ad"]
    rs.outputs = {"artifact": KEPT, "duration_s": 5.0}
    obs = observed(applied, adapter__ad=Observation(ObservationStatus.MISSING, detail="no trained adapter", stored=frozenset({rs.identity})))
    ad = make_plan(spec, applied, obs, now).change("adapter.ad")
    assert (ad.action, ad.reason) == (Action.CREATE, Reason.CREATE_BECAUSE_MISSING)
    assert ad.restore is not None and ad.restore["physical_name"] == rs.physical_name


# --- drift and work in flight ----------------------------------------------------------------------------


def test_missing_in_the_world_is_recreated(spec, applied, now) -> None:
    obs = observed(applied, adapter__ad2=Observation(ObservationStatus.MISSING, detail="job demo-ad-ad2 does not exist"))
    plan = make_plan(spec, applied, obs, now)
    ad2 = plan.change("adapter.ad2")
    assert (ad2.action, ad2.reason) == (Action.CREATE, Reason.CREATE_BECAUSE_MISSING)
    assert ad2.detail == "job demo-ad-ad2 does not exist"
    assert ad2.before is not None


def _pending(state: State, address: str, now: datetime) -> State:
    rs = state.resources[address]
    rs.status = Status.PENDING
    rs.created_at = None
    rs.pending = Operation(action="create", started_at=now - timedelta(minutes=5), run_id=rs.physical_name)
    return state


def test_pending_that_finished_is_a_noop_with_a_refresh_record(spec, applied, now) -> None:
    _pending(applied, "adapter.ad", now)
    obs = observed(applied, adapter__ad=Observation(ObservationStatus.READY, outputs={"artifact": "s3://x"}))
    plan = make_plan(spec, applied, obs, now)
    ad = plan.change("adapter.ad")
    assert (ad.action, ad.reason) == NOOP
    assert ad.detail == "the pending operation finished"
    assert plan.refresh["adapter.ad"] == {"status": "ready",
                                          "outputs": {"id": applied.resources["adapter.ad"].physical_name,
                                                      "artifact": "s3://x"}}
    assert not plan.has_changes


def test_pending_still_running_is_adopted(spec, applied, now) -> None:
    _pending(applied, "adapter.ad", now)
    obs = observed(applied, adapter__ad=Observation(ObservationStatus.PENDING, detail="epoch 2/3"))
    plan = make_plan(spec, applied, obs, now)
    ad = plan.change("adapter.ad")
    assert (ad.action, ad.reason) == (Action.CREATE, Reason.CREATE_BECAUSE_PENDING)
    assert "still in flight" in ad.detail and "(epoch 2/3)" in ad.detail
    assert (now - timedelta(minutes=5)).isoformat() in ad.detail
    assert ad.physical_name == applied.resources["adapter.ad"].physical_name
    assert "adapter.ad" not in plan.refresh


def test_pending_that_failed_is_tainted(spec, applied, now) -> None:
    _pending(applied, "adapter.ad", now)
    plan = make_plan(spec, applied, observed(applied, adapter__ad=Observation(ObservationStatus.FAILED, detail="nan loss")), now)
    ad = plan.change("adapter.ad")
    assert (ad.action, ad.reason, ad.detail) == (Action.REPLACE, Reason.REPLACE_BECAUSE_TAINTED, "nan loss")


def test_pending_whose_inputs_changed_is_replaced(load, applied, now) -> None:
    _pending(applied, "adapter.ad", now)
    spec = load(SPEC.replace("ad: {base_model: base/model, dataset: ds}",
                             "ad: {base_model: base/model, dataset: ds, lora: {r: 4}}"))
    plan = make_plan(spec, applied, observed(applied, adapter__ad=Observation(ObservationStatus.PENDING)), now)
    ad = plan.change("adapter.ad")
    assert (ad.action, ad.reason) == (Action.REPLACE, Reason.REPLACE_BECAUSE_CANNOT_UPDATE)
    assert ad.replace_paths == ("lora.r",)


# --- deleting -----------------------------------------------------------------------------------------


def test_removed_resources_are_deleted_after_the_rest(load, applied, now) -> None:
    text = SPEC.split("deployments:")[0].replace("  ad2: {base_model: base/model, dataset: other}\n", "")
    plan = make_plan(load(text), applied, observed(applied), now)
    deletes = [c for c in plan.changes if c.action is Action.DELETE]
    assert [c.address for c in deletes] == ["adapter.ad2", "deployment.ep"]  # one destroy wave, by name
    assert all(c.reason is Reason.DELETE_BECAUSE_NO_RESOURCE_CONFIG for c in deletes)
    assert plan.changes[-2:] == tuple(deletes)
    ep = deletes[1]
    assert ep.after is None and ep.before == applied.resources["deployment.ep"].inputs
    assert ep.physical_name == applied.resources["deployment.ep"].physical_name


def test_removing_everything_deletes_dependents_first(load, applied, now) -> None:
    plan = make_plan(load("version: 1\nproject: demo\n"), applied, observed(applied), now)
    order = [c.address for c in plan.changes]
    assert order.index("deployment.ep") < order.index("adapter.ad") < order.index("dataset.ds")
    assert order.index("adapter.ad2") < order.index("dataset.other")
    assert plan.summary()["delete"] == 5


def test_destroy_mode_deletes_everything_in_destroy_wave_order(spec, applied, now) -> None:
    plan = make_plan(spec, applied, observed(applied), now, destroy=True)
    assert plan.mode == "destroy" and plan.waves == ()
    assert all((c.action, c.reason) == (Action.DELETE, Reason.DELETE_BECAUSE_DESTROY) for c in plan.changes)
    assert plan.destroy_waves == (("adapter.ad2", "deployment.ep"), ("adapter.ad", "dataset.other"),
                                  ("dataset.ds",))
    assert [c.address for c in plan.changes] == [a for w in plan.destroy_waves for a in w]


def test_destroy_of_nothing_has_no_changes(spec, now) -> None:
    plan = make_plan(spec, State(project="demo"), observed(), now, destroy=True)
    assert plan.changes == () and not plan.has_changes


def test_deposed_instances_are_deleted(spec, applied, now) -> None:
    applied.resources["adapter.ad"].deposed.append(
        Deposed(physical_name="demo-ad-ad-old00000", identity="old", inputs={"x": 1}))
    plan = make_plan(spec, applied, observed(applied), now)
    [dep] = [c for c in plan.changes if c.reason is Reason.DELETE_BECAUSE_DEPOSED]
    assert dep.action is Action.DELETE and dep.address == "adapter.ad"
    assert dep.deposed == dep.physical_name == "demo-ad-ad-old00000"
    assert dep.before == {"x": 1} and "interrupted replacement" in dep.detail
    assert actions(plan)["adapter.ad"] == NOOP
    assert plan.has_changes and plan.summary()["delete"] == 1


# --- ttl ---------------------------------------------------------------------------------------------------
# The rule (planner docstring, README "TTLs"): past its ttl or idle_ttl a deployment is deleted and kept as
# expired with the lifetime it ended under; it stays down until `--renew` or a lifetime changed after that.


def test_ttl_expiry_deletes_the_deployment(spec, applied, now) -> None:
    created = applied.resources["deployment.ep"].created_at
    plan = make_plan(spec, applied, observed(applied), created + timedelta(hours=8))
    ep = plan.change("deployment.ep")
    assert (ep.action, ep.reason) == (Action.DELETE, Reason.DELETE_BECAUSE_TTL_EXPIRED)
    assert "ttl 8h" in ep.detail and (created + timedelta(hours=8)).isoformat() in ep.detail
    assert ep.expires_at == (created + timedelta(hours=8)).isoformat()
    assert ep.after is not None and ep.after["ttl"] == "8h"  # the lifetime it expires under, for the engine
    assert ep.physical_name == applied.resources["deployment.ep"].physical_name
    assert [c.address for c in plan.changes if c.action is not Action.NOOP] == ["deployment.ep"]
    just_before = make_plan(spec, applied, observed(applied), created + timedelta(hours=8, seconds=-1))
    assert actions(just_before)["deployment.ep"] == NOOP


def test_a_shortened_ttl_expires_at_the_spec_time_not_the_recorded_one(load, applied, now) -> None:
    applied.resources["deployment.ep"].expires_at = now + timedelta(hours=8)  # recorded under ttl 8h
    plan = make_plan(load(SPEC.replace("ttl: 8h", "ttl: 1m")), applied, observed(applied), now + timedelta(hours=2))
    ep = plan.change("deployment.ep")
    assert (ep.action, ep.reason) == (Action.DELETE, Reason.DELETE_BECAUSE_TTL_EXPIRED)
    assert ep.expires_at == (now + timedelta(minutes=1)).isoformat()  # in the past, when it really ended
    assert ep.before["ttl"] == "8h" and ep.after["ttl"] == "1m"


def test_the_reap_plan_deletes_only_what_expired(load, applied, now) -> None:
    """Reap is a planner mode: other changes in the spec are left for apply; resources that expire
    later stay as no-ops that say when."""
    spec = load(SPEC.replace("ttl: 8h", "ttl: 8h\n    compute: {count: 2}"))
    running = make_plan(spec, applied, observed(applied), now + timedelta(hours=1), reap=True)
    assert running.mode == "reap" and not running.has_changes
    ep = running.change("deployment.ep")
    assert (ep.action, ep.reason, ep.cost) == (Action.NOOP, Reason.NONE, {})
    assert ep.expires_at == (applied.resources["deployment.ep"].created_at + timedelta(hours=8)).isoformat()
    reap = make_plan(spec, applied, observed(applied), now + timedelta(hours=9), reap=True)
    assert [(c.address, c.action, c.reason) for c in reap.changes] == [
        ("deployment.ep", Action.DELETE, Reason.DELETE_BECAUSE_TTL_EXPIRED)]
    assert reap.waves == () and reap.refresh == {}
    assert [w for w in reap.destroy_waves if w] == [("deployment.ep",)]


def test_ttl_expiry_wins_over_other_changes(load, applied, now) -> None:
    plan = make_plan(load(SPEC.replace("ttl: 8h", "ttl: 8h\n    compute: {count: 2}")), applied,
                     observed(applied), now + timedelta(hours=9))
    assert actions(plan)["deployment.ep"] == (Action.DELETE, Reason.DELETE_BECAUSE_TTL_EXPIRED)


IDLE = SPEC.replace("ttl: 8h", "idle_ttl: 1h")


def test_idle_ttl_uses_the_last_activity(load, now) -> None:
    spec = load(IDLE)
    state = settle(make_plan(spec, State(project="demo"), observed(), now), State(project="demo"), now)
    later = now + timedelta(hours=5)
    busy = observed(state, deployment__ep=Observation(ObservationStatus.READY, last_activity=later - timedelta(minutes=30)))
    assert actions(make_plan(spec, state, busy, later))["deployment.ep"] == NOOP
    idle = observed(state, deployment__ep=Observation(ObservationStatus.READY, last_activity=later - timedelta(hours=2)))
    plan = make_plan(spec, state, idle, later)
    ep = plan.change("deployment.ep")
    assert (ep.action, ep.reason) == (Action.DELETE, Reason.DELETE_BECAUSE_IDLE_TTL_EXPIRED)
    assert (later - timedelta(hours=2)).isoformat() in ep.detail and "idle_ttl 1h" in ep.detail
    assert ep.expires_at == (later - timedelta(hours=1)).isoformat()  # idle for 1h from the last invocation


def test_idle_ttl_without_activity_counts_from_creation(load, now) -> None:
    spec = load(IDLE)
    state = settle(make_plan(spec, State(project="demo"), observed(), now), State(project="demo"), now)
    assert actions(make_plan(spec, state, observed(state), now + timedelta(minutes=59)))["deployment.ep"] == NOOP
    plan = make_plan(spec, state, observed(state), now + timedelta(hours=1))
    assert actions(plan)["deployment.ep"] == (Action.DELETE, Reason.DELETE_BECAUSE_IDLE_TTL_EXPIRED)
    assert plan.change("deployment.ep").expires_at == (now + timedelta(hours=1)).isoformat()


def _expire(state: State, ended: datetime, **lifetime: str | None) -> State:
    """The record the engine leaves for an expiry at `ended` (optionally under another ttl/idle_ttl)."""
    rs = state.resources["deployment.ep"]
    rs.status = Status.EXPIRED
    rs.expires_at = ended
    rs.outputs = {"expired_at": ended.isoformat()}
    rs.inputs.update(lifetime)
    return state


def test_expired_tombstone_stays_down(spec, applied, now) -> None:
    _expire(applied, now + timedelta(hours=8))
    plan = make_plan(spec, applied, observed(applied), now + timedelta(days=3))
    ep = plan.change("deployment.ep")
    assert (ep.action, ep.reason) == (Action.NOOP, Reason.NOOP_BECAUSE_EXPIRED)
    assert "fastuner apply --renew deployment.ep" in ep.detail
    assert f"ended at {(now + timedelta(hours=8)).isoformat()}" in ep.detail
    assert "stays down" not in ep.detail  # the reason says it; the detail adds only what is new
    assert ep.expires_at == (now + timedelta(hours=8)).isoformat()
    assert ep.cost == {}
    assert not plan.has_changes and plan.refresh == {}


def test_the_ttl_change_that_made_it_expire_is_not_a_renewal(load, applied, now) -> None:
    _expire(applied, now + timedelta(minutes=1), ttl="1m")  # shortened to 1m, then expired under it
    short = load(SPEC.replace("ttl: 8h", "ttl: 1m"))
    for later in (timedelta(minutes=2), timedelta(days=3)):
        plan = make_plan(short, applied, observed(applied), now + later)
        assert actions(plan)["deployment.ep"] == (Action.NOOP, Reason.NOOP_BECAUSE_EXPIRED)
        assert not plan.has_changes


def test_expired_tombstone_comes_back_when_renewed(spec, applied, now) -> None:
    _expire(applied, now + timedelta(hours=8))
    later = now + timedelta(days=3)
    plan = make_plan(spec, applied, observed(applied), later, renew=["deployment.ep"])
    ep = plan.change("deployment.ep")
    assert (ep.action, ep.reason) == (Action.CREATE, Reason.CREATE_BECAUSE_RENEWED)
    assert ep.detail == "requested with --renew"
    assert ep.expires_at == (later + timedelta(hours=8)).isoformat()


def test_a_ttl_changed_after_the_expiry_renews(load, applied, now) -> None:
    _expire(applied, now + timedelta(minutes=1), ttl="1m")
    later = now + timedelta(days=3)
    plan = make_plan(load(SPEC), applied, observed(applied), later)  # ttl back to 8h
    ep = plan.change("deployment.ep")
    assert (ep.action, ep.reason) == (Action.CREATE, Reason.CREATE_BECAUSE_RENEWED)
    assert ep.detail == "ttl changed from 1m to 8h"
    assert ep.expires_at == (later + timedelta(hours=8)).isoformat()  # a new lifetime from now


def test_an_idle_ttl_changed_after_the_expiry_renews(load, now) -> None:
    spec = load(IDLE)
    state = settle(make_plan(spec, State(project="demo"), observed(), now), State(project="demo"), now)
    _expire(state, now + timedelta(hours=1))
    assert actions(make_plan(spec, state, observed(state), now + timedelta(hours=3)))["deployment.ep"] == \
        (Action.NOOP, Reason.NOOP_BECAUSE_EXPIRED)
    plan = make_plan(load(IDLE.replace("idle_ttl: 1h", "idle_ttl: 2h")), state, observed(state), now + timedelta(hours=3))
    ep = plan.change("deployment.ep")
    assert (ep.action, ep.reason, ep.detail) == (Action.CREATE, Reason.CREATE_BECAUSE_RENEWED,
                                                 "idle_ttl changed from 1h to 2h")
    plan = make_plan(load(IDLE.replace("idle_ttl: 1h", "idle_ttl: 1h\n    ttl: 1d")), state, observed(state),
                     now + timedelta(hours=3))
    assert plan.change("deployment.ep").detail == "ttl changed from none to 1d"


def test_expired_tombstone_ignores_other_changes(load, applied, now) -> None:
    _expire(applied, now + timedelta(hours=8))
    plan = make_plan(load(SPEC.replace("ttl: 8h", "ttl: 8h\n    compute: {count: 2}")), applied,
                     observed(applied), now + timedelta(days=1))
    assert actions(plan)["deployment.ep"] == (Action.NOOP, Reason.NOOP_BECAUSE_EXPIRED)


def test_expired_tombstone_removed_from_the_spec_is_forgotten(load, applied, now) -> None:
    _expire(applied, now + timedelta(hours=8))
    plan = make_plan(load(SPEC.split("deployments:")[0]), applied, observed(applied), now + timedelta(days=1))
    ep = plan.change("deployment.ep")
    assert (ep.action, ep.reason) == (Action.DELETE, Reason.DELETE_BECAUSE_NO_RESOURCE_CONFIG)
    assert "forgetting its record" in ep.detail


# --- blocked, cost, JSON ----------------------------------------------------------------------------------


def test_unsupported_kinds_block_their_changes(spec, now) -> None:
    obs = Observed(dataset_sources={"ds": SHA, "other": SHA2}, unsupported={"deployment": "no endpoints here"})
    plan = make_plan(spec, State(project="demo"), obs, now)
    assert [c.address for c in plan.blocked] == ["deployment.ep"]
    assert plan.change("deployment.ep").blocked == "no endpoints here"
    assert plan.to_dict()["can_apply"] is False


def test_unsupported_kind_does_not_block_a_noop(spec, applied, now) -> None:
    obs = Observed(resources=observed(applied).resources, dataset_sources={"ds": SHA, "other": SHA2},
                   training_code_hash="code", unsupported={"deployment": "no endpoints here"})
    plan = make_plan(spec, applied, obs, now)
    assert plan.blocked == [] and plan.change("deployment.ep").blocked is None
    assert plan.to_dict()["can_apply"] is True


def test_cost_estimates_when_priced(spec, now) -> None:
    obs = Observed(dataset_sources={"ds": SHA, "other": SHA2}, priced=True)
    plan = make_plan(spec, State(project="demo"), obs, now)
    ep = plan.change("deployment.ep")
    assert ep.cost["hourly_usd"] == 1.408 and ep.cost["max_one_time_usd"] == round(1.408 * 8, 2)
    ad = plan.change("adapter.ad")
    assert ad.cost["max_one_time_usd"] == round(1.515 * 4, 2)
    bound = round(1.408 * 8 + 2 * 1.515 * 4, 2)
    # no token counts from refresh: the jobs' estimate is their bound
    assert plan.cost() == {"hourly_usd": 1.408, "max_one_time_usd": bound, "estimate_usd": bound,
                           "hourly_usd_saved": 0.0}
    assert plan.change("dataset.ds").cost == {}
    assert make_plan(spec, State(project="demo"), observed(), now).change("deployment.ep").cost == {}


def test_plan_json_round_trip(load, applied, now) -> None:
    applied.resources["adapter.ad2"].deposed.append(Deposed(physical_name="old-ad2", identity="o"))
    spec = load(SPEC.replace("ttl: 8h", "ttl: 8h\n    tags: {a: b}"))
    obs = Observed(resources={**observed(applied).resources,
                              "adapter.ad": Observation(ObservationStatus.READY, outputs={"m": [1, 2.5]})},
                   dataset_sources={"ds": "c" * 64, "other": SHA2}, training_code_hash="code",
                   unsupported={"dataset": "nope"}, priced=True)
    plan = make_plan(spec, applied, obs, now)
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["format_version"] == PLAN_FORMAT_VERSION
    assert data["prior_state"] == {"lineage": applied.lineage, "serial": applied.serial}
    assert data["spec"]["file"] == "fastuner.yaml" and len(data["spec"]["sha256"]) == 64
    assert data["summary"] == plan.summary() and data["has_changes"] is True
    again = Plan.from_dict(data)
    assert again == plan
    assert again.to_dict() == plan.to_dict()
    assert all(isinstance(c.action, Action) and isinstance(c.reason, Reason) for c in again.changes)


def test_plan_from_dict_refuses_another_format_version(spec, now) -> None:
    data = make_plan(spec, State(project="demo"), observed(), now).to_dict()
    data["format_version"] = "2"
    with pytest.raises(ValueError, match="format_version '2' is not supported"):
        Plan.from_dict(data)


def test_reason_and_action_strings_are_the_json_contract() -> None:
    assert [str(a) for a in Action] == ["no-op", "create", "update", "replace", "delete"]
    assert str(Reason.REPLACE_BECAUSE_UPSTREAM_REPLACED) == "replace_because_upstream_replaced"
    assert str(Reason.NOOP_BECAUSE_EXPIRED) == "noop_because_expired"
    c = Change(address="dataset.x", kind="dataset", name="x", action=Action.DELETE, reason=Reason.DELETE_BECAUSE_DESTROY)
    assert Change.from_dict(c.to_dict()) == c


# --- fields of the other provider ----------------------------------------------------------------------

SAGEMAKER_SET = SPEC.replace("ad: {base_model: base/model, dataset: ds}",
                             "ad: {base_model: base/model, dataset: ds, compute: {instance_type: ml.p4d.24xlarge, "
                             "spot: true, max_wait: 8h, volume_size_gb: 200, max_runtime: 2h}}").replace(
    "    ttl: 8h\n", "    ttl: 8h\n    compute: {instance_type: ml.g5.12xlarge, count: 2}\n")


def test_a_local_plan_shows_stores_and_hashes_only_what_the_local_provider_uses(load, now) -> None:
    plain = make_plan(load(SPEC), State(project="demo"), observed(), now)
    plan = make_plan(load(SAGEMAKER_SET), State(project="demo"), observed(), now)
    after = {c.address: c.after for c in plan.changes}
    assert after["adapter.ad"]["compute"] == {"max_runtime": "2h"}  # the local run's time limit stays
    assert after["adapter.ad2"]["compute"] == {"max_runtime": "4h"}
    assert "compute" not in after["deployment.ep"]
    # the SageMaker settings change no identity, so no run name
    assert [c.identity for c in plan.changes] == [c.identity for c in plain.changes]
    # and changing them on local is no change at all
    prior = settle(plain, State(project="demo"), now)
    again = make_plan(load(SAGEMAKER_SET.replace("max_runtime: 2h", "max_runtime: 4h")), prior, observed(prior), now)
    assert set(actions(again).values()) == {NOOP}


def test_a_sagemaker_plan_keeps_its_compute_fields_and_drops_the_local_port(load, now) -> None:
    text = SAGEMAKER_SET.replace("project: demo\n", "project: demo\n" + SAGEMAKER_PROVIDER).replace(
        "    ttl: 8h\n", "    ttl: 8h\n    port: 8081\n")
    plan = make_plan(load(text), State(project="demo"), observed(), now)
    after = {c.address: c.after for c in plan.changes}
    assert after["adapter.ad"]["compute"] == {"instance_type": "ml.p4d.24xlarge", "instance_count": 1, "spot": True,
                                               "max_runtime": "2h", "max_wait": "8h", "volume_size_gb": 200}
    assert after["deployment.ep"]["compute"] == {"instance_type": "ml.g5.12xlarge", "count": 2}
    assert "port" not in after["deployment.ep"]


def test_state_written_with_sagemaker_fields_on_local_is_no_change(spec, applied, now) -> None:
    """State from before the fields were left out still holds them: not a spurious update."""
    old = applied.model_copy(deep=True)
    old.resources["adapter.ad"].inputs["compute"] = {"instance_type": "ml.g5.2xlarge", "instance_count": 1,
                                                     "spot": False, "max_runtime": "4h", "max_wait": None,
                                                     "volume_size_gb": 50}
    old.resources["deployment.ep"].inputs["compute"] = {"instance_type": "ml.g5.xlarge", "count": 1}
    plan = make_plan(spec, old, observed(old), now)
    assert set(actions(plan).values()) == {NOOP}
    shown = {c.address: c.before for c in plan.changes}
    assert shown["adapter.ad"]["compute"] == {"max_runtime": "4h"} and "compute" not in shown["deployment.ep"]
    gone = make_plan(spec, old, observed(old), now, destroy=True)
    assert all("instance_type" not in str(c.before) for c in gone.changes)
