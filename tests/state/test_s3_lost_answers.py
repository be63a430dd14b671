"""A conditional put whose answer is lost (a read timeout, a reset connection after S3 carried it out) is
retried by botocore, and the retry's 412 is the store's own write, not another run's: the state write,
taking the lock and renewing it each recognise what they wrote and carry on, instead of refusing the
state as "changed underneath" or giving the lock up as "taken over" (found by tests/stress/faults.py)."""

from __future__ import annotations

import json

from fastuner.state.s3 import lock_key
from tests.state.conftest import BUCKET, KEY
from tests.state.test_store_contract import a_state
from tests.stress.inject import FaultPlan, Injector


def lose_the_next_answer(client, operation: str = "PutObject") -> Injector:
    injector = Injector(FaultPlan(share=1.0, kinds=("timeout",), ops=frozenset({operation}), limit=1))
    injector.attach(client)
    return injector


def test_a_state_write_whose_answer_was_lost_is_the_stores_own(make_s3, aws) -> None:
    store = make_s3()
    with store.lock("apply"):
        first = store.write(a_state())
        lost = lose_the_next_answer(store.client)
        second = store.write(first)  # S3 stored it; the retry got 412 on the ETag it had replaced
        assert lost.injected == {"timeout": 1}
        third = store.write(second)  # and the store knows the new ETag
    assert make_s3().read().serial == third.serial == 3
    versions = aws.list_object_versions(Bucket=BUCKET, Prefix=KEY)["Versions"]
    assert len([v for v in versions if v["Key"] == KEY]) == 3  # nothing written twice


def test_the_first_state_write_whose_answer_was_lost(make_s3) -> None:
    store = make_s3()
    with store.lock("apply"):
        lose_the_next_answer(store.client)
        assert store.write(a_state()).serial == 1
    assert make_s3().read().serial == 1


def test_a_lock_taken_whose_answer_was_lost_is_held(make_s3, aws) -> None:
    store = make_s3(lease=30)
    lost = lose_the_next_answer(store.client)
    with store.lock("apply") as info:
        assert lost.injected == {"timeout": 1}
        body = json.loads(aws.get_object(Bucket=BUCKET, Key=lock_key(KEY))["Body"].read())
        assert body["id"] == info.id
        store.check_lock()
    assert store.current_lock() is None  # released: the store knew its ETag


def test_a_renewal_whose_answer_was_lost_keeps_the_lock(make_s3, aws) -> None:
    notes: list[str] = []
    store = make_s3(lease=30, renew_every=3600, on_notice=notes.append)
    with store.lock("apply"):
        lost = lose_the_next_answer(store.client)
        assert store._held.renew()  # S3 stored the renewal; its retry got 412
        assert lost.injected == {"timeout": 1}
        assert not store._held.lost.is_set(), notes
        assert store._held.renew()  # the next renewal is conditional on the right ETag
        store.check_lock()
    assert store.current_lock() is None and not notes
