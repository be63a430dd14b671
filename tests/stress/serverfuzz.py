"""Fuzzing the inference server (containers/serve) over real HTTP: one server process per run.

The server serves a tiny BERT classifier (tests/tinymodels.py) with one adapter, `good`. Every case is
one request: malformed or mistyped JSON, huge bodies, odd headers and Content-Lengths, unknown and
path-like adapter names (`../x`, absolute paths, NUL) in the body, the headers and the management
API's URL and body. What must hold for each: a 4xx comes with a JSON body (`error`, `code`), nothing
answers 5xx, and a good request right after it still gets 200. A second scenario adds and removes
adapters on the management API from several threads while others invoke them: every answer is a 2xx
or a 4xx, and the server keeps serving.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from hypothesis import strategies as st

from tests.stress import Report

GOOD = {"inputs": "how do I reset my password", "adapter": "good"}
NAMES = ["good", "nope", "Good", "../x", "..", ".", "/etc/passwd", "a\x00b", "%2e%2e%2fx", "..%2fgood", "x" * 65,
         "x" * 64, "good/../good", "good?x=1", "-x", "_x", "a b", "\u00e9", "con", "good\n", "\\..\\x", ""]
LOCATIONS = ["../x", "/", "/etc/passwd", "/dev/zero", "/proc/self", "", ".", "good", "~", "\x00", "a" * 5000,
             "file:///etc", "http://127.0.0.1:9/x", "{models}/bert-cls", "{models}/adapter", "{models}/bert"]
TIMEOUT = 30.0


def fuzz_server(trials: int, first_seed: int, cases: int, workdir: Path,
                log: Callable[[str], None]) -> list[Report]:
    from tests.stress.fuzz import fuzz_target

    workdir.mkdir(parents=True, exist_ok=True)
    models = build_models(workdir / "models")
    server = Server(models, workdir)
    try:
        requests = fuzz_target("fuzz/server requests", request_strategy(models), server.check, trials,
                               first_seed, cases, workdir / "requests", log)
        churn = churn_adapters(server, models, trials, first_seed, cases, log)
    finally:
        leftovers = server.stop()
    if leftovers:
        requests.failures.append(f"server log: {leftovers}")
    return [requests, churn]


def build_models(root: Path) -> dict[str, Path]:
    """A BERT classifier base and one classification adapter for it (a few seconds on CPU)."""
    from tests.serve.factory import make_adapter, make_classification_base
    from tests.tinymodels import make_tiny_bert

    paths = {"root": root, "bert": root / "bert", "bert-cls": root / "bert-cls", "adapter": root / "adapter"}
    if not (root / "done").exists():
        make_tiny_bert(paths["bert"])
        make_classification_base(paths["bert"], paths["bert-cls"], ["a", "b", "c"])
        make_adapter(paths["bert-cls"], paths["adapter"], task="classification", labels=["no", "yes"], seed=1)
        (root / "done").touch()
    return paths


class Server:
    """One server process, restarted (and the restart counted as a failure) if a case kills it."""

    def __init__(self, models: dict[str, Path], workdir: Path) -> None:
        self.models = models
        self.workdir = workdir
        self.starts = 0
        self.process = self._start()

    def _start(self):
        from tests.serve.harness import ServerProcess

        self.starts += 1
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
        return ServerProcess(["--base-model", str(self.models["bert-cls"]), "--adapter",
                              f"good={self.models['adapter']}", "--cache-size", "2", "--max-body-bytes",
                              str(1 << 20), "--download-dir", str(self.workdir / "downloads")],
                             log_path=self.workdir / f"server-{self.starts}.log", env=env).wait_ready()

    @property
    def port(self) -> int:
        return self.process.port

    def check(self, request: tuple[str, str, dict[str, str], bytes], _folder: Path) -> str | None:
        method, path, headers, body = request
        shown = f"{method} {path!r} headers={headers} body={body[:120]!r}{'…' if len(body) > 120 else ''}"
        try:
            status, kind, raw = send(self.port, method, path, headers, body)
        except (OSError, http.client.HTTPException) as error:
            problem = self._alive(f"{type(error).__name__}: {error} for {shown}")
            if problem:
                return problem
            status, kind, raw = 0, "", b""  # the server closed a connection it could not parse: allowed
        problem = judge(status, kind, raw)
        if problem:
            return f"{problem} for {shown}"
        return self.still_serving(shown)

    def still_serving(self, after: str) -> str | None:
        try:
            status, _, raw = send(self.port, "POST", "/invocations", {"Content-Type": "application/json"},
                                  json.dumps(GOOD).encode())
        except (OSError, http.client.HTTPException) as error:
            return self._alive(f"a good request failed ({error}) after {after}") or \
                f"a good request failed ({error}) after {after}"
        if status != 200:
            return f"a good request got {status} {raw[:200]!r} after {after}"
        return None

    def _alive(self, problem: str) -> str | None:
        """None while the process runs; else restart it and report `problem`."""
        if self.process.proc.poll() is None:
            return None
        log_text = self.process.stderr()[-2000:]
        self.process = self._start()
        return f"the server died: {problem}\n{log_text}"

    def stop(self) -> str | None:
        """Stop the server; the internal errors its log records, if any."""
        code = self.process.stop()
        text = "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("server-*.log")))
        internal = [line for line in text.splitlines() if "internal error" in line]
        if code != 0:
            internal.append(f"exit code {code}")
        return "; ".join(internal[:5]) or None


def send(port: int, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    """One request on a fresh connection, sent byte for byte (http.client would refuse odd URLs)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        if not any(k.lower() in ("content-length", "transfer-encoding") for k in headers):
            head.append(f"Content-Length: {len(body)}")
        head.extend(f"{k}: {v}" for k, v in headers.items())
        sock.sendall("\r\n".join(head).encode("latin-1", "replace") + b"\r\n\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        raw = response.read()
        return response.status, response.getheader("Content-Type", ""), raw


def judge(status: int, kind: str, raw: bytes) -> str | None:
    """A problem with one answer, or None: no 5xx, and a 4xx carries a JSON error."""
    if status == 0:
        return None
    if status >= 500:
        return f"status {status} {raw[:300]!r}"
    if 400 <= status < 500:
        if not kind.startswith("application/json"):
            return f"status {status} without a JSON body ({kind!r}: {raw[:200]!r})"
        try:
            data = json.loads(raw)
        except ValueError:
            return f"status {status} with a body that is not JSON: {raw[:200]!r}"
        if not isinstance(data, dict) or not isinstance(data.get("error"), str) or "code" not in data:
            return f"status {status} with a JSON body lacking error and code: {raw[:200]!r}"
    return None


# --- requests ----------------------------------------------------------------------------------------


def request_strategy(models: dict[str, Path]) -> st.SearchStrategy:
    from tests.stress.fuzz import values

    names = st.one_of(st.sampled_from(NAMES), st.text(max_size=12))
    locations = st.one_of(st.sampled_from([loc.replace("{models}", str(models["root"])) for loc in LOCATIONS]),
                          st.text(max_size=20))
    json_values = st.one_of(values, names)
    invocation = st.fixed_dictionaries({}, optional={
        "inputs": st.one_of(json_values, st.lists(st.one_of(st.text(max_size=30), json_values), max_size=5),
                            st.just(["x"] * 300), st.just("w " * 20000), st.just("")),
        "adapter": json_values, "parameters": st.one_of(values, st.dictionaries(
            st.sampled_from(["max_new_tokens", "temperature", "top_p", "stop", "seed", "x"]), values, max_size=3)),
        "max_new_tokens": values, "temperature": values, "seed": values,
        "input": values, "adpter": values})
    bodies = st.one_of(
        invocation.map(lambda d: json.dumps(d).encode()),
        st.binary(max_size=64),
        values.map(lambda v: json.dumps(v).encode()),
        st.sampled_from([b"{", b'{"inputs": "x"', b'{"inputs": NaN}', b'{"inputs": "\\ud800"}', b"\xff\xfe{}",
                         b'{"inputs": "a", "inputs": 1}', b"[" * 5000 + b"]" * 5000, b"null", b""]),
        st.integers(1 << 20, 3 << 20).map(lambda n: b'{"inputs": "' + b"a" * n + b'"}'),
    )
    extra_headers = st.dictionaries(
        st.sampled_from(["Content-Type", "X-Amzn-SageMaker-Inference-Component", "X-Amzn-SageMaker-Custom-Attributes",
                         "Content-Length", "Transfer-Encoding", "Accept", "Expect"]),
        st.one_of(names, st.sampled_from(["-1", "-100", "abc", "1e3", "0", " 5", "chunked", "adapter=../x",
                                          "adapter=good, adapter=nope", "100-continue", "text/plain"])),
        max_size=3).map(lambda h: {k: v.replace("\r", " ").replace("\n", " ") for k, v in h.items()})

    def path_for(name: str, raw: bool) -> str:
        return "/adapters/" + (name if raw and name.isprintable() and " " not in name else quote(name, safe=""))

    adapter_paths = st.builds(path_for, names, st.booleans())
    paths = st.one_of(st.just("/invocations"), st.just("/invocations"), adapter_paths,
                      st.sampled_from(["/", "/ping", "/metrics", "/adapters", "/adapters/", "/invocations/x",
                                       "//invocations", "/invocations?adapter=../x", "*", "/%00", "/" + "a" * 9000]))
    manage_body = st.one_of(st.fixed_dictionaries({"path": locations}).map(lambda d: json.dumps(d).encode()),
                            st.fixed_dictionaries({"path": locations, "x": values}).map(
                                lambda d: json.dumps(d).encode()), bodies)

    @st.composite
    def request(draw) -> tuple[str, str, dict[str, str], bytes]:
        path = draw(paths)
        method = draw(st.sampled_from(["POST", "POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]))
        body = draw(manage_body if path.startswith("/adapters/") else bodies)
        if method == "DELETE" and path.rstrip("/") == "/adapters/good":
            method = "GET"  # the good adapter stays: it answers the request after every case
        if method == "HEAD":
            method = "GET"  # a HEAD answer has no body to judge
        return method, path, draw(extra_headers), body

    return request()


# --- adapters added and removed under traffic ----------------------------------------------------------


def churn_adapters(server: Server, models: dict[str, Path], trials: int, first_seed: int, cases: int,
                   log: Callable[[str], None]) -> Report:
    """Per trial: two threads add, replace and delete adapters `churn-0..2` while two invoke them and
    `good`; every answer must be a 2xx or a JSON 4xx, and the server must serve `good` afterwards."""
    report = Report("fuzz/server adapter churn under traffic")
    for i in range(trials):
        trial_seed = first_seed + i
        problems, count = churn_trial(server.port, models, random.Random(trial_seed), max(1, cases // 4))
        report.cases += count
        problem = problems[0] if problems else server.still_serving("adapter churn")
        report.trial(trial_seed, problem)
        if problem:
            log(f"{report.scenario}: seed {trial_seed}: {problem}")
    log(f"{report.scenario}: {report.passed}/{report.trials} trials, {report.cases} requests")
    return report


def churn_trial(port: int, models: dict[str, Path], rng: random.Random, per_thread: int) -> tuple[list[str], int]:
    problems: list[str] = []
    counted = [0]
    lock = threading.Lock()

    def worker(kind: str, worker_rng: random.Random) -> None:
        for _ in range(per_thread):
            name = f"churn-{worker_rng.randrange(3)}"
            if kind == "manage" and worker_rng.random() < 0.6:
                location = str(models["adapter"] if worker_rng.random() < 0.8 else models["bert"])
                request = ("POST", f"/adapters/{name}", {}, json.dumps({"path": location}).encode())
            elif kind == "manage":
                request = ("DELETE", f"/adapters/{name}", {}, b"")
            else:
                target = name if worker_rng.random() < 0.7 else "good"
                request = ("POST", "/invocations", {"Content-Type": "application/json"},
                           json.dumps({"inputs": "where is my order", "adapter": target}).encode())
            try:
                problem = judge(*send(port, *request))
            except (OSError, http.client.HTTPException) as error:
                problem = f"{type(error).__name__}: {error}"
            with lock:
                counted[0] += 1
                if problem:
                    problems.append(f"{request[0]} {request[1]}: {problem}")

    threads = [threading.Thread(target=worker, args=(kind, random.Random(rng.random())))
               for kind in ("manage", "manage", "invoke", "invoke")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return problems, counted[0]


def main() -> None:  # a quick manual run: python -m tests.stress.serverfuzz [TRIALS]
    import tempfile

    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with tempfile.TemporaryDirectory() as tmp:
        for report in fuzz_server(trials, 0, 20, Path(tmp), print):
            print(report)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

