"""An endpoint and everything fastuner made for it, deleted from SageMaker's records and the
resources' tags alone (no state needed): what `fastuner reap` does with an expired endpoint it found
by its tags.

The tree of one endpoint: its inference components (`ListInferenceComponents EndpointNameEquals`), the
endpoint, its endpoint config and the configs of earlier instance types, and the models they and the
components name. Configs and models are also found by their tags: every one tagged with the endpoint's
`fastuner:project`, `fastuner:workspace` and `fastuner:address` belongs to this deployment — except
those that another live endpoint of the same address still uses (a replacement created before its
predecessor goes).

Order matters to SageMaker: adapter components first (they name the base component), then the base
component, each waited for until gone (an endpoint with components cannot be deleted), then the
endpoint, its configs and its models. Anything already gone is skipped silently, so a reap that was
interrupted can simply run again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastuner.aws.clients import AwsSession
from fastuner.providers.base import ProviderError
from fastuner.providers.sagemaker.errors import provider_errors
from fastuner.providers.sagemaker.reaping import ADDRESS_TAG, DELETING, PROJECT_TAG, WORKSPACE_TAG, not_found

POLL = 15.0  # seconds between DescribeInferenceComponent calls while components are deleted
TIMEOUT = 1800.0  # how long components may take to go before the reap gives up (it can run again)
TREE_TYPES = ("sagemaker:endpoint", "sagemaker:endpoint-config", "sagemaker:model")
# the resource type and name of a SageMaker ARN (searched, not matched: some tools quote ARNs)
_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[^:]*:[0-9]*:(endpoint|endpoint-config|model)/"
                  r"([a-zA-Z0-9](?:-*[a-zA-Z0-9])*)")


@dataclass
class EndpointTree:
    """What belongs to one endpoint. `status` is the endpoint's ("" when it is gone); `instance_type`
    and `instance_count` are its config's first variant's (what it costs by the hour)."""

    endpoint: str
    status: str = ""
    adapter_components: list[str] = field(default_factory=list)
    other_components: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    instance_type: str = ""
    instance_count: int = 0
    deleting: set[str] = field(default_factory=set)  # components already being deleted

    @property
    def components(self) -> list[str]:
        return self.adapter_components + self.other_components

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "inference_components": self.components,
                "endpoint_configs": self.configs, "models": self.models}


def find_endpoint_tree(session: AwsSession, endpoint_name: str, *,
                       tags: Mapping[str, str] | None = None) -> EndpointTree:
    """The endpoint's tree as it is now. `tags`: the endpoint's, if the caller has them (the tagging
    API gave them); otherwise they are read. Without the three fastuner tags, only what the endpoint
    itself names (its config, its components and their models) is in the tree."""
    sm = _Calls(session)
    tree = EndpointTree(endpoint_name)
    endpoint = sm.describe("endpoint", EndpointName=endpoint_name)
    if endpoint is not None:
        tree.status = endpoint.get("EndpointStatus") or ""
        if tags is None:
            tags = sm.tags(endpoint["EndpointArn"])
    models: list[str] = []
    for name in sm.components(endpoint_name) if endpoint is not None else []:
        component = sm.describe("inference_component", InferenceComponentName=name)
        if component is None:
            continue
        spec = component.get("Specification") or {}
        if component.get("InferenceComponentStatus") == DELETING:
            tree.deleting.add(name)
        (tree.adapter_components if spec.get("BaseInferenceComponentName") else tree.other_components).append(name)
        if spec.get("ModelName"):
            models.append(spec["ModelName"])
    configs = [endpoint["EndpointConfigName"]] if endpoint is not None and endpoint.get("EndpointConfigName") else []
    spared_configs: set[str] = set()
    spared_models: set[str] = set()
    ours = sm.tagged(tags or {})
    configs += sorted(ours["endpoint-config"])
    models += sorted(ours["model"])
    for other in sorted(ours["endpoint"] - {endpoint_name}):
        used_configs, used_models = _used_by(sm, other)
        spared_configs |= used_configs
        spared_models |= used_models
    for config in dict.fromkeys(configs):
        if config in spared_configs:
            continue
        described = sm.describe("endpoint_config", EndpointConfigName=config)
        if described is None:
            continue
        tree.configs.append(config)
        for variant in described.get("ProductionVariants") or []:
            if variant.get("ModelName"):
                models.append(variant["ModelName"])
            if config == configs[0] and not tree.instance_type and variant.get("InstanceType"):
                tree.instance_type = variant["InstanceType"]
                tree.instance_count = int(variant.get("InitialInstanceCount") or 1)
    tree.models = [m for m in dict.fromkeys(models) if m not in spared_models]
    return tree


def delete_endpoint_tree(session: AwsSession, endpoint_name: str, *, tags: Mapping[str, str] | None = None,
                         progress: Callable[[str], None] = lambda _text: None, poll: float = POLL,
                         timeout: float = TIMEOUT, sleep: Callable[[float], None] = time.sleep,
                         monotonic: Callable[[], float] = time.monotonic) -> EndpointTree:
    """Delete the endpoint's tree (see the module's docstring for what and in which order) and return
    it. Silent for whatever is already gone; ProviderError (what to do) when SageMaker refuses, or when
    components are still going after `timeout` seconds (nothing is lost: run it again)."""
    tree = find_endpoint_tree(session, endpoint_name, tags=tags)
    sm = _Calls(session)
    for group in (tree.adapter_components, tree.other_components):
        for name in group:
            if name not in tree.deleting:
                progress(f"deleting inference component {name}")
                sm.delete("inference_component", InferenceComponentName=name)
        _wait_gone(sm, group, progress=progress, poll=poll, timeout=timeout, sleep=sleep, monotonic=monotonic)
    if tree.status and tree.status != DELETING:
        progress(f"deleting endpoint {endpoint_name}")
        sm.delete("endpoint", EndpointName=endpoint_name)
    for config in tree.configs:
        progress(f"deleting endpoint config {config}")
        sm.delete("endpoint_config", EndpointConfigName=config)
    for model in tree.models:
        progress(f"deleting model {model}")
        sm.delete("model", ModelName=model)
    return tree


def _wait_gone(sm: _Calls, names: list[str], *, progress: Callable[[str], None], poll: float, timeout: float,
               sleep: Callable[[float], None], monotonic: Callable[[], float]) -> None:
    deadline = monotonic() + timeout
    left = list(names)
    while True:
        left = [n for n in left if sm.describe("inference_component", InferenceComponentName=n) is not None]
        if not left:
            return
        if monotonic() >= deadline:
            raise ProviderError(f"inference component(s) {', '.join(left)} are still being deleted after "
                                f"{timeout / 60:.0f} min; the endpoint was left for now",
                                "SageMaker finishes on its own; run `fastuner reap` again to delete the endpoint.")
        progress(f"waiting for {len(left)} inference component(s) to go")
        sleep(poll)


def _used_by(sm: _Calls, endpoint_name: str) -> tuple[set[str], set[str]]:
    """The configs and models another live endpoint uses (spared from this tree)."""
    endpoint = sm.describe("endpoint", EndpointName=endpoint_name)
    if endpoint is None or endpoint.get("EndpointStatus") == DELETING:
        return set(), set()
    configs, models = {endpoint.get("EndpointConfigName") or ""}, set()
    config = sm.describe("endpoint_config", EndpointConfigName=endpoint.get("EndpointConfigName") or "")
    for variant in (config or {}).get("ProductionVariants") or []:
        models.add(variant.get("ModelName") or "")
    for name in sm.components(endpoint_name):
        component = sm.describe("inference_component", InferenceComponentName=name) or {}
        models.add((component.get("Specification") or {}).get("ModelName") or "")
    return configs - {""}, models - {""}


class _Calls:
    """The few SageMaker and tagging calls of a tree, each explained on failure (ProviderError)."""

    def __init__(self, session: AwsSession) -> None:
        self.session = session
        self.sagemaker = session.client("sagemaker")

    def describe(self, what: str, **params: str) -> dict[str, Any] | None:
        """`describe_<what>`; None when it does not exist."""
        from botocore.exceptions import ClientError

        if not any(params.values()):
            return None
        with provider_errors(f"reading {_words(what)} {next(iter(params.values()))}", "sagemaker"):
            try:
                return getattr(self.sagemaker, f"describe_{what}")(**params)
            except ClientError as exc:
                if not_found(exc):
                    return None
                raise

    def delete(self, what: str, **params: str) -> None:
        """`delete_<what>`; silent when it is already gone."""
        from botocore.exceptions import ClientError

        with provider_errors(f"deleting {_words(what)} {next(iter(params.values()))}", "sagemaker"):
            try:
                getattr(self.sagemaker, f"delete_{what}")(**params)
            except ClientError as exc:
                if not not_found(exc):
                    raise

    def components(self, endpoint_name: str) -> list[str]:
        out = []
        with provider_errors(f"listing the inference components of endpoint {endpoint_name}", "sagemaker"):
            for page in self.sagemaker.get_paginator("list_inference_components").paginate(
                    EndpointNameEquals=endpoint_name, MaxResults=100):
                out += [c["InferenceComponentName"] for c in page.get("InferenceComponents") or []]
        return out

    def tags(self, arn: str) -> dict[str, str]:
        out = {}
        with provider_errors(f"reading the tags of {arn}", "sagemaker"):
            for page in self.sagemaker.get_paginator("list_tags").paginate(ResourceArn=arn):
                out.update({t["Key"]: t["Value"] for t in page.get("Tags") or []})
        return out

    def tagged(self, tags: Mapping[str, str]) -> dict[str, set[str]]:
        """Names of the endpoints, configs and models tagged with the same project, workspace and
        address (by type); nothing when a tag is missing (the tree is then what the endpoint names)."""
        out: dict[str, set[str]] = {"endpoint": set(), "endpoint-config": set(), "model": set()}
        keys = (PROJECT_TAG, WORKSPACE_TAG, ADDRESS_TAG)
        if not all(tags.get(k) for k in keys):
            return out
        filters = [{"Key": k, "Values": [tags[k]]} for k in keys]
        tagging = self.session.client("resourcegroupstaggingapi")
        with provider_errors(f"finding what is tagged {tags[ADDRESS_TAG]}", "tag"):
            for page in tagging.get_paginator("get_resources").paginate(
                    ResourceTypeFilters=list(TREE_TYPES), TagFilters=filters, ResourcesPerPage=100):
                for item in page.get("ResourceTagMappingList") or []:
                    match = _ARN.search(str(item.get("ResourceARN") or ""))
                    if match is not None:
                        out[match.group(1)].add(match.group(2))
        return out


def _words(what: str) -> str:
    return what.replace("_", " ")
