"""The pull-request comment: its lead line, what a new dataset version changes, and GitHub's size limit
(65,536 characters a comment: the view stays under 65,000 whatever the plan)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from fastuner.plan.datadiff import dataset_diff
from fastuner.views.markdown import LIMIT, render_markdown

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def golden_plan(case: str) -> dict:
    return json.loads((GOLDEN / case / "expected" / "plan.json").read_text())


def huge_plan(resources: int, attributes: int) -> dict:
    """The priced golden plan with `resources` adapters to create, each with `attributes` long inputs."""
    plan = golden_plan("policy-violations")
    template = next(c for c in plan["changes"] if c["kind"] == "adapter")
    changes = []
    for i in range(resources):
        c = copy.deepcopy(template)
        c.update(address=f"adapter.a{i:05d}", name=f"a{i:05d}", action="create", reason="create_because_new",
                 before=None, changed_paths=[], replace_paths=[], detail="")
        c["after"] = {f"setting_{j}": "x" * 60 for j in range(attributes)}
        changes.append(c)
    plan["changes"] = changes
    plan["summary"] = {"create": resources, "update": 0, "replace": 0, "delete": 0, "no-op": 0}
    plan["violations"] = []
    return plan


def test_the_lead_line_names_actions_and_cost() -> None:
    text = render_markdown(golden_plan("policy-violations"))
    lead = text.splitlines()[2]
    assert lead == ("**Plan:** 3 to create, 1 to update, 1 to replace, 1 to destroy · $8.45/h after apply, up to "
                    "$76.79 one-time, saves $1.41/h")


def test_a_huge_plan_keeps_the_lead_and_every_action_and_says_what_was_cut() -> None:
    plan = huge_plan(400, 40)
    text = render_markdown(plan)
    assert len(text) <= LIMIT < 65_536
    full = render_markdown(plan, limit=10**9)
    assert len(full) > 10 * LIMIT  # the details alone are about a megabyte
    assert text.splitlines()[2].startswith("**Plan:** 400 to create")
    assert all(f"| `adapter.a{i:05d}` | create |" in text for i in range(400))  # the table is whole
    kept = text.count("<details><summary><code>+ adapter.")
    assert 0 < kept < 400
    assert f"left out the full diff of {400 - kept} resource(s)" in text
    assert "`fastuner show PLANFILE` shows the whole plan" in text
    assert text.rstrip().endswith("</sub>")  # the footer survives: the text was not chopped


def test_when_even_the_table_is_too_long_its_rows_are_cut_last() -> None:
    text = render_markdown(huge_plan(3000, 1))
    assert len(text) <= LIMIT
    assert text.splitlines()[2].startswith("**Plan:** 3000 to create")
    rows = text.count("| create |")
    assert 0 < rows < 3000 and "<details><summary><code>" not in text
    assert "left out the full diff of 3000 resource(s); " in text
    assert f"{3000 - rows} row(s) of the table of actions" in text


def test_a_small_plan_is_not_truncated() -> None:
    text = render_markdown(golden_plan("replace-because-dataset-changed"))
    assert "Truncated" not in text and "[!NOTE]" not in text


# --- dataset changes -------------------------------------------------------------------------------


def test_dataset_diff_net_rows_and_label_shift() -> None:
    recorded = {"counts": {"records": 100, "distinct": 100, "duplicates": 0}, "labels": {"a": 50, "b": 50}}
    diff = dataset_diff(recorded, {"records": 160, "distinct": 150, "duplicates": 10, "labels": {"a": 50, "b": 100}})
    assert diff["rows_net"] == 50 and diff["unknown"] is None
    assert diff["labels"] == [
        {"label": "a", "before": 50, "after": 50, "before_share": 0.5, "after_share": 0.3333, "shift_pp": -16.7},
        {"label": "b", "before": 50, "after": 100, "before_share": 0.5, "after_share": 0.6667, "shift_pp": 16.7}]
    assert diff["largest_shift_pp"] == 16.7


def test_dataset_diff_says_what_is_unknown() -> None:
    recorded = {"counts": {"records": 100, "distinct": 100, "duplicates": 0}, "labels": None}
    assert dataset_diff(recorded, None)["unknown"].startswith("the changed file was not measured")
    assert dataset_diff(recorded, {"error": "bad rows"})["unknown"] == "bad rows"
    assert dataset_diff({}, {"records": 1, "distinct": 1, "duplicates": 0})["unknown"] == \
        "the stored version recorded no figures"
    text_only = dataset_diff(recorded, {"records": 90, "distinct": 90, "duplicates": 0, "labels": None})
    assert text_only["rows_net"] == -10 and text_only["labels"] == [] and text_only["largest_shift_pp"] is None


def test_table_cells_show_values_verbatim_and_never_break_the_table() -> None:
    plan = golden_plan("retrain-hyperparameters")
    adapter = next(c for c in plan["changes"] if c["address"] == "adapter.intents-lora")
    adapter["before"]["lora"]["target_modules"] = "all-linear"
    adapter["after"]["lora"]["target_modules"] = ["q|proj", "v`proj"]
    adapter["changed_paths"] = [*adapter["changed_paths"], "lora.target_modules"]
    text = render_markdown(plan)
    assert '| `adapter.intents-lora` | `lora.target_modules` | `"all-linear"` | `["q\\|proj", "v\'proj"]` |' in text
