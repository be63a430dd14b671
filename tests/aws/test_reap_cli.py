"""`fastuner reap` on SageMaker with no state at hand: expired endpoints found by their tags, shown,
deleted with what belongs to them, and recorded in a state only where one tracks them. The CLI runs in
process (`main(argv, environ=..., clock=...)`) against moto, whose missing inference components come
from a test-only extension; what fastuner sent is read from its call log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastuner.aws.clients import CALL_LOG_ENV
from fastuner.config.loader import load_spec
from fastuner.providers.sagemaker.iam import RUNNER, covers, policy, read_call_log, requests_of, scope_of
from fastuner.state.local import LocalStateStore
from fastuner.state.model import ResourceState, Status, empty_state
from tests.aws.conftest import ACCOUNT, FAKE_CREDENTIALS
from tests.aws.moto_endpoints import Endpoints
from tests.aws.reap_world import ReapWorld
from tests.conftest import Clock

SPEC = f"""\
version: 1
project: demo
backend: {{local: {{path: state/demo.json}}}}
provider:
  sagemaker:
    region: us-east-1
    role_arn: "arn:aws:iam::{ACCOUNT}:role/fastuner-demo"
    bucket: demo-artifacts
"""


@pytest.fixture
def world(aws) -> Iterator[ReapWorld]:
    components = Endpoints(settle=0).install()
    try:
        yield ReapWorld(components)
    finally:
        components.uninstall()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "fastuner.yaml").write_text(SPEC)
    return tmp_path


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    return {**FAKE_CREDENTIALS, CALL_LOG_ENV: str(tmp_path / "calls.jsonl"), "FASTUNER_SAGEMAKER_POLL": "0"}


def sent(environ: dict[str, str], operation: str) -> list[dict]:
    log = Path(environ[CALL_LOG_ENV])
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [c["params"] for c in calls if c["operation"] == operation]


def landscape(world: ReapWorld) -> None:
    """Five endpoints of project demo and one of another: two past their lifetime."""
    world.deployment("demo-ep-old", expires_at=world.later(hours=1), adapters=("a",))
    world.deployment("demo-ep-young", expires_at=world.later(hours=8))
    world.deployment("demo-ep-quiet", idle_ttl="1h", workspace="dev", address="deployment.quiet")
    world.deployment("demo-ep-busy", idle_ttl="1h")
    world.deployment("other-ep-old", project="other", expires_at=world.later(hours=1))
    world.invoked({"EndpointName": "demo-ep-quiet", "VariantName": "AllTraffic"}, world.later(hours=1.5), 0)
    world.invoked({"EndpointName": "demo-ep-busy", "VariantName": "AllTraffic"}, world.later(hours=1.5), 3)


def test_reap_by_tags_with_no_state_file(cli, world: ReapWorld, folder: Path, environ: dict[str, str]) -> None:
    landscape(world)
    clock = Clock(world.later(hours=2))
    run = cli("reap", "--auto-approve", cwd=folder, clock=clock, environ=environ)  # no state: tags, and says so
    assert run.code == 0, run.text
    out = run.out
    assert "No state for workspace default" in out and "by their tags instead" in out
    assert "Found 4 fastuner endpoint(s) of project demo in us-east-1 by their tags; 2 past their ttl" in out
    assert "Reaped deployment.demo-ep-old (endpoint demo-ep-old): ran " in out
    assert f"ttl ended {world.later(hours=1).replace(microsecond=0).isoformat()}" in out
    assert "Reaped deployment.quiet (endpoint demo-ep-quiet, workspace dev)" in out and "no invocation since" in out
    assert "deleted 2 inference component(s), the endpoint, 1 endpoint config(s), 1 model(s)" in out
    assert "saves $0.12/h" in out  # ml.m5.large
    assert "kept deployment.demo-ep-young" in out and "kept deployment.demo-ep-busy" in out
    assert "Reaped 2 endpoint(s) by their tags. Saving $0.23/h. They are in no state" in out
    assert world.endpoints() == {"demo-ep-young", "demo-ep-busy", "other-ep-old"}
    assert world.models() == {"demo-ep-young-model", "demo-ep-busy-model", "other-ep-old-model"}
    assert not (folder / "state").exists()  # no state was made up
    assert {p["EndpointName"] for p in sent(environ, "DeleteEndpoint")} == {"demo-ep-old", "demo-ep-quiet"}
    assert sent(environ, "GetResources")[0]["TagFilters"] == [{"Key": "fastuner:project", "Values": ["demo"]}]
    # `fastuner iam-policy` allows every call it made, and its reaping rows were all needed
    scope = scope_of(load_spec(folder / "fastuner.yaml", resources=False, environ={}).config)
    coverage = covers(policy(scope), requests_of(read_call_log(Path(environ[CALL_LOG_ENV]).read_text()), scope))
    assert coverage.denied == ()
    assert not {a for g in RUNNER if g.feature == "reap" for a in g.actions} & set(coverage.unused)

    again = cli("reap", "--from-tags", "--auto-approve", cwd=folder, clock=clock, environ=environ)
    assert again.code == 0 and "0 past their ttl or idle_ttl." in again.out and "Reaped" not in again.out


def test_json_dry_run_and_every_project(cli, world: ReapWorld, folder: Path, environ: dict[str, str]) -> None:
    landscape(world)
    clock = Clock(world.later(hours=2))
    dry = cli("reap", "--from-tags", "--dry-run", "--json", cwd=folder, clock=clock, environ=environ)
    assert dry.code == 0, dry.text
    doc = json.loads(dry.out)
    assert doc["reaped"] == []
    assert [(r["address"], r["reason"]) for r in doc["would_reap"]] == [
        ("deployment.demo-ep-old", "delete_because_ttl_expired"), ("deployment.quiet", "delete_because_idle_ttl_expired")]
    assert doc["from_tags"]["found"] == 4 and len(doc["from_tags"]["kept"]) == 2
    assert len(world.endpoints()) == 5 and not sent(environ, "DeleteEndpoint")

    run = cli("reap", "--all-projects", "--auto-approve", "--json", cwd=folder, clock=clock, environ=environ)
    assert run.code == 0, run.text
    doc = json.loads(run.out)
    reaped = {r["endpoint"]: r for r in doc["reaped"]}
    assert set(reaped) == {"demo-ep-old", "demo-ep-quiet", "other-ep-old"}
    old = reaped["demo-ep-old"]
    assert old["source"] == "tags" and old["reaped"] and old["error"] is None and old["project"] == "demo"
    assert old["deleted"] == {"endpoint": "demo-ep-old", "inference_components": ["demo-ep-old-a", "demo-ep-old-base"],
                              "endpoint_configs": ["demo-ep-old-config"], "models": ["demo-ep-old-model"]}
    assert old["hourly_usd_saved"] == pytest.approx(0.115) and old["past_expiry_hours"] == pytest.approx(1.0, abs=0.01)
    assert reaped["other-ep-old"]["project"] == "other" and not reaped["other-ep-old"]["recorded_in_state"]
    assert doc["from_tags"]["project"] is None
    assert world.endpoints() == {"demo-ep-young", "demo-ep-busy"}


def test_a_state_that_tracks_a_reaped_endpoint_records_its_expiry(cli, world: ReapWorld, folder: Path,
                                                                   environ: dict[str, str]) -> None:
    """The state records deployment.api (its endpoint demo-ep-api); an endpoint of a crashed apply
    (demo-ep-lost) is in no state. Both are reaped by their tags; only the state's own is recorded."""
    ended = world.later(hours=1)
    world.deployment("demo-ep-api", expires_at=ended, address="deployment.api")
    world.deployment("demo-ep-lost", expires_at=ended, address="deployment.lost")
    store = LocalStateStore(folder / "state" / "demo.json")
    state = empty_state("demo", "default")
    state.resources["deployment.api"] = ResourceState(
        address="deployment.api", kind="deployment", name="api", physical_name="demo-ep-api",
        inputs={"base_model": "org/base", "ttl": "1h", "idle_ttl": None}, created_at=world.now,
        outputs={"endpoint_name": "demo-ep-api", "model_name": "demo-ep-api-model"}, expires_at=ended)
    written = store.write(state)
    clock = Clock(world.later(hours=2))

    run = cli("reap", "--from-tags", "--auto-approve", cwd=folder, clock=clock, environ=environ)
    assert run.code == 0, run.text
    assert "Recorded deployment.api as expired in" in run.out
    assert "1 recorded as expired in state: they stay down until renewed." in run.out
    after = store.read()
    assert after.serial == written.serial + 1 and after.lineage == written.lineage
    api = after.get("deployment.api")
    assert api.status is Status.EXPIRED and api.expires_at == ended.replace(microsecond=0)
    assert api.outputs == {"expired_at": clock.now.isoformat()} and api.inputs["ttl"] == "1h"
    assert set(after.resources) == {"deployment.api"}  # the lost one is not invented
    assert world.endpoints() == set()
    assert store.current_lock() is None  # taken for the record, released

    plan = cli("plan", "--json", cwd=folder, clock=clock, environ=environ)  # the spec has no deployment now
    assert plan.code == 0, plan.text


def test_a_locked_state_skips_only_the_record(cli, world: ReapWorld, folder: Path, environ: dict[str, str]) -> None:
    """Another run holds the state's lock: the endpoint goes all the same (its lifetime ended), the record
    is skipped and said so; the state is untouched (its next plan finds the ttl ended by itself)."""
    import subprocess
    import sys

    from tests.cli.test_faults import HOLD_LOCK

    ended = world.later(hours=1)
    world.deployment("demo-ep-api", expires_at=ended, address="deployment.api")
    store = LocalStateStore(folder / "state" / "demo.json")
    state = empty_state("demo", "default")
    state.resources["deployment.api"] = ResourceState(
        address="deployment.api", kind="deployment", name="api", physical_name="demo-ep-api",
        inputs={"ttl": "1h"}, created_at=world.now, outputs={"endpoint_name": "demo-ep-api"})
    written = store.write(state)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder / "state" / "demo.json")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        run = cli("reap", "--from-tags", "--auto-approve", cwd=folder, clock=Clock(world.later(hours=2)),
                  environ=environ)
    finally:
        holder.communicate("\n", timeout=30)
    assert run.code == 0, run.text
    assert "Reaped deployment.api" in run.out and "Not recorded in" in run.out and "the state is locked" in run.out
    assert world.endpoints() == set()
    assert store.read().serial == written.serial and store.read().get("deployment.api").status is Status.READY


def test_with_a_state_its_own_reap_runs_first_and_the_tags_catch_what_it_lacks(
        cli, world: ReapWorld, folder: Path, environ: dict[str, str]) -> None:
    LocalStateStore(folder / "state" / "demo.json").write(empty_state("demo", "default"))
    world.deployment("demo-ep-lost", expires_at=world.later(hours=1), address="deployment.lost")
    run = cli("reap", "--auto-approve", cwd=folder, clock=Clock(world.later(hours=2)), environ=environ)
    assert run.code == 0, run.text
    assert "Nothing to reap: no deployment is past its ttl or idle_ttl." in run.out  # the state's reap
    assert "No state for workspace" not in run.out
    assert "Reaped deployment.lost (endpoint demo-ep-lost)" in run.out and world.endpoints() == set()


def test_from_tags_needs_the_sagemaker_provider(cli, tmp_path: Path) -> None:
    (tmp_path / "fastuner.yaml").write_text("version: 1\nproject: demo\n")
    run = cli("reap", "--from-tags", cwd=tmp_path, environ={})
    assert run.code == 1 and "provider is local" in run.err and "Traceback" not in run.text


def test_a_refused_tagging_call_says_what_to_allow(cli, world: ReapWorld, folder: Path, environ: dict[str, str],
                                                    monkeypatch) -> None:
    """AWS refusing GetResources (moto allows everything): refused where fastuner's calls are observed."""
    from botocore.exceptions import ClientError

    from fastuner.aws.clients import AwsSession

    observed = AwsSession._provided

    def refuse(self, params, model, **kw):
        observed(self, params, model, **kw)
        if model.name == "GetResources":
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "User: arn:aws:sts::1:"
                                         "assumed-role/ci is not authorized to perform: tag:GetResources"}},
                              "GetResources")

    monkeypatch.setattr(AwsSession, "_provided", refuse)
    run = cli("reap", "--from-tags", "--auto-approve", cwd=folder, environ=environ)
    assert run.code == 1 and "tag:GetResources" in run.err and "Traceback" not in run.text


def test_marking_a_reaped_endpoint_touches_only_the_instance_state_knows() -> None:
    from datetime import UTC, datetime, timedelta

    from fastuner.cli.reap import mark_reaped
    from fastuner.state.model import Deposed

    now = datetime(2026, 12, 7, 15, tzinfo=UTC)
    ended = now - timedelta(hours=1)
    state = empty_state("demo", "default")
    state.resources["deployment.api"] = ResourceState(
        address="deployment.api", kind="deployment", name="api", physical_name="demo-ep-api-2",
        outputs={"endpoint_name": "demo-ep-api-2"}, inputs={"ttl": "8h"},
        deposed=[Deposed(physical_name="demo-ep-api-1", outputs={"endpoint_name": "demo-ep-api-1"})])
    state.resources["adapter.a"] = ResourceState(address="adapter.a", kind="adapter", name="a", physical_name="x")
    before = state.model_copy(deep=True)
    assert not mark_reaped(state, "deployment.api", "demo-ep-other", ended, now)
    assert not mark_reaped(state, "deployment.gone", "demo-ep-api-2", ended, now)
    assert not mark_reaped(state, "adapter.a", "x", ended, now)
    assert state == before
    # a replaced instance waiting for deletion: only it is dropped
    assert mark_reaped(state, "deployment.api", "demo-ep-api-1", ended, now)
    api = state.get("deployment.api")
    assert api.deposed == [] and api.status is Status.READY and api.outputs == {"endpoint_name": "demo-ep-api-2"}
    # the current instance: expired, keeping the lifetime it ended under
    assert mark_reaped(state, "deployment.api", "demo-ep-api-2", ended, now)
    assert (api.status, api.expires_at, api.outputs, api.inputs) == (Status.EXPIRED, ended,
                                                                     {"expired_at": now.isoformat()}, {"ttl": "8h"})
    assert not mark_reaped(state, "deployment.api", "demo-ep-api-2", ended, now)  # already expired


def test_from_tags_needs_neither_the_resources_nor_their_variables(cli, world: ReapWorld, folder: Path,
                                                                   environ: dict[str, str]) -> None:
    (folder / "fastuner.yaml").write_text(SPEC + 'variables:\n  data: {description: where the data is}\n'
                                          'datasets:\n  d: {path: "${var.data}/d.jsonl", task: classification}\n')
    world.deployment("demo-ep-old", expires_at=world.later(hours=1))
    assert cli("reap", cwd=folder, environ=environ).code == 1  # planning needs the variable
    run = cli("reap", "--from-tags", "--auto-approve", cwd=folder, clock=Clock(world.later(hours=2)),
              environ=environ)
    assert run.code == 0, run.text
    assert "Reaped deployment.demo-ep-old" in run.out and world.endpoints() == set()


def test_a_protected_deployment_refuses_the_reap_by_tags_whole(cli, world: ReapWorld, folder: Path,
                                                                environ: dict[str, str], tmp_path: Path) -> None:
    """As a reap from state: a protected address past its lifetime breaks the policy (exit 3), and
    nothing is deleted until it leaves the list — the spec's, or a policy file's."""
    world.deployment("demo-ep-api", expires_at=world.later(hours=1), address="deployment.api")
    world.deployment("demo-ep-other", expires_at=world.later(hours=1), address="deployment.other")
    clock = Clock(world.later(hours=2))
    (folder / "fastuner.yaml").write_text(SPEC + "policy: {protect: [deployment.api]}\n")
    run = cli("reap", "--from-tags", "--auto-approve", cwd=folder, clock=clock, environ=environ)
    assert run.code == 3, run.text
    assert "breaks the policy" in run.out and "policy protect (spec): deployment.api would be destroyed" in run.out
    assert world.endpoints() == {"demo-ep-api", "demo-ep-other"} and not sent(environ, "DeleteEndpoint")
    doc = json.loads(cli("reap", "--from-tags", "--json", cwd=folder, clock=clock, environ=environ).out)
    assert doc["violations"] == [{"rule": "protect", "address": "deployment.api", "figure": "delete", "limit": "",
                                  "source": "spec", "detail": "would be destroyed"}] and doc["reaped"] == []
    (folder / "fastuner.yaml").write_text(SPEC)
    (tmp_path / "ci-policy.yaml").write_text("policy: {protect: [deployment.api]}\n")
    by_file = cli("reap", "--auto-approve", "--policy", str(tmp_path / "ci-policy.yaml"), cwd=folder, clock=clock,
                  environ=environ)
    assert by_file.code == 3 and "policy file" in by_file.out and len(world.endpoints()) == 2
    assert cli("reap", "--auto-approve", cwd=folder, clock=clock, environ=environ).code == 0
    assert world.endpoints() == set()
