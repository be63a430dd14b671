"""Inference components for moto, which has none: a test-only extension of its SageMaker responses (in
process under `mock_aws`, or in a `ThreadedMotoServer` of the same process).

A test adds components with `add` (as fastuner's deployment provider would have created them);
`ListInferenceComponents` (by `EndpointNameEquals`, paged), `DescribeInferenceComponent` and
`DeleteInferenceComponent` answer from them. A deleted component is `Deleting` for `linger` more
describes, then gone, as SageMaker takes minutes; `DeleteEndpoint` is refused while the endpoint still
has components, as SageMaker refuses it. Requests still pass botocore's validation against the service
model before they reach moto. `uninstall()` restores moto.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from moto.sagemaker import responses
from moto.sagemaker.exceptions import ValidationError

ACCOUNT = "123456789012"
OPERATIONS = ("list_inference_components", "describe_inference_component", "delete_inference_component",
              "delete_endpoint")


class Components:
    def __init__(self, region: str = "us-east-1", *, linger: int = 1) -> None:
        self.region = region
        self.linger = linger
        self.items: dict[str, dict[str, Any]] = {}
        self._saved: dict[str, Any] = {}

    def add(self, name: str, endpoint: str, *, model: str | None = None, base: str | None = None,
            artifact: str | None = None, variant: str = "AllTraffic", status: str = "InService") -> None:
        spec: dict[str, Any] = {}
        if model:
            spec["ModelName"] = model
        if base:
            spec["BaseInferenceComponentName"] = base
        if artifact:
            spec["Container"] = {"ArtifactUrl": artifact}
        self.items[name] = {"name": name, "endpoint": endpoint, "variant": variant, "status": status,
                            "spec": spec, "created": datetime.now(UTC).timestamp(), "left": self.linger}

    def on(self, endpoint: str) -> list[str]:
        return sorted(n for n, c in self.items.items() if c["endpoint"] == endpoint)

    # --- installing ---------------------------------------------------------------------------------

    def install(self) -> Components:
        world = self
        self._saved = {name: responses.SageMakerResponse.__dict__.get(name) for name in OPERATIONS}
        original_delete_endpoint = responses.SageMakerResponse.delete_endpoint

        def arn(c: dict[str, Any], kind: str = "inference-component") -> str:
            name = c["name"] if kind == "inference-component" else c["endpoint"]
            return f"arn:aws:sagemaker:{world.region}:{ACCOUNT}:{kind}/{name}"

        def summary(c: dict[str, Any]) -> dict[str, Any]:
            return {"InferenceComponentName": c["name"], "InferenceComponentArn": arn(c), "EndpointName": c["endpoint"],
                    "EndpointArn": arn(c, "endpoint"), "VariantName": c["variant"], "CreationTime": c["created"],
                    "LastModifiedTime": c["created"], "InferenceComponentStatus": c["status"]}

        def listing(response: Any) -> str:
            endpoint = response._get_param("EndpointNameEquals")
            names = [n for n in sorted(world.items) if endpoint in (None, world.items[n]["endpoint"])]
            size = int(response._get_param("MaxResults") or 10)
            start = int(response._get_param("NextToken") or 0)
            page = {"InferenceComponents": [summary(world.items[n]) for n in names[start:start + size]]}
            if start + size < len(names):
                page["NextToken"] = str(start + size)
            return json.dumps(page)

        def found(name: str) -> dict[str, Any]:
            c = world.items.get(name)
            if c is None:
                raise ValidationError(message=f"Could not find inference component \"{name}\".")
            return c

        def describe(response: Any) -> str:
            c = found(response._get_param("InferenceComponentName"))
            if c["status"] == "Deleting":
                if c["left"] <= 0:
                    del world.items[c["name"]]
                    found(c["name"])
                c["left"] -= 1
            return json.dumps({**summary(c), "Specification": c["spec"],
                               "RuntimeConfig": {"DesiredCopyCount": 1, "CurrentCopyCount": 1}})

        def delete(response: Any) -> str:
            c = found(response._get_param("InferenceComponentName"))
            if c["spec"].get("ModelName") and any(o["spec"].get("BaseInferenceComponentName") == c["name"]
                                                   for o in world.items.values()):
                raise ValidationError(message=f"Inference component {c['name']} is the base of other components")
            c["status"] = "Deleting"
            return "{}"

        def delete_endpoint(response: Any) -> Any:
            name = response._get_param("EndpointName")
            if world.on(name):
                raise ValidationError(message=f"Cannot delete endpoint {name}: it has inference components")
            return original_delete_endpoint(response)

        responses.SageMakerResponse.list_inference_components = listing
        responses.SageMakerResponse.describe_inference_component = describe
        responses.SageMakerResponse.delete_inference_component = delete
        responses.SageMakerResponse.delete_endpoint = delete_endpoint
        return self

    def uninstall(self) -> None:
        for name, original in self._saved.items():
            if original is None:
                delattr(responses.SageMakerResponse, name)
            else:
                setattr(responses.SageMakerResponse, name, original)
