"""`fastuner init`: what it scaffolds validates and plans as written (local; SageMaker under moto after
`fastuner bootstrap`), the workflow passes actionlint, nothing existing is ever overwritten, .gitignore
gets only the lines it lacks, and the project name is made valid from the folder's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fastuner.cli.ci import GITHUB_DEFAULTS, github_settings, spec_variables
from fastuner.cli.main import InitTask
from fastuner.cli.scaffold import GITIGNORE_HEADER, GITIGNORE_LINES, plan_scaffold, sanitise
from fastuner.config.schema import spec_schema_text
from fastuner.config.tasks import Task
from fastuner.views.ci import render_github_workflow
from tests.cli.helpers import actionlint
from tests.cli.test_options import commands

AWS_ENVIRON = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_MAX_ATTEMPTS": "2",
               "FASTUNER_VAR_account": "123456789012"}
WORKFLOW = Path(".github") / "workflows" / "fastuner.yml"


def written(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def plan_json(cli, folder: Path, environ: dict[str, str] | None = None) -> dict:
    run = cli("plan", "--json", cwd=folder, environ=environ)
    assert run.code == 0, run.text
    return json.loads(run.out)


# --- what it writes validates and plans -------------------------------------------------------------------


@pytest.mark.parametrize("task", [t.value for t in Task])
def test_local_scaffold_validates_and_plans_as_written(task: str, tmp_path: Path, cli) -> None:
    run = cli("init", "My Project", "--task", task, cwd=tmp_path)
    assert run.code == 0, run.text
    folder = tmp_path / "My Project"
    dataset = {"classification": "intents", "text_generation": "replies", "qa": "faq"}[task]
    assert written(folder) == {"fastuner.yaml", f"data/{dataset}.jsonl", "specs/fastuner.schema.json", ".gitignore"}
    for name in written(folder):
        assert name in run.out, f"{name} is not named in the output:\n{run.out}"
    assert "Wrote project my-project in My Project:" in run.out
    assert "cd 'My Project'" in run.out and "fastuner validate && fastuner plan" in run.out

    run = cli("validate", cwd=folder, environ={})
    assert run.code == 0 and "Success!" in run.out, run.text
    assert f"dataset.{dataset}: 12 rows" in run.out
    plan = plan_json(cli, folder, environ={})
    assert plan["project"] == "my-project" and plan["provider"] == "local"
    assert {c["address"] for c in plan["changes"]} == {f"dataset.{dataset}", f"adapter.{dataset}-lora",
                                                       f"deployment.{dataset}-api"}
    assert {c["action"] for c in plan["changes"]} == {"create"}
    spec = yaml.safe_load((folder / "fastuner.yaml").read_text())
    assert spec["datasets"][dataset]["task"] == task and spec["deployments"][f"{dataset}-api"]["ttl"] == "8h"


def test_the_schema_it_points_editors_at_is_there(tmp_path: Path, cli) -> None:
    assert cli("init", cwd=tmp_path).code == 0
    first = (tmp_path / "fastuner.yaml").read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    schema = tmp_path / first.split("$schema=", 1)[1]  # relative to the spec, as the language server reads it
    assert schema.read_text() == spec_schema_text()
    assert cli("schema", "--check", "--root", str(tmp_path)).code == 1  # only state/state.schema.json is missing
    assert cli("schema", "--root", str(tmp_path)).code == 0 and schema.read_text() == spec_schema_text()


@pytest.mark.parametrize("ci", [False, True])
def test_sagemaker_scaffold_validates_bootstraps_and_plans_under_moto(ci: bool, tmp_path: Path, cli) -> None:
    from moto import mock_aws

    run = cli("init", "--provider", "sagemaker", "--project", "intents", *(["--ci", "github"] if ci else []),
              cwd=tmp_path)
    assert run.code == 0, run.text
    for step in ("fastuner iam-policy", "fastuner bootstrap", "FASTUNER_VAR_account"):
        assert step in run.out
    assert "cd " not in run.out  # initialised here
    assert ("AWS credentials" in run.out) is ci
    spec = (tmp_path / "fastuner.yaml").read_text()
    assert "fastuner bootstrap" in spec and "fastuner iam-policy" in spec
    with mock_aws():
        run = cli("validate", cwd=tmp_path, environ={k: v for k, v in AWS_ENVIRON.items() if "VAR" not in k})
        assert run.code == 1 and "variable `account` has no value" in run.err, run.text
        run = cli("validate", cwd=tmp_path, environ=AWS_ENVIRON)
        assert run.code == 0 and "Success!" in run.out, run.text
        run = cli("bootstrap", "--auto-approve", cwd=tmp_path, environ=AWS_ENVIRON)
        assert run.code == 0, run.text
        plan = plan_json(cli, tmp_path, AWS_ENVIRON)
    assert plan["project"] == "intents" and plan["provider"] == "sagemaker"
    # no endpoint unless asked for: it is billed by the hour
    assert {c["address"] for c in plan["changes"]} == {"dataset.intents", "adapter.intents-lora"}
    config = yaml.safe_load(spec)
    assert config["backend"]["s3"]["bucket"] == config["provider"]["sagemaker"]["bucket"] == "fastuner-${var.account}"
    assert config["provider"]["sagemaker"]["role_arn"] == "arn:aws:iam::${var.account}:role/fastuner-intents"
    assert (tmp_path / WORKFLOW).exists() is ci
    if ci:  # the AWS variant, in the spec's region, as `ci github` writes it for this spec
        assert "aws-actions/configure-aws-credentials@v6" in (tmp_path / WORKFLOW).read_text()
        assert 'aws-region: "us-east-1"' in (tmp_path / WORKFLOW).read_text()
        assert cli("ci", "github", cwd=tmp_path).code == 0
        assert actionlint(tmp_path / WORKFLOW).returncode == 0


def test_the_commented_sagemaker_deployment_validates_once_uncommented(tmp_path: Path, cli) -> None:
    assert cli("init", "--provider", "sagemaker", "--task", "text_generation", cwd=tmp_path).code == 0
    spec = tmp_path / "fastuner.yaml"
    head, commented = spec.read_text().split("# deployments:\n")
    assert all(line.startswith("# ") for line in commented.splitlines())
    spec.write_text(head + "deployments:\n" + "".join(line[2:] + "\n" for line in commented.splitlines()))
    run = cli("validate", cwd=tmp_path, environ=AWS_ENVIRON)
    assert run.code == 0 and "1 deployment(s)" in run.out, run.text
    assert yaml.safe_load(spec.read_text())["deployments"]["replies-api"]["adapters"] == ["replies-lora"]


# --- golden: the spec a user reads (rewritten with FASTUNER_UPDATE_GOLDEN=1) -------------------------------

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "init"
GOLDEN_CASES = {"local-classification.yaml": ("local", "classification"),
                "sagemaker-text_generation.yaml": ("sagemaker", "text_generation")}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_spec(name: str, tmp_path: Path) -> None:
    provider, task = GOLDEN_CASES[name]
    text = plan_scaffold(tmp_path / "demo", provider=provider, task=task, project=None, ci=None).files[
        tmp_path / "demo" / "fastuner.yaml"]
    path = GOLDEN / name
    if os.environ.get("FASTUNER_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing {path}; create it with FASTUNER_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs; if intended, rewrite with FASTUNER_UPDATE_GOLDEN=1"


# --- the CI workflow --------------------------------------------------------------------------------------


def test_ci_github_writes_what_ci_github_writes_and_it_lints_clean(tmp_path: Path, cli) -> None:
    run = cli("init", "--ci", "github", cwd=tmp_path)
    assert run.code == 0, run.text
    workflow = tmp_path / WORKFLOW
    variables = spec_variables((tmp_path / "fastuner.yaml").read_text())
    assert variables  # the scaffold's variables reach every job from the repository's secrets or variables
    assert workflow.read_text() == render_github_workflow(github_settings(**GITHUB_DEFAULTS, variables=variables))
    assert str(WORKFLOW) in run.out and "self-hosted runner" in run.out  # the local provider's caveat
    proc = actionlint(workflow)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cli("ci", "github", cwd=tmp_path).code == 0  # the same text: `ci github` agrees it is its own


def test_in_a_subfolder_of_a_repository_the_workflow_goes_to_its_root(tmp_path: Path, cli) -> None:
    (tmp_path / ".git").mkdir()
    run = cli("init", "ml/support bot", "--ci", "github", cwd=tmp_path)
    assert run.code == 0, run.text
    workflow = tmp_path / WORKFLOW
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    assert {job["defaults"]["run"]["working-directory"] for job in jobs.values()} == {"ml/support bot"}
    assert not (tmp_path / "ml" / "support bot" / ".github").exists()
    proc = actionlint(workflow)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec = yaml.safe_load((tmp_path / "ml" / "support bot" / "fastuner.yaml").read_text())
    assert spec["project"] == "support-bot"


def test_ci_github_defaults_are_the_ones_init_uses() -> None:
    params = {p.name: p.default for p in commands()["ci github"].params}
    assert {k: params[k] for k in GITHUB_DEFAULTS} == GITHUB_DEFAULTS


# --- never overwrites -------------------------------------------------------------------------------------


def test_refuses_when_any_file_exists_and_writes_nothing(tmp_path: Path, cli) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "intents.jsonl").write_text("mine\n")
    (tmp_path / "fastuner.yaml").write_text("mine\n")
    (tmp_path / WORKFLOW).parent.mkdir(parents=True)
    (tmp_path / WORKFLOW).write_text("mine\n")
    before = written(tmp_path)
    run = cli("init", "--ci", "github", cwd=tmp_path)
    assert run.code == 1 and "Traceback" not in run.text
    for name in ("fastuner.yaml", "data/intents.jsonl", str(WORKFLOW)):
        assert name in run.err
    assert "Nothing was written" in run.err and "ci github --out" in run.err
    assert written(tmp_path) == before  # no schema, no .gitignore
    assert all((tmp_path / name).read_text() == "mine\n" for name in before)


def test_a_second_init_is_refused(tmp_path: Path, cli) -> None:
    assert cli("init", cwd=tmp_path).code == 0
    files = {name: (tmp_path / name).read_text() for name in written(tmp_path)}
    run = cli("init", "--task", "qa", cwd=tmp_path)  # another dataset file, but the spec exists
    assert run.code == 1 and "fastuner.yaml" in run.err
    assert {name: (tmp_path / name).read_text() for name in written(tmp_path)} == files


def test_a_write_that_fails_midway_takes_back_what_it_wrote(tmp_path: Path, cli) -> None:
    (tmp_path / "data").write_text("a file where the data folder goes\n")
    run = cli("init", cwd=tmp_path)
    assert run.code == 1 and "cannot write data/intents.jsonl" in run.err and "Nothing was written" in run.err
    assert written(tmp_path) == {"data"}  # fastuner.yaml, written first, is gone again; no .gitignore


def test_a_gitignore_that_is_not_a_file_is_refused(tmp_path: Path, cli) -> None:
    (tmp_path / ".gitignore").mkdir()
    run = cli("init", cwd=tmp_path)
    assert run.code == 1 and ".gitignore" in run.err and written(tmp_path) == set()


def test_a_file_in_place_of_the_folder_is_refused(tmp_path: Path, cli) -> None:
    (tmp_path / "proj").write_text("")
    run = cli("init", "proj", cwd=tmp_path)
    assert run.code == 1 and "is a file, not a folder" in run.err


# --- .gitignore -------------------------------------------------------------------------------------------


def test_gitignore_gets_only_the_lines_it_lacks_once(tmp_path: Path, cli) -> None:
    gitignore = tmp_path / ".gitignore"
    gitignore.write_text("node_modules/\n.fastuner/")  # no newline at the end; .fastuner/ already (unanchored)
    run = cli("init", cwd=tmp_path)
    assert run.code == 0, run.text
    assert "3 line(s) for fastuner's local files appended; its other lines kept" in run.out
    lines = gitignore.read_text().splitlines()
    assert lines[:2] == ["node_modules/", ".fastuner/"]
    assert lines[2:] == ["", GITIGNORE_HEADER, *(x for x in GITIGNORE_LINES if x != "/.fastuner/")]
    # again, in a folder whose files were moved away: nothing to add
    for name in written(tmp_path) - {".gitignore"}:
        (tmp_path / name).unlink()
    run = cli("init", cwd=tmp_path)
    assert run.code == 0 and "already ignores fastuner's local files (unchanged)" in run.out, run.text
    assert gitignore.read_text().splitlines() == lines


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_gitignore_ignores_the_local_state_files_and_work_folder_but_not_the_state(tmp_path: Path, cli) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert cli("init", "sub", cwd=tmp_path).code == 0
    paths = ["sub/.fastuner/objects/ab/cd", "sub/state/sub.json.lock", "sub/state/sub.json.backup",
             "sub/state/.sub.json.123.tmp", "sub/state/sub.ws.json.lock", "sub/state/sub.json",
             "sub/fastuner.yaml", "sub/data/intents.jsonl"]
    proc = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=tmp_path, capture_output=True, text=True)
    assert proc.stdout.split() == paths[:5]  # the state itself may be committed (CI with a local backend)


# --- the project name -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("folder", "name"), [
    ("demo", "demo"), ("My Project", "my-project"), ("Café_ML--v2", "cafe-ml-v2"), ("2024 runs", "2024-runs"),
    ("a-very-long-project-name-indeed", "a-very-long-project"), ("x" * 19 + "-y", "x" * 19), ("__", ""), ("日本", ""),
])
def test_sanitise(folder: str, name: str) -> None:
    assert sanitise(folder) == name


def test_a_folder_name_with_nothing_usable_needs_project(tmp_path: Path, cli) -> None:
    run = cli("init", "___", cwd=tmp_path)
    assert run.code == 1 and "--project NAME" in run.err
    assert not (tmp_path / "___").exists() or not any((tmp_path / "___").iterdir())
    run = cli("init", "___", "--project", "Bad Name", cwd=tmp_path)
    assert run.code == 1 and "--project 'Bad Name' is not a valid project name" in run.err
    assert "--project bad-name" in run.err
    run = cli("init", "___", "--project", "good", cwd=tmp_path)
    assert run.code == 0, run.text
    assert yaml.safe_load((tmp_path / "___" / "fastuner.yaml").read_text())["project"] == "good"


# --- the command's choices --------------------------------------------------------------------------------


def test_task_choices_are_the_dataset_tasks() -> None:
    assert [t.value for t in InitTask] == [t.value for t in Task]


def test_unknown_choices_are_usage_errors(tmp_path: Path, cli) -> None:
    for argv in (["--provider", "gcp"], ["--task", "ner"], ["--ci", "gitlab"]):
        run = cli("init", *argv, cwd=tmp_path)
        assert run.code == 1 and "Invalid value" in run.text and "Traceback" not in run.text
    assert written(tmp_path) == set()
