"""Golden files for everything a user reads about a plan: its JSON, the terminal text and the Markdown.

Each `tests/golden/<case>/` holds `fastuner.yaml`, optionally `before.yaml` (a spec applied first with
the in-memory provider at `applied_at`) and `case.yaml` (dataset source hashes, the clock, destroy; the
figures a dataset store recorded, `recorded`, and those the CLI measures on a changed file, `dataset_figures`;
what refresh measured of training work, `work`).
The expected renderings live in `<case>/expected/`. Rewrite them after an intended change with
`FASTUNER_UPDATE_GOLDEN=1 python -m pytest tests/golden` and review the diff like code.
"""

from __future__ import annotations

import io
import json
import os
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from fastuner.config.loader import load_spec
from fastuner.engine.apply import apply_plan
from fastuner.plan.observed import Observed
from fastuner.plan.planner import make_plan
from fastuner.providers.memory import MemoryWorld, memory_provider
from fastuner.state.local import LocalStateStore
from fastuner.state.model import empty_state
from fastuner.views.markdown import render_markdown
from fastuner.views.terminal import render_plan

HERE = Path(__file__).parent
CASES = sorted(p.name for p in HERE.iterdir() if (p / "case.yaml").exists())
UPDATE = os.environ.get("FASTUNER_UPDATE_GOLDEN") == "1"
LINEAGE = "00000000-0000-4000-8000-000000000000"


def _plan_for(case: Path, tmp_path: Path) -> dict:
    meta = yaml.safe_load((case / "case.yaml").read_text())
    store = LocalStateStore(tmp_path / "state.json")
    state = empty_state("golden", "default").model_copy(update={"lineage": LINEAGE})
    state = store.write(state)
    provider = memory_provider(MemoryWorld())
    if (case / "before.yaml").exists():
        applied_at = datetime.fromisoformat(str(meta["applied_at"]))
        before = load_spec(case / "before.yaml")
        observed = Observed(dataset_sources=meta["sources_before"], training_code_hash="code-1")
        first = make_plan(before, state, observed, applied_at)
        # one at a time: concurrent operations share state writes, and the serial must not vary
        result = apply_plan(first, store, provider, spec_dir=case, clock=lambda: applied_at, parallelism=1)
        assert result.ok, result.results
        state = store.read()
        for name, outputs in (meta.get("recorded") or {}).items():  # what a real dataset store records
            state.resources[f"dataset.{name}"].outputs.update(outputs)
    spec = load_spec(case / "fastuner.yaml")
    now = datetime.fromisoformat(str(meta["now"]))
    observed = Observed(dataset_sources=meta["sources"], training_code_hash="code-1",
                        priced=bool(meta.get("priced")), unsupported=meta.get("unsupported") or {},
                        dataset_figures=meta.get("dataset_figures") or {},
                        work=meta.get("work") or {})
    plan = make_plan(spec, state, observed, now, destroy=bool(meta.get("destroy")))
    return plan.to_dict()


def _terminal(plan: dict) -> str:
    console = Console(record=True, width=100, no_color=True, force_terminal=False, soft_wrap=True,
                      file=open(os.devnull, "w"))  # noqa: SIM115 - closed with the console
    render_plan(plan, console)
    return console.export_text()


def _terminal_colours(plan: dict) -> str:
    """What a colour terminal receives, escape codes included (the view writes ready segments, so
    its bytes are checked as well as its text)."""
    buffer = io.StringIO()
    render_plan(plan, Console(file=buffer, width=100, force_terminal=True, color_system="standard",
                              highlight=False, soft_wrap=True))
    return buffer.getvalue()


def _check(path: Path, actual: str) -> None:
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"missing golden file {path}; create it with FASTUNER_UPDATE_GOLDEN=1")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    expected = path.read_text()
    assert actual == expected, f"{path} differs; if intended, rewrite with FASTUNER_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, tmp_path: Path) -> None:
    plan = _plan_for(HERE / case, tmp_path)
    out = HERE / case / "expected"
    _check(out / "plan.json", json.dumps(plan, indent=2, sort_keys=True) + "\n")
    _check(out / "terminal.txt", _terminal(plan))
    _check(out / "terminal.ansi", _terminal_colours(plan))
    _check(out / "plan.md", render_markdown(plan))


def test_every_required_case_exists() -> None:
    required = {"create-all", "no-changes", "update-in-place", "replace-because-dataset-changed",
                "delete-removed", "ttl-expired", "destroy"}
    assert required <= set(CASES)
