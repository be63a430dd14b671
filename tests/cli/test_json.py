"""`--json`: every command that reports writes one JSON document on stdout with the envelope
(`format_version` 1, `kind`), failures included (kind "error", the same exit code), and docs/json.md
describes every kind the code can write."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastuner.plan.model import PLAN_FORMAT_VERSION
from fastuner.views.documents import FORMAT_VERSION, KINDS, document
from tests.cli.conftest import ROOT
from tests.cli.test_faults import HOLD_LOCK
from tests.cli.test_options import ARGS, SPEC_WITH_VAR, commands


def parsed(run, kind: str, code: int = 0) -> dict:
    """stdout as exactly one JSON document of `kind` (nothing else printed there), and the exit code."""
    assert run.code == code, run.text
    doc = json.loads(run.out)
    assert list(doc)[:2] == ["format_version", "kind"], list(doc)[:5]
    assert doc["format_version"] == FORMAT_VERSION == 1
    assert doc["kind"] == kind, doc
    return doc


def test_plan_and_show_of_a_saved_plan(project: Path, cli) -> None:
    doc = parsed(cli("plan", "--json", "--out", "p.json", cwd=project), "plan")
    assert doc["summary"]["create"] == 1 and doc["changes"][0]["address"] == "dataset.intents"
    saved = json.loads((project / "p.json").read_text())
    assert saved["kind"] == "plan" and saved["format_version"] == PLAN_FORMAT_VERSION == FORMAT_VERSION
    assert parsed(cli("show", "p.json", "--json"), "plan") == doc


def test_a_plan_saved_before_the_envelope_still_applies(project: Path, cli) -> None:
    assert cli("plan", "--out", "p.json", cwd=project).code == 0
    old = json.loads((project / "p.json").read_text())
    old["format_version"] = "1"  # as plans were written before format_version became a number
    del old["kind"]
    (project / "p.json").write_text(json.dumps(old))
    assert parsed(cli("show", "p.json", "--json"), "plan")["summary"]["create"] == 1
    run = cli("apply", "p.json")
    assert run.code == 0, run.text


def test_a_plan_with_changes_keeps_exit_code_2(project: Path, cli) -> None:
    parsed(cli("plan", "--json", "--detailed-exitcode", cwd=project), "plan", code=2)


def test_validate(project: Path, cli) -> None:
    doc = parsed(cli("validate", "--json", cwd=project), "validation")
    assert doc["valid"] is True and doc["project"] == "demo"
    assert doc["resources"] == {"datasets": 1, "adapters": 0, "deployments": 0}
    assert doc["datasets"]["intents"]["counts"]["distinct"] == 200


def test_state_list_show_and_the_state(project: Path, cli) -> None:
    doc = parsed(cli("state", "list", "--json", cwd=project), "state-list")
    assert doc["state_exists"] is False and doc["addresses"] == [] and doc["resources"] == []
    assert parsed(cli("show", "--json"), "state")["state"] is None
    assert cli("apply", "--auto-approve").code == 0
    doc = parsed(cli("state", "list", "--json"), "state-list")
    assert doc["addresses"] == ["dataset.intents"] and doc["workspace"] == "default"
    assert doc["resources"] == [{"address": "dataset.intents", "kind": "dataset", "status": "ready"}]
    doc = parsed(cli("state", "show", "dataset.intents", "--json"), "resource")
    assert doc["address"] == "dataset.intents" and doc["resource"]["kind"] == "dataset"
    assert doc["resource"]["outputs"]["counts"]["distinct"] == 200
    assert parsed(cli("show", "dataset.intents", "--json"), "resource") == doc
    state = parsed(cli("show", "--json"), "state")["state"]
    assert state["format_version"] == 1 and list(state["resources"]) == ["dataset.intents"]  # the state's own


def test_reap(project: Path, cli) -> None:
    doc = parsed(cli("reap", "--json", "--dry-run", cwd=project), "reap")
    assert doc["reaped"] == [] and doc["dry_run"] is True and doc["exit_code"] == 0


def test_reap_of_an_expired_deployment(tmp_path: Path, cli, clock) -> None:
    """State written by the planner and engine with the in-memory provider (as tests/cli/test_policy.py
    does): a deployment whose ttl has ended. --json lists it with --dry-run, refuses to ask (stdout is
    the document), and reaps it with --auto-approve."""
    from fastuner.config.loader import load_spec
    from fastuner.engine.apply import apply_plan
    from fastuner.plan.observed import Observed
    from fastuner.plan.planner import make_plan
    from fastuner.providers.memory import memory_provider
    from fastuner.state.local import LocalStateStore
    from fastuner.state.model import empty_state

    (tmp_path / "fastuner.yaml").write_text("version: 1\nproject: demo\ndatasets:\n  intents: {path: d.jsonl, "
                                            "task: classification}\ndeployments:\n  api: {base_model: org/m, "
                                            "ttl: 1h}\n")
    spec = load_spec(tmp_path / "fastuner.yaml", variables={}, environ={})
    plan = make_plan(spec, empty_state("demo", "default"), Observed(dataset_sources={"intents": "x"}), clock.now)
    assert apply_plan(plan, LocalStateStore(tmp_path / "state" / "demo.json"), memory_provider(),
                      spec_dir=tmp_path, clock=clock).ok
    clock.tick(hours=2)
    doc = parsed(cli("reap", "--json", "--dry-run", cwd=tmp_path, clock=clock), "reap")
    assert [(r["address"], r["reason"]) for r in doc["would_reap"]] == [("deployment.api", "delete_because_ttl_expired")]
    doc = parsed(cli("reap", "--json", cwd=tmp_path, clock=clock), "error", code=1)
    assert "cannot ask for confirmation" in doc["message"] and "--auto-approve" in doc["hint"]
    doc = parsed(cli("reap", "--json", "--auto-approve", cwd=tmp_path, clock=clock), "reap")
    assert [(r["address"], r["reaped"]) for r in doc["reaped"]] == [("deployment.api", True)]


def test_force_unlock(project: Path, cli) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(project / "state" / "demo.json")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        lock_id = holder.stdout.readline().strip()
        doc = parsed(cli("force-unlock", lock_id, "--json", cwd=project), "unlock")
        assert doc["lock_id"] == lock_id and doc["pid"] == holder.pid and doc["operation"] == "apply (test holder)"
    finally:
        holder.communicate("\n", timeout=30)
    doc = parsed(cli("force-unlock", lock_id, "--json"), "error", code=1)
    assert "not locked" in doc["message"]


def test_import_refused_is_an_error_document(project: Path, cli) -> None:
    assert cli("apply", "--auto-approve", cwd=project).code == 0
    doc = parsed(cli("import", "dataset.intents", "some-id", "--json"), "error", code=1)
    assert doc["message"] == "dataset.intents is already in state" and "state rm" in doc["hint"]


# --- errors ----------------------------------------------------------------------------------------


def test_a_user_error_is_an_error_document_with_the_same_exit_code(project: Path, cli) -> None:
    run = cli("state", "show", "dataset.nope", "--json", cwd=project)
    doc = parsed(run, "error", code=1)
    assert doc["message"] == f"no state yet at {project / 'state' / 'demo.json'}" or "no state yet" in doc["message"]
    assert doc["hint"] == "Run `fastuner apply` first." and doc["location"] is None and doc["exit_code"] == 1
    assert "no state yet" in run.err  # people still read it on stderr


def test_a_spec_error_has_its_location(project: Path, cli) -> None:
    (project / "fastuner.yaml").write_text("version: 1\nproject: demo\ndatasets:\n  intents:\n"
                                           "    path: data/intents.jsonl\n    task: classification\n    splitt: {}\n")
    for args in (("validate", "--json"), ("plan", "--json", "--detailed-exitcode"), ("reap", "--json")):
        doc = parsed(cli(*args, cwd=project), "error", code=1)
        assert doc["location"]["file"].endswith("fastuner.yaml") and doc["location"]["line"] == 7, doc
        assert "splitt" in doc["message"] and doc["diagnostics"][0]["severity"] == "error"


def test_a_usage_error_too(project: Path, cli) -> None:
    doc = parsed(cli("plan", "--json", "--parallelism", "3", cwd=project), "error", code=1)
    assert "--parallelism" in doc["message"] and "--help" in doc["hint"]
    doc = parsed(cli("state", "show", "--json", cwd=project), "error", code=1)  # the missing ADDRESS
    assert "ADDRESS" in doc["message"]


JSON_COMMANDS = sorted(name for name, cmd in commands().items()
                       if any("--json" in p.opts for p in cmd.params if p.param_type_name == "option"))


def test_the_commands_with_json_are_the_reporting_ones() -> None:
    assert JSON_COMMANDS == ["bootstrap", "cost", "force-unlock", "import", "invoke", "plan", "prices show",
                             "prices update", "reap", "show", "state list", "state show", "validate"]


SPEC_FREE = {"prices show", "prices update"}  # read no spec (tests/cost/test_prices_update.py has their errors)


@pytest.mark.parametrize("name", [c for c in JSON_COMMANDS if c not in SPEC_FREE])
def test_every_json_command_fails_with_an_error_document(name: str, project: Path, cli) -> None:
    """Each fails the same way here (the state's folder is a variable without a value), and says so as
    JSON on stdout, with the exit code of its text output."""
    (project / "fastuner.yaml").write_text(SPEC_WITH_VAR)
    argv = [*name.split(), *ARGS[name]]
    text = cli(*argv, cwd=project)
    doc = parsed(cli(*argv, "--json"), "error", code=text.code)
    assert text.code == 1 and text.out == "", text.text
    assert doc["message"] == "variable `where` has no value" and "--var where=VALUE" in doc["hint"]
    assert doc["location"]["file"].endswith("fastuner.yaml") and doc["location"]["line"] == 5


def test_without_json_stdout_stays_clean_of_json_errors(project: Path, cli) -> None:
    run = cli("state", "show", "dataset.nope", cwd=project)
    assert run.code == 1 and run.out == "" and "no state yet" in run.err


def test_plan_breaking_the_policy_is_a_plan_with_exit_3(project: Path, cli) -> None:
    (project / "policy.yaml").write_text("policy:\n  protect: [dataset.intents]\n")
    assert cli("apply", "--auto-approve", cwd=project).code == 0
    doc = parsed(cli("plan", "--destroy", "--json", "--policy", "policy.yaml"), "plan", code=3)
    assert [v["rule"] for v in doc["violations"]] == ["protect"] and doc["can_apply"] is False


# --- the documentation -----------------------------------------------------------------------------

DOC = ROOT / "docs" / "json.md"


def documented_kinds() -> list[str]:
    return re.findall(r"^### `([a-z-]+)`", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)


def emitted_kinds() -> set[str]:
    """Every kind the package names where it writes a document (`write_document("…"`, `document("…"`),
    and the plan's own."""
    found = {"plan", "error"}
    for path in (ROOT / "fastuner").rglob("*.py"):
        found |= set(re.findall(r"\b(?:write_)?document\(\s*\"([a-z-]+)\"", path.read_text(encoding="utf-8")))
    return found


def test_docs_json_md_describes_every_kind_the_code_emits() -> None:
    assert sorted(documented_kinds()) == sorted(KINDS), "docs/json.md and views/documents.py KINDS differ"
    assert emitted_kinds() <= set(KINDS)
    assert emitted_kinds() == set(KINDS), f"kinds no code writes: {set(KINDS) - emitted_kinds()}"


def test_an_undocumented_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not in KINDS"):
        document("cost-report-v2", {})
    with pytest.raises(ValueError, match="says kind"):
        document("plan", {"kind": "state"})
