"""An auto-approved apply (or reap) that waited for the lock with --lock-timeout, while the holder changed
the state, plans again instead of failing with a stale plan (found by the stress harness's races:
`python -m tests.stress races`). A saved plan stays refused when the state moved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastuner.state.local import LocalStateStore
from tests.cli.helpers import fastuner_subprocess, intents_rows, write_jsonl

HOLDER = """
import sys
from pathlib import Path
from fastuner.state.local import LocalStateStore
store = LocalStateStore(Path(sys.argv[1]))
with store.lock("apply (test holder)"):
    print("held", flush=True)
    sys.stdin.readline()
    store.write(store.read())  # the holder's apply records something: the serial moves
"""


def project(root: Path) -> Path:
    write_jsonl(root / "data" / "intents.jsonl", intents_rows(120))
    (root / "fastuner.yaml").write_text("version: 1\nproject: demo\nprovider: {local: {}}\n"
                                        "datasets:\n  intents: {path: data/intents.jsonl, task: classification}\n")
    return root


def wait_behind_a_writing_holder(root: Path, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    """`fastuner ARGS` started while a holder has the lock; the holder writes the state and lets go once
    the run says it waits."""
    state = root / "state" / "demo.json"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(state)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        run = subprocess.Popen([sys.executable, "-m", "fastuner.cli.main", *args], cwd=root,
                               env={**__import__("os").environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said = ""
        for line in run.stdout:
            said += line
            if "waiting for it" in line:
                holder.stdin.write("\n")
                holder.stdin.flush()
                break
        out, err = run.communicate(timeout=120)
        holder.wait(30)
    finally:
        holder.kill()
    return subprocess.CompletedProcess(run.args, run.returncode, said + out, err), said


def test_an_auto_approved_apply_that_waited_plans_again(tmp_path: Path) -> None:
    root = project(tmp_path)
    assert fastuner_subprocess("apply", "--auto-approve", cwd=root).returncode == 0
    write_jsonl(root / "data" / "intents.jsonl", intents_rows(130, seed=1))  # a change to apply
    before = LocalStateStore(root / "state" / "demo.json").read().serial
    run, _ = wait_behind_a_writing_holder(root, "apply", "--auto-approve", "--lock-timeout", "60s")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "the plan is stale" in run.stdout and "planning again" in run.stdout
    assert "Apply complete!" in run.stdout and "Traceback" not in run.stderr
    after = LocalStateStore(root / "state" / "demo.json").read()
    assert after.serial > before + 1  # the holder's write and this apply's, none lost
    assert after.resources["dataset.intents"].outputs["counts"]["records"] == 130


def test_a_saved_plan_that_went_stale_while_waiting_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path)
    assert fastuner_subprocess("apply", "--auto-approve", cwd=root).returncode == 0
    write_jsonl(root / "data" / "intents.jsonl", intents_rows(130, seed=1))
    assert fastuner_subprocess("plan", "--out", "p.json", cwd=root).returncode == 0
    run, _ = wait_behind_a_writing_holder(root, "apply", "p.json", "--lock-timeout", "60s")
    assert run.returncode == 1 and "the plan is stale" in run.stderr and "Traceback" not in run.stderr


def test_a_reap_that_waited_for_an_apply_plans_again_and_reaps(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from fastuner.state.model import ResourceState, empty_state

    root = tmp_path
    (root / "fastuner.yaml").write_text("version: 1\nproject: demo\nprovider: {local: {}}\n"
                                        "deployments:\n  api: {base_model: /nonexistent, ttl: 1h}\n")
    state, now = empty_state("demo", "default"), datetime.now(UTC)
    state.resources["deployment.api"] = ResourceState(  # its server already gone: nothing to stop
        address="deployment.api", kind="deployment", name="api", status="ready", identity="x",
        physical_name="demo-ep-api-x", inputs={"base_model": "/nonexistent", "ttl": "1h"},
        outputs={"url": "http://127.0.0.1:1", "pid": 999999}, created_at=now - timedelta(hours=2),
        expires_at=now - timedelta(hours=1))
    LocalStateStore(root / "state" / "demo.json").write(state)
    run, _ = wait_behind_a_writing_holder(root, "reap", "--auto-approve", "--lock-timeout", "60s")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "planning again" in run.stdout and "Reaped deployment.api" in run.stdout
    assert LocalStateStore(root / "state" / "demo.json").read().resources["deployment.api"].status == "expired"
