"""A sandbox for the SageMaker provider's tests: moto in process (S3, SageMaker, CloudWatch Logs), an
AwsSession whose calls are recorded as fastuner sent them, a dataset stored in S3 the way the dataset
provider stores it, and adapter changes made by the real planner from a spec."""

from __future__ import annotations

import contextlib
import hashlib
import json
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastuner.aws.clients import AwsSession
from fastuner.config.loader import load_spec
from fastuner.config.models import SageMakerProvider
from fastuner.data.s3store import S3ObjectStore
from fastuner.plan.model import Change
from fastuner.plan.observed import Observed
from fastuner.plan.planner import make_plan
from fastuner.providers.base import Context
from fastuner.providers.programs import code_hash
from fastuner.providers.sagemaker.training import TrainingJobs
from fastuner.state.model import Operation, ResourceState, State, Status

ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = "ft-bucket"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/fastuner"
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION,
       "AWS_MAX_ATTEMPTS": "2"}
LABELS = {"account_access": 30, "cancel_order": 30, "order_status": 30, "refund_request": 30}

ADAPTER = """\
  intents-lora:
    base_model: {base_model}
    dataset: intents
    lora: {{r: 4, alpha: 8, dropout: 0.0, target_modules: [query, value]}}
    training: {{epochs: 1, max_steps: 3, batch_tokens: 512, max_seq_len: 32}}
    compute: {compute}
    tags: {{team: nlp}}
"""


def _delete_training_job(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
    """DeleteTrainingJob, which moto lacks, on moto's own records (a test-only extension of moto)."""
    from botocore.awsrequest import AWSResponse
    from moto.sagemaker.models import sagemaker_backends

    jobs = sagemaker_backends[ACCOUNT][REGION].training_jobs
    name = json.loads(params["body"])["TrainingJobName"]  # the request as serialized for the wire
    job = jobs.get(name)
    if job is None or job.training_job_status in ("InProgress", "Stopping"):
        message = "Requested resource not found" if job is None else "The job is still running"
        return AWSResponse("", 400, {}, None), {"Error": {"Code": "ValidationException", "Message": message},
                                                "ResponseMetadata": {"HTTPStatusCode": 400}}
    del jobs[name]
    return AWSResponse("", 200, {}, None), {"ResponseMetadata": {"HTTPStatusCode": 200}}


def rows(split: str, n: int) -> bytes:
    labels = sorted(LABELS)
    return "".join(json.dumps({"input": f"{split} message {i}", "label": labels[i % 4]}) + "\n"
                   for i in range(n)).encode()


class World:
    def __init__(self, root: Path, **settings: Any) -> None:
        self.root = root
        self.calls: list[dict[str, Any]] = []
        self.session = AwsSession(REGION, environ=ENV)
        self.session.observe(self.calls.append)
        self.session.client("s3").create_bucket(Bucket=BUCKET)
        self.settings = SageMakerProvider(region=REGION, role_arn=ROLE, bucket=BUCKET, prefix="ft", **settings)
        self.slept: list[float] = []
        self.on_sleep: Any = None  # called with the number of pauses so far: moves the world on
        self.jobs = TrainingJobs(self.session, self.settings, project="demo", workspace="default", spec_dir=root,
                                 poll=1.0, max_poll=8.0, sleep=self._sleep)
        self.progress: list[str] = []
        self.warnings: list[str] = []
        # last: a test's Stubber, when active, answers first
        self.session.client("sagemaker").meta.events.register_last("before-call.sagemaker.DeleteTrainingJob",
                                                                  _delete_training_job)

    def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(len(self.slept))

    # --- what fastuner sent -------------------------------------------------------------------------

    def sent(self, operation: str) -> list[dict[str, Any]]:
        return [c["params"] for c in self.calls if c["operation"] == operation]

    def count(self) -> int:
        return len(self.calls)

    # --- inputs -------------------------------------------------------------------------------------

    def dataset(self, *, test_rows: int = 12, labels: dict[str, int] | None = None) -> ResourceState:
        """dataset.intents as the dataset provider records it: splits in s3://BUCKET/ft/datasets/<sha>/."""
        store = S3ObjectStore(self.session, BUCKET, "ft", namespace="datasets", filename="data.jsonl")
        splits = {}
        for split, n in (("train", 96), ("validation", 12), ("test", test_rows)):
            data = rows(split, n)
            key = store.put_bytes(data) if n else ""
            splits[split] = {"key": key, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "rows": n,
                             "uri": store.folder_uri(key) if n else ""}
        return ResourceState(address="dataset.intents", kind="dataset", name="intents",
                             inputs={"task": "classification", "checks": {"max_input_chars": 512}},
                             outputs={"splits": splits, "labels": labels or LABELS})

    def change(self, *, compute: str = "{instance_type: ml.g5.2xlarge, spot: true, max_runtime: 2h}",
               base_model: str = "org/tiny-bert", workspace: str = "default") -> Change:
        """The adapter's create, as the planner makes it from a spec."""
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "data" / "intents.jsonl").write_bytes(rows("all", 120))
        spec_text = textwrap.dedent(f"""\
            version: 1
            project: demo
            provider:
              sagemaker: {{region: {REGION}, role_arn: "{ROLE}", bucket: {BUCKET}, prefix: ft}}
            datasets:
              intents: {{path: data/intents.jsonl, task: classification}}
            adapters:
            """) + ADAPTER.format(base_model=base_model, compute=compute)
        (self.root / "fastuner.yaml").write_text(spec_text)
        spec = load_spec(self.root / "fastuner.yaml", variables={}, environ={})
        observed = Observed(dataset_sources={"intents": "ab" * 32}, training_code_hash=code_hash("train"))
        plan = make_plan(spec, State(project="demo", workspace=workspace), observed, datetime.now(UTC))
        return next(c for c in plan.changes if c.address == "adapter.intents-lora")

    def ctx(self, dataset: ResourceState | None = None, **kw: Any) -> Context:
        if dataset is None:
            self._dataset = dataset = getattr(self, "_dataset", None) or self.dataset()
        return Context(address="adapter.intents-lora", spec_dir=self.root,
                       upstream={"dataset.intents": dataset},
                       progress=self.progress.append, warning=self.warnings.append, **kw)

    def state(self, change: Change, outputs: dict[str, Any] | None = None, *, pending: bool = False,
              status: Status = Status.READY) -> ResourceState:
        """The adapter as state records it after the create."""
        return ResourceState(address=change.address, kind="adapter", name=change.name, identity=change.identity,
                             physical_name=change.physical_name, inputs=dict(change.after or {}),
                             outputs=dict(outputs or {}), status=Status.PENDING if pending else status,
                             pending=Operation(action="create", started_at=datetime.now(UTC),
                                               run_id=change.physical_name) if pending else None)

    # --- the other side ------------------------------------------------------------------------------

    @staticmethod
    def moto_job(name: str) -> Any:
        """moto's own record of a job, to move it along (moto completes jobs at once)."""
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT][REGION].training_jobs[name]

    def put_artifact(self, uri: str, data: bytes = b"tarball") -> None:
        bucket, _, key = uri[5:].partition("/")
        self.session.client("s3").put_object(Bucket=bucket, Key=key, Body=data)

    def objects(self, prefix: str = "ft/") -> list[str]:
        answer = self.session.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for o in answer.get("Contents") or [])

    def log(self, job: str, host: str, lines: list[str], start: int = 1712345678) -> None:
        """Lines in the job's CloudWatch stream for a host (started at `start`), as SageMaker writes them."""
        logs = self.session.client("logs")
        group = "/aws/sagemaker/TrainingJobs"
        stream = f"{job}/{host}-{start}"
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=group)
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
        now = int(time.time() * 1000)
        logs.put_log_events(logGroupName=group, logStreamName=stream,
                            logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)])
