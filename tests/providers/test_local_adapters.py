"""The local executor trains adapters for real with containers/train (tiny models built from configs:
these tests check the lifecycle, files and state, not accuracy)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastuner.state.local import LocalStateStore
from tests.cli.helpers import fastuner_subprocess, intents_rows, write_jsonl

pytestmark = pytest.mark.slow


def gen_rows(n: int) -> list[dict]:
    names = ["Lydia", "Ulfric", "Balgruuf", "Delphine", "Esbern", "Serana"]
    places = ["Whiterun", "Windhelm", "Riften", "Solitude"]
    return [{"input": f"{names[i % 6]} went to {places[i % 4]} on day {i}",
             "target": f"person: {names[i % 6]}; place: {places[i % 4]}"} for i in range(n)]


def write_project(root: Path, models: dict[str, Path], *, adapters: str, **files: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "data" / "intents.jsonl", intents_rows(120))
    write_jsonl(root / "data" / "entities.jsonl", gen_rows(120))
    for name, rows in files.items():
        write_jsonl(root / "data" / f"{name}.jsonl", rows)
    (root / "fastuner.yaml").write_text(f"""\
version: 1
project: lt
provider: {{local: {{device: cpu, training_slots: 2}}}}
variables:
  bert: {{default: "{models['bert']}"}}
  llama: {{default: "{models['llama']}"}}
datasets:
  intents: {{path: data/intents.jsonl, task: classification}}
  entities: {{path: data/entities.jsonl, task: text_generation}}
adapters:
{adapters}""")
    return root


CLASSIFIER = """\
  intents-lora:
    base_model: ${var.bert}
    dataset: intents
    lora: {r: 4, alpha: 8, dropout: 0.0}
    training: {epochs: 1, max_steps: 3, batch_tokens: 512, max_seq_len: 32, checkpoint_every: 1}
"""
GENERATOR = """\
  entities-lora:
    base_model: ${var.llama}
    dataset: entities
    lora: {r: 4, alpha: 8, dropout: 0.0}
    training: {epochs: 1, max_steps: 3, batch_tokens: 512, max_seq_len: 64}
"""


def state_of(root: Path, project: str = "lt"):
    return LocalStateStore(root / "state" / f"{project}.json").read()


def test_trains_classification_and_generation_adapters(tmp_path: Path, tiny_models) -> None:
    root = write_project(tmp_path / "p", tiny_models, adapters=CLASSIFIER + GENERATOR)
    proc = fastuner_subprocess("apply", "--auto-approve", cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Apply complete! Resources: 4 created" in proc.stdout
    assert "adapter.intents-lora: test accuracy" in proc.stdout and "untrained head" in proc.stdout
    state = state_of(root)
    for name, task in (("intents-lora", "classification"), ("entities-lora", "text_generation")):
        rs = state.resources[f"adapter.{name}"]
        assert rs.status == "ready"
        model = Path(rs.outputs["artifact_dir"])
        assert (model / "adapter_config.json").is_file() and (model / "adapter_model.safetensors").is_file()
        meta = json.loads((model / "fastuner.json").read_text())
        assert meta["max_input_chars"] == 8192  # the dataset's limit, for the server to enforce
        assert meta["task"] == task and meta["base_model"] == str(tiny_models["bert" if task == "classification" else "llama"])
        assert rs.outputs["metrics"]["steps"] == 3
        assert rs.outputs["config"]["lora_r"] == 4 and rs.outputs["config"]["max_steps"] == 3
        run = model.parent
        # the dataset's splits reached the program as SageMaker channels, linked from the object store
        assert (run / "input" / "data" / "train" / "train.jsonl").stat().st_nlink >= 2
    assert state.resources["adapter.intents-lora"].outputs["labels"] == sorted(
        {r["label"] for r in intents_rows(120)})
    # unchanged inputs never retrain
    again = fastuner_subprocess("plan", "--detailed-exitcode", cwd=root)
    assert again.returncode == 0, again.stdout
    # a changed LoRA setting retrains only that adapter
    (root / "fastuner.yaml").write_text((root / "fastuner.yaml").read_text().replace("r: 4, alpha: 8, dropout: 0.0}\n    training: {epochs: 1, max_steps: 3, batch_tokens: 512, max_seq_len: 64",
                                                                                     "r: 8, alpha: 8, dropout: 0.0}\n    training: {epochs: 1, max_steps: 3, batch_tokens: 512, max_seq_len: 64"))
    plan = json.loads(fastuner_subprocess("plan", "--json", cwd=root).stdout)
    actions = {c["address"]: (c["action"], c["reason"]) for c in plan["changes"]}
    assert actions["adapter.entities-lora"] == ("replace", "replace_because_cannot_update")
    assert actions["adapter.intents-lora"] == ("no-op", "none")
    logs = fastuner_subprocess("logs", "adapter.entities-lora", cwd=root)
    assert "[fastuner] step=3 total_steps=3" in logs.stdout
    gone = fastuner_subprocess("destroy", "--auto-approve", cwd=root, timeout=120)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not any((root / ".fastuner" / "runs").iterdir())


def test_failures_are_explained_and_isolated(tmp_path: Path, tiny_models) -> None:
    broken = CLASSIFIER.replace("intents-lora", "broken").replace("${var.bert}", "no-such-org/no-such-model")
    bad_module = GENERATOR.replace("entities-lora", "bad-modules").replace(
        "dropout: 0.0}", "dropout: 0.0, target_modules: [not_a_module]}")
    root = write_project(tmp_path / "p", tiny_models, adapters=broken + bad_module + CLASSIFIER)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = fastuner_subprocess("apply", "--auto-approve", cwd=root, timeout=600, env=env)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    state = state_of(root)
    assert state.resources["adapter.intents-lora"].status == "ready"  # independent work completes
    broken_rs = state.resources["adapter.broken"]
    assert broken_rs.status == "failed" and "no-such-org/no-such-model" in broken_rs.error
    bad = state.resources["adapter.bad-modules"]
    assert bad.status == "failed" and "not_a_module" in bad.error
    shown = fastuner_subprocess("show", cwd=root)
    assert "failed" in shown.stdout and "not_a_module" in shown.stdout
    plan = json.loads(fastuner_subprocess("plan", "--json", cwd=root, env=env).stdout)
    reasons = {c["address"]: c["reason"] for c in plan["changes"]}
    assert reasons["adapter.broken"] == "replace_because_tainted"


def test_no_wait_then_adopt_and_resume_after_a_kill(tmp_path: Path, tiny_models) -> None:
    slow = GENERATOR.replace("max_steps: 3", "max_steps: 400").replace("max_seq_len: 64", "max_seq_len: 64, checkpoint_every: 5")
    root = write_project(tmp_path / "p", tiny_models, adapters=slow)
    proc = fastuner_subprocess("apply", "--auto-approve", "--no-wait", cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "still running" in proc.stdout
    rs = state_of(root).resources["adapter.entities-lora"]
    assert rs.status == "pending"
    run = root / ".fastuner" / "runs" / rs.physical_name
    pid = json.loads((run / "process.json").read_text())["pid"]
    # the training survives fastuner; wait for a checkpoint, then kill it like a crashed machine would
    deadline = time.monotonic() + 300
    def complete() -> list[Path]:  # a checkpoint is written to a temporary folder, renamed when COMPLETE
        return [p for p in (run / "checkpoints").glob("*") if (p / "COMPLETE").is_file()]

    while time.monotonic() < deadline and not complete():
        time.sleep(0.2)
    assert complete(), (run / "train.log").read_text()
    os.killpg(pid, signal.SIGKILL)
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    plan = json.loads(fastuner_subprocess("plan", "--json", cwd=root).stdout)
    change = next(c for c in plan["changes"] if c["address"] == "adapter.entities-lora")
    assert change["reason"] == "create_because_pending" and "restarts it" in change["detail"]
    # finish quickly now: the same run (same name) resumes from its checkpoint
    done = fastuner_subprocess("apply", "--auto-approve", cwd=root, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed from" in (run / "train.log").read_text()
    assert state_of(root).resources["adapter.entities-lora"].status == "ready"


def test_interrupted_apply_leaves_training_running(tmp_path: Path, tiny_models) -> None:
    slow = GENERATOR.replace("max_steps: 3", "max_steps: 60")
    root = write_project(tmp_path / "p", tiny_models, adapters=slow)
    apply = subprocess.Popen([sys.executable, "-m", "fastuner.cli.main", "apply", "--auto-approve"], cwd=root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    runs = root / ".fastuner" / "runs"
    while time.monotonic() < deadline and not list(runs.glob("*/process.json")):
        time.sleep(0.1)
    apply.send_signal(signal.SIGINT)  # the first Ctrl-C: stop scheduling, keep the run, save state
    out, err = apply.communicate(timeout=120)
    assert apply.returncode == 130, out + err
    assert "Interrupt received" in out
    rs = state_of(root).resources["adapter.entities-lora"]
    assert rs.status == "pending"
    pid = json.loads((runs / rs.physical_name / "process.json").read_text())["pid"]
    finished = fastuner_subprocess("apply", "--auto-approve", cwd=root, timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert state_of(root).resources["adapter.entities-lora"].status == "ready"
    assert json.loads((runs / rs.physical_name / "process.json").read_text())["pid"] == pid  # adopted, not restarted
