"""Spot interruption: SIGTERM mid-training finishes the step, saves a checkpoint and exits 143; the
rerun resumes from that step (optimizer, scheduler, RNG, data position) and ends with exactly the
adapter an uninterrupted run produces."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fastuner_train.checkpoint import complete_checkpoints
from fastuner_train.cli import main
from fastuner_train.errors import EXIT_TERMINATED
from safetensors.torch import load_file

from tests.train.jobs import TRAIN_PY, make_job

pytestmark = pytest.mark.slow


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes(
        tmp_path: Path, models: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    torch.set_num_threads(1)
    hps = {"task": "text_generation", "base_model": str(models["llama_chat"]), "epochs": 100, "max_steps": 60,
           "batch_tokens": 96, "max_seq_len": 48, "checkpoint_every": 20, "lora_dropout": 0.1, "lora_r": 4,
           "learning_rate": 3e-3}

    reference = make_job(tmp_path / "reference", "text_generation", sizes=(24, 4, 4))
    assert main(reference.args(**hps), reference.env()) == 0
    capsys.readouterr()

    job = make_job(tmp_path / "interrupted", "text_generation", sizes=(24, 4, 4))
    process = subprocess.Popen([sys.executable, str(TRAIN_PY), *job.args(**hps)], env=job.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if line.startswith("[fastuner] step=25 "):
                process.send_signal(signal.SIGTERM)
                break
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == EXIT_TERMINATED, stderr[-3000:]
    reason = job.failure.read_text().strip()
    stopped_at = int(re.match(r"stopped by SIGTERM after step (\d+) of 60; checkpoint saved to ", reason).group(1))
    assert 25 <= stopped_at < 60
    assert [p.name for p in complete_checkpoints(job.checkpoint_dir)] == ["step-00000020", f"step-{stopped_at:08d}"]
    assert not (job.model_dir / "adapter_model.safetensors").exists()

    assert main(job.args(**hps), job.env()) == 0
    out = capsys.readouterr().out
    steps = [int(m) for m in re.findall(r"^\[fastuner\] step=(\d+) .* train_loss=", out, re.M)]
    assert steps == list(range(stopped_at + 1, 61))
    assert not job.failure.exists()

    got, want = (load_file(str(j.model_dir / "adapter_model.safetensors")) for j in (job, reference))
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=2e-6, rtol=1e-5)
    resumed_metrics, reference_metrics = (json.loads((j.model_dir / "metrics.json").read_text())
                                          for j in (job, reference))
    assert resumed_metrics["best_step"] == reference_metrics["best_step"]
    assert resumed_metrics["test_loss"] == pytest.approx(reference_metrics["test_loss"], abs=1e-5)


def test_a_checkpoint_from_another_job_is_refused(tmp_path: Path, models: dict[str, Path]) -> None:
    job = make_job(tmp_path, "text_generation", sizes=(8, 2, 2))
    hps = {"task": "qa", "base_model": str(models["llama_chat"]), "epochs": 1, "max_steps": 3, "batch_tokens": 64,
           "max_seq_len": 32, "checkpoint_every": 1}
    assert main(job.args(**hps), job.env()) == 0
    assert complete_checkpoints(job.checkpoint_dir)
    assert main(job.args(**{**hps, "lora_r": 8}), job.env()) == 2
    reason = job.failure.read_text().strip()
    assert re.match(rf"checkpoint {re.escape(str(job.checkpoint_dir))}/step-\d{{8}} belongs to a different job "
                    r"\(lora_r changed\): use another checkpoint_dir or delete it$", reason)
