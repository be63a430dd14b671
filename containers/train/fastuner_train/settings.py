"""Hyperparameters and paths: the SageMaker training contract, parsed without importing torch.

Priority, lowest first: a JSON config file (`--config PATH` or the `config` key; relative paths resolve
against SM_CHANNEL_CONFIG when set), `SM_HPS` (a JSON object), then `--key value` arguments (SageMaker
passes every hyperparameter this way, as strings). Strings are parsed: "true"/"false", "null",
numbers, JSON lists, comma-separated lists for list keys, and lists as the SageMaker training toolkit
renders them on the command line (Python's `str()`: `['a', 'b']`; a null arrives as "", a boolean as
`True`/`False`).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TrainError
from .tasks import TASKS

METHODS = ("lora", "qlora")
ATTENTION_BACKENDS = ("auto", "varlen", "flex", "sdpa")
SWITCHES = ("auto", "true", "false")


@dataclass(frozen=True)
class Hyperparameters:
    """Every key of the contract's table (containers/README.md) plus this program's own tuning keys."""

    task: str
    base_model: str
    base_model_revision: str | None = None
    method: str = "lora"
    lora_r: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    epochs: float = 3.0
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    batch_tokens: int = 16384
    max_seq_len: int = 2048
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    seed: int = 42
    labels: tuple[str, ...] | None = None
    checkpoint_every: int = 100
    checkpoint_dir: str = "/opt/ml/checkpoints"
    max_steps: int | None = None
    packing: bool = True
    max_input_chars: int | None = None  # the dataset's limit; recorded in fastuner.json for the server
    # This program's own keys (documented in containers/train/README.md).
    log_every: int | None = None  # None: every step, or every 1 % of the steps for runs over 200
    compile: str = "auto"
    attention: str = "auto"
    loss_chunk_tokens: int = 4096
    max_new_tokens: int = 64
    config: str | None = field(default=None, repr=False)

    @property
    def is_causal_lm(self) -> bool:
        return TASKS[self.task].is_causal_lm


_FIELDS = {f.name: f for f in dataclasses.fields(Hyperparameters)}
# Keys SageMaker adds on its own; they are not ours to validate.
_IGNORED_PREFIXES = ("sagemaker_",)
_IGNORED_KEYS = {"model_dir"}


def parse_hyperparameters(argv: Sequence[str], environ: Mapping[str, str]) -> Hyperparameters:
    cli = _parse_argv(argv)
    hps = _parse_sm_hps(environ.get("SM_HPS"))
    config_ref = cli.get("config", hps.get("config"))
    from_file = _read_config_file(str(config_ref), environ) if config_ref not in (None, "") else {}
    merged: dict[str, Any] = {**from_file, **hps, **cli}
    return make_hyperparameters(merged)


def make_hyperparameters(raw: Mapping[str, Any]) -> Hyperparameters:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        key = key.replace("-", "_")
        if key.startswith(_IGNORED_PREFIXES) or key in _IGNORED_KEYS:
            continue
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, list(_FIELDS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise TrainError(f"unknown hyperparameter '{key}'{hint}")
        values[key] = _coerce(key, value)
    for required in ("task", "base_model"):
        if values.get(required) in (None, ""):
            raise TrainError(f"hyperparameter '{required}' is required")
    hp = Hyperparameters(**values)
    _validate(hp)
    return hp


def _validate(hp: Hyperparameters) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise TrainError(message)

    need(hp.task in TASKS, f"task must be one of {', '.join(TASKS)}, got '{hp.task}'")
    need(hp.method in METHODS, f"method must be one of {', '.join(METHODS)}, got '{hp.method}'")
    need(hp.lora_r >= 1, f"lora_r must be >= 1, got {hp.lora_r}")
    need(hp.lora_alpha > 0, f"lora_alpha must be > 0, got {hp.lora_alpha}")
    need(0 <= hp.lora_dropout < 1, f"lora_dropout must be in [0, 1), got {hp.lora_dropout}")
    need(hp.epochs > 0, f"epochs must be > 0, got {hp.epochs}")
    need(hp.learning_rate > 0, f"learning_rate must be > 0, got {hp.learning_rate}")
    need(0 <= hp.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {hp.warmup_ratio}")
    need(hp.weight_decay >= 0, f"weight_decay must be >= 0, got {hp.weight_decay}")
    need(hp.max_seq_len >= 8, f"max_seq_len must be >= 8, got {hp.max_seq_len}")
    need(hp.batch_tokens >= hp.max_seq_len,
         f"batch_tokens ({hp.batch_tokens}) must be >= max_seq_len ({hp.max_seq_len})")
    need(hp.grad_accum >= 1, f"grad_accum must be >= 1, got {hp.grad_accum}")
    need(hp.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {hp.checkpoint_every}")
    need(hp.max_steps is None or hp.max_steps >= 1, f"max_steps must be >= 1, got {hp.max_steps}")
    need(hp.max_input_chars is None or hp.max_input_chars >= 1,
         f"max_input_chars must be >= 1, got {hp.max_input_chars}")
    need(hp.log_every is None or hp.log_every >= 1, f"log_every must be >= 1, got {hp.log_every}")
    need(hp.loss_chunk_tokens >= 1, f"loss_chunk_tokens must be >= 1, got {hp.loss_chunk_tokens}")
    need(hp.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {hp.max_new_tokens}")
    need(hp.compile in SWITCHES, f"compile must be one of {', '.join(SWITCHES)}, got '{hp.compile}'")
    need(hp.attention in ATTENTION_BACKENDS,
         f"attention must be one of {', '.join(ATTENTION_BACKENDS)}, got '{hp.attention}'")
    if isinstance(hp.target_modules, str):
        need(hp.target_modules == "all-linear",
             f"target_modules must be 'all-linear' or a list of module names, got '{hp.target_modules}'")
    else:
        need(len(hp.target_modules) > 0, "target_modules must not be empty")
    if hp.labels is not None:
        need(len(hp.labels) >= 2, "labels must name at least two classes")
        need(len(set(hp.labels)) == len(hp.labels), "labels must not repeat")


def _coerce(key: str, value: Any) -> Any:
    kind = _FIELDS[key].type
    if isinstance(value, str):
        value = _parse_string(value, key)
    if value is None:
        if "None" in str(kind):
            return None
        raise TrainError(f"hyperparameter '{key}' must not be null")
    try:
        if key in ("target_modules", "labels"):
            if key == "target_modules" and value == "all-linear":
                return value
            if isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
                raise ValueError
            return tuple(str(v) for v in value)
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind.startswith("int"):
            if isinstance(value, bool) or not float(value).is_integer():
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if key in ("compile",) and isinstance(value, bool):
            return "true" if value else "false"
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        raise TrainError(f"hyperparameter '{key}' has an invalid value {value!r} (expected {kind})") from None


def _parse_string(text: str, key: str) -> Any:
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", ""):
        return None
    if stripped[:1] in "[{\"" or _looks_numeric(stripped):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            if stripped[:1] in "[{":
                return _parse_python_literal(stripped, key)
    return stripped


def _parse_python_literal(text: str, key: str) -> Any:
    """A list or dict as the SageMaker training toolkit puts it on the command line: `str()` of the
    JSON-decoded hyperparameter, e.g. `['q_proj', 'v_proj']`."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise TrainError(f"hyperparameter '{key}' is not valid JSON: {text!r}") from None


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_argv(argv: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise TrainError(f"unexpected argument '{arg}': expected --key value")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise TrainError(f"argument '{arg}' has no value")
            key, value = arg[2:], argv[i + 1]
            i += 2
        out[key.replace("-", "_")] = value
    return out


def _parse_sm_hps(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise TrainError(f"SM_HPS is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise TrainError("SM_HPS must be a JSON object")
    return data


def _read_config_file(ref: str, environ: Mapping[str, str]) -> dict[str, Any]:
    path = Path(ref).expanduser()
    if not path.is_absolute() and environ.get("SM_CHANNEL_CONFIG"):
        path = Path(environ["SM_CHANNEL_CONFIG"]) / path
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainError(f"config file {path} not found") from None
    except (OSError, json.JSONDecodeError) as error:
        raise TrainError(f"config file {path} cannot be read as JSON: {error}") from None
    if not isinstance(data, dict):
        raise TrainError(f"config file {path} must hold a JSON object")
    data.pop("config", None)
    return data


@dataclass(frozen=True)
class Paths:
    """Where the job reads and writes. Env vars always win, so the program runs outside /opt/ml."""

    train: Path | None
    validation: Path | None
    test: Path | None
    model_dir: Path
    output_data_dir: Path
    failure_file: Path
    checkpoint_dir: Path


def failure_file(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("SM_OUTPUT_DIR", "/opt/ml/output")) / "failure"


def make_paths(environ: Mapping[str, str], hp: Hyperparameters) -> Paths:
    def channel(name: str) -> Path | None:
        value = environ.get(f"SM_CHANNEL_{name.upper()}")
        if value:
            return Path(value)
        default = Path("/opt/ml/input/data") / name
        return default if default.is_dir() else None

    output_dir = Path(environ.get("SM_OUTPUT_DIR", "/opt/ml/output"))
    return Paths(
        train=channel("train"),
        validation=channel("validation"),
        test=channel("test"),
        model_dir=Path(environ.get("SM_MODEL_DIR", "/opt/ml/model")),
        output_data_dir=Path(environ.get("SM_OUTPUT_DATA_DIR", str(output_dir / "data"))),
        failure_file=output_dir / "failure",
        checkpoint_dir=Path(hp.checkpoint_dir),
    )
