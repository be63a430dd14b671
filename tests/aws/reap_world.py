"""Endpoints as fastuner's SageMaker deployments leave them, in moto in process: model, endpoint config,
endpoint and inference components, each tagged with project, workspace, address and lifetime; their
CloudWatch invocations; and every call fastuner sends, recorded as sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastuner.aws.clients import AwsSession
from tests.aws.conftest import ACCOUNT, FAKE_CREDENTIALS
from tests.aws.moto_endpoints import Endpoints

REGION = "us-east-1"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/fastuner-serve:1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/fastuner-demo"


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ReapWorld:
    """`session` is fastuner's (its calls land in `calls`); `setup` is the test's own, unrecorded."""

    def __init__(self, components: Endpoints) -> None:
        self.components = components
        self.session = AwsSession(REGION, environ=FAKE_CREDENTIALS)
        self.calls: list[dict[str, Any]] = []
        self.session.observe(self.calls.append)
        self.setup = AwsSession(REGION, environ=FAKE_CREDENTIALS)
        self.sm = self.setup.client("sagemaker")
        self.now = datetime.now(UTC)  # moto stamps creation with the real time

    def sent(self, operation: str) -> list[dict[str, Any]]:
        return [c["params"] for c in self.calls if c["operation"] == operation]

    def operations(self) -> list[tuple[str, str]]:
        """(operation, the name it acts on) of every call, in order."""
        keys = ("InferenceComponentName", "EndpointName", "EndpointConfigName", "ModelName")
        return [(c["operation"], next((str(c["params"][k]) for k in keys if k in c["params"]), ""))
                for c in self.calls]

    def deployment(self, name: str, *, project: str = "demo", workspace: str = "default",
                   address: str | None = None, expires_at: datetime | None = None, idle_ttl: str | None = None,
                   adapters: tuple[str, ...] = (), config: str | None = None, model: str | None = None) -> str:
        """An endpoint named `name` with its model and config (serve style: the model on the variant),
        plus a base component and one component per adapter when `adapters` are given. Returns the name."""
        tags = {"fastuner:project": project, "fastuner:workspace": workspace,
                "fastuner:address": address or f"deployment.{name}"}
        if expires_at is not None:
            tags["fastuner:expires-at"] = iso(expires_at)
        if idle_ttl is not None:
            tags["fastuner:idle-ttl"] = idle_ttl
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        model = model or f"{name}-model"
        config = config or f"{name}-config"
        self.sm.create_model(ModelName=model, PrimaryContainer={"Image": IMAGE}, ExecutionRoleArn=ROLE, Tags=tag_list)
        self.sm.create_endpoint_config(EndpointConfigName=config, Tags=tag_list, ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1,
             "InstanceType": "ml.m5.large"}])
        self.sm.create_endpoint(EndpointName=name, EndpointConfigName=config, Tags=tag_list)
        if adapters:
            self.components.add(f"{name}-base", name, model=model)
            for adapter in adapters:
                self.components.add(f"{name}-{adapter}", name, base=f"{name}-base",
                                    artifact=f"s3://bucket/adapters/{adapter}/model.tar.gz")
        return name

    def invoked(self, dimensions: dict[str, str], at: datetime, count: float) -> None:
        self.setup.client("cloudwatch").put_metric_data(Namespace="AWS/SageMaker", MetricData=[{
            "MetricName": "Invocations", "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
            "Timestamp": at, "Value": count}])

    def endpoints(self) -> set[str]:
        return {e["EndpointName"] for e in self.sm.list_endpoints()["Endpoints"]}

    def configs(self) -> set[str]:
        return {c["EndpointConfigName"] for c in self.sm.list_endpoint_configs()["EndpointConfigs"]}

    def models(self) -> set[str]:
        return {m["ModelName"] for m in self.sm.list_models()["Models"]}

    def later(self, **delta: float) -> datetime:
        return self.now + timedelta(**delta)
