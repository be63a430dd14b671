"""Where the training and serving programs are, and the hash of the training code.

The programs live in the repository's `containers/` (fastuner runs them as processes and never imports
them). The training code's hash is part of every adapter's identity: changed training code retrains.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from fastuner.providers.base import ProviderError


def _containers() -> Path:
    """`fastuner/_containers` in an installed wheel, else `containers/` at the repository root."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "_containers"
    return installed if installed.is_dir() else package.parent / "containers"


CONTAINERS = _containers()


def program(name: str) -> Path:
    """`containers/<name>/<name>.py` (train.py or serve.py)."""
    path = CONTAINERS / name / f"{name}.py"
    if not path.is_file():
        raise ProviderError(f"the {name} program is missing from this installation ({path})",
                            "Install fastuner from its repository (pip install -e .) so that containers/ is present.")
    return path


@functools.cache
def code_hash(name: str) -> str:
    """SHA-256 over the program's source files (path and content), stable across machines."""
    root = CONTAINERS / name
    h = hashlib.sha256()
    if not root.is_dir():
        return ""
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".txt", ".json")
                       and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return "sha256:" + h.hexdigest()
