"""Can this machine load each base model? Checked at validate and plan, before a training run or a
server fails on it minutes later.

- An obvious path (`/…`, `./…`, `../…`, `~…`, or more than one `/`) that does not exist is an error: the
  training and serving programs refuse it too (a hub id is `name` or `org/name`).
- A hub id under `HF_HUB_OFFLINE=1` that is not in the Hugging Face cache is a warning, once per model:
  the programs could only look in the cache. The cache is read by its documented layout
  (`<HF_HUB_CACHE>/models--org--name/refs/<revision>` → `snapshots/<commit>/config.json`), so the CLI
  imports neither transformers nor huggingface_hub.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from fastuner.config.loader import Spec
from fastuner.errors import Diagnostic

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def check_base_models(spec: Spec, env: Mapping[str, str] = os.environ) -> list[Diagnostic]:
    """One diagnostic per base model that cannot be loaded, at its first use in the spec."""
    uses: dict[str, list[tuple[str, tuple, str | None]]] = {}  # model -> (address, spec path, revision)
    for name, adapter in spec.config.adapters.items():
        uses.setdefault(adapter.base_model, []).append(
            (f"adapter.{name}", ("adapters", name, "base_model"), adapter.base_model_revision))
    for name, dep in spec.config.deployments.items():
        uses.setdefault(dep.base_model, []).append((f"deployment.{name}", ("deployments", name, "base_model"), None))
    offline = _is_true(env.get("HF_HUB_OFFLINE", ""))
    cache = hub_cache(env)
    out: list[Diagnostic] = []
    for model, where in uses.items():
        address, path, _ = where[0]
        users = ", ".join(dict.fromkeys(a for a, _, _ in where))
        local = spec.resolve(model)
        if local.exists():
            continue
        if _is_path(model):
            out.append(Diagnostic.error(
                f"{users}: base model folder {model} does not exist",
                f"Looked for {local}. Relative paths start at {spec.file.name}'s folder.",
                source=spec.source(path), address=address))
            continue
        if not offline:
            continue  # the programs download it
        missing = sorted({r or "main" for _, _, r in where if not in_hub_cache(cache, model, r)})
        if missing:
            at = "" if missing == ["main"] else f" (revision {', '.join(missing)})"
            out.append(Diagnostic.warning(
                f"{users}: base model {model}{at} cannot be loaded offline: HF_HUB_OFFLINE is set and it is "
                f"not in the Hugging Face cache ({cache})",
                f"Download it once with network access (`hf download {model}`), point base_model at a local "
                "folder, or unset HF_HUB_OFFLINE.", source=spec.source(path), address=address))
    return out


def hub_cache(env: Mapping[str, str] = os.environ) -> Path:
    """Where huggingface_hub keeps downloaded repositories (its own precedence of variables)."""
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def in_hub_cache(cache: Path, repo_id: str, revision: str | None) -> bool:
    """Whether a snapshot of the model repository with its config.json is in the cache."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = revision or "main"
    commit = revision if _COMMIT.match(revision) else _read_ref(repo / "refs" / revision)
    return bool(commit) and (repo / "snapshots" / commit / "config.json").is_file()


def _read_ref(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _is_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1


def _is_true(value: str) -> bool:
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
