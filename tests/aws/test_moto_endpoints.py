"""The test-only moto extension for SageMaker endpoints (tests/aws/moto_endpoints.py), driven with boto3
under `mock_aws`: what it must answer as SageMaker does for the end-to-end deployment tests to mean
anything."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.aws.moto_endpoints import Endpoints

ROLE = "arn:aws:iam::123456789012:role/fastuner-demo"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.35.0-lmi17.0.0-cu128"
TAGS = [{"Key": "fastuner:project", "Value": "demo"}, {"Key": "fastuner:expires-at", "Value": "2030-01-01T00:00:00Z"}]


@pytest.fixture
def world(aws) -> Iterator[Endpoints]:
    world = Endpoints(settle=2, linger=1).install()
    try:
        yield world
    finally:
        world.uninstall()


@pytest.fixture
def sm(world: Endpoints) -> Any:
    return boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def refused(call: Any, **params: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call(**params)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    return caught.value.response["Error"]["Message"]


def status(sm: Any, name: str) -> str:
    return sm.describe_endpoint(EndpointName=name)["EndpointStatus"]


def component_status(sm: Any, name: str) -> str:
    return sm.describe_inference_component(InferenceComponentName=name)["InferenceComponentStatus"]


def endpoint(sm: Any, name: str = "ep", instance: str = "ml.g5.xlarge") -> None:
    sm.create_model(ModelName=f"{name}-model", PrimaryContainer={"Image": IMAGE}, ExecutionRoleArn=ROLE, Tags=TAGS)
    sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ExecutionRoleArn=ROLE, Tags=TAGS, ProductionVariants=[
        {"VariantName": "AllTraffic", "InstanceType": instance, "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config", Tags=TAGS)


def settled(sm: Any, name: str = "ep") -> None:
    while status(sm, name) != "InService":
        pass


def test_component_style_configs_of_new_instance_types_and_endpoints_that_take_time(world: Endpoints, sm) -> None:
    endpoint(sm)
    config = sm.describe_endpoint_config(EndpointConfigName="ep-config")
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g5.xlarge"
    assert "ModelName" not in config["ProductionVariants"][0] and config["ExecutionRoleArn"] == ROLE
    assert [status(sm, "ep") for _ in range(3)] == ["Creating", "Creating", "InService"]
    assert "Member must satisfy enum value set" in refused(
        sm.create_endpoint_config, EndpointConfigName="odd", ProductionVariants=[
            {"VariantName": "AllTraffic", "InstanceType": "ml.g99.huge", "InitialInstanceCount": 1}])
    arn = "arn:aws:sagemaker:us-east-1:123456789012"
    assert refused(sm.create_model, ModelName="ep-model", PrimaryContainer={"Image": IMAGE}, ExecutionRoleArn=ROLE) \
        == f"Cannot create already existing model \"{arn}:model/ep-model\"."
    assert refused(sm.create_endpoint_config, EndpointConfigName="ep-config", ProductionVariants=[
        {"VariantName": "AllTraffic", "InstanceType": "ml.p5.48xlarge", "InitialInstanceCount": 1}]) \
        == f"Cannot create already existing endpoint configuration \"{arn}:endpoint-config/ep-config\"."
    assert refused(sm.create_endpoint, EndpointName="ep", EndpointConfigName="ep-config") \
        == f"Cannot create already existing endpoint \"{arn}:endpoint/ep\"."
    assert world.created == [("model", "ep-model"), ("endpoint-config", "ep-config"), ("endpoint", "ep")]


def test_inference_components_from_creation_to_deletion(world: Endpoints, sm) -> None:
    endpoint(sm)
    base = {"InferenceComponentName": "ep-base", "EndpointName": "ep", "VariantName": "AllTraffic",
            "Specification": {"ModelName": "ep-model", "ComputeResourceRequirements": {
                "MinMemoryRequiredInMb": 1024, "NumberOfAcceleratorDevicesRequired": 1}},
            "RuntimeConfig": {"CopyCount": 1}, "Tags": TAGS}
    assert "Creating" in refused(sm.create_inference_component, **base)  # the endpoint is not in service yet
    settled(sm)
    sm.create_inference_component(**base)
    adapter = {"InferenceComponentName": "ep-a", "EndpointName": "ep", "VariantName": "AllTraffic", "Tags": TAGS,
               "Specification": {"BaseInferenceComponentName": "ep-base",
                                 "Container": {"ArtifactUrl": "s3://b/a/model.tar.gz"}}}
    sm.create_inference_component(**adapter)
    assert "already existing inference component" in refused(sm.create_inference_component, **adapter)
    assert refused(sm.create_inference_component, **{**adapter, "InferenceComponentName": "ep-b", "Specification": {
        "BaseInferenceComponentName": "nope"}}) == "Could not find inference component \"nope\"."
    assert [component_status(sm, "ep-a") for _ in range(3)] == ["Creating", "Creating", "InService"]
    described = sm.describe_inference_component(InferenceComponentName="ep-base")
    assert described["Specification"]["ModelName"] == "ep-model" and described["EndpointName"] == "ep"
    assert world.on("ep") == ["ep-a", "ep-base"] and world.creates("inference-component", "ep-a") == 1

    # tags: the resource's own and the tagging API's
    arn = described["InferenceComponentArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == TAGS
    sm.delete_tags(ResourceArn=arn, TagKeys=["fastuner:expires-at"])
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "fastuner:expires-at", "Value": "2031-01-01T00:00:00Z"}])
    tagging = boto3.client("resourcegroupstaggingapi", region_name="us-east-1")
    found = tagging.get_resources(ResourceTypeFilters=["sagemaker:inference-component"],
                                  TagFilters=[{"Key": "fastuner:expires-at", "Values": ["2031-01-01T00:00:00Z"]}])
    assert [r["ResourceARN"] for r in found["ResourceTagMappingList"]] == [arn]

    # listing: by endpoint, a page at a time
    first = sm.list_inference_components(EndpointNameEquals="ep", MaxResults=1)
    second = sm.list_inference_components(EndpointNameEquals="ep", MaxResults=1, NextToken=first["NextToken"])
    assert [c["InferenceComponentName"] for c in first["InferenceComponents"] + second["InferenceComponents"]] \
        == ["ep-a", "ep-base"] and "NextToken" not in second
    assert sm.list_inference_components(EndpointNameEquals="other")["InferenceComponents"] == []

    # a retrained adapter: a new artifact, Updating, then in service with it
    sm.update_inference_component(InferenceComponentName="ep-a", Specification={
        "BaseInferenceComponentName": "ep-base", "Container": {"ArtifactUrl": "s3://b/a2/model.tar.gz"}})
    assert "while it is Updating" in refused(sm.update_inference_component, InferenceComponentName="ep-a",
                                             RuntimeConfig={"CopyCount": 2})
    assert [component_status(sm, "ep-a") for _ in range(3)] == ["Updating", "Updating", "InService"]
    spec = sm.describe_inference_component(InferenceComponentName="ep-a")["Specification"]
    assert spec["Container"]["ArtifactUrl"] == "s3://b/a2/model.tar.gz"
    assert [component_status(sm, "ep-base") for _ in range(3)][-1] == "InService"
    sm.update_inference_component_runtime_config(InferenceComponentName="ep-base", DesiredRuntimeConfig={"CopyCount": 2})
    runtime = sm.describe_inference_component(InferenceComponentName="ep-base")["RuntimeConfig"]
    assert runtime == {"DesiredCopyCount": 2, "CurrentCopyCount": 0}  # Updating: not there yet
    assert [component_status(sm, "ep-base") for _ in range(2)] == ["Updating", "InService"]

    # deletes: the base waits for its adapters, the endpoint for its components
    assert "is a base inference component" in refused(sm.delete_inference_component, InferenceComponentName="ep-base")
    sm.delete_inference_component(InferenceComponentName="ep-a")
    assert "still hosts inference components" in refused(sm.delete_endpoint, EndpointName="ep")
    assert component_status(sm, "ep-a") == "Deleting"
    assert "is a base inference component" in refused(sm.delete_inference_component, InferenceComponentName="ep-base")
    assert refused(sm.describe_inference_component, InferenceComponentName="ep-a") \
        == "Could not find inference component \"ep-a\"."
    sm.delete_inference_component(InferenceComponentName="ep-base")
    assert "DELETE_IN_PROGRESS" in refused(sm.delete_inference_component, InferenceComponentName="ep-base")
    with pytest.raises(ClientError):
        while True:
            sm.describe_inference_component(InferenceComponentName="ep-base")
    sm.delete_endpoint(EndpointName="ep")
    assert sm.list_endpoints()["Endpoints"] == []


def test_update_endpoint_moves_to_a_new_config(world: Endpoints, sm) -> None:
    endpoint(sm)
    assert "Cannot update in-progress endpoint" in refused(sm.update_endpoint, EndpointName="ep",
                                                           EndpointConfigName="ep-config")
    assert "Cannot update in-progress endpoint" in refused(sm.delete_endpoint, EndpointName="ep")
    settled(sm)
    sm.create_endpoint_config(EndpointConfigName="ep-config-2", ExecutionRoleArn=ROLE, ProductionVariants=[
        {"VariantName": "AllTraffic", "InstanceType": "ml.g6.2xlarge", "InitialInstanceCount": 2}])
    assert "Could not find endpoint configuration" in refused(sm.update_endpoint, EndpointName="ep",
                                                              EndpointConfigName="nope")
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="ep-config-2")
    seen = [sm.describe_endpoint(EndpointName="ep") for _ in range(3)]
    assert [(d["EndpointStatus"], d["EndpointConfigName"]) for d in seen] == [
        ("Updating", "ep-config"), ("Updating", "ep-config"), ("InService", "ep-config-2")]
    assert seen[-1]["ProductionVariants"][0]["CurrentInstanceCount"] == 2


def test_uninstall_gives_moto_back(aws) -> None:
    sm = boto3.client("sagemaker", region_name="us-east-1")
    world = Endpoints().install()
    world.uninstall()
    assert "failed to satisfy constraint" in refused(sm.create_endpoint_config, EndpointConfigName="c", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.g5.xlarge", "InitialInstanceCount": 1}])
    with pytest.raises(NotImplementedError, match="list_inference_components"):
        sm.list_inference_components()
