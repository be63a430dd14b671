"""What the CLI says around a plan: the saved-plan hint, destroy's words, and `show` on a narrow terminal."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from fastuner.cli.main import main
from fastuner.cli.project import open_project
from fastuner.state.model import ResourceState
from fastuner.views.state import render_state_overview


def test_a_plan_with_changes_says_how_to_apply_it(project: Path, cli) -> None:
    run = cli("plan", "--out", "plan.json", cwd=project)
    assert run.code == 0, run.text
    assert "Saved the plan to: plan.json" in run.out
    assert "  fastuner apply plan.json" in run.out


def test_a_no_op_plan_does_not_suggest_applying_it(project: Path, cli) -> None:
    assert cli("apply", "--auto-approve", cwd=project).code == 0
    run = cli("plan", "--out", "plan.json")
    assert run.code == 0, run.text
    assert "No changes." in run.out and "Saved the plan to: plan.json" in run.out
    assert "apply" not in run.out.split("Saved the plan to")[1], run.out


def test_destroy_says_destroy(project: Path, cli) -> None:
    assert cli("apply", "--auto-approve", cwd=project).code == 0
    run = cli("destroy", "--auto-approve")
    assert run.code == 0, run.text
    assert "  # dataset.intents will be destroyed\n" in run.out
    assert "(destroy)" not in run.out and "Apply complete" not in run.out
    assert "Destroy complete! Resources: 1 destroyed.\n" in run.out
    run = cli("destroy", "--auto-approve")
    assert "No changes. No objects need to be destroyed." in run.out, run.out


LONG = {
    "dataset.customer-support-intents-2026-q3-multilingual": (
        "fastuner-support-default-dataset-customer-support-intents-2026-q3-multilingual-3f2a9c1b",
        "1,204 rows (1,180 distinct): 944 train / 118 validation / 118 test; 12 labels"),
    "deployment.customer-support-intents-api-eu-west": (
        "fastuner-support-default-deployment-customer-support-intents-api-eu-west-77aa",
        "serving 3 adapter(s) at http://127.0.0.1:54321/customer-support/intents/a/long/path/to/see/urls/whole"),
    "adapter.x": ("", "failed: boom"),
}
URL = "http://127.0.0.1:54321/customer-support/intents/a/long/path/to/see/urls/whole"


def _rows() -> list[dict]:
    return [{"address": a, "status": "ready", "physical_name": p, "summary": s,
             "expires": "2026-03-01T20:00+00:00" if a.startswith("deployment") else ""}
            for a, (p, s) in LONG.items()]


def _assert_whole_at(width: int, out: str) -> None:
    for address, (physical, _) in LONG.items():
        assert address in out and physical in out, out
    assert URL in out, out
    for line in out.splitlines():  # wider than the terminal only for one word that cannot be cut
        assert len(line) <= width or len(line.split()) == 1, line


def test_show_at_80_columns_never_cuts_an_address_or_a_url() -> None:
    console = Console(file=io.StringIO(), width=80, highlight=False, soft_wrap=True)
    render_state_overview("support (default) — serial 7", _rows(), console)
    out = console.file.getvalue()
    _assert_whole_at(80, out)
    assert "1,204 rows (1,180 distinct): 944 train / 118 validation / 118 test; 12\n    labels" in out


def test_show_keeps_the_table_where_it_fits() -> None:
    console = Console(file=io.StringIO(), width=300, highlight=False, soft_wrap=True)
    render_state_overview("support (default) — serial 7", _rows(), console)
    out = console.file.getvalue()
    assert "┃ address " in out and "│ deployment.customer-support-intents-api-eu-west " in out
    _assert_whole_at(300, out)


# What state records for LONG's resources (a `summary` stored by an older version is stale and not shown).
OUTPUTS = {
    "dataset.customer-support-intents-2026-q3-multilingual": {
        "counts": {"records": 1204, "duplicates": 24}, "labels": {f"label-{i}": 1 for i in range(12)},
        "splits": {"train": {"rows": 944}, "validation": {"rows": 118}, "test": {"rows": 118}},
        "summary": "stale words from an older version"},
    "deployment.customer-support-intents-api-eu-west": {"url": URL, "adapters": {"a": "p", "b": "p", "c": "p"}},
    "adapter.x": {"run": "x"},
}


def test_fastuner_show_on_an_80_column_terminal(project: Path, cli, capsys, monkeypatch) -> None:
    assert cli("apply", "--auto-approve", cwd=project).code == 0
    store = open_project(None, None, None).store
    draft = store.read().model_copy(deep=True)
    for address, (physical, _) in LONG.items():
        kind, name = address.split(".")
        draft.resources[address] = ResourceState(
            address=address, kind=kind, name=name, physical_name=physical or None, outputs=OUTPUTS[address],
            error="failed: boom" if kind == "adapter" else None,
            expires_at=datetime(2026, 3, 1, 20, tzinfo=UTC) if kind == "deployment" else None)
    store.write(draft)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["show"]) == 0
    out = capsys.readouterr().out
    _assert_whole_at(80, out)
    assert "dataset.intents  ready" in out
    assert "1204 rows, 24 duplicates dropped; train 944 / validation 118 / test 118; 12\n    labels" in out, out
    assert "serving 3 adapter(s) at\n    " + URL in out and "failed: boom" in out, out
    assert "stale" not in out, out
