"""Start-up failures (exit code and one line on stderr), SageMaker 'serve' mode, SIGTERM with a request in flight."""

from __future__ import annotations

import json
import shutil
import signal
import socket

import pytest

from tests.serve.harness import ServerProcess, wait_until

pytestmark = pytest.mark.slow  # starts the inference server as a process


def failed_start(args: list[str], tmp_path, name: str) -> tuple[int, str]:
    server = ServerProcess(args, log_path=tmp_path / f"{name}.log", port_args=False)
    code = server.wait_exit(120)
    assert server.proc.stdout.read() == b""  # never announced a port
    lines = [line for line in server.stderr().splitlines() if line.startswith("fastuner-serve: error:")]
    assert len(lines) == 1, server.stderr()
    return code, lines[0]


def test_port_in_use(models, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, line = failed_start(["--base-model", str(models["bert-cls"]), "--host", "127.0.0.1",
                                   "--port", str(port)], tmp_path, "busy")
    assert code == 5
    assert line == f"fastuner-serve: error: port 127.0.0.1:{port} is already in use"


def test_missing_or_corrupt_adapter_at_start(models, tmp_path):
    base = ["--base-model", str(models["bert-cls"]), "--port", "0"]
    code, line = failed_start([*base, "--adapter", f"gone={tmp_path / 'gone'}"], tmp_path, "missing")
    assert code == 4 and "adapter 'gone'" in line and "does not exist" in line
    corrupt = shutil.copytree(models["c3"], tmp_path / "corrupt")
    (corrupt / "adapter_config.json").write_text("{not json")
    code, line = failed_start([*base, "--adapter", f"c={corrupt}"], tmp_path, "corrupt")
    assert code == 4 and "adapter_config.json is not readable JSON" in line
    code, line = failed_start([*base, "--adapter", f"g={models['g_chat']}", "--task", "classification"],
                              tmp_path, "task")
    assert code == 4 and "adapter 'g' is a generation adapter" in line
    other = shutil.copytree(models["c3"], tmp_path / "other-base")
    meta = json.loads((other / "fastuner.json").read_text())
    (other / "fastuner.json").write_text(json.dumps({**meta, "base_model": "org/another-model"}))
    code, line = failed_start([*base, "--adapter", f"o={other}"], tmp_path, "mismatch")
    assert code == 4 and "trained on 'org/another-model'" in line


def test_bad_config_and_unloadable_base(tmp_path):
    (tmp_path / "serve.json").write_text(json.dumps({"base_model": "x", "cache_sise": 2}))
    code, line = failed_start(["--config", str(tmp_path / "serve.json")], tmp_path, "config")
    assert code == 2 and "unknown key 'cache_sise' (did you mean 'cache_size'?)" in line
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert", "hidden_size": "many"}')
    code, line = failed_start(["--base-model", str(broken), "--port", "0"], tmp_path, "broken")
    assert code == 3 and f"cannot load base model '{broken}'" in line


def test_sagemaker_serve_mode_and_sigterm_finishes_in_flight_requests(models, tmp_path):
    model_dir = tmp_path / "opt-ml-model"
    (model_dir / "adapters").mkdir(parents=True)
    (model_dir / "base").symlink_to(models["bert-cls"])
    (model_dir / "adapters" / "c3").symlink_to(models["c3"])
    token = "t0ken-of-this-deployment"
    server = ServerProcess(["serve", "--port-file", str(tmp_path / "port")], log_path=tmp_path / "sm.log",
                           env={"SM_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": "0",
                                "FASTUNER_MANAGEMENT_TOKEN": token}, port_args=False)
    server.wait_ready()
    assert (tmp_path / "port").read_text() == f"{server.port}\n"
    # SageMaker's server listens on every interface: its management API needs the deployment's token
    assert server.request("GET", "/adapters")[0] == 401
    status, listing = server.request("GET", "/adapters", headers={"Authorization": f"Bearer {token}"})
    assert status == 200
    assert [a["name"] for a in listing["adapters"]] == ["c3"]

    # A request whose body is still arriving is in flight when SIGTERM comes.
    body = json.dumps({"inputs": "how do I reset my password", "adapter": "c3"}).encode()
    client = socket.create_connection(("127.0.0.1", server.port))
    client.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
    wait_until(lambda: server.metrics()[("fastuner_inflight_requests", frozenset())] == 1)
    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: refuses_connections(server.port))
    assert server.proc.poll() is None  # still finishing the request
    client.sendall(body[10:])
    response = read_response(client)
    assert response.startswith(b"HTTP/1.1 200"), response
    assert b'"label"' in response
    assert server.wait_exit(60) == 0
    assert "stopped" in server.stderr().splitlines()[-1]


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def read_response(sock: socket.socket) -> bytes:
    sock.settimeout(60)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    return data
