"""Adapters as SageMaker training jobs, against moto in process (S3, SageMaker, CloudWatch Logs) and
botocore's Stubber where moto lacks a call or a state (StopTrainingJob, DeleteTrainingJob, failed and
stopped jobs, billable time, throttling, quotas). Assertions are on what fastuner sent (recorded with
AwsSession.observe) and on the outcome it returns, not on moto's stored copy."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber
from moto import mock_aws

from fastuner.config.loader import load_spec
from fastuner.errors import DiagnosticsError
from fastuner.plan.observed import ObservationStatus
from fastuner.providers.base import OutcomeStatus, ProviderError
from fastuner.providers.sagemaker.source import training_source
from fastuner.providers.training import metric_definitions
from fastuner.state.model import Status, Trained
from tests.providers.sagemaker_world import BUCKET, LABELS, REGION, ROLE, World


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def world(aws, tmp_path: Path) -> World:
    return World(tmp_path)


def only(items: list[Any]) -> Any:
    assert len(items) == 1, items
    return items[0]


def decoded(request: dict[str, Any]) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in request["HyperParameters"].items()}


# --- the request -------------------------------------------------------------------------------------


def test_create_sends_the_job_the_program_the_data_and_the_settings(world: World) -> None:
    change = world.change()
    dataset = world.dataset(test_rows=0)  # an empty split is no channel
    outcome = world.jobs.create(change, world.ctx(dataset))
    assert outcome.status is OutcomeStatus.READY

    request = only(world.sent("CreateTrainingJob"))
    name = change.physical_name
    assert request["TrainingJobName"] == name and name.startswith("demo-ad-intents-lora-")
    algorithm = request["AlgorithmSpecification"]
    assert algorithm["TrainingImage"].startswith("763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:")
    assert algorithm["TrainingInputMode"] == "File" and algorithm["MetricDefinitions"] == list(metric_definitions())
    assert request["RoleArn"] == ROLE

    hps = request["HyperParameters"]
    assert all(isinstance(v, str) for v in hps.values()) and len(hps) <= 100
    root = f"s3://{BUCKET}/ft/"
    source = json.loads(hps["sagemaker_submit_directory"])
    assert source.startswith(f"{root}code/") and source.endswith("/sourcedir.tar.gz")
    body = world.session.client("s3").get_object(Bucket=BUCKET, Key=source[len(f"s3://{BUCKET}/"):])["Body"].read()
    assert body == training_source()
    assert {k: hps[k] for k in hps if k.startswith("sagemaker_") and k != "sagemaker_submit_directory"} == {
        "sagemaker_program": '"train.py"', "sagemaker_region": f'"{REGION}"', "sagemaker_container_log_level": "20",
        "sagemaker_job_name": f'"{name}"'}
    settings = decoded(request)
    assert settings["labels"] == sorted(LABELS) and settings["target_modules"] == ["query", "value"]
    assert (settings["task"], settings["base_model"], settings["max_steps"]) == ("classification", "org/tiny-bert", 3)
    assert settings["checkpoint_dir"] == "/opt/ml/checkpoints" and settings["max_input_chars"] == 512
    assert hps["base_model_revision"] == "null" and hps["gradient_checkpointing"] == "false"

    splits = dataset.outputs["splits"]
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train", "validation"]
    for c in request["InputDataConfig"]:
        source_s3 = c["DataSource"]["S3DataSource"]
        assert source_s3 == {"S3DataType": "S3Prefix", "S3Uri": splits[c["ChannelName"]]["uri"],
                             "S3DataDistributionType": "FullyReplicated"}
        assert c["InputMode"] == "File" and c["ContentType"] == "application/jsonlines"
    assert request["OutputDataConfig"] == {"S3OutputPath": f"{root}adapters/{change.identity}/"}
    assert request["CheckpointConfig"] == {"S3Uri": f"{root}checkpoints/{name}/1x-ml.g5.2xlarge/",
                                           "LocalPath": "/opt/ml/checkpoints"}
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50}
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400}
    assert request["EnableNetworkIsolation"] is False and "VpcConfig" not in request
    assert request["Environment"]["PYTHONUNBUFFERED"] == "1"
    assert {t["Key"]: t["Value"] for t in request["Tags"]} == {
        "team": "nlp", "fastuner:project": "demo", "fastuner:workspace": "default",
        "fastuner:address": "adapter.intents-lora"}

    out = outcome.outputs
    assert out["job_name"] == name and out["job_arn"].endswith(f":training-job/{name}")
    assert out["artifact"] == {"model.tar.gz": f"{root}adapters/{change.identity}/{name}/output/model.tar.gz"}
    assert (out["task"], out["base_model"], out["labels"]) == ("classification", "org/tiny-bert", sorted(LABELS))
    assert out["log"] == f"/aws/sagemaker/TrainingJobs/{name}" and out["instance_type"] == "ml.g5.2xlarge"


def test_the_program_is_uploaded_once(world: World) -> None:
    change = world.change()
    world.jobs.create(change, world.ctx())
    other = world.change(compute="{instance_type: ml.g5.xlarge, max_runtime: 1h}")
    World.moto_job(change.physical_name).training_job_status = "Failed"  # the next create starts an attempt
    world.jobs.create(other, world.ctx())
    assert len(world.sent("CreateTrainingJob")) == 2
    uploads = [p for p in world.sent("PutObject") if p["Key"].endswith("/sourcedir.tar.gz")]
    assert len(uploads) == 1 and uploads[0]["IfNoneMatch"] == "*"


@pytest.mark.parametrize(("compute", "distributed"), [
    ("{instance_type: ml.g5.12xlarge}", True),  # 4 GPUs
    ("{instance_type: ml.p4d.24xlarge}", True),  # 8 GPUs
    ("{instance_type: ml.g5.2xlarge, instance_count: 2}", True),  # 2 instances
    ("{instance_type: ml.g5.2xlarge}", False),  # one GPU: a plain process
])
def test_several_gpus_or_instances_run_under_torch_distributed(world: World, compute: str, distributed: bool) -> None:
    world.jobs.create(world.change(compute=compute), world.ctx())
    request = only(world.sent("CreateTrainingJob"))
    hps = request["HyperParameters"]
    instance_type = request["ResourceConfig"]["InstanceType"]
    if distributed:
        # exactly what the SageMaker Python SDK sends for distribution={"torch_distributed": {"enabled": True}}
        assert hps["sagemaker_torch_distributed_enabled"] == "true"
        assert hps["sagemaker_instance_type"] == json.dumps(instance_type)
    else:
        assert "sagemaker_torch_distributed_enabled" not in hps and "sagemaker_instance_type" not in hps


def test_vpc_network_isolation_and_kms(aws, tmp_path: Path) -> None:
    world = World(tmp_path, subnets=["subnet-1", "subnet-2"], security_group_ids=["sg-1"], network_isolation=True,
                  kms_key_id="alias/fastuner", training_image="1234.dkr.ecr.us-east-1.amazonaws.com/fastuner-train:1")
    world.jobs.create(world.change(compute="{instance_type: ml.p3.2xlarge}"), world.ctx())
    request = only(world.sent("CreateTrainingJob"))
    assert request["VpcConfig"] == {"Subnets": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
    assert request["EnableNetworkIsolation"] is True and request["Environment"]["HF_HUB_OFFLINE"] == "1"
    assert request["AlgorithmSpecification"]["TrainingImage"] == "1234.dkr.ecr.us-east-1.amazonaws.com/fastuner-train:1"
    assert request["OutputDataConfig"]["KmsKeyId"] == "alias/fastuner"
    assert request["ResourceConfig"]["VolumeKmsKeyId"] == "alias/fastuner"  # p3 has an EBS volume
    upload = only([p for p in world.sent("PutObject") if p["Key"].endswith("sourcedir.tar.gz")])
    assert (upload["ServerSideEncryption"], upload["SSEKMSKeyId"]) == ("aws:kms", "alias/fastuner")

    world.calls.clear()
    world.jobs.create(world.change(compute="{instance_type: ml.g5.2xlarge, max_runtime: 1h}"), world.ctx())
    request = only(world.sent("CreateTrainingJob"))
    assert request["OutputDataConfig"]["KmsKeyId"] == "alias/fastuner"
    assert "VolumeKmsKeyId" not in request["ResourceConfig"]  # local NVMe: SageMaker refuses a volume key


def test_a_vpc_needs_both_subnets_and_security_groups(tmp_path: Path) -> None:
    (tmp_path / "fastuner.yaml").write_text(f"""\
version: 1
project: demo
provider: {{sagemaker: {{region: {REGION}, role_arn: "{ROLE}", bucket: {BUCKET}, subnets: [subnet-1]}}}}
""")
    with pytest.raises(DiagnosticsError, match="both subnets and security_group_ids"):
        load_spec(tmp_path / "fastuner.yaml", variables={}, environ={})


def test_long_settings_travel_as_a_config_channel(world: World) -> None:
    labels = {f"intent-with-a-rather-long-name-{i:03d}": 2 for i in range(150)}
    dataset = world.dataset(labels=labels)
    outcome = world.jobs.create(world.change(), world.ctx(dataset))
    request = only(world.sent("CreateTrainingJob"))
    hps = request["HyperParameters"]
    assert "labels" not in hps and hps["config"] == '"config.json"'
    assert all(len(v) <= 2500 for v in hps.values()) and len(hps) <= 100
    channel = only([c for c in request["InputDataConfig"] if c["ChannelName"] == "config"])
    uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
    assert uri.startswith(f"s3://{BUCKET}/ft/configs/") and uri.endswith("/")
    stored = json.loads(world.session.client("s3").get_object(
        Bucket=BUCKET, Key=uri[len(f"s3://{BUCKET}/"):] + "config.json")["Body"].read())
    assert stored == {"labels": sorted(labels)}
    assert outcome.outputs["labels"] == sorted(labels)  # read back from the config file


@pytest.mark.parametrize(("compute", "base_model", "settings", "message"), [
    ("{instance_type: ml.g5.2xlarg}", "org/m", {}, "did you mean ml.g5.2xlarge"),
    ("{instance_type: ml.m5.xlarge}", "org/m", {}, "has no GPU"),
    ("{instance_type: ml.g5.2xlarge}", "models/tiny", {}, "a folder on this machine"),
    ("{instance_type: ml.g5.2xlarge}", "org/m", {"network_isolation": True}, "network_isolation needs a training image"),
])
def test_what_a_job_cannot_run_is_refused_before_anything_is_sent(aws, tmp_path: Path, compute: str, base_model: str,
                                                                  settings: dict, message: str) -> None:
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    world = World(tmp_path, **settings)
    dataset = world.dataset()
    world.calls.clear()
    with pytest.raises(ProviderError, match=message):
        world.jobs.create(world.change(compute=compute, base_model=base_model), world.ctx(dataset))
    assert not world.sent("CreateTrainingJob") and not world.sent("PutObject")


def test_a_dataset_without_splits_in_s3_is_refused(world: World) -> None:
    dataset = world.dataset()
    dataset.outputs["splits"] = {}
    with pytest.raises(ProviderError, match="no stored splits"):
        world.jobs.create(world.change(), world.ctx(dataset))


# --- adopting instead of starting twice ---------------------------------------------------------------


def test_a_crashed_apply_adopts_its_running_job(world: World) -> None:
    change = world.change()
    first = world.jobs.create(change, world.ctx(wait=False))
    assert first.status is OutcomeStatus.PENDING and first.outputs["job_name"] == change.physical_name
    assert "--no-wait" in first.detail and "fastuner logs adapter.intents-lora -f" in first.detail
    assert len(world.sent("DescribeTrainingJob")) == 1  # the look before creating: no waiting at all
    job = World.moto_job(change.physical_name)
    job.training_job_status, job.secondary_status = "InProgress", "Training"

    def finish(pauses: int) -> None:
        if pauses == 2:
            job.training_job_status = job.secondary_status = "Completed"

    world.on_sleep = finish
    outcome = world.jobs.create(change, world.ctx())  # the re-run after a crash
    assert outcome.status is OutcomeStatus.READY and outcome.outputs["job_name"] == change.physical_name
    assert len(world.sent("CreateTrainingJob")) == 1
    assert any("adopting training job" in p for p in world.progress)
    assert world.slept == [1.0, 2.0]  # backoff while nothing new happens


def test_a_completed_job_is_adopted_at_once(world: World) -> None:
    change = world.change()
    done = world.jobs.create(change, world.ctx())
    world.put_artifact(done.outputs["model_data"])
    world.calls.clear()
    again = world.jobs.create(change, world.ctx())
    assert again.status is OutcomeStatus.READY and again.outputs["artifact"] == done.outputs["artifact"]
    assert not world.sent("CreateTrainingJob") and not world.sent("PutObject")
    assert [c["operation"] for c in world.calls] == ["DescribeTrainingJob", "HeadObject"]


def test_a_failed_job_is_followed_by_an_attempt_that_resumes(world: World) -> None:
    change = world.change()
    world.jobs.create(change, world.ctx())
    World.moto_job(change.physical_name).training_job_status = "Failed"
    world.jobs.create(change, world.ctx())  # apply after the failure (replace: tainted)
    first, second = world.sent("CreateTrainingJob")
    assert second["TrainingJobName"] == f"{change.physical_name}-r1"
    assert second["CheckpointConfig"] == first["CheckpointConfig"]  # the same checkpoints: it resumes
    assert json.loads(second["HyperParameters"]["sagemaker_job_name"]) == second["TrainingJobName"]
    assert any("starting another attempt" in p for p in world.progress)
    # compute changes in place; on two instances the program could not resume one instance's checkpoint
    World.moto_job(f"{change.physical_name}-r1").training_job_status = "Stopped"
    wider = world.change(compute="{instance_type: ml.g5.2xlarge, instance_count: 2, spot: true, max_runtime: 2h}")
    assert wider.physical_name == change.physical_name
    world.jobs.create(wider, world.ctx())
    third = world.sent("CreateTrainingJob")[2]
    assert third["TrainingJobName"] == f"{change.physical_name}-r2"
    assert third["CheckpointConfig"]["S3Uri"] == first["CheckpointConfig"]["S3Uri"].replace("/1x-", "/2x-")


def test_a_completed_job_whose_artifact_is_gone_is_trained_again(world: World) -> None:
    change = world.change()
    world.jobs.create(change, world.ctx())  # moto writes no artifact
    world.jobs.create(change, world.ctx())
    assert [r["TrainingJobName"] for r in world.sent("CreateTrainingJob")] == [
        change.physical_name, f"{change.physical_name}-r1"]
    assert any("its artifact is gone" in p for p in world.progress)


def test_a_restored_version_is_the_completed_job_found_again(world: World) -> None:
    change = world.change()
    done = world.jobs.create(change, world.ctx())
    world.put_artifact(done.outputs["model_data"])
    restore = {"physical_name": change.physical_name, "generation": 0, "artifact": done.outputs["artifact"]}
    outcome = world.jobs.create(change.__class__(**{**change.__dict__, "restore": restore}), world.ctx())
    assert outcome.outputs["restored_from"] == change.physical_name
    assert len(world.sent("CreateTrainingJob")) == 1


# --- waiting ----------------------------------------------------------------------------------------


def test_waiting_shows_the_secondary_status_and_the_programs_lines(world: World) -> None:
    change = world.change()
    world.jobs.create(change, world.ctx(wait=False))
    name = change.physical_name
    job = World.moto_job(name)
    job.training_job_status, job.secondary_status = "InProgress", "Downloading"

    def go(pauses: int) -> None:
        if pauses == 1:
            job.secondary_status = "Training"
            world.log(name, "algo-1", [
                "2026-12-07 06:00:01,000 sagemaker-training-toolkit INFO     Invoking user script",
                "[fastuner] INFO: loading the base model org/tiny-bert",
                "[fastuner] WARNING: 3 of 96 train examples were truncated to max_seq_len",
                "[fastuner] step=1 total_steps=3 epoch=0.33 train_loss=1.3800 lr=2.0e-04 eta_s=9.0",
                "[transformers] WARNING: library noise"])
        if pauses == 2:
            world.log(name, "algo-1", ["[fastuner] step=3 total_steps=3 epoch=1.00 train_loss=0.9000 lr=0.0e+00"])
            job.training_job_status = job.secondary_status = "Completed"

    world.on_sleep = go
    outcome = world.jobs.create(change, world.ctx())
    assert outcome.status is OutcomeStatus.READY
    assert any(p.startswith("Downloading") for p in world.progress)
    assert any(p.startswith("Training") for p in world.progress)
    assert "loading the base model org/tiny-bert" in world.progress
    assert "step 1/3 · loss 1.3800 · ETA 9s" in world.progress and "step 3/3 · loss 0.9000" in world.progress
    assert world.warnings == ["3 of 96 train examples were truncated to max_seq_len"]
    assert not any("library noise" in p or "Invoking" in p for p in world.progress)


def test_ctrl_c_leaves_the_job_running(world: World) -> None:
    change = world.change()
    world.jobs.create(change, world.ctx(wait=False))
    job = World.moto_job(change.physical_name)
    job.training_job_status = "InProgress"
    ctx = world.ctx()
    ctx.cancelled.set()
    outcome = world.jobs.create(change, ctx)
    assert outcome.status is OutcomeStatus.PENDING and outcome.outputs["job_name"] == change.physical_name
    assert outcome.detail.startswith("interrupted: training job") and not world.sent("StopTrainingJob")


# --- refresh -----------------------------------------------------------------------------------------


def test_read_tells_running_completed_failed_and_missing(world: World) -> None:
    change = world.change()
    pending = world.jobs.create(change, world.ctx(wait=False))
    rs = world.state(change, pending=True)
    rs.pending.detail = dict(pending.outputs)
    job = World.moto_job(change.physical_name)
    job.training_job_status, job.secondary_status = "InProgress", "Training"
    obs = world.jobs.read(rs)
    assert obs.status is ObservationStatus.PENDING and change.physical_name in obs.detail and "Training" in obs.detail
    job.training_job_status = "Completed"
    obs = world.jobs.read(rs)
    assert obs.status is ObservationStatus.READY and obs.outputs["job_name"] == change.physical_name
    assert obs.outputs["artifact"] and change.identity in obs.stored
    ready = world.state(change, dict(obs.outputs))
    assert world.jobs.read(ready).outputs == {}  # nothing state does not know
    job.training_job_status = "Failed"
    failed = world.jobs.read(rs)
    assert failed.status is ObservationStatus.FAILED and "fastuner logs adapter.intents-lora" in failed.detail
    other = world.change(base_model="org/other")  # other inputs: another name, never started
    assert world.jobs.read(world.state(other)).status is ObservationStatus.MISSING


def test_read_finds_the_attempt_a_crash_started(world: World) -> None:
    change = world.change()
    world.jobs.create(change, world.ctx())
    World.moto_job(change.physical_name).training_job_status = "Failed"
    world.jobs.create(change, world.ctx(wait=False))  # started -r1, then "crashed" before recording it
    World.moto_job(f"{change.physical_name}-r1").training_job_status = "InProgress"
    obs = world.jobs.read(world.state(change, pending=True))
    assert obs.status is ObservationStatus.PENDING and f"{change.physical_name}-r1" in obs.detail


def test_refreshing_many_adapters_costs_a_few_list_calls(world: World) -> None:
    """150 adapters: 2 List pages (moto may add an empty one), no Describe for what state already has."""
    sm = world.session.client("sagemaker")
    template = world.change()
    states = []
    for i in range(150):
        name = f"demo-ad-a{i:03d}-{i:08x}"
        sm.create_training_job(TrainingJobName=name, AlgorithmSpecification={"TrainingImage": "img",
                               "TrainingInputMode": "File"}, RoleArn=ROLE,
                               OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/ft/adapters/{i:016x}/"},
                               ResourceConfig={"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
                               StoppingCondition={"MaxRuntimeInSeconds": 3600})
        rs = world.state(template)
        rs.address, rs.name, rs.physical_name, rs.identity = f"adapter.a{i:03d}", f"a{i:03d}", name, f"{i:016x}"
        states.append(rs)
    for i in range(120, 130):
        World.moto_job(states[i].physical_name).training_job_status = "InProgress"
    for rs in states[:100]:  # state already knows these completed jobs
        rs.outputs = {"job_name": rs.physical_name, "artifact": {"model.tar.gz": "s3://x/y/output/model.tar.gz"},
                      "job_created": datetime.now(UTC).isoformat()}
    world.calls.clear()
    first = world.jobs.read_many(states)
    lists, describes = len(world.sent("ListTrainingJobs")), len(world.sent("DescribeTrainingJob"))
    assert lists <= 3 and describes == 40  # the 40 state has not seen complete yet
    assert all(p.get("NameContains") == "demo-ad-a" for p in world.sent("ListTrainingJobs"))
    assert sum(o.status is ObservationStatus.PENDING for o in first.values()) == 10
    assert first["adapter.a140"].outputs["job_name"] == states[140].physical_name

    for rs in states[100:]:  # recorded, as apply records what refresh saw
        rs.outputs = {**rs.outputs, **first[rs.address].outputs}
    world.calls.clear()
    again = world.jobs.read_many(states)
    assert {c["operation"] for c in world.calls} == {"ListTrainingJobs"} and len(world.calls) <= 3
    assert len(world.calls) <= len(states) / 50 + 5
    assert all(o.outputs == {} for a, o in again.items() if o.status is ObservationStatus.READY)


# --- updating and deleting ------------------------------------------------------------------------------


def test_tags_change_in_place(world: World) -> None:
    change = world.change()
    done = world.jobs.create(change, world.ctx())
    prior = world.state(change, dict(done.outputs))
    after = {**change.after, "tags": {"team": "search", "cost-center": "42"}}
    world.calls.clear()
    outcome = world.jobs.update(change.__class__(**{**change.__dict__, "after": after}), prior, world.ctx())
    assert outcome.outputs == prior.outputs
    assert only(world.sent("DeleteTags"))["TagKeys"] == ["team"]
    added = {t["Key"]: t["Value"] for t in only(world.sent("AddTags"))["Tags"]}
    assert added == {"team": "search", "cost-center": "42"}
    tags = world.session.client("sagemaker").list_tags(ResourceArn=done.outputs["job_arn"])["Tags"]
    assert {t["Key"]: t["Value"] for t in tags}["team"] == "search"


def test_delete_stops_a_running_job_and_removes_its_files(world: World) -> None:
    change = world.change()
    world.jobs.create(change, world.ctx(wait=False))
    name = change.physical_name
    folder = f"ft/adapters/{change.identity}/{name}/"
    world.put_artifact(f"s3://{BUCKET}/{folder}output/model.tar.gz")
    world.put_artifact(f"s3://{BUCKET}/ft/checkpoints/{name}/1x-ml.g5.2xlarge/step-00000002/COMPLETE")
    world.put_artifact(f"s3://{BUCKET}/ft/adapters/{change.identity}/{name}-other/output/model.tar.gz")
    sm = world.session.client("sagemaker")
    description = sm.describe_training_job(TrainingJobName=name)
    description.pop("ResponseMetadata")
    with Stubber(sm) as stub:
        stub.add_response("describe_training_job", {**description, "TrainingJobStatus": "InProgress"},
                          {"TrainingJobName": name})
        stub.add_client_error("describe_training_job", "ValidationException", "Requested resource not found",
                              expected_params={"TrainingJobName": f"{name}-r1"})
        stub.add_response("stop_training_job", {}, {"TrainingJobName": name})
        stub.add_response("describe_training_job", {**description, "TrainingJobStatus": "Stopping"},
                          {"TrainingJobName": name})
        stub.add_response("describe_training_job", {**description, "TrainingJobStatus": "Stopped"},
                          {"TrainingJobName": name})
        stub.add_response("delete_training_job", {}, {"TrainingJobName": name})
        world.jobs.delete(world.state(change, pending=True), world.ctx())
        stub.assert_no_pending_responses()
    assert not [k for k in world.objects() if k.startswith((folder, f"ft/checkpoints/{name}/"))]
    assert f"ft/adapters/{change.identity}/{name}-other/output/model.tar.gz" in world.objects()
    assert only(world.sent("StopTrainingJob")) == only(world.sent("DeleteTrainingJob")) == {"TrainingJobName": name}
    assert any("stopping training job" in p for p in world.progress)


def test_delete_spares_what_state_still_refers_to(world: World) -> None:
    change = world.change()
    done = world.jobs.create(change, world.ctx())
    world.put_artifact(done.outputs["model_data"])
    rs = world.state(change, dict(done.outputs))
    kept = set(done.outputs["artifact"].values())  # e.g. in the history of the resource that replaced it
    world.calls.clear()
    world.jobs.delete(rs, world.ctx(referenced=lambda: kept))
    assert done.outputs["model_data"][len(f"s3://{BUCKET}/"):] in world.objects()
    assert not world.sent("DeleteObjects") or all(
        "adapters/" not in o["Key"] for p in world.sent("DeleteObjects") for o in p["Delete"]["Objects"])
    assert not world.sent("DeleteTrainingJob")  # the job stays, so the kept version is found again


def test_destroy_removes_the_kept_versions_too(world: World) -> None:
    old = world.change(compute="{instance_type: ml.g5.xlarge, max_runtime: 1h}")
    new = world.change()
    old_done = world.jobs.create(old, world.ctx())
    assert old.identity == new.identity  # compute does not change the adapter: a history needs other inputs
    rs = world.state(new, dict(old_done.outputs))
    rs.history = [Trained(identity="0123456789abcdef", physical_name="demo-ad-intents-lora-01234567",
                          artifact={"model.tar.gz": f"s3://{BUCKET}/ft/adapters/0123456789abcdef/"
                                                    "demo-ad-intents-lora-01234567/output/model.tar.gz"})]
    world.put_artifact(rs.history[0].artifact["model.tar.gz"])
    world.put_artifact(old_done.outputs["model_data"])
    world.jobs.delete(rs, world.ctx())
    assert not [k for k in world.objects() if k.startswith("ft/adapters/")]
    assert world.sent("DeleteTrainingJob") == [{"TrainingJobName": old.physical_name}]
    assert world.jobs.describe(old.physical_name) is None  # the name is free again


# --- the log ----------------------------------------------------------------------------------------------


def test_logs_of_every_instance_followed_while_the_job_runs(world: World) -> None:
    change = world.change(compute="{instance_type: ml.g5.2xlarge, instance_count: 2}")
    world.jobs.create(change, world.ctx(wait=False))
    name = change.physical_name
    job = World.moto_job(name)
    job.training_job_status = "InProgress"
    world.log(name, "algo-1", ["[fastuner] step=1 total_steps=2 epoch=0.50 train_loss=1.0000"])
    world.log(name, "algo-2", ["rank 1 ready"])
    rs = world.state(change, pending=True)

    def more(pauses: int) -> None:
        world.log(name, "algo-1", ["[fastuner] step=2 total_steps=2 epoch=1.00 train_loss=0.5000"])
        job.training_job_status = "Completed"

    world.on_sleep = more
    text = "".join(world.jobs.read_log(rs, follow=True))
    assert text == ("[algo-1] [fastuner] step=1 total_steps=2 epoch=0.50 train_loss=1.0000\n"
                    "[algo-2] rank 1 ready\n"
                    "[algo-1] [fastuner] step=2 total_steps=2 epoch=1.00 train_loss=0.5000\n")
    assert "".join(world.jobs.read_log(rs, follow=False)).count("\n") == 3


def test_a_job_without_a_log_yet_says_so(world: World) -> None:
    change = world.change()
    world.jobs.create(change, world.ctx(wait=False))
    with pytest.raises(ProviderError, match="has no log yet"):
        list(world.jobs.read_log(world.state(change, pending=True), follow=False))
    with pytest.raises(ProviderError, match="has no training job yet"):
        list(world.jobs.read_log(world.state(world.change(base_model="org/other")), follow=False))


# --- what moto cannot do: the Stubber ----------------------------------------------------------------------


def stubbed_describe(name: str, **fields: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
            "TrainingJobStatus": "Completed", "SecondaryStatus": "Completed", "CreationTime": now,
            "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img"},
            "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
            "StoppingCondition": {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400},
            "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/ft/adapters/x/"},
            "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/ft/adapters/x/{name}/output/model.tar.gz"},
            "HyperParameters": {"task": '"classification"', "base_model": '"org/tiny-bert"',
                                "labels": json.dumps(sorted(LABELS))}, **fields}


def run_stubbed(world: World, responses: list[tuple[str, Any]]) -> Any:
    """create() with the SageMaker client answering from `responses` (S3 and Logs stay on moto)."""
    change = world.change()
    sm = world.session.client("sagemaker")
    with Stubber(sm) as stub:
        for method, answer in responses:
            if isinstance(answer, Exception):
                stub.add_client_error(method, *answer.args)
            else:
                stub.add_response(method, answer)
        try:
            return world.jobs.create(change, world.ctx())
        finally:
            stub.assert_no_pending_responses()


NOT_FOUND = ("ValidationException", "Requested resource not found")
CREATED = {"TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/x"}


def test_billable_time_spot_savings_and_final_metrics_are_recorded(world: World) -> None:
    name = world.change().physical_name
    done = stubbed_describe(name, EnableManagedSpotTraining=True, TrainingTimeInSeconds=1200,
                            BillableTimeInSeconds=420, FinalMetricDataList=[
                                {"MetricName": "step", "Value": 3.0, "Timestamp": datetime.now(UTC)},
                                {"MetricName": "test_accuracy", "Value": 0.75, "Timestamp": datetime.now(UTC)}])
    outcome = run_stubbed(world, [("describe_training_job", Exception(*NOT_FOUND)),
                                  ("create_training_job", CREATED), ("describe_training_job", done)])
    out = outcome.outputs
    assert (out["billable_seconds"], out["training_seconds"], out["spot_savings"]) == (420, 1200, 0.65)
    assert out["metrics"] == {"steps": 3, "test_accuracy": 0.75}
    assert out["job_created"] and out["labels"] == sorted(LABELS)


def test_a_failed_job_says_why_and_where_its_log_is(world: World) -> None:
    name = world.change().physical_name
    failed = stubbed_describe(name, TrainingJobStatus="Failed", SecondaryStatus="Failed",
                              FailureReason="AlgorithmError: hyperparameter 'lora_r' must be >= 1, exit code 2")
    with pytest.raises(ProviderError) as info:
        run_stubbed(world, [("describe_training_job", Exception(*NOT_FOUND)), ("create_training_job", CREATED),
                            ("describe_training_job", failed)])
    assert info.value.message == (f"training job {name} failed: AlgorithmError: hyperparameter 'lora_r' must be >= 1, "
                                  "exit code 2")
    assert "fastuner logs adapter.intents-lora" in info.value.hint


def test_a_job_stopped_at_max_runtime_says_so(world: World) -> None:
    name = world.change().physical_name
    stopped = stubbed_describe(name, TrainingJobStatus="Stopped", SecondaryStatus="MaxRuntimeExceeded")
    with pytest.raises(ProviderError, match=r"exceeded compute\.max_runtime") as info:
        run_stubbed(world, [("describe_training_job", Exception(*NOT_FOUND)), ("create_training_job", CREATED),
                            ("describe_training_job", stopped)])
    assert "Raise compute.max_runtime" in info.value.hint and "resumes from the last checkpoint" in info.value.hint


def test_a_quota_too_low_says_which_and_how_to_raise_it(world: World) -> None:
    quota = ("ResourceLimitExceeded", "The account-level service limit 'ml.g5.2xlarge for spot training job usage' "
             "is 0 Instances, with current utilization of 0 Instances and a request delta of 1 Instances.")
    with pytest.raises(ProviderError) as info:
        run_stubbed(world, [("describe_training_job", Exception(*NOT_FOUND)), ("create_training_job", Exception(*quota))])
    assert "ml.g5.2xlarge for spot training job usage" in info.value.message
    assert "Service Quotas" in info.value.hint


def test_access_denied_names_the_action(world: World) -> None:
    denied = ("AccessDeniedException", "User: arn:aws:sts::123456789012:assumed-role/ci/x is not authorized to "
              "perform: sagemaker:CreateTrainingJob on resource: arn:aws:sagemaker:us-east-1:123456789012:training-job/x")
    with pytest.raises(ProviderError) as info:
        run_stubbed(world, [("describe_training_job", Exception(*NOT_FOUND)), ("create_training_job", Exception(*denied))])
    assert "sagemaker:CreateTrainingJob" in info.value.message and "fastuner iam-policy" in info.value.hint


def test_a_throttling_storm_ends_in_the_explained_error_after_the_retries(world: World) -> None:
    """Every attempt answered 400 ThrottlingException (below the Stubber, so botocore's retries run)."""
    from botocore.awsrequest import AWSResponse

    attempts = []

    def throttle(request: Any, **_: Any) -> AWSResponse:
        attempts.append(request.url)
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()

        class Raw(io.BytesIO):
            def stream(self, *_a: Any, **_k: Any) -> Iterator[bytes]:
                yield self.getvalue()

        return AWSResponse(request.url, 400, {"x-amzn-ErrorType": "ThrottlingException"}, Raw(body))

    sm = world.session.client("sagemaker")
    sm.meta.events.register_first("before-send.sagemaker.DescribeTrainingJob", throttle)
    with pytest.raises(ProviderError) as info:
        world.jobs.create(world.change(), world.ctx())
    assert len(attempts) == world.session.max_attempts == 2
    assert "kept throttling DescribeTrainingJob after the retries" in info.value.message
    assert "AWS_MAX_ATTEMPTS" in info.value.hint and not world.sent("CreateTrainingJob")


def test_a_job_that_cannot_be_deleted_leaves_a_warning_not_a_failure(world: World) -> None:
    change = world.change()
    done = world.jobs.create(change, world.ctx())
    sm = world.session.client("sagemaker")
    description = sm.describe_training_job(TrainingJobName=change.physical_name)
    description.pop("ResponseMetadata")
    denied = f"User: x is not authorized to perform: sagemaker:DeleteTrainingJob on resource: {done.outputs['job_arn']}"
    with Stubber(sm) as stub:
        stub.add_response("describe_training_job", description)
        stub.add_client_error("describe_training_job", "ValidationException", "Requested resource not found")
        stub.add_client_error("delete_training_job", "AccessDeniedException", denied)
        world.jobs.delete(world.state(change, dict(done.outputs)), world.ctx())
    assert len(world.warnings) == 1 and "is kept" in world.warnings[0]
    assert "sagemaker:DeleteTrainingJob" in world.warnings[0]


# --- checks at plan time ------------------------------------------------------------------------------------


def test_plan_time_checks_point_at_the_spec(tmp_path: Path) -> None:
    from fastuner.providers.sagemaker.checks import check_training

    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "fastuner.yaml").write_text(f"""\
version: 1
project: demo
provider:
  sagemaker: {{region: {REGION}, role_arn: "{ROLE}", bucket: {BUCKET}, network_isolation: true}}
datasets:
  ds: {{path: data/ds.jsonl, task: qa}}
adapters:
  good:
    base_model: org/model
    dataset: ds
  local:
    base_model: models/tiny
    dataset: ds
    compute: {{instance_type: ml.m5.xlarge}}
  typo:
    base_model: org/model
    dataset: ds
    compute: {{instance_type: ml.g5.2xlarg}}
""")
    spec = load_spec(tmp_path / "fastuner.yaml", variables={}, environ={})
    found = [(d.summary, d.source.line if d.source else None) for d in check_training(spec)]
    assert found[0][1] == 4 and "network_isolation needs a training image" in found[0][0]
    assert [(s.split(":")[0], line) for s, line in found[1:]] == [
        ("adapter.local", 14), ("adapter.local", 12), ("adapter.typo", 18)]
    assert "ml.m5.xlarge has no GPU" in found[1][0] and "is a folder on this machine" in found[2][0]
    assert "did you mean ml.g5.2xlarge" in found[3][0]


def test_after_a_spot_interruption_the_new_stream_is_followed(world: World) -> None:
    change = world.change()
    world.jobs.create(change, world.ctx(wait=False))
    name = change.physical_name
    job = World.moto_job(name)
    job.training_job_status, job.secondary_status = "InProgress", "Training"
    world.log(name, "algo-1", ["[fastuner] step=1 total_steps=4 epoch=0.25 train_loss=1.5000"])

    def go(pauses: int) -> None:
        if pauses == 1:
            job.secondary_status = "Interrupted"
        if pauses == 2:  # restarted on new capacity: a new stream for the same host
            job.secondary_status = "Training"
            world.log(name, "algo-1", ["[fastuner] INFO: resuming from checkpoint step-00000002"], start=1712349999)
            world.log(name, "algo-1", ["[fastuner] step=4 total_steps=4 epoch=1.00 train_loss=0.7000"],
                      start=1712349999)
            job.training_job_status = job.secondary_status = "Completed"

    world.on_sleep = go
    assert world.jobs.create(change, world.ctx()).status is OutcomeStatus.READY
    assert [p for p in world.progress if p.startswith(("step", "resuming"))] == [
        "step 1/4 · loss 1.5000", "resuming from checkpoint step-00000002", "step 4/4 · loss 0.7000"]
    assert any(p.startswith("Interrupted") for p in world.progress)


def test_one_list_finds_later_attempts_and_failures_state_already_explains(world: World) -> None:
    changes = [world.change(base_model=f"org/m{i}") for i in range(4)]
    for c in changes:
        world.jobs.create(c, world.ctx(wait=False))
    a, b, c, d = changes
    World.moto_job(a.physical_name).training_job_status = "Failed"
    world.jobs.create(a, world.ctx(wait=False))  # a's -r1, which state never heard of (a crash)
    World.moto_job(f"{a.physical_name}-r1").training_job_status = "InProgress"
    World.moto_job(b.physical_name).training_job_status = "Failed"
    states = [world.state(a, pending=True),
              world.state(b, status=Status.FAILED),
              world.state(c, {"job_name": c.physical_name, "artifact": {"model.tar.gz": "s3://x/y/output/model.tar.gz"}}),
              world.state(d, pending=True)]
    states[1].error = "training job X failed: out of memory"
    for i, rs in enumerate(states):
        rs.address, rs.name = f"adapter.a{i}", f"a{i}"
    world.calls.clear()
    seen = world.jobs.read_many(states)
    assert [c["operation"] for c in world.calls] == ["ListTrainingJobs", "DescribeTrainingJob"]
    assert world.sent("DescribeTrainingJob") == [{"TrainingJobName": d.physical_name}]
    assert seen["adapter.a0"].status is ObservationStatus.PENDING and f"{a.physical_name}-r1" in seen["adapter.a0"].detail
    assert (seen["adapter.a1"].status, seen["adapter.a1"].detail) == (ObservationStatus.FAILED, states[1].error)
    assert (seen["adapter.a2"].status, seen["adapter.a2"].outputs) == (ObservationStatus.READY, {})
    assert seen["adapter.a3"].status is ObservationStatus.READY
    assert seen["adapter.a3"].outputs["job_name"] == d.physical_name
