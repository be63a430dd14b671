"""validate and plan say, before any training starts, which base model this machine cannot load: an
obvious path that does not exist (an error), or a hub id under HF_HUB_OFFLINE=1 that is not in the
Hugging Face cache (a warning, once per model). The cache is a temporary HF_HOME laid out as
huggingface_hub lays it out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastuner.config.loader import load_spec
from fastuner.providers.local.base_models import check_base_models, hub_cache, in_hub_cache
from tests.cli.helpers import intents_rows, write_jsonl

COMMIT = "a" * 40


def cache_model(hf_home: Path, repo_id: str, *, ref: str = "main", commit: str = COMMIT) -> None:
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")


def project(root: Path, adapters: str, deployments: str = "") -> Path:
    write_jsonl(root / "data" / "intents.jsonl", intents_rows(120))
    (root / "fastuner.yaml").write_text(f"""\
version: 1
project: bm
datasets:
  intents: {{path: data/intents.jsonl, task: classification}}
adapters:
{adapters}
deployments:
{deployments or "  {}"}
""".replace("deployments:\n  {}", "deployments: {}"))
    return root / "fastuner.yaml"


TWO_USERS = """\
  a: {base_model: Qwen/Qwen2.5-0.5B, dataset: intents}
  b: {base_model: Qwen/Qwen2.5-0.5B, dataset: intents, lora: {r: 8}}
"""


def offline_env(hf_home: Path) -> dict[str, str]:
    return {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}


def test_a_hub_id_missing_from_the_cache_is_one_warning_naming_its_users(tmp_path: Path) -> None:
    spec = load_spec(str(project(tmp_path, TWO_USERS, "  api: {base_model: Qwen/Qwen2.5-0.5B, adapters: [a, b]}")))
    [warning] = check_base_models(spec, offline_env(tmp_path / "hf"))
    assert warning.severity == "warning"
    assert warning.summary.startswith("adapter.a, adapter.b, deployment.api: base model Qwen/Qwen2.5-0.5B cannot be "
                                      "loaded offline")
    assert str(tmp_path / "hf" / "hub") in warning.summary and "hf download Qwen/Qwen2.5-0.5B" in warning.detail
    assert warning.source.line == 6  # adapter a's base_model


def test_cached_models_online_runs_and_local_folders_pass(tmp_path: Path) -> None:
    (tmp_path / "models" / "mini").mkdir(parents=True)
    spec = load_spec(str(project(tmp_path, TWO_USERS + "  c: {base_model: models/mini, dataset: intents}\n")))
    assert check_base_models(spec, {"HF_HOME": str(tmp_path / "hf")}) == []  # online: the programs download
    cache_model(tmp_path / "hf", "Qwen/Qwen2.5-0.5B")
    assert check_base_models(spec, offline_env(tmp_path / "hf")) == []


def test_a_pinned_revision_must_itself_be_cached(tmp_path: Path) -> None:
    cache_model(tmp_path / "hf", "org/m")
    pinned = "  a: {base_model: org/m, base_model_revision: v2, dataset: intents}\n"
    spec = load_spec(str(project(tmp_path, pinned)))
    [warning] = check_base_models(spec, offline_env(tmp_path / "hf"))
    assert "org/m (revision v2)" in warning.summary
    cache_model(tmp_path / "hf", "org/m", ref="v2", commit="b" * 40)
    assert check_base_models(spec, offline_env(tmp_path / "hf")) == []
    assert in_hub_cache(hub_cache(offline_env(tmp_path / "hf")), "org/m", "b" * 40)  # a commit needs no ref


def test_a_ref_without_its_snapshot_is_not_cached(tmp_path: Path) -> None:
    cache_model(tmp_path / "hf", "org/m")
    (tmp_path / "hf" / "hub" / "models--org--m" / "snapshots" / COMMIT / "config.json").unlink()
    assert not in_hub_cache(tmp_path / "hf" / "hub", "org/m", None)


@pytest.mark.parametrize(("env", "expected"), [
    ({"HF_HUB_CACHE": "/c/hub"}, "/c/hub"), ({"HF_HOME": "/h"}, "/h/hub"),
    ({"XDG_CACHE_HOME": "/x"}, "/x/huggingface/hub"), ({"HF_HUB_CACHE": "/c", "HF_HOME": "/h"}, "/c"),
])
def test_the_cache_folder_follows_huggingface_hub(env: dict[str, str], expected: str) -> None:
    assert hub_cache(env) == Path(expected)


def test_a_missing_local_folder_is_an_error(tmp_path: Path) -> None:
    spec = load_spec(str(project(tmp_path, "  a: {base_model: ./models/gone, dataset: intents}\n")))
    [error] = check_base_models(spec, {})
    assert error.severity == "error" and "base model folder ./models/gone does not exist" in error.summary
    assert str(tmp_path / "models" / "gone") in error.detail


def test_validate_and_plan_print_the_warning_once_and_still_work(cli, tmp_path: Path, monkeypatch) -> None:
    project(tmp_path, TWO_USERS)
    for name, value in offline_env(tmp_path / "hf").items():
        monkeypatch.setenv(name, value)
    validated = cli("validate", cwd=tmp_path)
    assert validated.code == 0, validated.text
    assert validated.text.count("cannot be loaded offline") == 1 and "Success!" in validated.text
    planned = cli("plan", "--detailed-exitcode", cwd=tmp_path)
    assert planned.code == 2, planned.text
    assert planned.text.count("cannot be loaded offline") == 1 and "adapter.a, adapter.b" in planned.text
    as_json = json.loads(cli("plan", "--json", cwd=tmp_path).out)
    assert [d["severity"] for d in as_json["diagnostics"]] == ["warning"]


def test_plan_refuses_a_missing_local_folder_but_destroy_does_not_need_it(cli, tmp_path: Path) -> None:
    project(tmp_path, "  a: {base_model: ./models/gone, dataset: intents}\n")
    planned = cli("plan", cwd=tmp_path)
    assert planned.code == 1 and "base model folder ./models/gone does not exist" in planned.text
    assert "Traceback" not in planned.text
    destroyed = cli("destroy", "--auto-approve", cwd=tmp_path)
    assert destroyed.code == 0, destroyed.text
