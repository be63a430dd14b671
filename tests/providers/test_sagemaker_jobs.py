"""The pure parts of SageMaker training: hyperparameters within SageMaker's limits, the reproducible
source tarball, attempt names, instance types and the image (no AWS, no moto)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from fastuner.aws.names import SAGEMAKER_NAME, SAGEMAKER_NAME_MAX
from fastuner.providers.base import ProviderError
from fastuner.providers.programs import CONTAINERS, code_hash
from fastuner.providers.sagemaker import images, instances
from fastuner.providers.sagemaker.hyperparameters import (
    MAX_ENTRIES,
    MAX_VALUE,
    config_file,
    decode,
    make_hyperparameters,
)
from fastuner.providers.sagemaker.jobs import Compute, attempt_name, attempt_of, job_outputs
from fastuner.providers.sagemaker.source import reproducible_tarball, training_source

TOOLKIT = {"sagemaker_program": "train.py", "sagemaker_submit_directory": "s3://b/p/code/x/sourcedir.tar.gz",
           "sagemaker_region": "us-east-1", "sagemaker_container_log_level": 20, "sagemaker_job_name": "j"}


# --- hyperparameters ------------------------------------------------------------------------------


def test_every_value_is_json_encoded_as_the_sagemaker_sdk_does() -> None:
    settings = {"task": "qa", "epochs": 3.0, "lora_r": 16, "gradient_checkpointing": False, "max_steps": None,
                "target_modules": ["q_proj", "v_proj"], "learning_rate": 2e-4}
    hp = make_hyperparameters(TOOLKIT, settings)
    assert hp.overflow == {}
    assert hp.values == {
        "sagemaker_program": '"train.py"', "sagemaker_submit_directory": '"s3://b/p/code/x/sourcedir.tar.gz"',
        "sagemaker_region": '"us-east-1"', "sagemaker_container_log_level": "20", "sagemaker_job_name": '"j"',
        "task": '"qa"', "epochs": "3.0", "lora_r": "16", "gradient_checkpointing": "false", "max_steps": "null",
        "target_modules": '["q_proj", "v_proj"]', "learning_rate": "0.0002"}
    assert decode(hp.values) == {**TOOLKIT, **settings}


def test_a_value_over_2500_characters_goes_to_the_config_file() -> None:
    labels = [f"label-number-{i:04d}-with-a-long-name" for i in range(200)]
    hp = make_hyperparameters(TOOLKIT, {"task": "classification", "labels": labels, "lora_r": 8})
    assert len(json.dumps(labels)) > MAX_VALUE
    assert "labels" not in hp.values and hp.values["config"] == '"config.json"'
    assert hp.overflow == {"labels": labels}
    assert json.loads(config_file(hp.overflow)) == {"labels": labels}
    assert config_file(hp.overflow) == config_file(dict(hp.overflow))  # the same bytes: content-addressed
    assert all(len(v) <= MAX_VALUE for v in hp.values.values())


def test_more_than_100_settings_move_the_longest_to_the_config_file() -> None:
    settings = {f"key_{i:03d}": "x" * (i % 7) for i in range(120)}
    hp = make_hyperparameters(TOOLKIT, settings)
    assert len(hp.values) == MAX_ENTRIES
    kept = {k for k in hp.values if k.startswith("key_")}
    assert kept | set(hp.overflow) == set(settings) and not kept & set(hp.overflow)
    assert max(len(settings[k]) for k in kept) <= min(len(settings[k]) for k in hp.overflow)
    exactly = make_hyperparameters(TOOLKIT, {f"k{i}": i for i in range(MAX_ENTRIES - len(TOOLKIT))})
    assert len(exactly.values) == MAX_ENTRIES and not exactly.overflow and "config" not in exactly.values


# --- the source tarball ---------------------------------------------------------------------------


def test_the_source_tarball_has_the_same_bytes_every_time(tmp_path: Path) -> None:
    first = training_source()
    copy = tmp_path / "train"
    shutil.copytree(CONTAINERS / "train", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "fastuner_train" / "__pycache__").mkdir()
    (copy / "fastuner_train" / "__pycache__" / "job.cpython-311.pyc").write_bytes(b"\0compiled")
    for i, path in enumerate(sorted(copy.rglob("*"))):
        os.utime(path, (1_000_000 + i, 2_000_000 + i))  # other times, other order of creation
        if path.is_file():
            path.chmod(0o600)
    assert reproducible_tarball(copy) == first
    assert first[3] == 0 and first[4:8] == bytes(4)  # the gzip header has no file name and no time
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert "train.py" in names and "requirements.txt" in names and "metric_definitions.json" in names
    assert "fastuner_train/settings.py" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}


def test_the_tarball_holds_exactly_the_files_the_training_code_hash_covers() -> None:
    h = hashlib.sha256()
    with tarfile.open(fileobj=io.BytesIO(training_source())) as tar:
        for member in tar.getmembers():
            h.update(member.name.encode() + b"\0")
            h.update(tar.extractfile(member).read() + b"\0")  # type: ignore[union-attr]
    assert "sha256:" + h.hexdigest() == code_hash("train")


# --- names ----------------------------------------------------------------------------------------


def test_attempt_names_are_valid_and_found_again() -> None:
    short = "demo-ad-entities-lora-6d281b48"
    long = "p" * 20 + "-ws-" + "ad-" + "n" * 27 + "-6d281b48"
    assert len(long) == SAGEMAKER_NAME_MAX
    for physical in (short, long):
        names = [attempt_name(physical, k) for k in range(12)]
        assert names[0] == physical and len(set(names)) == 12
        for k, name in enumerate(names):
            assert len(name) <= SAGEMAKER_NAME_MAX and SAGEMAKER_NAME.fullmatch(name)
            assert attempt_of(physical, name) == k
            assert "6d281b48" in name  # the identity's hash is never cut
    assert attempt_name(short, 2) == short + "-r2"
    assert attempt_of(short, "demo-ad-other-6d281b48-r1") is None
    assert attempt_of(short, short + "-rx") is None


# --- instance types and images --------------------------------------------------------------------


def test_gpu_counts_and_the_distributed_launcher() -> None:
    table = instances.training_instance_types()
    for fam, sizes in instances._MULTI_GPU.items():
        for size in sizes:
            assert f"ml.{fam}.{size}" in table  # every type in the table is one SageMaker trains on
    assert instances.gpus("ml.g5.2xlarge") == 1 and instances.gpus("ml.g5.12xlarge") == 4
    assert instances.gpus("ml.p4d.24xlarge") == 8 and instances.gpus("ml.m5.xlarge") == 0
    assert not instances.distributed("ml.g5.2xlarge", 1)
    assert instances.distributed("ml.g5.2xlarge", 2) and instances.distributed("ml.p5.48xlarge", 1)
    assert instances.distributed("ml.g9.48xlarge", 1)  # an unknown GPU type: one process per GPU it has
    assert instances.local_storage("ml.g5.2xlarge") and not instances.local_storage("ml.p3.2xlarge")
    assert instances.unknown_instance_type("ml.g5.2xlarge") is None
    assert "did you mean ml.g5.2xlarge?" in instances.unknown_instance_type("ml.g5.2xlarg")


def test_the_default_image_is_resolved_offline_and_overridable(monkeypatch) -> None:
    uri = images.training_image("eu-west-1", "ml.g5.2xlarge")
    assert uri.startswith("763104351884.dkr.ecr.eu-west-1.amazonaws.com/huggingface-pytorch-training:")
    assert f"transformers{images.TRANSFORMERS_VERSION}" in uri and f"{images.PYTORCH_VERSION}-" in uri
    assert "py312" in uri and "-gpu-" in uri
    assert images.training_image("eu-west-1", "ml.m5.xlarge", "acct.dkr.ecr/own:1") == "acct.dkr.ecr/own:1"
    with pytest.raises(ProviderError, match="has no GPU") as info:
        images.training_image("eu-west-1", "ml.m5.xlarge")
    assert "training_image" in info.value.hint
    monkeypatch.setitem(sys.modules, "sagemaker.core", None)  # as if sagemaker-core were not installed
    with pytest.raises(ProviderError, match="needs sagemaker-core") as info:
        images.training_image("eu-west-1", "ml.g5.2xlarge")
    assert "pip install 'fastuner[aws]'" in info.value.hint


# --- the request's parts --------------------------------------------------------------------------


def test_spot_waits_at_least_the_runtime() -> None:
    assert Compute("ml.g5.2xlarge", max_runtime_s=3600).stopping_condition == {"MaxRuntimeInSeconds": 3600}
    spot = Compute("ml.g5.2xlarge", spot=True, max_runtime_s=3600)
    assert spot.stopping_condition == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert Compute("ml.g5.2xlarge", spot=True, max_runtime_s=3600, max_wait_s=5400).stopping_condition[
        "MaxWaitTimeInSeconds"] == 5400
    long = Compute("ml.g5.2xlarge", spot=True, max_runtime_s=20 * 86400).stopping_condition
    assert long["MaxWaitTimeInSeconds"] == 28 * 86400 >= long["MaxRuntimeInSeconds"]


def test_outputs_of_a_completed_job() -> None:
    job = {"TrainingJobName": "j", "TrainingJobArn": "arn:j", "TrainingJobStatus": "Completed",
           "ModelArtifacts": {"S3ModelArtifacts": "s3://b/p/adapters/i/j/output/model.tar.gz"},
           "OutputDataConfig": {"S3OutputPath": "s3://b/p/adapters/i/"},
           "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1},
           "EnableManagedSpotTraining": True, "TrainingTimeInSeconds": 1000, "BillableTimeInSeconds": 300,
           "FinalMetricDataList": [{"MetricName": "step", "Value": 120.0}, {"MetricName": "test_accuracy", "Value": 0.9}]}
    out = job_outputs(job, {"task": "classification", "base_model": "org/m", "labels": ["a", "b"]})
    assert out["artifact"] == {"model.tar.gz": "s3://b/p/adapters/i/j/output/model.tar.gz"}
    assert out["metrics"] == {"steps": 120, "test_accuracy": 0.9}
    assert (out["billable_seconds"], out["training_seconds"], out["spot_savings"]) == (300, 1000, 0.7)
    assert (out["task"], out["labels"], out["duration_s"]) == ("classification", ["a", "b"], 1000.0)
    assert out["log"] == "/aws/sagemaker/TrainingJobs/j"
