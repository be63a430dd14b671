"""The local inference server's endpoint (containers/serve `POST /invocations`), with retries.

Retries: a 5xx answer, 429, or a connection-level failure (refused, reset, timed out) is retried up to
`retries` times with exponential backoff and jitter; a 4xx is the caller's mistake and is never retried.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastuner.providers.endpoint import InvokeError
from fastuner.providers.local.http import HttpError, request


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
    inputs_per_request: int | None = None  # the server takes lists (up to its --max-inputs)
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
