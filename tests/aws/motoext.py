"""A test-only extension of moto's SageMaker, for the end-to-end tests against a moto server.

moto's training jobs are `Completed` the moment they are created, write nothing to S3 and cannot be
stopped. `JobWorld` (installed in the test process, which also runs `ThreadedMotoServer`, so the
server's backends are these objects) makes them behave enough like SageMaker for fastuner's loop:
- with `hold = True`, a new job is `InProgress` (secondary status `Training`) until the test calls
  `finish(name)` (or `fail(name, reason)`); `finish` writes the job's `model.tar.gz` to S3 with adapter
  files at its root, as a SageMaker job does, and sets `BillableTimeInSeconds` and final metrics;
- `StopTrainingJob` and `DeleteTrainingJob` (of an ended job) exist: an `InProgress` job becomes `Stopping`, then `Stopped` on the next describe;
- duplicate names are refused as SageMaker does (`ResourceInUse`), where moto silently overwrites;
- every `CreateTrainingJob` is counted in `created`.
`uninstall()` restores moto.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from moto.sagemaker import models, responses
from moto.sagemaker.exceptions import ValidationError

ACCOUNT = "123456789012"


def _backend(region: str) -> Any:
    return models.sagemaker_backends[ACCOUNT][region]


class ResourceInUse(ValidationError):
    def __init__(self, message: str) -> None:
        super().__init__(message=message)
        self.code = "ResourceInUse"  # what SageMaker answers for a name already taken


class JobWorld:
    def __init__(self, region: str = "us-east-1") -> None:
        self.region = region
        self.hold = False
        self.created: list[str] = []
        self._saved: dict[str, Any] = {}

    # --- installing ---------------------------------------------------------------------------------

    def install(self) -> JobWorld:
        world = self
        original_create = models.SageMakerModelBackend.create_training_job
        self._saved["create"] = original_create

        def create_training_job(backend: Any, training_job_name: str, **kw: Any) -> Any:
            if training_job_name in backend.training_jobs:
                raise ResourceInUse(f"Training job names must be unique within an AWS account and region, and a "
                                    f"training job with this name already exists ({training_job_name})")
            job = original_create(backend, training_job_name=training_job_name, **kw)
            world.created.append(training_job_name)
            if world.hold:
                job.training_job_status = "InProgress"
                job.secondary_status = "Training"
                job.training_end_time = None
                job.final_metric_data_list = []
            return job

        def stop_training_job(backend: Any, training_job_name: str) -> None:
            job = backend.training_jobs.get(training_job_name)
            if job is None:
                raise ValidationError(message=f"Requested resource not found: {training_job_name}")
            if job.training_job_status == "InProgress":
                job.training_job_status = "Stopping"
                job.secondary_status = "Stopping"

        def delete_training_job(backend: Any, training_job_name: str) -> None:
            job = backend.training_jobs.get(training_job_name)
            if job is None:
                raise ValidationError(message=f"Requested resource not found: {training_job_name}")
            if job.training_job_status in ("InProgress", "Stopping"):
                raise ValidationError(message=f"Training job {training_job_name} is still running")
            del backend.training_jobs[training_job_name]

        def respond_delete(response: Any) -> Any:
            response.sagemaker_backend.delete_training_job(response._get_param("TrainingJobName"))
            return "{}"

        def respond_stop(response: Any) -> Any:
            response.sagemaker_backend.stop_training_job(response._get_param("TrainingJobName"))
            return "{}"

        original_describe = models.SageMakerModelBackend.describe_training_job
        self._saved["describe"] = original_describe

        def describe_training_job(backend: Any, training_job_name: str) -> Any:
            job = backend.training_jobs.get(training_job_name)
            answer = original_describe(backend, training_job_name)
            if job is not None and job.training_job_status == "Stopping":
                job.training_job_status = job.secondary_status = "Stopped"  # seen stopping once
            return answer

        models.SageMakerModelBackend.create_training_job = create_training_job
        models.SageMakerModelBackend.stop_training_job = stop_training_job
        models.SageMakerModelBackend.delete_training_job = delete_training_job
        responses.SageMakerResponse.delete_training_job = respond_delete
        models.SageMakerModelBackend.describe_training_job = describe_training_job
        responses.SageMakerResponse.stop_training_job = respond_stop
        return self

    def uninstall(self) -> None:
        models.SageMakerModelBackend.create_training_job = self._saved["create"]
        models.SageMakerModelBackend.describe_training_job = self._saved["describe"]
        for cls, name in ((models.SageMakerModelBackend, "stop_training_job"),
                          (responses.SageMakerResponse, "stop_training_job"),
                          (models.SageMakerModelBackend, "delete_training_job"),
                          (responses.SageMakerResponse, "delete_training_job")):
            if name in cls.__dict__:
                delattr(cls, name)

    # --- driving jobs -------------------------------------------------------------------------------

    def job(self, name: str) -> Any:
        return _backend(self.region).training_jobs[name]

    def jobs(self) -> dict[str, Any]:
        return dict(_backend(self.region).training_jobs)

    def finish(self, name: str, put_object: Callable[[str, str, bytes], None], *, billable: int = 321,
               metrics: dict[str, float] | None = None, files: dict[str, bytes] | None = None) -> None:
        """Complete the job as SageMaker would: its model.tar.gz in S3 (via `put_object(bucket, key,
        bytes)`), billed seconds and final metrics."""
        job = self.job(name)
        uri = job.model_artifacts["S3ModelArtifacts"]
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        put_object(bucket, key, model_tarball(files or adapter_files()))
        now = datetime.now(UTC)
        job.training_job_status = "Completed"
        job.secondary_status = "Completed"
        job.training_end_time = now
        job.billable_time_in_seconds = billable
        job.training_time_in_seconds = billable
        job.final_metric_data_list = [{"MetricName": k, "Value": v, "Timestamp": now}
                                      for k, v in (metrics or {"eval_loss": 0.5}).items()]

    def fail(self, name: str, reason: str) -> None:
        job = self.job(name)
        job.training_job_status = "Failed"
        job.secondary_status = "Failed"
        job.failure_reason = reason


def adapter_files() -> dict[str, bytes]:
    return {"adapter_config.json": json.dumps({"r": 8, "peft_type": "LORA"}).encode(),
            "adapter_model.safetensors": b"\0" * 64,
            "fastuner.json": json.dumps({"task": "classification", "metrics": {"eval_loss": 0.5}}).encode()}


def model_tarball(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
