"""--target and --refresh-only in the pure planner: what a partial plan holds, and what drift records."""

from __future__ import annotations

from fastuner.graph import graph_from_dependencies
from fastuner.plan.model import Action, Plan, Reason
from fastuner.plan.observed import Observation, ObservationStatus
from fastuner.plan.planner import make_plan
from fastuner.state.model import State, Status
from tests.core.test_planner import SPEC, observed, settle


def addresses(plan: Plan) -> set[str]:
    return {c.address for c in plan.changes}


def warnings(plan: Plan) -> list[str]:
    return [d["summary"] for d in plan.diagnostics if d["severity"] == "warning"]


def test_graph_closures() -> None:
    graph = graph_from_dependencies({"a": [], "b": ["a"], "c": ["b"], "d": []})
    assert graph.with_dependencies(["c"]) == {"a", "b", "c"}
    assert graph.with_dependents(["a"]) == {"a", "b", "c"}
    assert graph.with_dependencies(["gone"]) == {"gone"}  # an address outside the graph is kept alone


def test_target_plans_the_target_and_what_it_depends_on(load, now) -> None:
    spec = load(SPEC)
    plan = make_plan(spec, State(project="demo"), observed(), now, target=["deployment.ep"])
    assert addresses(plan) == {"dataset.ds", "adapter.ad", "deployment.ep"}  # not dataset.other, adapter.ad2
    assert [list(w) for w in plan.waves] == [["dataset.ds"], ["adapter.ad"], ["deployment.ep"]]
    assert plan.targets == ("deployment.ep",)
    assert plan.to_dict()["targets"] == ["deployment.ep"]
    [warning] = warnings(plan)
    assert "Resource targeting is in effect" in warning and "deployment.ep and what it depends on" in warning
    full = make_plan(spec, State(project="demo"), observed(), now)
    assert full.targets == () and not warnings(full) and len(full.changes) == 5


def test_target_leaves_other_pending_changes_out(load, now) -> None:
    spec = load(SPEC)
    prior = settle(make_plan(spec, State(project="demo"), observed(), now), State(project="demo"), now)
    changed = observed(prior, sources={"ds": "c" * 64, "other": "d" * 64})  # both datasets changed
    plan = make_plan(spec, prior, changed, now, target=["adapter.ad2"])
    acted = {c.address: c.action for c in plan.changes}
    assert acted == {"dataset.other": Action.REPLACE, "adapter.ad2": Action.REPLACE}
    assert "dataset.ds" not in acted  # its change waits for a plan without --target


def test_target_of_a_removed_resource_deletes_only_it(load, now) -> None:
    spec = load(SPEC)
    prior = settle(make_plan(spec, State(project="demo"), observed(), now), State(project="demo"), now)
    smaller = load(SPEC.replace("  ad2: {base_model: base/model, dataset: other}\n", ""))
    plan = make_plan(smaller, prior, observed(prior), now, target=["adapter.ad2"])
    assert [(c.address, c.action, c.reason) for c in plan.changes] == [
        ("adapter.ad2", Action.DELETE, Reason.DELETE_BECAUSE_NO_RESOURCE_CONFIG)]


def test_destroy_target_takes_what_depends_on_it(load, now) -> None:
    spec = load(SPEC)
    prior = settle(make_plan(spec, State(project="demo"), observed(), now), State(project="demo"), now)
    plan = make_plan(spec, prior, observed(prior), now, destroy=True, target=["adapter.ad"])
    assert addresses(plan) == {"adapter.ad", "deployment.ep"}
    assert all(c.action is Action.DELETE for c in plan.changes)
    assert [list(w) for w in plan.destroy_waves] == [["deployment.ep"], ["adapter.ad"]]
    assert "adapter.ad and what depends on it" in warnings(plan)[0]


def test_refresh_only_records_drift_and_plans_no_action(load, now) -> None:
    spec = load(SPEC.replace("ttl: 8h", "ttl: 9h"))  # a spec change: ignored by a refresh-only plan
    base = load(SPEC)
    prior = settle(make_plan(base, State(project="demo"), observed(), now), State(project="demo"), now)
    quiet = make_plan(spec, prior, observed(prior), now, refresh_only=True)
    assert quiet.refresh == {} and not quiet.has_changes
    prior.resources["adapter.ad2"].status = Status.PENDING
    seen = observed(prior,
                    dataset__ds=Observation(ObservationStatus.MISSING, detail="2 stored object(s) are gone"),
                    adapter__ad=Observation(ObservationStatus.FAILED, detail="the training process died"),
                    adapter__ad2=Observation(ObservationStatus.READY, outputs={"accuracy": 0.9}),
                    deployment__ep=Observation(ObservationStatus.READY, outputs={"id": prior.resources["deployment.ep"].outputs["id"]}))
    plan = make_plan(spec, prior, seen, now, refresh_only=True)
    assert plan.mode == "refresh-only" and plan.changes == () and plan.has_changes
    assert set(plan.refresh) == {"dataset.ds", "adapter.ad", "adapter.ad2"}  # the deployment did not drift
    assert plan.refresh["dataset.ds"]["forget"] is True
    assert "2 stored object(s) are gone" in plan.refresh["dataset.ds"]["detail"]
    assert plan.refresh["adapter.ad"]["status"] == "failed"
    assert plan.refresh["adapter.ad"]["error"] == "the training process died"
    assert plan.refresh["adapter.ad2"]["status"] == "ready"
    assert plan.refresh["adapter.ad2"]["detail"] == "pending -> ready; outputs changed: accuracy"


def test_refresh_only_with_a_target(load, now) -> None:
    spec = load(SPEC)
    prior = settle(make_plan(spec, State(project="demo"), observed(), now), State(project="demo"), now)
    seen = observed(prior, dataset__ds=Observation(ObservationStatus.MISSING), dataset__other=Observation(ObservationStatus.MISSING))
    plan = make_plan(spec, prior, seen, now, refresh_only=True, target=["adapter.ad"])
    assert set(plan.refresh) == {"dataset.ds"}


def test_a_saved_targeted_plan_round_trips(load, now) -> None:
    plan = make_plan(load(SPEC), State(project="demo"), observed(), now, target=["adapter.ad2"])
    again = Plan.from_dict(plan.to_dict())
    assert again.targets == ("adapter.ad2",) and addresses(again) == {"dataset.other", "adapter.ad2"}
    assert again.diagnostics == plan.diagnostics


def test_refresh_only_markdown_lists_the_drift(load, now) -> None:
    """The pull-request comment of a refresh-only plan names each drifted resource and what changed,
    and says nothing will be created (not "Plan: 0 to create ..." followed by "No changes")."""
    from fastuner.views.markdown import render_markdown

    spec = load(SPEC)
    prior = settle(make_plan(spec, State(project="demo"), observed(), now), State(project="demo"), now)
    quiet = render_markdown(make_plan(spec, prior, observed(prior), now, refresh_only=True).to_dict())
    assert "No changes." in quiet and "Plan:" not in quiet and "nothing changed outside fastuner" in quiet
    seen = observed(prior, dataset__ds=Observation(ObservationStatus.MISSING, detail="2 stored object(s) are gone"))
    text = render_markdown(make_plan(spec, prior, seen, now, refresh_only=True).to_dict())
    assert "Refresh-only: 1 to record in state." in text and "Plan:" not in text
    assert "| `dataset.ds` | 2 stored object(s) are gone; removed from state on apply |" in text
