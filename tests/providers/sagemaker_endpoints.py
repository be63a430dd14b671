"""SageMaker's endpoint calls for the deployment provider's tests, where moto has none (inference
components, UpdateEndpoint) or refuses what fastuner sends (g5 types, component-style configs).

`FakeEndpoints` answers the sagemaker client's calls from botocore's `before-call` event, after botocore
has validated each request against the service model (so a malformed request fails here as it would on
AWS), keeping models, configs, endpoints, components and tags in dicts. Things take one Describe to come
into service (or to go), so waiting is exercised. The tagging API's GetResources is answered from the
same tags, so the endpoint tree finds configs and models by tag. Other services (S3, CloudWatch) stay
moto's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from botocore.awsrequest import AWSResponse

ACCOUNT = "123456789012"


class FakeEndpoints:
    def __init__(self, session: Any, region: str = "us-east-1") -> None:
        self.region = region
        self.models: dict[str, dict[str, Any]] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.components: dict[str, dict[str, Any]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.fail: dict[str, str] = {}  # name -> the failure reason it gets when it would come into service
        self.page = 2  # List calls answer this many a page, and an empty last page with a NextToken
        session.client("sagemaker").meta.events.register_first("before-call.sagemaker", self._answer)
        session.client("resourcegroupstaggingapi").meta.events.register_first(
            "before-call.resource-groups-tagging-api", self._tagging)

    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{ACCOUNT}:{kind}/{name.lower()}"

    # --- the answers -----------------------------------------------------------------------------

    def _answer(self, model: Any, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        body = json.loads(params["body"] or b"{}")
        handler = getattr(self, f"_{model.name}", None)
        if handler is None:
            raise AssertionError(f"the fake has no {model.name}")
        try:
            answer = handler(body) or {}
        except _NotFound as exc:
            return _error("ValidationException", str(exc))
        except _Exists as exc:
            return _error("ValidationException", f"Cannot create already existing {exc}.")
        return AWSResponse("", 200, {}, None), {**answer, "ResponseMetadata": {"HTTPStatusCode": 200}}

    def _tagging(self, model: Any, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        body = json.loads(params["body"] or b"{}")
        filters = {f["Key"]: set(f.get("Values") or []) for f in body.get("TagFilters") or []}
        out = []
        for arn, tags in self.tags.items():
            if all(k in tags and (not v or tags[k] in v) for k, v in filters.items()):
                out.append({"ResourceARN": arn, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]})
        return AWSResponse("", 200, {}, None), {"ResourceTagMappingList": out, "PaginationToken": "",
                                                "ResponseMetadata": {"HTTPStatusCode": 200}}

    def _tag(self, kind: str, name: str, body: dict[str, Any]) -> str:
        arn = self.arn(kind, name)
        self.tags[arn] = {t["Key"]: t["Value"] for t in body.get("Tags") or []}
        return arn

    def _CreateModel(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["ModelName"]
        if name in self.models:
            raise _Exists(f"model {name}")
        self.models[name] = {**body, "ModelArn": self._tag("model", name, body), "CreationTime": _now()}
        return {"ModelArn": self.models[name]["ModelArn"]}

    def _DescribeModel(self, body: dict[str, Any]) -> dict[str, Any]:
        return _get(self.models, body["ModelName"], "model")

    def _DeleteModel(self, body: dict[str, Any]) -> None:
        _get(self.models, body["ModelName"], "model")
        del self.models[body["ModelName"]]

    def _CreateEndpointConfig(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["EndpointConfigName"]
        if name in self.configs:
            raise _Exists(f"endpoint configuration {name}")
        arn = self._tag("endpoint-config", name, body)
        self.configs[name] = {**body, "EndpointConfigArn": arn, "CreationTime": _now()}
        return {"EndpointConfigArn": arn}

    def _DescribeEndpointConfig(self, body: dict[str, Any]) -> dict[str, Any]:
        return _get(self.configs, body["EndpointConfigName"], "endpoint configuration")

    def _DeleteEndpointConfig(self, body: dict[str, Any]) -> None:
        _get(self.configs, body["EndpointConfigName"], "endpoint configuration")
        del self.configs[body["EndpointConfigName"]]

    def _CreateEndpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["EndpointName"]
        if name in self.endpoints:
            raise _Exists(f"endpoint {name}")
        _get(self.configs, body["EndpointConfigName"], "endpoint configuration")
        arn = self._tag("endpoint", name, body)
        self.endpoints[name] = {"EndpointName": name, "EndpointArn": arn, "EndpointConfigName": body["EndpointConfigName"],
                                "EndpointStatus": "Creating", "CreationTime": _now(), "LastModifiedTime": _now()}
        return {"EndpointArn": arn}

    def _DescribeEndpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = _get(self.endpoints, body["EndpointName"], "endpoint")
        answer = dict(endpoint)
        self._settle(endpoint, "EndpointStatus", body["EndpointName"])
        config = self.configs.get(endpoint["EndpointConfigName"]) or {}
        answer["ProductionVariants"] = [{"VariantName": v["VariantName"]} for v in config.get("ProductionVariants") or []]
        return answer

    def _UpdateEndpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = _get(self.endpoints, body["EndpointName"], "endpoint")
        _get(self.configs, body["EndpointConfigName"], "endpoint configuration")
        endpoint.update(EndpointConfigName=body["EndpointConfigName"], EndpointStatus="Updating")
        return {"EndpointArn": endpoint["EndpointArn"]}

    def _DeleteEndpoint(self, body: dict[str, Any]) -> None:
        _get(self.endpoints, body["EndpointName"], "endpoint")
        if any(c["EndpointName"] == body["EndpointName"] for c in self.components.values()):
            raise AssertionError("an endpoint with inference components cannot be deleted")
        del self.endpoints[body["EndpointName"]]

    def _ListEndpoints(self, body: dict[str, Any]) -> dict[str, Any]:
        items = [{k: e[k] for k in ("EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime", "EndpointStatus")}
                 for n, e in sorted(self.endpoints.items()) if body.get("NameContains", "") in n]
        return self._paged(items, "Endpoints", body)

    def _CreateInferenceComponent(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["InferenceComponentName"]
        if name in self.components:
            raise _Exists(f"inference component {name}")
        _get(self.endpoints, body["EndpointName"], "endpoint")
        base = body["Specification"].get("BaseInferenceComponentName")
        if base:
            _get(self.components, base, "inference component")
        arn = self._tag("inference-component", name, body)
        self.components[name] = {"InferenceComponentName": name, "InferenceComponentArn": arn,
                                 "EndpointName": body["EndpointName"], "VariantName": body["VariantName"],
                                 "Specification": body["Specification"], "RuntimeConfig": body.get("RuntimeConfig"),
                                 "InferenceComponentStatus": "Creating", "CreationTime": _now()}
        return {"InferenceComponentArn": arn}

    def _DescribeInferenceComponent(self, body: dict[str, Any]) -> dict[str, Any]:
        component = _get(self.components, body["InferenceComponentName"], "inference component")
        answer = dict(component)
        if component["InferenceComponentStatus"] == "Deleting":
            del self.components[body["InferenceComponentName"]]
        else:
            self._settle(component, "InferenceComponentStatus", body["InferenceComponentName"])
        return answer

    def _UpdateInferenceComponent(self, body: dict[str, Any]) -> dict[str, Any]:
        component = _get(self.components, body["InferenceComponentName"], "inference component")
        component.update(Specification=body.get("Specification", component["Specification"]),
                         InferenceComponentStatus="Updating")
        return {"InferenceComponentArn": component["InferenceComponentArn"]}

    def _UpdateInferenceComponentRuntimeConfig(self, body: dict[str, Any]) -> dict[str, Any]:
        component = _get(self.components, body["InferenceComponentName"], "inference component")
        component.update(RuntimeConfig=body["DesiredRuntimeConfig"], InferenceComponentStatus="Updating")
        return {"InferenceComponentArn": component["InferenceComponentArn"]}

    def _DeleteInferenceComponent(self, body: dict[str, Any]) -> None:
        component = _get(self.components, body["InferenceComponentName"], "inference component")
        if any((c["Specification"] or {}).get("BaseInferenceComponentName") == body["InferenceComponentName"]
               for c in self.components.values()):
            raise AssertionError("a base component with adapter components cannot be deleted")
        component["InferenceComponentStatus"] = "Deleting"

    def _ListInferenceComponents(self, body: dict[str, Any]) -> dict[str, Any]:
        items = [{k: c[k] for k in ("InferenceComponentName", "InferenceComponentArn", "EndpointName", "VariantName",
                                    "InferenceComponentStatus", "CreationTime")}
                 for n, c in sorted(self.components.items())
                 if body.get("NameContains", "") in n and body.get("EndpointNameEquals", c["EndpointName"]) ==
                 c["EndpointName"]]
        return self._paged(items, "InferenceComponents", body)

    def _AddTags(self, body: dict[str, Any]) -> dict[str, Any]:
        self.tags.setdefault(body["ResourceArn"], {}).update({t["Key"]: t["Value"] for t in body["Tags"]})
        return {"Tags": body["Tags"]}

    def _DeleteTags(self, body: dict[str, Any]) -> None:
        for key in body["TagKeys"]:
            self.tags.get(body["ResourceArn"], {}).pop(key, None)

    def _ListTags(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"Tags": [{"Key": k, "Value": v} for k, v in self.tags.get(body["ResourceArn"], {}).items()]}

    # --- helpers -----------------------------------------------------------------------------------

    def _settle(self, item: dict[str, Any], key: str, name: str) -> None:
        """Creating/Updating now; in service (or failed) at the next Describe."""
        if item[key] in ("Creating", "Updating"):
            if name in self.fail:
                item[key], item["FailureReason"] = "Failed", self.fail[name]
            else:
                item[key] = "InService"

    def _paged(self, items: list[dict[str, Any]], key: str, body: dict[str, Any]) -> dict[str, Any]:
        start = int(body.get("NextToken") or 0)
        chunk = items[start:start + self.page]
        answer: dict[str, Any] = {key: chunk}
        if start < len(items):  # an empty last page still carries a token, as moto's and AWS's may
            answer["NextToken"] = str(start + self.page)
        return answer


class _NotFound(Exception):
    pass


class _Exists(Exception):
    pass


def _get(table: dict[str, dict[str, Any]], name: str, what: str) -> dict[str, Any]:
    if name not in table:
        raise _NotFound(f"Could not find {what} \"{name}\".")
    return table[name]


def _error(code: str, message: str) -> tuple[Any, dict[str, Any]]:
    return AWSResponse("", 400, {}, None), {"Error": {"Code": code, "Message": message},
                                            "ResponseMetadata": {"HTTPStatusCode": 400}}


def _now() -> datetime:
    return datetime.now(UTC)
