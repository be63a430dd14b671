"""`fastuner import adapter.X JOB`: a training job adopted only when it is what the spec describes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from fastuner.providers.base import OutcomeStatus, ProviderError
from tests.providers.sagemaker_world import World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with mock_aws():
        yield World(tmp_path)


def _trained(world: World, name: str = "their-intents-job") -> str:
    """A job fastuner's program ran elsewhere (another checkout, a lost state), completed with its artifact."""
    change = dataclasses.replace(world.change(), physical_name=name)
    world.jobs.create(change, world.ctx())
    job = world.jobs.describe(name)
    world.put_artifact(job["ModelArtifacts"]["S3ModelArtifacts"])
    return name


def test_a_completed_job_of_the_spec_is_imported_with_its_outputs_and_no_call_that_writes(world: World) -> None:
    name = _trained(world)
    before = len(world.calls)
    outcome = world.jobs.import_resource(world.change(), name, world.ctx())
    assert outcome.status is OutcomeStatus.READY
    assert outcome.outputs["job_name"] == name and outcome.outputs["artifact"]["model.tar.gz"].endswith("model.tar.gz")
    assert outcome.outputs["task"] == "classification"
    assert {c["operation"] for c in world.calls[before:]} <= {"DescribeTrainingJob", "HeadObject", "GetObject"}


def test_a_job_with_other_settings_or_compute_is_refused_naming_each_difference(world: World) -> None:
    name = _trained(world)
    other = world.change(compute="{instance_type: ml.g5.12xlarge, spot: true, max_runtime: 2h}")
    with pytest.raises(ProviderError) as info:
        world.jobs.import_resource(other, name, world.ctx())
    assert "compute.instance_type: the job ran on 'ml.g5.2xlarge', the spec says 'ml.g5.12xlarge'" in info.value.message
    edited = dataclasses.replace(world.change(), after={**world.change().after,
                                                        "training": {**world.change().after["training"], "epochs": 2}})
    with pytest.raises(ProviderError, match=r"epochs: the job ran with 1\.0, the spec says 2"):
        world.jobs.import_resource(edited, name, world.ctx())


def test_a_missing_job_and_a_running_one(world: World) -> None:
    with pytest.raises(ProviderError, match="there is no training job nobody-here in us-east-1"):
        world.jobs.import_resource(world.change(), "nobody-here", world.ctx())
    name = _trained(world, "still-running")
    world.moto_job(name).training_job_status = "InProgress"
    outcome = world.jobs.import_resource(world.change(), name, world.ctx())
    assert outcome.status is OutcomeStatus.PENDING and outcome.outputs["job_name"] == name
