"""The state during apply: every mutation is persisted before `mutate` returns, one writer at a time.

Writes are group-committed: while one thread writes the state file, mutations from other threads
queue up, and the next writer applies them all to one copy and writes once. Each caller still
returns only after a write that includes its own mutation is durable, so "pending before it starts,
recorded after it ends" holds for every operation, at a fraction of the writes when many run at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from fastuner.state.model import State
from fastuner.state.store import StateStore


@dataclass
class _Ticket:
    fn: Callable[[State], None]
    done: bool = False
    error: BaseException | None = None
    state: State | None = field(default=None, repr=False)


class Ledger:
    """Holds the latest persisted state. If a write fails, the in-memory state is unchanged and every
    caller in that group gets the error (persisting is never optional)."""

    def __init__(self, store: StateStore, state: State) -> None:
        self._store = store
        self._state = state
        self._cond = threading.Condition()
        self._queue: list[_Ticket] = []
        self._writing = False
        self.writes = 0
        self.unsaved: BaseException | None = None  # the last write that failed

    @property
    def state(self) -> State:
        with self._cond:
            return self._state

    def mutate(self, fn: Callable[[State], None]) -> State:
        ticket = _Ticket(fn)
        with self._cond:
            self._queue.append(ticket)
            while not ticket.done and self._writing:
                self._cond.wait()
            if not ticket.done:  # nobody is writing: this thread writes everything queued so far
                batch, self._queue = self._queue, []
                self._writing = True
        if not ticket.done:
            self._commit(batch)
        if ticket.error is not None:
            raise ticket.error
        assert ticket.state is not None
        return ticket.state

    def _commit(self, batch: list[_Ticket]) -> None:
        live = list(batch)
        new: State | None = None
        write_error: BaseException | None = None
        try:
            while live:
                draft = self._state.model_copy(deep=True)
                failed = None
                for t in live:
                    try:
                        t.fn(draft)
                    except BaseException as exc:  # a bug in one transition must not sink the others
                        t.error, failed = exc, t
                        break
                if failed is None:
                    break
                live.remove(failed)  # start over from the persisted state without it
            if live:
                new = self._store.write(draft)
        except BaseException as exc:
            write_error = self.unsaved = exc
        with self._cond:
            if new is not None:
                self._state = new
                self.writes += 1
            for t in batch:
                if t in live:
                    t.error = write_error
                    t.state = new
                t.done = True
            self._writing = False
            self._cond.notify_all()
