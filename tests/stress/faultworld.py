"""The SageMaker world the fault scenarios run in: one moto server on 127.0.0.1 for the whole run, moto's
SageMaker extended by `JobWorld` (jobs run until this process ends them, tests/aws/motoext.py), and per
trial a fresh copy of the AWS quickstart driven through the CLI as a subprocess
(`python -m tests.stress.faultcli`, the CLI with the fault injector of inject.py when FASTUNER_FAULTS is
set). Every AWS call the CLI makes is logged (FASTUNER_AWS_CALL_LOG): checks are on what it sent and on
the state it recorded."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from tests.aws.motoext import JobWorld

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = f"fastuner-{ACCOUNT}"
STATE_KEY = "state/quickstart-aws.json"
LOCK_PREFIX = "fastuner-locks/"
LOCK_KEY = f"{LOCK_PREFIX}{STATE_KEY}.lock"
ADAPTER = "adapter.intents-lora"
DATASET = "dataset.intents"


class Server:
    """The moto server and the job world, started once and shared by every trial."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self.world = JobWorld(REGION).install()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10)
        self.world.created.clear()
        self.world.hold = True

    def close(self) -> None:
        self._server.stop()
        self.world.uninstall()


class Cloud:
    """One trial's project folder, its environment, and this process playing SageMaker."""

    def __init__(self, server: Server, folder: Path, *, lease: str = "3s") -> None:
        server.reset()
        self.server, self.world, self.folder = server, server.world, folder / "quickstart-aws"
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(ROOT / "examples" / "quickstart-aws", self.folder)
        shutil.copytree(ROOT / "examples" / "quickstart" / "data", folder / "quickstart" / "data")
        spec = self.folder / "fastuner.yaml"
        spec.write_text(spec.read_text().replace('region: "${var.region}"}',
                                                 f'region: "${{var.region}}", lock_lease: {lease}}}'))
        kw: dict[str, Any] = dict(endpoint_url=server.url, region_name=REGION, aws_access_key_id="testing",
                                  aws_secret_access_key="testing")
        self.s3 = boto3.client("s3", **kw)
        self.logs = boto3.client("logs", **kw)
        self.call_log = folder / "calls.jsonl"
        self.fault_log = folder / "faults.jsonl"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FASTUNER_"))}
        self.env.update(AWS_ENDPOINT_URL=server.url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                        AWS_DEFAULT_REGION=REGION, AWS_MAX_ATTEMPTS="3", FASTUNER_VAR_account=ACCOUNT,
                        FASTUNER_AWS_CALL_LOG=str(self.call_log), FASTUNER_SAGEMAKER_POLL="0.2",
                        PYTHONUNBUFFERED="1", COLUMNS="200",
                        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        self._stop = threading.Event()
        self._player: threading.Thread | None = None
        self.errors: list[str] = []  # what went wrong in the player thread

    # --- the CLI ---------------------------------------------------------------------------------

    def run(self, *args: str, faults: str = "", timeout: float = 180) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if faults:
            env["FASTUNER_FAULTS"] = f"{faults},log:{self.fault_log}"
        return subprocess.run([sys.executable, "-m", "tests.stress.faultcli", *args], cwd=self.folder, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str, faults: str = "") -> subprocess.Popen:
        env = dict(self.env)
        if faults:
            env["FASTUNER_FAULTS"] = f"{faults},log:{self.fault_log}"
        return subprocess.Popen([sys.executable, "-m", "tests.stress.faultcli", *args], cwd=self.folder, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def calls(self, operation: str | None = None) -> list[dict]:
        if not self.call_log.exists():
            return []
        calls = [json.loads(line) for line in self.call_log.read_text().splitlines()]
        return [c for c in calls if operation is None or c["operation"] == operation]

    def faults(self) -> int:
        if not self.fault_log.exists():
            return 0
        return len(self.fault_log.read_text().splitlines())

    def state(self) -> dict[str, Any] | None:
        """The state as stored (read directly, not through the CLI), or None if there is none."""
        try:
            body = self.s3.get_object(Bucket=BUCKET, Key=STATE_KEY)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return json.loads(body)

    def state_versions(self) -> list[str]:
        answer = self.s3.list_object_versions(Bucket=BUCKET, Prefix=STATE_KEY)
        return [v["VersionId"] for v in answer.get("Versions") or [] if v["Key"] == STATE_KEY]

    def objects(self, prefix: str = "quickstart-aws/") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents") or []]

    # --- playing SageMaker --------------------------------------------------------------------------

    def finish(self, name: str) -> None:
        group, stream = "/aws/sagemaker/TrainingJobs", f"{name}/algo-1-1712345678"
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
            self.logs.create_log_group(logGroupName=group)
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
            self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
        self.logs.put_log_events(logGroupName=group, logStreamName=stream,
                                 logEvents=[{"timestamp": int(time.time() * 1000),
                                             "message": "[fastuner] step=12/12 loss=0.4210 lr=0.0003"}])
        self.world.finish(name, lambda b, k, d: self.s3.put_object(Bucket=b, Key=k, Body=d), billable=187,
                          metrics={"eval_loss": 0.387, "eval_accuracy": 0.906})

    def play(self, on_running: Callable[[str, Any], None] | None = None, every: float = 0.3) -> None:
        """Until `close`, call `on_running(name, job)` for each job in progress (default: finish it)."""
        act = on_running or (lambda name, job: self.finish(name))

        def loop() -> None:
            while not self._stop.wait(every):
                for name, job in self.world.jobs().items():
                    if job.training_job_status == "InProgress":
                        try:
                            act(name, job)
                        except Exception as exc:
                            self.errors.append(f"playing SageMaker on {name}: {exc!r}")

        self._player = threading.Thread(target=loop, daemon=True)
        self._player.start()

    def close(self) -> None:
        self._stop.set()
        if self._player is not None:
            self._player.join(10)
            self._player = None
        self._stop = threading.Event()


def clear(run: subprocess.CompletedProcess, code: int | None = 0) -> str | None:
    """None when the run exited `code` (None: 0 or 1) with no traceback; what went wrong otherwise."""
    if "Traceback" in run.stderr or "Traceback" in run.stdout:
        return f"a traceback (exit {run.returncode}): {run.stdout[-2000:]}{run.stderr[-2000:]}"
    if code is None:
        if run.returncode not in (0, 1):
            return f"exit {run.returncode}: {run.stderr[-800:]}"
        if run.returncode == 1 and not run.stderr.strip() and "failed" not in run.stdout.lower():
            return f"exit 1 with no message: {run.stdout[-800:]}"
        return None
    if run.returncode != code:
        return f"exit {run.returncode}, not {code}:\n{run.stdout[-1200:]}\n{run.stderr[-1200:]}"
    return None
