"""Training jobs as data: their names, the CreateTrainingJob request, and what a DescribeTrainingJob
answer means for an adapter. No calls here (training.py makes them), so the request is tested as a value.

Names. A job's name is the adapter's deterministic physical name. SageMaker never frees a job name
(jobs cannot be deleted), so a job that failed, was stopped, or whose artifacts were deleted with the
adapter is followed by another attempt under `<physical name>-r<N>`; the attempts of one name are found
again by describing them in order, or in one List call, so a crashed apply adopts the job it started
instead of starting another. Checkpoints live under the physical name, not the job's, so a new attempt
on the same instances resumes where the last one stopped (a spot interruption resumes within the job).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastuner.aws.names import SAGEMAKER_NAME_MAX

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
CHECKPOINT_DIR = "/opt/ml/checkpoints"
CHANNEL_CONTENT_TYPES = {"train": "application/jsonlines", "validation": "application/jsonlines",
                         "test": "application/jsonlines", "config": "application/json"}
RUNNING = frozenset({"InProgress", "Stopping"})
ENDED_BADLY = frozenset({"Failed", "Stopped"})
MAX_WAIT_CAP_S = 28 * 24 * 3600  # SageMaker's longest training job
_ATTEMPT = re.compile(r"-r(\d+)$")


# --- names ---------------------------------------------------------------------------------------


def attempt_name(physical: str, attempt: int) -> str:
    """The job name of an attempt: the physical name itself first, then `-r1`, `-r2`, ... (the name's
    stem is shortened if needed, never its identity hash, so attempts of different inputs stay apart)."""
    if attempt == 0:
        return physical
    suffix = f"-r{attempt}"
    if len(physical) + len(suffix) <= SAGEMAKER_NAME_MAX:
        return physical + suffix
    stem, sep, ident = physical.rpartition("-")
    return stem[: SAGEMAKER_NAME_MAX - len(suffix) - len(ident) - 1] + sep + ident + suffix


def attempt_of(physical: str, job_name: str, limit: int = 1000) -> int | None:
    """Which attempt of `physical` a job name is, or None if it is not one."""
    if job_name == physical:
        return 0
    m = _ATTEMPT.search(job_name)
    if m and 0 < int(m.group(1)) < limit and attempt_name(physical, int(m.group(1))) == job_name:
        return int(m.group(1))
    return None


# --- the request ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compute:
    """Where a job runs, from the adapter's `compute` (durations in seconds)."""

    instance_type: str
    instance_count: int = 1
    volume_size_gb: int = 50
    spot: bool = False
    max_runtime_s: int = 4 * 3600
    max_wait_s: int | None = None

    @property
    def stopping_condition(self) -> dict[str, int]:
        """`MaxWaitTimeInSeconds` (spot only) is at least the runtime; by default twice it, so that
        interruptions have time to be waited out."""
        out = {"MaxRuntimeInSeconds": self.max_runtime_s}
        if self.spot:
            default = max(self.max_runtime_s, min(2 * self.max_runtime_s, MAX_WAIT_CAP_S))
            out["MaxWaitTimeInSeconds"] = max(self.max_wait_s or default, self.max_runtime_s)
        return out


@dataclass(frozen=True)
class JobRequest:
    """Everything a CreateTrainingJob call says, in fastuner's words."""

    name: str
    image: str
    role_arn: str
    hyperparameters: Mapping[str, str]
    channels: Mapping[str, str]  # channel name -> S3 prefix
    output_path: str
    checkpoint_uri: str
    compute: Compute
    metric_definitions: tuple[Mapping[str, str], ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    kms_key_id: str | None = None
    volume_kms: bool = True  # False on instance types with local NVMe storage (SageMaker refuses the key)
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    network_isolation: bool = False

    def to_api(self) -> dict[str, Any]:
        """The CreateTrainingJob parameters."""
        resources: dict[str, Any] = {"InstanceType": self.compute.instance_type,
                                     "InstanceCount": self.compute.instance_count,
                                     "VolumeSizeInGB": self.compute.volume_size_gb}
        output: dict[str, Any] = {"S3OutputPath": self.output_path}
        if self.kms_key_id:
            output["KmsKeyId"] = self.kms_key_id
            if self.volume_kms:
                resources["VolumeKmsKeyId"] = self.kms_key_id
        request: dict[str, Any] = {
            "TrainingJobName": self.name,
            "AlgorithmSpecification": {
                "TrainingImage": self.image,
                "TrainingInputMode": "File",
                "MetricDefinitions": [dict(d) for d in self.metric_definitions],
                "EnableSageMakerMetricsTimeSeries": True,
            },
            "RoleArn": self.role_arn,
            "HyperParameters": dict(self.hyperparameters),
            "InputDataConfig": [channel(name, uri) for name, uri in self.channels.items()],
            "OutputDataConfig": output,
            "ResourceConfig": resources,
            "StoppingCondition": self.compute.stopping_condition,
            "CheckpointConfig": {"S3Uri": self.checkpoint_uri, "LocalPath": CHECKPOINT_DIR},
            "EnableManagedSpotTraining": self.compute.spot,
            "EnableNetworkIsolation": self.network_isolation,
            "Environment": dict(self.environment),
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(self.tags.items())],
        }
        if self.subnets:
            request["VpcConfig"] = {"Subnets": list(self.subnets), "SecurityGroupIds": list(self.security_group_ids)}
        return request


def channel(name: str, uri: str) -> dict[str, Any]:
    """An S3 prefix copied to /opt/ml/input/data/<name> on every instance before the program starts."""
    return {"ChannelName": name,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                            "S3DataDistributionType": "FullyReplicated"}},
            "ContentType": CHANNEL_CONTENT_TYPES.get(name, "application/octet-stream"),
            "CompressionType": "None", "InputMode": "File"}


# --- what a job's description means ----------------------------------------------------------------


def status_text(job: Mapping[str, Any]) -> str:
    """"Training: Training image download completed. Training in progress." from a description."""
    secondary = job.get("SecondaryStatus") or job.get("TrainingJobStatus") or "?"
    transitions = job.get("SecondaryStatusTransitions") or []
    message = transitions[-1].get("StatusMessage") if transitions else ""
    return f"{secondary}: {message}" if message else str(secondary)


def failure_text(job: Mapping[str, Any]) -> str:
    """Why a job ended without an adapter, in the words SageMaker (or the program's failure file) gave."""
    name = job.get("TrainingJobName", "?")
    status = job.get("TrainingJobStatus")
    secondary = job.get("SecondaryStatus")
    reason = (job.get("FailureReason") or "").strip()
    if secondary == "MaxRuntimeExceeded":
        limit = (job.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
        return f"training job {name} exceeded compute.max_runtime ({limit} s) and was stopped"
    if secondary == "MaxWaitTimeExceeded":
        limit = (job.get("StoppingCondition") or {}).get("MaxWaitTimeInSeconds")
        return f"training job {name} waited longer than compute.max_wait ({limit} s) for spot capacity"
    if status == "Stopped":
        return f"training job {name} was stopped" + (f": {reason}" if reason else "")
    return f"training job {name} failed" + (f": {reason}" if reason else "")


def failure_hint(job: Mapping[str, Any], address: str) -> str:
    secondary = job.get("SecondaryStatus")
    again = "the next apply starts a new job that resumes from the last checkpoint"
    if secondary == "MaxRuntimeExceeded":
        return f"Raise compute.max_runtime or lower training.epochs; {again}."
    if secondary == "MaxWaitTimeExceeded":
        return f"Raise compute.max_wait, or set compute.spot: false; {again}."
    return f"See the log: fastuner logs {address}; {again}."


def job_outputs(job: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """An adapter's outputs from its completed job's description and the settings it was trained with
    (the decoded hyperparameters and config file). `artifact` has the form every provider records, the
    object of each file of the result by name, here the one `model.tar.gz`."""
    name = job["TrainingJobName"]
    uri = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts") or ""
    metrics = {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList") or []
               if "MetricName" in m and "Value" in m}
    if "step" in metrics:
        metrics["steps"] = int(metrics.pop("step"))
    resources = job.get("ResourceConfig") or {}
    training = job.get("TrainingTimeInSeconds")
    billable = job.get("BillableTimeInSeconds")
    if training is None and job.get("TrainingStartTime") and job.get("TrainingEndTime"):
        training = int((job["TrainingEndTime"] - job["TrainingStartTime"]).total_seconds())
    labels = settings.get("labels")
    out: dict[str, Any] = {
        "job_name": name,
        "job_arn": job.get("TrainingJobArn"),
        "artifact": {"model.tar.gz": uri} if uri else {},
        "model_data": uri,
        "output_path": (job.get("OutputDataConfig") or {}).get("S3OutputPath"),
        "checkpoints": (job.get("CheckpointConfig") or {}).get("S3Uri"),
        "instance_type": resources.get("InstanceType"),
        "instance_count": resources.get("InstanceCount"),
        "spot": bool(job.get("EnableManagedSpotTraining")),
        "training_seconds": training,
        "billable_seconds": billable,
        "duration_s": float(training or 0),
        "metrics": metrics,
        "task": settings.get("task"),
        "base_model": settings.get("base_model"),
        "labels": list(labels) if isinstance(labels, list | tuple) else None,
        "log": f"{LOG_GROUP}/{name}",
    }
    if out["spot"] and training and billable is not None:
        out["spot_savings"] = round(1 - billable / training, 4)
    return out


def pending_outputs(name: str, arn: str | None = None) -> dict[str, Any]:
    """What state keeps of a job that is still running: enough to find it and its log again."""
    out: dict[str, Any] = {"job_name": name, "log": f"{LOG_GROUP}/{name}"}
    if arn:
        out["job_arn"] = arn
    return out
