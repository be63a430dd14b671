"""Small helpers for the core tests: load a spec string, a fixed clock, an engine harness.

Everything is passed in (the clock, the provider, the environment); nothing is monkeypatched.
"""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fastuner.config.loader import Spec, load_spec
from fastuner.engine.apply import ApplyResult, apply_plan
from fastuner.engine.refresh import refresh
from fastuner.errors import Diagnostic, DiagnosticsError
from fastuner.plan.model import Plan
from fastuner.plan.planner import make_plan
from fastuner.providers.memory import MemoryWorld, memory_provider
from fastuner.state.local import LocalStateStore
from fastuner.state.model import State, empty_state

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

# One dataset, one adapter trained on it, one deployment serving the adapter.
CHAIN = """\
version: 1
project: demo
datasets:
  ds:
    path: data/ds.jsonl
    task: text_generation
adapters:
  ad:
    base_model: base/model
    dataset: ds
deployments:
  ep:
    base_model: base/model
    adapters: [ad]
    ttl: 8h
"""


def write_spec(folder: Path, text: str, name: str = "fastuner.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def load(tmp_path: Path) -> Callable[..., Spec]:
    """load(text, variables=..., environ=...) -> Spec; the process environment is never read."""

    def _load(text: str, *, variables: dict[str, str] | None = None, environ: dict[str, str] | None = None,
              name: str = "fastuner.yaml") -> Spec:
        return load_spec(write_spec(tmp_path, text, name), variables=variables or {}, environ=environ or {})

    return _load


@pytest.fixture
def errors(load: Callable[..., Spec]) -> Callable[..., list[Diagnostic]]:
    """errors(text, ...) -> the diagnostics loading it raises (fails if it loads)."""

    def _errors(text: str, **kw) -> list[Diagnostic]:
        with pytest.raises(DiagnosticsError) as info:
            load(text, **kw)
        assert info.value.diagnostics
        return info.value.diagnostics

    return _errors


class Harness:
    """A spec on disk, the in-memory provider, a real LocalStateStore and a clock the test moves."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.world = MemoryWorld()
        self.provider = memory_provider(self.world)
        self.notices: list[str] = []
        self.store = LocalStateStore(root / "state" / "demo.json", on_notice=self.notices.append)
        self.now = NOW
        self.spec: Spec | None = None
        (root / "data").mkdir()
        self.write_data("ds", "row 1\n")

    def clock(self) -> datetime:
        return self.now

    def tick(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def write_data(self, name: str, content: str) -> None:
        (self.root / "data" / f"{name}.jsonl").write_text(content, encoding="utf-8")

    def load(self, text: str = CHAIN) -> Spec:
        self.spec = load_spec(write_spec(self.root, text), variables={}, environ={})
        return self.spec

    def state(self) -> State:
        return self.store.read() or empty_state("demo", "default")

    def plan(self, **kw) -> Plan:
        assert self.spec is not None, "load a spec first"
        state = self.state()
        destroy = kw.get("destroy", False)
        observed = refresh(None if destroy else self.spec, state, self.provider)
        return make_plan(self.spec, state, observed, self.now, **kw)

    def apply(self, plan: Plan, **kw) -> ApplyResult:
        kw.setdefault("clock", self.clock)
        kw.setdefault("parallelism", 4)
        return apply_plan(plan, self.store, self.provider, spec_dir=self.root, **kw)

    def converge(self, text: str = CHAIN) -> ApplyResult:
        self.load(text)
        result = self.apply(self.plan())
        assert result.ok, result.results
        return result

    def ops(self, op: str | None = None) -> list[str]:
        """The addresses the provider was asked to work on, in call order (optionally one operation)."""
        return [a for o, a, _ in self.world.calls if op is None or o == op]


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


@pytest.fixture
def cancel() -> threading.Event:
    return threading.Event()
