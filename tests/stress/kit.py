"""What the crash and race categories share: a moto server in this process playing SageMaker
(tests/aws/motoext.py's JobWorld, jobs finished by a thread after a delay the trial draws), the `fastuner`
CLI as subprocesses in their own process groups, killed, stopped and collected, and state read straight
from where a store keeps it and parsed as fastuner parses it (`parse_state`: JSON, version, schema).

Every CLI started here is recorded, and `Procs.close()` kills what is left of each one's process group,
so a trial that fails halfway leaves nothing behind for the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastuner.providers.local.processes import alive

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = f"fastuner-{ACCOUNT}"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/fastuner-stress"


# --- processes -------------------------------------------------------------------------------------


@dataclass
class Done:
    """A finished CLI run: exit code and output (a killed one exits -9)."""

    code: int
    out: str
    err: str
    secs: float

    @property
    def text(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"


@dataclass
class Procs:
    """The CLI runs of one trial family, each in its own process group; `close` kills every group left."""

    cwd: Path
    env: dict[str, str]
    started: list[subprocess.Popen] = field(default_factory=list)

    def start(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "fastuner.cli.main", *args], cwd=cwd or self.cwd,
                                env=env or self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        proc.started = time.monotonic()  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 300, cwd: Path | None = None) -> Done:
        return self.collect(self.start(*args, cwd=cwd), timeout=timeout)

    @staticmethod
    def collect(proc: subprocess.Popen, timeout: float = 300) -> Done:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            out, err = proc.communicate(timeout=30)
            err += f"\n[stress] killed after {timeout:.0f} s"
        return Done(proc.returncode, out, err, time.monotonic() - proc.started)  # type: ignore[attr-defined]

    def close(self) -> None:
        for proc in self.started:
            kill_group(proc.pid)
            with contextlib.suppress(Exception):
                proc.communicate(timeout=10)
        self.started.clear()


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)




def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (a trial's folder: its servers and trainers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def kill_mentioning(text: str) -> list[int]:
    """Kill the process groups of every process mentioning `text`; the pids found."""
    pids = pids_mentioning(text)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids


def traceback_in(done: Done) -> str | None:
    return "a traceback on stderr:\n" + done.err[-2000:] if "Traceback" in done.err else None


# --- state -----------------------------------------------------------------------------------------


def parse(text: str, where: str) -> Any:
    """A state document as fastuner reads it (JSON, format version, the pydantic model); raises UserError."""
    from fastuner.state.store import parse_state

    return parse_state(text, where)


def strings_in(value: Any) -> set[str]:
    """Every string anywhere in a JSON-like value (what state points at)."""
    found: set[str] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            found.add(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return found


def mentions(state: Any, needle: str) -> bool:
    """Whether some string of the state contains `needle` (a key, a job name, a run folder name)."""
    data = state.model_dump(mode="json") if state is not None else {}
    return any(needle in s for s in strings_in(data))


# --- moto playing SageMaker -----------------------------------------------------------------------


class Moto:
    """A moto server on 127.0.0.1 in this process, JobWorld installed; jobs are `InProgress` until the
    finisher thread completes them `finish_after` seconds after it first sees them (per trial)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        from tests.aws.motoext import JobWorld

        self.world = JobWorld(REGION).install()
        self.world.hold = True
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self.finish_after = 0.5
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        import boto3

        kw: dict[str, Any] = dict(endpoint_url=self.url, region_name=REGION, aws_access_key_id="testing",
                                  aws_secret_access_key="testing")
        self.s3 = boto3.client("s3", **kw)
        self.sagemaker = boto3.client("sagemaker", **kw)
        self._thread = threading.Thread(target=self._finisher, daemon=True)
        self._thread.start()

    def env(self, call_log: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FASTUNER_"))}
        env.update(AWS_ENDPOINT_URL=self.url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   AWS_DEFAULT_REGION=REGION, AWS_MAX_ATTEMPTS="2", FASTUNER_AWS_CALL_LOG=str(call_log),
                   FASTUNER_SAGEMAKER_POLL="0.2", PYTHONUNBUFFERED="1", COLUMNS="200",
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        return env

    def _finisher(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                now = time.monotonic()
                try:
                    jobs = self.world.jobs()
                except Exception:  # moto resetting
                    continue
                for name, job in jobs.items():
                    if job.training_job_status != "InProgress":
                        continue
                    first = self._seen.setdefault(name, now)
                    if now - first >= self.finish_after:
                        with contextlib.suppress(Exception):
                            self.world.finish(name, lambda b, k, d: self.s3.put_object(Bucket=b, Key=k, Body=d))

    def jobs(self, project: str) -> dict[str, str]:
        """Training jobs of a project (by its tag, as fastuner tags them): name -> status."""
        out = {}
        for name, job in self.world.jobs().items():
            tags = {t["Key"]: t["Value"] for t in (getattr(job, "tags", None) or [])}
            if tags.get("fastuner:project") == project:
                out[name] = job.training_job_status
        return out

    def keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def state(self, key: str) -> Any:
        """The state object parsed as fastuner parses it (None when there is none)."""
        try:
            body = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return parse(body.decode("utf-8"), f"s3://{BUCKET}/{key}")

    def versions(self, key: str) -> list[Any]:
        """Every stored version of the state object, oldest first, parsed."""
        versions = []
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=key):
            versions += [v for v in page.get("Versions", []) if v["Key"] == key]
        out = []
        for v in versions:
            body = self.s3.get_object(Bucket=BUCKET, Key=key, VersionId=v["VersionId"])["Body"].read()
            out.append(parse(body.decode("utf-8"), f"{key}?versionId={v['VersionId']}"))
        return sorted(out, key=lambda s: s.serial)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.stop()
        self.world.uninstall()


def calls(log: Path, operation: str | None = None) -> list[dict]:
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in rows if operation is None or r["operation"] == operation]


# --- projects --------------------------------------------------------------------------------------


def intents(folder: Path, rows: int = 120, seed: int = 0) -> Path:
    from tests.cli.helpers import intents_rows, write_jsonl

    return write_jsonl(folder / "data" / "intents.jsonl", intents_rows(rows, seed))


def sagemaker_project(folder: Path, name: str, *, lease: str = "3s", adapters: int = 2,
                      provider: str = "sagemaker") -> Path:
    """A SageMaker project `name` (its own state key and S3 prefix in the shared bucket): one dataset,
    `adapters` adapters trained on it."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "data" / "intents.jsonl").exists():
        intents(folder)
    lines = ["version: 1", f"project: {name}",
             f"backend: {{s3: {{bucket: {BUCKET}, key: state/{name}.json, region: {REGION}, lock_lease: {lease}}}}}"]
    if provider == "sagemaker":
        lines += ["provider:", "  sagemaker:", f"    region: {REGION}", f'    role_arn: "{ROLE}"',
                  f"    bucket: {BUCKET}", f"    prefix: {name}"]
    else:
        lines += ["provider: {local: {}}"]
    lines += ["datasets:", "  intents: {path: data/intents.jsonl, task: classification, "
              "split: {train: 0.8, validation: 0.1, test: 0.1, seed: 42}}"]
    if adapters and provider == "sagemaker":
        lines.append("adapters:")
        for i in range(adapters):
            lines += [f"  lora-{i}:", "    base_model: sentence-transformers/all-MiniLM-L6-v2",
                      "    dataset: intents", f"    lora: {{r: {8 * (i + 1)}, alpha: 16, dropout: 0.0}}",
                      "    training: {epochs: 1, max_seq_len: 64}",
                      "    compute: {instance_type: ml.g5.xlarge, spot: true, max_runtime: 30m, max_wait: 1h}"]
    (folder / "fastuner.yaml").write_text("\n".join(lines) + "\n")
    return folder


def bootstrap(moto: Moto, folder: Path, env: dict[str, str]) -> None:
    """The bucket (versioned) and the execution role, once per moto server, through `fastuner bootstrap`."""
    done = subprocess.run([sys.executable, "-m", "fastuner.cli.main", "bootstrap", "--auto-approve",
                           "--role-name", ROLE.rsplit("/", 1)[1]], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"bootstrap failed: {done.stdout}\n{done.stderr}")


@contextlib.contextmanager
def folder(path: Path) -> Iterator[Path]:
    """A fresh folder, removed afterwards."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
