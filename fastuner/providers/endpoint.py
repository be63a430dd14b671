"""Invoking a deployment, whatever serves it: the `Endpoint` a provider hands out, and many rows sent
through one with bounded concurrency, answered in input order (`fastuner invoke --batch`, `--evaluate`).

A request of several rows that the server refuses because of one row (`empty_input`, `input_too_long`,
size limits) is split into single-row requests, so only the bad row fails. An error that dooms every
later request too (the server is gone after its retries, or the adapter is unknown) stops sending: the
remaining rows are answered with that error instead of being tried one by one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from fastuner.data.rules import text_length

# Codes that blame one input of a list: a list that gets them is retried row by row.
ROW_CODES = frozenset({"empty_input", "input_too_long", "too_many_inputs", "body_too_large"})
# Codes that will be the same for every request of a batch: stop sending. (The last two are SageMaker's
# refusals: the endpoint is gone, or the caller may not invoke it.)
FATAL_CODES = frozenset({"unknown_adapter", "adapter_required", "connection_failed", "endpoint_not_found",
                         "access_denied"})


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


class Endpoint(Protocol):
    """A running deployment's invocation API, whatever serves it (a local server, a SageMaker endpoint).
    `invoke` answers one input with an object and a list of inputs with a list, one answer each, or
    raises InvokeError; retrying what can be retried is the endpoint's own business."""

    requests: int  # requests sent, retries included (for the summary)
    cancel: threading.Event  # set: no new attempt starts
    # inputs one request carries at most (None: as many as asked); an endpoint that serves one input a
    # request (LMI) says 1, so that a batch sends each row on its own and one bad row fails alone
    inputs_per_request: int | None

    def invoke(self, inputs: str | list[str], adapter: str | None = None,
               params: dict[str, Any] | None = None) -> Any: ...


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


def run_rows(client: Endpoint, rows: list[Row], *, adapter: str | None = None, params: dict[str, Any] | None = None,
             concurrency: int = 8, rows_per_request: int = 8,
             on_done: Callable[[int, int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Output lines in input order, as soon as each one and all before it are answered.

    `on_done(ok, failed)` is called from worker threads after each request's rows are settled.
    Closing the iterator early (Ctrl-C) stops sending; requests in flight finish or time out.
    """
    per_request = max(1, min(rows_per_request, client.inputs_per_request or rows_per_request))
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
        if len(current) >= per_request:
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


def _send_chunk(client: Endpoint, chunk: list[Row], adapter: str | None, params: dict[str, Any] | None,
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
