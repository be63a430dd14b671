"""Dataset splits: read the channel folders, check records and labels, turn records into token ids.

A causal-LM example is prompt + target + EOS with loss on the target only. Labels are stored already
shifted (`shift_labels[t]` is the token to predict after position t, -100 where there is none), so a
packed row's loss can never reach across a document boundary.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TrainError
from .tasks import TASKS

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: tuple[int, ...]
    shift_labels: tuple[int, ...] | None = None  # causal LM
    label: int | None = None  # classification

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Split:
    name: str
    records: list[dict[str, str]]


def read_split(name: str, directory: Path | None, task: str, *, required: bool) -> Split | None:
    """Every `*.jsonl` in the channel folder, in sorted name order. A given but empty split is an error."""
    if directory is None:
        if required:
            raise TrainError(f"the {name} channel is missing (set SM_CHANNEL_{name.upper()})")
        return None
    if not directory.is_dir():
        raise TrainError(f"the {name} channel folder {directory} does not exist")
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise TrainError(f"the {name} split is empty: no *.jsonl file in {directory}")
    fields = TASKS[task].row_fields
    records: list[dict[str, str]] = []
    for file in files:
        with file.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                records.append(_parse_record(line, fields, f"{file.name}:{number}", name))
    if not records:
        raise TrainError(f"the {name} split is empty: {directory} has no records")
    return Split(name, records)


def _parse_record(line: str, fields: tuple[str, str], where: str, split: str) -> dict[str, str]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise TrainError(f"{split} split {where}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise TrainError(f"{split} split {where}: expected a JSON object")
    for key in fields:
        if not isinstance(record.get(key), str):
            raise TrainError(f"{split} split {where}: '{key}' must be a string")
    return {key: record[key] for key in fields}


def resolve_labels(train: Split, others: list[Split], given: tuple[str, ...] | None) -> list[str]:
    """The label set: the `labels` hyperparameter or the sorted labels of train; others must be inside it."""
    seen = sorted({r["label"] for r in train.records})
    labels = list(given) if given is not None else seen
    if len(labels) < 2:
        raise TrainError(f"classification needs at least two labels; the train split has only {seen}")
    known = set(labels)
    for split in [train, *others]:
        unknown = sorted({r["label"] for r in split.records} - known)
        if unknown:
            source = "the labels hyperparameter" if given is not None else "training"
            raise TrainError(f"label '{unknown[0]}' in the {split.name} split was never seen in {source}")
    return labels


def prompt_format(tokenizer: Any) -> str:
    return "chat_template" if getattr(tokenizer, "chat_template", None) else "plain"


def format_prompt(tokenizer: Any, text: str, kind: str) -> str:
    if kind == "chat_template":
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return text + "\n"


def encode_prompt(tokenizer: Any, text: str, kind: str) -> list[int]:
    """The prompt's token ids exactly as serving must build them (see containers/README.md)."""
    prompt = format_prompt(tokenizer, text, kind)
    return tokenizer(prompt, add_special_tokens=(kind == "plain"))["input_ids"]


@dataclass
class EncodeStats:
    truncated: int = 0


def encode_causal(records: list[dict[str, str]], tokenizer: Any, kind: str, max_len: int,
                  stats: EncodeStats) -> list[Example]:
    """Prompt + target + EOS, truncated to `max_len` by cutting the prompt's start, then the target's end."""
    eos = tokenizer.eos_token_id
    examples = []
    for record in records:
        prompt = encode_prompt(tokenizer, record["input"], kind)
        target = tokenizer(record["target"], add_special_tokens=False)["input_ids"] + [eos]
        if len(prompt) + len(target) > max_len:
            stats.truncated += 1
            target = target[: max_len - 1]
            prompt = prompt[len(prompt) - (max_len - len(target)):]
        ids = prompt + target
        shift = [IGNORE] * (len(prompt) - 1) + target + [IGNORE]
        examples.append(Example(tuple(ids), shift_labels=tuple(shift)))
    return examples


def encode_classification(records: list[dict[str, str]], tokenizer: Any, labels: list[str], max_len: int,
                          stats: EncodeStats) -> list[Example]:
    index = {label: i for i, label in enumerate(labels)}
    examples = []
    for record in records:
        ids = tokenizer(record["input"], truncation=False)["input_ids"]
        if len(ids) > max_len:
            stats.truncated += 1
            ids = ids[: max_len - 1] + ids[-1:]  # keep the closing special token ([SEP], EOS)
        examples.append(Example(tuple(ids), label=index[record["label"]]))
    return examples


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 of the fast tokenizer's JSON (`backend_tokenizer.to_str()`) without its runtime truncation and
    padding settings, keys sorted (containers/README.md)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        text = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    else:
        # The runtime truncation and padding settings change as the tokenizer is used: not identity.
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def chat_template_hash(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    if not isinstance(template, str):
        template = json.dumps(template, sort_keys=True)
    return "sha256:" + hashlib.sha256(template.encode()).hexdigest()
