"""Every input of every kind is classified; identities and physical names follow the classification."""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel

from fastuner.config.kinds import KINDS, REPLACE, UPDATE
from fastuner.config.models import Adapter, Dataset, Deployment
from fastuner.plan.kinds import diff_paths, identity, leaf_paths, mode_of, physical_name


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `annotation` (X, X | None, Annotated[X, ...]), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def field_leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every leaf field, descending into nested models."""
    out: list[str] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _model_in(info.annotation)
        if nested is not None:
            out.extend(field_leaves(nested, f"{path}."))
        else:
            out.append(path)
    return out


def unclassified(kind: str, model: type[BaseModel]) -> list[str]:
    missing = []
    for path in [*field_leaves(model), *KINDS[kind].derived]:
        try:
            mode_of(kind, path)
        except KeyError:
            missing.append(path)
    return missing


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_field_and_derived_input_is_classified(kind: str) -> None:
    model = KINDS[kind].model
    assert field_leaves(model), "the walker found no fields"
    assert unclassified(kind, model) == [], f"classify these {kind} inputs in its Kind's modes"


def test_a_new_field_of_a_section_is_caught() -> None:
    """Sections are classified field by field: a new `training.*` field is unclassified until someone
    decides whether it forces retraining."""
    from fastuner.config.models import Training

    class GrownTraining(Training):
        label_smoothing: float = 0.0

    class Grown(Adapter):
        training: GrownTraining = GrownTraining()  # type: ignore[assignment]

    assert unclassified("adapter", Grown) == ["training.label_smoothing"]
    for kind in KINDS.values():
        sections = {p.split(".")[0] for p in kind.modes if "." in p}
        assert not sections & set(kind.modes), f"{kind.name}: a section is classified whole"


def test_the_walker_descends_into_nested_models() -> None:
    leaves = field_leaves(Adapter)
    assert "training.learning_rate" in leaves
    assert "compute.max_wait" in leaves
    assert "lora.target_modules" in leaves
    assert "tags" in leaves and "training" not in leaves
    assert "compute.count" in field_leaves(Deployment)
    assert "split.seed" in field_leaves(Dataset)


def test_an_unclassified_new_field_is_caught() -> None:
    class NewCompute(BaseModel):
        instance_type: str = "x"
        accelerator: str = "y"  # not classified

    class Grown(Deployment):
        compute: NewCompute | None = None  # type: ignore[assignment]
        shiny: int = 0

    assert unclassified("deployment", Grown) == ["compute.accelerator", "shiny"]


def _field_exists(model: type[BaseModel], path: str) -> bool:
    current: type[BaseModel] | None = model
    for part in path.split("."):
        if current is None or part not in current.model_fields:
            return False
        current = _model_in(current.model_fields[part].annotation)
    return True


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_classified_path_names_a_real_input(kind: str) -> None:
    for path, mode in KINDS[kind].modes.items():
        assert mode in (REPLACE, UPDATE)
        assert _field_exists(KINDS[kind].model, path) or path in KINDS[kind].derived, f"{kind}: `{path}` is not an input"


def test_derived_inputs_are_what_the_planner_adds() -> None:
    assert {k: kind.derived for k, kind in KINDS.items()} == {
        "dataset": ("source_sha256",), "adapter": ("dataset_identity", "training_code_hash"),
        "deployment": ("adapter_identities",)}


def test_documented_modes() -> None:
    assert mode_of("dataset", "source_sha256") == REPLACE
    assert mode_of("dataset", "split.train") == REPLACE
    assert mode_of("dataset", "path") == UPDATE
    assert mode_of("adapter", "training.learning_rate") == REPLACE
    assert mode_of("adapter", "training.checkpoint_every") == UPDATE  # the longer prefix wins
    assert mode_of("adapter", "dataset_identity") == REPLACE
    assert mode_of("adapter", "compute.instance_type") == UPDATE
    assert mode_of("adapter", "tags") == UPDATE
    assert mode_of("deployment", "base_model") == REPLACE
    for path in ("compute.instance_type", "compute.count", "ttl", "idle_ttl", "adapters", "adapter_identities"):
        assert mode_of("deployment", path) == UPDATE
    with pytest.raises(KeyError, match="not classified"):
        mode_of("deployment", "compute.gpus")


# --- identities --------------------------------------------------------------------------------------


def full_inputs(kind: str) -> dict[str, Any]:
    """Inputs as the planner builds them, with every optional field set so that every leaf exists."""
    if kind == "dataset":
        m = Dataset(path="a.jsonl", task="qa", tags={"team": "x"}, depends_on=["deployment.z"])
        return {**m.model_dump(mode="json"), "source_sha256": "ab" * 32}
    if kind == "adapter":
        m = Adapter(base_model="m", base_model_revision="v1", dataset="ds", tags={"t": "1"},
                    training={"max_steps": 10}, compute={"spot": True, "max_wait": "5h"},
                    lora={"target_modules": ["q_proj"]}, depends_on=["dataset.x"])
        return {**m.model_dump(mode="json"), "dataset_identity": "d" * 16, "training_code_hash": "c" * 16}
    m = Deployment(base_model="m", adapters=["a"], ttl="8h", idle_ttl="1h", tags={"t": "1"},
                   depends_on=["dataset.x"])
    return {**m.model_dump(mode="json"), "adapter_identities": {"a": "a" * 16}}


def _bump(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "extra"]
    if isinstance(value, dict):
        return {**value, "extra": "1"}
    if value is None:
        return "set"
    raise AssertionError(f"cannot bump {value!r}")


def _with(inputs: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in inputs.items()}
    parts = path.split(".")
    target = out
    for p in parts[:-1]:
        target[p] = dict(target[p])
        target = target[p]
    target[parts[-1]] = value
    return out


CASES = [(kind, path) for kind in ("dataset", "adapter", "deployment")
         for path, _ in leaf_paths(full_inputs(kind))]


def test_full_inputs_cover_every_classified_leaf() -> None:
    for kind in ("dataset", "adapter", "deployment"):
        paths = {p for p, _ in leaf_paths(full_inputs(kind))}
        assert paths == set(field_leaves(KINDS[kind].model)) | set(KINDS[kind].derived)


@pytest.mark.parametrize(("kind", "path"), CASES, ids=[f"{k}:{p}" for k, p in CASES])
def test_identity_changes_iff_a_replace_forcing_input_changes(kind: str, path: str) -> None:
    inputs = full_inputs(kind)
    value = dict(leaf_paths(inputs))[path]
    changed = _with(inputs, path, _bump(value))
    assert diff_paths(inputs, changed) == [path]
    moved = identity(kind, changed) != identity(kind, inputs)
    assert moved == (mode_of(kind, path) == REPLACE)


def test_identity_is_deterministic_and_kind_scoped() -> None:
    inputs = full_inputs("dataset")
    shuffled = dict(reversed(list(inputs.items())))
    assert identity("dataset", inputs) == identity("dataset", shuffled)
    assert len(identity("dataset", inputs)) == 16
    only_shared = {"tags": {}, "depends_on": []}
    assert identity("dataset", only_shared) != identity("adapter", only_shared)


def test_leaf_paths_treats_tags_and_adapter_identities_as_one_value() -> None:
    leaves = dict(leaf_paths({"tags": {"a": "1"}, "adapter_identities": {"x": "1"}, "split": {"train": 1},
                              "empty": {}}))
    assert leaves == {"tags": {"a": "1"}, "adapter_identities": {"x": "1"}, "split.train": 1, "empty": {}}


def test_diff_paths_counts_one_sided_values() -> None:
    assert diff_paths({"a": 1, "b": {"c": 1}}, {"a": 1, "b": {"c": 2}, "d": None}) == ["b.c", "d"]
    assert diff_paths({"a": 1}, {"a": 1}) == []


# --- physical names ------------------------------------------------------------------------------------


def test_physical_name_shape() -> None:
    assert physical_name("demo", "default", "dataset", "ds", "0123456789abcdef") == "demo-ds-ds-01234567"
    assert physical_name("demo", "staging", "deployment", "api", "ff" * 8) == "demo-staging-ep-api-ffffffff"
    assert physical_name("demo", "default", "adapter", "a", "ab" * 8).startswith("demo-ad-a-")


def test_physical_names_are_deterministic_and_at_most_63_chars() -> None:
    project, workspace, name = "p" * 20, "w" * 40, "n" * 32
    for kind in ("dataset", "adapter", "deployment"):
        first = physical_name(project, workspace, kind, name, "0" * 16)
        assert first == physical_name(project, workspace, kind, name, "0" * 16)
        assert len(first) <= 63
        assert first.endswith("-00000000")


@pytest.mark.parametrize("workspace", ["default", "production-eu"])
def test_long_names_that_share_a_prefix_stay_distinct(workspace: str) -> None:
    """Two deployments of one base model have the same identity; only the name tells them apart."""
    project = "customer-support-bot"  # 20 characters, the longest allowed
    a = physical_name(project, workspace, "deployment", "intent-classifier-production-v1", "0" * 16)
    b = physical_name(project, workspace, "deployment", "intent-classifier-production-v2", "0" * 16)
    assert a != b
    assert len(a) <= 63 and len(b) <= 63


def test_workspaces_sharing_a_prefix_get_distinct_names() -> None:
    a = physical_name("demo", "production-eu", "deployment", "api", "0" * 16)
    b = physical_name("demo", "production-us", "deployment", "api", "0" * 16)
    assert a != b
