"""Registered adapters (name -> location), their compatibility with the loaded base, and the LRU slots.

Registering reads and checks the artifact at once for a local folder; an `s3://` location is
downloaded and checked on first use (boto3 is imported only then). Replacing or deleting a name bumps
its version; the cache is keyed by (name, version), so a cached copy of an old version is never served
to a request accepted after the change.
"""

from __future__ import annotations

import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifact import AdapterArtifact, ArtifactError, normalize_name, read_artifact
from .errors import ApiError, unknown_adapter

Key = tuple[str, int]


@dataclass(frozen=True)
class BaseIdentity:
    """What an adapter is checked against: the served task, the base's names and its shapes."""

    task: str
    model: str
    names: frozenset[str]
    revision: str | None
    tokenizer_hash: str | None
    linear_shapes: dict[str, tuple[int, int]]
    modules: frozenset[str]


def check_identity(name: str, artifact: AdapterArtifact, *, task: str, model: str, names: frozenset[str],
                   revision: str | None) -> None:
    """Task, base name and revision: checkable before the base is loaded (README, 'Matching')."""
    if artifact.server_task != task:
        raise ApiError(409, "adapter_task_mismatch",
                       f"adapter '{name}' is a {artifact.task} adapter; this server serves {task}")
    if normalize_name(artifact.base_model) not in names:
        raise ApiError(409, "adapter_base_mismatch",
                       f"adapter '{name}' was trained on '{artifact.base_model}'; this server serves "
                       f"'{model}' (start it with --base-model-id '{artifact.base_model}' if that "
                       "is the same model)")
    if artifact.base_model_revision and revision and artifact.base_model_revision != revision:
        raise ApiError(409, "adapter_base_mismatch",
                       f"adapter '{name}' was trained on revision {artifact.base_model_revision}; this "
                       f"server serves revision {revision}")


def check_compatible(name: str, artifact: AdapterArtifact, base: BaseIdentity) -> None:
    """Raise a 409 saying why `artifact` cannot run on `base`: identity, tokenizer, layer shapes."""
    check_identity(name, artifact, task=base.task, model=base.model, names=base.names, revision=base.revision)
    if artifact.tokenizer_hash and base.tokenizer_hash and artifact.tokenizer_hash != base.tokenizer_hash:
        raise ApiError(409, "adapter_base_mismatch",
                       f"adapter '{name}' was trained with another tokenizer ({artifact.tokenizer_hash}) "
                       f"than the base served here ({base.tokenizer_hash})")
    for target in artifact.targets:
        shape = base.linear_shapes.get(target.module)
        if shape != (target.in_features, target.out_features):
            found = "no such linear layer" if shape is None else f"the base layer is {shape[0]}->{shape[1]}"
            raise ApiError(409, "adapter_base_mismatch",
                           f"adapter '{name}' has LoRA on {target.module} "
                           f"({target.in_features}->{target.out_features}) but {found}")
    for module in artifact.saved_modules:
        if module not in base.modules:
            raise ApiError(409, "adapter_base_mismatch",
                           f"adapter '{name}' saves module {module}, which the base model does not have")


@dataclass
class AdapterEntry:
    name: str
    location: str
    version: int
    artifact: AdapterArtifact | None
    registered_at: float
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def key(self) -> Key:
        return (self.name, self.version)


class Registry:
    def __init__(self, base: BaseIdentity, download_dir: str | None):
        self.base = base
        self._download_dir = download_dir
        self._entries: dict[str, AdapterEntry] = {}
        self._versions = 0
        self._lock = threading.Lock()

    def register(self, name: str, location: str) -> tuple[AdapterEntry, AdapterEntry | None]:
        """Add or replace `name`; returns (new entry, replaced entry or None). Local folders are checked."""
        artifact = None
        if not location.startswith("s3://"):
            artifact = inspect(name, location, self.base)
        with self._lock:
            self._versions += 1
            entry = AdapterEntry(name, location, self._versions, artifact, time.time())
            old = self._entries.get(name)
            self._entries[name] = entry
        return entry, old

    def remove(self, name: str) -> AdapterEntry:
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is None:
            raise unknown_adapter(name)
        return entry

    def get(self, name: str) -> AdapterEntry:
        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            raise unknown_adapter(name)
        return entry

    def current(self, key: Key) -> bool:
        with self._lock:
            entry = self._entries.get(key[0])
        return entry is not None and entry.version == key[1]

    def entries(self) -> list[AdapterEntry]:
        with self._lock:
            return list(self._entries.values())

    def artifact(self, entry: AdapterEntry) -> AdapterArtifact:
        """The entry's checked artifact, downloading an s3:// location the first time."""
        if entry.artifact is not None:
            return entry.artifact
        with entry.lock:
            if entry.artifact is None:
                local = download_s3(entry.location, self._download_dir, f"{entry.name}-{entry.version}")
                entry.artifact = inspect(entry.name, str(local), self.base)
        return entry.artifact


def inspect(name: str, location: str, base: BaseIdentity) -> AdapterArtifact:
    try:
        artifact = read_artifact(location)
    except ArtifactError as error:
        raise ApiError(422, "adapter_invalid", f"adapter '{name}': {error}") from None
    check_compatible(name, artifact, base)
    return artifact


def download_s3(location: str, download_dir: str | None, folder: str) -> Path:
    """Copy s3://bucket/prefix/ (an artifact folder) or s3://.../model.tar.gz into a local folder."""
    import boto3  # lazily: only deployments with s3:// adapters need it
    import botocore.exceptions

    match = re.match(r"^s3://([^/]+)/?(.*)$", location)
    if not match:
        raise ApiError(422, "adapter_invalid", f"'{location}' is not an s3://bucket/key location")
    bucket, key = match.groups()
    root = Path(download_dir or tempfile.gettempdir()) / "fastuner-serve-adapters"
    target = root / folder
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    s3 = boto3.client("s3")
    try:
        if key.endswith((".tar.gz", ".tgz")):
            archive = target.with_suffix(".tar.gz")
            s3.download_file(bucket, key, str(archive))
            with tarfile.open(archive) as tar:
                tar.extractall(target, filter="data")
            archive.unlink()
            return target
        prefix = key.rstrip("/") + "/" if key else ""
        found = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                relative = obj["Key"][len(prefix):]
                if not relative or relative.endswith("/") or "/" in relative:
                    continue  # the artifact is flat: its files sit at the root of the prefix
                s3.download_file(bucket, obj["Key"], str(target / relative))
                found += 1
    except botocore.exceptions.BotoCoreError as error:
        raise ApiError(502, "adapter_download_failed", f"downloading {location}: {error}") from None
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        status = 404 if code in ("404", "NoSuchKey", "NoSuchBucket") else 502
        raise ApiError(status, "adapter_download_failed", f"downloading {location}: {error}") from None
    if not found:
        raise ApiError(404, "adapter_download_failed", f"no objects under {location}")
    return target


class SlotCache:
    """LRU assignment of adapter versions to slots 1..capacity (slot 0 is the base model)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._lru: OrderedDict[Key, int] = OrderedDict()
        self._free = list(range(capacity, 0, -1))

    def lookup(self, key: Key) -> int | None:
        slot = self._lru.get(key)
        if slot is not None:
            self._lru.move_to_end(key)
        return slot

    def admit(self, key: Key, pinned: set[int]) -> tuple[int, Key | None]:
        """A slot for `key`, evicting the least recently used key whose slot is not pinned."""
        evicted = None
        if not self._free:
            evicted = next((k for k, s in self._lru.items() if s not in pinned), None)
            if evicted is None:
                raise RuntimeError("every slot is pinned by the current batch")
            self._free.append(self._lru.pop(evicted))
        slot = self._free.pop()
        self._lru[key] = slot
        return slot, evicted

    def drop(self, key: Key) -> int | None:
        slot = self._lru.pop(key, None)
        if slot is not None:
            self._free.append(slot)
        return slot

    def keys(self) -> list[Key]:
        """Least recently used first."""
        return list(self._lru)

    def describe(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "loaded": [name for name, _ in self._lru]}
