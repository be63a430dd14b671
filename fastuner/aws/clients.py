"""The one place boto3 sessions and clients are made.

`AwsSession` honours, from the environment the composition root was handed (not `os.environ`, so
tests and `main(environ=...)` see the same thing): `AWS_PROFILE`, the static credentials variables,
the region (the spec's, else `AWS_REGION` / `AWS_DEFAULT_REGION`, else the profile's), `AWS_ENDPOINT_URL`
and `AWS_ENDPOINT_URL_<SERVICE>` (a moto server, a VPC endpoint), and `AWS_MAX_ATTEMPTS`. Clients use
botocore's adaptive retry mode (exponential backoff with jitter plus client-side rate limiting when AWS
throttles), so a throttling storm is absorbed before anything reaches the error mapper.

Every call can be observed: `FASTUNER_AWS_CALL_LOG=FILE` appends one JSON line per call (service,
operation and the parameters fastuner sent, before moto or AWS see them), and `observe(callback)` does
the same in process. `fastuner iam-policy` is checked against such a log, and tests assert on what was
sent rather than on what moto stored.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

DEFAULT_MAX_ATTEMPTS = 10
CALL_LOG_ENV = "FASTUNER_AWS_CALL_LOG"

Call = dict[str, Any]  # {"service": "s3", "operation": "PutObject", "params": {...}}


class AwsSession:
    """A boto3 session for one region, its clients made once and shared (boto3 clients are
    thread-safe; sessions are not, so clients are made under a lock)."""

    def __init__(self, region: str | None = None, *, environ: Mapping[str, str] | None = None,
                 profile: str | None = None, max_attempts: int | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        env = self.environ
        self.profile = profile or env.get("AWS_PROFILE") or None
        self._region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
        attempts = max_attempts or env.get("AWS_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS
        self.max_attempts = max(1, int(attempts))
        self._lock = threading.Lock()
        self._session: Any = None
        self._clients: dict[tuple[Any, ...], Any] = {}
        self._observers: list[Callable[[Call], None]] = []
        log = env.get(CALL_LOG_ENV)
        if log:
            self._observers.append(_FileLog(Path(log)))

    # --- the session -----------------------------------------------------------------------------

    @property
    def session(self) -> Any:
        if self._session is None:
            import boto3
            from botocore.exceptions import ProfileNotFound

            from fastuner.aws.errors import AwsError

            env = self.environ
            kwargs: dict[str, Any] = {}
            if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY") and not self.profile:
                kwargs.update(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                              aws_session_token=env.get("AWS_SESSION_TOKEN") or None)
            try:
                self._session = boto3.Session(profile_name=self.profile, region_name=self._region, **kwargs)
            except ProfileNotFound:
                raise AwsError(f"the AWS profile {self.profile!r} is not in your AWS config",
                               "List the profiles with `aws configure list-profiles`, or set AWS_PROFILE to one "
                               "of them (or unset it to use the default credentials).") from None
        return self._session

    @property
    def region(self) -> str:
        from fastuner.aws.errors import AwsError

        region = self._region or self.session.region_name
        if not region:
            raise AwsError("no AWS region is set",
                           "Set `region:` in fastuner.yaml, or AWS_REGION in the environment.")
        return region

    def client(self, service: str, *, max_attempts: int | None = None, read_timeout: float | None = None,
               max_pool_connections: int | None = None) -> Any:
        """The service's shared client. The keyword settings give a client of its own for callers that
        retry by themselves (`max_attempts=1`), wait longer than the default 70 s for an answer, or send
        more requests at once than botocore's pool of 10 (`fastuner invoke --batch`)."""
        key = (service, max_attempts, read_timeout, max_pool_connections)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = self._make(service, max_attempts=max_attempts,
                                                         read_timeout=read_timeout,
                                                         max_pool_connections=max_pool_connections)
            return client

    def _make(self, service: str, *, max_attempts: int | None = None, read_timeout: float | None = None,
              max_pool_connections: int | None = None) -> Any:
        from botocore.config import Config

        config = Config(
            region_name=self.region,
            # a caller that retries by itself gets no client-side rate limiting either (it would wait
            # inside botocore, where a Ctrl-C cannot stop it)
            retries={"mode": "standard" if max_attempts else "adaptive",
                     "total_max_attempts": max_attempts or self.max_attempts},
            user_agent_extra="fastuner",
            connect_timeout=10,
            read_timeout=read_timeout or 70,
            max_pool_connections=max_pool_connections or 10,
        )
        endpoint = endpoint_url(service, self.environ)
        client = self.session.client(service, config=config, endpoint_url=endpoint)
        client.meta.events.register("provide-client-params.*.*", self._provided)
        return client

    # --- observing calls --------------------------------------------------------------------------

    def observe(self, callback: Callable[[Call], None]) -> None:
        """`callback({"service", "operation", "params"})` for every call made from now on, with the
        parameters as fastuner sent them."""
        self._observers.append(callback)

    def _provided(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if not self._observers:
            return
        call = {"service": model.service_model.service_name, "signing_name": model.service_model.signing_name,
                "operation": model.name, "params": params}
        for observer in self._observers:
            observer(call)


def endpoint_url(service: str, environ: Mapping[str, str]) -> str | None:
    """`AWS_ENDPOINT_URL_<SERVICE>` (e.g. AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME), else
    `AWS_ENDPOINT_URL`, as the AWS SDKs define them."""
    specific = environ.get("AWS_ENDPOINT_URL_" + service.upper().replace("-", "_"))
    return specific or environ.get("AWS_ENDPOINT_URL") or None


def iam_action(call: Call) -> str:
    """The IAM action a call needs: `s3:PutObject`, `sagemaker:CreateTrainingJob`, `logs:GetLogEvents`.

    The prefix is the service's IAM namespace, which is not always its signing name (CloudWatch signs as
    `monitoring`, the tagging API as `tagging`). S3 authorises many operations under another action's
    name (HeadObject as s3:GetObject, ListObjectVersions as s3:ListBucketVersions, the parts of a
    multipart upload as s3:PutObject), and reading or deleting a given version is its own action."""
    prefix = call.get("signing_name") or call["service"]
    prefix = _IAM_PREFIXES.get(prefix, prefix)
    operation = call["operation"]
    if prefix == "s3":
        operation = _S3_ACTIONS.get(operation, operation)
        if operation in ("GetObject", "DeleteObject") and (call.get("params") or {}).get("VersionId"):
            operation += "Version"
    return f"{prefix}:{operation}"


# signing names (or, in call logs without one, service names) whose IAM namespace differs
_IAM_PREFIXES = {
    "monitoring": "cloudwatch",
    "tagging": "tag",
    "resourcegroupstaggingapi": "tag",
    "sagemaker-runtime": "sagemaker",
    "service-quotas": "servicequotas",
}

_S3_ACTIONS = {
    "HeadObject": "GetObject",
    "SelectObjectContent": "GetObject",
    "HeadBucket": "ListBucket",
    "ListObjectsV2": "ListBucket",
    "ListObjects": "ListBucket",
    "ListObjectVersions": "ListBucketVersions",
    "ListMultipartUploads": "ListBucketMultipartUploads",
    "ListParts": "ListMultipartUploadParts",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "UploadPartCopy": "PutObject",
    "CompleteMultipartUpload": "PutObject",
    "CopyObject": "PutObject",
    "DeleteObjects": "DeleteObject",
    "PutBucketEncryption": "PutEncryptionConfiguration",
    "GetBucketEncryption": "GetEncryptionConfiguration",
    "DeleteBucketEncryption": "PutEncryptionConfiguration",
    "PutPublicAccessBlock": "PutBucketPublicAccessBlock",
    "GetPublicAccessBlock": "GetBucketPublicAccessBlock",
    "DeletePublicAccessBlock": "PutBucketPublicAccessBlock",
    "PutBucketLifecycleConfiguration": "PutLifecycleConfiguration",
    "GetBucketLifecycleConfiguration": "GetLifecycleConfiguration",
    "DeleteBucketLifecycle": "PutLifecycleConfiguration",
    "DeleteBucketTagging": "PutBucketTagging",
}


class _FileLog:
    """Appends each call as one JSON line (O_APPEND: lines from threads and processes do not mix)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, call: Call) -> None:
        line = json.dumps({"service": call["service"], "signing_name": call.get("signing_name"),
                           "operation": call["operation"], "action": iam_action(call), "pid": os.getpid(),
                           "params": call["params"]}, default=_jsonable, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # requests: tags, names
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if hasattr(value, "read"):
        return "<stream>"
    return repr(value)
