"""A lock with a lease: valid for `lease` seconds after its holder last renewed it.

Terraform's and Pulumi's remote locks have no lease, and a CI job cancelled mid-apply leaves a lock that
stays until someone runs force-unlock. Here the holder renews the lock object while it works — every
lease/3, a put on condition that the object is still the one it wrote last (every renewal writes new
bytes, so a new ETag) — and a lock whose lease ended may be taken over by the next run. The store
judges that end by its own clock (S3's `Last-Modified` against the `Date` of its answer), never by the
clocks of the machines involved.

A holder whose renewal is refused (the lock was taken over, or force-unlocked) or keeps failing for
longer than the lease has lost the lock: `check` raises `LockLostError`, and the engine starts nothing
new. The time since the last renewal is measured from when that renewal was *sent*, which is before S3
stamped it, so the holder gives up no later than anyone else may take over. It counts time asleep
(CLOCK_BOOTTIME): a laptop that slept through its lease wakes up without the lock.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from fastuner.config.duration import format_duration
from fastuner.errors import UserError
from fastuner.state.store import LockInfo, LockLostError

DEFAULT_LEASE_S = 120.0
RETRY_S = 2.0  # after a failed renewal, try again this soon (bounded by the renewal interval)
RELEASE_WAIT_S = 10.0  # how long releasing waits for a renewal in flight


def elapsed() -> float:
    """Seconds on a clock that never goes back and keeps counting while the machine sleeps."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class LockGone(Exception):
    """The lock object is no longer the one this run wrote: taken over, or deleted (force-unlock)."""


def lock_body(info: LockInfo, renewals: int) -> bytes:
    """The lock object: who holds it and the lease, plus a renewal count so that every renewal has new
    bytes and so a new ETag (a takeover conditioned on an expired lock's ETag must fail once renewed)."""
    return json.dumps({**info.to_dict(), "renewals": renewals}, indent=2).encode("utf-8")


class Lease:
    """A lock this process holds, renewed by a background thread until `release`.

    `put(body, etag)` writes the lock object on condition that it is still `etag` and returns the new
    ETag; `delete(etag)` removes it on the same condition; both raise `LockGone` when the condition
    fails, and a `UserError` (an explained AWS error) when the store cannot be reached. `holder()` says
    who holds the lock now, for the message when it was taken over."""

    def __init__(self, info: LockInfo, etag: str, *, renewed_at: float, every: float,
                 put: Callable[[bytes, str], str], delete: Callable[[str], None], holder: Callable[[], str],
                 location: str, notice: Callable[[str], None], clock: Callable[[], float] = elapsed) -> None:
        self.info = info
        self.etag = etag
        self.renewed_at = renewed_at
        self.every = every
        self.renewals = 0
        self.lost = threading.Event()
        self.reason = ""
        self._put, self._delete, self._holder = put, delete, holder
        self._location = location
        self._notice = notice
        self._clock = clock
        self._stop = threading.Event()
        self._mutex = threading.Lock()  # one renewal at a time
        self._losing = threading.Lock()  # the engine's check and the thread may both find it lost
        self._thread = threading.Thread(target=self._run, name="fastuner-lock-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def check(self) -> None:
        """Raise `LockLostError` if the lock is lost, or was not renewed within its lease."""
        since = self._clock() - self.renewed_at
        if not self.lost.is_set() and since > self.info.lease:
            self._lose(f"it was not renewed for {_duration(since)}, longer than its lease "
                       f"({_duration(self.info.lease)}), so another run may have taken it over")
        if self.lost.is_set():
            raise LockLostError(self._location, self.reason)

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still this run's. Never raises: a lock that cannot
        be deleted ends with its lease."""
        self._stop.set()
        self._thread.join(RELEASE_WAIT_S)
        if self._thread.is_alive():  # a renewal stuck in retries: the lock ends with its lease instead
            self._notice(f"could not release the state lock {self.info.id}: a renewal is still waiting for an "
                         f"answer. It ends with its lease ({_duration(self.info.lease)} after its last renewal), "
                         f"or release it now with: fastuner force-unlock {self.info.id}")
            return
        try:
            self._delete(self.etag)
        except LockGone:
            if not self.lost.is_set():
                self._notice(f"the state lock {self.info.id} was no longer this run's when it finished "
                             f"({self._who()})")
        except UserError as exc:
            self._notice(f"could not release the state lock {self.info.id}: {exc.diagnostics[0].summary}. It ends "
                         f"with its lease ({_duration(self.info.lease)} after its last renewal), or release it "
                         f"now with: fastuner force-unlock {self.info.id}")

    # --- the renewing thread -------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.every
        while not self._stop.wait(delay) and not self.lost.is_set():
            delay = self.every if self.renew() else min(self.every, RETRY_S)

    def renew(self) -> bool:
        """One renewal; False if it failed (the lock may be lost as a result)."""
        with self._mutex:
            body = lock_body(self.info, self.renewals + 1)
            sent = self._clock()
            try:
                etag = self._put(body, self.etag)
            except LockGone:
                self._lose(self._who())
                return False
            except UserError as exc:
                since = self._clock() - self.renewed_at
                if since > self.info.lease:
                    self._lose(f"it could not be renewed for {_duration(since)}, longer than its lease "
                               f"({exc.diagnostics[0].summary})")
                return False
            self.etag, self.renewed_at, self.renewals = etag, sent, self.renewals + 1
            return True

    def _who(self) -> str:
        try:
            return self._holder()
        except UserError:
            return "it was taken over or released by someone else"

    def _lose(self, reason: str) -> None:
        with self._losing:
            if self.lost.is_set():
                return
            self.reason = reason
            self.lost.set()
        self._notice(f"lost the state lock on {self._location}: {reason}. No new operation will start; the "
                     "running ones finish and are recorded.")


def _duration(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds)) if seconds >= 1 else f"{seconds:.1f}s"
