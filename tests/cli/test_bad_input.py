"""Bad input gets one clear message naming file:line:col or the row, exit code 1, no traceback, and
nothing is written (no state, no stored objects)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import SPEC
from tests.cli.helpers import intents_rows, write_jsonl

ADAPTER = """
adapters:
  a1:
    base_model: models/tiny
    dataset: intents
"""


def _nothing_written(folder: Path) -> None:
    assert not (folder / "state").exists() or not any((folder / "state").iterdir())
    objects = folder / ".fastuner" / "objects"
    assert not objects.exists() or not [p for p in objects.rglob("*") if p.is_file()]


CASES = {
    "malformed-yaml": (SPEC + "  broken: {path: x\n", ["invalid YAML", "fastuner.yaml:8:1", "line 7, column 11"]),
    "wrong-type": (SPEC + ADAPTER + "    training: {epochs: many}\n",
                   ["adapters.a1.training.epochs", "fastuner.yaml:12:24"]),
    "unknown-key": (SPEC + ADAPTER + "    training: {learnin_rate: 0.1}\n",
                    ["unknown key `learnin_rate`", "Did you mean `learning_rate`?", "fastuner.yaml:12:16"]),
    "dangling-reference": (SPEC + ADAPTER.replace("dataset: intents", "dataset: intens"),
                           ["adapter.a1 refers to dataset.intens, which does not exist", "Did you mean `intents`?",
                            "fastuner.yaml:11:14"]),
    "cycle": (SPEC + "    depends_on: [adapter.a1]\n" + ADAPTER,
              ["dependency cycle", "adapter.a1", "dataset.intents", "fastuner.yaml:"]),
    "bad-duration": (SPEC + ADAPTER + "deployments:\n  api:\n    base_model: models/tiny\n    adapters: [a1]\n"
                     "    ttl: 8x\n", ["invalid duration '8x'", "fastuner.yaml:16:10"]),
    "bad-name": (SPEC.replace("intents:", "Intents_1:"), ["invalid name `Intents_1`", "fastuner.yaml:4:3"]),
    "missing-dataset-file": (SPEC.replace("data/intents.jsonl", "data/nope.jsonl"),
                             ["dataset.intents: file not found: data/nope.jsonl", "fastuner.yaml:5:11"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", [["validate"], ["plan"], ["apply", "--auto-approve"]])
def test_spec_errors(case: str, command: list[str], project: Path, cli) -> None:
    text, expected = CASES[case]
    (project / "fastuner.yaml").write_text(text)
    run = cli(*command, cwd=project)
    assert run.code == 1, run.text
    for fragment in expected:
        assert fragment in run.err, f"{fragment!r} not in:\n{run.err}"
    assert "Traceback" not in run.text
    _nothing_written(project)


def _rows_with_bad_byte(row: int) -> bytes:
    lines = [json.dumps(r).encode() for r in intents_rows(600)]
    lines[row - 1] = lines[row - 1].replace(b"message", b"mess\xffage")
    return b"\n".join(lines) + b"\n"


DATA_CASES = {
    "non-utf8-row-517": (lambda p: p.write_bytes(_rows_with_bad_byte(517)), ["intents.jsonl:517:", "UTF-8"]),
    "duplicates-only": (lambda p: write_jsonl(p, [{"input": "where is my order", "label": "order_status"}] * 250),
                        ["duplicate", "250"]),
    "99-rows": (lambda p: write_jsonl(p, intents_rows(99)), ["99", "100"]),
    "label-missing": (lambda p: write_jsonl(p, [*intents_rows(150)[:41], {"input": "no label here"},
                                                *intents_rows(150)[41:]]),
                      ["intents.jsonl:42", "label"]),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
@pytest.mark.parametrize("command", [["validate"], ["apply", "--auto-approve"]])
def test_dataset_errors(case: str, command: list[str], project: Path, cli) -> None:
    make, expected = DATA_CASES[case]
    make(project / "data" / "intents.jsonl")
    run = cli(*command, cwd=project)
    assert run.code == 1, run.text
    for fragment in expected:
        assert fragment in run.text, f"{fragment!r} not in:\n{run.text}"
    assert "Traceback" not in run.text
    if command[0] == "validate":
        _nothing_written(project)
    else:  # apply records the failure in state, but stores no dataset object
        objects = project / ".fastuner" / "objects"
        assert not objects.exists() or not [p for p in objects.rglob("*") if p.is_file()]
        state = json.loads((project / "state" / "demo.json").read_text())
        assert state["resources"]["dataset.intents"]["status"] == "failed"


def test_unknown_replace_address(project: Path, cli) -> None:
    run = cli("plan", "--replace", "adapter.nope", cwd=project)
    assert run.code == 1 and "--replace adapter.nope: no such resource" in run.err


def test_not_a_plan_file(project: Path, cli) -> None:
    (project / "plan.json").write_text("{not json")
    run = cli("apply", "plan.json", cwd=project)
    assert run.code == 1 and "not a fastuner plan" in run.err
    _nothing_written(project)
