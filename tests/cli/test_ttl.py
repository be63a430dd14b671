"""An expired deployment as the CLI shows it, with the clock injected (`main(clock=...)`): plan, show,
state show and reap agree that it ended when its ttl ended, that it stays down, and what renews it.

The state is written by the real planner and engine; the in-memory provider stands in for the server,
which an expired deployment no longer has (refresh does not read expired records). The same story
with a real server is tests/providers/test_local_deployments.py::test_ttl_expiry_reap_and_renew."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from fastuner.config.loader import load_spec
from fastuner.engine.apply import apply_plan
from fastuner.engine.refresh import refresh
from fastuner.plan.planner import make_plan
from fastuner.providers.memory import memory_provider
from fastuner.state.local import LocalStateStore
from fastuner.state.model import empty_state

SPEC = """\
version: 1
project: demo
deployments:
  api:
    base_model: base/model
    ttl: {ttl}
"""


def converge(root: Path, ttl: str, now: datetime, provider) -> list[str]:
    """Plan and apply `SPEC` with `ttl` at `now` through the engine; the reasons of what changed."""
    (root / "fastuner.yaml").write_text(SPEC.format(ttl=ttl))
    spec = load_spec(root / "fastuner.yaml", variables={}, environ={})
    store = LocalStateStore(root / "state" / "demo.json")
    state = store.read() or empty_state("demo", "default")
    plan = make_plan(spec, state, refresh(spec, state, provider), now)
    assert apply_plan(plan, store, provider, spec_dir=root, clock=lambda: now).ok
    return [str(c.reason) for c in plan.changes if c.action != "no-op"]


def test_a_deployment_expired_under_a_shortened_ttl_stays_down_until_its_ttl_changes(cli, clock, tmp_path):
    provider = memory_provider()
    created = clock.now
    assert converge(tmp_path, "8h", clock.now, provider) == ["create_because_new"]
    clock.tick(seconds=30)
    assert converge(tmp_path, "1m", clock.now, provider) == ["update_because_changed"]
    clock.tick(minutes=5)
    assert converge(tmp_path, "1m", clock.now, provider) == ["delete_because_ttl_expired"]
    ended = (created + timedelta(minutes=1)).isoformat()

    clock.tick(days=2)
    plan = cli("plan", "--detailed-exitcode", cwd=tmp_path, clock=clock)
    assert plan.code == 0, plan.text
    line = next(ln for ln in plan.out.splitlines() if "deployment.api" in ln)
    assert f"ended at {ended}" in line and "fastuner apply --renew deployment.api" in line
    assert line.count("stays down") == 1
    show = cli("show", cwd=tmp_path)
    row = next(ln for ln in show.out.splitlines() if "deployment.api" in ln)
    assert "expired" in row and ended[:16] in row  # the past end, not a future time
    state = json.loads(cli("state", "show", "deployment.api", "--json", cwd=tmp_path).out)["resource"]
    assert state["status"] == "expired" and state["inputs"]["ttl"] == "1m"
    assert datetime.fromisoformat(state["expires_at"]).isoformat() == ended
    assert f"expires_at     = {ended}" in cli("state", "show", "deployment.api", cwd=tmp_path).out
    reap = cli("reap", cwd=tmp_path, clock=clock)
    assert reap.code == 0 and "Nothing to reap" in reap.out and "deployment.api" not in reap.out

    (tmp_path / "fastuner.yaml").write_text(SPEC.format(ttl="8h"))  # a ttl change after the expiry
    renewed = cli("plan", "--json", cwd=tmp_path, clock=clock)
    [change] = json.loads(renewed.out)["changes"]
    assert (change["action"], change["reason"]) == ("create", "create_because_renewed")
    assert change["detail"] == "ttl changed from 1m to 8h"
    text = cli("plan", cwd=tmp_path, clock=clock).out
    assert text.count("renewed after expiry: ttl changed from 1m to 8h") == 1, text
    assert f"expires at {(clock.now + timedelta(hours=8)).isoformat()}" in text
