"""Start-up and shutdown: the order is chosen so that cheap failures come first.

1. settings (exit 2), 2. bind the port (exit 5), 3. a missing local base folder (exit 3), every local
adapter artifact, its task and base name (exit 4), all before torch is imported (well under a second);
4. load the base model (exit 3), 5. register the adapters against it (tokenizer, layer shapes; exit 4);
6. serve: write `--port-file`, then print `listening on http://HOST:PORT` as the first stdout line. SIGTERM/SIGINT: stop accepting, let in-flight requests finish (at most
`--shutdown-timeout` seconds), exit 0.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .adapters import check_identity
from .artifact import ArtifactError, base_model_names, read_artifact
from .errors import EXIT_ADAPTER, EXIT_BASE_MODEL, EXIT_PORT, ApiError, StartupError
from .settings import Settings, load_settings


def main(argv: list[str] | None = None) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        return run(sys.argv[1:] if argv is None else argv, stop)
    except StartupError as error:
        print(f"fastuner-serve: error: {error}", file=sys.stderr, flush=True)
        return error.exit_code


def run(argv: list[str], stop: threading.Event) -> int:
    settings = load_settings(argv)
    server = bind(settings)
    try:
        task_hint = precheck(settings)
        # torch and transformers are imported only now.
        from .adapters import Registry
        from .api import App, Handler, log
        from .engine import Engine, load_base
        from .metrics import Metrics

        metrics = Metrics()
        base = load_base(settings, task_hint)
        registry = Registry(base.identity, settings.download_dir)
        for name, location in settings.adapters.items():
            try:
                registry.register(name, location)
            except ApiError as error:
                raise StartupError(error.message, exit_code=EXIT_ADAPTER) from None
        engine = Engine(base, registry, metrics, settings)
        engine.start()
        server.RequestHandlerClass = Handler
        server.app = App(settings, engine, registry, metrics)
        threading.Thread(target=server.serve_forever, name="fastuner-http", daemon=True).start()
        host, port = server.server_address[:2]
        if settings.port_file:
            write_port_file(Path(settings.port_file), port)
        print(f"listening on http://{host}:{port}", flush=True)
        log(f"ready: base={settings.base_model} task={engine.task} adapters={len(settings.adapters)} "
            f"cache_size={settings.cache_size} device={base.device} pid={os.getpid()}")
        # A timed wait: a signal may be delivered to any thread, and an untimed wait in the main thread
        # would not wake up to run the Python handler until something else woke it.
        while not stop.wait(0.2):
            pass
    except BaseException:
        server.server_close()
        raise
    log("shutting down: no new connections; waiting for in-flight requests")
    server.app.shutting_down.set()
    server.shutdown()
    server.server_close()
    deadline = time.monotonic() + settings.shutdown_timeout
    while metrics.in_flight() > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    left = metrics.in_flight()
    engine.stop(timeout=max(0.0, deadline - time.monotonic()))
    log(f"stopped ({left} requests still in flight at the deadline)" if left else "stopped")
    return 0


def bind(settings: Settings):
    from http.server import BaseHTTPRequestHandler

    from .api import Server  # no torch at module level: binding stays fast

    try:
        return Server((settings.host, settings.port), BaseHTTPRequestHandler)
    except OSError as error:
        where = f"{settings.host}:{settings.port}"
        if error.errno == errno.EADDRINUSE:
            raise StartupError(f"port {where} is already in use", exit_code=EXIT_PORT) from None
        raise StartupError(f"cannot listen on {where}: {error.strerror or error}", exit_code=EXIT_PORT) from None


def precheck(settings: Settings) -> str | None:
    """What can fail without torch: a missing local base folder, every local adapter artifact, its task,
    base name and revision. Returns the task of the first adapter (the default task)."""
    base = settings.base_model
    if base.startswith(("/", "./", "../", "~")) and not Path(base).expanduser().exists():
        raise StartupError(f"cannot load base model '{base}': the folder does not exist", exit_code=EXIT_BASE_MODEL)
    artifacts = {}
    for name, location in settings.adapters.items():
        if location.startswith("s3://"):
            continue
        try:
            artifacts[name] = read_artifact(location)
        except ArtifactError as error:
            raise StartupError(f"adapter '{name}': {error}", exit_code=EXIT_ADAPTER) from None
    first = next(iter(artifacts), None)
    task = settings.task or (artifacts[first].server_task if first else None)
    names = base_model_names(base, settings.base_model_ids)
    for name, artifact in artifacts.items():
        if artifact.server_task != task:
            source = "--task" if settings.task else f"the first adapter '{first}'"
            raise StartupError(f"adapter '{name}' is a {artifact.server_task} adapter but {source} says {task}",
                               exit_code=EXIT_ADAPTER)
        try:
            check_identity(name, artifact, task=task, model=base, names=names,
                           revision=settings.base_model_revision)
        except ApiError as error:
            raise StartupError(error.message, exit_code=EXIT_ADAPTER) from None
    return task


def write_port_file(path: Path, port: int) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(f"{port}\n")
    os.replace(temporary, path)
