"""Hyperparameter parsing: file < SM_HPS < --key value, SageMaker's all-string values, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastuner_train.errors import TrainError
from fastuner_train.settings import make_paths, parse_hyperparameters

BASE = ["--task", "qa", "--base_model", "m"]


def test_defaults_follow_the_contract_table() -> None:
    hp = parse_hyperparameters(BASE, {})
    assert (hp.method, hp.lora_r, hp.lora_alpha, hp.lora_dropout) == ("lora", 16, 32, 0.05)
    assert (hp.target_modules, hp.epochs, hp.learning_rate, hp.warmup_ratio) == ("all-linear", 3, 2e-4, 0.03)
    assert (hp.batch_tokens, hp.max_seq_len, hp.grad_accum, hp.seed) == (16384, 2048, 1, 42)
    assert (hp.gradient_checkpointing, hp.checkpoint_every, hp.checkpoint_dir) == (False, 100, "/opt/ml/checkpoints")
    assert (hp.max_steps, hp.packing, hp.labels, hp.base_model_revision, hp.weight_decay) == (None, True, None, None, 0)


def test_priority_file_then_sm_hps_then_argv(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"task": "qa", "base_model": "m", "lora_r": 4, "epochs": 1,
                                                  "seed": 7}))
    env = {"SM_CHANNEL_CONFIG": str(tmp_path), "SM_HPS": json.dumps({"config": "c.json", "lora_r": "8", "epochs": 2})}
    hp = parse_hyperparameters(["--epochs", "0.5"], env)
    assert (hp.lora_r, hp.epochs, hp.seed) == (8, 0.5, 7)


def test_sagemaker_strings_are_parsed() -> None:
    hp = parse_hyperparameters(
        [*BASE, "--gradient_checkpointing", "true", "--packing", "False", "--target_modules", '["q_proj", "v_proj"]',
         "--labels", "a,b", "--max_steps", "null", "--learning-rate", "1e-3", "--sagemaker_program", "train.py"], {})
    assert hp.gradient_checkpointing is True and hp.packing is False
    assert hp.target_modules == ("q_proj", "v_proj") and hp.labels == ("a", "b")
    assert hp.max_steps is None and hp.learning_rate == 1e-3


def test_values_as_the_sagemaker_training_toolkit_renders_them() -> None:
    """The toolkit JSON-decodes each hyperparameter, then passes `str()` of it: Python lists, True/False,
    and "" for a null (Hugging Face training images start the program this way)."""
    hp = parse_hyperparameters(
        [*BASE, "--labels", "['a', 'b']", "--target_modules", "['q_proj', 'v_proj']", "--packing", "True",
         "--base_model_revision", "", "--max_steps", ""], {})
    assert hp.labels == ("a", "b") and hp.target_modules == ("q_proj", "v_proj") and hp.packing is True
    assert hp.base_model_revision is None and hp.max_steps is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--task", "qa"], "'base_model' is required"),
    ([*BASE, "--learnig_rate", "1"], "did you mean 'learning_rate'"),
    ([*BASE, "--lora_r", "1.5"], "'lora_r' has an invalid value"),
    ([*BASE, "--task", "summarize"], "task must be one of"),
    ([*BASE, "--method", "dora"], "method must be one of"),
    ([*BASE, "--batch_tokens", "100"], "batch_tokens (100) must be >= max_seq_len"),
    ([*BASE, "--target_modules", "[]"], "target_modules must not be empty"),
    ([*BASE, "--lora_dropout", "1"], "lora_dropout must be in [0, 1)"),
    ([*BASE, "--epochs"], "has no value"),
    ([*BASE, "--max_input_chars", "0"], "max_input_chars must be >= 1"),
    ([*BASE, "--labels", "[1,"], "not valid JSON"),
])
def test_bad_hyperparameters_are_one_line_errors(argv: list[str], message: str) -> None:
    with pytest.raises(TrainError) as caught:
        parse_hyperparameters(argv, {})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_datasets_input_limit_is_recorded_for_the_server() -> None:
    from fastuner_train.artifact import describe

    hp = parse_hyperparameters([*BASE, "--max_input_chars", "512"], {})
    assert hp.max_input_chars == 512
    described = describe(hp, labels=None, prompt_format="plain", tokenizer_hash="sha256:0", chat_template_hash=None,
                         metrics={})
    assert described["max_input_chars"] == 512
    assert describe(parse_hyperparameters(BASE, {}), labels=None, prompt_format="plain", tokenizer_hash="sha256:0",
                    chat_template_hash=None, metrics={})["max_input_chars"] is None


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match=r"config file .* not found"):
        parse_hyperparameters([*BASE, "--config", str(tmp_path / "nope.json")], {})


def test_paths_come_from_the_environment(tmp_path: Path) -> None:
    hp = parse_hyperparameters([*BASE, "--checkpoint_dir", str(tmp_path / "ck")], {})
    env = {"SM_CHANNEL_TRAIN": str(tmp_path / "tr"), "SM_MODEL_DIR": str(tmp_path / "m"),
           "SM_OUTPUT_DIR": str(tmp_path / "o")}
    paths = make_paths(env, hp)
    assert paths.train == tmp_path / "tr" and paths.model_dir == tmp_path / "m"
    assert paths.failure_file == tmp_path / "o" / "failure"
    assert paths.output_data_dir == tmp_path / "o" / "data"
    assert paths.checkpoint_dir == tmp_path / "ck"
