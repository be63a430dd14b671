"""The small texts a user reads about a plan: reasons, the Markdown comment, durations, and how the
terminal view writes (one print, the bytes rich would write)."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text

from fastuner.config.checks import check_spec
from fastuner.config.loader import load_spec
from fastuner.plan.pricing import endpoint_cost
from fastuner.views.markdown import render_markdown
from fastuner.views.terminal import Lines, render_plan
from fastuner.views.words import reason_text

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def golden_plan(case: str) -> dict:
    return json.loads((GOLDEN / case / "expected" / "plan.json").read_text())


def terminal_text(plan: dict) -> str:
    console = Console(file=io.StringIO(), width=100, highlight=False, soft_wrap=True)
    render_plan(plan, console)
    return console.file.getvalue()


def by_address(plan: dict) -> dict[str, dict]:
    return {c["address"]: c for c in plan["changes"]}


def test_markdown_says_no_changes_once() -> None:
    text = render_markdown(golden_plan("no-changes"))
    assert text.count("No changes") == 1, text
    assert "The infrastructure matches the configuration." in text


def test_destroy_says_will_be_destroyed_without_a_destroy_reason() -> None:
    plan = golden_plan("destroy")
    text = terminal_text(plan)
    assert "  # dataset.intents will be destroyed\n" in text
    assert "(destroy)" not in text
    assert "| destroy |" not in render_markdown(plan)


def test_an_update_caused_upstream_says_which_adapter_is_retrained_and_why() -> None:
    plan = golden_plan("replace-because-dataset-changed")
    deployment = by_address(plan)["deployment.intents-api"]
    assert deployment["reason"] == "update_because_upstream_replaced" and not deployment["detail"]
    why = "adapter.intents-lora is retrained: dataset.intents gets a new version"
    assert reason_text(deployment, by_address(plan)) == why
    assert f"| update | {why} |" in render_markdown(plan)
    assert f"will be updated in-place ({why})" in terminal_text(plan)


def test_an_update_both_upstream_and_in_the_spec_names_both() -> None:
    """Today's planner calls it `update_because_changed` with no detail: the Why column was empty."""
    plan = copy.deepcopy(golden_plan("replace-because-dataset-changed"))
    deployment = by_address(plan)["deployment.intents-api"]
    deployment["after"]["ttl"] = "12h"
    deployment.update(reason="update_because_changed", changed_paths=["adapter_identities", "ttl"])
    why = "adapter.intents-lora is retrained: dataset.intents gets a new version; ttl changed in the spec"
    assert reason_text(deployment, by_address(plan)) == why
    assert f"| update | {why} |" in render_markdown(plan)


def test_a_spec_only_update_keeps_an_empty_why() -> None:
    deployment = by_address(golden_plan("update-in-place"))["deployment.intents-api"]
    assert reason_text(deployment, {}) == ""


def test_durations_are_shown_as_written_not_as_python_timedeltas(tmp_path: Path) -> None:
    (tmp_path / "fastuner.yaml").write_text(
        "version: 1\nproject: demo\ndeployments:\n  ep: {base_model: m, ttl: 2h, idle_ttl: 1h30m30s}\n"
        "  other: {base_model: m, ttl: 90m, idle_ttl: 2d}\n")
    summaries = [d.summary for d in check_spec(load_spec(tmp_path / "fastuner.yaml"))]
    assert "deployment.other: idle_ttl (2d) is longer than ttl (1h30m) and never applies" in summaries
    assert not any(":00" in s for s in summaries), summaries
    assert endpoint_cost("ml.g5.xlarge", 1, 1.5)["note"].endswith("at most 1h30m (ttl)")
    assert endpoint_cost("ml.g5.xlarge", 1, 8)["note"].endswith("at most 8h (ttl)")


def test_a_shared_endpoint_shows_its_cost_per_adapter_hour_and_what_sharing_saves() -> None:
    from fastuner.views.words import cost_text

    shared = endpoint_cost("ml.g5.xlarge", 1, 8, adapters=3)
    assert (shared["per_adapter_hourly_usd"], shared["separate_hourly_usd"]) == (0.4693, 4.224)
    assert cost_text(shared) == ("$1.41/h, at most $11.26 (1 × ml.g5.xlarge, at most 8h (ttl)) · 3 adapters: "
                                 "$0.47 per adapter-hour, $4.22/h on one endpoint each")
    # one adapter: nothing shared, nothing to say (the JSON still carries the figure)
    assert "adapter-hour" not in cost_text(endpoint_cost("ml.g5.xlarge", 1, 8, adapters=1))
    # a running endpoint costs only what is left of its ttl
    running = endpoint_cost("ml.g5.xlarge", 2, 8, hours_left=2.5)
    assert running["max_one_time_usd"] == round(1.408 * 2 * 2.5, 2)
    assert running["note"] == "2 × ml.g5.xlarge, 2h30m left of its 8h ttl"
    assert endpoint_cost("ml.g5.xlarge", 1, 8, hours_left=-1)["max_one_time_usd"] == 0  # past its ttl
    assert cost_text({"note": "no price known for ml.x"}) == "no price known for ml.x"
    assert cost_text({}) == ""


def test_the_terminal_view_prints_a_plan_in_one_call() -> None:
    """Rich costs about 0.1 ms a call: a print per line was 80 % of a 1,000-resource plan."""
    calls = []

    class Counting(Console):
        def print(self, *args, **kwargs) -> None:
            calls.append(args)
            super().print(*args, **kwargs)

    render_plan(golden_plan("create-all"), Counting(file=io.StringIO(), highlight=False, soft_wrap=True))
    assert len(calls) == 1


@pytest.mark.parametrize("colour", [False, True])
@pytest.mark.parametrize("pieces", [
    ("ab\tc ", ("x\x07y\tz", "bold"), "\tend"),
    ("日本\t", ("q", "red"), "\r\x08 bell\x07"),
    (("[not markup] :smile:", "dim"), " \\[x]"),
])
def test_lines_write_what_rich_writes_for_the_same_styled_text(pieces: tuple, colour: bool) -> None:
    """Tabs expand to rich's stops, control codes are dropped, brackets are not markup; colours too."""
    def console(buffer: io.StringIO) -> Console:
        return Console(file=buffer, force_terminal=colour, color_system="standard" if colour else None,
                       highlight=False, soft_wrap=True, emoji=False)

    lines = Lines()
    lines.add(*pieces)
    ours, theirs = io.StringIO(), io.StringIO()
    console(ours).print(lines)
    console(theirs).print(Text.assemble(*pieces))
    if colour:  # rich splits a styled run at a tab: compare each character and its style
        assert styled_characters(ours.getvalue()) == styled_characters(theirs.getvalue())
    else:
        assert ours.getvalue() == theirs.getvalue()


def styled_characters(ansi: str) -> list[tuple[str, str]]:
    text = Text.from_ansi(ansi)
    styles = [""] * len(text.plain)
    for span in text.spans:
        for i in range(span.start, span.end):
            styles[i] += str(span.style)
    return list(zip(text.plain, styles, strict=True))
