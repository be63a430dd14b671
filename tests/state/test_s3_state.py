"""The S3 store against moto in process: what it sends (conditional writes, SSE-KMS), how it refuses a
state written behind its back (412), retries a 409, reads history from bucket versions, and its leased
lock: the refusal naming the holder and when the lease ends, takeover by S3's clock, renewal, a lost
lock, force-unlock. Time is S3's `Date` header as the test sets it (`S3Clock`); no test waits for a
lease of minutes."""

from __future__ import annotations

import contextlib
import json
import re
import time

import pytest

from fastuner.aws.errors import AwsError
from fastuner.errors import UserError
from fastuner.state.lease import lock_body
from fastuner.state.s3 import LOCK_PREFIX, lock_key, workspace_key
from fastuner.state.store import LockInfo, LockLostError, StateLockedError
from tests.state.conftest import BUCKET, KEY, Calls, S3Clock, answer
from tests.state.test_store_contract import a_state


def test_workspace_keys_and_the_lock_prefix() -> None:
    assert workspace_key("teams/demo.json", "default") == "teams/demo.json"
    assert workspace_key("teams/demo.json", "staging") == "teams/demo.staging.json"
    assert workspace_key("demo", "dev") == "demo.dev.json"
    assert lock_key("teams/demo.staging.json") == "fastuner-locks/teams/demo.staging.json.lock"
    assert all(lock_key(k).startswith(LOCK_PREFIX) for k in ("a.json", "x/y/z.json"))  # one lifecycle rule


# --- writing --------------------------------------------------------------------------------------------


def test_writes_are_conditional_on_what_was_read_and_encrypted(make_s3) -> None:
    store = make_s3(kms_key_id="alias/fastuner")
    calls = Calls()
    store.session.observe(calls)
    with store.lock("apply"):
        assert store.read() is None
        first = store.write(a_state())
        written = store._seen[0]  # the ETag S3 gave the first put
        store.write(first)
    puts = [p for op, p in calls if op == "PutObject" and p["Key"] == KEY]
    assert puts[0]["IfNoneMatch"] == "*" and "IfMatch" not in puts[0]
    assert puts[1]["IfMatch"] == written and "IfNoneMatch" not in puts[1]
    lock_puts = [p for op, p in calls if op == "PutObject" and p["Key"] == lock_key(KEY)]
    assert lock_puts[0]["IfNoneMatch"] == "*"
    for p in puts + lock_puts:
        assert (p["ServerSideEncryption"], p["SSEKMSKeyId"]) == ("aws:kms", "alias/fastuner")
    [release] = [p for op, p in calls if op == "DeleteObject"]
    assert release["Key"] == lock_key(KEY) and release["IfMatch"]


def test_a_write_behind_the_stores_back_is_refused_by_s3(make_s3, aws) -> None:
    store = make_s3()
    first = store.write(a_state())
    behind = first.model_copy(update={"serial": 2, "project": "edited"})
    aws.put_object(Bucket=BUCKET, Key=KEY, Body=behind.model_dump_json().encode())  # not through the store
    calls = Calls()
    store.session.observe(calls)
    with pytest.raises(UserError, match=r"changed underneath \(serial 2, expected 1\)"):
        store.write(first)
    assert calls.ops() == ["PutObject", "GetObject"]  # S3 refused the put (412); then what is there was read
    assert json.loads(aws.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())["project"] == "edited"


def test_a_state_deleted_underneath_is_not_silently_recreated(make_s3, aws) -> None:
    store = make_s3()
    first = store.write(a_state())
    aws.delete_object(Bucket=BUCKET, Key=KEY)
    with pytest.raises(UserError, match="deleted underneath"):
        store.write(first)


def test_the_first_write_refuses_a_state_created_meanwhile(make_s3) -> None:
    store, other = make_s3(), make_s3()
    assert store.read() is None
    other.write(a_state())
    with pytest.raises(UserError, match="another state lineage"):
        store.write(a_state())


def test_a_409_is_retried_after_reading_again(make_s3) -> None:
    store = make_s3()
    first = store.write(a_state())
    calls = Calls()
    store.session.observe(calls)
    conflict = answer(409, "ConditionalRequestConflict", "A conflicting conditional operation is in progress")
    once = [True]

    def first_put_conflicts(**kw):
        if once.pop() if once else False:
            return conflict(**kw)
        return None

    store.client.meta.events.register_first("before-call.s3.PutObject", first_put_conflicts)
    second = store.write(first)
    assert second.serial == 2 and make_s3().read() == second
    assert calls.ops() == ["PutObject", "GetObject", "PutObject"]
    assert calls[0][1]["IfMatch"] == calls[2][1]["IfMatch"]  # the object was still the one read


def test_a_409_when_the_state_moved_meanwhile_is_refused(make_s3) -> None:
    store, other = make_s3(), make_s3()
    first = store.write(a_state())

    def conflict_while_another_writes(**kw):
        other.write(other.read())
        return answer(409, "ConditionalRequestConflict")(**kw)

    store.client.meta.events.register_first("before-call.s3.PutObject", conflict_while_another_writes)
    with pytest.raises(UserError, match=r"changed underneath \(serial 2, expected 1\)"):
        store.write(first)


def test_409s_that_never_stop_are_an_error_not_a_loop(make_s3) -> None:
    store = make_s3()
    first = store.write(a_state())
    store.client.meta.events.register_first("before-call.s3.PutObject", answer(409, "ConditionalRequestConflict"))
    with pytest.raises(UserError, match="kept answering 409"):
        store.write(first)


# --- reading, history, errors ----------------------------------------------------------------------------


def test_history_is_the_bucket_versions_newest_first(make_s3) -> None:
    store = make_s3()
    s = store.write(a_state())
    for _ in range(3):
        s = store.write(s)
    history = list(store.history())
    assert [h.serial for _, h in history] == [3, 2, 1]
    assert all(re.fullmatch(rf"s3://{BUCKET}/{KEY}\?versionId=\S+", where) for where, _ in history)


def test_without_versioning_a_notice_says_no_history_is_kept(make_s3, aws) -> None:
    aws.create_bucket(Bucket="unversioned-state")
    notes: list[str] = []
    store = make_s3(bucket="unversioned-state", on_notice=notes.append)
    s = store.write(a_state())
    store.write(s)
    assert len(notes) == 1 and "versioning is off on the S3 bucket unversioned-state" in notes[0]  # on creation
    assert list(store.history()) == []
    assert len(notes) == 2 and "put-bucket-versioning" in notes[1]


def test_a_damaged_state_object_points_at_the_bucket_versions(make_s3, aws) -> None:
    aws.put_object(Bucket=BUCKET, Key=KEY, Body=b"{oops")
    with pytest.raises(UserError, match="not valid JSON") as info:
        make_s3().read()
    assert f"list-object-versions --bucket {BUCKET}" in info.value.diagnostics[0].detail
    assert "state push" in info.value.diagnostics[0].detail


def test_aws_failures_are_explained(make_s3) -> None:
    with pytest.raises(AwsError, match="the S3 bucket no-such-bucket does not exist") as info:
        make_s3(bucket="no-such-bucket").read()
    assert "fastuner bootstrap" in info.value.hint
    store = make_s3()
    store.client.meta.events.register_first("before-call.s3.PutObject", answer(
        403, "AccessDenied", "User: arn:aws:iam::1:user/ci is not authorized to perform: s3:PutObject on "
                             f"resource: arn:aws:s3:::{BUCKET}/{KEY}"))
    with pytest.raises(AwsError, match=r"writing the state .*: access denied: s3:PutObject on arn:aws:s3:::"):
        store.write(a_state())


# --- the lock ----------------------------------------------------------------------------------------------


def dead_lock(s3, lease: float = 60.0) -> tuple[LockInfo, str]:
    """A lock left by a holder that is gone (its process, its CI job): written once, never renewed."""
    info = LockInfo(id="11111111-2222-3333-4444-555555555555", operation="apply (cancelled CI job)",
                    who="ci@runner-7", host="runner-7", pid=4242, created="2025-01-01T00:00:00+00:00", lease=lease)
    put = s3.put_object(Bucket=BUCKET, Key=lock_key(KEY), Body=lock_body(info, 0))
    return info, put["ETag"]


def test_a_refusal_says_when_the_lease_ends(make_s3, aws) -> None:
    held, _ = dead_lock(aws, lease=120)
    with pytest.raises(StateLockedError) as refused, make_s3().lock("apply"):
        pass
    detail = refused.value.diagnostics[0].detail
    assert "held by: ci@runner-7 (pid 4242)" in detail and "for:     apply (cancelled CI job)" in detail
    m = re.search(r"lease:   ends (\d\d:\d\d:\d\d) UTC \(in (\d+m\d+s|\d+m)\) unless its holder renews it; if the "
                  r"holder is gone, fastuner takes the lock over then", detail)
    assert m and m.group(2) in ("2m1s", "2m", "2m0s", "1m59s"), detail
    assert f"force-unlock {held.id}" in detail
    assert aws.get_object(Bucket=BUCKET, Key=lock_key(KEY))["Body"].read() == lock_body(held, 0)  # untouched


def test_without_s3s_clock_a_lock_is_not_taken_over(make_s3, aws) -> None:
    """This machine's clock is never the judge: with no Date from S3 the lease cannot be seen to end."""
    dead_lock(aws, lease=0.001)
    with pytest.raises(StateLockedError) as refused, make_s3(dated=False).lock("apply"):
        pass
    assert "the store did not say its time" in refused.value.diagnostics[0].detail


def test_a_lock_whose_lease_ended_is_taken_over_by_s3s_clock(make_s3, aws) -> None:
    _, etag = dead_lock(aws, lease=60)
    notes: list[str] = []
    early = make_s3(clock=S3Clock(offset=30))  # S3 says 30 s later: the lease still runs
    with pytest.raises(StateLockedError), early.lock("apply"):
        pass
    store = make_s3(clock=S3Clock(offset=62), on_notice=notes.append)  # past lease + 1 s of clock resolution
    calls = Calls()
    store.session.observe(calls)
    with store.lock("apply") as info:
        assert store.current_lock().id == info.id
    [notice] = notes
    assert "took over the state lock of ci@runner-7 (pid 4242, apply (cancelled CI job)" in notice
    assert "without being renewed" in notice
    takeover = [p for op, p in calls if op == "PutObject"][1]
    assert takeover["IfMatch"] == etag  # only that expired lock, not one renewed or taken meanwhile


def test_of_two_runs_taking_over_one_lock_one_wins(make_s3, aws) -> None:
    dead_lock(aws, lease=60)
    later = S3Clock(offset=62)
    winner, loser = make_s3(clock=later), make_s3(clock=later)
    held = contextlib.ExitStack()

    def winner_takes_it_between_read_and_put(http_response, parsed, model, **_):
        if model.name == "GetObject" and not held._exit_callbacks:
            held.enter_context(winner.lock("apply (winner)"))

    loser.client.meta.events.register("after-call.s3.GetObject", winner_takes_it_between_read_and_put)
    calls = Calls()
    loser.session.observe(calls)
    with held, pytest.raises(StateLockedError) as refused, loser.lock("apply (loser)"):
        pass
    assert "apply (winner)" in refused.value.diagnostics[0].detail
    # the loser read the expired lock, lost its conditional takeover (412), read again: the winner's, alive
    assert calls.ops() == ["PutObject", "GetObject", "PutObject", "PutObject", "GetObject"]


def test_renewal_keeps_a_lock_past_its_lease(make_s3, aws) -> None:
    store = make_s3(lease=1.0, renew_every=0.2)
    with store.lock("apply") as info:
        first = aws.head_object(Bucket=BUCKET, Key=lock_key(KEY))
        time.sleep(2.6)  # longer than lease + clock resolution: without renewal it would be taken over
        with pytest.raises(StateLockedError) as refused, make_s3().lock("apply"):
            pass
        assert refused.value.info.id == info.id and refused.value.info.lease_left > 0
        store.check_lock()
        body = json.loads(aws.get_object(Bucket=BUCKET, Key=lock_key(KEY))["Body"].read())
        assert body["renewals"] >= 5 and body["lease"] == 1.0
        assert aws.head_object(Bucket=BUCKET, Key=lock_key(KEY))["LastModified"] > first["LastModified"]
    assert store.current_lock() is None


def test_a_lock_taken_over_is_lost_and_says_by_whom(make_s3, aws) -> None:
    notes: list[str] = []
    store = make_s3(lease=30, renew_every=0.05, on_notice=notes.append)
    with store.lock("apply"):
        lease = store._held
        with make_s3(clock=S3Clock(offset=40)).lock("apply (taker)") as taker:  # the holder looked dead to S3
            assert lease.lost.wait(5)
            with pytest.raises(LockLostError) as lost:
                store.check_lock()
            summary = lost.value.diagnostics[0].summary
            assert summary.startswith(f"lost the state lock on s3://{BUCKET}/{KEY}: it was taken over by ")
            assert f"apply (taker), lock ID {taker.id}" in summary and summary.endswith("nothing new was started")
        assert any("lost the state lock" in n for n in notes)
    assert store.current_lock() is None  # the taker released its own; the loser deleted nothing


def test_a_lock_that_cannot_be_renewed_for_its_lease_is_lost(make_s3, aws) -> None:
    store = make_s3(lease=0.6, renew_every=0.1)
    with store.lock("apply"):
        store.client.meta.events.register_first("before-call.s3.PutObject", answer(503, "SlowDown"))
        assert store._held.lost.wait(5)
        with pytest.raises(LockLostError, match=r"could not be renewed for .*longer than its lease"):
            store.check_lock()


def test_check_lock_needs_no_renewal_thread_to_notice_an_old_lease(make_s3) -> None:
    """A renewal stuck in a long retry must not keep the engine starting work past the lease."""
    store = make_s3(lease=0.3, renew_every=3600)
    with store.lock("apply"):
        store.check_lock()
        time.sleep(0.4)
        with pytest.raises(LockLostError, match="not renewed for"):
            store.check_lock()


def test_force_unlock_is_conditional_and_the_holder_learns_it(make_s3, aws) -> None:
    notes: list[str] = []
    store = make_s3(lease=30, renew_every=0.05, on_notice=notes.append)
    admin = make_s3()
    calls = Calls()
    admin.session.observe(calls)
    with store.lock("apply") as info:
        assert admin.force_unlock(info.id).id == info.id
        assert store._held.lost.wait(5)
        with pytest.raises(LockLostError, match="released by someone else"):
            store.check_lock()
    [delete] = [p for op, p in calls if op == "DeleteObject"]
    assert delete["IfMatch"] and delete["Key"] == lock_key(KEY)


def test_the_lock_object_records_the_lease(make_s3, aws) -> None:
    with make_s3(lease=90).lock("apply") as info:
        body = json.loads(aws.get_object(Bucket=BUCKET, Key=lock_key(KEY))["Body"].read())
    assert body == {**info.to_dict(), "lease": 90.0, "renewals": 0}
    assert "lease" not in LockInfo.new("apply").to_dict()  # the local store's lock file is as it was
