"""Options every command shares, read from the real typer app so that a new command is covered at once;
and Terraform's --target, --refresh-only and --lock-timeout end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import typer.main

from fastuner.cli.main import app
from tests.cli.test_faults import HOLD_LOCK

NO_SPEC = {"ci github", "init", "schema", "prices update", "prices show"}  # commands that never read fastuner.yaml
# Arguments that get each spec-loading command past parsing (a new command must be added here).
ARGS = {
    "validate": [], "plan": [], "show": [], "apply": ["--auto-approve"], "destroy": ["--auto-approve"],
    "reap": ["--auto-approve"], "state list": [], "state show": ["dataset.intents"],
    "state rm": ["dataset.intents"], "state pull": [], "state push": ["state.json"], "force-unlock": ["some-id"],
    "logs": ["dataset.intents"],
    "invoke": ["deployment.api", "--input", "hello"], "iam-policy": [], "bootstrap": ["--auto-approve"],
    "import": ["dataset.intents", "some-id"], "cost": [],
}
COMMON = {"--file", "--workspace", "--var"}

# The state's folder comes from a variable without a default: a command that loads the spec without
# the variable's value cannot even find its state.
SPEC_WITH_VAR = """\
version: 1
project: demo
variables:
  where: {description: folder of the state}
backend: {local: {path: "${var.where}/demo.json"}}
datasets:
  intents: {path: data/intents.jsonl, task: classification}
"""


def commands() -> dict[str, Any]:
    """Every leaf command of the app by its full name ("state list"); typer bundles its own click."""

    def walk(cmd: Any, prefix: str) -> dict[str, Any]:
        if hasattr(cmd, "commands"):
            out: dict[str, Any] = {}
            for name, sub in cmd.commands.items():
                out.update(walk(sub, f"{prefix} {name}".strip()))
            return out
        return {prefix: cmd}

    return walk(typer.main.get_command(app), "")


SPEC_COMMANDS = sorted(set(commands()) - NO_SPEC)


def flags(cmd: Any) -> list[str]:
    return [o for p in cmd.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)]


def test_every_command_is_known() -> None:
    assert set(commands()) == set(ARGS) | NO_SPEC, "add the new command to ARGS (or NO_SPEC) in this test"


@pytest.mark.parametrize("name", SPEC_COMMANDS)
def test_every_spec_command_has_the_common_options(name: str) -> None:
    cmd = commands()[name]
    assert set(flags(cmd)) >= COMMON
    assert len(flags(cmd)) == len(set(flags(cmd))), f"{name}: a flag is declared twice"


@pytest.mark.parametrize("name", SPEC_COMMANDS)
def test_every_spec_command_honours_file_var_and_workspace(name: str, project: Path, cli, monkeypatch) -> None:
    (project / "fastuner.yaml").write_text(SPEC_WITH_VAR)
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    argv = [*name.split(), *ARGS[name], "--file", str(project / "fastuner.yaml")]
    run = cli(*argv, cwd=elsewhere)
    assert run.code == 1 and "variable `where` has no value" in run.err and "--var where=VALUE" in run.err
    # --var is taken (else: "No such option"), --file is read (else: "spec file not found"), and the
    # workspace is checked (else: the command would go on): each proves its option reached the spec
    run = cli(*argv, "--var", "where=st", "--workspace", "Bad_Name")
    assert run.code == 1 and "invalid workspace name 'Bad_Name'" in run.err, run.text
    monkeypatch.setenv("FASTUNER_VAR_where", "st")
    monkeypatch.setenv("FASTUNER_WORKSPACE", "Other_Bad")
    run = cli(*argv)
    assert run.code == 1 and "invalid workspace name 'Other_Bad'" in run.err, run.text
    # the environment handed to main() is the one read, not the process's
    run = cli(*argv, environ={"FASTUNER_VAR_where": "st", "FASTUNER_WORKSPACE": "Handed_In"})
    assert run.code == 1 and "invalid workspace name 'Handed_In'" in run.err, run.text
    run = cli(*argv, environ={})
    assert run.code == 1 and "variable `where` has no value" in run.err, run.text


def test_state_commands_need_no_value_for_a_resource_variable(project: Path, cli) -> None:
    """As `terraform state list` needs no -var: only what locates the state must be known."""
    (project / "fastuner.yaml").write_text(
        "version: 1\nproject: demo\nvariables:\n  file: {}\n"
        "datasets:\n  intents: {path: '${var.file}', task: classification}\n")
    assert cli("apply", "--auto-approve", "--var", "file=data/intents.jsonl", cwd=project).code == 0
    run = cli("state", "list")
    assert run.code == 0 and run.out.split() == ["dataset.intents"], run.text
    assert cli("state", "show", "dataset.intents").code == 0
    assert "dataset.intents" in cli("show").out
    run = cli("logs", "dataset.intents")
    assert "have no log" in run.err and "variable" not in run.err
    assert "not locked" in cli("force-unlock", "x").err
    run = cli("plan")  # planning needs the value, and says which --var to pass
    assert run.code == 1 and "variable `file` has no value" in run.err and "--var file=VALUE" in run.err
    assert cli("state", "rm", "dataset.intents").code == 0


@pytest.mark.parametrize("name", sorted(commands()))
def test_help_shows_no_python_types(name: str, cli) -> None:
    run = cli(*name.split(), "--help")
    assert run.code == 0
    for needle in (r"list\[", r"str\]", r"<(str|int|float|path)\b", r"(?<!-)-out\b"):
        assert not re.search(needle, run.out), f"`fastuner {name} --help` shows {needle!r}:\n{run.out}"


def test_logs_f_is_follow(cli, project: Path) -> None:
    cmd = commands()["logs"]
    ctx = cmd.make_context("logs", ["dataset.intents", "-f"])
    assert ctx.params["follow"] is True and ctx.params["file"] is None


def test_state_list_says_when_there_is_nothing(project: Path, cli) -> None:
    run = cli("state", "list", cwd=project)
    assert run.code == 0 and run.out == "" and "No state yet" in run.err
    assert cli("apply", "--auto-approve").code == 0
    assert cli("state", "rm", "dataset.intents").code == 0
    run = cli("state", "list")
    assert run.code == 0 and run.out == "" and "No resources in state." in run.err
    listed = json.loads(cli("state", "list", "--json").out)
    assert listed["kind"] == "state-list" and listed["addresses"] == [] and listed["state_exists"] is True


# --- --target --------------------------------------------------------------------------------------------

TWO = """\
version: 1
project: demo
datasets:
  intents: {path: data/intents.jsonl, task: classification}
  more: {path: data/intents.jsonl, task: classification, split: {seed: 7}, depends_on: [dataset.intents]}
  other: {path: data/intents.jsonl, task: classification, split: {seed: 8}}
"""


def test_target_on_plan_apply_and_destroy(project: Path, cli) -> None:
    (project / "fastuner.yaml").write_text(TWO)
    run = cli("plan", "--target", "dataset.more", "--out", "t.json", cwd=project)
    assert run.code == 0, run.text
    assert "Warning: Resource targeting is in effect" in run.out
    assert "dataset.more" in run.out and "dataset.intents" in run.out and "dataset.other" not in run.out
    shown = json.loads(cli("show", "t.json", "--json").out)
    assert shown["targets"] == ["dataset.more"]
    assert {c["address"] for c in shown["changes"]} == {"dataset.intents", "dataset.more"}
    assert "Resource targeting is in effect" in cli("show", "t.json", "--markdown").out
    run = cli("apply", "t.json")  # the saved targeted plan applies only what it holds
    assert run.code == 0, run.text
    assert cli("state", "list").out.split() == ["dataset.intents", "dataset.more"]
    run = cli("destroy", "--auto-approve", "--target", "dataset.intents")  # and what depends on it
    assert run.code == 0, run.text
    assert "Resource targeting is in effect" in run.out and "2 destroyed" in run.out
    assert cli("state", "list").out.split() == []
    run = cli("plan", "--target", "dataset.nope")
    assert run.code == 1 and "--target dataset.nope: no such resource" in run.err
    run = cli("apply", "t.json", "--target", "dataset.more")
    assert run.code == 1 and "not to a saved plan" in run.err


# --- --refresh-only -------------------------------------------------------------------------------------


def test_refresh_only_records_drift_and_changes_nothing(project: Path, cli) -> None:
    assert cli("apply", "--auto-approve", cwd=project).code == 0
    assert cli("plan", "--refresh-only", "--detailed-exitcode").code == 0
    objects = [p for p in (project / ".fastuner" / "objects").rglob("*") if p.is_file()]
    for p in objects:  # deleted outside fastuner
        p.unlink()
    run = cli("plan", "--refresh-only", "--detailed-exitcode")
    assert run.code == 2, run.text
    assert "dataset.intents" in run.out and "stored object(s) are gone" in run.out
    assert "Refresh-only: 1 to record in state." in run.out
    run = cli("apply", "--refresh-only", "--auto-approve")
    assert run.code == 0, run.text
    assert "Refresh complete!" in run.out
    assert cli("state", "list").out.split() == []  # forgotten, as Terraform forgets what no longer exists
    assert not [p for p in (project / ".fastuner" / "objects").rglob("*") if p.is_file()]  # nothing created
    assert "1 to create" in cli("plan").out
    run = cli("plan", "--refresh-only", "--destroy")
    assert run.code == 1 and "--refresh-only" in run.err


# --- --lock-timeout -------------------------------------------------------------------------------------


def _holder(project: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(project / "state" / "demo.json")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()


def test_lock_timeout_waits_for_a_lock_released_in_time(project: Path, cli) -> None:
    proc, _ = _holder(project)
    try:
        threading.Timer(0.5, _release, args=(proc,)).start()
        run = cli("apply", "--auto-approve", "--lock-timeout", "60s", cwd=project)
        assert run.code == 0, run.text
        assert "waiting for it" in run.out and "Apply complete!" in run.out
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("argv", [["apply", "--auto-approve"], ["destroy", "--auto-approve"],
                                  ["state", "rm", "dataset.intents"]])
def test_lock_timeout_runs_out_naming_the_holder(argv: list[str], project: Path, cli) -> None:
    if argv[0] != "apply":
        assert cli("apply", "--auto-approve", cwd=project).code == 0
    proc, lock_id = _holder(project)
    try:
        run = cli(*argv, "--lock-timeout", "1s", cwd=project)
    finally:
        _release(proc)
        proc.wait(10)
    assert run.code == 1
    assert "the state is locked" in run.err and "waited 1s" in run.err
    assert lock_id in run.err and f"pid {proc.pid}" in run.err


def test_lock_timeout_must_be_a_duration(project: Path, cli) -> None:
    run = cli("apply", "--auto-approve", "--lock-timeout", "soon", cwd=project)
    assert run.code == 1 and "--lock-timeout soon" in run.err
