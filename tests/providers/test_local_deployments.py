"""Local deployments: the real inference server as a detached process, updated in place, recreated
when it dies, expired by its TTL and reaped, with no orphan processes left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from fastuner.providers.local import processes
from fastuner.providers.local.http import HttpError, request
from fastuner.state.local import LocalStateStore
from tests.cli.helpers import intents_rows, write_jsonl

pytestmark = pytest.mark.slow


def servers_of(root: Path) -> list[int]:
    """pids of serve.py processes whose command line points into this project's folder."""
    out = subprocess.run(["pgrep", "-f", f"serve.py.*{root}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if p.strip()]


def adapter_block(name: str, r: int) -> str:
    return f"""\
  {name}:
    base_model: ${{var.bert}}
    dataset: intents
    lora: {{r: {r}, alpha: 8, dropout: 0.0}}
    training: {{epochs: 1, max_steps: 2, batch_tokens: 512, max_seq_len: 32}}
"""


def write_project(root: Path, bert: Path, *, adapters: list[str], deployed: list[str], extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "data" / "intents.jsonl").exists():
        write_jsonl(root / "data" / "intents.jsonl", intents_rows(120))
    blocks = "".join(adapter_block(a, 2 + i) for i, a in enumerate(adapters))
    (root / "fastuner.yaml").write_text(f"""\
version: 1
project: dep
provider: {{local: {{device: cpu}}}}
variables:
  bert: {{default: "{bert}"}}
datasets:
  intents: {{path: data/intents.jsonl, task: classification}}
adapters:
{blocks}deployments:
  api:
    base_model: ${{var.bert}}
    adapters: [{", ".join(deployed)}]
    cache_size: 2
{extra}""")
    return root


def state_of(root: Path):
    return LocalStateStore(root / "state" / "dep.json").read()


def applied(cli, root: Path) -> None:
    result = cli("apply", "--auto-approve", cwd=root)
    assert result.code == 0, result.text


def classify(url: str, adapter: str, text: str = "where is my order") -> dict:
    return request("POST", f"{url}/invocations", {"inputs": text, "adapter": adapter}, timeout=60)


def test_lifecycle_update_in_place_drift_and_destroy(tmp_path: Path, tiny_models, cli) -> None:
    root = write_project(tmp_path / "p", tiny_models["bert"], adapters=["a1", "a2"], deployed=["a1"])
    try:
        applied(cli, root)
        dep = state_of(root).resources["deployment.api"]
        url, pid = dep.outputs["url"], dep.outputs["pid"]
        assert request("GET", f"{url}/ping")["status"] == "healthy"
        assert os.getsid(pid) == pid  # its own session: Ctrl-C in the terminal and fastuner's exit don't reach it
        labels = {r["label"] for r in intents_rows(120)}
        assert set(classify(url, "a1")["scores"]) == labels
        # adding an adapter to a running deployment is an in-place update without a restart
        write_project(root, tiny_models["bert"], adapters=["a1", "a2"], deployed=["a1", "a2"])
        plan = json.loads(cli("plan", "--json", cwd=root).out)
        change = next(c for c in plan["changes"] if c["address"] == "deployment.api")
        assert (change["action"], change["reason"]) == ("update", "update_because_changed")
        applied(cli, root)
        dep = state_of(root).resources["deployment.api"]
        assert dep.outputs["pid"] == pid and dep.outputs["url"] == url
        assert set(dep.outputs["adapters"]) == {"a1", "a2"}
        assert set(classify(url, "a2")["scores"]) == labels
        # removing one goes through the management API too
        write_project(root, tiny_models["bert"], adapters=["a1", "a2"], deployed=["a2"])
        applied(cli, root)
        token_file = root / ".fastuner" / "deployments" / dep.physical_name / "token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        with pytest.raises(HttpError) as refused:  # another user of this machine reaches 127.0.0.1 too
            request("GET", f"{url}/adapters")
        assert refused.value.status == 401
        adapters = request("GET", f"{url}/adapters", headers={"Authorization": f"Bearer {token_file.read_text()}"})
        assert [a["name"] for a in adapters["adapters"]] == ["a2"]
        assert state_of(root).resources["deployment.api"].outputs["pid"] == pid
        # a dead server is drift: the plan recreates it
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and processes.alive(pid):  # launched in-process: a zombie until reaped
            time.sleep(0.05)
        plan = json.loads(cli("plan", "--json", cwd=root).out)
        change = next(c for c in plan["changes"] if c["address"] == "deployment.api")
        assert (change["action"], change["reason"]) == ("create", "create_because_missing")
        assert "not running" in change["detail"]
        applied(cli, root)
        new = state_of(root).resources["deployment.api"].outputs
        assert new["pid"] != pid and classify(new["url"], "a2")["label"] in labels
        assert servers_of(root) != []
    finally:
        cli("destroy", "--auto-approve", cwd=root)
    assert servers_of(root) == []
    assert state_of(root).resources == {}


def test_ttl_expiry_reap_and_renew(tmp_path: Path, tiny_models, cli, clock) -> None:
    """The TTL story with a real server, in-process with the clock moved by hand (nothing waits for a ttl):
    shortened while running, reaped, down until its ttl changes after the expiry, reaped again, --renew.
    Every transition is also tested without a server in tests/core (planner and engine)."""
    def spec(ttl: str) -> Path:
        return write_project(tmp_path / "p", tiny_models["bert"], adapters=["a1"], deployed=["a1"],
                             extra=f"    ttl: {ttl}\n")

    def run(*args: str):
        result = cli(*args, cwd=root, clock=clock)
        assert result.code in (0, 2), result.text
        return result

    root = spec("8h")
    try:
        run("apply", "--auto-approve")
        dep = state_of(root).resources["deployment.api"]
        created, pid = dep.created_at, dep.outputs["pid"]
        assert created == clock.now and dep.expires_at == created + timedelta(hours=8)
        assert f"expires_at     = {dep.expires_at.isoformat()}" in run("state", "show", "deployment.api").out
        nothing = run("reap", "--auto-approve")
        assert "Nothing to reap" in nothing.out and "expires in 8.0 h" in nothing.out
        clock.tick(seconds=30)
        spec("1m")  # shortened while running: an in-place update, same server
        assert "(renewed" not in run("apply", "--auto-approve").out
        dep = state_of(root).resources["deployment.api"]
        assert dep.outputs["pid"] == pid and dep.expires_at == created + timedelta(minutes=1)
        clock.tick(minutes=5)
        plan = json.loads(run("plan", "--json").out)
        change = next(c for c in plan["changes"] if c["address"] == "deployment.api")
        assert (change["action"], change["reason"]) == ("delete", "delete_because_ttl_expired")
        # reap needs no dataset files: it runs where only the spec and the state are
        (root / "data" / "intents.jsonl").rename(root / "intents.jsonl.away")
        reaped = run("reap", "--auto-approve")
        assert "Reaped deployment.api: ran" in reaped.out
        (root / "intents.jsonl.away").rename(root / "data" / "intents.jsonl")
        assert servers_of(root) == []
        dep = state_of(root).resources["deployment.api"]
        assert dep.status == "expired" and dep.expires_at == created + timedelta(minutes=1)  # a past time
        # it does not come back: not later, and not because of the ttl change that made it expire
        clock.tick(days=1)
        again = run("plan", "--detailed-exitcode")
        assert again.code == 0, again.out
        assert again.out.count("stays down") == 1 and "--renew deployment.api" in again.out
        assert "expired" in next(ln for ln in run("show").out.splitlines() if "deployment.api" in ln)
        # a ttl changed after the expiry renews it
        spec("8h")
        renewed = run("apply", "--auto-approve")
        assert renewed.out.count("renewed after expiry: ttl changed from 1m to 8h") == 1, renewed.out
        dep = state_of(root).resources["deployment.api"]
        assert dep.status == "ready" and dep.expires_at == clock.now + timedelta(hours=8)
        assert dep.outputs["pid"] != pid and servers_of(root) != []
        # expired again under 8h and reaped; --renew would bring it back (applying a renewal is shown above)
        clock.tick(hours=9)
        assert "Reaped deployment.api" in run("reap", "--auto-approve").out
        assert servers_of(root) == []
        assert run("plan", "--detailed-exitcode").code == 0
        plan = json.loads(run("plan", "--json", "--renew", "deployment.api").out)
        change = next(c for c in plan["changes"] if c["address"] == "deployment.api")
        assert (change["action"], change["reason"], change["detail"]) == \
            ("create", "create_because_renewed", "requested with --renew")
        assert change["expires_at"] == (clock.now + timedelta(hours=8)).isoformat()
    finally:
        cli("destroy", "--auto-approve", cwd=root, clock=clock)
    assert servers_of(root) == []


def test_port_in_use_and_corrupt_adapter_are_explained(tmp_path: Path, tiny_models, cli) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    root = write_project(tmp_path / "p", tiny_models["bert"], adapters=["a1"], deployed=["a1"],
                         extra=f"    port: {port}\n")
    try:
        proc = cli("apply", "--auto-approve", cwd=root)  # a bug would raise here, not return 1
        assert proc.code == 1
        assert f"127.0.0.1:{port} is already in use" in proc.out, proc.out
        assert "choose another `port:`" in proc.out
        assert "Traceback" not in proc.text
        assert state_of(root).resources["deployment.api"].status == "failed"
        assert state_of(root).resources["adapter.a1"].status == "ready"  # the adapter is kept
        busy.close()
        # a corrupt artifact: the server refuses it at start, and says which file
        artifact = Path(state_of(root).resources["adapter.a1"].outputs["artifact_dir"])
        (artifact / "adapter_model.safetensors").write_bytes(b"not safetensors")
        proc = cli("apply", "--auto-approve", cwd=root)
        assert proc.code == 1
        assert "adapter_model.safetensors" in proc.out or "corrupt" in proc.out, proc.out
        assert servers_of(root) == []
    finally:
        busy.close()
        cli("destroy", "--auto-approve", cwd=root)
    assert servers_of(root) == []
