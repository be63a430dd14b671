"""A tiny in-process stand-in for containers/serve (`GET /ping`, `GET /metrics`, `POST /invocations`) whose failures
and delays are scripted, for fast tests of the invoke client. It answers like the real server:
classification `{label, scores}` or generation `{generated_text}`, a list for a list of inputs, and
errors as `{error, code}`.

Scripting, by input text:
    "EMPTY"        400 empty_input for the whole request (as the real server does for one bad row)
    "SLOW <s> ..."  the request sleeps <s> seconds before answering
    "WAIT ..."     the request waits until the test sets `script.release` (at most 10 s)
Scripting, by request: `fail_next` is a list of statuses (or "drop": close the connection unanswered)
used, one each, by the next requests.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Script:
    task: str = "classification"
    adapters: tuple[str, ...] = ("a1",)
    fail_next: list[int | str] = field(default_factory=list)
    labels: tuple[str, ...] = ("neg", "pos")
    metrics: str = ""  # what GET /metrics answers (Prometheus text)
    requests: list[dict[str, Any]] = field(default_factory=list)  # every body received, in arrival order
    finished: list[list[str]] = field(default_factory=list)  # inputs of each answered request, in finish order
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def classify(self, text: str) -> dict[str, Any]:
        label = "pos" if "good" in text else "neg"
        return {"label": label, "scores": {k: (0.9 if k == label else 0.1) for k in self.labels}}

    def generate(self, text: str, adapter: str | None) -> dict[str, Any]:
        # the "adapter" has learnt to upper-case; the base model echoes
        return {"generated_text": f" {text.upper()} " if adapter else text}


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": message, "code": code}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeServer

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/ping":
            self._send(200, {"status": "healthy"})
        elif self.path == "/metrics":
            data = self.server.script.metrics.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._send(*_error(404, "not_found", "no such route"))

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        script = self.server.script
        with script.lock:
            script.requests.append(body)
            failure = script.fail_next.pop(0) if script.fail_next else None
        if failure == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if failure is not None:
            self._send(*_error(int(failure), "internal_error" if failure == 500 else "shutting_down", "scripted"))
            return
        status, payload = self._answer(body, script)
        with script.lock:
            inputs = body.get("inputs")
            script.finished.append(inputs if isinstance(inputs, list) else [inputs])
        self._send(status, payload)

    def _answer(self, body: dict[str, Any], script: Script) -> tuple[int, Any]:
        inputs = body.get("inputs")
        items = inputs if isinstance(inputs, list) else [inputs]
        adapter = body.get("adapter")
        if adapter is not None and adapter not in script.adapters:
            return _error(404, "unknown_adapter", f"adapter '{adapter}' is not registered (GET /adapters lists them)")
        if script.task == "classification":
            if adapter is None:
                return _error(400, "adapter_required", "the base model has no trained classification head")
            if "max_new_tokens" in body:
                return _error(400, "bad_request", "max_new_tokens only apply to generation")
        for i, text in enumerate(items):
            if text == "EMPTY":
                where = f"inputs[{i}]" if isinstance(inputs, list) else "the input"
                return _error(400, "empty_input", f"{where} is empty after tokenization")
            if text.startswith("SLOW "):
                time.sleep(float(text.split()[1]))
            if text.startswith("WAIT"):
                script.release.wait(10)
        answers = [script.classify(t) if script.task == "classification" else script.generate(t, adapter)
                   for t in items]
        return 200, answers if isinstance(inputs, list) else answers[0]


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def closed_port_url() -> str:
    """A URL nobody listens on (the port was bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
