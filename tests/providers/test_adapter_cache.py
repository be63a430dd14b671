"""The adapter cache, for real: change a hyperparameter and change it back, and the second apply restores
the first run from the object store instead of training (tiny model; checks files and state, not speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.helpers import fastuner_subprocess
from tests.providers.test_local_adapters import CLASSIFIER, state_of, write_project

pytestmark = pytest.mark.slow


def set_lr(root: Path, lr: str | None) -> None:
    """The classifier's learning rate (None: the default), with the adapter cache keeping one earlier run."""
    text = (root / "fastuner.yaml").read_text()
    text = text.replace("{local: {device: cpu, training_slots: 2}}", "{local: {device: cpu, keep_previous: 1}}")
    text = text.replace(", learning_rate: 0.01", "").replace(", learning_rate: 0.02", "")
    if lr:
        text = text.replace("checkpoint_every: 1}", f"checkpoint_every: 1, learning_rate: {lr}}}")
    (root / "fastuner.yaml").write_text(text)


def apply(root: Path) -> str:
    proc = fastuner_subprocess("apply", "--auto-approve", cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def adapter_change(root: Path) -> dict:
    plan = json.loads(fastuner_subprocess("plan", "--json", cwd=root).stdout)
    return next(c for c in plan["changes"] if c["address"] == "adapter.intents-lora")


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_reverting_restores_the_earlier_run_and_the_oldest_is_evicted(tmp_path: Path, tiny_models) -> None:
    root = write_project(tmp_path / "p", tiny_models, adapters=CLASSIFIER)
    objects = root / ".fastuner" / "objects"
    set_lr(root, None)
    apply(root)  # A
    a = state_of(root).resources["adapter.intents-lora"]
    a_run = root / ".fastuner" / "runs" / a.physical_name
    a_model, a_log = files(a_run / "model"), (a_run / "train.log").read_bytes()
    assert a.outputs["artifact"]["model/adapter_model.safetensors"].startswith("sha256/")

    set_lr(root, "0.01")
    apply(root)  # B: trains; A's run folder is deleted, its files stay in the store
    b = state_of(root).resources["adapter.intents-lora"]
    assert b.identity != a.identity and not a_run.exists()
    assert [t.identity for t in b.history] == [a.identity]

    set_lr(root, None)  # back to A
    change = adapter_change(root)
    assert change["action"] == "replace" and change["restore"]["physical_name"] == a.physical_name
    assert "restored from a previous run" in fastuner_subprocess("plan", cwd=root).stdout
    out = apply(root)
    assert "restored from a previous run" in out
    restored = state_of(root).resources["adapter.intents-lora"]
    assert (restored.identity, restored.physical_name, restored.status) == (a.identity, a.physical_name, "ready")
    assert restored.outputs["metrics"] == a.outputs["metrics"] and restored.outputs["restored_from"] == a.physical_name
    assert files(a_run / "model") == a_model and (a_run / "train.log").read_bytes() == a_log
    assert not (a_run / "process.json").exists()  # no training process was started for it
    assert not (a_run / "checkpoints").exists()
    assert [t.identity for t in restored.history] == [b.identity]
    assert adapter_change(root)["action"] == "no-op"  # restored means done: the next plan is clean

    set_lr(root, "0.02")
    apply(root)  # C: A goes into the history, B (the oldest, keep_previous 1) is evicted
    c = state_of(root).resources["adapter.intents-lora"]
    assert [t.identity for t in c.history] == [a.identity]
    b_weights = b.outputs["artifact"]["model/adapter_model.safetensors"]
    assert not (objects / b_weights).exists()
    assert all((objects / key).exists() for key in c.history[0].artifact.values())
    set_lr(root, "0.01")  # back to B: evicted, so it trains again
    change = adapter_change(root)
    assert change["action"] == "replace" and change["restore"] is None

    gone = fastuner_subprocess("destroy", "--auto-approve", cwd=root, timeout=120)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    left = [p for p in objects.rglob("*") if p.is_file() and "tmp" not in p.parts]
    assert left == []  # destroy leaves nothing behind, kept runs included
