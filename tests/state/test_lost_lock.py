"""A run that loses its state lock mid-apply (its lease was taken over) starts nothing new: the operation
running when it was lost finishes and is recorded, what had not started is reported as not started, and
the run fails. The engine asks the store before each operation (`check_lock`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from fastuner.engine.events import NullReporter
from fastuner.plan.status import ApplyOutcome, ResultStatus
from fastuner.state.model import Status
from tests.core.conftest import Harness
from tests.state.conftest import S3Clock


class Notes(NullReporter):
    def __init__(self) -> None:
        self.notices: list[str] = []

    def notice(self, text: str) -> None:
        self.notices.append(text)


def test_a_lost_lock_stops_new_work_and_running_work_is_recorded(tmp_path: Path, make_s3) -> None:
    harness = Harness(tmp_path)
    harness.store = store = make_s3(lease=30, renew_every=0.05)
    taker = contextlib.ExitStack()

    def taken_over_while_the_dataset_is_made() -> None:
        # To S3 the holder looks dead (its clock is 40 s on): another run takes the lock over, and the
        # holder's next renewal is refused.
        taker.enter_context(make_s3(clock=S3Clock(offset=40)).lock("apply (the other run)"))
        assert store._held.lost.wait(5)

    harness.world.script("dataset.ds").before = taken_over_while_the_dataset_is_made
    harness.load()
    reporter = Notes()
    with taker:
        result = harness.apply(harness.plan(), reporter=reporter, parallelism=1)
        state = store.read()
    statuses = {r.address: (r.status, r.message) for r in result.results}
    assert statuses["dataset.ds"][0] is ResultStatus.DONE
    assert statuses["adapter.ad"] == (ResultStatus.SKIPPED, "not started: the state lock was lost")
    assert statuses["deployment.ep"] == (ResultStatus.SKIPPED, "not started: the state lock was lost")
    assert harness.ops() == ["dataset.ds"]  # the provider was asked for nothing else
    assert result.outcome is ApplyOutcome.FAILED and not result.ok
    assert "taken over by" in result.lock_lost and "apply (the other run)" in result.lock_lost
    assert any(n.startswith("lost the state lock on s3://") and "nothing new was started" in n
               for n in reporter.notices)
    assert state.resources["dataset.ds"].status is Status.READY  # the running operation was recorded
    assert set(state.resources) == {"dataset.ds"}



def test_a_lost_lock_stops_a_long_operation_waiting_and_records_it_pending(tmp_path: Path, make_s3, aws) -> None:
    """Found by tests/stress/faults.py: with the lock object deleted while a training job ran, the holder
    went on waiting for the job (hours, on SageMaker) without the lock. Now it stops waiting as on
    Ctrl-C: the work runs on, recorded as pending for the next run to adopt."""
    import threading
    import time

    from fastuner.state.s3 import lock_key
    from tests.state.conftest import BUCKET, KEY

    harness = Harness(tmp_path)
    harness.store = store = make_s3(lease=30, renew_every=0.05)
    script = harness.world.script("adapter.ad")
    script.delay = 60.0  # a training job
    script.before = lambda: threading.Timer(0.3, lambda: aws.delete_object(Bucket=BUCKET, Key=lock_key(KEY))).start()
    harness.load()
    started = time.monotonic()
    result = harness.apply(harness.plan(), reporter=Notes(), parallelism=1)
    assert time.monotonic() - started < 15  # not the operation's 60 s
    statuses = {r.address: r.status for r in result.results}
    assert statuses["dataset.ds"] is ResultStatus.DONE
    assert statuses["adapter.ad"] is ResultStatus.PENDING
    assert statuses["deployment.ep"] in (ResultStatus.SKIPPED, ResultStatus.DEFERRED)
    assert "released by someone else" in result.lock_lost and result.outcome is ApplyOutcome.FAILED
    state = store.read()
    assert state.resources["adapter.ad"].status is Status.PENDING  # recorded, for the next run to adopt
