"""A small JSON-over-HTTP client for the local inference server (stdlib only, short timeouts)."""

from __future__ import annotations

import json
from typing import Any


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.code = code


def request(method: str, url: str, body: Any = None, *, timeout: float = 10.0,
            headers: dict[str, str] | None = None) -> Any:
    """Send JSON, return decoded JSON (or text for non-JSON answers). Raises HttpError on 4xx/5xx and
    OSError (URLError, ConnectionRefusedError, timeouts) when the server is unreachable. urllib
    (with http.client, ssl and email) loads on the first request: a plan whose deployments are not
    running sends none."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            kind = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            payload = json.loads(raw)
            raise HttpError(exc.code, payload.get("error", raw.decode("utf-8", "replace")),
                            payload.get("code", "")) from None
        except (ValueError, AttributeError):
            raise HttpError(exc.code, raw.decode("utf-8", "replace")[:500]) from None
    if "json" in kind:
        return json.loads(raw)
    return raw.decode("utf-8", "replace")


def metric(text: str, name: str) -> float | None:
    """The value of an unlabelled sample `name` in Prometheus text format."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            try:
                return float(line.split()[-1])
            except ValueError:
                return None
    return None
