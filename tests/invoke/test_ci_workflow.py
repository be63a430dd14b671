"""`fastuner ci github`: the rendered workflow parses, has its three triggers, runs the loop's steps in
order, shares one concurrency group between apply and reap, treats `plan` exit 2 as "changes", and
is stable (golden files in tests/golden/ci/, rewritten with FASTUNER_UPDATE_GOLDEN=1)."""

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
                             "install": 'pip install "fastuner[train] @ git+https://example.com/fastuner.git"'},
}
DEFAULTS = {"python": "3.11", "workdir": ".", "reap_cron": "17 * * * *", "branch": "main",
            "runs_on": "ubuntu-latest", "install": None}


def render(**kw) -> str:
    return render_github_workflow(github_settings(**{**DEFAULTS, **kw}))


def steps_of(job: dict) -> list[str]:
    return [s.get("name") or s["uses"].split("@")[0] for s in job["steps"]]


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    text = render(**CASES[name])
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
                                      "actions/upload-artifact"]
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


@pytest.mark.parametrize(("code", "ok", "changes"), [(0, True, "false"), (2, True, "true"), (1, False, None)])
def test_plan_step_treats_exit_2_as_changes(tmp_path: Path, code: int, ok: bool, changes: str | None) -> None:
    """Run the Plan step's script the way GitHub does (bash -e) with a stand-in `fastuner`."""
    plan = next(s for s in yaml.safe_load(render())["jobs"]["plan"]["steps"] if s.get("name") == "Plan")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "fastuner"
    fake.write_text(f"#!/bin/sh\nexit {code}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "step.sh").write_text(plan["run"])
    output = tmp_path / "github_output"
    output.touch()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GITHUB_OUTPUT": str(output)}
    proc = subprocess.run(["bash", "-e", str(tmp_path / "step.sh")], env=env, capture_output=True, text=True)
    assert (proc.returncode == 0) is ok, proc.stderr
    if changes is not None:
        assert output.read_text() == f"changes={changes}\n"


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
