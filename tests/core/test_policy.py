"""Guard-rails at plan time (plan/policy.py): each rule over a plan's changes, what a policy file may add,
and the plan's record of both. Pure: specs, states and observations in, violations out."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from fastuner.config.models import Policy
from fastuner.engine.apply import PolicyRefusedError
from fastuner.plan.model import Action, Plan, Reason
from fastuner.plan.observed import Observation, ObservationStatus, Observed
from fastuner.plan.planner import make_plan
from fastuner.plan.policy import POLICY_FILE, SPEC, check_plan, effective_policy
from fastuner.state.model import Deposed, State, Status

SAGEMAKER = "provider: {sagemaker: {region: us-east-1, role_arn: r, bucket: b}}\n"
BASE = """\
version: 1
project: demo
{provider}policy:
{policy}
datasets:
  ds: {{path: data/ds.jsonl, task: text_generation}}
adapters:
  ad:
    base_model: base/model
    dataset: ds
    compute: {{instance_type: {training_type}, max_runtime: 2h}}
deployments:
  ep:
    base_model: base/model
    adapters: [ad]
    compute: {{instance_type: ml.g5.xlarge, count: {count}}}
{ttl}"""


def spec_text(policy: str, *, sagemaker: bool = True, training_type: str = "ml.g5.2xlarge", count: int = 1,
              ttl: str | None = "8h") -> str:
    return BASE.format(provider=SAGEMAKER if sagemaker else "", policy=policy, training_type=training_type,
                       count=count, ttl=f"    ttl: {ttl}\n" if ttl else "")


def seen(state: State | None = None, *, priced: bool = True) -> Observed:
    resources = {a: Observation(ObservationStatus.READY) for a in (state.resources if state else {})}
    return Observed(resources=resources, dataset_sources={"ds": "a" * 64}, training_code_hash="code", priced=priced)


def plan_for(load, now, policy: str, prior: State | None = None, **kw) -> Plan:
    options = {k: kw.pop(k) for k in ("destroy", "replace", "reap", "policy") if k in kw}
    sagemaker = kw.get("sagemaker", True)
    spec = load(spec_text(policy, **kw))
    prior = prior or State(project="demo")
    return make_plan(spec, prior, seen(prior, priced=sagemaker), now, **options)


def settled(plan: Plan, now) -> State:
    """The state a successful apply of a creating plan leaves."""
    from fastuner.state.model import ResourceState

    state = State(project="demo", serial=1)
    for c in plan.changes:
        state.resources[c.address] = ResourceState(
            address=c.address, kind=c.kind, name=c.name, identity=c.identity, physical_name=c.physical_name,
            inputs=dict(c.after or {}), depends_on=list(c.depends_on), created_at=now, updated_at=now)
    return state


def broken(plan: Plan) -> list[tuple[str, str | None, str]]:
    return [(v.rule, v.address, v.figure) for v in plan.violations]


# --- each rule -------------------------------------------------------------------------------------


def test_no_policy_no_violations_and_no_record(load, now) -> None:
    plan = plan_for(load, now, "  {}")
    assert plan.violations == () and plan.policy is None and plan.can_apply
    assert plan.to_dict()["violations"] == [] and plan.to_dict()["can_apply"] is True


def test_max_ttl_refuses_a_longer_ttl_and_none_at_all(load, now) -> None:
    assert broken(plan_for(load, now, "  max_ttl: 1d", ttl="2d")) == [("max_ttl", "deployment.ep", "2d")]
    plan = plan_for(load, now, "  max_ttl: 1d", ttl=None)
    assert broken(plan) == [("max_ttl", "deployment.ep", "no ttl")]
    assert plan.violations[0].limit == "1d" and plan.violations[0].detail == "has no ttl"
    assert plan_for(load, now, "  max_ttl: 1d", ttl="1d").violations == ()
    # the ttl holds on every provider: checked on the local one too
    assert broken(plan_for(load, now, "  max_ttl: 1d", ttl="2d", sagemaker=False)) == [
        ("max_ttl", "deployment.ep", "2d")]


def test_max_ttl_looks_only_at_what_the_plan_changes(load, now) -> None:
    first = plan_for(load, now, "  {}", ttl="2d")
    prior = settled(first, now)
    # tightened afterwards: the running deployment is left alone until a plan changes it
    assert plan_for(load, now, "  max_ttl: 1d", prior, ttl="2d").violations == ()
    plan = plan_for(load, now, "  max_ttl: 1d", prior, ttl="2d", count=2)
    assert plan.change("deployment.ep").action is Action.UPDATE
    assert broken(plan) == [("max_ttl", "deployment.ep", "2d")]


def test_allowed_instance_types_takes_names_and_globs(load, now) -> None:
    policy = '  allowed_instance_types: ["ml.g5.*", ml.m5.large]'
    assert plan_for(load, now, policy).violations == ()
    plan = plan_for(load, now, policy, training_type="ml.p4d.24xlarge")
    assert broken(plan) == [("allowed_instance_types", "adapter.ad", "ml.p4d.24xlarge")]
    v = plan.violations[0]
    assert v.limit == "ml.g5.*, ml.m5.large" and v.detail == "would run a training job on ml.p4d.24xlarge"
    assert broken(plan_for(load, now, "  allowed_instance_types: [ml.g5.2xlarge]")) == [
        ("allowed_instance_types", "deployment.ep", "ml.g5.xlarge")]
    assert len(plan_for(load, now, "  allowed_instance_types: []").violations) == 2  # an empty list allows none


def test_allowed_instance_types_has_nothing_to_check_on_the_local_provider(load, now) -> None:
    plan = plan_for(load, now, "  allowed_instance_types: [ml.c5.xlarge]", sagemaker=False,
                    training_type="ml.p5.48xlarge")
    assert plan.violations == ()


def test_max_hourly_cost_per_deployment_with_its_figure(load, now) -> None:
    plan = plan_for(load, now, "  max_hourly_cost: 5", count=5)
    assert broken(plan) == [("max_hourly_cost", "deployment.ep", "$7.04/h")]
    v = plan.violations[0]
    assert (v.limit, v.source, v.detail) == ("$5.00/h", SPEC, "would cost $7.04/h (5 × ml.g5.xlarge)")
    assert plan_for(load, now, "  max_hourly_cost: 5", count=3).violations == ()


def test_max_hourly_cost_counts_every_deployment_left_running(load, now) -> None:
    two = spec_text("  max_hourly_cost: 2", count=1) + """\
  ep2:
    base_model: base/model
    compute: {instance_type: ml.g5.xlarge, count: 1}
    ttl: 8h
"""
    plan = make_plan(load(two), State(project="demo"), seen(), now)
    assert broken(plan) == [("max_hourly_cost", None, "$2.82/h")]
    assert plan.violations[0].detail == ("would leave deployments running at $2.82/h together "
                                         "(deployment.ep2 $1.41/h, deployment.ep $1.41/h)")  # in plan order
    # an adapter retrained under a tightened limit: no deployment touched, no total to answer for
    prior = settled(plan_for(load, now, "  {}", count=1), now)
    text = spec_text("  max_hourly_cost: 1", count=1).replace("max_runtime: 2h", "max_runtime: 3h")
    assert make_plan(load(text), prior, seen(prior), now).violations == ()


def test_an_unknown_price_cannot_be_shown_to_fit(load, now) -> None:
    plan = plan_for(load, now, "  max_hourly_cost: 100\n  max_cost_per_apply: 1000", training_type="ml.x9.huge")
    assert broken(plan) == [("max_cost_per_apply", "adapter.ad", "unknown")]
    assert "ml.x9.huge, whose price fastuner does not know" in plan.violations[0].detail


def test_max_cost_per_apply_is_the_plans_one_time_bound(load, now) -> None:
    plan = plan_for(load, now, "  max_cost_per_apply: 10")
    total = plan.cost()["max_one_time_usd"]
    assert total == pytest.approx(3.03 + 11.26)  # 2 h × ml.g5.2xlarge, 8 h × ml.g5.xlarge
    assert broken(plan) == [("max_cost_per_apply", None, f"${total:.2f}")]
    assert plan.violations[0].detail == f"may cost up to ${total:.2f} (adapter.ad $3.03, deployment.ep $11.26)"
    assert plan_for(load, now, "  max_cost_per_apply: 15").violations == ()


def test_max_cost_per_apply_refuses_a_new_deployment_without_a_bound(load, now) -> None:
    plan = plan_for(load, now, "  max_cost_per_apply: 1000", ttl=None)
    assert broken(plan) == [("max_cost_per_apply", "deployment.ep", "no bound")]
    assert plan.violations[0].detail.startswith("has no ttl, so what it costs has no bound ($1.41/h")


def test_cost_rules_find_nothing_to_bill_on_the_local_provider(load, now) -> None:
    plan = plan_for(load, now, "  max_cost_per_apply: 0\n  max_hourly_cost: 0", sagemaker=False, ttl=None)
    assert plan.violations == ()


def test_protect_refuses_delete_and_replace_in_every_mode(load, now) -> None:
    policy = "  protect: [deployment.ep, adapter.ad]"
    prior = settled(plan_for(load, now, "  {}"), now)
    assert plan_for(load, now, policy, prior).violations == ()
    destroy = plan_for(load, now, policy, prior, destroy=True)
    assert destroy.mode == "destroy"
    assert broken(destroy) == [("protect", "deployment.ep", "delete"), ("protect", "adapter.ad", "delete")]
    assert destroy.violations[0].detail == "would be destroyed"
    replaced = plan_for(load, now, policy, prior, replace=["adapter.ad"])
    assert broken(replaced) == [("protect", "adapter.ad", "replace")]
    # a reap of the protected deployment once its ttl has ended
    reap = plan_for(load, now + timedelta(hours=9), policy, prior, reap=True)
    assert [c.reason for c in reap.changes] == [Reason.DELETE_BECAUSE_TTL_EXPIRED]
    assert broken(reap) == [("protect", "deployment.ep", "delete")]


def test_protect_covers_a_resource_removed_from_the_spec(load, now) -> None:
    prior = settled(plan_for(load, now, "  {}"), now)
    text = spec_text("  protect: [deployment.ep]").split("deployments:")[0]
    plan = make_plan(load(text), prior, seen(prior), now)
    assert plan.change("deployment.ep").reason is Reason.DELETE_BECAUSE_NO_RESOURCE_CONFIG
    assert broken(plan) == [("protect", "deployment.ep", "delete")]
    assert plan.diagnostics == ()  # in state: known, no warning


def test_protect_lets_the_old_instance_of_a_crashed_replacement_go(load, now) -> None:
    prior = settled(plan_for(load, now, "  {}"), now)
    prior.resources["adapter.ad"].deposed = [Deposed(physical_name="demo-ad-ad-old", identity="old", inputs={})]
    plan = plan_for(load, now, "  protect: [adapter.ad]", prior)
    assert [c.reason for c in plan.changes if c.action is Action.DELETE] == [Reason.DELETE_BECAUSE_DEPOSED]
    assert plan.violations == ()


def test_a_protected_address_that_exists_nowhere_is_a_warning(load, now) -> None:
    plan = plan_for(load, now, "  protect: [deployment.typo]")
    assert plan.violations == ()
    assert [d["summary"] for d in plan.diagnostics] == [
        "policy protect lists deployment.typo, which is neither in the spec nor in state"]


# --- a policy file: stricter only ------------------------------------------------------------------


def test_the_file_makes_maxima_lower_and_says_where_each_rule_came_from(load, now) -> None:
    spec_policy = Policy(max_hourly_cost=5, max_ttl="1d", max_cost_per_apply=100)
    rules = effective_policy(spec_policy, Policy(max_hourly_cost=1, max_ttl="2d"), "ci/policy.yaml")
    assert rules.max_hourly_cost.value == 1 and rules.max_hourly_cost.source == POLICY_FILE
    assert rules.max_ttl.value == timedelta(days=1) and rules.max_ttl.source == SPEC  # the file's 2d is looser
    assert rules.max_cost_per_apply.source == SPEC
    assert rules.warnings == ("policy file ci/policy.yaml: max_ttl 2d is looser than the spec's 1d and was "
                              "ignored (a policy file can only make rules stricter)",)
    assert rules.to_dict() == {
        "file": "ci/policy.yaml", "max_ttl": {"limit": "1d", "source": "spec"},
        "max_cost_per_apply": {"limit": 100.0, "source": "spec"},
        "max_hourly_cost": {"limit": 1.0, "source": "policy_file"},
        "allowed_instance_types": [], "protect": []}


def test_a_looser_file_changes_nothing_but_a_warning(load, now) -> None:
    spec = load(spec_text("  max_hourly_cost: 5", count=5))
    rules = effective_policy(spec.config.policy, Policy(max_hourly_cost=50), "p.yaml")
    plan = make_plan(spec, State(project="demo"), seen(), now, policy=rules)
    assert broken(plan) == [("max_hourly_cost", "deployment.ep", "$7.04/h")]
    assert plan.violations[0].source == SPEC
    assert [d["summary"] for d in plan.diagnostics] == [
        "policy file p.yaml: max_hourly_cost $50.00/h is looser than the spec's $5.00/h and was ignored "
        "(a policy file can only make rules stricter)"]


def test_every_allowed_list_must_allow_a_type_and_protected_addresses_add_up(load, now) -> None:
    spec = load(spec_text('  allowed_instance_types: ["ml.g5.*", "ml.p4d.*"]\n  protect: [adapter.ad]',
                          training_type="ml.p4d.24xlarge"))
    rules = effective_policy(spec.config.policy, Policy(allowed_instance_types=["ml.g5.*", "ml.g6.*"],
                                                        protect=["deployment.ep", "adapter.ad"]), "p.yaml")
    assert rules.protect == {"adapter.ad": SPEC, "deployment.ep": POLICY_FILE}
    plan = make_plan(spec, State(project="demo"), seen(), now, policy=rules)
    assert [(v.rule, v.address, v.source) for v in plan.violations] == [
        ("allowed_instance_types", "adapter.ad", POLICY_FILE)]  # the spec allows ml.p4d.*, the file does not
    prior = settled(plan_for(load, now, "  {}"), now)
    destroy = make_plan(spec, prior, seen(prior), now, destroy=True, policy=rules)
    assert [(v.address, v.source) for v in destroy.violations] == [
        ("deployment.ep", POLICY_FILE), ("adapter.ad", SPEC)]


# --- the plan carries them ------------------------------------------------------------------------


def test_violations_and_rules_survive_the_plans_json_form(load, now) -> None:
    plan = plan_for(load, now, "  max_ttl: 1d\n  protect: [deployment.ep]", ttl="2d")
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["can_apply"] is False
    assert data["violations"] == [{"rule": "max_ttl", "address": "deployment.ep", "figure": "2d", "limit": "1d",
                                   "source": "spec", "detail": "has ttl 2d"}]
    assert data["policy"]["protect"] == [{"address": "deployment.ep", "source": "spec"}]
    again = Plan.from_dict(data)
    assert again.violations == plan.violations and again.policy == plan.policy and not again.can_apply


def test_a_plan_checked_again_under_tightened_rules(load, now) -> None:
    plan = plan_for(load, now, "  max_ttl: 1d", ttl="12h")
    assert plan.violations == ()
    tighter = effective_policy(Policy(max_ttl="6h"))
    assert [(v.rule, v.figure, v.limit) for v in check_plan(plan, tighter)] == [("max_ttl", "12h", "6h")]


def test_the_engine_never_applies_a_violating_plan(harness) -> None:
    harness.load("""\
version: 1
project: demo
policy: {max_ttl: 1h}
deployments:
  ep: {base_model: base/model, ttl: 2h}
""")
    plan = harness.plan()
    assert plan.violations
    with pytest.raises(PolicyRefusedError, match="breaks the policy"):
        harness.apply(plan)
    assert harness.ops() == [] and harness.state().resources == {}


def test_expired_state_is_not_a_deployment_to_check(load, now) -> None:
    """An expired record stays down (a no-op): no ttl or cost rule answers for it."""
    prior = settled(plan_for(load, now, "  {}", ttl="1h"), now)
    prior.resources["deployment.ep"].status = Status.EXPIRED
    plan = plan_for(load, now, "  max_ttl: 30m\n  max_hourly_cost: 0.01", prior, ttl="1h")
    assert plan.change("deployment.ep").reason is Reason.NOOP_BECAUSE_EXPIRED
    assert plan.violations == ()
