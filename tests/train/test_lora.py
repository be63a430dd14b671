"""The lean LoRA forward computes exactly what PEFT's forward computes, values and gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastuner_train.lora import streamline_lora


def build(path: Path, dropout: float):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    return model


def run(model, ids: torch.Tensor, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    logits = model(input_ids=ids).logits
    logits.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return logits.detach(), grads


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_lean_forward_equals_peft(models: dict[str, Path], dropout: float) -> None:
    ids = torch.randint(3, 200, (2, 17))
    peft_model = build(models["llama_chat"], dropout).train()
    want_logits, want_grads = run(peft_model, ids, seed=5)
    assert streamline_lora(peft_model) == 14  # 7 linear layers x 2 decoder layers
    got_logits, got_grads = run(peft_model, ids, seed=5)
    torch.testing.assert_close(got_logits, want_logits, atol=1e-5, rtol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], atol=1e-6, rtol=1e-4)


def test_merged_or_disabled_adapters_use_peft_forward(models: dict[str, Path]) -> None:
    ids = torch.randint(3, 200, (1, 9))
    model = build(models["llama_chat"], 0.0).eval()
    streamline_lora(model)
    with torch.no_grad():
        with_adapter = model(input_ids=ids).logits
        with model.disable_adapter():
            without = model(input_ids=ids).logits
        model.merge_adapter()
        merged = model(input_ids=ids).logits
    assert not torch.allclose(with_adapter, without)
    torch.testing.assert_close(merged, with_adapter, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_runs_with_fp32_adapter_weights(models: dict[str, Path]) -> None:
    model = build(models["llama_chat"], 0.0)
    streamline_lora(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=torch.randint(3, 200, (1, 9))).logits
    logits.float().mean().backward()
    lora_a = next(p for n, p in model.named_parameters() if "lora_A" in n)
    assert lora_a.dtype == torch.float32 and lora_a.grad is not None
