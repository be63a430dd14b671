"""Reading splits, labels, prompt formats, target-only labels, truncation and batch planning."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastuner_train import data
from fastuner_train.errors import TrainError
from fastuner_train.packing import collate_packed, collate_padded, plan_packed_batches, plan_padded_batches

from tests.train.jobs import classification_records, write_jsonl


def test_split_files_are_read_in_name_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path, [{"input": "b", "label": "x"}], "b.jsonl")
    write_jsonl(tmp_path, [{"input": "a", "label": "y"}], "a.jsonl")
    split = data.read_split("train", tmp_path, "classification", required=True)
    assert [r["input"] for r in split.records] == ["a", "b"]


def test_empty_and_missing_splits_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.jsonl").write_text("\n")
    with pytest.raises(TrainError, match="the validation split is empty"):
        data.read_split("validation", tmp_path / "empty", "qa", required=False)
    with pytest.raises(TrainError, match="the train channel is missing"):
        data.read_split("train", None, "qa", required=True)
    assert data.read_split("test", None, "qa", required=False) is None


def test_bad_records_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"input": "a", "target": "b"}\n{"input": 3, "target": "b"}\n')
    with pytest.raises(TrainError, match=r"train split d.jsonl:2: 'input' must be a string"):
        data.read_split("train", tmp_path, "qa", required=True)


def test_a_label_never_seen_in_training_is_an_error(tmp_path: Path) -> None:
    train = data.Split("train", classification_records(6))
    validation = data.Split("validation", [{"input": "x", "label": "sarcastic"}])
    with pytest.raises(TrainError, match="label 'sarcastic' in the validation split was never seen in training"):
        data.resolve_labels(train, [validation], None)
    assert data.resolve_labels(train, [], None) == ["negative", "neutral", "positive"]
    assert data.resolve_labels(train, [], ("positive", "negative", "neutral")) == ["positive", "negative", "neutral"]


def test_causal_examples_put_loss_on_target_and_eos_only(models: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models["llama_chat"])
    assert data.prompt_format(tok) == "chat_template"
    [ex] = data.encode_causal([{"input": "where is my order", "target": "yesterday"}], tok, "chat_template", 256,
                              data.EncodeStats())
    prompt = tok.apply_chat_template([{"role": "user", "content": "where is my order"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>")
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    target = tok("yesterday", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert list(ex.input_ids[n_prompt:]) == target
    # shift_labels[t] is the token after position t; the prompt predicts nothing but the first target token
    assert list(ex.shift_labels) == [-100] * (n_prompt - 1) + target + [-100]


def test_plain_prompt_format_and_truncation(models: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models["llama_plain"])
    assert data.prompt_format(tok) == "plain"
    assert data.format_prompt(tok, "hi", "plain") == "hi\n"
    stats = data.EncodeStats()
    long = {"input": " ".join(["the quick brown fox"] * 40), "target": "lazy dog"}
    [ex] = data.encode_causal([long], tok, "plain", 32, stats)
    assert len(ex) == 32 and stats.truncated == 1
    assert ex.input_ids[-1] == tok.eos_token_id  # the target survives, the prompt's start is cut


def test_packed_batches_respect_the_budget_and_never_split_documents() -> None:
    lengths = [5, 17, 3, 30, 12, 8, 1, 25, 9, 14]
    plan = plan_packed_batches(lengths, 32, seed=3)
    assert sorted(i for batch in plan for i in batch) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in batch) <= 32 for batch in plan)
    assert plan == plan_packed_batches(lengths, 32, seed=3)
    assert plan != plan_packed_batches(lengths, 32, seed=4)


def test_padded_batches_respect_rows_times_longest() -> None:
    lengths = [5, 17, 3, 30, 12, 8, 1, 25, 9, 14]
    plan = plan_padded_batches(lengths, 40, seed=0)
    assert sorted(i for batch in plan for i in batch) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in b) * len(b) <= 40 or len(b) == 1 for b in plan)


def test_collated_packed_row_restarts_positions_per_document() -> None:
    a = data.Example((1, 2, 3), shift_labels=(-100, 3, -100))
    b = data.Example((4, 5), shift_labels=(5, -100))
    batch = collate_packed([a, b])
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert batch.target_positions.tolist() == [1, 3] and batch.targets.tolist() == [3, 5]
    assert batch.documents.lengths == [3, 2] and batch.documents.to("cpu").cu_seqlens.tolist() == [0, 3, 5]
    padded = collate_padded([a, b], pad_id=0, causal=True)
    assert padded.input_ids.tolist() == [[1, 2, 3], [4, 5, 0]]
    assert padded.target_positions.tolist() == [1, 3] and padded.targets.tolist() == [3, 5]
