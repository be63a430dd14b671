"""Invoking a deployment's server (containers/serve `POST /invocations`): one request with retries, and
many rows with bounded concurrency, answered in input order.

Retries: a 5xx answer, 429, or a connection-level failure (refused, reset, timed out) is retried up to
`retries` times with exponential backoff and jitter; a 4xx is the caller's mistake and is never retried.
A request of several rows that the server refuses because of one row (`empty_input`, `input_too_long`,
size limits) is split into single-row requests, so only the bad row fails. An error that dooms every
later request too (the server is gone after its retries, or the adapter is unknown) stops sending: the
remaining rows are answered with that error instead of being tried one by one.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastuner.data.rules import text_length
from fastuner.providers.local.http import HttpError, request

# Codes that blame one input of a list: a list that gets them is retried row by row.
ROW_CODES = frozenset({"empty_input", "input_too_long", "too_many_inputs", "body_too_large"})
# Codes that will be the same for every request of a batch: stop sending.
FATAL_CODES = frozenset({"unknown_adapter", "adapter_required", "connection_failed"})


class InvokeError(Exception):
    """A request that failed for good. `status` is None when no HTTP answer came back."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code or ("connection_failed" if status is None else f"http_{status}")

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_CODES

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, **({"status": self.status} if self.status else {})}


def _retryable(status: int) -> bool:
    return status >= 500 or status == 429


Send = Callable[..., Any]


@dataclass
class Client:
    """`POST {url}/invocations` with retries. `send` and `sleep` are injectable for tests."""

    url: str
    timeout: float = 120.0
    retries: int = 3
    backoff: float = 0.5  # first delay in seconds; doubles on each retry
    max_backoff: float = 10.0
    send: Send = request
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    requests: int = 0  # requests sent, retries included (for the summary)
    cancel: threading.Event = field(default_factory=threading.Event)  # set: no new attempt starts
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def invoke(self, inputs: str | list[str], adapter: str | None = None,
               params: dict[str, Any] | None = None) -> Any:
        """The server's answer (a list for a list of inputs, checked to have one answer per input)."""
        body: dict[str, Any] = {"inputs": inputs, **(params or {})}
        if adapter:
            body["adapter"] = adapter
        attempt = 0
        while True:
            if self.cancel.is_set():
                raise InvokeError("not sent: interrupted", code="interrupted")
            with self._lock:
                self.requests += 1
            try:
                answer = self.send("POST", f"{self.url}/invocations", body, timeout=self.timeout)
            except HttpError as exc:
                if not _retryable(exc.status) or attempt >= self.retries:
                    raise InvokeError(exc.message, status=exc.status, code=exc.code) from None
            except (OSError, http.client.HTTPException, ValueError) as exc:  # ValueError: a garbled body
                if attempt >= self.retries:
                    raise InvokeError(f"no answer from {self.url}: {_reason(exc)}") from None
            else:
                return _checked(answer, inputs)
            self.sleep(min(self.max_backoff, self.backoff * 2 ** attempt) * self.rng.uniform(0.5, 1.0))
            attempt += 1


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)  # urllib's URLError wraps the socket error
    return str(reason if reason is not None else exc) or type(exc).__name__


def _checked(answer: Any, inputs: str | list[str]) -> Any:
    if isinstance(inputs, list):
        if not isinstance(answer, list) or len(answer) != len(inputs):
            raise InvokeError(f"the server answered {len(inputs)} inputs with "
                              f"{len(answer) if isinstance(answer, list) else 'a non-list'}", code="bad_answer")
        return answer
    if not isinstance(answer, dict):
        raise InvokeError(f"the server's answer is not a JSON object: {str(answer)[:200]}", code="bad_answer")
    return answer


# --- rows ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of a batch file: `number` is its 1-based line number; `data` is None when unusable."""

    number: int
    data: dict[str, Any] | None
    problem: str = ""
    code: str = "bad_row"  # of the problem


def read_rows(lines: Iterable[str | bytes]) -> list[Row]:
    """JSON objects with a string `input`, one a line; blank lines are skipped, bad lines become rows
    that carry their problem (they are reported in the output, never sent)."""
    rows = []
    for number, raw in enumerate(lines, 1):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except ValueError as exc:
            rows.append(Row(number, None, f"line {number} is not JSON: {exc}"))
            continue
        if not isinstance(data, dict):
            rows.append(Row(number, None, f"line {number} is not a JSON object"))
        elif not isinstance(data.get("input"), str):
            rows.append(Row(number, data, f"line {number} has no string field 'input'"))
        else:
            rows.append(Row(number, data))
    return rows


def input_problem(text: str, max_chars: int | None, adapter: str | None) -> tuple[str, str] | None:
    """(code, message after "the input") for an input the server refuses by the dataset rules
    (containers/serve/README.md, *Input rules*), worded as the server words it, so that it is caught
    before sending. `max_chars`: the `max_input_chars` of the adapter's dataset (None: no limit)."""
    length = text_length(text)
    if length == 0:
        return "empty_input", "is empty or only whitespace"
    if max_chars is not None and length > max_chars:
        return ("input_too_long", f"is {length:,} characters; adapter '{adapter}' accepts at most {max_chars:,} "
                "(the max_input_chars of the dataset it was trained on)")
    return None


def screen_rows(rows: list[Row], max_chars: int | None, adapter: str | None) -> list[Row]:
    """Rows whose input the server would refuse carry that problem instead (and are never sent)."""
    out = []
    for row in rows:
        problem = None if row.problem else input_problem(row.data["input"], max_chars, adapter)  # type: ignore[index]
        out.append(row if problem is None else Row(row.number, row.data, f"line {row.number}: the input {problem[1]}",
                                                    problem[0]))
    return out


def error_line(row: Row, error: InvokeError | str) -> dict[str, Any]:
    err = error if isinstance(error, InvokeError) else InvokeError(error, code=row.code)
    return {**(row.data or {}), **err.to_dict(), "row": row.number}


def answer_line(row: Row, answer: Any) -> dict[str, Any]:
    return {**(row.data or {}), "output": answer}


def run_rows(client: Client, rows: list[Row], *, adapter: str | None = None, params: dict[str, Any] | None = None,
             concurrency: int = 8, rows_per_request: int = 8,
             on_done: Callable[[int, int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Output lines in input order, as soon as each one and all before it are answered.

    `on_done(ok, failed)` is called from worker threads after each request's rows are settled.
    Closing the iterator early (Ctrl-C) stops sending; requests in flight finish or time out.
    """
    chunks: list[list[Row]] = []
    current: list[Row] = []
    for row in rows:
        if row.problem:
            if current:
                chunks.append(current)
                current = []
            chunks.append([row])
            continue
        current.append(row)
        if len(current) >= max(1, rows_per_request):
            chunks.append(current)
            current = []
    if current:
        chunks.append(current)
    stop: list[InvokeError] = []

    def settle(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if on_done is not None:
            failed = sum("error" in line for line in out)
            on_done(len(out) - failed, failed)
        return out

    def work(chunk: list[Row]) -> list[dict[str, Any]]:
        if chunk[0].problem:
            return settle([error_line(chunk[0], chunk[0].problem)])
        if stop:
            return settle([error_line(r, _not_sent(stop[0])) for r in chunk])
        return settle(_send_chunk(client, chunk, adapter, params, stop))

    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="invoke")
    try:
        futures = [pool.submit(work, chunk) for chunk in chunks]
        for future in futures:
            yield from future.result()
    except BaseException:  # Ctrl-C or the caller stopped reading: no new request, no retry
        client.cancel.set()
        raise
    finally:
        stop.append(InvokeError("interrupted", code="interrupted"))
        pool.shutdown(wait=True, cancel_futures=True)


def _not_sent(cause: InvokeError) -> InvokeError:
    return InvokeError(f"not sent: {cause.message}", status=cause.status, code=cause.code)


def _send_chunk(client: Client, chunk: list[Row], adapter: str | None, params: dict[str, Any] | None,
                stop: list[InvokeError]) -> list[dict[str, Any]]:
    texts = [r.data["input"] for r in chunk]  # type: ignore[index]
    try:
        answers = client.invoke(texts if len(chunk) > 1 else texts[0], adapter, params)
    except InvokeError as exc:
        if len(chunk) > 1 and exc.code in ROW_CODES:
            return [line for r in chunk for line in _send_chunk(client, [r], adapter, params, stop)]
        if exc.fatal:
            stop.append(exc)
        return [error_line(r, exc) for r in chunk]
    if len(chunk) == 1:
        answers = [answers]
    return [answer_line(r, a) for r, a in zip(chunk, answers, strict=True)]
