"""One task definition: fastuner's table, and the copies the two container programs keep of it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fastuner.config.models import Dataset
from fastuner.config.tasks import DEFINITIONS, Family, Task, describe_tasks, parse_task
from fastuner.errors import DiagnosticsError

CONTAINERS = Path(__file__).resolve().parents[2] / "containers"


def load_copy(path: Path) -> ModuleType:
    """A container's task table, loaded from its file (neither program is importable from fastuner)."""
    spec = importlib.util.spec_from_file_location(f"task_copy_{path.parent.name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_every_task_has_one_definition() -> None:
    assert set(DEFINITIONS) == set(Task)
    for task, definition in DEFINITIONS.items():
        assert task.family is definition.family
        assert definition.row_fields[0] == "input"
        assert definition.metrics


def test_the_training_program_copy_equals_fastuners() -> None:
    train = load_copy(CONTAINERS / "train" / "fastuner_train" / "tasks.py")
    assert set(train.TASKS) == {task.value for task in Task}
    for task in Task:
        copy, ours = train.TASKS[task.value], task.definition
        assert (copy.family, copy.row_fields, copy.metrics) == (ours.family.value, ours.row_fields, ours.metrics), task
        assert copy.is_causal_lm == (not ours.classifies), task


def test_the_server_copy_equals_fastuners() -> None:
    serve = load_copy(CONTAINERS / "serve" / "fastuner_serve" / "tasks.py")
    assert {task.value: task.family.value for task in Task} == serve.TASK_FAMILIES
    assert tuple(family.value for family in Family) == serve.FAMILIES


def test_an_unknown_task_is_a_user_error_naming_the_choices() -> None:
    assert parse_task("qa") is Task.QA
    with pytest.raises(DiagnosticsError) as raised:
        parse_task("summarisation")
    assert "classification, text_generation, qa" in str(raised.value.diagnostics[0].detail)


def test_the_spec_schema_describes_each_tasks_row_fields() -> None:
    description = Dataset.model_fields["task"].description
    assert description == "classification (input, label) | text_generation or qa (input, target)."
    assert description == f"{describe_tasks()}."
