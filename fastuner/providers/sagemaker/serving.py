"""A SageMaker deployment as data: its serving mode, the names of its pieces, their tags, and the
requests that create them. No calls here (deployments.py makes them), so every request is tested as a
value.

Two modes, chosen from the task of the adapters' datasets:
- `lmi` (`text_generation`, `qa`): the LMI (DJL) image, whose vLLM serves many LoRA adapters of one
  causal LM. The endpoint is component-based: a model with the LMI settings, an endpoint config without
  a model, one **base inference component** (the model, its GPUs, one copy per instance) and one
  **adapter inference component** per adapter (`BaseInferenceComponentName` + the adapter's
  `model.tar.gz`). Adding, retraining or removing an adapter is one call on its component.
- `serve` (`classification`): vLLM's LoRA serves causal LMs only, so classification adapters run on the
  project's own server (containers/serve), built and pushed by the user (`inference_image`). SageMaker
  reaches it only through `/invocations`, so its adapters are given at start-up: a `serve.json` (base
  model, task, cache size, adapters as S3 URIs) in the model's `model.tar.gz`. A changed adapter list is
  a new model and endpoint config, swapped in with UpdateEndpoint (no downtime, one blue/green update).

Names derive from the deployment's physical name (the endpoint's), so a crashed apply finds what it
started: `<endpoint>-m<hash>` (the model; the hash covers everything it is made of), `<endpoint>-c<hash>`
(the endpoint config; instance type and count, and the model in serve mode), `<endpoint>-base` and
`<endpoint>-a-<adapter>` (components). Every piece carries the project, workspace and address tags, and,
with a ttl or idle_ttl, `fastuner:expires-at` and `fastuner:idle-ttl` (what `fastuner reap` reads).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastuner.aws.names import SAGEMAKER_NAME_MAX
from fastuner.config.duration import parse_duration
from fastuner.config.tasks import Family, Task
from fastuner.providers.sagemaker import instances
from fastuner.providers.sagemaker.reaping import (
    ADDRESS_TAG,
    EXPIRES_TAG,
    IDLE_TAG,
    PROJECT_TAG,
    WORKSPACE_TAG,
)

LMI, SERVE = "lmi", "serve"
VARIANT = "AllTraffic"
BASE_SUFFIX = "base"
ADAPTER_PREFIX = "a-"
# the ranks vLLM accepts for max_lora_rank; OPTION_MAX_LORA_RANK is the smallest that fits every adapter
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
BASE_MEMORY_MB = 1024  # what the base component asks for besides its GPUs (it takes every GPU anyway)
SERVE_CONFIG = "serve.json"  # found by containers/serve in its model folder (SM_MODEL_DIR)
LIFETIME_TAGS = (EXPIRES_TAG, IDLE_TAG)


# --- mode ------------------------------------------------------------------------------------------


def mode_of(tasks: Sequence[str]) -> str:
    """`serve` for classification adapters, `lmi` for generation ones (and for the base model alone)."""
    families = {Task(t).family for t in tasks if t}
    return SERVE if Family.CLASSIFICATION in families else LMI


# --- names -----------------------------------------------------------------------------------------


def child_name(endpoint: str, suffix: str) -> str:
    """`<endpoint>-<suffix>` within SageMaker's 63 characters: the endpoint's stem is shortened, never its
    identity hash (its last part) nor the suffix, so pieces of different deployments stay apart."""
    if len(suffix) > 24:  # a long adapter name: its hash
        suffix = suffix[:2] + hashlib.sha256(suffix.encode()).hexdigest()[:12]
    full = f"{endpoint}-{suffix}"
    if len(full) <= SAGEMAKER_NAME_MAX:
        return full
    stem, _, ident = endpoint.rpartition("-")
    keep = SAGEMAKER_NAME_MAX - len(suffix) - len(ident) - 2
    return f"{stem[:keep].rstrip('-')}-{ident}-{suffix}"


def base_component_name(endpoint: str) -> str:
    return child_name(endpoint, BASE_SUFFIX)


def adapter_component_name(endpoint: str, adapter: str) -> str:
    return child_name(endpoint, ADAPTER_PREFIX + adapter)


def digest(value: Any, n: int = 8) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:n]


# --- tags ------------------------------------------------------------------------------------------


def lifetime_tags(inputs: Mapping[str, Any], created: datetime) -> dict[str, str]:
    """`fastuner:expires-at` (creation + ttl, ISO 8601 UTC to the second, as reaping.py reads it) and
    `fastuner:idle-ttl` (the duration as written), each only when the spec sets it."""
    out: dict[str, str] = {}
    if inputs.get("ttl"):
        ends = created + parse_duration(inputs["ttl"])
        out[EXPIRES_TAG] = ends.replace(microsecond=0).isoformat()
    if inputs.get("idle_ttl"):
        out[IDLE_TAG] = str(inputs["idle_ttl"])
    return out


def deployment_tags(project: str, workspace: str, address: str, inputs: Mapping[str, Any],
                    created: datetime) -> dict[str, str]:
    """The spec's tags, then fastuner's own (which win)."""
    return {**{str(k): str(v) for k, v in (inputs.get("tags") or {}).items()},
            PROJECT_TAG: project, WORKSPACE_TAG: workspace, ADDRESS_TAG: address,
            **lifetime_tags(inputs, created)}


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tag_changes(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """(keys to delete, tags to add) turning `before` into `after`: a changed value is deleted first
    (AddTags overwrites on AWS but appends a duplicate on moto)."""
    remove = sorted(k for k in before if k not in after or before[k] != after[k])
    add = {k: v for k, v in after.items() if before.get(k) != v}
    return remove, add


# --- the LMI settings ----------------------------------------------------------------------------------


def lora_rank(ranks: Sequence[int]) -> int:
    """The smallest rank vLLM accepts that is at least every adapter's (r=12 → 16, r=300 → 320)."""
    largest = max(ranks, default=0)
    for rank in VLLM_LORA_RANKS:
        if rank >= largest:
            return rank
    raise ValueError(f"LoRA rank {largest} is above the largest vLLM serves ({VLLM_LORA_RANKS[-1]})")


def lmi_environment(base_model: str, ranks: Sequence[int], cache_size: int) -> dict[str, str]:
    """LMI's environment for a base model serving LoRA adapters. `cache_size` adapters share the GPU at
    once (OPTION_MAX_LORAS); as many more stay in CPU memory (OPTION_MAX_CPU_LORAS), so that a deployment
    of many adapters swaps them in from memory rather than from disk. Neither depends on how many
    adapters there are, so adding one never touches the model; only a rank above OPTION_MAX_LORA_RANK
    does (deployments.py then swaps the model under the base component)."""
    return {
        "HF_MODEL_ID": base_model,
        "OPTION_ENABLE_LORA": "true",
        "OPTION_MAX_LORAS": str(cache_size),
        "OPTION_MAX_LORA_RANK": str(lora_rank(ranks)),
        "OPTION_MAX_CPU_LORAS": str(2 * cache_size),
    }


# --- requests ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """One model or endpoint config: its name and the request that creates it (without the name and
    tags, which deployments.py adds)."""

    name: str
    request: dict[str, Any] = field(default_factory=dict)


def model_piece(endpoint: str, *, image: str, environment: Mapping[str, str], role_arn: str,
                model_data: str | None = None, subnets: Sequence[str] = (),
                security_group_ids: Sequence[str] = ()) -> Piece:
    container: dict[str, Any] = {"Image": image, "Environment": dict(sorted(environment.items()))}
    if model_data:
        container["ModelDataUrl"] = model_data
    request: dict[str, Any] = {"PrimaryContainer": container, "ExecutionRoleArn": role_arn}
    if subnets:
        request["VpcConfig"] = {"Subnets": list(subnets), "SecurityGroupIds": list(security_group_ids)}
    return Piece(child_name(endpoint, "m" + digest(request)), request)


def config_piece(endpoint: str, *, instance_type: str, count: int, role_arn: str, model: str | None = None,
                 kms_key_id: str | None = None) -> Piece:
    """Component style (lmi) without `model`: the variant has no ModelName and the config names the
    execution role the components run with; classic (serve) with it."""
    variant: dict[str, Any] = {"VariantName": VARIANT, "InstanceType": instance_type, "InitialInstanceCount": count}
    request: dict[str, Any] = {"ProductionVariants": [variant]}
    if model:
        variant["ModelName"] = model
        variant["InitialVariantWeight"] = 1.0
    else:
        variant["RoutingConfig"] = {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
        request["ExecutionRoleArn"] = role_arn
    if kms_key_id:
        request["KmsKeyId"] = kms_key_id
    return Piece(child_name(endpoint, "c" + digest(request)), request)


def base_component_spec(model: str, instance_type: str) -> dict[str, Any]:
    """The base component: the model on every GPU of an instance."""
    requirements: dict[str, Any] = {"MinMemoryRequiredInMb": BASE_MEMORY_MB}
    gpus = instances.gpus(instance_type)
    if gpus:
        requirements["NumberOfAcceleratorDevicesRequired"] = float(gpus)
    return {"ModelName": model, "ComputeResourceRequirements": requirements}


def adapter_component_spec(base_component: str, artifact: str) -> dict[str, Any]:
    return {"BaseInferenceComponentName": base_component, "Container": {"ArtifactUrl": artifact}}


def serve_config(base_model: str, adapters: Mapping[str, str], cache_size: int) -> bytes:
    """containers/serve's start-up settings as a reproducible `model.tar.gz` holding `serve.json`
    (the same settings give the same bytes, so the upload is content-addressed)."""
    settings = {"base_model": base_model, "task": Family.CLASSIFICATION.value, "cache_size": cache_size,
                "adapters": dict(sorted(adapters.items()))}
    data = json.dumps(settings, indent=2, sort_keys=True).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(SERVE_CONFIG)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def expires_at(inputs: Mapping[str, Any], created: datetime) -> str | None:
    ttl = inputs.get("ttl")
    return (created + parse_duration(ttl)).replace(microsecond=0).isoformat() if ttl else None
