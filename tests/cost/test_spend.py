"""After apply: what each job was billed (BillableTimeInSeconds × the plan's price) and each endpoint's
uptime are recorded in state beside the plan's estimate; `fastuner cost` reports spent vs estimated per
resource and in total, as a table and as JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from fastuner.cli.main import main
from fastuner.config.loader import load_spec
from fastuner.engine.apply import apply_plan
from fastuner.plan.observed import Observation, ObservationStatus, Observed
from fastuner.plan.planner import make_plan
from fastuner.plan.prices import shipped_book
from fastuner.plan.spend import cost_report
from fastuner.providers.memory import MemoryWorld, memory_provider
from fastuner.state.local import LocalStateStore
from fastuner.state.model import empty_state
from fastuner.views.cost import render_cost

T0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
G5 = shipped_book().region("us-east-1").training["ml.g5.2xlarge"]
SPEC = """version: 1
project: p
provider: {sagemaker: {region: us-east-1, role_arn: "arn:aws:iam::123456789012:role/r", bucket: b}}
datasets:
  d: {path: d.jsonl, task: text_generation}
adapters:
  a: {base_model: org/Model-1B, dataset: d, training: {epochs: 2}, compute: {spot: true, max_runtime: 4h}}
  b: {base_model: org/Model-7B, dataset: d, compute: {max_runtime: 2h}}
deployments:
  api: {base_model: org/Model-1B, adapters: [a, b], compute: {instance_type: ml.g5.xlarge, count: 1}, ttl: 8h}
"""


def _apply(tmp_path: Path, *, b_left_running: bool = False):
    (tmp_path / "fastuner.yaml").write_text(SPEC)
    (tmp_path / "d.jsonl").write_text('{"input": "x", "target": "y"}\n')
    spec = load_spec(tmp_path / "fastuner.yaml")
    store = LocalStateStore(tmp_path / "state" / "p.json")
    store.write(empty_state("p", "default"))
    world = MemoryWorld()
    # what SageMaker reports of the finished jobs: a spot job billed 30 % of its 1,000 s, an on-demand one
    world.script("adapter.a").reports = {"training_seconds": 1000, "billable_seconds": 300, "instance_count": 1,
                                         "spot_savings": 0.7}
    world.script("adapter.b").pending = b_left_running  # left running: billed later, through refresh
    observed = Observed(dataset_sources={"d": "00"}, training_code_hash="c", priced=True,
                        work={"a": {"tokens": 5_000_000, "counted": "chars"}, "b": {"tokens": 1_000_000,
                                                                                   "counted": "tokenizer"}})
    plan = make_plan(spec, store.read(), observed, T0)
    result = apply_plan(plan, store, memory_provider(world), spec_dir=tmp_path, clock=lambda: T0, parallelism=1)
    assert result.results
    return tmp_path, spec, store, world, plan


@pytest.fixture
def applied(tmp_path: Path):
    return _apply(tmp_path)


@pytest.fixture
def running(tmp_path: Path):
    return _apply(tmp_path, b_left_running=True)


def test_apply_records_the_estimate_and_what_the_job_was_billed(running) -> None:
    _, _, store, _, plan = running
    a = store.read().get("adapter.a").outputs["cost"]
    estimate = plan.change("adapter.a").cost
    assert a["estimate_usd"] == estimate["estimate_usd"] and a["usd_per_hour"] == G5
    assert a["billed_seconds"] == 300 and a["training_seconds"] == 1000
    assert a["spent_usd"] == round(300 * G5 / 3600, 4) and a["spot_savings"] == 0.7
    assert a["spot_saved_usd"] == round(700 * G5 / 3600, 4)  # what on-demand would have added
    assert a["instance_type"] == "ml.g5.2xlarge" and a["predicted_loop_s"] == estimate["predicted_loop_s"]
    b = store.read().get("adapter.b").outputs["cost"]
    assert "spent_usd" not in b and b["estimate_usd"] == plan.change("adapter.b").cost["estimate_usd"]


def test_a_job_left_running_is_billed_when_refresh_sees_it_finish(running) -> None:
    tmp_path, spec, store, world, _ = running
    state = store.read()
    phys = state.get("adapter.b").physical_name
    world.objects[phys] = {"status": "ready", "outputs": {"id": phys, "training_seconds": 2400,
                                                         "billable_seconds": 2400, "instance_count": 1}}
    later = T0 + timedelta(hours=1)
    observed = Observed(resources={"adapter.b": Observation(ObservationStatus.READY, world.objects[phys]["outputs"])},
                        dataset_sources={"d": "00"}, training_code_hash="c", priced=True)
    plan = make_plan(spec, state, observed, later, refresh_only=True)
    apply_plan(plan, store, memory_provider(world), spec_dir=tmp_path, clock=lambda: later)
    b = store.read().get("adapter.b").outputs["cost"]
    assert b["billed_seconds"] == 2400 and b["spent_usd"] == round(2400 * G5 / 3600, 4)


def test_the_report_compares_spent_with_estimated_per_resource_and_in_total(applied) -> None:
    _, _, store, _, _ = applied
    state = store.read()
    report = cost_report(state, "sagemaker", T0 + timedelta(hours=2))
    assert report["format_version"] == 1 and report["kind"] == "cost" and report["currency"] == "USD"
    rows = {r["address"]: r for r in report["resources"]}
    a = rows["adapter.a"]
    spent, on_demand = round(300 * G5 / 3600, 4), round(300 * G5 / 3600, 4) + round(700 * G5 / 3600, 4)
    # a spot job is compared by its on-demand equivalent: the estimate prices on-demand time
    assert a["spent_usd"] == spent and a["error"] == round((a["estimate_usd"] - on_demand) / on_demand, 4)
    assert rows["adapter.b"]["spent_usd"] is None and rows["adapter.b"]["error"] is None  # no billed time reported
    api = rows["deployment.api"]  # two hours up at its hourly price, still running
    hourly = shipped_book().region("us-east-1").hosting["ml.g5.xlarge"]
    assert api["running"] and api["spent_usd"] == round(2 * hourly, 4) and api["error"] is None
    total = report["total"]
    assert total["spent_usd"] == round(spent + 2 * hourly, 2) and total["compared"] == 1
    assert total["error"] == a["error"] or total["error"] == pytest.approx(a["error"], abs=0.01)

    console = Console(record=True, width=140, no_color=True, file=open("/dev/null", "w"))  # noqa: SIM115
    render_cost(report, console)
    text = console.export_text()
    assert "adapter.a" in text and f"${spent:,.2f} (spot −70%)" in text and "so far" in text
    assert "Running endpoints" in text


def test_an_expired_endpoint_is_billed_from_creation_to_expiry(applied) -> None:
    tmp_path, spec, store, world, _ = applied
    end = T0 + timedelta(hours=8, minutes=5)
    observed = Observed(resources={a: Observation(ObservationStatus.READY) for a in store.read().resources},
                        dataset_sources={"d": "00"}, training_code_hash="c", priced=True)
    plan = make_plan(spec, store.read(), observed, end)
    assert plan.change("deployment.api").reason == "delete_because_ttl_expired"
    apply_plan(plan, store, memory_provider(world), spec_dir=tmp_path, clock=lambda: end)
    row = next(r for r in cost_report(store.read(), "sagemaker", end + timedelta(days=3))["resources"]
               if r["address"] == "deployment.api")
    hourly = shipped_book().region("us-east-1").hosting["ml.g5.xlarge"]
    assert not row["running"] and row["spent_usd"] == pytest.approx(hourly * (8 + 5 / 60), abs=1e-3)
    assert row["estimate_usd"] == round(hourly * 8, 2) and row["error"] is not None


def test_fastuner_cost_json_and_a_local_project_costs_nothing(tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "fastuner.yaml").write_text("version: 1\nproject: demo\ndatasets:\n"
                                            "  d: {path: d.jsonl, task: text_generation}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["cost", "--json"], clock=lambda: T0, environ={"HOME": str(tmp_path)}) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["format_version"], report["kind"], report["provider"]) == (1, "cost", "local")
    assert report["total"]["spent_usd"] == 0 and report["resources"] == []
    assert report["notes"] == ["The local provider runs on this machine: it bills nothing ($0)."]
    assert main(["cost"], clock=lambda: T0, environ={"HOME": str(tmp_path)}) == 0
    assert "bills nothing ($0)" in capsys.readouterr().out


def test_the_next_plan_calibrates_from_the_jobs_apply_recorded(applied) -> None:
    _, spec, store, _, first = applied
    a = store.read().get("adapter.a").outputs["cost"]
    observed = Observed(resources={x: Observation(ObservationStatus.READY) for x in store.read().resources},
                        dataset_sources={"d": "00"}, training_code_hash="c", priced=True,
                        work={"b": {"tokens": 1_000_000, "counted": "tokenizer"}})
    b = make_plan(spec, store.read(), observed, T0 + timedelta(hours=1)).change("adapter.b").cost
    ratio = (1000 - a["startup_s"]) / a["predicted_loop_s"]  # a's loop, measured ÷ predicted
    assert b["calibrated_from"] == 1 and b["calibration"] == round(ratio, 3)
    assert b["predicted_loop_s"] == first.change("adapter.b").cost["predicted_loop_s"]
    assert b["estimate_seconds"] == round(b["predicted_loop_s"] * ratio + b["startup_s"])
