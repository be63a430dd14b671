"""Data parallel under torchrun (2 processes, gloo on CPU): the ranks end with identical adapters and
rank 0 saves exactly that adapter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.jobs import TRAIN_PY, make_job

pytestmark = pytest.mark.slow


def test_two_processes_agree_and_rank0_saves_their_adapter(tmp_path: Path, models: dict[str, Path]) -> None:
    job = make_job(tmp_path, "text_generation", sizes=(20, 4, 4))
    dump = tmp_path / "ranks"
    args = job.args(task="text_generation", base_model=str(models["llama_chat"]), epochs=1, batch_tokens=96,
                    max_seq_len=48, lora_r=4, lora_dropout=0.1, learning_rate=5e-3)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(TRAIN_PY),
         *args], env=job.env(FASTUNER_TRAIN_DUMP_RANKS=str(dump)), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((job.model_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] >= 2

    rank0, rank1 = load_file(str(dump / "rank0.safetensors")), load_file(str(dump / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys() and len(rank0) > 0
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    initial_b = [v for k, v in rank0.items() if "lora_B" in k]
    assert any(v.abs().sum() > 0 for v in initial_b)  # trained: LoRA B starts at zero

    saved = load_file(str(job.model_dir / "adapter_model.safetensors"))
    assert {k.replace(".default", "") for k in rank0} == set(saved)
    for key, value in rank0.items():
        assert torch.equal(saved[key.replace(".default", "")], value), key
    # only rank 0 logs the step lines
    assert len([line for line in result.stdout.splitlines() if " train_loss=" in line]) == metrics["steps"]
