"""Adapters as SageMaker training jobs: containers/train in script mode on the Hugging Face PyTorch
training image, the same program and settings as the local provider's.

    s3://BUCKET/PREFIX/code/<sha256>/sourcedir.tar.gz         the program (source.py), uploaded once
    s3://BUCKET/PREFIX/configs/<sha256>/config.json           settings too long for hyperparameters
    s3://BUCKET/PREFIX/datasets/<sha256>/                     the channels (the dataset's splits)
    s3://BUCKET/PREFIX/adapters/<identity>/<job>/output/model.tar.gz   the adapter (SageMaker writes it)
    s3://BUCKET/PREFIX/checkpoints/<physical name>/<layout>/  checkpoints (spot interruptions, retries)

Unchanged inputs never retrain. The job's name is the adapter's physical name (a hash of everything that
forces replacement) and its artifacts sit under the adapter's identity, so `create` first looks for the
job: one still running is adopted and waited for (a crashed or `--no-wait` apply never starts it twice),
and a completed one whose artifact is still in S3 is adopted at once — which is also how going back to an
earlier version restores it (the adapter cache: state keeps the last few versions, whose jobs and
artifacts `delete` spares). A job that failed or was stopped is followed by another attempt
(`<name>-r1`, jobs.py) that resumes from the checkpoints.

While it waits, `create` polls DescribeTrainingJob with backoff and shows the secondary status and the
program's own lines (steps with their loss, warnings) from the job's CloudWatch log stream;
`apply --no-wait` and Ctrl-C leave the job running, recorded as pending. Refresh covers many adapters
with a few ListTrainingJobs pages and describes only jobs that finished since state last saw them.
`delete` stops a running job, removes its artifacts and checkpoints unless state still refers to them,
and deletes the job (DeleteTrainingJob, where botocore knows it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastuner.aws.clients import AwsSession
from fastuner.aws.errors import error_code, error_message
from fastuner.aws.names import check_sagemaker_name, common_prefix
from fastuner.config.duration import parse_duration
from fastuner.config.models import SageMakerProvider
from fastuner.data.s3store import S3ObjectStore
from fastuner.errors import UserError
from fastuner.plan.model import Change
from fastuner.plan.observed import Observation, ObservationStatus
from fastuner.providers.base import Context, Outcome, ProviderError, ResourceProvider
from fastuner.providers.sagemaker import instances, s3objects
from fastuner.providers.sagemaker.checks import adapter_problems, provider_problems
from fastuner.providers.sagemaker.errors import provider_errors
from fastuner.providers.sagemaker.hyperparameters import (
    CONFIG_CHANNEL,
    CONFIG_FILE,
    config_file,
    decode,
    make_hyperparameters,
)
from fastuner.providers.sagemaker.images import training_image
from fastuner.providers.sagemaker.joblogs import JobStreams, LiveProgress, host_of
from fastuner.providers.sagemaker.jobs import (
    CHECKPOINT_DIR,
    ENDED_BADLY,
    RUNNING,
    Compute,
    JobRequest,
    attempt_name,
    attempt_of,
    failure_hint,
    failure_text,
    job_outputs,
    pending_outputs,
    status_text,
)
from fastuner.providers.sagemaker.source import training_source
from fastuner.providers.training import metric_definitions, training_config
from fastuner.state.model import ResourceState, Status

SPLITS = ("train", "validation", "test")
MAX_ATTEMPTS = 100
LIST_PAGE = 100
DESCRIBE_WORKERS = 8
BATCH_FROM = 3  # read_many lists instead of describing from this many resources on
CREATED_SLACK = timedelta(hours=1)  # clock skew between this machine and SageMaker's CreationTime
LOG_POLL_S = 5.0  # `fastuner logs -f`: someone is reading
STOP_WAIT_S = 600.0  # a stopped job gets SIGTERM, then SIGKILL 120 s later; stopping takes a few minutes
PROGRAM = "train.py"
LOG_LEVEL_INFO = 20


class TrainingJobs(ResourceProvider):
    kind = "adapter"

    def __init__(self, session: AwsSession, settings: SageMakerProvider, *, project: str, workspace: str,
                 spec_dir: Path, poll: float = 15.0, max_poll: float = 60.0,
                 sleep: Callable[[float], None] | None = None) -> None:
        """`poll`: seconds between DescribeTrainingJob calls while something happens, growing to
        `max_poll` while nothing does; `sleep` replaces the wait between polls (tests), which by default
        ends early on Ctrl-C."""
        self.session = session
        self.settings = settings
        self.project = project
        self.workspace = workspace
        self.spec_dir = spec_dir
        self.poll = poll
        self.max_poll = max(poll, max_poll)
        self._sleep = sleep
        self.bucket = settings.bucket
        self.prefix = settings.prefix.strip("/")
        kms = settings.kms_key_id
        self.code = S3ObjectStore(session, self.bucket, self.prefix, namespace="code", filename="sourcedir.tar.gz",
                                  kms_key_id=kms)
        self.configs = S3ObjectStore(session, self.bucket, self.prefix, namespace="configs", filename=CONFIG_FILE,
                                     kms_key_id=kms)
        self._source: str | None = None  # the program's S3 URI once uploaded (or found) in this run

    # --- where things are ------------------------------------------------------------------------

    @property
    def sagemaker(self) -> Any:
        return self.session.client("sagemaker")

    def logs(self) -> Any:
        return self.session.client("logs")

    @property
    def root(self) -> str:
        """`s3://bucket/prefix/`: everything this provider writes is below it."""
        return f"s3://{self.bucket}/{self.prefix}/" if self.prefix else f"s3://{self.bucket}/"

    def output_path(self, identity: str) -> str:
        """Where SageMaker writes a job's output: the adapter's identity names the folder."""
        return f"{self.root}adapters/{identity}/"

    def checkpoint_uri(self, physical: str, layout: str = "") -> str:
        """Checkpoints of an adapter's jobs: every attempt of one physical name resumes from them, in a
        folder per cluster layout (`2x-ml.g5.12xlarge`), since the program refuses a checkpoint made by
        another number of processes; compute changes in place, so a retry on other instances starts
        afresh instead of failing."""
        return f"{self.root}checkpoints/{physical}/{layout + '/' if layout else ''}"

    # --- reading ---------------------------------------------------------------------------------

    def describe(self, name: str) -> dict[str, Any] | None:
        """The job's description, or None if there is no such job."""
        with provider_errors(f"reading training job {name}"):
            try:
                return self.sagemaker.describe_training_job(TrainingJobName=name)
            except Exception as exc:
                if _job_not_found(exc):
                    return None
                raise

    def read(self, rs: ResourceState) -> Observation:
        latest = self._latest(rs)
        return self._observe(rs, latest, latest)

    def read_many(self, states: Sequence[ResourceState]) -> dict[str, Observation]:
        """A few ListTrainingJobs pages for all of them (the project's jobs, newest first, since the
        oldest job in question was created); a Describe only for a job that ended since state last saw
        it (its outputs, or why it failed), or one the list did not show."""
        if len(states) < BATCH_FROM:
            return super().read_many(states)
        wanted = {rs.address: self._recorded_job(rs) for rs in states}
        summaries = self._list(states, set(wanted.values()))
        out: dict[str, Observation] = {}
        to_describe: list[tuple[ResourceState, dict[str, Any]]] = []
        for rs in states:
            name = wanted[rs.address]
            if _unsettled(rs) and rs.physical_name:
                k = attempt_of(rs.physical_name, name) or 0
                while attempt_name(rs.physical_name, k + 1) in summaries:
                    k += 1
                name = attempt_name(rs.physical_name, k)
            summary = summaries.get(name)
            if summary is None:
                to_describe.append((rs, {}))
                continue
            status = summary.get("TrainingJobStatus")
            if status in RUNNING or (status == "Completed" and _recorded_complete(rs, name)):
                out[rs.address] = self._observe(rs, summary, None)
            elif status in ENDED_BADLY and rs.status == Status.FAILED and rs.error:  # state has its reason
                out[rs.address] = Observation(ObservationStatus.FAILED, detail=rs.error, stored=self._stored(rs, None))
            else:
                to_describe.append((rs, summary))
        if to_describe:
            with ThreadPoolExecutor(max_workers=min(DESCRIBE_WORKERS, len(to_describe))) as pool:
                found = list(pool.map(lambda item: self._describe_for(*item), to_describe))
            for (rs, _), obs in zip(to_describe, found, strict=True):
                out[rs.address] = obs
        return out

    def _describe_for(self, rs: ResourceState, summary: dict[str, Any]) -> Observation:
        try:
            if not summary:
                return self.read(rs)
            job = self.describe(summary["TrainingJobName"])
            return self._observe(rs, job, job)
        except ProviderError as exc:
            exc.address = exc.address or rs.address
            raise

    def _list(self, states: Sequence[ResourceState], names: set[str]) -> dict[str, dict[str, Any]]:
        """Summaries of the project's jobs, by name: every page to the end (an empty page may still
        carry a NextToken), or until every name asked for has been seen."""
        physical = [rs.physical_name for rs in states if rs.physical_name]
        prefix = common_prefix(physical)[:63].rstrip("-")
        params: dict[str, Any] = {"MaxResults": LIST_PAGE, "SortBy": "CreationTime", "SortOrder": "Descending"}
        if prefix:
            params["NameContains"] = prefix
        since = _oldest(states)
        if since is not None:
            params["CreationTimeAfter"] = since - CREATED_SLACK
        out: dict[str, dict[str, Any]] = {}
        pending_any = any(_unsettled(rs) for rs in states)  # their later attempts are wanted too
        with provider_errors("listing training jobs"):
            while True:
                answer = self.sagemaker.list_training_jobs(**params)
                for summary in answer.get("TrainingJobSummaries") or []:
                    out[summary["TrainingJobName"]] = summary
                token = answer.get("NextToken")
                if not token or (not pending_any and names <= out.keys()):
                    return out
                params["NextToken"] = token

    def _latest(self, rs: ResourceState) -> dict[str, Any] | None:
        """The description of the resource's job: the recorded one, or for work in flight (or failed)
        the latest attempt of its name (a crash may have started one that state never heard of)."""
        name = self._recorded_job(rs)
        job = self.describe(name) if name else None
        if job is None or not _unsettled(rs) or not rs.physical_name:
            return job
        k = attempt_of(rs.physical_name, name) or 0
        while k + 1 < MAX_ATTEMPTS:
            later = self.describe(attempt_name(rs.physical_name, k + 1))
            if later is None:
                break
            job, k = later, k + 1
        return job

    @staticmethod
    def _recorded_job(rs: ResourceState) -> str:
        detail = rs.pending.detail if rs.pending is not None else {}
        return str(detail.get("job_name") or rs.outputs.get("job_name") or rs.physical_name or "")

    def _observe(self, rs: ResourceState, job: Mapping[str, Any] | None,
                 described: Mapping[str, Any] | None) -> Observation:
        """What a job (a List summary, or a description when `described`) says about the resource."""
        stored = self._stored(rs, job)
        if job is None:
            if rs.pending is not None:
                return Observation(ObservationStatus.PENDING, detail="no training job was started yet; apply "
                                   "starts it", stored=stored)
            return Observation(ObservationStatus.MISSING, detail=f"training job {rs.physical_name} does not exist",
                               stored=stored)
        name = job["TrainingJobName"]
        status = job.get("TrainingJobStatus")
        if status in RUNNING:
            return Observation(ObservationStatus.PENDING, detail=f"training job {name}: {status_text(job)}",
                               stored=stored)
        if status == "Completed":
            if _recorded_complete(rs, name) or described is None:  # (read_many describes the others)
                return Observation(ObservationStatus.READY, stored=stored)
            return Observation(ObservationStatus.READY, outputs=self._outputs(described), stored=stored)
        return Observation(ObservationStatus.FAILED, detail=f"{failure_text(job)} (see `fastuner logs {rs.address}`)",
                           stored=stored)

    @staticmethod
    def _stored(rs: ResourceState, job: Mapping[str, Any] | None) -> frozenset[str]:
        """Identities whose completed job state keeps (restorable without training): the earlier
        versions in the history (a completed job stays completed; one whose artifact went missing
        outside fastuner is trained again by `create`), and the current one once completed."""
        kept = {t.identity for t in rs.history if t.artifact}
        if job is not None and job.get("TrainingJobStatus") == "Completed" and rs.identity:
            kept.add(rs.identity)
        return frozenset(kept)

    def _outputs(self, job: Mapping[str, Any]) -> dict[str, Any]:
        out = job_outputs(job, self._job_settings(job))
        created = job.get("CreationTime")
        if isinstance(created, datetime):
            out["job_created"] = created.isoformat()
        return out

    def _job_settings(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """The settings the job was given: its hyperparameters over its config file."""
        settings = decode(dict(job.get("HyperParameters") or {}))
        channel = next((c for c in job.get("InputDataConfig") or [] if c.get("ChannelName") == CONFIG_CHANNEL), None)
        name = settings.get(CONFIG_CHANNEL)
        if channel is not None and isinstance(name, str):
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"].rstrip("/") + "/" + name
            settings = {**s3objects.read_json(self.session, uri), **settings}
        return settings

    def _artifact_exists(self, job: Mapping[str, Any]) -> bool:
        uri = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        return bool(uri) and s3objects.exists(self.session, uri)

    # --- creating ----------------------------------------------------------------------------------

    def create(self, change: Change, ctx: Context) -> Outcome:
        physical = self._name(change.physical_name or "")
        attempt = 0
        while attempt < MAX_ATTEMPTS:
            name = attempt_name(physical, attempt)
            job = self.describe(name)
            if job is None:
                if ctx.cancelled.is_set():
                    return Outcome.pending({}, "not started: interrupted")
                request = self._request(change, name, ctx)
                arn = self._start(request)
                if arn is None:  # another run created it a moment ago: adopt it
                    continue
                resumed = " (resuming from the last checkpoint)" if attempt else ""
                ctx.progress(f"started training job {name} on {request.compute.instance_count} × "
                             f"{request.compute.instance_type}{' (spot)' if request.compute.spot else ''}{resumed}")
                if not ctx.wait:
                    return Outcome.pending(pending_outputs(name, arn), self._left_running(name, "--no-wait", ctx))
                return self._follow(name, ctx)
            status = job.get("TrainingJobStatus")
            if status == "InProgress":
                ctx.progress(f"adopting training job {name}, already running ({status_text(job)})")
                return self._follow(name, ctx)
            if status == "Stopping":
                ctx.progress(f"training job {name} is stopping; waiting for it before starting another")
                if not self._wait_until_ended(name, ctx):
                    return Outcome.pending(pending_outputs(name), "interrupted while a job was stopping")
                continue
            if status == "Completed" and self._artifact_exists(job):
                outputs = self._outputs(job)
                if change.restore:
                    outputs["restored_from"] = name
                ctx.progress(f"{'restoring' if change.restore else 'adopting'} completed training job {name}: "
                             "no training")
                return Outcome.ready(outputs)
            why = "its artifact is gone" if status == "Completed" else f"it {str(status).lower()}"
            ctx.progress(f"training job {name} cannot be used ({why}): starting another attempt")
            attempt += 1
        raise ProviderError(f"{MAX_ATTEMPTS} training jobs were already started for {change.address}",
                            "Look at why they failed (fastuner logs ADDRESS) before trying again.")

    # --- importing -----------------------------------------------------------------------------------

    def import_resource(self, change: Change, resource_id: str, ctx: Context) -> Outcome:
        """Adopt the training job `resource_id` as the adapter `change` plans: only a job of fastuner's
        training program whose settings are the spec's (what `training_config` makes of them) and whose
        compute is the spec's; a running job is adopted pending, a completed one with its artifact ready."""
        name = self._name(resource_id)
        job = self.describe(name)
        if job is None:
            raise ProviderError(f"there is no training job {name} in {self.session.region}",
                                f"List them: aws sagemaker list-training-jobs --region {self.session.region} "
                                f"--name-contains {name[:20]}")
        differences = self._differences(change, job, ctx)
        if differences:
            raise ProviderError("it differs from the spec: " + "; ".join(differences),
                                "Write the spec as the job ran (then import again), or let fastuner train the "
                                "adapter itself: fastuner apply")
        status = job.get("TrainingJobStatus")
        if status in RUNNING:
            ctx.progress(f"{name} is {str(status).lower()}: imported as pending; the next apply waits for it")
            return Outcome.pending(pending_outputs(name, job.get("TrainingJobArn")))
        if status == "Completed" and self._artifact_exists(job):
            return Outcome.ready(self._outputs(job))
        why = "its artifact is gone" if status == "Completed" else failure_text(job)
        raise ProviderError(f"{name} did not produce an adapter ({why})",
                            "Import a completed or running job, or let fastuner train it: fastuner apply")

    def _differences(self, change: Change, job: Mapping[str, Any], ctx: Context) -> list[str]:
        """How the job's settings and compute differ from what the spec would send (paths aside)."""
        inputs = change.after or {}
        dataset = ctx.upstream.get(f"dataset.{inputs['dataset']}")
        if dataset is None:
            raise ProviderError(f"dataset.{inputs['dataset']} is not applied", "Apply it first.")
        hps = job.get("HyperParameters") or {}
        if decode({"p": hps.get("sagemaker_program", '""')}).get("p") != PROGRAM:
            return [f"it did not run fastuner's training program ({PROGRAM})"]
        labels = sorted((dataset.outputs.get("labels") or {}).keys()) or None
        wanted = training_config(inputs, dataset.inputs, labels, self.spec_dir, CHECKPOINT_DIR)
        ran = self._job_settings(job)
        out = [f"{key}: the job ran with {ran.get(key)!r}, the spec says {value!r}"
               for key, value in sorted(wanted.items())
               if key != "checkpoint_dir" and not _same(ran.get(key), value)]
        compute = inputs.get("compute") or {}
        resources = job.get("ResourceConfig") or {}
        for field, key, default in (("instance_type", "InstanceType", "ml.g5.2xlarge"),
                                    ("instance_count", "InstanceCount", 1)):
            if resources.get(key) != compute.get(field, default):
                out.append(f"compute.{field}: the job ran on {resources.get(key)!r}, the spec says "
                           f"{compute.get(field, default)!r}")
        ran_train = next((c["DataSource"]["S3DataSource"]["S3Uri"] for c in job.get("InputDataConfig") or []
                          if c.get("ChannelName") == "train"), None)
        stored = ((dataset.outputs.get("splits") or {}).get("train") or {}).get("uri")
        if ran_train and stored and ran_train.rstrip("/") != stored.rstrip("/"):
            ctx.progress(f"note: {job['TrainingJobName']} read its train channel from {ran_train}, not from "
                         f"dataset.{inputs['dataset']}'s stored split ({stored})")
        return out

    def _name(self, physical: str) -> str:
        try:
            return check_sagemaker_name(physical, "training job name")
        except UserError as exc:
            d = exc.diagnostics[0]
            raise ProviderError(d.summary, d.detail) from None

    def _start(self, request: JobRequest) -> str | None:
        """CreateTrainingJob; its ARN, or None when a job of that name appeared meanwhile."""
        with provider_errors(f"starting training job {request.name}"):
            try:
                return self.sagemaker.create_training_job(**request.to_api()).get("TrainingJobArn")
            except Exception as exc:
                if error_code(exc) == "ResourceInUse" or "already exists" in error_message(exc).lower():
                    return None
                raise

    def _request(self, change: Change, name: str, ctx: Context) -> JobRequest:
        """Everything the job needs, checked first: bad input fails here, before anything is uploaded."""
        inputs = change.after or {}
        compute = inputs.get("compute") or {}
        settings = self.settings
        instance_type = str(compute.get("instance_type", "ml.g5.2xlarge"))
        problems = provider_problems(settings) + adapter_problems(str(inputs["base_model"]), instance_type, settings,
                                                                  self.spec_dir)
        if problems:
            raise ProviderError(problems[0].summary, problems[0].hint)
        dataset_address = f"dataset.{inputs['dataset']}"
        dataset = ctx.upstream.get(dataset_address)
        splits = (dataset.outputs.get("splits") if dataset is not None else None) or {}
        channels = {split: splits[split]["uri"] for split in SPLITS
                    if (splits.get(split) or {}).get("rows") and splits[split].get("uri")}
        if dataset is None or not splits:
            raise ProviderError(f"{dataset_address} has no stored splits", "Apply the dataset first.")
        if "train" not in channels:
            raise ProviderError(f"{dataset_address} has no train split in S3",
                                f"Re-create it: fastuner apply --replace {dataset_address}")
        labels = sorted((dataset.outputs.get("labels") or {}).keys()) or None
        config = training_config(inputs, dataset.inputs, labels, self.spec_dir, CHECKPOINT_DIR)
        image = training_image(self.session.region, instance_type, settings.training_image)
        count = int(compute.get("instance_count", 1))
        if self._source is None:  # once per run: the same bytes, content-addressed
            with provider_errors("uploading the training program", "s3"):
                self._source = self.code.uri(self.code.put_bytes(training_source()))
        source = self._source
        toolkit: dict[str, Any] = {
            "sagemaker_program": PROGRAM,
            "sagemaker_submit_directory": source,
            "sagemaker_region": self.session.region,
            "sagemaker_container_log_level": LOG_LEVEL_INFO,
            "sagemaker_job_name": name,
        }
        if instances.distributed(instance_type, count):
            # what the SageMaker Python SDK sends for distribution={"torch_distributed": {"enabled": True}}
            toolkit["sagemaker_torch_distributed_enabled"] = True
            toolkit["sagemaker_instance_type"] = instance_type
        hyperparameters = make_hyperparameters(toolkit, config)
        if hyperparameters.overflow:
            with provider_errors("uploading the training settings", "s3"):
                key = self.configs.put_bytes(config_file(hyperparameters.overflow))
            channels[CONFIG_CHANNEL] = self.configs.folder_uri(key)
        max_wait = compute.get("max_wait")
        environment = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        if settings.network_isolation:
            environment["HF_HUB_OFFLINE"] = "1"  # fail at once, naming HF_HOME, rather than retry downloads
        return JobRequest(
            name=name, image=image, role_arn=settings.role_arn, hyperparameters=hyperparameters.values,
            channels=channels, output_path=self.output_path(change.identity),
            checkpoint_uri=self.checkpoint_uri(change.physical_name or name, f"{count}x-{instance_type}"),
            compute=Compute(instance_type=instance_type, instance_count=count,
                            volume_size_gb=int(compute.get("volume_size_gb", 50)), spot=bool(compute.get("spot")),
                            max_runtime_s=_seconds(compute.get("max_runtime", "4h")),
                            max_wait_s=_seconds(max_wait) if max_wait else None),
            metric_definitions=metric_definitions(), tags=self.tags(change.address, inputs),
            environment=environment, kms_key_id=settings.kms_key_id,
            volume_kms=not instances.local_storage(instance_type), subnets=tuple(settings.subnets),
            security_group_ids=tuple(settings.security_group_ids), network_isolation=settings.network_isolation)

    def tags(self, address: str, inputs: Mapping[str, Any]) -> dict[str, str]:
        """The spec's tags and fastuner's own (which win)."""
        return {**{str(k): str(v) for k, v in (inputs.get("tags") or {}).items()},
                "fastuner:project": self.project, "fastuner:workspace": self.workspace, "fastuner:address": address}

    # --- waiting -----------------------------------------------------------------------------------

    def _follow(self, name: str, ctx: Context) -> Outcome:
        """Poll the job until it ends, showing its secondary status and its log's news; a job that
        fails raises; `--no-wait` and Ctrl-C leave it running (pending)."""
        live: LiveProgress | None = LiveProgress(self.logs, name)
        shown = ""
        interval = self.poll
        while True:
            job = self.describe(name)
            if job is None:
                raise ProviderError(f"training job {name} disappeared while it was watched",
                                    "Run apply again: it starts a new job.")
            news = False
            text = status_text(job)
            if text != shown:
                ctx.progress(text)
                shown, news = text, True
            if live is not None:
                try:
                    for kind, line in live.poll():
                        (ctx.warning if kind == "warning" else ctx.progress)(line)
                        news = True
                except ProviderError as exc:  # the job matters more than its log
                    ctx.warning(f"cannot read the log of training job {name}: {exc}")
                    live = None
            status = job.get("TrainingJobStatus")
            if status == "Completed":
                return Outcome.ready(self._outputs(job))
            if status in ENDED_BADLY:
                raise ProviderError(failure_text(job), failure_hint(job, ctx.address))
            if ctx.cancelled.is_set() or not ctx.wait:
                why = "interrupted" if ctx.cancelled.is_set() else "--no-wait"
                return Outcome.pending(pending_outputs(name, job.get("TrainingJobArn")),
                                       self._left_running(name, why, ctx))
            interval = self.poll if news else min(interval * 2, self.max_poll)
            self._pause(interval, ctx)

    @staticmethod
    def _left_running(name: str, why: str, ctx: Context) -> str:
        return (f"{why}: training job {name} runs on in SageMaker; the next plan or apply picks up its "
                f"result; follow it with `fastuner logs {ctx.address} -f`")

    def _pause(self, seconds: float, ctx: Context | None = None) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        elif ctx is not None:
            ctx.cancelled.wait(seconds)
        else:
            time.sleep(seconds)

    def _wait_until_ended(self, name: str, ctx: Context) -> bool:
        """Until a stopping job has stopped; False if interrupted or it takes unreasonably long."""
        waited, interval = 0.0, self.poll
        while waited <= STOP_WAIT_S:
            job = self.describe(name)
            if job is None or job.get("TrainingJobStatus") not in RUNNING:
                return True
            if ctx.cancelled.is_set():
                return False
            self._pause(interval, ctx)
            waited += interval
            interval = min(interval * 2, self.max_poll)
        return False

    # --- updating ----------------------------------------------------------------------------------

    def update(self, change: Change, prior: ResourceState, ctx: Context) -> Outcome:
        """Only tags, compute, checkpoint_every and the dataset's name change in place: the trained
        adapter stays valid (compute applies to the next job). Tags are put on the job."""
        arn = prior.outputs.get("job_arn")
        name = prior.outputs.get("job_name") or prior.physical_name
        if not arn and name:
            job = self.describe(str(name))
            arn = job.get("TrainingJobArn") if job else None
        if arn:
            self._retag(str(arn), self.tags(change.address, change.after or {}),
                        set((prior.inputs.get("tags") or {}).keys()))
        return Outcome.ready(prior.outputs)

    def _retag(self, arn: str, desired: dict[str, str], previous_spec_keys: set[str]) -> None:
        """Make the job's tags match: keys the spec dropped are removed, changed values deleted first
        (AddTags overwrites on AWS; moto appends), tags others put on the job are left alone."""
        with provider_errors(f"tagging {arn}"):
            current: dict[str, str] = {}
            params: dict[str, Any] = {"ResourceArn": arn}
            while True:
                answer = self.sagemaker.list_tags(**params)
                current.update({t["Key"]: t["Value"] for t in answer.get("Tags") or []})
                if not answer.get("NextToken"):
                    break
                params["NextToken"] = answer["NextToken"]
            ours = previous_spec_keys | {k for k in current if k.startswith("fastuner:")}
            remove = sorted(k for k in current if (k in ours and k not in desired)
                            or (k in desired and current[k] != desired[k]))
            add = {k: v for k, v in desired.items() if current.get(k) != v}
            if remove:
                self.sagemaker.delete_tags(ResourceArn=arn, TagKeys=remove)
            if add:
                self.sagemaker.add_tags(ResourceArn=arn, Tags=[{"Key": k, "Value": v} for k, v in sorted(add.items())])

    # --- deleting ----------------------------------------------------------------------------------

    def delete(self, rs: ResourceState, ctx: Context) -> None:
        """Stop what still runs; remove the jobs' artifacts and checkpoints and the jobs themselves,
        except those state still refers to (kept versions of the adapter). Silent when already gone."""
        keep = ctx.referenced()
        physicals = [p for p in dict.fromkeys([rs.physical_name, *(t.physical_name for t in rs.history)]) if p]
        jobs = [job for p in physicals for job in self._attempts(p)]
        for job in jobs:
            if job.get("TrainingJobStatus") == "InProgress":
                ctx.progress(f"stopping training job {job['TrainingJobName']}")
                with provider_errors(f"stopping training job {job['TrainingJobName']}"):
                    self.sagemaker.stop_training_job(TrainingJobName=job["TrainingJobName"])
        for job in jobs:
            if job.get("TrainingJobStatus") in RUNNING and not self._wait_until_ended(job["TrainingJobName"], ctx):
                raise ProviderError(f"training job {job['TrainingJobName']} is still stopping",
                                    "It stops on its own within minutes; run the command again then.")
        folders = {_job_folder(job) for job in jobs}
        for artifact in [rs.outputs.get("artifact") or {}, *(t.artifact for t in rs.history)]:
            folders.update(_folder_of(uri) for uri in artifact.values() if isinstance(uri, str))
        spared = {f for f in folders if f and _referenced(f, keep)}
        for folder in sorted(f for f in folders if f and f not in spared):
            self._delete_objects(folder)
        for physical in physicals:
            checkpoints = self.checkpoint_uri(physical)
            if not _referenced(checkpoints, keep):
                self._delete_objects(checkpoints)
        for job in jobs:
            if _job_folder(job) not in spared:
                self._delete_job(job["TrainingJobName"], ctx)

    def _attempts(self, physical: str) -> list[dict[str, Any]]:
        out = []
        for attempt in range(MAX_ATTEMPTS):
            job = self.describe(attempt_name(physical, attempt))
            if job is None:
                break
            out.append(job)
        return out

    def _delete_objects(self, prefix_uri: str) -> None:
        """Everything under a prefix of this provider's (never outside its root)."""
        if prefix_uri.startswith(self.root) and prefix_uri != self.root:
            s3objects.delete_prefix(self.session, prefix_uri)

    def _delete_job(self, name: str, ctx: Context) -> None:
        """DeleteTrainingJob frees the name. The job's record costs nothing, so where it cannot be deleted
        (a botocore without the call, a policy without the action) the adapter is still gone: a warning,
        and a later job for the same inputs takes the next attempt's name."""
        client = self.sagemaker
        if not hasattr(client, "delete_training_job"):
            return
        try:
            with provider_errors(f"deleting training job {name}"):
                try:
                    client.delete_training_job(TrainingJobName=name)
                except Exception as exc:
                    if not _job_not_found(exc):
                        raise
        except ProviderError as exc:
            ctx.warning(f"training job {name} is kept: {exc}")

    # --- the log -----------------------------------------------------------------------------------

    def read_log(self, rs: ResourceState, *, follow: bool) -> Iterator[str]:
        """The job's CloudWatch log, every instance's stream (lines prefixed with the host when there
        are several); followed while the job runs."""
        job = self._latest(rs)
        if job is None:
            raise ProviderError(f"{rs.address} has no training job yet", "Apply it first: fastuner apply")
        name = job["TrainingJobName"]
        return self._log_chunks(name, job, follow)

    def _log_chunks(self, name: str, job: Mapping[str, Any] | None, follow: bool) -> Iterator[str]:
        streams = JobStreams(self.logs, name)
        several = int((job or {}).get("ResourceConfig", {}).get("InstanceCount", 1)) > 1
        while True:
            readers = streams.discover()
            for reader in readers:
                lines = reader.read()
                if lines:
                    tag = f"[{host_of(reader.stream)}] " if several else ""
                    yield "".join(f"{tag}{line}\n" for line in lines)
            if not follow:
                if not readers:
                    raise ProviderError(f"training job {name} has no log yet ({status_text(job or {})})",
                                        "Its log starts when its instances do; follow it with -f.")
                return
            if job is None or job.get("TrainingJobStatus") not in RUNNING:
                return
            self._pause(min(self.poll, LOG_POLL_S))
            job = self.describe(name)


def _same(ran: Any, wanted: Any) -> bool:
    """Equal settings, numbers compared as numbers (a job's `3` is the spec's `3.0`)."""
    if isinstance(ran, int | float) and isinstance(wanted, int | float) and not isinstance(ran, bool):
        return abs(float(ran) - float(wanted)) <= 1e-12 * max(1.0, abs(float(wanted)))
    if isinstance(ran, list | tuple) and isinstance(wanted, list | tuple):
        return len(ran) == len(wanted) and all(_same(a, b) for a, b in zip(ran, wanted, strict=True))
    return ran == wanted


def _job_not_found(exc: BaseException) -> bool:
    message = error_message(exc).lower()
    return error_code(exc) in ("ResourceNotFound", "ResourceNotFoundException") or (
        error_code(exc) == "ValidationException" and ("not found" in message or "could not find" in message))



def _unsettled(rs: ResourceState) -> bool:
    """Work in flight or failed: a later attempt than state knows of may exist."""
    return rs.pending is not None or rs.status == Status.FAILED


def _recorded_complete(rs: ResourceState, name: str) -> bool:
    """Whether state already holds the outputs of this completed job."""
    return rs.outputs.get("job_name") == name and bool(rs.outputs.get("artifact"))


def _oldest(states: Sequence[ResourceState]) -> datetime | None:
    """When the oldest job in question was created, as far as state knows (None: not known for all)."""
    times: list[datetime] = []
    for rs in states:
        recorded = rs.outputs.get("job_created")
        if recorded:
            times.append(datetime.fromisoformat(recorded))
        elif rs.pending is not None:
            times.append(rs.pending.started_at)
        else:
            return None
    return min(times) if times else None


def _job_folder(job: Mapping[str, Any]) -> str:
    """`<S3OutputPath>/<job name>/`: where SageMaker put the job's output."""
    path = (job.get("OutputDataConfig") or {}).get("S3OutputPath") or ""
    return f"{path.rstrip('/')}/{job['TrainingJobName']}/" if path else ""


def _folder_of(artifact_uri: str) -> str:
    """The job folder of `.../<job>/output/model.tar.gz`."""
    head, sep, _ = artifact_uri.rpartition("/output/")
    return f"{head}/" if sep else ""


def _referenced(prefix_uri: str, keep: set[str]) -> bool:
    return any(value.startswith(prefix_uri) for value in keep)


def _seconds(value: Any) -> int:
    return max(1, int(parse_duration(value).total_seconds()))

