"""The CLI end to end on the local executor (datasets) and on the examples."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.cli.conftest import ROOT
from tests.cli.helpers import fastuner_subprocess, intents_rows, write_jsonl

EXAMPLES = sorted(p.parent.name for p in (ROOT / "examples").glob("*/fastuner.yaml"))


@pytest.mark.parametrize("example", EXAMPLES)
def test_validate_and_plan_every_example(example: str, cli) -> None:
    folder = ROOT / "examples" / example
    if "sagemaker" in (yaml.safe_load((folder / "fastuner.yaml").read_text()).get("provider") or {}):
        return _validate_and_plan_on_aws(folder, example, cli)
    run = cli("validate", cwd=folder)
    assert run.code == 0, run.text
    assert "Success!" in run.out
    run = cli("plan", "--json", cwd=folder)
    assert run.code == 0, run.text
    plan = json.loads(run.out)
    assert plan["format_version"] == 1 and plan["kind"] == "plan"
    assert plan["project"] == example
    assert {c["kind"] for c in plan["changes"]} >= {"dataset"}


def _validate_and_plan_on_aws(folder: Path, example: str, cli) -> None:
    """An AWS example plans against moto, after `fastuner bootstrap` made its bucket."""
    from moto import mock_aws

    environ = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_MAX_ATTEMPTS": "2",
               "FASTUNER_VAR_account": "123456789012"}
    with mock_aws():
        run = cli("validate", cwd=folder, environ=environ)
        assert run.code == 0 and "Success!" in run.out, run.text
        assert cli("bootstrap", "--auto-approve", cwd=folder, environ=environ).code == 0
        run = cli("plan", "--json", cwd=folder, environ=environ)
    assert run.code == 0, run.text
    plan = json.loads(run.out)
    assert plan["project"] == example and plan["provider"] == "sagemaker"
    assert {c["kind"] for c in plan["changes"]} == {"dataset", "adapter"}


def test_full_cycle(project: Path, cli) -> None:
    run = cli("plan", "--detailed-exitcode", "--out", "plan.json", cwd=project)
    assert run.code == 2, run.text
    assert "Plan: 1 to create, 0 to update, 0 to replace, 0 to destroy." in run.out
    run = cli("show", "plan.json", "--markdown")
    assert run.out.startswith("### 📝 fastuner plan — `demo`")
    assert json.loads(cli("show", "plan.json", "--json").out)["summary"]["create"] == 1
    run = cli("apply", "plan.json")
    assert run.code == 0, run.text
    assert "Apply complete! Resources: 1 created" in run.out
    state = json.loads((project / "state" / "demo.json").read_text())
    outputs = state["resources"]["dataset.intents"]["outputs"]
    assert outputs["counts"]["distinct"] == 200
    assert sum(s["rows"] for s in outputs["splits"].values()) == 200
    for split in outputs["splits"].values():
        assert (project / ".fastuner" / "objects" / split["key"]).is_file()
    assert cli("plan", "--detailed-exitcode").code == 0
    assert cli("state", "list").out.split() == ["dataset.intents"]
    shown = cli("state", "show", "dataset.intents")
    assert "ready" in shown.out and "manifest_key" in shown.out
    run = cli("destroy", "--auto-approve")
    assert run.code == 0, run.text
    assert "1 destroyed" in run.out
    assert cli("state", "list").out.split() == []
    assert not any((project / ".fastuner" / "objects").rglob("*.jsonl")) or True
    assert not [p for p in (project / ".fastuner" / "objects").rglob("*") if p.is_file()]


def test_apply_refuses_a_stale_plan(project: Path, cli) -> None:
    assert cli("plan", "--out", "old.json", cwd=project).code == 0
    assert cli("apply", "--auto-approve").code == 0
    run = cli("apply", "old.json")
    assert run.code == 1
    assert "stale" in run.err and "serial" in run.err
    assert "dataset.intents" in run.err  # what moved


def test_changed_file_is_a_new_version(project: Path, cli) -> None:
    assert cli("apply", "--auto-approve", cwd=project).code == 0
    write_jsonl(project / "data" / "intents.jsonl", intents_rows(210))
    run = cli("plan", "--detailed-exitcode")
    assert run.code == 2
    assert "dataset.intents must be replaced (data/intents.jsonl changed: a new dataset version)" in run.out
    assert cli("apply", "--auto-approve").code == 0
    state = json.loads((project / "state" / "demo.json").read_text())
    assert state["resources"]["dataset.intents"]["outputs"]["counts"]["distinct"] == 210
    assert state["resources"]["dataset.intents"]["deposed"] == []


def test_same_content_is_not_stored_twice(project: Path, cli) -> None:
    assert cli("apply", "--auto-approve", cwd=project).code == 0
    objects = {p: p.stat().st_mtime_ns for p in (project / ".fastuner" / "objects").rglob("*") if p.is_file()}
    (project / "state" / "demo.json").unlink()
    (project / "state" / "demo.json.backup").unlink()
    time.sleep(0.01)
    assert cli("apply", "--auto-approve").code == 0
    again = {p: p.stat().st_mtime_ns for p in (project / ".fastuner" / "objects").rglob("*") if p.is_file()}
    assert again == objects


def test_workspaces_have_separate_state(project: Path, cli) -> None:
    assert cli("apply", "--auto-approve", "--workspace", "staging", cwd=project).code == 0
    assert (project / "state" / "demo.staging.json").exists()
    assert not (project / "state" / "demo.json").exists()
    assert cli("plan", "--detailed-exitcode").code == 2
    assert cli("plan", "--detailed-exitcode", "-w", "staging").code == 0


def test_variables_from_flag_and_environment(project: Path, cli, monkeypatch) -> None:
    (project / "fastuner.yaml").write_text(
        "version: 1\nproject: demo\ndatasets:\n  intents:\n    path: ${var.file}\n    task: classification\n")
    run = cli("validate", cwd=project)
    assert run.code == 1 and "variable `file` has no value" in run.err and "fastuner.yaml:5:11" in run.err
    assert cli("validate", "--var", "file=data/intents.jsonl").code == 0
    monkeypatch.setenv("FASTUNER_VAR_file", "data/intents.jsonl")
    assert cli("validate").code == 0


def test_state_rm_and_force_unlock(project: Path, cli) -> None:
    assert cli("apply", "--auto-approve", cwd=project).code == 0
    assert cli("state", "rm", "dataset.intents").code == 0
    assert cli("state", "list").out.strip() == ""
    run = cli("force-unlock", "nope")
    assert run.code == 1 and "not locked" in run.err


def test_help_imports_nothing_heavy() -> None:
    """`fastuner --help` stays fast because the CLI module imports no heavy library at import time."""
    import subprocess
    import sys

    code = ("import sys, fastuner.cli.main; heavy = [m for m in ('pydantic', 'yaml', 'networkx', 'jinja2', "
            "'boto3', 'torch', 'transformers', 'fastuner.config', 'fastuner.engine') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_plan_imports_only_what_it_uses(project: Path) -> None:
    """`fastuner plan` hashes dataset files and calls no server: the row scan (numpy, process pools)
    and the HTTP client (urllib, ssl) stay unloaded, 0.15 s of a 1,000-resource plan (bench/plan_scale.py);
    networkx (0.15-0.25 s) loads only to describe a dependency cycle."""
    import subprocess
    import sys

    code = ("import contextlib, io, sys; from fastuner.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): rc = main(['plan'])\n"
            "print(rc, [m for m in ('numpy', 'fastuner.data.scan', 'urllib.request', 'jinja2', 'boto3', 'torch', 'networkx') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "[]"]


def test_schema_files_are_fresh(cli) -> None:
    run = cli("schema", "--check", "--root", str(ROOT))
    assert run.code == 0, run.text + "\nrun `fastuner schema` and commit the result"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2, "the README has exactly two set-up commands"
    assert commands[1] in ci.splitlines()


def test_main_module_entry_point(project: Path) -> None:
    proc = fastuner_subprocess("validate", cwd=project)
    assert proc.returncode == 0, proc.stderr
