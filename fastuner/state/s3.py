"""The S3 state backend: one object per project and workspace, written conditionally, and a leased lock.

State. `read` remembers the ETag of what it read; `write` puts the next serial with `IfMatch` on that
ETag (`IfNoneMatch="*"` when there was no object), so a lost update is impossible: a 412 means another
writer got there first, and the write is refused as the local store refuses a moved serial. A conditional
write racing another may get S3's 409 `ConditionalRequestConflict`: the store reads again and retries if
what is there is still what it read. Bucket versioning keeps the earlier versions (`history`); a bucket
without it gets a notice, not an error. `kms_key_id` encrypts the state and the lock with SSE-KMS.
A conditional put whose answer was lost (a timeout or reset after S3 carried it out) is retried by
botocore and refused (412) because it already happened: the state write knows its own by an ID in the
object's metadata, the lock by its unique body, and both carry on rather than fail.

Lock. A separate object, `lock_key(key)`, under one prefix for the whole bucket, `LOCK_PREFIX`, so that a
single lifecycle rule expires the old versions its renewals leave in a versioned bucket (`fastuner
bootstrap` writes that rule); the lease itself is in `fastuner/state/lease.py`. Releasing and
`force-unlock` delete with `IfMatch` on the lock's ETag: S3 supports conditional deletes in general
purpose buckets (with an ETag they need s3:GetObject besides s3:DeleteObject), and moto 5.2.6 honours
them too (412 on another ETag, 404 on a key that is gone), so the tests exercise the real path.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import PurePosixPath
from typing import Any

from fastuner.aws.errors import aws_errors, error_code, is_conditional_conflict, is_precondition_failed
from fastuner.errors import UserError
from fastuner.state.lease import DEFAULT_LEASE_S, Lease, LockGone, elapsed, lock_body
from fastuner.state.model import State
from fastuner.state.store import LockInfo, StateLockedError, parse_state, serialize_state

# Every lock of a bucket lives under this prefix: one lifecycle rule on it expires the versions that
# lease renewals leave behind (and the delete markers of released locks).
LOCK_PREFIX = "fastuner-locks/"
CLOCK_SLACK_S = 1.0  # S3's Date and Last-Modified have one-second resolution: a lease ends a second later
CONFLICT_RETRIES = 5  # 409 ConditionalRequestConflict answers in a row before a write gives up
CHANGING_HANDS = 20  # lock attempts that lose a race before `lock` gives up
# User metadata on each state put: an ID of that write. A put whose answer was lost (a read timeout, a
# connection reset after S3 carried it out) is retried by botocore, and S3 refuses the retry (412): the
# ID tells the store's own write from another run's, which may have written the very same bytes.
WRITE_ID = "fastuner-write-id"


def workspace_key(key: str, workspace: str) -> str:
    """The state object's key in a workspace: "default" keeps `key`; another is `stem.<workspace>.json`
    beside it, as the local store names its files."""
    if workspace == "default":
        return key
    path = PurePosixPath(key)
    return str(path.with_name(f"{path.stem}.{workspace}{path.suffix or '.json'}"))


def lock_key(state_key: str) -> str:
    """Where the lock of the state at `state_key` lives: `fastuner-locks/<state key>.lock`."""
    return f"{LOCK_PREFIX}{state_key}.lock"


class S3StateStore:
    def __init__(self, session: Any, bucket: str, key: str, *, kms_key_id: str | None = None,
                 on_notice: Callable[[str], None] | None = None, lock_timeout: float = 0.0,
                 lease: float = DEFAULT_LEASE_S, renew_every: float | None = None) -> None:
        if lease <= 0:
            raise ValueError("a lock lease must be positive")
        self.session = session
        self.bucket = bucket
        self.key = key
        self.lock_key = lock_key(key)
        self.location = f"s3://{bucket}/{key}"
        self.lock_location = f"s3://{bucket}/{self.lock_key}"
        self.kms_key_id = kms_key_id
        self.lock_timeout = lock_timeout
        self.lease = lease
        self.renew_every = renew_every if renew_every is not None else lease / 3
        self._notice = on_notice or (lambda msg: None)
        self._seen: tuple[str | None, str, int] | None = None  # ETag (None: no object), lineage, serial
        self._held: Lease | None = None

    @property
    def client(self) -> Any:
        return self.session.client("s3")

    # --- reading and writing -------------------------------------------------------------------

    def read(self) -> State | None:
        with aws_errors(f"reading the state {self.location}", "s3"):
            got = self._get(self.key)
        if got is None:
            self._seen = (None, "", 0)
            return None
        state = self._parse(got["Body"], self.location)
        self._seen = (got["ETag"], state.lineage, state.serial)
        return state

    def write(self, state: State) -> State:
        """Put `state` with serial + 1, on condition that the object is still the version last read
        (which must be at `state.serial`)."""
        etag, lineage, serial = self._seen if self._seen is not None else self._read_seen()
        if etag is not None:
            if lineage != state.lineage:
                raise UserError(f"refusing to overwrite {self.location}: it belongs to another state lineage",
                                f"stored: {lineage}, writing: {state.lineage}")
            if serial != state.serial:
                raise UserError(f"refusing to overwrite {self.location}: it changed underneath "
                                f"(serial {serial}, expected {state.serial})",
                                "Another process wrote it without holding the lock.")
        new = state.model_copy(update={"serial": state.serial + 1})
        self._put_state(new, etag, state.serial)
        return new

    def push(self, state: State, *, over: State | None) -> State:
        etag, lineage, serial = self._seen if self._seen is not None else self._read_seen()
        if (lineage, serial) != ((over.lineage, over.serial) if over is not None else ("", 0)) or \
                (etag is None) != (over is None):
            raise UserError(f"refusing to overwrite {self.location}: it changed while pushing",
                            "Another process wrote it without holding the lock; run `state push` again.")
        self._put_state(state, etag, over.serial if over is not None else 0)
        return state

    def history(self) -> Iterator[tuple[str, State]]:
        """The earlier versions of the state, newest first (bucket versioning; none without it)."""
        with aws_errors(f"listing the versions of {self.location}", "s3"):
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            if status != "Enabled":
                self._notice(_versioning_notice(self.bucket, status))
            versions = []
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=self.key)
            for page in pages:
                versions += [v for v in page.get("Versions", []) if v["Key"] == self.key and not v["IsLatest"]]
        versions.sort(key=lambda v: v["LastModified"], reverse=True)
        for v in versions:
            where = f"{self.location}?versionId={v['VersionId']}"
            with aws_errors(f"reading {where}", "s3"):
                got = self._get(self.key, VersionId=v["VersionId"])
            if got is not None:
                yield where, self._parse(got["Body"], where)

    def _read_seen(self) -> tuple[str | None, str, int]:
        self.read()
        assert self._seen is not None
        return self._seen

    def _put_state(self, new: State, etag: str | None, expected: int) -> None:
        """Put `new` where the object with `etag` is (None: where there is none). A 412 is refused with
        what changed; a 409 is retried while the object is still the one expected."""
        body = serialize_state(new).encode("utf-8")
        token = uuid.uuid4().hex  # this write's, to know it again (`_refuse_moved`)
        created = etag is None
        for attempt in range(CONFLICT_RETRIES):
            condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
            with aws_errors(f"writing the state {self.location}", "s3"):
                try:
                    put = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body,
                                                 ContentType="application/json", Metadata={WRITE_ID: token},
                                                 **condition, **self._sse())
                except _client_error() as exc:
                    if is_conditional_conflict(exc):
                        if self._changed_since(etag):
                            self._refuse_moved(new, expected, token)
                        time.sleep(0.025 * 2 ** attempt)
                        continue
                    if not (is_precondition_failed(exc) or _no_such_key(exc)):
                        raise
                    put = {"ETag": self._refuse_moved(new, expected, token)}
            self._seen = (put["ETag"], new.lineage, new.serial)
            if created:
                self._check_versioning()
            return
        raise UserError(f"could not write the state {self.location}: S3 kept answering 409 "
                        "ConditionalRequestConflict (other writes to it at the same time)",
                        "Nothing was overwritten. Run the command again.")

    def _changed_since(self, etag: str | None) -> bool:
        got = self._get(self.key)
        return (got["ETag"] if got is not None else None) != etag

    def _refuse_moved(self, new: State, expected: int, token: str) -> str:
        """The conditional put was refused: read what is there now and say how it differs. Unless it was
        put by this very write (its `token`), whose answer was lost and whose retry S3 refused: then the
        write happened, and the object's ETag is returned."""
        with aws_errors(f"reading the state {self.location}", "s3"):
            got = self._get(self.key)
        if got is not None and (got.get("Metadata") or {}).get(WRITE_ID) == token:
            return str(got["ETag"])
        current = self._parse(got["Body"], self.location) if got is not None else None
        if current is None:
            raise UserError(f"refusing to write {self.location}: it was deleted underneath",
                            "Another process deleted the state while this one was working; restore it from "
                            "the bucket's versions, or push it back with `fastuner state push`.")
        if current.lineage != new.lineage:
            raise UserError(f"refusing to overwrite {self.location}: it belongs to another state lineage",
                            f"stored: {current.lineage}, writing: {new.lineage}")
        raise UserError(f"refusing to overwrite {self.location}: it changed underneath "
                        f"(serial {current.serial}, expected {expected})",
                        "Another process wrote it without holding the lock.")

    def _check_versioning(self) -> None:
        """Said once, when the state object is created: without versioning, no earlier version is kept."""
        try:
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        except _client_error():  # not allowed to ask: the state is written all the same
            return
        if status != "Enabled":
            self._notice(_versioning_notice(self.bucket, status))

    def _parse(self, body: bytes, where: str) -> State:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"the state at {where} is not UTF-8 text") from None
        return parse_state(text, where, restore=(
            "Earlier versions are kept by bucket versioning (`aws s3api list-object-versions --bucket "
            f"{self.bucket} --prefix {self.key}`): download one and put it back with `fastuner state push --force`."))

    # --- the lock --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, operation: str) -> Iterator[LockInfo]:
        info = LockInfo.new(operation, self.location, lease=self.lease)
        lease = self._acquire_waiting(info)
        self._held = lease
        try:
            yield info
        finally:
            self._held = None
            lease.release()

    def check_lock(self) -> None:
        if self._held is not None:
            self._held.check()

    def current_lock(self) -> LockInfo | None:
        with aws_errors(f"reading the state lock {self.lock_location}", "s3"):
            held = self._read_lock()
        return held[0] if held is not None else None

    def force_unlock(self, lock_id: str) -> LockInfo:
        """Delete the lock with `IfMatch` on the ETag read: a lock renewed meanwhile is read again (and
        released if it is still `lock_id`); one taken by another run is not touched."""
        with aws_errors(f"releasing the state lock {self.lock_location}", "s3"):
            for _ in range(CONFLICT_RETRIES):
                held = self._read_lock()
                if held is None:
                    raise UserError(f"the state at {self.location} is not locked")
                info, etag = held
                if info.id != lock_id:
                    raise UserError(f"lock ID {lock_id} does not match the lock on {self.location}", info.describe())
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=self.lock_key, IfMatch=etag)
                except _client_error() as exc:
                    if is_precondition_failed(exc) or is_conditional_conflict(exc):
                        continue  # renewed while we looked: read it again
                    if _no_such_key(exc):
                        return info  # released by its holder meanwhile
                    raise
                return info
        raise UserError(f"could not release the lock on {self.location}: it kept changing while fastuner tried",
                        "Its holder is renewing it, so it is probably still running. Nothing was released.")

    def _acquire_waiting(self, info: LockInfo) -> Lease:
        """Retry a held lock until `lock_timeout` runs out (backing off up to 2 s between tries), then
        refuse naming the holder. A lock whose lease ended is taken over by `_acquire` without waiting."""
        deadline = time.monotonic() + self.lock_timeout
        delay, told = 0.1, False
        while True:
            try:
                return self._acquire(info)
            except StateLockedError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise (exc.waited(self.lock_timeout) if self.lock_timeout else exc) from None
                if not told:
                    told = True
                    held = exc.info
                    ends = f"; its lease ends in {_duration(held.lease_left)}" if held.lease_left else ""
                    self._notice(f"the state is locked by {held.who} (pid {held.pid}, {held.operation}){ends}; "
                                 "waiting for it (--lock-timeout)")
                time.sleep(min(delay, left))
                delay = min(delay * 2, 2.0)

    def _acquire(self, info: LockInfo) -> Lease:
        body = lock_body(info, 0)
        with aws_errors(f"taking the state lock {self.lock_location}", "s3"):
            for _ in range(CHANGING_HANDS):
                sent = elapsed()
                try:
                    put = self._put_lock(body, IfNoneMatch="*")
                    return self._start(info, put["ETag"], sent)
                except _client_error() as exc:
                    if is_conditional_conflict(exc):
                        time.sleep(0.05)
                        continue
                    if not is_precondition_failed(exc):
                        raise
                held = self._read_lock()
                if held is None:
                    continue  # released meanwhile
                holder, etag = held
                if holder.id == info.id:  # this put's own lock: its answer was lost, and the retry refused
                    return self._start(info, etag, sent)
                if holder.lease_left is None or holder.lease_left > 0:
                    raise StateLockedError(holder, self.location, stale_hint=(
                        "If its holder is gone, fastuner takes the lock over when the lease ends; to release "
                        f"it sooner (only when you are sure it is not running): fastuner force-unlock {holder.id}"))
                sent = elapsed()
                try:  # on condition that it is still the expired lock: of two takers, one wins
                    put = self._put_lock(body, IfMatch=etag)
                except _client_error() as exc:
                    if is_precondition_failed(exc) or is_conditional_conflict(exc) or _no_such_key(exc):
                        continue
                    raise
                self._notice(f"took over the state lock of {holder.who} (pid {holder.pid}, {holder.operation}, "
                             f"since {holder.created}): its lease ended {_duration(-holder.lease_left)} ago "
                             "without being renewed")
                return self._start(info, put["ETag"], sent)
        raise UserError(f"could not take the lock on {self.location}: it keeps changing hands")

    def _start(self, info: LockInfo, etag: str, sent: float) -> Lease:
        lease = Lease(info, etag, renewed_at=sent, every=self.renew_every, put=self._renew_lock,
                      delete=self._release_lock, holder=self._holder_now, location=self.location,
                      notice=self._notice)
        lease.start()
        return lease

    def _renew_lock(self, body: bytes, etag: str) -> str:
        with aws_errors(f"renewing the state lock {self.lock_location}", "s3"):
            try:
                return self._put_lock(body, IfMatch=etag)["ETag"]
            except _client_error() as exc:
                if is_precondition_failed(exc) or _no_such_key(exc):
                    written = self._own_write(self.lock_key, body)
                    if written is not None:
                        return written
                    raise LockGone from None
                raise

    def _release_lock(self, etag: str) -> None:
        with aws_errors(f"releasing the state lock {self.lock_location}", "s3"):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self.lock_key, IfMatch=etag)
            except _client_error() as exc:
                if is_precondition_failed(exc) or _no_such_key(exc):
                    raise LockGone from None
                raise

    def _holder_now(self) -> str:
        with aws_errors(f"reading the state lock {self.lock_location}", "s3"):
            held = self._read_lock()
        if held is None:
            return "it was released by someone else (force-unlock)"
        info = held[0]
        return f"it was taken over by {info.who} (pid {info.pid}, {info.operation}, lock ID {info.id})"

    def _read_lock(self) -> tuple[LockInfo, str] | None:
        """The lock and its ETag, with when its lease ends by S3's clock: `Last-Modified` (the holder's
        last renewal) plus the lease, against the `Date` of the same answer."""
        got = self._get(self.lock_key)
        if got is None:
            return None
        try:
            info = LockInfo.from_json(got["Body"].decode("utf-8"))
        except (ValueError, KeyError, TypeError):
            info = LockInfo(id="unknown", operation="unknown (the lock object is not fastuner's)", who="unknown",
                            host="", pid=-1, created="")
        lease = info.lease if info.lease > 0 else DEFAULT_LEASE_S
        ends = got["LastModified"] + timedelta(seconds=lease + CLOCK_SLACK_S)
        now = s3_date(got)
        left = (ends - now).total_seconds() if now is not None else None
        return LockInfo(**{**info.to_dict(), "lease": lease}, lease_ends=ends.isoformat(), lease_left=left), got["ETag"]

    def _own_write(self, key: str, body: bytes) -> str | None:
        """After a conditional put of the lock was refused: the object's ETag if it holds exactly `body`,
        else None. Every lock body is unique (its ID and renewal count), so finding it there means the
        refused put was a retry of this one's own, whose first attempt S3 carried out."""
        got = self._get(key)
        return got["ETag"] if got is not None and got["Body"] == body else None

    def _put_lock(self, body: bytes, **condition: str) -> dict[str, Any]:
        return self.client.put_object(Bucket=self.bucket, Key=self.lock_key, Body=body,
                                      ContentType="application/json", **condition, **self._sse())

    # --- S3 ------------------------------------------------------------------------------------

    def _get(self, key: str, **kw: str) -> dict[str, Any] | None:
        """GET an object: its bytes, ETag, Last-Modified and the answer's headers; None if there is none."""
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=key, **kw)
        except _client_error() as exc:
            if _no_such_key(exc):
                return None
            raise
        with contextlib.closing(got["Body"]) as stream:
            return {**got, "Body": stream.read()}

    def _sse(self) -> dict[str, str]:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id} if self.kms_key_id else {}


def s3_date(response: dict[str, Any]) -> datetime | None:
    """S3's clock: the `Date` header of its answer (None if it sent none)."""
    date = ((response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}).get("date")
    if not date:
        return None
    try:
        return parsedate_to_datetime(date).astimezone(UTC)
    except (TypeError, ValueError):
        return None


def _no_such_key(exc: BaseException) -> bool:
    """The object is not there (a GET, or an `IfMatch` on a key that is gone); a missing bucket is not this."""
    return error_code(exc) in ("NoSuchKey", "404")


def _client_error() -> type[Exception]:
    from botocore.exceptions import ClientError

    return ClientError


def _versioning_notice(bucket: str, status: str | None) -> str:
    return (f"versioning is {'suspended' if status == 'Suspended' else 'off'} on the S3 bucket {bucket}: earlier "
            "versions of the state are not kept. Enable it with `aws s3api put-bucket-versioning --bucket "
            f"{bucket} --versioning-configuration Status=Enabled` (`fastuner bootstrap` does).")


def _duration(seconds: float | None) -> str:
    from fastuner.config.duration import format_duration

    return format_duration(timedelta(seconds=max(0.0, seconds or 0.0)))
