"""The server as a real process on 127.0.0.1, spoken to over real HTTP (http.client)."""

from __future__ import annotations

import http.client
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVE_PY = ROOT / "containers" / "serve" / "serve.py"
START_TIMEOUT = 120.0


class ServerProcess:
    """`python serve.py ARGS --port 0`; the port comes from the first stdout line."""

    def __init__(self, args: list[str], *, log_path: Path, env: dict[str, str] | None = None,
                 port_args: bool = True, threads: int = 1):
        extra = ["--host", "127.0.0.1", "--port", "0", "--threads", str(threads)] if port_args else []
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVE_PY), *args, *extra], stdout=subprocess.PIPE, stderr=self._log,
            bufsize=0,  # unbuffered: `read_line` waits on the pipe itself, so no line may sit in a Python buffer
            env={**os.environ, "SM_MODEL_DIR": str(log_path.parent / "no-model-dir"), **(env or {})},
        )
        self.port: int | None = None

    def wait_ready(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        line = read_line(self.proc, timeout)
        if not line.startswith("listening on http://"):
            self.proc.kill()
            raise AssertionError(f"server did not start (exit {self.proc.wait()}): {line!r}\n{self.stderr()}")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.flush()

    def stderr(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body=None, headers: dict[str, str] | None = None,
                timeout: float = 60.0):
        """(status, parsed JSON or text) of one request on a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        if response.getheader("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(raw)
        return response.status, raw.decode()

    def invoke(self, body, headers: dict[str, str] | None = None):
        return self.request("POST", "/invocations", body, headers)

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        status, text = self.request("GET", "/metrics")
        assert status == 200
        return parse_prometheus(text)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.wait_exit(60)
        self._log.close()
        return code


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first stdout line, or '' if the process exits or the deadline passes first."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                return proc.stdout.readline().decode().strip()
    return ""


def parse_prometheus(text: str) -> dict[tuple[str, frozenset], float]:
    """A minimal parser of the text exposition format: {(name, frozenset(label pairs)): value}.

    Checks what a scraper would reject: every sample belongs to a declared family (HELP and TYPE),
    label values are quoted, and values are numbers.
    """
    samples: dict[tuple[str, frozenset], float] = {}
    declared: set[str] = set()
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            declared.add(name)
            continue
        if line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        labels: frozenset = frozenset()
        name = head
        if "{" in head:
            name, rest = head.split("{", 1)
            assert rest.endswith("}"), line
            pairs = []
            for part in split_labels(rest[:-1]):
                key, raw = part.split("=", 1)
                assert raw.startswith('"') and raw.endswith('"'), line
                pairs.append((key, raw[1:-1].replace(r"\"", '"').replace(r"\\", "\\")))
            labels = frozenset(pairs)
        family = next((f for f in (name, name.rsplit("_", 1)[0]) if f in declared), None)
        assert family is not None, f"sample {name} has no # TYPE line"
        samples[(name, labels)] = float(value)
    return samples


def split_labels(text: str) -> list[str]:
    parts, current, quoted, escaped = [], "", False, False
    for char in text:
        if char == "," and not quoted:
            parts.append(current)
            current = ""
            continue
        current += char
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
    if current:
        parts.append(current)
    return parts


def histogram_quantile(samples, name: str, labels: dict[str, str], q: float) -> float:
    """The upper bound of the bucket holding quantile q (enough to check buckets resolve P50/P95)."""
    buckets = sorted(
        (float("inf") if dict(k)["le"] == "+Inf" else float(dict(k)["le"]), v)
        for (n, k), v in samples.items()
        if n == f"{name}_bucket" and all(dict(k).get(a) == b for a, b in labels.items())
    )
    total = buckets[-1][1]
    return next(bound for bound, count in buckets if count >= q * total)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.02):
    """Poll `predicate` until it returns a truthy value; fail at the deadline (no sleep-and-hope)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
