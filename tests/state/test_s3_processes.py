"""Two processes contending for one S3 state lock, against a real HTTP endpoint (moto's server on
127.0.0.1, reached through AWS_ENDPOINT_URL): `fastuner apply` refused naming the holder and when its
lease ends; waiting for it with --lock-timeout; taking over the lock of a holder that was killed, once
its lease ended by the server's clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.cli.helpers import fastuner_subprocess, intents_rows, write_jsonl

KEY = "teams/demo.json"
HOLDER = """
import sys
from fastuner.aws.clients import AwsSession
from fastuner.state.s3 import S3StateStore
bucket, key, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = S3StateStore(AwsSession(), bucket, key, lease=lease, renew_every=lease / 4)
with store.lock("apply (test holder)") as info:
    print(info.id, flush=True)
    sys.stdin.readline()
"""


@pytest.fixture(scope="module")
def endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_MAX_ATTEMPTS="2")
    return env


@pytest.fixture
def project(tmp_path: Path, endpoint: str) -> tuple[Path, str, object]:
    bucket = f"state-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    write_jsonl(tmp_path / "data" / "intents.jsonl", intents_rows(120))
    (tmp_path / "fastuner.yaml").write_text(
        "version: 1\nproject: demo\n"
        f"backend: {{s3: {{bucket: {bucket}, key: {KEY}, region: us-east-1}}}}\n"
        "provider: {local: {}}\n"
        "datasets:\n  intents: {path: data/intents.jsonl, task: classification}\n")
    return tmp_path, bucket, s3


def hold(bucket: str, env: dict[str, str], lease: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, bucket, KEY, str(lease)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def release(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()


@pytest.mark.slow
def test_a_second_apply_fails_naming_the_holder_or_waits_for_it(project, env) -> None:
    folder, bucket, s3 = project
    holder, lock_id = hold(bucket, env, lease=4)
    try:
        refused = fastuner_subprocess("apply", "--auto-approve", "--lock-timeout", "1s", cwd=folder, env=env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        err = refused.stderr
        assert "the state is locked" in err and "waited 1s" in err and "Traceback" not in err
        assert lock_id in err and f"pid {holder.pid}" in err and "apply (test holder)" in err
        assert "lease:   ends" in err and "if the holder is gone, fastuner takes the lock over then" in err

        waiter = subprocess.Popen([sys.executable, "-m", "fastuner.cli.main", "apply", "--auto-approve",
                                   "--lock-timeout", "60s"], cwd=folder, env={**env, "PYTHONUNBUFFERED": "1"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said = ""
        for line in waiter.stdout:  # the holder lets go once the waiter says it waits
            said += line
            if "waiting for it" in line:
                release(holder)
                break
        out, err = waiter.communicate(timeout=120)
    finally:
        holder.kill()
        holder.wait(10)
    assert waiter.returncode == 0, said + out + err
    assert "the state is locked by" in said and "its lease ends in" in said
    assert "Apply complete!" in out
    assert "dataset.intents" in s3.get_object(Bucket=bucket, Key=KEY)["Body"].read().decode()
    assert s3.list_objects_v2(Bucket=bucket, Prefix="fastuner-locks/").get("KeyCount") == 0


@pytest.mark.slow
def test_the_lock_of_a_killed_holder_is_taken_over_when_its_lease_ends(project, env) -> None:
    folder, bucket, s3 = project
    holder, _ = hold(bucket, env, lease=2)
    holder.send_signal(signal.SIGKILL)  # a cancelled CI job: no chance to release
    holder.wait(10)
    start = time.monotonic()
    run = fastuner_subprocess("apply", "--auto-approve", "--lock-timeout", "30s", cwd=folder, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "took over the state lock of" in run.stdout and f"pid {holder.pid}" in run.stdout
    assert "Apply complete!" in run.stdout
    assert time.monotonic() - start < 25
    assert s3.list_objects_v2(Bucket=bucket, Prefix="fastuner-locks/").get("KeyCount") == 0
