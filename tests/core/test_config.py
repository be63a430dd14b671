"""The loader: YAML with positions, validation mapped back to file:line:col, variables, checks, schema."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from fastuner.config.checks import check_spec
from fastuner.config.kinds import resources
from fastuner.config.loader import find_spec, load_spec
from fastuner.config.models import Method, Task
from fastuner.config.schema import spec_schema, spec_schema_text
from fastuner.errors import DiagnosticsError, Severity, Source

MINIMAL = "version: 1\nproject: demo\n"


def position(d) -> tuple[int | None, int | None]:
    assert d.source is not None, d
    return d.source.line, d.source.column


def one(diagnostics):
    assert len(diagnostics) == 1, [d.summary for d in diagnostics]
    return diagnostics[0]


# --- a valid spec ----------------------------------------------------------------------------------


def test_minimal_spec_gets_defaults(load) -> None:
    spec = load(MINIMAL)
    config = spec.config
    assert config.project == "demo"
    assert config.provider.name == "local"
    assert config.backend.local is not None and config.backend.s3 is None
    assert (config.datasets, config.adapters, config.deployments) == ({}, {}, {})


def test_full_spec_loads_with_typed_values(load) -> None:
    spec = load("""\
        version: 1
        project: skyrim
        datasets:
          entities:
            path: data/e.jsonl
            task: text_generation
            split: {train: 0.8, validation: 0.1, test: 0.1, seed: 7}
        adapters:
          entities-lora:
            base_model: Qwen/Qwen2.5-0.5B
            dataset: entities
            method: qlora
            lora: {r: 8, alpha: 16, target_modules: [q_proj, v_proj]}
            training: {epochs: 0.5, learning_rate: 2.0e-4}
            compute: {spot: true, max_runtime: 2h, max_wait: 3h}
        deployments:
          api:
            base_model: Qwen/Qwen2.5-0.5B
            adapters: [entities-lora]
            ttl: 8h
            idle_ttl: 30m
        """)
    c = spec.config
    assert c.datasets["entities"].task is Task.TEXT_GENERATION
    assert c.datasets["entities"].split.seed == 7
    a = c.adapters["entities-lora"]
    assert a.method is Method.QLORA
    assert a.lora.target_modules == ["q_proj", "v_proj"]
    assert a.compute.max_wait == timedelta(hours=3)
    assert c.deployments["api"].ttl == timedelta(hours=8)
    assert c.deployments["api"].idle_ttl == timedelta(minutes=30)
    assert list(resources(c)) == ["dataset.entities", "adapter.entities-lora", "deployment.api"]


def test_spec_records_value_and_key_positions(load) -> None:
    spec = load("version: 1\nproject: demo\ndatasets:\n  ds:\n    path: a.jsonl\n    task: qa\n")
    assert spec.source(("datasets", "ds", "task")) == Source(str(spec.file), 6, 11)
    assert spec.source(("datasets", "ds", "task"), key=True) == Source(str(spec.file), 6, 5)
    # an unknown path falls back to its nearest known parent
    assert spec.source(("datasets", "ds", "split", "train")) == Source(str(spec.file), 5, 5)
    assert spec.resolve("a.jsonl") == spec.file.parent / "a.jsonl"
    assert spec.resolve("/abs/x.jsonl") == Path("/abs/x.jsonl")


def test_find_spec_accepts_a_folder_and_reports_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "fastuner.yaml").write_text(MINIMAL)
    assert find_spec(tmp_path) == tmp_path / "fastuner.yaml"
    with pytest.raises(DiagnosticsError, match="spec file not found") as info:
        find_spec(tmp_path / "nope.yaml")
    assert "--file" in one(info.value.diagnostics).detail


# --- YAML-level problems ----------------------------------------------------------------------------


def test_malformed_yaml_points_at_the_problem(errors) -> None:
    d = one(errors("version: 1\nproject: demo\ndatasets:\n  ds: {path: a.jsonl\n  x: 1\n"))
    assert d.summary.startswith("invalid YAML")
    assert position(d) == (5, 4)


def test_tab_indentation_is_reported_at_the_tab(errors) -> None:
    d = one(errors("version: 1\n\tproject: demo\n"))
    assert d.summary.startswith("invalid YAML: found ")  # PyYAML and libyaml word it differently
    assert position(d) == (2, 1)


def test_duplicate_key_names_both_lines(errors) -> None:
    d = one(errors("version: 1\nproject: demo\ndatasets:\n  ds: {path: a, task: qa}\nproject: other\n"))
    assert d.summary == "duplicate key `project`"
    assert position(d) == (5, 1)
    assert "line 2" in d.detail


def test_duplicate_nested_key(errors) -> None:
    d = one(errors("version: 1\nproject: demo\ndatasets:\n  ds:\n    path: a\n    task: qa\n    path: b\n"))
    assert d.summary == "duplicate key `path`"
    assert position(d) == (7, 5)
    assert "line 5" in d.detail


def test_a_control_character_is_reported_at_its_line_and_column(errors) -> None:
    # found by the fuzzer (tests/stress/fuzz.py): YAML's reader error has no mark, only an offset, and
    # libyaml counts it in bytes of the UTF-8 text
    d = one(errors("version: 1\nproject: d\u00e9mo\x00\n"))
    assert d.summary == "invalid YAML: character U+0000 is not allowed (control characters are not allowed)"
    assert position(d) == (2, 14)
    assert position(one(errors("\x1b"))) == (1, 1)


def test_non_scalar_key_refused(errors) -> None:
    d = one(errors("version: 1\nproject: demo\n? [a, b]\n: 1\n"))
    assert "plain value" in d.summary
    assert position(d) == (3, 3)


def test_merge_keys_are_refused_as_a_diagnostic(errors) -> None:
    d = one(errors("version: 1\nproject: demo\nbase: &b {task: qa}\ndatasets:\n  ds:\n    <<: *b\n    path: a\n"))
    assert "merge keys" in d.summary
    assert position(d) == (6, 5)


def test_unknown_yaml_tag_is_a_diagnostic_not_a_crash(errors) -> None:
    d = one(errors("version: 1\nproject: !!python/object:os.system demo\n"))
    assert "invalid YAML" in d.summary
    assert position(d) == (2, 10)


def test_empty_spec(errors) -> None:
    d = one(errors(""))
    assert d.summary == "the spec is empty"
    assert "version: 1" in d.detail
    assert position(d) == (1, 1)


def test_comment_only_spec_is_empty(errors) -> None:
    assert one(errors("# just a comment\n")).summary == "the spec is empty"


@pytest.mark.parametrize("text", ["- version\n- project\n", "just words\n", "42\n"])
def test_non_mapping_spec(errors, text: str) -> None:
    d = one(errors(text))
    assert "must be a mapping" in d.summary
    assert position(d) == (1, 1)


def test_non_utf8_spec_points_at_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "fastuner.yaml"
    path.write_bytes(b"version: 1\nproject: d\xe9mo\n")
    with pytest.raises(DiagnosticsError) as info:
        load_spec(path, variables={}, environ={})
    d = one(info.value.diagnostics)
    assert "UTF-8" in d.summary
    assert "0xe9" in d.detail
    assert position(d) == (2, 11)


# --- validation mapped to positions ------------------------------------------------------------------


def test_unknown_key_with_did_you_mean(errors) -> None:
    d = one(errors("version: 1\nproject: demo\ndatasets:\n  ds:\n    path: a\n    task: qa\n    tgs: {}\n"))
    assert d.summary == "unknown key `tgs` in datasets.ds"
    assert d.detail == "Did you mean `tags`?"
    assert position(d) == (7, 5)


def test_unknown_nested_key_in_flow_mapping(errors) -> None:
    d = one(errors("version: 1\nproject: demo\nadapters:\n  a:\n    base_model: m\n    dataset: d\n"
                   "    training: {epochs: 1, learning_rat: 0.1}\n"))
    assert d.summary == "unknown key `learning_rat` in adapters.a.training"
    assert d.detail == "Did you mean `learning_rate`?"
    assert position(d) == (7, 27)


def test_unknown_key_inside_optional_model(errors) -> None:
    d = one(errors("version: 1\nproject: demo\nbackend:\n  local: {pat: x}\n"))
    assert d.detail == "Did you mean `path`?"
    assert position(d) == (4, 11)


def test_unknown_key_without_a_close_match_lists_the_allowed_ones(errors) -> None:
    d = one(errors("version: 1\nproject: demo\nzzz: 1\n"))
    assert d.summary == "unknown key `zzz` in the top level"
    assert d.detail.startswith("Allowed here:") and "datasets" in d.detail
    assert position(d) == (3, 1)


def test_misspelt_required_key_gives_both_diagnostics(errors) -> None:
    ds = errors("version: 1\nprojet: demo\n")
    assert [d.summary for d in ds] == ["missing required key `project` in the top level",
                                       "unknown key `projet` in the top level"]
    assert ds[1].detail == "Did you mean `project`?"
    assert [position(d) for d in ds] == [(1, 1), (2, 1)]


def test_missing_required_key_points_at_its_parent(errors) -> None:
    d = one(errors("version: 1\nproject: demo\ndatasets:\n  ds:\n    task: qa\n"))
    assert d.summary == "missing required key `path` in datasets.ds"
    assert position(d) == (5, 5)


@pytest.mark.parametrize(("value", "col", "needle"), [
    ("'three'", 15, "valid integer"),
    ("[1]", 15, "valid integer"),
    ("0", 15, "greater than or equal to 1"),
])
def test_wrong_types_and_ranges(errors, value: str, col: int, needle: str) -> None:
    d = one(errors(f"version: 1\nproject: demo\nadapters:\n  a:\n    base_model: m\n    dataset: d\n"
                   f"    lora: {{r: {value}}}\n"))
    assert d.summary.startswith("adapters.a.lora.r:")
    assert needle in d.summary
    assert position(d) == (7, col)


def test_wrong_enum_value(errors) -> None:
    d = one(errors("version: 1\nproject: demo\ndatasets:\n  ds:\n    path: a\n    task: summarise\n"))
    assert d.summary.startswith("datasets.ds.task:")
    assert "classification" in d.summary
    assert position(d) == (6, 11)


def test_wrong_version(errors) -> None:
    d = one(errors("version: 2\nproject: demo\n"))
    assert d.summary.startswith("version:")
    assert position(d) == (1, 10)


def test_several_errors_reported_together_in_file_order(errors) -> None:
    ds = errors("version: 1\nproject: demo\ndatasets:\n  ds:\n    task: qa\n    bogus: 1\n"
                "deployments:\n  ep:\n    base_model: m\n    ttl: 8\n")
    assert [position(d) for d in ds] == sorted(position(d) for d in ds)
    assert {d.summary.split(" ")[0] for d in ds} >= {"missing", "unknown", "deployments.ep.ttl:"}


@pytest.mark.parametrize("bad", ["Bad_Name", "-lead", "trail-", "x" * 33, "UPPER"])
def test_bad_resource_names(errors, bad: str) -> None:
    d = one(errors(f"version: 1\nproject: demo\ndatasets:\n  {bad}:\n    path: a\n    task: qa\n"))
    assert d.summary == f"invalid name `{bad}` in datasets"
    assert "lowercase" in d.detail
    assert position(d) == (4, 3)


def test_names_that_yaml_reads_as_numbers_are_still_names(load) -> None:
    spec = load("version: 1\nproject: demo\ndatasets:\n  2024:\n    path: a\n    task: qa\n"
                "adapters:\n  '7': {base_model: m, dataset: '2024'}\n")
    assert list(spec.config.datasets) == ["2024"]
    assert spec.config.adapters["7"].dataset == "2024"


def test_names_that_yaml_reads_as_booleans_are_still_names(load) -> None:
    spec = load("version: 1\nproject: demo\ndeployments:\n  no: {base_model: m}\n  on: {base_model: m}\n")
    assert list(spec.config.deployments) == ["no", "on"]


def test_a_key_is_the_name_as_written(load) -> None:
    spec = load("version: 1\nproject: demo\ndatasets:\n  0x1f: {path: a, task: qa}\n  31: {path: b, task: qa}\n")
    assert sorted(spec.config.datasets) == ["0x1f", "31"]  # not one dataset `31` written twice


def test_bad_project_name(errors) -> None:
    d = one(errors("version: 1\nproject: My_Project\n"))
    assert d.summary.startswith("project:")
    assert "lowercase" in d.detail
    assert position(d) == (2, 10)


def test_bad_depends_on_address(errors) -> None:
    d = one(errors("version: 1\nproject: demo\ndatasets:\n  ds:\n    path: a\n    task: qa\n"
                   "    depends_on: [model.x]\n"))
    assert d.summary.startswith("datasets.ds.depends_on[0]:")
    assert position(d) == (7, 18)


@pytest.mark.parametrize(("ttl", "needle"), [
    ("'8'", "invalid duration"),
    ("8", "add a unit"),
    ("8x", "invalid duration"),
    ("-1h", "invalid duration"),
    ("0s", "must be positive"),
])
def test_bad_durations(errors, ttl: str, needle: str) -> None:
    d = one(errors(f"version: 1\nproject: demo\ndeployments:\n  ep:\n    base_model: m\n    ttl: {ttl}\n"))
    assert d.summary.startswith("deployments.ep.ttl:")
    assert needle in d.summary
    assert position(d) == (6, 10)


def test_model_validator_errors_point_at_the_block(errors) -> None:
    d = one(errors("version: 1\nproject: demo\ndatasets:\n  ds:\n    path: a\n    task: qa\n"
                   "    split: {train: 0.5}\n"))
    assert "must sum to 1" in d.summary
    assert position(d) == (7, 12)


def test_max_wait_without_spot(errors) -> None:
    d = one(errors("version: 1\nproject: demo\nadapters:\n  a:\n    base_model: m\n    dataset: d\n"
                   "    compute: {max_wait: 5h}\n"))
    assert "spot" in d.summary
    assert position(d) == (7, 14)


def test_adapter_listed_twice(errors) -> None:
    d = one(errors("version: 1\nproject: demo\ndeployments:\n  ep:\n    base_model: m\n    adapters: [a, a]\n"))
    assert "adapter listed twice: a" in d.summary
    assert position(d) == (6, 15)


def test_both_backends_refused(errors) -> None:
    d = one(errors("version: 1\nproject: demo\nbackend: {local: {}, s3: {bucket: b, key: k}}\n"))
    assert "exactly one backend" in d.summary
    assert position(d) == (3, 10)


# --- variables ---------------------------------------------------------------------------------------

VARS = """\
version: 1
project: demo
variables:
  size: {default: small}
deployments:
  ep:
    base_model: m
    tags: {size: "${var.size}"}
"""


def _size(spec) -> str:
    return spec.config.deployments["ep"].tags["size"]


def test_variable_default(load) -> None:
    assert _size(load(VARS)) == "small"


def test_variable_environment_beats_default(load) -> None:
    assert _size(load(VARS, environ={"FASTUNER_VAR_size": "medium"})) == "medium"


def test_variable_cli_beats_environment(load) -> None:
    spec = load(VARS, variables={"size": "large"}, environ={"FASTUNER_VAR_size": "medium"})
    assert _size(spec) == "large"
    assert spec.variables["size"] == "large"


def test_unrelated_environment_is_ignored(load) -> None:
    assert _size(load(VARS, environ={"FASTUNER_VAR_": "x", "SIZE": "huge", "VAR_size": "huge"})) == "small"


def test_missing_variable_at_its_position_with_hint(errors) -> None:
    d = one(errors("version: 1\nproject: demo\nvariables:\n  region: {}\ndeployments:\n  ep:\n"
                   "    base_model: m\n    tags: {r: \"${var.regoin}\"}\n"))
    assert d.summary == "variable `regoin` has no value"
    assert "--var regoin=VALUE" in d.detail and "FASTUNER_VAR_regoin" in d.detail
    assert position(d) == (8, 15)


def test_missing_variable_suggests_a_close_name(errors) -> None:
    d = one(errors("version: 1\nproject: demo\nvariables:\n  region: {default: eu}\n"
                   "deployments:\n  ep:\n    base_model: m\n    tags: {r: \"${var.regoin}\"}\n"))
    assert "Did you mean `region`?" in d.detail


def test_whole_string_reference_keeps_the_value_type(load) -> None:
    spec = load("version: 1\nproject: demo\nvariables:\n  n: {default: 3}\ndeployments:\n  ep:\n"
                "    base_model: m\n    compute: {count: \"${var.n}\"}\n")
    assert spec.config.deployments["ep"].compute.count == 3


def test_whole_string_reference_from_the_command_line_is_coerced(load) -> None:
    spec = load("version: 1\nproject: demo\ndeployments:\n  ep:\n    base_model: m\n"
                "    compute: {count: \"${var.n}\"}\n", variables={"n": "5"})
    assert spec.config.deployments["ep"].compute.count == 5


def test_reference_inside_a_string_and_in_lists(load) -> None:
    spec = load("version: 1\nproject: demo\ndeployments:\n  ep:\n    base_model: \"org/${var.m}-${var.v}\"\n"
                "    adapters: [\"${var.a}\"]\n", variables={"m": "qwen", "v": "2", "a": "x"})
    assert spec.config.deployments["ep"].base_model == "org/qwen-2"
    assert spec.config.deployments["ep"].adapters == ["x"]


def test_dollar_dollar_escapes_a_reference(load) -> None:
    spec = load("version: 1\nproject: demo\ndeployments:\n  ep:\n    base_model: m\n"
                "    tags: {a: \"$${var.x}\", b: \"cost $${var.x} ${var.y}\"}\n", variables={"y": "1"})
    assert spec.config.deployments["ep"].tags == {"a": "${var.x}", "b": "cost ${var.x} 1"}


def test_unsupported_reference(errors) -> None:
    d = one(errors("version: 1\nproject: demo\ndeployments:\n  ep:\n    base_model: \"${env.HOME}\"\n"))
    assert d.summary == "unsupported reference `${env.HOME}`"
    assert "$${" in d.detail
    assert position(d) == (5, 17)


def test_variables_in_the_variables_block_are_not_substituted(load) -> None:
    spec = load("version: 1\nproject: demo\nvariables:\n  a: {description: \"uses ${var.b}\"}\n")
    assert spec.config.variables["a"].description == "uses ${var.b}"


def test_a_substituted_value_is_still_validated_at_its_position(errors) -> None:
    d = one(errors("version: 1\nproject: \"${var.p}\"\n", variables={"p": "Not_Valid"}))
    assert d.summary.startswith("project:")
    assert position(d) == (2, 10)


# --- cross-resource checks ---------------------------------------------------------------------------

CHECKED = """\
version: 1
project: demo
datasets:
  gen: {path: a, task: text_generation}
  cls: {path: b, task: classification, split: {train: 0.9, validation: 0, test: 0.1}}
adapters:
  g: {base_model: m1, dataset: gen}
  c: {base_model: m1, dataset: cls}
  other: {base_model: m2, dataset: gen}
deployments:
  mixed:
    base_model: m1
    adapters: [g, c, other]
    ttl: 1h
    idle_ttl: 2h
  fine:
    base_model: m1
    adapters: [g]
"""


def test_checks_base_model_task_family_and_warnings(load) -> None:
    spec = load(CHECKED)
    found = check_spec(spec)
    by_summary = {d.summary: d for d in found}
    base = next(d for d in found if "is trained on `m2`" in d.summary)
    assert base.severity is Severity.ERROR and base.address == "deployment.mixed"
    assert position(base) == (13, 22)
    mixed = next(d for d in found if "mixes classification and generation" in d.summary)
    assert "classification: c" in mixed.summary and "generation: g, other" in mixed.summary
    assert position(mixed) == (13, 15)
    idle = next(d for d in found if "idle_ttl" in d.summary)
    assert idle.severity is Severity.WARNING
    assert position(idle) == (15, 15)
    noval = next(d for d in found if "no validation split" in d.summary)
    assert noval.severity is Severity.WARNING and noval.address == "adapter.c"
    assert not any("deployment.fine" in s for s in by_summary)
    assert len(found) == 4


def test_fields_of_the_other_provider_are_accepted_with_a_warning(load) -> None:
    spec = load("""\
version: 1
project: demo
datasets:
  d: {path: d.jsonl, task: classification}
adapters:
  a:
    base_model: m
    dataset: d
    compute: {max_runtime: 2h, spot: true, instance_type: ml.g5.xlarge}
  quiet: {base_model: m, dataset: d, compute: {max_runtime: 1h}}
deployments:
  e: {base_model: m, adapters: [a], compute: {count: 2}, port: 8099}
""")
    found = [d for d in check_spec(spec) if "no effect" in d.summary]
    assert [(d.severity, d.address, d.summary) for d in found] == [
        (Severity.WARNING, "adapter.a", "adapter.a: compute.instance_type, compute.spot: no effect on the local provider"),
        (Severity.WARNING, "deployment.e", "deployment.e: compute.count: no effect on the local provider"),
    ]
    assert position(found[0]) == (9, 44)  # the first such key: instance_type
    assert "SageMaker-only settings" in found[0].detail and "provider: {sagemaker: ...}" in found[0].detail
    moved = load(spec.text.replace("project: demo\n", "project: demo\nprovider: {sagemaker: {region: r, "
                                   "role_arn: x, bucket: b}}\n"))
    assert [d.summary for d in check_spec(moved) if "no effect" in d.summary] == [
        "deployment.e: port: no effect on the sagemaker provider"]


def test_every_provider_only_field_says_so_in_its_description() -> None:
    from fastuner.config.kinds import KINDS
    from fastuner.config.models import LOCAL_ONLY_NOTE, SAGEMAKER_ONLY_NOTE

    notes = {"sagemaker": SAGEMAKER_ONLY_NOTE, "local": LOCAL_ONLY_NOTE}
    for kind in KINDS.values():
        for path, field in _fields(kind.model):
            owner = kind.provider_only.get(path)
            noted = [p for p, note in notes.items() if (field.description or "").startswith(note)]
            assert noted == ([owner] if owner else []), (kind.name, path, field.description)


def _fields(model, prefix: str = ""):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path, field
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _fields(field.annotation, f"{path}.")


def test_checks_ignore_dangling_references(load) -> None:
    spec = load("version: 1\nproject: demo\ndeployments:\n  ep: {base_model: m, adapters: [ghost]}\n")
    assert check_spec(spec) == []


# --- schema ------------------------------------------------------------------------------------------


def test_schema_is_generated_with_descriptions() -> None:
    schema = spec_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["properties"]) >= {"version", "project", "datasets", "adapters", "deployments"}
    assert json.loads(spec_schema_text()) == schema
    defs = schema["$defs"]
    for model_name in ("Dataset", "Adapter", "Deployment", "Training", "Lora"):
        for field_name, prop in defs[model_name]["properties"].items():
            assert prop.get("description"), f"{model_name}.{field_name} has no description"
    assert defs["Dataset"]["additionalProperties"] is False


def test_a_problem_found_at_the_end_of_the_file_points_at_its_last_line(errors) -> None:
    # found by the fuzzer: libyaml's mark for the end of the stream is a line after the last one
    d = one(errors("version: 1\nproject: demo\nb"))
    assert d.summary.startswith("invalid YAML") and position(d) == (3, 2)
    d = one(errors("version: 1\nproject: [demo\n"))  # after a final newline: the empty line 3 an editor shows
    assert d.summary.startswith("invalid YAML") and position(d) == (3, 1)
