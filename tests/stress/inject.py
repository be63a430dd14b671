"""Fault injection into fastuner's AWS calls, for the stress harness and the fault tests (issue 12).

A botocore `before-send` handler, registered on every client fastuner's `AwsSession` makes, answers a
share of the calls itself instead of sending them:

- `throttle`: a 400 `ThrottlingException` (S3: a 503 `SlowDown`), what AWS answers a burst of calls;
- `500`: a 500 `InternalFailure` (S3: `InternalError`);
- `timeout`: the request IS sent and carried out, then its answer is lost (`ReadTimeoutError`): the
  case that tests idempotence, since a retry repeats a call that already happened;
- `reset`: the connection is reset before the request arrives (`ConnectionClosedError`);
- named faults for one operation: `quota` (400 `ResourceLimitExceeded`, as SageMaker refuses a job over
  the account's instance quota) and `denied` (403 `AccessDenied`).

Nothing in fastuner reads the settings: the test-support entry point `python -m tests.stress.faultcli
ARGS…` (the CLI with the handler installed) reads them from `FASTUNER_FAULTS`, and in-process tests call
`install(FaultPlan(...))`. The string form is

    share:0.2,seed:7,kinds:throttle,500,timeout,reset,ops:CreateTrainingJob,log:/tmp/faults.jsonl

(a bare word continues the list of the key before it; `ops` limits the faults to those operations,
`skip` spares some, `log` appends one JSON line per fault injected, so a parent process can count them).
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV = "FASTUNER_FAULTS"
NETWORK = ("timeout", "reset")  # kinds that need no answer body, so fit every protocol
KINDS = ("throttle", "500", *NETWORK, "quota", "denied")
QUOTA_MESSAGE = ("The account-level service limit '{instance} for {use} usage' is 0 Instances, with current "
                 "utilization of 0 Instances and a request delta of 1 Instances. Please use AWS Service Quotas "
                 "to request an increase for this quota. If AWS Service Quotas is not available, contact AWS "
                 "support to request an increase for this quota.")


@dataclass
class FaultPlan:
    """Which calls fail, and how."""

    share: float = 0.2
    kinds: tuple[str, ...] = ("throttle", "500", "timeout", "reset")
    seed: int = 0
    ops: frozenset[str] = frozenset()  # only these operations ("" = all)
    skip: frozenset[str] = frozenset()  # never these
    log: Path | None = None
    quota: str = "ml.g5.xlarge for spot training job"  # the quota a `quota` fault names
    limit: int | None = None  # at most this many faults (per process)

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        values: dict[str, list[str]] = {}
        key = ""
        for token in (t.strip() for t in text.split(",")):
            if not token:
                continue
            if ":" in token and token.split(":", 1)[0] in _KEYS:
                key, _, token = token.partition(":")
                values[key] = []
            if not key:
                raise ValueError(f"{ENV}: {token!r} comes before any key ({', '.join(_KEYS)})")
            values[key].append(token)
        plan = cls()
        if "share" in values:
            plan.share = float(values["share"][0])
        if "seed" in values:
            plan.seed = int(values["seed"][0])
        if "kinds" in values:
            unknown = set(values["kinds"]) - set(KINDS)
            if unknown:
                raise ValueError(f"{ENV}: unknown kinds {sorted(unknown)}; choose from {KINDS}")
            plan.kinds = tuple(values["kinds"])
        plan.ops = frozenset(values.get("ops", ()))
        plan.skip = frozenset(values.get("skip", ()))
        if "log" in values:
            plan.log = Path(values["log"][0])
        if "quota" in values:
            plan.quota = " ".join(values["quota"])
        if "limit" in values:
            plan.limit = int(values["limit"][0])
        return plan

    def to_env(self) -> str:
        parts = [f"share:{self.share}", f"seed:{self.seed}", "kinds:" + ",".join(self.kinds)]
        if self.ops:
            parts.append("ops:" + ",".join(sorted(self.ops)))
        if self.skip:
            parts.append("skip:" + ",".join(sorted(self.skip)))
        if self.log:
            parts.append(f"log:{self.log}")
        if self.quota != FaultPlan.quota:
            parts.append(f"quota:{self.quota}")
        if self.limit is not None:
            parts.append(f"limit:{self.limit}")
        return ",".join(parts)


_KEYS = ("share", "seed", "kinds", "ops", "skip", "log", "quota", "limit")


@dataclass
class Injector:
    """The handler: decides per call (under a lock, one seeded generator per process) and counts."""

    plan: FaultPlan
    injected: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.plan.seed)  # threads still interleave as they will
        self._lock = threading.Lock()
        self._http: Any = None
        self._deciding = 0  # chosen, not yet counted

    def attach(self, client: Any) -> None:
        """Register on one client (its protocol decides what an error answer looks like)."""
        model = client.meta.service_model
        protocol = model.protocol

        def handler(request: Any, event_name: str = "", **_: Any) -> Any:
            operation = event_name.rsplit(".", 1)[-1]
            kind = self._choose(operation, protocol)
            if kind is None:
                return None
            self._record(model.service_name, operation, kind)
            return self._fail(kind, request, protocol, event_name)

        client.meta.events.register_first("before-send.*.*", handler)

    def _choose(self, operation: str, protocol: str) -> str | None:
        plan = self.plan
        if (plan.ops and operation not in plan.ops) or operation in plan.skip:
            return None
        kinds = [k for k in plan.kinds if k in NETWORK or protocol in _BODIES]
        if not kinds:
            return None
        with self._lock:
            if plan.limit is not None and sum(self.injected.values()) + self._deciding >= plan.limit:
                return None
            if self._rng.random() >= plan.share:
                return None
            self._deciding += 1
            return self._rng.choice(kinds)

    def _record(self, service: str, operation: str, kind: str) -> None:
        with self._lock:
            self.injected[kind] = self.injected.get(kind, 0) + 1
            self._deciding -= 1
        if self.plan.log is not None:
            line = json.dumps({"service": service, "operation": operation, "kind": kind, "pid": os.getpid()})
            fd = os.open(self.plan.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)

    def _fail(self, kind: str, request: Any, protocol: str, event_name: str) -> Any:
        from botocore.awsrequest import AWSResponse
        from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

        if kind == "reset":
            raise ConnectionClosedError(endpoint_url=request.url)
        if kind == "timeout":
            self._send(request, event_name)  # it happened; only the answer is lost
            raise ReadTimeoutError(endpoint_url=request.url)
        status, code, message = _ERRORS[kind]
        if kind == "throttle" and protocol == "rest-xml":
            status, code = 503, "SlowDown"
        if kind == "quota":
            message = QUOTA_MESSAGE.format(instance=self.plan.quota.split(" for ")[0],
                                           use=self.plan.quota.partition(" for ")[2] or "training job")
        headers, body = _BODIES[protocol](code, message)
        return AWSResponse(request.url, status, {**headers, "x-amzn-RequestId": "fault-injected"}, _Raw(body))

    def _send(self, request: Any, event_name: str) -> None:
        """Carry the request out: through moto in process when it is active (it answers from its own
        `before-send` handler, which this one pre-empts), else over HTTP (a moto server, AWS)."""
        from botocore.httpsession import URLLib3Session

        stubber = _moto_in_process()
        if stubber is not None:
            stubber(event_name=event_name, request=request)
            return
        with self._lock:
            if self._http is None:
                self._http = URLLib3Session(timeout=30)
        answer = self._http.send(request)
        _ = answer.content  # read it to the end, then lose it


def _moto_in_process() -> Any:
    import sys

    if "moto.core.models" not in sys.modules:
        return None
    stubber = sys.modules["moto.core.models"].botocore_stubber
    return stubber if stubber.enabled else None


_ERRORS = {
    "throttle": (400, "ThrottlingException", "Rate exceeded"),
    "500": (500, "InternalFailure", "We encountered an internal error. Please try again."),
    "quota": (400, "ResourceLimitExceeded", ""),
    "denied": (403, "AccessDenied", "Access Denied"),
}


def _json(code: str, message: str) -> tuple[dict[str, str], bytes]:
    return ({"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code},
            json.dumps({"__type": code, "message": message}).encode())


def _xml(code: str, message: str) -> tuple[dict[str, str], bytes]:
    return ({"Content-Type": "application/xml"},
            f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault</RequestId></Error>".encode())


def _query(code: str, message: str) -> tuple[dict[str, str], bytes]:
    return ({"Content-Type": "text/xml"},
            (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
             "<RequestId>fault</RequestId></ErrorResponse>").encode())


_BODIES = {"json": _json, "rest-json": _json, "rest-xml": _xml, "query": _query}


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


# --- installing ----------------------------------------------------------------------------------

_installed: list[Injector] = []


def install(plan: FaultPlan) -> Injector:
    """From now on, every client fastuner's `AwsSession` makes carries the handler (clients made
    before are left alone). `uninstall()` restores the session."""
    from fastuner.aws.clients import AwsSession

    injector = Injector(plan)
    if not _installed:
        original = AwsSession._make

        def _make(self: AwsSession, service: str, **kw: Any) -> Any:
            client = original(self, service, **kw)
            for active in _installed:
                active.attach(client)
            return client

        _make.original = original  # type: ignore[attr-defined]
        AwsSession._make = _make  # type: ignore[method-assign]
    _installed.append(injector)
    return injector


def uninstall() -> None:
    from fastuner.aws.clients import AwsSession

    original = getattr(AwsSession._make, "original", None)
    if original is not None:
        AwsSession._make = original  # type: ignore[method-assign]
    _installed.clear()


@contextmanager
def injected(plan: FaultPlan) -> Iterator[Injector]:
    injector = install(plan)
    try:
        yield injector
    finally:
        uninstall()


def install_from_env(environ: dict[str, str] | None = None) -> Injector | None:
    text = (os.environ if environ is None else environ).get(ENV, "")
    return install(FaultPlan.parse(text)) if text else None


def count(log: Path) -> dict[str, int]:
    """Faults injected, by kind, from a `log:` file (every process that wrote to it)."""
    out: dict[str, int] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            kind = json.loads(line)["kind"]
            out[kind] = out.get(kind, 0) + 1
    return out
