"""The state document: what fastuner believes exists, per project and workspace.

`format_version` is the layout of this document; `lineage` is a UUID fixed when the state is born
(a plan computed against another lineage is refused); `serial` increases on every write. Each resource
records the inputs it was created with, its outputs, what it depends on, and any operation in flight
(`pending`), so that a crash leaves a trace the next run reconciles.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 1


class Status(StrEnum):
    READY = "ready"  # exists and matches `inputs`
    PENDING = "pending"  # an operation started and has not been seen to finish
    FAILED = "failed"  # the last operation failed; the next plan replaces it
    EXPIRED = "expired"  # a deployment torn down by its TTL; kept so that it does not silently return


class Operation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(description="create, update or delete")
    started_at: datetime
    run_id: str | None = Field(None, description="Deterministic physical name of the work in flight.")
    detail: dict[str, Any] = Field(default_factory=dict)


class Deposed(BaseModel):
    """An older instance replaced by a new one (create before destroy), awaiting deletion."""

    model_config = ConfigDict(extra="forbid")

    physical_name: str | None = None
    identity: str = ""
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class Trained(BaseModel):
    """An earlier instance whose result is kept in the object store (the adapter cache): planning the
    same identity again restores it from `artifact` instead of redoing the work."""

    model_config = ConfigDict(extra="forbid")

    identity: str
    generation: int = 0
    physical_name: str
    artifact: dict[str, str] = Field(description="Object-store key of each file of the result, by relative path.")
    outputs: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class ResourceState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str
    kind: str
    name: str
    status: Status = Status.READY
    identity: str = Field("", description="Hash of the inputs that force replacement.")
    generation: int = Field(0, description="Forced rebuilds of the same inputs (--replace).")
    physical_name: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    expires_at: datetime | None = None
    pending: Operation | None = None
    error: str | None = None
    deposed: list[Deposed] = Field(default_factory=list)
    history: list[Trained] = Field(
        default_factory=list, description="Earlier instances kept restorable, newest first (adapters).")

    def deposed_state(self, old: Deposed) -> ResourceState:
        """The deposed instance as a resource, for the provider to delete."""
        return ResourceState(address=self.address, kind=self.kind, name=self.name, identity=old.identity,
                             physical_name=old.physical_name, inputs=old.inputs, outputs=old.outputs,
                             created_at=old.created_at, depends_on=list(self.depends_on))


class State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    lineage: str = Field(default_factory=lambda: str(uuid.uuid4()))
    serial: int = 0
    project: str = ""
    workspace: str = "default"
    fastuner_version: str = ""
    updated_at: datetime | None = None
    resources: dict[str, ResourceState] = Field(default_factory=dict)

    def get(self, address: str) -> ResourceState | None:
        return self.resources.get(address)

    def dependencies(self) -> dict[str, list[str]]:
        return {a: list(r.depends_on) for a, r in self.resources.items()}


def empty_state(project: str, workspace: str) -> State:
    from fastuner import __version__

    return State(project=project, workspace=workspace, fastuner_version=__version__)
