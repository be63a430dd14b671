"""SageMaker endpoints and inference components for moto, enough for fastuner's deployments: a
test-only extension of moto's SageMaker (in process under `mock_aws`, or in a `ThreadedMotoServer` of
the same process, whose backends are the ones patched here).

What moto lacks or does differently, and what this adds:
- inference components: `CreateInferenceComponent` (tags kept, visible to `ListTags` and the tagging
  API's `GetResources`), `DescribeInferenceComponent`, `ListInferenceComponents` (filters, pages),
  `UpdateInferenceComponent` (a new specification or copy count), `UpdateInferenceComponentRuntimeConfig`
  and `DeleteInferenceComponent`;
- `UpdateEndpoint` (a new endpoint config, recorded when the update ends);
- endpoint configs of any instance type in botocore's service model (moto knows no g5, g6, p4d, p5)
  and component-style variants without `ModelName`; their `ExecutionRoleArn` is kept;
- statuses that move: a new endpoint is `Creating`, an updated one `Updating`, a new or updated
  component `Creating`/`Updating`, each for `settle` describes, then `InService`; a deleted component
  is `Deleting` for `linger` describes, then gone (SageMaker takes minutes for each);
- SageMaker's refusals: a name already taken (models, endpoint configs, endpoints, components:
  `ValidationException` "Cannot create already existing ..."; moto silently overwrites), an update or
  delete of an endpoint still `Creating`/`Updating` ("Cannot update in-progress endpoint"), a delete of
  an endpoint that still has components, a delete of a base component that adapter components still
  name ("... is a base inference component for one or more associated ..."), a component on an
  endpoint that is not `InService` yet, or naming a model, endpoint, variant or base that does not exist.
  The messages are SageMaker's where one was found in public code and issues; the others are ours.
- every successful create is counted in `created` as (kind, name), in order.

Components live on moto's backend, so `mock_aws` and the server's `/moto-api/reset` clear them with the
rest. Requests still pass botocore's validation against the service model before they reach moto.
`uninstall()` restores moto.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from moto.core.resource_tagging import TaggedResource
from moto.sagemaker import models, responses
from moto.sagemaker.exceptions import ValidationError

ACCOUNT = "123456789012"
CREATING, UPDATING, IN_SERVICE, DELETING = "Creating", "Updating", "InService", "Deleting"


@cache
def instance_types() -> frozenset[str]:
    """Every endpoint instance type botocore's SageMaker model knows (what SageMaker accepts)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return frozenset(model.shape_for("ProductionVariantInstanceType").enum)


def arn(kind: str, name: str, region: str) -> str:
    return f"arn:aws:sagemaker:{region}:{ACCOUNT}:{kind}/{name}"


@dataclass
class Component:
    name: str
    endpoint: str
    variant: str
    region: str
    spec: dict[str, Any]
    copies: int = 1
    tags: list[dict[str, str]] = field(default_factory=list)
    status: str = IN_SERVICE
    left: int = 0  # describes until the status moves on (to InService, or gone when Deleting)
    created: float = field(default_factory=lambda: datetime.now(UTC).timestamp())
    modified: float = 0.0

    @property
    def arn(self) -> str:
        return arn("inference-component", self.name, self.region)

    def summary(self) -> dict[str, Any]:
        return {"InferenceComponentName": self.name, "InferenceComponentArn": self.arn, "EndpointName": self.endpoint,
                "EndpointArn": arn("endpoint", self.endpoint, self.region), "VariantName": self.variant,
                "CreationTime": self.created, "LastModifiedTime": self.modified or self.created,
                "InferenceComponentStatus": self.status}

    def description(self) -> dict[str, Any]:
        spec = {k: v for k, v in self.spec.items() if k != "Container"}
        container = self.spec.get("Container")
        if container:  # described as SageMaker's summary shape names it
            spec["Container"] = {k: v for k, v in container.items() if k != "Image"}
            if container.get("Image"):
                spec["Container"]["DeployedImage"] = {"SpecifiedImage": container["Image"]}
        current = self.copies if self.status == IN_SERVICE else 0
        return {**self.summary(), "Specification": spec,
                "RuntimeConfig": {"DesiredCopyCount": self.copies, "CurrentCopyCount": current}}


@dataclass
class _Progress:
    """An endpoint on its way to InService: describes left, and the config an update moves it to."""

    left: int
    config: str | None = None


class _Extension:
    """What this extension keeps on one moto backend (dropped with it on reset)."""

    def __init__(self) -> None:
        self.components: dict[str, Component] = {}
        self.endpoints: dict[str, _Progress] = {}


def _ext(backend: Any) -> _Extension:
    ext = backend.__dict__.get("_fastuner_endpoints")
    if ext is None:
        ext = backend.__dict__["_fastuner_endpoints"] = _Extension()
    return ext


def _not_found(kind: str, name: str, region: str) -> ValidationError:
    words = {"endpoint": "endpoint", "endpoint-config": "endpoint configuration", "model": "model"}
    if kind == "inference-component":
        return ValidationError(message=f"Could not find inference component \"{name}\".")
    return ValidationError(message=f"Could not find {words[kind]} \"{arn(kind, name, region)}\".")


def _taken(kind: str, name: str, region: str) -> ValidationError:
    words = {"endpoint": "endpoint", "endpoint-config": "endpoint configuration", "model": "model",
             "inference-component": "inference component"}
    return ValidationError(message=f"Cannot create already existing {words[kind]} \"{arn(kind, name, region)}\".")


class Endpoints:
    """Install with `Endpoints(region).install()`; `settle` and `linger` may be changed at any time
    (they apply to what is created, updated or deleted afterwards)."""

    def __init__(self, region: str = "us-east-1", *, settle: int = 1, linger: int = 1) -> None:
        self.region = region
        self.settle = settle
        self.linger = linger
        self.created: list[tuple[str, str]] = []
        self._saved: list[tuple[type, str, Any]] = []

    # --- looking and arranging ----------------------------------------------------------------------

    def backend(self) -> Any:
        return models.sagemaker_backends[ACCOUNT][self.region]

    def component(self, name: str) -> Component | None:
        return _ext(self.backend()).components.get(name)

    def on(self, endpoint: str) -> list[str]:
        """The names of the components on `endpoint` (Deleting ones too), sorted."""
        return sorted(n for n, c in _ext(self.backend()).components.items() if c.endpoint == endpoint)

    def creates(self, kind: str, name: str) -> int:
        return self.created.count((kind, name))

    def add(self, name: str, endpoint: str, *, model: str | None = None, base: str | None = None,
            artifact: str | None = None, variant: str = "AllTraffic", status: str = IN_SERVICE,
            tags: list[dict[str, str]] | None = None) -> Component:
        """A component as if created long ago (no check, no count): for tests that start from a world."""
        spec: dict[str, Any] = {}
        if model:
            spec["ModelName"] = model
        if base:
            spec["BaseInferenceComponentName"] = base
        if artifact:
            spec["Container"] = {"ArtifactUrl": artifact}
        c = Component(name, endpoint, variant, self.region, spec, tags=list(tags or []), status=status)
        _ext(self.backend()).components[name] = c
        return c

    # --- installing ---------------------------------------------------------------------------------

    def _patch(self, cls: type, name: str, value: Callable[..., Any]) -> None:
        self._saved.append((cls, name, cls.__dict__.get(name)))
        setattr(cls, name, value)

    def uninstall(self) -> None:
        for cls, name, original in reversed(self._saved):
            if original is None:
                delattr(cls, name)
            else:
                setattr(cls, name, original)
        self._saved.clear()

    def install(self) -> Endpoints:
        Backend, Response = models.SageMakerModelBackend, responses.SageMakerResponse
        for name, fn in self._backend_methods(Backend).items():
            self._patch(Backend, name, fn)
        self._patch(models.FakeEndpointConfig, "validate_instance_type", _validate_instance_type)
        for name, fn in self._response_methods(Response).items():
            self._patch(Response, name, fn)
        return self

    def _backend_methods(self, Backend: type) -> dict[str, Callable[..., Any]]:
        world = self
        original = {n: getattr(Backend, n) for n in (
            "create_model", "create_endpoint_config", "create_endpoint", "describe_endpoint", "delete_endpoint",
            "_get_resource_from_arn", "iter_tagged_resources")}

        def create_model(backend: Any, model_name: str, **kw: Any) -> Any:
            if model_name in backend._models:
                raise _taken("model", model_name, backend.region_name)
            made = original["create_model"](backend, model_name=model_name, **kw)
            world.created.append(("model", model_name))
            return made

        def create_endpoint_config(backend: Any, endpoint_config_name: str, **kw: Any) -> Any:
            if endpoint_config_name in backend.endpoint_configs:
                raise _taken("endpoint-config", endpoint_config_name, backend.region_name)
            made = original["create_endpoint_config"](backend, endpoint_config_name=endpoint_config_name, **kw)
            world.created.append(("endpoint-config", endpoint_config_name))
            return made

        def validate_production_variants(backend: Any, production_variants: list[dict[str, Any]]) -> None:
            # component-style variants name no model: the inference components bring theirs
            for variant in production_variants:
                if variant.get("ModelName") and variant["ModelName"] not in backend._models:
                    raise _not_found("model", variant["ModelName"], backend.region_name)

        def create_endpoint(backend: Any, endpoint_name: str, endpoint_config_name: str,
                            tags: list[dict[str, str]]) -> Any:
            if endpoint_name in backend.endpoints:
                raise _taken("endpoint", endpoint_name, backend.region_name)
            if endpoint_config_name not in backend.endpoint_configs:
                raise _not_found("endpoint-config", endpoint_config_name, backend.region_name)
            made = original["create_endpoint"](backend, endpoint_name, endpoint_config_name, tags)
            world.created.append(("endpoint", endpoint_name))
            if world.settle > 0:
                made.endpoint_status = CREATING
                _ext(backend).endpoints[endpoint_name] = _Progress(world.settle)
            return made

        def describe_endpoint(backend: Any, endpoint_name: str) -> dict[str, Any]:
            progress = _ext(backend).endpoints.get(endpoint_name)
            if progress is not None and progress.left <= 0:
                _arrive(backend, endpoint_name)
            answer = original["describe_endpoint"](backend, endpoint_name)
            if progress is not None and progress.left > 0:
                progress.left -= 1
            return answer

        def delete_endpoint(backend: Any, endpoint_name: str) -> None:
            endpoint = backend.endpoints.get(endpoint_name)
            if endpoint is not None and endpoint.endpoint_status in (CREATING, UPDATING):
                raise ValidationError(message=f"Cannot update in-progress endpoint \"{endpoint.arn}\".")
            if any(c.endpoint == endpoint_name for c in _ext(backend).components.values()):
                raise ValidationError(message=f"Cannot delete endpoint {endpoint_name}: it still hosts inference "
                                              f"components; delete them first.")
            original["delete_endpoint"](backend, endpoint_name)
            _ext(backend).endpoints.pop(endpoint_name, None)

        def get_resource_from_arn(backend: Any, resource_arn: str) -> Any:
            kind, _, name = resource_arn.split(":")[-1].partition("/")
            if kind == "inference-component":
                c = _ext(backend).components.get(name)
                if c is None:
                    raise _not_found(kind, name, backend.region_name)
                return c
            return original["_get_resource_from_arn"](backend, resource_arn)

        def iter_tagged_resources(backend: Any) -> Iterator[TaggedResource]:
            yield from original["iter_tagged_resources"](backend)
            for c in list(_ext(backend).components.values()):
                yield TaggedResource(arn=c.arn, tags={t["Key"]: t["Value"] for t in c.tags},
                                     resource_type="sagemaker:inference-component")

        return {"create_model": create_model, "create_endpoint_config": create_endpoint_config,
                "validate_production_variants": validate_production_variants, "create_endpoint": create_endpoint,
                "describe_endpoint": describe_endpoint, "delete_endpoint": delete_endpoint,
                "_get_resource_from_arn": get_resource_from_arn, "iter_tagged_resources": iter_tagged_resources}

    def _response_methods(self, Response: type) -> dict[str, Callable[..., Any]]:
        world = self
        original_create_config = Response.create_endpoint_config

        def create_endpoint_config(response: Any) -> Any:
            answer = original_create_config(response)
            role = response._get_param("ExecutionRoleArn")
            if role:  # moto drops it (component-based endpoints need it); described as ExecutionRoleArn
                config = response.sagemaker_backend.endpoint_configs[response._get_param("EndpointConfigName")]
                config.execution_role_arn = role
            return answer

        def update_endpoint(response: Any) -> str:
            backend = response.sagemaker_backend
            name, config = response._get_param("EndpointName"), response._get_param("EndpointConfigName")
            endpoint = backend.endpoints.get(name)
            if endpoint is None:
                raise _not_found("endpoint", name, backend.region_name)
            if config not in backend.endpoint_configs:
                raise _not_found("endpoint-config", config, backend.region_name)
            if endpoint.endpoint_status != IN_SERVICE:
                raise ValidationError(message=f"Cannot update in-progress endpoint \"{endpoint.arn}\".")
            endpoint.endpoint_status = UPDATING
            endpoint.last_modified_time = datetime.now(UTC)
            _ext(backend).endpoints[name] = _Progress(world.settle, config)
            if world.settle <= 0:
                _arrive(backend, name)
            return json.dumps({"EndpointArn": endpoint.arn})

        def found(backend: Any, name: str) -> Component:
            c = _ext(backend).components.get(name)
            if c is None:
                raise _not_found("inference-component", name, backend.region_name)
            return c

        def create_component(response: Any) -> str:
            backend = response.sagemaker_backend
            name, endpoint_name = response._get_param("InferenceComponentName"), response._get_param("EndpointName")
            ext = _ext(backend)
            if name in ext.components:
                raise _taken("inference-component", name, backend.region_name)
            endpoint = backend.endpoints.get(endpoint_name)
            if endpoint is None:
                raise _not_found("endpoint", endpoint_name, backend.region_name)
            if endpoint.endpoint_status != IN_SERVICE:
                raise ValidationError(message=f"Endpoint {endpoint_name} is {endpoint.endpoint_status}: inference "
                                              f"components can be added once it is InService.")
            variant = response._get_param("VariantName") or ""
            if variant not in [v["VariantName"] for v in endpoint.production_variants]:
                raise ValidationError(message=f"Could not find variant \"{variant}\" on endpoint {endpoint_name}.")
            spec = response._get_param("Specification") or {}
            if spec.get("ModelName") and spec["ModelName"] not in backend._models:
                raise _not_found("model", spec["ModelName"], backend.region_name)
            if spec.get("BaseInferenceComponentName"):
                found(backend, spec["BaseInferenceComponentName"])
            copies = int((response._get_param("RuntimeConfig") or {}).get("CopyCount") or 1)
            c = Component(name, endpoint_name, variant, backend.region_name, spec, copies,
                          tags=list(response._get_param("Tags") or []))
            _settling(c, CREATING, world.settle)
            ext.components[name] = c
            world.created.append(("inference-component", name))
            return json.dumps({"InferenceComponentArn": c.arn})

        def update_component(response: Any) -> str:
            backend = response.sagemaker_backend
            c = found(backend, response._get_param("InferenceComponentName"))
            if c.status != IN_SERVICE:
                raise ValidationError(message=f"Cannot update inference component {c.name} while it is {c.status}.")
            spec, runtime = response._get_param("Specification"), response._get_param("RuntimeConfig")
            if not spec and not runtime:
                raise ValidationError(message="Specification or RuntimeConfig is required.")
            if spec:
                c.spec = spec
            if runtime and runtime.get("CopyCount"):
                c.copies = int(runtime["CopyCount"])
            c.modified = datetime.now(UTC).timestamp()
            _settling(c, UPDATING, world.settle)
            return json.dumps({"InferenceComponentArn": c.arn})

        def update_runtime(response: Any) -> str:
            c = found(response.sagemaker_backend, response._get_param("InferenceComponentName"))
            if c.status != IN_SERVICE:
                raise ValidationError(message=f"Cannot update inference component {c.name} while it is {c.status}.")
            c.copies = int(response._get_param("DesiredRuntimeConfig")["CopyCount"])
            c.modified = datetime.now(UTC).timestamp()
            _settling(c, UPDATING, world.settle)
            return json.dumps({"InferenceComponentArn": c.arn})

        def describe_component(response: Any) -> str:
            backend = response.sagemaker_backend
            c = found(backend, response._get_param("InferenceComponentName"))
            answer = c.description()
            if c.left > 0:
                c.left -= 1
            elif c.status == DELETING:
                del _ext(backend).components[c.name]
                found(backend, c.name)
            elif c.status in (CREATING, UPDATING):
                c.status = IN_SERVICE
                answer = c.description()
            return json.dumps(answer)

        def list_components(response: Any) -> str:
            backend = response.sagemaker_backend
            wanted = {"endpoint": response._get_param("EndpointNameEquals"),
                      "variant": response._get_param("VariantNameEquals"),
                      "status": response._get_param("StatusEquals")}
            contains = response._get_param("NameContains") or ""
            items = [c for c in _ext(backend).components.values()
                     if contains in c.name and all(v is None or getattr(c, k) == v for k, v in wanted.items())]
            by = response._get_param("SortBy")  # SageMaker's default is CreationTime; ours is by name
            items.sort(key=(lambda c: (c.created, c.name)) if by == "CreationTime" else
                       (lambda c: (c.status, c.name)) if by == "Status" else (lambda c: c.name),
                       reverse=response._get_param("SortOrder") == "Descending")
            size = int(response._get_param("MaxResults") or 10)
            start = int(response._get_param("NextToken") or 0)
            page: dict[str, Any] = {"InferenceComponents": [c.summary() for c in items[start:start + size]]}
            if start + size < len(items):
                page["NextToken"] = str(start + size)
            return json.dumps(page)

        def delete_component(response: Any) -> str:
            backend = response.sagemaker_backend
            c = found(backend, response._get_param("InferenceComponentName"))
            if c.status == DELETING:
                raise ValidationError(message=f"Inference component {c.name} is already being deleted "
                                              f"(DELETE_IN_PROGRESS).")
            if any(o.spec.get("BaseInferenceComponentName") == c.name for o in _ext(backend).components.values()):
                raise ValidationError(message=f"Inference component {c.name} is a base inference component for one "
                                              f"or more associated inference components; delete those first.")
            c.modified = datetime.now(UTC).timestamp()
            _settling(c, DELETING, world.linger)
            return "{}"

        return {"create_endpoint_config": create_endpoint_config, "update_endpoint": update_endpoint, "create_inference_component": create_component,
                "update_inference_component": update_component,
                "update_inference_component_runtime_config": update_runtime, "describe_inference_component": describe_component,
                "list_inference_components": list_components, "delete_inference_component": delete_component}


def _settling(c: Component, status: str, describes: int) -> None:
    c.status, c.left = status, describes
    if describes <= 0 and status != DELETING:
        c.status = IN_SERVICE


def _arrive(backend: Any, endpoint_name: str) -> None:
    """An endpoint's creation or update ends: InService, with the config an update named."""
    progress = _ext(backend).endpoints.pop(endpoint_name, None)
    endpoint = backend.endpoints.get(endpoint_name)
    if progress is None or endpoint is None:
        return
    if progress.config is not None:
        config = backend.endpoint_configs.get(progress.config)
        endpoint.endpoint_config_name = progress.config
        if config is not None:
            endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
    endpoint.endpoint_status = IN_SERVICE
    endpoint.last_modified_time = datetime.now(UTC)


def _validate_instance_type(config: Any, instance_type: str) -> None:
    if instance_type not in instance_types():
        raise ValidationError(message=f"Value '{instance_type}' at 'instanceType' failed to satisfy constraint: "
                                      f"Member must satisfy enum value set: {sorted(instance_types())}")
