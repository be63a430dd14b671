"""Sensitive variables: markers in plans and state, the value only in what a provider is handed."""

from __future__ import annotations

import json

import pytest

from fastuner.config.loader import load_spec
from fastuner.config.sensitive import Sensitive, marker
from fastuner.errors import UserError
from fastuner.plan.model import Action, Plan
from tests.core.conftest import write_spec

SECRET = "s3cr3t-Canary-7f9d"
SPEC = """\
version: 1
project: demo
variables:
  owner: {description: who pays, sensitive: true}
  short: {sensitive: true, default: ab}
datasets:
  ds:
    path: data/ds.jsonl
    task: text_generation
    tags: {owner: "team-${var.owner}", code: "${var.short}", other: "abc"}
"""


def test_masks_inside_strings_and_short_values_only_whole() -> None:
    s = Sensitive([SECRET, "ab", None, ""])
    assert s.mask({"a": f"x-{SECRET}-y", "b": ["ab", "abc"], "c": 3, SECRET: True}) == {
        "a": f"x-{marker(SECRET)}-y", "b": [marker("ab"), "abc"], "c": 3, marker(SECRET): True}
    assert s.reveal(s.mask({"a": f"x-{SECRET}", "b": ["ab"]})) == {"a": f"x-{SECRET}", "b": ["ab"]}
    with pytest.raises(UserError, match="no sensitive variable of this run has"):
        Sensitive(["other-value"]).reveal(f"x-{marker(SECRET)}")
    assert not Sensitive() and Sensitive().mask({"a": SECRET}) == {"a": SECRET}


def load(harness, secret: str):
    harness.spec = load_spec(write_spec(harness.root, SPEC), variables={"owner": secret}, environ={})
    return harness.spec


def test_plans_and_state_hold_markers_and_the_provider_the_value(harness) -> None:
    load(harness, SECRET)
    plan = harness.plan()
    text = json.dumps(plan.to_dict())
    assert SECRET not in text and marker(SECRET) in text
    assert plan.changes[0].after["tags"] == {"owner": f"team-{marker(SECRET)}", "code": marker("ab"), "other": "abc"}
    assert Plan.from_dict(plan.to_dict()) == plan  # a saved plan file holds the same markers

    result = harness.apply(plan, sensitive=harness.spec.sensitive)
    assert result.ok, result.results
    sent = harness.world.objects[plan.changes[0].physical_name]["inputs"]
    assert sent["tags"] == {"owner": f"team-{SECRET}", "code": "ab", "other": "abc"}  # the provider's copy
    state_text = harness.store.path.read_text()
    assert SECRET not in state_text and marker(SECRET) in state_text

    # nothing to do while the value stays; a new value is an in-place update that shows both markers
    assert all(c.action is Action.NOOP for c in harness.plan().changes)
    load(harness, "an0ther-Canary-value")
    change = harness.plan().changes[0]
    assert change.action is Action.UPDATE and change.changed_paths == ("tags",)
    assert marker(SECRET) in change.before["tags"]["owner"]
    assert marker("an0ther-Canary-value") in change.after["tags"]["owner"]


def test_a_saved_plan_whose_value_changed_is_refused_before_anything_runs(harness) -> None:
    load(harness, SECRET)
    plan = harness.plan()
    load(harness, "an0ther-Canary-value")
    with pytest.raises(UserError, match="no sensitive variable of this run has"):
        harness.apply(plan, sensitive=harness.spec.sensitive)
    assert harness.world.calls == [] and harness.store.read() is None


def test_a_diagnostic_quoting_a_value_is_masked() -> None:
    # found by tests/stress/secrets.py: the offline base-model check quoted a sensitive revision
    from fastuner.errors import Diagnostic

    d = Diagnostic.warning(f"base model x (revision team-{SECRET}) cannot be loaded", f"pin {SECRET}")
    masked = Sensitive([SECRET]).mask_diagnostic(d)
    assert SECRET not in masked.summary + masked.detail and marker(SECRET) in masked.summary
    assert Sensitive().mask_diagnostic(d) is d
