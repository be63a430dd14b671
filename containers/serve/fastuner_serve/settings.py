"""Server settings from flags, a JSON config, environment variables and the SageMaker model folder.

Parsed without importing torch, so that usage errors, a busy port or a missing adapter folder fail in
well under a second. Priority, lowest first: the JSON config (`--config PATH`, else
`$FASTUNER_SERVE_CONFIG`, else `$SM_MODEL_DIR/serve.json` when it exists; relative paths in it resolve
against the file's folder), `$FASTUNER_ADAPTERS` (a JSON object name -> location), then flags. Adapters
from all sources are merged by name; the higher source wins for a name given twice. When no base model
is given anywhere, the SageMaker model folder is searched (see `discover_model_dir`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import StartupError
from .tasks import FAMILIES

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_MODEL_DIR = "/opt/ml/model"
TOKEN_ENV = "FASTUNER_MANAGEMENT_TOKEN"


@dataclass(frozen=True)
class Settings:
    base_model: str | None = None
    base_model_ids: tuple[str, ...] = ()
    base_model_revision: str | None = None
    task: str | None = None
    adapters: dict[str, str] = field(default_factory=dict)
    cache_size: int = 4
    host: str = "127.0.0.1"
    port: int = 8080
    port_file: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None
    max_batch_size: int = 16
    max_inputs: int = 256
    max_new_tokens_limit: int = 2048
    max_body_bytes: int = 6 * 1024 * 1024
    download_dir: str | None = None
    shutdown_timeout: float = 30.0
    emf_endpoint: str | None = None  # set: one CloudWatch EMF line per request on stdout (emf.py)
    # the bearer token the management API (/adapters) requires; never a flag (argv is public to `ps`)
    management_token: str | None = field(default=None, repr=False)


KEYS = {f.name for f in dataclasses.fields(Settings)}
PATH_KEYS = ("base_model", "port_file", "download_dir")


def validate_adapter_name(name: str) -> str:
    if not ADAPTER_NAME.match(name):
        raise ValueError(
            f"invalid adapter name '{name}': use 1-64 characters from A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serve.py",
        description="fastuner multi-adapter inference server (SageMaker hosting contract).",
    )
    parser.add_argument("mode", nargs="?", choices=["serve"],
                        help="'serve' as SageMaker passes it: listen on 0.0.0.0 unless --host is given")
    parser.add_argument("--config", help="JSON config file (keys as the flags, with underscores)")
    parser.add_argument("--base-model", help="local folder or hub id of the base model")
    parser.add_argument("--base-model-id", action="append", dest="base_model_ids",
                        help="another name adapters may give as base_model for this base (repeatable)")
    parser.add_argument("--base-model-revision", help="hub revision of the base model")
    parser.add_argument("--task", choices=FAMILIES, help="default: the first adapter's task, or the base's")
    parser.add_argument("--adapter", action="append", dest="adapters", metavar="NAME=LOCATION",
                        help="register an adapter: a folder, s3://bucket/prefix/ or s3://.../model.tar.gz")
    parser.add_argument("--cache-size", type=int, help="adapters kept loaded at once (LRU; default 4)")
    parser.add_argument("--host", help="default 127.0.0.1 (0.0.0.0 in 'serve' mode)")
    parser.add_argument("--port", type=int, help="default 8080 ($SAGEMAKER_BIND_TO_PORT); 0 picks a free one")
    parser.add_argument("--port-file", help="write the bound port here once ready")
    parser.add_argument("--device", help="auto (cuda when available), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", help="auto (bfloat16 on cuda, float32 on cpu), float32, bfloat16, float16")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--max-batch-size", type=int, help="rows per classification forward (default 16)")
    parser.add_argument("--max-inputs", type=int, help="inputs per request (default 256)")
    parser.add_argument("--max-new-tokens-limit", type=int, help="largest max_new_tokens (default 2048)")
    parser.add_argument("--max-body-bytes", type=int, help="largest request body (default 6 MiB)")
    parser.add_argument("--download-dir", help="where s3:// adapters are downloaded (default: a temp dir)")
    parser.add_argument("--shutdown-timeout", type=float,
                        help="seconds to wait for in-flight requests on SIGTERM (default 30)")
    parser.add_argument("--emf-endpoint", metavar="ENDPOINT_NAME",
                        help="write per-request CloudWatch EMF metrics on stdout under this endpoint name "
                             "(default $FASTUNER_ENDPOINT_NAME; unset: none)")
    return parser


def load_settings(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    """Merge every source into one `Settings`; raises `StartupError` (exit code 2) on any problem."""
    env = dict(os.environ) if env is None else env
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code == 0:  # --help
            raise
        raise StartupError("invalid arguments (see --help)", exit_code=2) from None
    values: dict[str, Any] = {}
    adapters: dict[str, str] = {}

    config_path = args.config or env.get("FASTUNER_SERVE_CONFIG")
    model_dir = Path(env.get("SM_MODEL_DIR", DEFAULT_MODEL_DIR))
    if config_path is None and (model_dir / "serve.json").is_file():
        config_path = str(model_dir / "serve.json")
    if config_path:
        file_values = read_config_file(Path(config_path))
        adapters.update(file_values.pop("adapters", {}))
        values.update(file_values)

    if env.get("FASTUNER_ADAPTERS"):
        adapters.update(parse_adapter_object(env["FASTUNER_ADAPTERS"], "FASTUNER_ADAPTERS", None))

    for key in KEYS - {"adapters", "base_model_ids"}:
        given = getattr(args, key, None)
        if given is not None:
            values[key] = given
    if args.base_model_ids:
        values["base_model_ids"] = tuple(args.base_model_ids)
    for item in args.adapters or []:
        name, sep, location = item.partition("=")
        if not sep or not location:
            raise StartupError(f"--adapter expects NAME=LOCATION, got '{item}'", exit_code=2)
        adapters[check_name(name)] = location

    if "port" not in values:
        values["port"] = int(env.get("SAGEMAKER_BIND_TO_PORT", 8080))
    if "management_token" not in values and env.get(TOKEN_ENV):
        values["management_token"] = env[TOKEN_ENV]
    if "emf_endpoint" not in values and env.get("FASTUNER_ENDPOINT_NAME"):
        values["emf_endpoint"] = env["FASTUNER_ENDPOINT_NAME"]
    if "host" not in values and args.mode == "serve":
        values["host"] = "0.0.0.0"
    if not values.get("base_model"):
        discovered_base, discovered_adapters = discover_model_dir(model_dir)
        if discovered_base is None:
            raise StartupError(
                f"no base model: pass --base-model, a --config with base_model, or put one in {model_dir}",
                exit_code=2,
            )
        values["base_model"] = discovered_base
        adapters = {**discovered_adapters, **adapters}
    values["adapters"] = adapters
    settings = Settings(**values)
    check_settings(settings)
    return settings


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise StartupError(f"config file {path} does not exist", exit_code=2) from None
    except (OSError, json.JSONDecodeError) as error:
        raise StartupError(f"config file {path} is not readable JSON: {error}", exit_code=2) from None
    if not isinstance(raw, dict):
        raise StartupError(f"config file {path} must hold a JSON object", exit_code=2)
    base = path.resolve().parent
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in KEYS:
            close = difflib.get_close_matches(key, sorted(KEYS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise StartupError(f"config file {path}: unknown key '{key}'{hint}", exit_code=2)
        if key == "adapters":
            out[key] = parse_adapter_object(value, f"config file {path}", base)
        elif key == "base_model_ids":
            ids = [value] if isinstance(value, str) else value
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise StartupError(f"config file {path}: base_model_ids must be a list of strings", exit_code=2)
            out[key] = tuple(ids)
        elif key in PATH_KEYS and isinstance(value, str) and is_relative_local(value, base):
            out[key] = str(base / value)
        else:
            out[key] = value
    return out


def parse_adapter_object(value: Any, where: str, base: Path | None) -> dict[str, str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise StartupError(f"{where}: adapters must be a JSON object ({error})", exit_code=2) from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise StartupError(f"{where}: adapters must be an object of name -> location strings", exit_code=2)
    out = {}
    for name, location in value.items():
        if base is not None and is_relative_local(location, base):
            location = str(base / location)
        out[check_name(name)] = location
    return out


def is_relative_local(value: str, base: Path) -> bool:
    """A relative path that exists next to the config file (a hub id like org/name does not)."""
    return not value.startswith(("s3://", "/")) and (base / value).exists()


def check_name(name: str) -> str:
    try:
        return validate_adapter_name(name)
    except ValueError as error:
        raise StartupError(str(error), exit_code=2) from None


def check_settings(settings: Settings) -> None:
    problems = []
    if settings.task is not None and settings.task not in FAMILIES:
        problems.append(f"task must be one of {', '.join(FAMILIES)}, got '{settings.task}'")
    if not isinstance(settings.cache_size, int) or settings.cache_size < 1:
        problems.append(f"cache_size must be an integer >= 1, got {settings.cache_size!r}")
    if not isinstance(settings.port, int) or not 0 <= settings.port <= 65535:
        problems.append(f"port must be 0-65535, got {settings.port!r}")
    for key in ("max_batch_size", "max_inputs", "max_new_tokens_limit", "max_body_bytes"):
        value = getattr(settings, key)
        if not isinstance(value, int) or value < 1:
            problems.append(f"{key} must be an integer >= 1, got {value!r}")
    if settings.emf_endpoint is not None and (not isinstance(settings.emf_endpoint, str) or not settings.emf_endpoint):
        problems.append(f"emf_endpoint must be an endpoint name, got {settings.emf_endpoint!r}")
    if settings.dtype not in ("auto", "float32", "bfloat16", "float16"):
        problems.append(f"dtype must be auto, float32, bfloat16 or float16, got '{settings.dtype}'")
    token = settings.management_token
    if token is not None and (not isinstance(token, str) or len(token) < 16 or not token.isprintable()):
        problems.append(f"management_token (${TOKEN_ENV}) must be a string of at least 16 printable characters")
    if problems:
        raise StartupError("; ".join(problems), exit_code=2)


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def discover_model_dir(model_dir: Path) -> tuple[str | None, dict[str, str]]:
    """The SageMaker model folder layouts, tried in order.

    1. `base/` holds the base model (a `config.json`); every `adapters/NAME/` with a `fastuner.json` is
       registered as NAME.
    2. The folder itself is one adapter artifact (`fastuner.json` at the root, as `train` writes it):
       it is registered as `default` and the base model is its `base_model` (a hub id is downloaded).
    """
    adapters: dict[str, str] = {}
    if (model_dir / "adapters").is_dir():
        for child in sorted((model_dir / "adapters").iterdir()):
            if (child / "fastuner.json").is_file() and ADAPTER_NAME.match(child.name):
                adapters[child.name] = str(child)
    if (model_dir / "base" / "config.json").is_file():
        return str(model_dir / "base"), adapters
    meta_path = model_dir / "fastuner.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise StartupError(f"{meta_path} is not readable JSON: {error}", exit_code=4) from None
        base = meta.get("base_model") if isinstance(meta, dict) else None
        if isinstance(base, str) and base:
            return base, {"default": str(model_dir), **adapters}
    return None, adapters
