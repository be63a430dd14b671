"""The state during apply: every mutation is persisted at once, one writer at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable

from fastuner.state.model import State
from fastuner.state.store import StateStore


class Ledger:
    """Holds the latest persisted state. `mutate` applies a change to a copy and writes it; if the
    write fails the in-memory state is unchanged and the error propagates (persisting is never
    optional)."""

    def __init__(self, store: StateStore, state: State) -> None:
        self._store = store
        self._state = state
        self._lock = threading.Lock()
        self.writes = 0

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    def mutate(self, fn: Callable[[State], None]) -> State:
        with self._lock:
            draft = self._state.model_copy(deep=True)
            fn(draft)
            self._state = self._store.write(draft)
            self.writes += 1
            return self._state
