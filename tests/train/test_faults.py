"""Bad input and faults: each ends with a one-line reason in the failure file and a non-zero exit,
never a hang. Most run the entry point in-process (`cli.main`) to keep the suite fast."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from fastuner_train.cli import main
from fastuner_train.errors import EXIT_BAD_INPUT, EXIT_OUT_OF_MEMORY

from tests.train.jobs import TRAIN_PY, make_job, write_jsonl


def failure_line(job) -> str:
    text = job.failure.read_text()
    assert text.count("\n") == 1 and text.endswith("\n")
    return text.strip()


def test_unknown_hyperparameter_fails_before_loading_anything(tmp_path: Path) -> None:
    job = make_job(tmp_path, "text_generation", sizes=(4, 2, 2))
    # base model "x" does not exist: had it been loaded first, the failure would name it instead
    result = subprocess.run([sys.executable, str(TRAIN_PY), *job.args(task="qa", base_model="x", lora_rank=4)],
                            env=job.env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_BAD_INPUT
    assert failure_line(job) == "unknown hyperparameter 'lora_rank' (did you mean 'lora_r'?)"


def test_label_never_seen_in_training(tmp_path: Path, models: dict[str, Path]) -> None:
    job = make_job(tmp_path, "classification", sizes=(6, 3, 3))
    write_jsonl(job.channels["test"], [{"input": "where is my order", "label": "furious"}], "extra.jsonl")
    rc = main(job.args(task="classification", base_model=str(models["bert"])), job.env())
    assert rc == EXIT_BAD_INPUT
    assert failure_line(job) == "label 'furious' in the test split was never seen in training"


def test_empty_split(tmp_path: Path, models: dict[str, Path]) -> None:
    job = make_job(tmp_path, "text_generation", sizes=(6, 3, 3))
    (job.channels["validation"] / "data.jsonl").write_text("")
    rc = main(job.args(task="qa", base_model=str(models["llama_chat"])), job.env())
    assert rc == EXIT_BAD_INPUT
    assert failure_line(job).startswith("the validation split is empty")


def test_base_model_path_that_does_not_exist(tmp_path: Path) -> None:
    job = make_job(tmp_path, "text_generation", sizes=(6, 3, 3))
    rc = main(job.args(task="qa", base_model=str(tmp_path / "no-such-model")), job.env())
    assert rc == EXIT_BAD_INPUT
    assert failure_line(job) == f"base model path {tmp_path / 'no-such-model'} does not exist"


def test_hub_id_in_offline_mode_fails_fast(tmp_path: Path) -> None:
    job = make_job(tmp_path, "text_generation", sizes=(6, 3, 3))
    env = job.env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = job.run(env=env, timeout=90, task="qa", base_model="fastuner-tests/no-such-model")  # never a hang
    assert result.returncode == EXIT_BAD_INPUT, result.stderr[-2000:]
    line = failure_line(job)
    assert line.startswith("cannot load base model 'fastuner-tests/no-such-model'")
    assert "HF_HUB_OFFLINE is set" in line and str(tmp_path / "hf") in line


def test_target_module_that_does_not_exist(tmp_path: Path, models: dict[str, Path]) -> None:
    job = make_job(tmp_path, "text_generation", sizes=(6, 3, 3))
    rc = main(job.args(task="qa", base_model=str(models["llama_chat"]), target_modules=["q_proj", "qkv_proj"]),
              job.env())
    assert rc == EXIT_BAD_INPUT
    line = failure_line(job)
    assert line.startswith("target module 'qkv_proj' does not exist in the base model")
    assert "q_proj" in line and "down_proj" in line


@pytest.mark.slow
def test_max_seq_len_above_the_model_limit_is_clamped_with_a_warning(
        tmp_path: Path, models: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    job = make_job(tmp_path, "text_generation", sizes=(8, 2, 2))
    with caplog.at_level(logging.WARNING, logger="fastuner.train"):
        rc = main(job.args(task="qa", base_model=str(models["llama_chat"]), max_seq_len=1024, batch_tokens=1024,
                           max_steps=1, gradient_checkpointing="true"), job.env())
    assert rc == 0
    assert json.loads((job.model_dir / "metrics.json").read_text())["max_seq_len"] == 256
    assert "max_seq_len 1024 is larger than the model's max_position_embeddings 256: using 256" in caplog.text


@pytest.mark.slow
def test_out_of_memory_is_a_clear_reason(tmp_path: Path) -> None:
    """A real allocator failure: a model whose MLP activation for one packed batch would need ~100 GB
    (the kernel refuses it at once, nothing is actually allocated)."""
    from transformers import LlamaForCausalLM

    from tests.tinymodels import make_tiny_llama

    path = make_tiny_llama(tmp_path / "wide", hidden=8, layers=1, max_positions=512)
    LlamaForCausalLM.from_pretrained(path, intermediate_size=250_000, ignore_mismatched_sizes=True).save_pretrained(path)
    job = make_job(tmp_path, "text_generation", sizes=(4, 2, 2))
    long = " ".join(["where is my order"] * 120)
    write_jsonl(job.channels["train"], [{"input": long, "target": "yes"}] * 200)
    rc = main(job.args(task="qa", base_model=str(path), target_modules=["q_proj"], max_seq_len=512,
                       batch_tokens=120_000), job.env())
    assert rc == EXIT_OUT_OF_MEMORY
    line = failure_line(job)
    assert line.startswith("out of memory during step 1: lower batch_tokens or max_seq_len")
    assert "can't allocate memory" in line
