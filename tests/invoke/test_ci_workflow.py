"""`fastuner ci github`: the rendered workflow parses, has its three triggers, runs the loop's steps in
order, shares one concurrency group between apply and reap, treats `plan` exit 2 as "changes" and exit 3
(the policy) as a failure once the plan is commented, passes the spec's variables from repository secrets
or variables, and is stable (golden files in tests/golden/ci/, rewritten with FASTUNER_UPDATE_GOLDEN=1)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from fastuner.cli.ci import github_settings
from fastuner.views.ci import render_github_workflow
from tests.cli.helpers import actionlint

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "ci"
UPDATE = os.environ.get("FASTUNER_UPDATE_GOLDEN") == "1"
CASES = {
    "github-default.yml": {},
    "github-subfolder.yml": {"workdir": "ml/intents", "python": "3.12", "reap_cron": "*/30 6-20 * * 1-5",
                             "branch": "release/v2", "runs_on": "self-hosted",
                             "install": 'pip install "fastuner[train] @ git+https://example.com/fastuner.git"',
                             "variables": ["base_model", "data_dir"]},
}
# the AWS variant: OIDC credentials in every job, the reap by tags in a group of its own
AWS_CASES = {
    "github-aws.yml": {"aws": True, "aws_region": "eu-west-1", "variables": ["account", "region"]},
    "github-aws-role.yml": {"aws": True, "aws_region": "us-gov-west-1", "workdir": "ml/intents",
                            "aws_role": "arn:aws-us-gov:iam::123456789012:role/ci/fastuner-ci"},
}
DEFAULTS = {"python": "3.11", "workdir": ".", "reap_cron": "17 * * * *", "branch": "main",
            "runs_on": "ubuntu-latest", "install": None}


def render(**kw) -> str:
    return render_github_workflow(github_settings(**{**DEFAULTS, **kw}))


def steps_of(job: dict) -> list[str]:
    return [s.get("name") or s["uses"].split("@")[0] for s in job["steps"]]


@pytest.mark.parametrize("name", sorted({**CASES, **AWS_CASES}))
def test_golden(name: str) -> None:
    text = render(**{**CASES, **AWS_CASES}[name])
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing {path}; create it with FASTUNER_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs; if intended, rewrite with FASTUNER_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", sorted(CASES))
def test_structure(name: str) -> None:
    settings = {**DEFAULTS, **CASES[name]}
    doc = yaml.safe_load(render(**CASES[name]))
    triggers = doc[True]  # YAML 1.1 reads the key `on` as true; GitHub reads it as "on"
    assert set(triggers) == {"pull_request", "push", "schedule", "workflow_dispatch"}
    assert triggers["push"]["branches"] == [settings["branch"]]
    assert triggers["schedule"] == [{"cron": settings["reap_cron"]}]
    jobs = doc["jobs"]
    assert jobs["plan"]["if"] == "github.event_name == 'pull_request'"
    assert jobs["apply"]["if"] == "github.event_name == 'push'"
    assert jobs["reap"]["if"] == "github.event_name == 'schedule' || github.event_name == 'workflow_dispatch'"
    assert steps_of(jobs["plan"]) == ["actions/checkout", "actions/setup-python", "Install fastuner", "Validate",
                                      "Plan", "Render the plan as Markdown", "Comment on the pull request",
                                      "actions/upload-artifact", "Check the plan"]
    assert steps_of(jobs["apply"])[-1] == "Apply" and steps_of(jobs["reap"])[-1] == "Reap expired deployments"
    run = {s.get("name"): s.get("run", "") for job in jobs.values() for s in job["steps"]}
    assert "fastuner plan --out plan.json --detailed-exitcode" in run["Plan"]
    assert run["Render the plan as Markdown"] == "fastuner show plan.json --markdown > plan.md"
    assert run["Apply"] == "fastuner apply --auto-approve" and run["Reap expired deployments"] == "fastuner reap --auto-approve"
    # apply and reap never overlap; a newer plan of the same pull request cancels the older one
    assert jobs["apply"]["concurrency"] == jobs["reap"]["concurrency"]
    assert jobs["apply"]["concurrency"]["cancel-in-progress"] is False
    assert jobs["plan"]["concurrency"]["cancel-in-progress"] is True
    assert jobs["plan"]["permissions"]["pull-requests"] == "write" and doc["permissions"] == {"contents": "read"}
    for job in jobs.values():
        assert job["defaults"]["run"]["working-directory"] == settings["workdir"]
        assert job["steps"][1]["with"]["python-version"] == settings["python"]
    comment = jobs["plan"]["steps"][6]
    assert comment["uses"] == "actions/github-script@v8" and comment["env"]["MARKER"].startswith("<!-- fastuner-plan")
    assert comment["env"]["PLAN_MD"] == ("plan.md" if settings["workdir"] == "." else f"{settings['workdir']}/plan.md")


@pytest.mark.parametrize("name", sorted(AWS_CASES))
def test_aws_jobs_assume_a_role_through_oidc_and_reap_by_tags(name: str) -> None:
    settings = {**DEFAULTS, **AWS_CASES[name]}
    text = render(**AWS_CASES[name])
    jobs = yaml.safe_load(text)["jobs"]
    role = settings.get("aws_role")
    for job_name, job in jobs.items():
        assert job["permissions"]["id-token"] == "write" and job["permissions"]["contents"] == "read"
        names = steps_of(job)
        credentials = job["steps"][names.index("Install fastuner") + 1]
        assert credentials["uses"] == "aws-actions/configure-aws-credentials@v6"
        assert credentials["with"]["aws-region"] == settings["aws_region"]
        assert credentials["with"]["role-session-name"] == f"fastuner-{job_name}"
        fallback = f"'{role}'" if role else "vars.FASTUNER_AWS_ROLE"
        wanted = ("${{ vars.FASTUNER_AWS_PLAN_ROLE || " + fallback + " }}" if job_name == "plan"
                  else role or "${{ vars.FASTUNER_AWS_ROLE }}")
        assert credentials["with"]["role-to-assume"] == wanted
    # a fork's pull request has no OIDC token: not planned rather than failed
    assert "github.event.pull_request.head.repo.full_name == github.repository" in jobs["plan"]["if"]
    reap = {s.get("name"): s.get("run") for s in jobs["reap"]["steps"]}["Reap expired deployments"]
    assert reap == "fastuner reap --auto-approve --from-tags --lock-timeout 2m"
    # reaping by tags never waits behind an apply (training can take hours), only behind another reap
    assert jobs["reap"]["concurrency"]["group"] != jobs["apply"]["concurrency"]["group"]
    assert jobs["reap"]["concurrency"]["cancel-in-progress"] is False
    assert "The schedule is the reap interval" in text and "repo:OWNER/REPO:pull_request" in text


def test_the_variant_follows_the_spec_and_its_region(cli, tmp_path: Path) -> None:
    folder = tmp_path / "ml"
    folder.mkdir()
    spec = folder / "fastuner.yaml"
    spec.write_text('version: 1\nproject: demo\nvariables:\n  region: {default: eu-central-1}\n  account: {}\n'
                    'provider:\n  sagemaker: {region: "${var.region}", role_arn: "arn:aws:iam::${var.account}:role/x",'
                    ' bucket: b}\n')
    run = cli("ci", "github", "--out", "-", "--workdir", "ml", cwd=tmp_path)
    assert run.code == 0, run.text
    both = ["account", "region"]  # declared or used: passed from the repository's secrets or variables
    assert run.out == render(workdir="ml", aws=True, aws_region="eu-central-1", variables=both)
    no_aws = cli("ci", "github", "--out", "-", "--workdir", "ml", "--no-aws", cwd=tmp_path).out
    assert no_aws == render(workdir="ml", variables=both)
    spec.write_text("version: 1\nproject: demo\nbackend: {s3: {bucket: b, key: k.json, region: \"${var.r}\"}}\n")
    unknown = cli("ci", "github", "--out", "-", "--workdir", "ml", cwd=tmp_path)
    assert unknown.code == 1 and "needs a region" in unknown.err and "--aws-region" in unknown.err
    given = cli("ci", "github", "--out", "-", "--workdir", "ml", "--aws-region", "ap-south-1", cwd=tmp_path)
    assert given.code == 0 and '"ap-south-1"' in given.out
    written = cli("ci", "github", "--workdir", "ml", "--aws-region", "ap-south-1", cwd=tmp_path)
    assert "set the repository variable FASTUNER_AWS_ROLE" in written.out
    spec.write_text("version: 1\nproject: demo\n")
    assert cli("ci", "github", "--out", "-", "--workdir", "ml", cwd=tmp_path).out == render(workdir="ml")


@pytest.mark.parametrize(("args", "message"), [
    (["--aws", "--aws-region", "mars-1"], "is not an AWS region"),
    (["--aws", "--aws-region", "eu-west-1", "--aws-role", "fastuner-ci"], "is not an IAM role ARN"),
    (["--aws"], "needs a region"),
])
def test_bad_aws_settings_are_user_errors(cli, tmp_path: Path, args: list[str], message: str) -> None:
    run = cli("ci", "github", "--out", "-", *args, cwd=tmp_path)
    assert run.code == 1 and message in run.err and "Traceback" not in run.text


def plan_step(name: str) -> dict:
    return next(s for s in yaml.safe_load(render())["jobs"]["plan"]["steps"] if s.get("name") == name)


def run_step(step: dict, tmp_path: Path, *, fastuner_exit: int = 0, env: dict[str, str] | None = None):
    """Run a step's script the way GitHub does (bash -e) with a stand-in `fastuner` exiting `fastuner_exit`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "fastuner"
    fake.write_text(f"#!/bin/sh\nexit {fastuner_exit}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "step.sh").write_text(step["run"])
    output = tmp_path / "github_output"
    output.write_text("")
    full = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GITHUB_OUTPUT": str(output), **(env or {})}
    proc = subprocess.run(["bash", "-e", str(tmp_path / "step.sh")], env=full, capture_output=True, text=True)
    return proc, output.read_text()


@pytest.mark.parametrize(("code", "ok", "changes"), [(0, True, "false"), (2, True, "true"), (3, True, "false"),
                                                     (1, False, "false"), (130, False, "false")])
def test_plan_step_treats_exit_2_as_changes_and_lets_3_reach_the_comment(tmp_path: Path, code: int, ok: bool,
                                                                          changes: str) -> None:
    proc, outputs = run_step(plan_step("Plan"), tmp_path, fastuner_exit=code)
    assert (proc.returncode == 0) is ok, proc.stderr
    assert outputs == f"code={code}\nchanges={changes}\n"


@pytest.mark.parametrize(("code", "ok"), [("0", True), ("2", True), ("3", False), ("1", False), ("", False)])
def test_the_check_after_the_comment_fails_the_job_on_a_policy_violation(tmp_path: Path, code: str, ok: bool) -> None:
    """0 and 2 pass, 3 (and anything else) fails; the step reads the Plan step's recorded code and runs
    after the comment and the artifact, whatever the plan said."""
    check = plan_step("Check the plan")
    assert check["env"]["PLAN_EXIT"] == "${{ steps.plan.outputs.code }}" and "if" not in check
    proc, _ = run_step(check, tmp_path, env={"PLAN_EXIT": code})
    assert (proc.returncode == 0) is ok, proc.stdout + proc.stderr
    if code == "3":
        assert "::error::The plan breaks the policy" in proc.stdout


def test_the_spec_variables_come_from_repository_secrets_or_variables(cli, tmp_path: Path) -> None:
    spec = tmp_path / "fastuner.yaml"
    spec.write_text('# ${var.in_a_comment} is no variable\nversion: 1\nproject: demo\nvariables:\n'
                    '  base_model: {default: models/x}\ndatasets:\n  d: {path: "${var.data}/d.jsonl", '
                    'task: classification, split: {seed: 1}}\n  e: {path: "$${var.literal}", task: qa}\n')
    doc = yaml.safe_load(cli("ci", "github", "--out", "-", cwd=tmp_path).out)
    assert doc["env"] == {f"FASTUNER_VAR_{n}": f"${{{{ secrets.FASTUNER_VAR_{n} || vars.FASTUNER_VAR_{n} }}}}"
                          for n in ("base_model", "data")}
    spec.write_text("version: 1\nproject: demo\n")
    assert "env" not in yaml.safe_load(cli("ci", "github", "--out", "-", cwd=tmp_path).out)


def test_an_unset_repository_variable_arrives_empty_and_counts_as_unset(tmp_path: Path) -> None:
    from fastuner.config.loader import load_spec

    (tmp_path / "fastuner.yaml").write_text("version: 1\nproject: demo\nvariables:\n  size: {default: small}\n"
                                            "datasets:\n  d: {path: '${var.size}.jsonl', task: qa}\n")
    spec = load_spec(tmp_path / "fastuner.yaml", environ={"FASTUNER_VAR_size": ""})
    assert spec.config.datasets["d"].path == "small.jsonl"


def test_rendering_is_strict() -> None:
    settings = github_settings(**DEFAULTS)
    del settings["marker"]
    with pytest.raises(jinja2.UndefinedError):
        render_github_workflow(settings)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--reap-cron", "hourly", "not a 5-field cron"), ("--python", "3", "not a Python 3 version"),
    ("--workdir", "../elsewhere", "inside the repository"), ("--workdir", "/abs", "inside the repository"),
    ("--branch", "a b", "not a branch name"), ("--runs-on", "x\ny", "one printable line"),
])
def test_bad_settings_are_user_errors(cli, tmp_path: Path, flag: str, value: str, message: str) -> None:
    run = cli("ci", "github", "--out", "-", flag, value, cwd=tmp_path)
    assert run.code == 1 and message in run.err and "Traceback" not in run.text


def test_the_command_writes_and_never_overwrites_silently(cli, tmp_path: Path) -> None:
    run = cli("ci", "github", cwd=tmp_path)
    assert run.code == 0, run.text
    written = tmp_path / ".github" / "workflows" / "fastuner.yml"
    assert written.read_text() == render()
    assert cli("ci", "github", cwd=tmp_path).code == 0  # the same text again: fine
    changed = cli("ci", "github", "--reap-cron", "5 * * * *", cwd=tmp_path)
    assert changed.code == 1 and "--force" in changed.text and written.read_text() == render()
    assert cli("ci", "github", "--reap-cron", "5 * * * *", "--force", cwd=tmp_path).code == 0
    assert '"5 * * * *"' in written.read_text()
    printed = cli("ci", "github", "--out", "-", cwd=tmp_path)
    assert printed.out == render()


# Every option of `fastuner ci github`, each at values that stress quoting: the workflow it writes must
# be clean under actionlint (with shellcheck on the `run:` scripts), not only the golden defaults.
LINTED = {
    **CASES,
    "spaces-and-quotes": {"workdir": "ml/my project", "runs_on": "self-hosted", "python": "3.13.1",
                          "install": "pip install 'fastuner[train]' && echo \"done: $HOME\""},
    "weekly-reap": {"reap_cron": "0 3 * * SUN", "branch": "trunk", "runs_on": "ubuntu-24.04"},
    "deep-folder": {"workdir": "./a/b/c", "install": "pip install -e ."},
    **AWS_CASES,
    "aws-spaces-and-a-literal-role": {"aws": True, "aws_region": "cn-north-1", "workdir": "ml/my project",
                                      "aws_role": "arn:aws-cn:iam::123456789012:role/fastuner+ci@team=ml",
                                      "reap_cron": "*/15 * * * *", "runs_on": "self-hosted"},
}


@pytest.mark.parametrize("name", sorted(LINTED))
def test_actionlint_finds_nothing(tmp_path: Path, name: str) -> None:
    """Any finding of actionlint (with shellcheck on the `run:` scripts) fails."""
    workflow = tmp_path / ".github" / "workflows" / "fastuner.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(render(**LINTED[name]))
    proc = actionlint(workflow)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actions_are_on_their_current_node24_majors() -> None:
    """node20 actions are deprecated (GitHub removes the runtime in September 2026)."""
    used = sorted({s["uses"] for job in yaml.safe_load(render())["jobs"].values() for s in job["steps"] if "uses" in s})
    assert used == ["actions/checkout@v7", "actions/github-script@v8", "actions/setup-python@v7",
                    "actions/upload-artifact@v7"]
    aws = sorted({s["uses"] for job in yaml.safe_load(render(aws=True, aws_region="eu-west-1"))["jobs"].values()
                  for s in job["steps"] if "uses" in s})
    assert aws == sorted([*used, "aws-actions/configure-aws-credentials@v6"])  # its action.yml: node24
