"""Faults (issue 12): AWS calls that fail, named cloud faults, and local disks and servers that fail.

Each scenario ends in convergence or a clear message (exit 1, no traceback), with consistent state and
nothing created twice:

- `faults/aws calls`: the SageMaker cycle (bootstrap, apply datasets + training, plan, destroy) with a
  share of every AWS call failing (throttling, 500s, read timeouts after the call happened, connection
  resets; tests/stress/inject.py), re-run until it converges;
- named SageMaker faults (`ResourceLimitExceeded`, a failed job, a spot interruption, a lock object
  deleted by someone else, state in S3 that cannot be read);
- local faults (a full disk, a read-only state folder, a dataset changed while it is read, an inference
  server killed under load).

Trial i of a scenario draws from `random.Random(seed + i)`.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.stress import Report
from tests.stress.faultworld import (
    ADAPTER,
    BUCKET,
    DATASET,
    LOCK_KEY,
    LOCK_PREFIX,
    STATE_KEY,
    Cloud,
    Server,
    clear,
)
from tests.stress.localfaults import LOCAL

DEFECTS: list[str] = [
    "A conditional S3 put whose answer was lost (a read timeout or reset after S3 carried it out) was retried "
    "and refused with 412: the state write failed as 'changed underneath' and a lock renewal gave the lock up as "
    "taken over (state/s3: a conditional put whose answer was lost ... is this run's own).",
    "A holder whose state lock was deleted (or taken over) kept waiting for its training job without the lock "
    "(engine: a run that loses its state lock while operations run stops them waiting as on Ctrl-C).",
    "A state write that failed while recording a resource's failure (S3 throttling past the retries) was "
    "reported as a bug with a traceback when the retried record succeeded (engine: a state write that fails "
    "during apply stops the run with that error, whichever write it was).",
    "A full disk under the local object store or the state file was a bug report with a traceback, and left "
    "the state's temporary file behind (a full disk (or a read-only folder) under the local object store or "
    "the state file is a message naming it and the reason, not a traceback).",
    "A read-only state folder made apply fail with a traceback when it created the lock file (state/local: a "
    "lock file the folder refuses (read-only, full) is a message naming the state and the lock file).",
    "A dataset file cut short while apply read it was reported as row N being broken JSON, though the file was "
    "valid (data/scan: rows cut short because the file changed while it was read are reported as the file "
    "changing).",
]

KINDS = "throttle,500,timeout,reset"
MAX_RERUNS = 6  # a run under 20 % faults may fail; this many runs in a row must converge


def run(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None]) -> list[Report]:
    server = Server()
    reports = []
    try:
        reports.append(aws_calls(server, trials, seed, workdir / "aws-calls", log=log))
        for name, scenario in SAGEMAKER.items():
            reports.append(named(name, scenario, server, trials, seed, workdir / name.replace(" ", "-"), log=log))
    finally:
        server.close()
    for name, local in LOCAL.items():
        reports.append(local(trials, seed, workdir / name.replace(" ", "-"), log=log))
    return reports


def named(name: str, scenario: Callable[[Cloud, random.Random, Report], str | None], server: Server, trials: int,
          seed: int, workdir: Path, *, log: Callable[[str], None]) -> Report:
    """`trials` trials of one named SageMaker fault: each a fresh project on the shared server."""
    report = Report(f"faults/{name}")
    for i in range(trials):
        cloud = Cloud(server, workdir / f"trial-{seed + i}")
        try:
            problem = scenario(cloud, random.Random(seed + i), report)
        except Exception as exc:  # a check that could not even run is a failed trial, with its cause
            problem = f"the trial itself failed: {exc!r}"
        finally:
            cloud.close()
        if problem is None and cloud.errors:
            problem = cloud.errors[0]
        report.trial(seed + i, problem)
        log(f"{report.scenario} seed {seed + i}: {problem or 'ok'}")
    return report


# --- a share of every AWS call fails ------------------------------------------------------------


def aws_calls(server: Server, trials: int, seed: int, workdir: Path, *, log: Callable[[str], None],
              share: float = 0.2) -> Report:
    report = Report("faults/aws calls (20 %)" if share == 0.2 else f"faults/aws calls ({share:.0%})")
    for i in range(trials):
        rng = random.Random(seed + i)
        cloud = Cloud(server, workdir / f"trial-{seed + i}")
        try:
            problem = _cycle_under_faults(cloud, rng, share)
        finally:
            cloud.close()
        report.faults += cloud.faults()
        report.trial(seed + i, problem)
        log(f"{report.scenario} seed {seed + i}: {problem or 'ok'} ({cloud.faults()} faults)")
    return report


def _faults(rng: random.Random, share: float) -> str:
    return f"share:{share},seed:{rng.randrange(1 << 30)},kinds:{KINDS}"


def _until_done(cloud: Cloud, rng: random.Random, share: float, *args: str) -> tuple[str | None, str]:
    """Run the command under faults until it exits 0: (what went wrong, the last run's output)."""
    for attempt in range(1, MAX_RERUNS + 1):
        done = cloud.run(*args, faults=_faults(rng, share))
        problem = clear(done, None)
        if problem is not None:
            return f"{' '.join(args)} (run {attempt}): {problem}", ""
        if done.returncode == 0:
            return None, done.stdout + done.stderr
    return f"{' '.join(args)} did not converge in {MAX_RERUNS} runs under faults: {done.stderr[-800:]}", ""


def _cycle_under_faults(cloud: Cloud, rng: random.Random, share: float) -> str | None:
    cloud.env["AWS_MAX_ATTEMPTS"] = str(rng.choice([2, 3, 5]))  # fewer attempts: more faults get through
    problem, _ = _until_done(cloud, rng, share, "bootstrap", "--auto-approve")
    if problem:
        return problem
    cloud.play()
    problem, _ = _until_done(cloud, rng, share, "apply", "--auto-approve", "--lock-timeout", "20s")
    if problem:
        return problem
    if cloud.errors:
        return cloud.errors[0]
    problem = clear(cloud.run("plan", "--detailed-exitcode"), 0)  # no faults: it converged
    if problem:
        return f"plan after apply: {problem}"
    state = cloud.state()
    if state is None:
        return "no state after apply"
    adapter = state["resources"].get(ADAPTER) or {}
    if adapter.get("status") != "ready" or state["resources"].get(DATASET, {}).get("status") != "ready":
        return f"state after apply: {adapter.get('status')} {state['resources'].get(DATASET, {}).get('status')}"
    if len(cloud.world.created) != 1:
        return f"{len(cloud.world.created)} training jobs were created: {cloud.world.created}"
    if adapter["outputs"].get("job_name") != cloud.world.created[0]:
        return f"state names job {adapter['outputs'].get('job_name')}, the job is {cloud.world.created[0]}"
    names = {c["params"]["TrainingJobName"] for c in cloud.calls("CreateTrainingJob")}
    if names != set(cloud.world.created):
        return f"CreateTrainingJob was sent for {sorted(names)}"
    problem, said = _until_done(cloud, rng, share, "destroy", "--auto-approve", "--lock-timeout", "20s")
    if problem:
        return problem
    state = cloud.state()
    if state is None or state["resources"]:
        return f"resources left in state after destroy: {sorted((state or {}).get('resources', {}))}"
    left = [k for k in cloud.objects() if "/datasets/" in k or "/adapters/" in k]
    if left:
        return f"objects left after destroy: {left[:5]}"
    if any(k.startswith("fastuner-locks/") for k in cloud.objects("")) and "could not release the state lock" \
            not in said:
        return f"a lock object was left behind, and the run did not say so: {said[-1500:]}"
    return None


# --- named SageMaker faults -----------------------------------------------------------------------


def _converges(cloud: Cloud, jobs: int = 1) -> str | None:
    """Apply without faults converges (exit 0), the plan after it is empty, and `jobs` jobs exist."""
    problem = clear(cloud.run("apply", "--auto-approve", "--lock-timeout", "20s"), 0)
    if problem:
        return f"apply after the fault: {problem}"
    problem = clear(cloud.run("plan", "--detailed-exitcode"), 0)
    if problem:
        return f"plan after apply: {problem}"
    if len(cloud.world.created) != jobs or len(set(cloud.world.created)) != jobs:
        return f"{len(cloud.world.created)} training jobs were created, not {jobs}: {cloud.world.created}"
    adapter = (cloud.state() or {}).get("resources", {}).get(ADAPTER) or {}
    if adapter.get("status") != "ready" or adapter.get("outputs", {}).get("job_name") != cloud.world.created[-1]:
        return f"the adapter in state after apply: {adapter.get('status')}, {adapter.get('outputs', {}).get('job_name')}"
    return None


def _set_spot(cloud: Cloud, spot: bool) -> None:
    if not spot:
        spec = cloud.folder / "fastuner.yaml"
        spec.write_text(spec.read_text().replace("spot: true, max_runtime: 30m, max_wait: 1h",
                                                 "spot: false, max_runtime: 30m"))


def resource_limit(cloud: Cloud, rng: random.Random, report: Report) -> str | None:
    """CreateTrainingJob refused for the account's instance quota: the message names the quota and
    where to raise it, nothing was started, the dataset is kept; the next apply trains once."""
    spot = rng.random() < 0.5
    _set_spot(cloud, spot)
    quota = f"ml.g5.xlarge for {'spot training job' if spot else 'training job'}"
    if problem := clear(cloud.run("bootstrap", "--auto-approve"), 0):
        return f"bootstrap: {problem}"
    cloud.play()
    refused = cloud.run("apply", "--auto-approve", faults=f"share:1,kinds:quota,ops:CreateTrainingJob,quota:{quota}")
    report.faults += cloud.faults()
    if problem := clear(refused, 1):
        return f"apply over the quota: {problem}"
    said = refused.stdout + refused.stderr
    if f"'{quota} usage'" not in said or "Service Quotas" not in said:
        return f"the message does not name the quota ({quota} usage) and where to raise it: {said[-1200:]}"
    if cloud.world.created:
        return f"a job was created although SageMaker refused it: {cloud.world.created}"
    state = cloud.state() or {"resources": {}}
    if state["resources"].get(DATASET, {}).get("status") != "ready":
        return "the dataset was not recorded ready"
    if (state["resources"].get(ADAPTER) or {}).get("status") == "ready":
        return "the refused adapter is recorded ready"
    return _converges(cloud)


FAILURE_REASONS = (
    "AlgorithmError: ExecuteUserScriptError: CUDA out of memory. Tried to allocate 2.00 GiB",
    "ClientError: Please ensure the training data is valid: train.jsonl is empty",
    "InternalServerError: We encountered an internal error. Please try again.",
)


def failed_job(cloud: Cloud, rng: random.Random, report: Report) -> str | None:
    """The first job fails: the apply says why and records the reason; the next apply starts the next
    attempt (`-r1`), on the same checkpoint folder, which completes."""
    reason = rng.choice(FAILURE_REASONS)
    if problem := clear(cloud.run("bootstrap", "--auto-approve"), 0):
        return f"bootstrap: {problem}"
    cloud.play(lambda name, job: cloud.world.fail(name, reason) if len(cloud.world.created) == 1
               else cloud.finish(name))
    failed = cloud.run("apply", "--auto-approve")
    report.faults += 1
    if problem := clear(failed, 1):
        return f"apply of a failing job: {problem}"
    if reason not in failed.stdout + failed.stderr:
        return f"the failure reason is not shown: {(failed.stdout + failed.stderr)[-1200:]}"
    adapter = (cloud.state() or {}).get("resources", {}).get(ADAPTER) or {}
    if adapter.get("status") != "failed" or reason not in (adapter.get("error") or ""):
        return f"state does not record the failure: {adapter.get('status')}, {adapter.get('error')}"
    if problem := _converges(cloud, jobs=2):
        return problem
    first, retry = (c["params"] for c in cloud.calls("CreateTrainingJob"))
    if retry["TrainingJobName"] != first["TrainingJobName"] + "-r1":
        return f"the retry is {retry['TrainingJobName']}"
    if retry["CheckpointConfig"] != first["CheckpointConfig"]:
        return f"the retry checkpoints elsewhere: {retry['CheckpointConfig']} vs {first['CheckpointConfig']}"
    return None


def spot_interruption(cloud: Cloud, rng: random.Random, report: Report) -> str | None:
    """Spot capacity taken back while the job trains. Either SageMaker waits and the same job resumes
    (secondary status Interrupted, then Training again), or capacity never came back within max_wait
    (the job is Stopped, MaxWaitTimeExceeded) and the next apply's attempt resumes from the checkpoints
    the first wrote. Every request asks for spot with a CheckpointConfig; state records the job that
    completed and what spot saved."""
    resumes_within = rng.random() < 0.5
    if problem := clear(cloud.run("bootstrap", "--auto-approve"), 0):
        return f"bootstrap: {problem}"
    seen: dict[str, int] = {}
    checkpoint_found: list[bool] = []

    def checkpoint_key(job) -> tuple[str, str]:
        uri = job.checkpoint_config["S3Uri"] if isinstance(job.checkpoint_config, dict) else ""
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return bucket, prefix.rstrip("/") + "/checkpoint-12/adapter_model.safetensors"

    def sagemaker(name: str, job) -> None:
        step = seen[name] = seen.get(name, 0) + 1
        if len(cloud.world.created) > 1 and step == 1:  # the next attempt: are the checkpoints still there?
            bucket, key = checkpoint_key(job)
            checkpoint_found.append(bool(cloud.s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount")))
        if len(cloud.world.created) > 1 or (resumes_within and step >= 4):
            cloud.finish(name)
            cloud.world.job(name).training_time_in_seconds = 400  # spot billed 187 of them
        elif step == 1:
            bucket, key = checkpoint_key(job)
            cloud.s3.put_object(Bucket=bucket, Key=key, Body=b"\0" * 64)  # the program checkpointed
            job.secondary_status = "Interrupted"
        elif step == 3 and resumes_within:
            job.secondary_status = "Training"
        elif step == 3:
            job.training_job_status, job.secondary_status = "Stopped", "MaxWaitTimeExceeded"

    cloud.play(sagemaker)
    first = cloud.run("apply", "--auto-approve")
    report.faults += 1
    if resumes_within:
        if problem := clear(first, 0):
            return f"apply through an interruption: {problem}"
        if problem := _converges(cloud, jobs=1):
            return problem
    else:
        if problem := clear(first, 1):
            return f"apply of a job stopped for max_wait: {problem}"
        if "compute.max_wait" not in first.stdout + first.stderr:
            return f"the message does not point at compute.max_wait: {(first.stdout + first.stderr)[-1000:]}"
        if problem := _converges(cloud, jobs=2):
            return problem
        if checkpoint_found != [True]:
            return "the next attempt started without the first attempt's checkpoints in S3"
    requests = [c["params"] for c in cloud.calls("CreateTrainingJob")]
    if not all(r["EnableManagedSpotTraining"] and r["CheckpointConfig"]["S3Uri"] == requests[0]["CheckpointConfig"]
               ["S3Uri"] and r["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints" for r in requests):
        return f"the requests do not all ask for spot with one checkpoint folder: {requests}"
    outputs = cloud.state()["resources"][ADAPTER]["outputs"]
    if not outputs.get("spot") or outputs.get("spot_savings") != round(1 - 187 / 400, 4):
        return f"state does not record the spot run: spot={outputs.get('spot')}, savings={outputs.get('spot_savings')}"
    return None


def lock_deleted(cloud: Cloud, rng: random.Random, report: Report) -> str | None:
    """Someone deletes the state lock while an apply waits for its training job (a force-unlock by
    hand, a lifecycle rule): the holder notices at its next renewal, stops waiting (the job runs on and
    is recorded as pending), says the lock was lost and exits 1; the next apply adopts the job."""
    if problem := clear(cloud.run("bootstrap", "--auto-approve"), 0):
        return f"bootstrap: {problem}"
    gate = threading.Event()
    cloud.play(lambda name, job: cloud.finish(name) if gate.is_set() else None)
    holder = cloud.start("apply", "--auto-approve")
    try:
        deadline = time.monotonic() + 90
        while not cloud.world.created and time.monotonic() < deadline and holder.poll() is None:
            time.sleep(0.05)
        if not cloud.world.created:
            return f"the apply never started its job: {holder.communicate(timeout=30)}"
        time.sleep(rng.uniform(0.0, 2.0))  # somewhere in its polling
        cloud.s3.delete_object(Bucket=BUCKET, Key=LOCK_KEY)
        report.faults += 1
        deleted = time.monotonic()
        try:
            out, err = holder.communicate(timeout=20)  # a 3 s lease: renewed every second
        except subprocess.TimeoutExpired:
            return (f"the holder was still running {time.monotonic() - deleted:.0f} s after its lock was deleted "
                    "(it waits for its training job without the lock)")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()
    if problem := clear(subprocess.CompletedProcess(holder.args, holder.returncode, out, err), 1):
        return f"the holder: {problem}"
    if "lost the state lock" not in out + err:
        return f"the holder does not say it lost the lock: {(out + err)[-1000:]}"
    state = cloud.state() or {"resources": {}}
    adapter = state["resources"].get(ADAPTER) or {}
    if state["resources"].get(DATASET, {}).get("status") != "ready" or \
            (adapter.get("pending") or {}).get("detail", {}).get("job_name") != cloud.world.created[0]:
        return f"state does not record the running job: {adapter}"
    gate.set()
    return _converges(cloud, jobs=1)


def state_unreadable(cloud: Cloud, rng: random.Random, report: Report) -> str | None:
    """The state object cannot be read: bytes that are not a state (garbage, truncated JSON, another
    document, UTF-16), or S3 denies reading it. Every command says so naming s3://bucket/key, exits 1
    with no traceback, and overwrites nothing (no new version, no lock left behind)."""
    if problem := clear(cloud.run("bootstrap", "--auto-approve"), 0):
        return f"bootstrap: {problem}"
    cloud.play()
    if problem := clear(cloud.run("apply", "--auto-approve"), 0):
        return f"the first apply: {problem}"
    kind = rng.choice(["garbage", "truncated", "another document", "utf-16", "denied"])
    good = cloud.s3.get_object(Bucket=BUCKET, Key=STATE_KEY)["Body"].read()
    if kind != "denied":
        bad = {"garbage": bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096))),
               "truncated": good[: rng.randrange(1, len(good))],
               "another document": json.dumps({"name": "not a state", "items": [1, 2]}).encode(),
               "utf-16": good.decode().encode("utf-16")}[kind]
        cloud.s3.put_object(Bucket=BUCKET, Key=STATE_KEY, Body=bad)
    versions = cloud.state_versions()
    stored = cloud.s3.get_object(Bucket=BUCKET, Key=STATE_KEY)["Body"].read()
    faults = "share:1,kinds:denied,ops:GetObject" if kind == "denied" else ""
    for command in rng.sample([("plan",), ("apply", "--auto-approve"), ("destroy", "--auto-approve"),
                               ("state", "pull", "-"), ("state", "list")], 3):
        ran = cloud.run(*command, faults=faults)
        report.faults += 1
        if problem := clear(ran, 1):
            return f"{' '.join(command)} on {kind} state: {problem}"
        if f"s3://{BUCKET}/{STATE_KEY}" not in ran.stderr:
            return f"{' '.join(command)} on {kind} state does not name s3://{BUCKET}/{STATE_KEY}: {ran.stderr[-1000:]}"
    if cloud.state_versions() != versions or \
            cloud.s3.get_object(Bucket=BUCKET, Key=STATE_KEY)["Body"].read() != stored:
        return f"the {kind} state was overwritten"
    if any(k.startswith(LOCK_PREFIX) for k in cloud.objects("")):
        return "a lock was left behind"
    if len(cloud.world.created) != 1:
        return f"{len(cloud.world.created)} jobs were created"
    return None


SAGEMAKER: dict[str, Callable[[Cloud, random.Random, Report], str | None]] = {
    "resource limit": resource_limit,
    "failed job": failed_job,
    "spot interruption": spot_interruption,
    "lock deleted": lock_deleted,
    "state unreadable": state_unreadable,
}


if __name__ == "__main__":
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for r in run(int(sys.argv[1]) if len(sys.argv) > 1 else 1, 0, Path(tmp), log=print):
            print(r)
