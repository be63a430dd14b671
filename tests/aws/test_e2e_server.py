"""The `fastuner` CLI as a subprocess against a moto server on 127.0.0.1 (AWS_ENDPOINT_URL): the AWS
quickstart (examples/quickstart-aws) bootstrapped, planned, applied, re-planned with no change, its
training log read from CloudWatch, and destroyed; two applies at once; an apply killed while its job
runs, re-run: it adopts the job instead of starting it twice. moto's SageMaker is extended for the run
(tests/aws/motoext.py): jobs run until this test finishes them, as SageMaker's would.

Every AWS call the CLI makes is appended to a call log (FASTUNER_AWS_CALL_LOG); the assertions are on
those calls — what fastuner sent — and on the state it recorded, and the call log of the whole cycle is
checked against `fastuner iam-policy`: the policy allows every call made."""

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
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.aws.motoext import JobWorld

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REGION = "us-east-1"
ADDRESS = "adapter.intents-lora"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, JobWorld]]:
    world = JobWorld(REGION).install()
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    try:
        yield f"http://{host}:{port}", world
    finally:
        srv.stop()
        world.uninstall()


class Cloud:
    """This test's view of the moto server: clients, the job world, a finisher playing SageMaker."""

    def __init__(self, url: str, world: JobWorld, folder: Path) -> None:
        self.url, self.world, self.folder = url, world, folder
        kw = dict(endpoint_url=url, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
        self.s3 = boto3.client("s3", **kw)
        self.logs = boto3.client("logs", **kw)
        self.call_log = folder / "calls.jsonl"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FASTUNER_"))}
        self.env.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                        AWS_DEFAULT_REGION=REGION, AWS_MAX_ATTEMPTS="2", FASTUNER_VAR_account=ACCOUNT,
                        FASTUNER_AWS_CALL_LOG=str(self.call_log), FASTUNER_SAGEMAKER_POLL="0.2",
                        FASTUNER_CACHE_DIR=str(folder / ".cache"),
                        PYTHONUNBUFFERED="1", COLUMNS="200")
        self._stop = threading.Event()
        self._finisher: threading.Thread | None = None

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fastuner.cli.main", *args], cwd=self.folder, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "fastuner.cli.main", *args], cwd=self.folder, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def calls(self, operation: str | None = None) -> list[dict]:
        if not self.call_log.exists():
            return []
        calls = [json.loads(line) for line in self.call_log.read_text().splitlines()]
        return [c for c in calls if operation is None or c["operation"] == operation]

    def mark(self) -> int:
        return len(self.calls())

    def since(self, mark: int) -> list[dict]:
        return self.calls()[mark:]

    # --- playing SageMaker ----------------------------------------------------------------------

    def finish(self, name: str) -> None:
        """The job trains: its log in CloudWatch (as the program prints it), then its model.tar.gz."""
        group, stream = "/aws/sagemaker/TrainingJobs", f"{name}/algo-1-1712345678"
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
            self.logs.create_log_group(logGroupName=group)
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
            self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
        now = int(time.time() * 1000)
        lines = ["[fastuner] phase=train steps=12", "[fastuner] step=12/12 loss=0.4210 lr=0.0003",
                 "[fastuner] eval_loss=0.3870 eval_accuracy=0.9060"]
        self.logs.put_log_events(logGroupName=group, logStreamName=stream,
                                 logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(lines)])
        self.world.finish(name, lambda b, k, d: self.s3.put_object(Bucket=b, Key=k, Body=d), billable=187,
                          metrics={"eval_loss": 0.387, "eval_accuracy": 0.906})

    def autofinish(self) -> None:
        """Finish every job shortly after it starts, until the test ends."""

        def loop() -> None:
            while not self._stop.wait(0.3):
                for name, job in self.world.jobs().items():
                    if job.training_job_status == "InProgress":
                        self.finish(name)

        self._finisher = threading.Thread(target=loop, daemon=True)
        self._finisher.start()

    def close(self) -> None:
        self._stop.set()
        if self._finisher is not None:
            self._finisher.join(5)


@pytest.fixture
def cloud(server, tmp_path: Path) -> Iterator[Cloud]:
    import urllib.request

    url, world = server
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10)
    world.created.clear()
    world.hold = True
    folder = tmp_path / "quickstart-aws"
    shutil.copytree(ROOT / "examples" / "quickstart-aws", folder)
    shutil.copytree(ROOT / "examples" / "quickstart" / "data", tmp_path / "quickstart" / "data")
    text = (folder / "fastuner.yaml").read_text()
    (folder / "fastuner.yaml").write_text(text.replace("region: \"${var.region}\"}",
                                                       "region: \"${var.region}\", lock_lease: 3s}"))
    c = Cloud(url, world, folder)
    yield c
    c.close()


def ok(run: subprocess.CompletedProcess, code: int = 0) -> str:
    assert run.returncode == code, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    return run.stdout


def test_the_aws_quickstart_cycle_and_the_policy_that_covers_it(cloud: Cloud) -> None:
    from fastuner.config.loader import load_spec
    from fastuner.providers.sagemaker.iam import RUNNER, covers, policy, read_call_log, requests_of, scope_of

    ok(cloud.run("bootstrap", "--auto-approve"))
    assert "Plan: 2 to create" in ok(cloud.run("plan", "--detailed-exitcode"), 2)
    cloud.autofinish()
    out = ok(cloud.run("apply", "--auto-approve"))
    assert "Apply complete! Resources: 2 created" in out
    [create] = cloud.calls("CreateTrainingJob")
    sent = create["params"]
    assert sent["AlgorithmSpecification"]["TrainingImage"].startswith(
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:")
    assert sent["EnableManagedSpotTraining"] is True
    assert sent["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800, "MaxWaitTimeInSeconds": 3600}
    assert {t["Key"]: t["Value"] for t in sent["Tags"]}.items() >= {
        "fastuner:project": "quickstart-aws", "fastuner:workspace": "default", "fastuner:address": ADDRESS}.items()
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in sent["InputDataConfig"]}
    assert set(channels) == {"train", "validation", "test"}
    assert all(u.startswith(f"s3://fastuner-{ACCOUNT}/quickstart-aws/datasets/") for u in channels.values())

    state = json.loads(ok(cloud.run("state", "pull", "-")))
    adapter = state["resources"][ADDRESS]
    assert adapter["status"] == "ready" and adapter["outputs"]["billable_seconds"] == 187
    # what it cost beside what the plan estimated from the dataset's tokens (counted, as the cache shows)
    cost = adapter["outputs"]["cost"]
    assert cost["spent_usd"] == round(187 * cost["usd_per_hour"] / 3600, 4) and cost["train_tokens"] > 0
    assert cost["estimate_usd"] <= cost["max_one_time_usd"] and (cloud.folder / ".cache" / "tokens.json").exists()
    report = json.loads(ok(cloud.run("cost", "--json")))
    assert (report["kind"], report["provider"]) == ("cost", "sagemaker")
    assert report["total"]["spent_usd"] == round(cost["spent_usd"], 2) and report["total"]["compared"] == 1
    assert adapter["outputs"]["metrics"]["eval_accuracy"] == pytest.approx(0.906)

    mark = cloud.mark()
    ok(cloud.run("plan", "--detailed-exitcode"), 0)  # nothing to do
    ok(cloud.run("apply", "--auto-approve"))
    # a no-op apply writes only its lock (taken, renewed, released): no upload, no job, no state write
    assert not [c for c in cloud.since(mark) if c["operation"] in ("UploadPart", "CreateTrainingJob")]
    assert all(c["params"].get("Key", "").startswith("fastuner-locks/")
               for c in cloud.since(mark) if c["operation"] in ("PutObject", "DeleteObject"))

    assert "step=12/12 loss=0.4210" in ok(cloud.run("logs", ADDRESS))

    # a team brings a job it already ran under fastuner: forgotten by state, imported back, no change
    job = adapter["outputs"]["job_name"]
    ok(cloud.run("state", "rm", ADDRESS))
    imported = json.loads(ok(cloud.run("import", ADDRESS, job, "--json")))
    assert imported["kind"] == "import" and imported["format_version"] == 1
    assert (imported["address"], imported["id"], imported["status"]) == (ADDRESS, job, "ready")
    ok(cloud.run("plan", "--detailed-exitcode"), 0)
    assert len(cloud.calls("CreateTrainingJob")) == 1

    ok(cloud.run("destroy", "--auto-approve"))
    left = cloud.s3.list_objects_v2(Bucket=f"fastuner-{ACCOUNT}", Prefix="quickstart-aws/").get("Contents") or []
    assert not [o["Key"] for o in left if "/datasets/" in o["Key"] or "/adapters/" in o["Key"]]

    spec = load_spec(cloud.folder / "fastuner.yaml", variables={"account": ACCOUNT}, environ={})
    scope = scope_of(spec.config)
    made = [c for c in read_call_log(cloud.call_log.read_text())
            if c["service"] not in ("iam",) and not c["operation"].startswith(("CreateBucket", "PutBucket",
                                                                             "PutPublicAccess", "GetBucket",
                                                                             "GetPublicAccess", "HeadBucket"))]
    coverage = covers(policy(scope), requests_of(made, scope))
    assert coverage.denied == ()  # the policy allows every call fastuner made
    # and allows nothing else but what this run had no occasion for
    assert set(coverage.unused) == {
        "s3:AbortMultipartUpload",  # a failed multipart upload (the quickstart's files are small)
        "s3:GetObjectVersion", "s3:ListBucketVersions",  # `state pull --serial N`
        "sagemaker:StopTrainingJob",  # destroying an adapter while its job still runs
        "sagemaker:ListTrainingJobs", "sagemaker:ListTags", "sagemaker:DeleteTags",  # refreshing many, retagging
        "sagemaker:DescribeEndpoint", "sagemaker:InvokeEndpoint",  # `fastuner invoke` (no deployment here)
        "cloudwatch:GetMetricData",  # `fastuner show deployment.NAME`
        # the quickstart has no deployment to reap (tests/aws/test_reap_cli.py checks those)
        *(a for g in RUNNER if g.feature == "reap" for a in g.actions),
        # nor one to deploy (tests/providers/test_sagemaker_deployments.py checks those); AddTags is the jobs'
        *(a for g in RUNNER if g.feature == "deploy" for a in g.actions if a != "sagemaker:AddTags"),
    }


def test_a_killed_apply_is_adopted_by_the_next_one_which_creates_the_job_once(cloud: Cloud) -> None:
    ok(cloud.run("bootstrap", "--auto-approve"))
    first = cloud.start("apply", "--auto-approve")
    deadline = time.monotonic() + 90
    while not cloud.world.created and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cloud.world.created, "the first apply never started its job"
    time.sleep(0.5)  # it is polling the running job now

    second = cloud.run("apply", "--auto-approve")  # a second apply at once: refused, naming the holder
    err = second.stderr
    assert second.returncode == 1 and "the state is locked" in err and "for:     apply" in err, err
    assert "lease:   ends" in err and "Traceback" not in err

    first.send_signal(signal.SIGKILL)  # a cancelled CI job: no cleanup, the lock left behind
    first.wait(10)
    cloud.finish(cloud.world.created[0])  # SageMaker carried on meanwhile
    out = ok(cloud.run("apply", "--auto-approve", "--lock-timeout", "30s"))
    assert "took over the state lock" in out and "Apply complete!" in out
    assert len(cloud.calls("CreateTrainingJob")) == 1 and len(cloud.world.created) == 1
    state = json.loads(ok(cloud.run("state", "pull", "-")))
    assert state["resources"][ADDRESS]["status"] == "ready"
    assert state["resources"][ADDRESS]["outputs"]["job_name"] == cloud.world.created[0]
