"""Guard-rails through the CLI: a plan that breaks one exits 3 (whatever --detailed-exitcode says) and is
shown, saved and never applied; --policy FILE and FASTUNER_POLICY add a stricter policy file; protect
holds in destroy, --replace and reap; apply checks a saved plan again under the rules of now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastuner.cli.commands import EXIT_POLICY
from tests.cli.helpers import intents_rows, write_jsonl

SPEC = """\
version: 1
project: demo
policy:
{policy}
datasets:
  intents: {{path: data/intents.jsonl, task: classification}}
"""
DEPLOYMENT = """\
deployments:
  api:
    base_model: org/model
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "data" / "intents.jsonl", intents_rows(200))
    return tmp_path


def write(folder: Path, policy: str = "  {}", ttl: str | None = None, *, deployment: bool | None = None) -> None:
    """The spec with `policy`; a deployment when `ttl` is given (or `deployment`: one without a ttl)."""
    text = SPEC.format(policy=policy)
    if deployment or (deployment is None and ttl):
        text += DEPLOYMENT + (f"    ttl: {ttl}\n" if ttl else "")
    (folder / "fastuner.yaml").write_text(text)


def state(folder: Path) -> dict:
    path = folder / "state" / "demo.json"
    return json.loads(path.read_text())["resources"] if path.exists() else {}


def test_exit_code_3_is_kept_for_the_policy() -> None:
    from fastuner.cli import commands

    codes = [v for k, v in vars(commands).items() if k.startswith("EXIT_")]
    assert EXIT_POLICY == 3 and codes.count(3) == 1


def test_a_violating_plan_exits_3_and_says_rule_resource_and_figure(folder: Path, cli) -> None:
    write(folder, "  max_ttl: 1d", ttl="2d")
    run = cli("plan", "--detailed-exitcode", "--out", "plan.json", cwd=folder)
    assert run.code == EXIT_POLICY, run.text
    assert "This plan breaks the policy: apply refuses it." in run.out
    assert "  - policy max_ttl 1d (spec): deployment.api has ttl 2d" in run.out
    assert "fastuner apply plan.json" not in run.out  # no invitation to apply it
    saved = json.loads((folder / "plan.json").read_text())  # saved all the same, for the pull request
    assert saved["can_apply"] is False and saved["violations"][0]["rule"] == "max_ttl"
    markdown = cli("show", "plan.json", "--markdown", cwd=folder)
    assert markdown.out.startswith("### 🚫 fastuner plan")
    assert "> - policy max_ttl 1d (spec): deployment.api has ttl 2d" in markdown.out
    refused = cli("apply", "plan.json", cwd=folder)
    assert refused.code == EXIT_POLICY, refused.text
    assert "deployment.api has ttl 2d" in refused.out
    assert state(folder) == {}


def test_json_lists_the_violations(folder: Path, cli) -> None:
    write(folder, "  max_ttl: 1d", deployment=True)
    run = cli("plan", "--json", cwd=folder)
    assert run.code == EXIT_POLICY, run.text
    data = json.loads(run.out)
    assert data["violations"] == [{"rule": "max_ttl", "address": "deployment.api", "figure": "no ttl",
                                   "limit": "1d", "source": "spec", "detail": "has no ttl"}]
    assert data["policy"]["max_ttl"] == {"limit": "1d", "source": "spec"}
    assert data["can_apply"] is False


def test_apply_refuses_before_asking_or_doing_anything(folder: Path, cli) -> None:
    write(folder, "  max_ttl: 1d", ttl="2d")
    run = cli("apply", "--auto-approve", cwd=folder)
    assert run.code == EXIT_POLICY, run.text
    assert "policy max_ttl 1d (spec): deployment.api has ttl 2d" in run.out
    assert "Apply complete" not in run.out and state(folder) == {}


def test_a_policy_file_makes_the_spec_stricter_never_looser(folder: Path, cli) -> None:
    write(folder, "  max_ttl: 3d", ttl="2d")
    (folder / "ci").mkdir()
    (folder / "ci" / "policy.yaml").write_text("policy:\n  max_ttl: 1d\n")
    assert cli("plan", cwd=folder).code == 0
    run = cli("plan", "--policy", "ci/policy.yaml", cwd=folder)
    assert run.code == EXIT_POLICY, run.text
    assert "policy max_ttl 1d (policy file ci/policy.yaml): deployment.api has ttl 2d" in run.out
    # named by the environment, as CI does
    run = cli("plan", "--json", cwd=folder, environ={"FASTUNER_POLICY": "ci/policy.yaml"})
    assert run.code == EXIT_POLICY
    data = json.loads(run.out)
    assert data["violations"][0]["source"] == "policy_file"
    assert data["policy"]["file"] == "ci/policy.yaml"
    # a looser file has no effect but a warning
    (folder / "ci" / "policy.yaml").write_text("policy:\n  max_ttl: 10d\n")
    write(folder, "  max_ttl: 1d", ttl="2d")
    run = cli("plan", "--policy", "ci/policy.yaml", cwd=folder)
    assert run.code == EXIT_POLICY
    assert "policy max_ttl 1d (spec): deployment.api has ttl 2d" in run.out
    assert ("Warning: policy file ci/policy.yaml: max_ttl 10d is looser than the spec's 1d and was ignored "
            "(a policy file can only make rules stricter)") in run.out


def test_a_bad_policy_file_is_an_error_at_its_line(folder: Path, cli) -> None:
    write(folder)
    (folder / "policy.yaml").write_text("policy:\n  max_hourly_cots: 5\n")
    run = cli("plan", "--policy", "policy.yaml", cwd=folder)
    assert run.code == 1
    assert "unknown key `max_hourly_cots` in policy" in run.err and "policy.yaml:2:3" in run.err
    assert "Did you mean `max_hourly_cost`?" in run.err
    (folder / "policy.yaml").write_text("max_ttl: 1d\n")
    run = cli("plan", "--policy", "policy.yaml", cwd=folder)
    assert run.code == 1 and "unknown key `max_ttl` in the top level" in run.err
    run = cli("plan", cwd=folder, environ={"FASTUNER_POLICY": "missing.yaml"})
    assert run.code == 1 and "policy file not found: missing.yaml" in run.err


def test_protect_holds_in_destroy_and_replace_until_removed_from_the_list(folder: Path, cli) -> None:
    write(folder)
    assert cli("apply", "--auto-approve", cwd=folder).code == 0
    applied = state(folder)
    assert list(applied) == ["dataset.intents"]
    write(folder, "  protect: [dataset.intents]")
    run = cli("destroy", "--auto-approve", cwd=folder)
    assert run.code == EXIT_POLICY, run.text
    assert ("policy protect (spec): dataset.intents would be destroyed; remove it from protect to allow this"
            in run.out)
    run = cli("apply", "--auto-approve", "--replace", "dataset.intents", cwd=folder)
    assert run.code == EXIT_POLICY and "dataset.intents must be replaced" in run.out
    assert state(folder) == applied
    # protected by a policy file alone, the same
    write(folder)
    (folder / "policy.yaml").write_text("policy:\n  protect: [dataset.intents]\n")
    assert cli("destroy", "--auto-approve", "--policy", "policy.yaml", cwd=folder).code == EXIT_POLICY
    assert state(folder) == applied
    run = cli("destroy", "--auto-approve", cwd=folder)
    assert run.code == 0, run.text
    assert state(folder) == {}


def test_a_saved_plan_is_checked_again_when_the_policy_has_tightened(folder: Path, cli) -> None:
    write(folder, "  max_ttl: 3d", ttl="2d")
    assert cli("plan", "--out", "plan.json", cwd=folder).code == 0
    write(folder, "  max_ttl: 1d", ttl="2d")
    run = cli("apply", "plan.json", cwd=folder)
    assert run.code == EXIT_POLICY, run.text
    assert "policy max_ttl 1d (spec): deployment.api has ttl 2d" in run.out
    assert state(folder) == {}
    # a policy file named at apply time counts as well
    write(folder, "  max_ttl: 3d", ttl="2d")
    (folder / "policy.yaml").write_text("policy:\n  max_ttl: 1d\n")
    run = cli("apply", "plan.json", cwd=folder, environ={"FASTUNER_POLICY": "policy.yaml"})
    assert run.code == EXIT_POLICY and "(policy file policy.yaml)" in run.out
    assert state(folder) == {}


def test_a_saved_destroy_plan_is_refused_once_the_resource_is_protected(folder: Path, cli) -> None:
    write(folder)
    assert cli("apply", "--auto-approve", cwd=folder).code == 0
    assert cli("plan", "--destroy", "--out", "destroy.json", cwd=folder).code == 0
    write(folder, "  protect: [dataset.intents]")
    run = cli("apply", "destroy.json", cwd=folder)
    assert run.code == EXIT_POLICY, run.text
    assert "dataset.intents would be destroyed" in run.out
    assert list(state(folder)) == ["dataset.intents"]


def test_reap_never_deletes_a_protected_deployment(folder: Path, cli, clock) -> None:
    """State written by the real planner and engine with the in-memory provider (as tests/cli/test_ttl.py
    does): a deployment whose ttl has ended, protected."""
    from fastuner.config.loader import load_spec
    from fastuner.engine.apply import apply_plan
    from fastuner.plan.observed import Observed
    from fastuner.plan.planner import make_plan
    from fastuner.providers.memory import memory_provider
    from fastuner.state.local import LocalStateStore
    from fastuner.state.model import empty_state

    write(folder, "  {}", ttl="1h")
    spec = load_spec(folder / "fastuner.yaml", variables={}, environ={})
    store = LocalStateStore(folder / "state" / "demo.json")
    plan = make_plan(spec, empty_state("demo", "default"), Observed(dataset_sources={"intents": "x"}), clock.now)
    assert apply_plan(plan, store, memory_provider(), spec_dir=folder, clock=clock).ok
    write(folder, "  protect: [deployment.api]", ttl="1h")
    clock.tick(hours=2)
    run = cli("reap", "--auto-approve", "--json", cwd=folder, clock=clock)
    assert run.code == EXIT_POLICY, run.text
    data = json.loads(run.out)
    assert data["reaped"] == []
    assert [(v["rule"], v["address"]) for v in data["violations"]] == [("protect", "deployment.api")]
    assert state(folder)["deployment.api"]["status"] == "ready"
    run = cli("reap", "--dry-run", cwd=folder, clock=clock)
    assert run.code == EXIT_POLICY and "deployment.api would be destroyed" in run.out


SAGEMAKER_SPEC = """\
version: 1
project: demo
provider: {sagemaker: {region: us-east-1, role_arn: "arn:aws:iam::123456789012:role/fastuner", bucket: demo-bucket}}
policy:
  max_cost_per_apply: 5
  allowed_instance_types: ["ml.g5.*"]
datasets:
  intents: {path: data/intents.jsonl, task: classification}
adapters:
  big:
    base_model: org/model
    dataset: intents
    compute: {instance_type: ml.p4d.24xlarge, max_runtime: 1h}
"""


def test_cost_and_instance_type_rules_on_a_sagemaker_plan(folder: Path, cli) -> None:
    """Against moto: the plan's own estimate is what max_cost_per_apply is held to."""
    import boto3
    from moto import mock_aws

    (folder / "fastuner.yaml").write_text(SAGEMAKER_SPEC)
    environ = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_MAX_ATTEMPTS": "2"}
    with mock_aws():
        boto3.client("s3", region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="demo-bucket")
        run = cli("plan", "--json", cwd=folder, environ=environ)
        text = cli("plan", cwd=folder, environ=environ)
    assert run.code == EXIT_POLICY, run.text
    data = json.loads(run.out)
    assert data["cost"]["max_one_time_usd"] == 37.69
    assert data["violations"] == [
        {"rule": "max_cost_per_apply", "address": None, "figure": "$37.69", "limit": "$5.00", "source": "spec",
         "detail": "may cost up to $37.69 (adapter.big $37.69)"},
        {"rule": "allowed_instance_types", "address": "adapter.big", "figure": "ml.p4d.24xlarge",
         "limit": "ml.g5.*", "source": "spec", "detail": "would run a training job on ml.p4d.24xlarge"}]
    assert text.code == EXIT_POLICY
    assert "  - policy max_cost_per_apply $5.00 (spec): this plan may cost up to $37.69 (adapter.big $37.69)" in text.out
    assert ("  - policy allowed_instance_types ml.g5.* (spec): adapter.big would run a training job on "
            "ml.p4d.24xlarge") in text.out
