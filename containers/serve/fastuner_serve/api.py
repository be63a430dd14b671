"""HTTP routes on the standard library's ThreadingHTTPServer (HTTP/1.1, keep-alive).

`http.server` was chosen over starlette/uvicorn: it runs in any Python image with nothing to install,
every route here is a few lines of JSON, and the model is the bottleneck (one worker thread runs every
forward), so an async stack would only move the queue. A thread per connection is fine for the tens of
concurrent clients a single-model endpoint sees.
"""

from __future__ import annotations

import hmac
import json
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from . import emf
from .errors import ApiError
from .protocol import parse_invocation, parse_json
from .settings import TOKEN_ENV, Settings, is_loopback, validate_adapter_name

if TYPE_CHECKING:  # the engine imports torch; this module must not (it binds the port first)
    from .adapters import Registry
    from .engine import Engine
    from .metrics import Metrics

_log_lock = threading.Lock()


def log(line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with _log_lock:
        sys.stderr.write(f"fastuner-serve {stamp} {line}\n")
        sys.stderr.flush()


@dataclass
class App:
    settings: Settings
    engine: Engine
    registry: Registry
    metrics: Metrics
    shutting_down: threading.Event = field(default_factory=threading.Event)

    def describe(self, name: str) -> dict[str, Any]:
        entry = self.registry.get(name)
        loaded = entry.key in self.engine.loaded()
        info: dict[str, Any] = {"name": entry.name, "location": entry.location, "loaded": loaded,
                                "version": entry.version}
        if entry.artifact is not None:
            info.update(entry.artifact.describe())
        return info


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen backlog: socketserver's default of 5 resets bursts of clients
    app: App | None = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fastuner-serve"
    timeout = 300  # an idle keep-alive connection is closed after this many seconds
    server: Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm holds the body
        # until the client's delayed ACK (40 ms per request on a keep-alive connection, measured).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- routing ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/invocations":
            if method != "POST":
                return self._simple(method, path, ApiError(405, "method_not_allowed", "use POST /invocations"))
            return self._invoke()
        started = time.perf_counter()
        try:
            status, payload = self._manage(method, path)
        except ApiError as error:
            status, payload = error.status, error.to_dict()
        except Exception as error:
            status, payload = 500, internal_error(error)
        self._send(status, payload)
        log(f"{method} {path} status={status} latency_ms={(time.perf_counter() - started) * 1000:.1f}")
        return None

    def _manage(self, method: str, path: str) -> tuple[int, Any]:
        app = self.server.app
        if path == "/ping" and method == "GET":
            return 200, {"status": "healthy"}
        if path == "/metrics" and method == "GET":
            return 200, app_metrics(app)
        if path == "/adapters" or path.startswith("/adapters/"):
            self._authorize(app.settings)
        if path == "/adapters" and method == "GET":
            return 200, {
                "base_model": app.registry.base.model, "task": app.engine.task,
                "cache": {"capacity": app.settings.cache_size,
                          "loaded": [name for name, _ in app.engine.loaded()]},
                "adapters": [app.describe(e.name) for e in app.registry.entries()],
            }
        if path.startswith("/adapters/"):
            name = path[len("/adapters/"):]
            try:
                validate_adapter_name(name)
            except ValueError as error:
                raise ApiError(400, "bad_request", str(error)) from None
            if method == "GET":
                return 200, app.describe(name)
            if method in ("POST", "PUT"):
                body = self._json_body()
                location = body.get("path") if isinstance(body, dict) else None
                if not isinstance(location, str) or not location or set(body) - {"path"}:
                    raise ApiError(400, "bad_request", 'the body must be {"path": "FOLDER or s3://..."}')
                entry, old = app.registry.register(name, location)
                evicted = app.engine.evict(old.key) if old else False
                log(f"adapter {name} {'replaced' if old else 'added'} from {location}"
                    f"{' (cached copy evicted)' if evicted else ''}")
                return (200 if old else 201), {**app.describe(name), "replaced": old is not None}
            if method == "DELETE":
                entry = app.registry.remove(name)
                evicted = app.engine.evict(entry.key)
                log(f"adapter {name} deleted")
                return 200, {"name": name, "deleted": True, "evicted": evicted}
        known = {"/ping", "/metrics", "/adapters", "/invocations"}
        if path in known or path.startswith("/adapters/"):
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        raise ApiError(404, "not_found", f"no route {method} {path}; routes: GET /ping, POST /invocations, "
                       "GET /metrics, GET /adapters, GET|POST|PUT|DELETE /adapters/NAME")

    def _authorize(self, settings: Settings) -> None:
        """The management API (/adapters) changes what the server loads from disk: with a token set it
        requires `Authorization: Bearer TOKEN`; without one it answers only on a loopback address."""
        token = settings.management_token
        if token is None:
            if is_loopback(settings.host):
                return
            raise ApiError(403, "management_disabled",
                           f"the management API is off: this server listens on {settings.host} and has no "
                           f"token; start it with ${TOKEN_ENV} set to manage adapters over the network")
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "unauthorized", "the management API needs the deployment's token: "
                           "send `Authorization: Bearer TOKEN`")

    # -- /invocations ------------------------------------------------------------------------------

    def _invoke(self) -> None:
        app = self.server.app
        if app.shutting_down.is_set():
            self.close_connection = True
            return self._simple("POST", "/invocations",
                                ApiError(503, "shutting_down", "the server is shutting down"))
        started = time.perf_counter()
        app.metrics.invocation_started(time.time())
        adapter, status, n_inputs, job = None, 500, 0, None
        try:
            invocation = parse_invocation(self._body(), self.headers, max_inputs=app.settings.max_inputs,
                                          max_new_tokens_limit=app.settings.max_new_tokens_limit)
            adapter, n_inputs = invocation.adapter, len(invocation.inputs)
            job = app.engine.prepare(invocation)
            outputs = app.engine.submit(job).result()
            status = 200
            self._send(200, outputs if invocation.batched else outputs[0])
        except ApiError as error:
            status = error.status
            if error.code == "unknown_adapter":
                adapter = "__unknown__"  # bounded label values: no metric series per mistyped name
            self._send(error.status, error.to_dict())
        except Exception as error:
            self._send(500, internal_error(error))
        finally:
            elapsed = time.perf_counter() - started
            app.metrics.invocation_finished(adapter, status, elapsed, time.time())
            log(f"POST /invocations adapter={adapter or '-'} status={status} latency_ms={elapsed * 1000:.1f} "
                f"inputs={n_inputs}")
            if app.settings.emf_endpoint:
                emf.write(emf.invocation_record(app.settings.emf_endpoint, adapter, status, elapsed,
                                                cache=job.cache if job is not None else "",
                                                load_seconds=job.load_seconds if job is not None else None,
                                                now=time.time()))
        return None

    # -- helpers -------------------------------------------------------------------------------------

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise ApiError(411, "length_required", "send the body with a Content-Length, not chunked")
        raw = (self.headers.get("Content-Length") or "0").strip()
        if not raw.isdigit() or not raw.isascii():  # int() takes "-1" (read to the end: a hung thread), "+1", "1_0"
            self.close_connection = True
            raise ApiError(400, "bad_request", "Content-Length is not a number of bytes")
        length = int(raw)
        limit = self.server.app.settings.max_body_bytes
        if length > limit:
            self.close_connection = True  # the unread body must not be parsed as the next request
            raise ApiError(413, "body_too_large", f"the body is {length} bytes; the limit is {limit}")
        return self.rfile.read(length)

    def _json_body(self) -> Any:
        return parse_json(self._body() or b"null")

    def _simple(self, method: str, path: str, error: ApiError) -> None:
        self._send(error.status, error.to_dict())
        log(f"{method} {path} status={error.status} latency_ms=0.0")

    def _send(self, status: int, payload: Any) -> None:
        if isinstance(payload, str):
            data, kind = payload.encode(), "text/plain; version=0.0.4; charset=utf-8"
        else:
            data, kind = json.dumps(payload).encode(), "application/json"
        app = self.server.app
        if app is not None and app.shutting_down.is_set():
            self.close_connection = True
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left; its request line is still logged

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (an unknown method, a malformed request line, headers too long) as
        the JSON error every route gives, instead of its HTML page; an unknown method is a 405, not its
        501: a client's request is never answered with a 5xx."""
        if code == 501:
            status, error = 405, "method_not_allowed"
            message = f"{self.command} is not a method this server answers; use GET, POST, PUT or DELETE"
        else:
            status = 400 if code >= 500 else code
            error = {400: "bad_request", 414: "uri_too_long", 431: "headers_too_large"}.get(status, "bad_request")
        self.close_connection = True  # what follows a request http.server could not parse is not a request
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":  # a line it could not read: a status
            self.request_version = "HTTP/1.0"  # line and headers all the same (HTTP/0.9 answers had none)
        self._send(status, {"error": message or self.responses.get(status, ("bad request",))[0], "code": error})
        path = getattr(self, "path", None) or "-"
        log(f"{getattr(self, 'command', None) or '-'} {path[:200]!r} status={status} latency_ms=0.0")

    def log_message(self, format: str, *args: Any) -> None:  # http.server's own messages (bad request lines)
        log(format % args)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        """Silenced: every route logs its own line with the adapter and the latency."""


def app_metrics(app: App) -> str:
    return app.metrics.render({
        "fastuner_adapters_registered": ("Adapters registered (name -> location).",
                                         len(app.registry.entries())),
        "fastuner_adapters_loaded": ("Adapters loaded in the cache now.", len(app.engine.loaded())),
        "fastuner_adapter_cache_capacity": ("Adapters the cache can hold (--cache-size).",
                                            app.settings.cache_size),
    })


def internal_error(error: BaseException) -> dict[str, str]:
    log("internal error: " + "".join(traceback.format_exception(error)).replace("\n", "\n    "))
    return {"error": f"internal server error: {type(error).__name__}: {error}", "code": "internal_error"}
