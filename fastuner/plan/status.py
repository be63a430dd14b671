"""What became of each planned change when apply ran it: `ResultStatus`.

It lives beside the plan rather than in the engine because the views word it (the progress lines, the
apply summary) and views read only the plan's types. The string values are what `--json` output and
logs show, as with the plan's `Action` and `Reason`.
"""

from __future__ import annotations

from enum import StrEnum


class ResultStatus(StrEnum):
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # an upstream change failed, or (a delete) the resource is still in use
    PENDING = "pending"  # started and left running (`--no-wait`, Ctrl-C); the next run picks it up
    DEFERRED = "deferred"  # waits on upstream work that is still pending
    CANCELLED = "cancelled"  # never started: the run was interrupted


class ApplyOutcome(StrEnum):
    """How a whole apply (or destroy) ended: the CLI maps it to an exit code, views word it."""

    COMPLETE = "complete"  # nothing failed and nothing was left unstarted (work may still be pending)
    FAILED = "failed"  # a change failed, was skipped for it, or hit a bug
    INTERRUPTED = "interrupted"  # Ctrl-C: what had not started was not started
