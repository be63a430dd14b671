"""train.py as a process under the SageMaker contract: real (tiny) training, the adapter artifact,
reloading it with plain PEFT, the log lines, and metric definitions parsing the real output."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fastuner_train.cli import main

from tests.train.jobs import TRAIN_DIR, make_job

pytestmark = pytest.mark.slow

ARTIFACT = {"adapter_config.json", "adapter_model.safetensors", "fastuner.json", "metrics.json"}


def parse_metric_definitions(stdout: str) -> dict[str, list[float]]:
    definitions = json.loads((TRAIN_DIR / "metric_definitions.json").read_text())
    found: dict[str, list[float]] = {}
    for line in stdout.splitlines():
        for d in definitions:
            match = re.search(d["Regex"], line)
            if match:
                found.setdefault(d["Name"], []).append(float(match.group(1)))
    return found


def standard_causal_test_loss(model, tokenizer, records: list[dict[str, str]], prompt_format: str) -> float:
    """Mean target-token loss through plain transformers (no code from the training program)."""
    total, count = 0.0, 0
    for r in records:
        if prompt_format == "chat_template":
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": r["input"]}], tokenize=False,
                                                   add_generation_prompt=True)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        else:
            prompt_ids = tokenizer(r["input"] + "\n")["input_ids"]
        target = tokenizer(r["target"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt_ids + target])
        labels = torch.tensor([[-100] * len(prompt_ids) + target])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        total += F.cross_entropy(logits, labels[0, 1:], ignore_index=-100, reduction="sum").item()
        count += len(target)
    return total / count


def read_records(folder: Path) -> list[dict[str, str]]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_text_generation_job(models: dict[str, Path], tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = make_job(tmp_path, "text_generation", sizes=(24, 6, 6))
    result = job.run(task="text_generation", base_model=models["llama_chat"], epochs=2, batch_tokens=256,
                     max_seq_len=64, learning_rate=5e-3, lora_r=4, lora_alpha=8)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not job.failure.exists()
    assert {p.name for p in job.model_dir.iterdir()} >= ARTIFACT
    described = json.loads((job.model_dir / "fastuner.json").read_text())
    assert described["format_version"] == 1 and described["task"] == "text_generation"
    assert described["prompt_format"] == "chat_template" and described["labels"] is None
    assert described["chat_template_hash"].startswith("sha256:") and described["tokenizer_hash"].startswith("sha256:")
    assert (described["lora_r"], described["lora_alpha"], described["method"]) == (4, 8, "lora")
    assert isinstance(described["lora_alpha"], int)
    assert described["target_modules"] == "all-linear" and described["base_model"] == str(models["llama_chat"])
    metrics = job.metrics()
    assert described["metrics"] == metrics
    assert json.loads((job.output_dir / "data" / "metrics.json").read_text()) == metrics
    assert 0 <= metrics["test_exact_match"] <= 1 and metrics["best_eval_loss"] > 0

    # Log lines: one per step, the contract's form, and the metric definitions parse them.
    lines = [line for line in result.stdout.splitlines() if " train_loss=" in line]
    assert len(lines) == metrics["steps"]
    assert re.fullmatch(r"\[fastuner\] step=1 total_steps=\d+ epoch=\d+\.\d\d train_loss=\d+\.\d{4} "
                        r"lr=\d\.\de[-+]\d\d .*", lines[0])
    parsed = parse_metric_definitions(result.stdout)
    assert parsed["step"][-1] == metrics["steps"]
    assert len(parsed["train_loss"]) == metrics["steps"] and len(parsed["eval_loss"]) == 2
    assert parsed["test_loss"] == [pytest.approx(metrics["test_loss"], abs=1e-4)]
    assert parsed["test_exact_match"] == [pytest.approx(metrics["test_exact_match"], abs=1e-4)]
    assert min(parsed["eval_loss"]) == pytest.approx(metrics["best_eval_loss"], abs=1e-4)
    assert parsed["learning_rate"] and parsed["epoch"][-1] == 2.0

    # Tarred as SageMaker does (files at the tar root), the artifact loads with plain PEFT and
    # reproduces the test loss the job measured in-process.
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        for path in sorted(job.model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        assert all("/" not in name for name in tar.getnames())
        tar.extractall(tmp_path / "unpacked", filter="data")
    base = AutoModelForCausalLM.from_pretrained(models["llama_chat"])
    model = PeftModel.from_pretrained(base, tmp_path / "unpacked").eval()
    tokenizer = AutoTokenizer.from_pretrained(models["llama_chat"])
    reloaded = standard_causal_test_loss(model, tokenizer, read_records(job.channels["test"]), "chat_template")
    assert reloaded == pytest.approx(metrics["test_loss"], abs=1e-4)
    plain = AutoModelForCausalLM.from_pretrained(models["llama_chat"])
    assert standard_causal_test_loss(plain, tokenizer, read_records(job.channels["test"]), "chat_template") != \
        pytest.approx(reloaded, abs=1e-3)  # the adapter changed something


def test_classification_job(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """In-process (`cli.main`, the entry point's code without a new interpreter) to keep the suite fast."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    job = make_job(tmp_path, "classification", sizes=(24, 6, 6))
    rc = main(job.args(task="classification", base_model=models["bert"], epochs=2, batch_tokens=128, max_seq_len=32,
                       learning_rate=1e-2), job.env())
    assert rc == 0
    stdout = capsys.readouterr().out
    metrics = job.metrics()
    described = json.loads((job.model_dir / "fastuner.json").read_text())
    assert described["labels"] == ["negative", "neutral", "positive"]
    for key in ("base_test_accuracy", "base_test_loss", "test_accuracy", "test_macro_f1", "test_loss"):
        assert key in metrics
    assert 0 <= metrics["test_macro_f1"] <= 1
    parsed = parse_metric_definitions(stdout)
    assert parsed["base_test_accuracy"] == [pytest.approx(metrics["base_test_accuracy"], abs=1e-4)]
    assert parsed["test_accuracy"] == [pytest.approx(metrics["test_accuracy"], abs=1e-4)]
    adapter_config = json.loads((job.model_dir / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "SEQ_CLS" and "classifier" in adapter_config["modules_to_save"]

    base = AutoModelForSequenceClassification.from_pretrained(models["bert"], num_labels=3)
    model = PeftModel.from_pretrained(base, job.model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(models["bert"])
    records = read_records(job.channels["test"])
    enc = tokenizer([r["input"] for r in records], padding=True, return_tensors="pt")
    labels = torch.tensor([described["labels"].index(r["label"]) for r in records])
    with torch.no_grad():
        logits = model(**enc).logits
    assert F.cross_entropy(logits, labels).item() == pytest.approx(metrics["test_loss"], abs=1e-4)
    assert (logits.argmax(-1) == labels).float().mean().item() == pytest.approx(metrics["test_accuracy"])


def test_qlora_job_without_validation(models: dict[str, Path], tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = make_job(tmp_path, "text_generation", sizes=(16, 4, 4))
    del job.channels["validation"]
    rc = main(job.args(task="text_generation", base_model=models["llama_plain"], method="qlora", max_steps=2,
                       batch_tokens=128, max_seq_len=64, packing="false", gradient_checkpointing="true"),
              job.env())
    assert rc == 0
    metrics = job.metrics()
    assert metrics["steps"] == 2 and metrics["best_eval_loss"] is None and "test_loss" in metrics
    described = json.loads((job.model_dir / "fastuner.json").read_text())
    assert described["method"] == "qlora" and described["prompt_format"] == "plain"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models["llama_plain"]), job.model_dir)
    assert sum("lora_A" in n for n, _ in model.named_parameters()) > 0
