"""S3 under moto, in process, for tests: fake credentials handed to the session (never the process's),
a bucket, and a record of every call fastuner sent (`AwsSession.observe`), to assert on what was sent
rather than on what moto stored."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastuner.aws.clients import AwsSession

REGION = "us-east-1"
BUCKET = "fastuner-test"
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
       "AWS_DEFAULT_REGION": REGION}
READS = frozenset({"HeadObject", "GetObject", "ListObjectsV2", "HeadBucket"})


class Calls(list):
    """Every call a session sent: (operation, params)."""

    def __call__(self, call: dict[str, Any]) -> None:
        self.append((call["operation"], dict(call["params"])))

    def ops(self, *names: str) -> list[str]:
        return [op for op, _ in self if not names or op in names]

    def params(self, name: str) -> list[dict[str, Any]]:
        return [params for op, params in self if op == name]

    @property
    def writes(self) -> list[str]:
        return [op for op, _ in self if op not in READS]

    @property
    def bytes_sent(self) -> int:
        return sum(len(p["Body"]) for op, p in self if op in ("PutObject", "UploadPart")
                   and isinstance(p.get("Body"), bytes | bytearray))


@contextmanager
def moto_s3(*buckets: str) -> Iterator[tuple[AwsSession, Calls]]:
    """A session on moto's S3 with `buckets` created (not recorded), and the calls it sends from then on."""
    from moto import mock_aws

    with mock_aws():
        session = AwsSession(REGION, environ=ENV)
        for bucket in buckets:
            session.client("s3").create_bucket(Bucket=bucket)
        calls = Calls()
        session.observe(calls)
        yield session, calls


def raw_s3(session: AwsSession) -> Any:
    """A client of the same moto backend that the session does not observe: what "someone else" does."""
    client = _RAW.get(session)
    if client is None:
        client = _RAW[session] = session.session.client("s3", region_name=REGION)
    return client


_RAW: weakref.WeakKeyDictionary[AwsSession, Any] = weakref.WeakKeyDictionary()


def answer(session: AwsSession, operation: str, code: str, status: int, *, times: int = 1,
           after: int = 0) -> list[dict[str, Any]]:
    """Make S3 answer `times` calls of `operation`, after letting the first `after` through, with an
    error, before anything reaches moto (as botocore.stub does, after botocore validated the call): for
    the answers moto never gives (409 ConditionalRequestConflict, AccessDenied). Returns the requests
    answered."""
    from botocore.awsrequest import AWSResponse

    seen: list[dict[str, Any]] = []
    answered: list[dict[str, Any]] = []

    def handler(params: dict[str, Any], **_: Any) -> Any:
        seen.append(params)
        if len(seen) <= after or len(answered) >= times:
            return None
        answered.append(params)
        parsed = {"Error": {"Code": code, "Message": f"injected {code}"},
                  "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}}}
        return AWSResponse("https://s3.test/", status, {}, None), parsed

    session.client("s3").meta.events.register(f"before-call.s3.{operation}", handler)
    return answered
