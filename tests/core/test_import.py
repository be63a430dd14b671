"""`fastuner import`: an existing resource adopted as the planned creation, checked against the spec."""

from __future__ import annotations

import pytest

from fastuner.engine.adopt import import_resource
from fastuner.errors import UserError
from fastuner.plan.model import Action

ONLY_DATASET = """\
version: 1
project: demo
datasets:
  ds: {path: data/ds.jsonl, task: text_generation}
"""


def _made_elsewhere(harness, address: str, name: str) -> None:
    """What a team already runs: an object made from exactly the planned inputs, under its own name."""
    change = next(c for c in harness.plan().changes if c.address == address)
    harness.world.objects[name] = {"status": "ready", "inputs": dict(change.after or {}),
                                   "outputs": {"id": name}}


def test_an_imported_resource_is_recorded_as_created_and_plans_no_change(harness) -> None:
    harness.converge(ONLY_DATASET)
    harness.load()
    _made_elsewhere(harness, "adapter.ad", "their-job-17")
    rs = import_resource(harness.plan(), "adapter.ad", "their-job-17", harness.store, harness.provider,
                         spec_dir=harness.root, clock=harness.clock)
    assert rs.physical_name == "their-job-17" and rs.status == "ready" and rs.outputs == {"id": "their-job-17"}
    assert rs.created_at == harness.now
    assert harness.ops("create") == ["dataset.ds"]  # nothing was created for the adapter
    changes = {c.address: c.action for c in harness.plan().changes}
    assert changes["adapter.ad"] is Action.NOOP  # the next plan leaves it alone
    assert changes["deployment.ep"] is Action.CREATE


def test_a_resource_that_differs_from_the_spec_is_refused_and_nothing_recorded(harness) -> None:
    harness.converge(ONLY_DATASET)
    harness.load()
    _made_elsewhere(harness, "adapter.ad", "their-job")
    harness.world.objects["their-job"]["inputs"]["method"] = "qlora"
    serial = harness.state().serial
    with pytest.raises(UserError, match=r"cannot import their-job as adapter\.ad: it differs from the spec in method"):
        import_resource(harness.plan(), "adapter.ad", "their-job", harness.store, harness.provider,
                        spec_dir=harness.root, clock=harness.clock)
    assert harness.state().serial == serial and "adapter.ad" not in harness.state().resources


def test_import_needs_the_upstream_applied_and_refuses_a_managed_address(harness) -> None:
    harness.load()
    with pytest.raises(UserError, match=r"depends on dataset\.ds, which is not applied yet"):
        import_resource(harness.plan(), "adapter.ad", "x", harness.store, harness.provider, spec_dir=harness.root,
                        clock=harness.clock)
    harness.converge()
    with pytest.raises(UserError, match=r"adapter\.ad is already in state") as info:
        import_resource(harness.plan(), "adapter.ad", "x", harness.store, harness.provider, spec_dir=harness.root,
                        clock=harness.clock)
    assert "fastuner state rm adapter.ad" in str(info.value.diagnostics[0].detail)
