"""Packing with per-document attention: a packed row gives each document exactly the loss (and the
gradient) it gets alone, so no information leaks across documents."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fastuner_train import attention, data, loss, modeling, steps
from fastuner_train.packing import collate_packed
from fastuner_train.settings import make_hyperparameters

RECORDS = [
    {"input": "where is my order", "target": "it was supposed to arrive yesterday"},
    {"input": "the quick brown fox", "target": "jumps over the lazy dog"},
    {"input": "reset", "target": "how do I reset my password"},
    {"input": "Lydia", "target": "is a housecarl in Whiterun"},
]


@pytest.fixture(scope="module")
def lora_llama(models: dict[str, Path]) -> tuple:
    hp = make_hyperparameters({"task": "text_generation", "base_model": str(models["llama_chat"]),
                               "lora_dropout": 0.0})
    runtime = modeling.Runtime(torch.device("cpu"), torch.float32, False)
    tok = modeling.load_tokenizer(hp.base_model, None)
    model = modeling.add_adapter(modeling.load_model(hp, hp.base_model, runtime, tok, None), hp)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a trained-looking adapter, so LoRA is part of what is compared
            torch.nn.init.normal_(p, std=0.2)
    examples = data.encode_causal(RECORDS, tok, "chat_template", 256, data.EncodeStats())
    return model, examples


def per_token_losses(model, batch) -> torch.Tensor:
    decoder, head = modeling.decoder_and_head(model)
    hidden = decoder(input_ids=batch.input_ids, position_ids=batch.position_ids,
                     fastuner_docs=batch.documents, use_cache=False).last_hidden_state[0]
    return F.cross_entropy(head(hidden[batch.target_positions]), batch.targets, reduction="none")


def test_packed_losses_equal_each_document_alone(lora_llama: tuple) -> None:
    model, examples = lora_llama
    with torch.no_grad():
        packed = per_token_losses(model, collate_packed(examples).to("cpu"))
        alone = torch.cat([per_token_losses(model, collate_packed([ex]).to("cpu")) for ex in examples])
        # and each document alone through plain transformers (SDPA, no packing code at all)
        reference = []
        for ex in examples:
            logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0]
            labels = torch.tensor(ex.shift_labels)
            reference.append(F.cross_entropy(logits[labels != -100], labels[labels != -100], reduction="none"))
    assert packed.shape == alone.shape and packed.numel() > 20
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed, torch.cat(reference), atol=1e-5, rtol=0)


def test_no_gradient_flows_from_one_document_to_another(lora_llama: tuple) -> None:
    model, examples = lora_llama
    batch = collate_packed(examples).to("cpu")
    decoder, head = modeling.decoder_and_head(model)
    embeds = decoder.embed_tokens(batch.input_ids).detach().requires_grad_()
    hidden = decoder(inputs_embeds=embeds, position_ids=batch.position_ids, fastuner_docs=batch.documents,
                     use_cache=False).last_hidden_state[0]
    first_len = len(examples[0])
    in_second = (batch.target_positions >= first_len) & (batch.target_positions < first_len + len(examples[1]))
    second_loss = F.cross_entropy(head(hidden[batch.target_positions[in_second]]), batch.targets[in_second])
    (grad,) = torch.autograd.grad(second_loss, embeds)
    grad = grad[0].abs().sum(-1)
    assert grad[first_len:first_len + len(examples[1])].sum() > 0
    assert grad[:first_len].sum() == 0 and grad[first_len + len(examples[1]):].sum() == 0


def test_training_step_loss_matches_standard_transformers(lora_llama: tuple) -> None:
    model, examples = lora_llama
    model.zero_grad(set_to_none=True)
    batch = collate_packed(examples).to("cpu")
    ours = steps.causal_lm_loss_sum(model, batch, chunk_tokens=7)
    ours.backward()
    ours_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    total = 0
    for ex in examples:
        labels = torch.tensor([list(ex.shift_labels)])
        logits = model(input_ids=torch.tensor([ex.input_ids])).logits
        total = total + F.cross_entropy(logits[0], labels[0], ignore_index=-100, reduction="sum")
    total.backward()
    torch.testing.assert_close(ours.detach(), total.detach(), atol=1e-4, rtol=1e-6)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(ours_grads[name], p.grad, atol=1e-5, rtol=1e-4)
    model.zero_grad()


def test_sdpa_backend_passes_its_self_check() -> None:
    assert attention.self_check("sdpa", torch.device("cpu"), torch.float32) is None


def test_chunked_loss_equals_cross_entropy_with_frozen_and_trainable_head() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True).requires_grad_(False)
    hidden = torch.randn(37, 16, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    got = loss.target_cross_entropy(hidden, head, targets, chunk_tokens=8)
    (got_grad,) = torch.autograd.grad(got * 0.5, hidden)
    want = F.cross_entropy(head(hidden), targets, reduction="sum")
    (want_grad,) = torch.autograd.grad(want * 0.5, hidden)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)
    head.requires_grad_(True)
    got = loss.target_cross_entropy(hidden, head, targets, chunk_tokens=8)
    got.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["varlen", "flex"])
def test_gpu_backends_match_per_document_attention(backend: str) -> None:
    assert attention.self_check(backend, torch.device("cuda"), torch.bfloat16) is None


def test_self_check_rejects_a_backend_that_leaks_across_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastuner_train.packing import Documents

    real = attention._sdpa_groups

    def one_document(q, k, v, docs, scaling):  # plain causal attention over the whole row
        return real(q, k, v, Documents(lengths=[sum(docs.lengths)]).to(q.device), scaling)

    monkeypatch.setattr(attention, "_sdpa_groups", one_document)
    problem = attention.self_check("sdpa", torch.device("cpu"), torch.bfloat16)
    assert problem is not None and problem.startswith("output differs from per-document attention")
