"""What refresh saw: read-only facts handed to the pure planner."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from fastuner.plan.prices import PriceBook


class ObservationStatus(StrEnum):
    READY = "ready"  # exists, its operation finished
    PENDING = "pending"  # work still running
    FAILED = "failed"  # the work failed; the observation's `detail` says why
    MISSING = "missing"  # nothing exists: deleted outside fastuner, or a dead server


@dataclass(frozen=True)
class Observation:
    """One resource as the provider reads it now."""

    status: ObservationStatus
    outputs: Mapping[str, Any] = field(default_factory=dict)
    detail: str = ""
    last_activity: datetime | None = None  # deployments: time of the last invocation
    stored: frozenset[str] = frozenset()  # identities whose kept result is whole in the store (restorable)

    @property
    def exists(self) -> bool:
        return self.status is not ObservationStatus.MISSING


@dataclass(frozen=True)
class Observed:
    resources: Mapping[str, Observation] = field(default_factory=dict)
    dataset_sources: Mapping[str, str] = field(default_factory=dict)  # dataset name -> sha256 of its file
    training_code_hash: str = ""
    unsupported: Mapping[str, str] = field(default_factory=dict)  # kind -> why the provider can't apply it
    priced: bool = False  # whether the provider bills by the hour (sagemaker) or runs here (local)
    # dataset name -> figures of its file now (`records`, `distinct`, `duplicates`, `labels`, or `error`),
    # measured only for files that changed since state recorded them (plan/datadiff.py)
    dataset_figures: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    prices: PriceBook | None = None  # the prices to estimate with; None: those shipped with fastuner
    # adapter name -> what its training will do: {"tokens": train split tokens, "counted": "tokenizer" |
    # "chars", "params_b": the base model's size in billions when its config says (else absent)}
    work: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
