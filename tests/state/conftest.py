"""Fixtures for the state stores: moto in process, S3's clock as a test sets it, and both stores built
the same way so that one behavioural test runs against each."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from fastuner.aws.clients import AwsSession
from fastuner.state.local import LocalStateStore
from fastuner.state.s3 import S3StateStore

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "fastuner-state-test"
KEY = "teams/demo.json"


class S3Clock:
    """S3's clock as a test sets it: the `Date` header of every answer a store's client gets, `offset`
    seconds ahead of the real time. (moto in process sends no Date on success; S3 always does.)"""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def attach(self, store: S3StateStore) -> None:
        store.client.meta.events.register("after-call.s3", self._stamp)

    def _stamp(self, parsed: dict[str, Any], **_: Any) -> None:
        headers = parsed.setdefault("ResponseMetadata", {}).setdefault("HTTPHeaders", {})
        headers["date"] = formatdate(time.time() + self.offset, usegmt=True)


def raw_s3() -> Any:
    """A client of fastuner's own making, for writing behind a store's back."""
    return AwsSession("us-east-1", environ=ENV).client("s3")


@pytest.fixture
def aws():
    """moto in process, with a versioned bucket."""
    with mock_aws():
        s3 = raw_s3()
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield s3


@pytest.fixture
def make_s3(aws) -> Callable[..., S3StateStore]:
    """make_s3(key=..., clock=S3Clock(...), **store options): a store with its own session and client.
    `dated=False`: its answers carry no Date, as moto in process sends them."""

    def make(key: str = KEY, *, clock: S3Clock | None = None, dated: bool = True, bucket: str = BUCKET,
             **kw: Any) -> S3StateStore:
        store = S3StateStore(AwsSession("us-east-1", environ=ENV), bucket, key, **kw)
        if dated:
            (clock or S3Clock()).attach(store)
        return store

    return make


@pytest.fixture(params=["local", "s3"])
def make_store(request, tmp_path: Path) -> Callable[..., Any]:
    """Either store, each call another instance on the same state (as another process would open it)."""
    if request.param == "local":
        return lambda **kw: LocalStateStore(tmp_path / "state" / "demo.json", **kw)
    return request.getfixturevalue("make_s3")


class Calls(list):
    """What a session sent: (operation, parameters without the body)."""

    def __call__(self, call: dict[str, Any]) -> None:
        self.append((call["operation"], {k: v for k, v in call["params"].items() if k != "Body"}))

    def ops(self) -> list[str]:
        return [op for op, _ in self]


def answer(status: int, code: str, message: str = "") -> Callable[..., Any]:
    """A botocore `before-call` handler that answers in place of S3, as S3 answers an error."""

    class Http:
        status_code = status
        headers: dict[str, str] = {}
        content = b""

    def handler(**_: Any) -> tuple[Any, dict[str, Any]]:
        return Http(), {"Error": {"Code": code, "Message": message or code},
                        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}}}

    return handler
