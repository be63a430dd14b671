"""Deployments as SageMaker endpoints: one endpoint serves one base model and many adapters (serving.py
says how each mode is laid out and why).

Create runs, in order and each piece described first (so a crashed or `--no-wait` apply adopts what it
started instead of starting it twice): the model, the endpoint config, the endpoint (waited for until
InService), then in `lmi` mode the base inference component and one component per adapter (waited for
together). Update changes what changed and nothing else: an adapter added, removed or retrained is one
Create/Delete/UpdateInferenceComponent call; a new instance type or count is a new endpoint config and
UpdateEndpoint (the endpoint keeps serving), then the old config goes; a new ttl or idle_ttl rewrites
the lifetime tags (DeleteTags, then AddTags) on every piece. In `serve` mode a changed adapter list is a
new model and config swapped in by UpdateEndpoint. Delete is `endpoint_tree.delete_endpoint_tree` (what
`fastuner reap` runs), plus whatever state recorded that the tree no longer names.

Refresh reads many deployments with a ListEndpoints and a ListInferenceComponents listing of the
project's names (every page), not a Describe each; an endpoint that is gone is missing, one that failed
or lost a component is failed (the plan replaces it, and create repairs it in place under its name);
the last invocation of those with an idle_ttl comes from one CloudWatch call (`reaping.last_activity`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastuner.aws.clients import AwsSession
from fastuner.aws.names import check_sagemaker_name, common_prefix
from fastuner.config.duration import parse_duration
from fastuner.config.models import SageMakerProvider
from fastuner.data.s3store import S3ObjectStore
from fastuner.errors import UserError
from fastuner.plan.model import Change
from fastuner.plan.observed import Observation, ObservationStatus
from fastuner.providers.base import Context, Outcome, ProviderError, ResourceProvider, utcnow
from fastuner.providers.sagemaker import instances, reaping, s3objects, serving
from fastuner.providers.sagemaker.checks import deployment_problems
from fastuner.providers.sagemaker.endpoint_calls import FAILED, IN_SERVICE, WAIT_TIMEOUT_S, EndpointCalls
from fastuner.providers.sagemaker.endpoint_tree import EndpointTree, delete_endpoint_tree
from fastuner.providers.sagemaker.errors import provider_errors
from fastuner.providers.sagemaker.images import lmi_image
from fastuner.providers.sagemaker.serving import LMI, SERVE, VARIANT, Piece
from fastuner.state.model import ResourceState

BATCH_FROM = 2  # read_many lists instead of describing from this many deployments on


@dataclass(frozen=True)
class Desired:
    """Everything a deployment should be made of, named (serving.py's pieces for one change)."""

    endpoint: str
    mode: str
    image: str
    model: Piece
    config: Piece
    instance_type: str
    count: int
    base_component: str  # "" in serve mode
    artifacts: Mapping[str, str]  # adapter -> its model.tar.gz
    components: Mapping[str, str] = field(default_factory=dict)  # adapter -> component (lmi)
    prompt_format: str = "chat_template"


class SageMakerDeployments(ResourceProvider):
    kind = "deployment"

    def __init__(self, session: AwsSession, settings: SageMakerProvider, *, project: str, workspace: str,
                 spec_dir: Path, adapter_tasks: Mapping[str, str] | None = None, poll: float = 15.0,
                 max_poll: float = 60.0, sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], datetime] = utcnow, timeout: float = WAIT_TIMEOUT_S) -> None:
        """`adapter_tasks`: each adapter's dataset task, from the spec (the mode is chosen from them);
        `sleep` replaces the pause between polls (tests; by default it ends early on Ctrl-C)."""
        self.session = session
        self.settings = settings
        self.project = project
        self.workspace = workspace
        self.spec_dir = spec_dir
        self.adapter_tasks = dict(adapter_tasks or {})
        self.clock = clock
        self.calls = EndpointCalls(session, poll=poll, max_poll=max_poll, sleep=sleep, timeout=timeout)
        self.configs = S3ObjectStore(session, settings.bucket, settings.prefix.strip("/"), namespace="serving",
                                     filename="model.tar.gz", kms_key_id=settings.kms_key_id)
        self._formats: dict[str, str] = {}  # an artifact's prompt_format, once read

    # --- what a deployment is made of ------------------------------------------------------------

    def desired(self, change: Change, ctx: Context, endpoint: str) -> Desired:
        """The pieces of the deployment `change` describes; ProviderError (what to do) when it cannot be
        served: an adapter without its artifact, a serve-mode deployment without an image, a base model
        that is a folder on this machine."""
        inputs = change.after or {}
        settings = self.settings
        compute = inputs.get("compute") or {}
        instance_type = str(compute.get("instance_type", "ml.g5.xlarge"))
        count = int(compute.get("count", 1))
        adapters = list(inputs.get("adapters") or [])
        mode = serving.mode_of([self._task(a, ctx) for a in adapters])
        problems = deployment_problems(str(inputs["base_model"]), instance_type, mode, settings, self.spec_dir)
        if problems:
            raise ProviderError(problems[0].summary, problems[0].hint)
        artifacts = {a: self._artifact(a, ctx) for a in adapters}
        cache_size = int(inputs.get("cache_size", 8))
        if mode == LMI:
            image = lmi_image(self.session.region, instance_type, settings.inference_image)
            ranks = [self._rank(a, ctx) for a in adapters]
            try:
                environment = serving.lmi_environment(str(inputs["base_model"]), ranks, cache_size)
            except ValueError as exc:
                raise ProviderError(str(exc), "Train the adapter with a smaller lora.r.") from None
            model = serving.model_piece(endpoint, image=image, environment=environment, role_arn=settings.role_arn,
                                        subnets=settings.subnets, security_group_ids=settings.security_group_ids)
            config = serving.config_piece(endpoint, instance_type=instance_type, count=count,
                                          role_arn=settings.role_arn, kms_key_id=settings.kms_key_id)
            components = {a: serving.adapter_component_name(endpoint, a) for a in adapters}
            return Desired(endpoint, LMI, image, model, config, instance_type, count,
                           serving.base_component_name(endpoint), artifacts, components,
                           self._prompt_format(adapters, ctx))
        image = str(settings.inference_image)
        with provider_errors("uploading the server's settings", "s3"):
            key = self.configs.put_bytes(serving.serve_config(str(inputs["base_model"]), artifacts, cache_size))
        model = serving.model_piece(endpoint, image=image, environment={"FASTUNER_ENDPOINT_NAME": endpoint},
                                    role_arn=settings.role_arn, model_data=self.configs.uri(key),
                                    subnets=settings.subnets, security_group_ids=settings.security_group_ids)
        config = serving.config_piece(endpoint, instance_type=instance_type, count=count, role_arn=settings.role_arn,
                                      model=model.name, kms_key_id=settings.kms_key_id)
        return Desired(endpoint, SERVE, image, model, config, instance_type, count, "", artifacts)

    def _task(self, adapter: str, ctx: Context) -> str:
        rs = ctx.upstream.get(f"adapter.{adapter}")
        recorded = (rs.outputs.get("task") if rs is not None else None) or ""
        return self.adapter_tasks.get(adapter) or str(recorded)

    @staticmethod
    def _artifact(adapter: str, ctx: Context) -> str:
        rs = ctx.upstream.get(f"adapter.{adapter}")
        outputs = rs.outputs if rs is not None else {}
        uri = (outputs.get("artifact") or {}).get("model.tar.gz") or outputs.get("model_data")
        if not uri or not str(uri).startswith("s3://"):
            raise ProviderError(f"adapter.{adapter} has no trained artifact in S3 to serve",
                                f"Apply adapter.{adapter} first (fastuner apply), or remove it from this deployment.")
        return str(uri)

    @staticmethod
    def _rank(adapter: str, ctx: Context) -> int:
        rs = ctx.upstream.get(f"adapter.{adapter}")
        lora = (rs.inputs.get("lora") if rs is not None else None) or {}
        return int(lora.get("r", 16))

    def _prompt_format(self, adapters: Sequence[str], ctx: Context) -> str:
        """How the adapters' prompts were built, as their training recorded it (one base model: one
        format): the adapter's outputs if they say, else its artifact's `fastuner.json` (read once), where
        a missing `prompt_format` means `plain`, as containers/serve reads it."""
        for adapter in adapters:
            rs = ctx.upstream.get(f"adapter.{adapter}")
            recorded = (rs.outputs.get("prompt_format") if rs is not None else None)
            if recorded:
                return str(recorded)
        if not adapters:
            return "chat_template"
        uri = self._artifact(adapters[0], ctx)
        if uri not in self._formats:
            meta = s3objects.read_tar_json(self.session, uri, "fastuner.json") or {}
            self._formats[uri] = str(meta.get("prompt_format") or "plain")
        return self._formats[uri]

    def tags(self, address: str, inputs: Mapping[str, Any], created: datetime) -> dict[str, str]:
        return serving.deployment_tags(self.project, self.workspace, address, inputs, created)

    # --- creating --------------------------------------------------------------------------------

    def create(self, change: Change, ctx: Context) -> Outcome:
        endpoint = self._name(change.physical_name or "")
        existing = self.calls.describe("endpoint", EndpointName=endpoint)
        if existing is not None and existing.get("EndpointStatus") in (FAILED, reaping.DELETING):
            ctx.progress(f"endpoint {endpoint} is {existing['EndpointStatus'].lower()}: deleting it before "
                         "creating it again")
            self._delete_tree(endpoint, change.address, ctx)
            self.calls.wait_gone("endpoint", endpoint, ctx)  # its name is free only once it is gone
            existing = None
        created = _utc(existing["CreationTime"]) if existing is not None else ctx.now()
        desired = self.desired(change, ctx, endpoint)
        tags = self.tags(change.address, change.after or {}, created)
        self._ensure("model", desired.model, tags, ctx)
        self._ensure("endpoint_config", desired.config, tags, ctx)
        if existing is None:
            if ctx.cancelled.is_set():
                return Outcome.pending({}, "not started: interrupted")
            if self.calls.create("endpoint", EndpointName=endpoint, EndpointConfigName=desired.config.name,
                            Tags=serving.tag_list(tags)):
                ctx.progress(f"creating endpoint {endpoint} on {desired.count} × {desired.instance_type} "
                             f"({desired.mode})")
        else:
            ctx.progress(f"adopting endpoint {endpoint} ({existing.get('EndpointStatus')})")
        outputs = self._outputs(desired, created, change.after or {})
        described = self.calls.wait("endpoint", endpoint, ctx)
        if described is None:
            return Outcome.pending(outputs, self._left(endpoint, ctx))
        outputs["endpoint_arn"] = described.get("EndpointArn")
        if desired.mode == LMI:
            base = self._ensure_component(desired.base_component, {
                "EndpointName": endpoint, "VariantName": VARIANT,
                "Specification": serving.base_component_spec(desired.model.name, desired.instance_type),
                "RuntimeConfig": {"CopyCount": desired.count}}, tags, ctx)
            if base and self.calls.wait("inference_component", desired.base_component, ctx) is None:
                return Outcome.pending(outputs, self._left(endpoint, ctx))
            started = [name for adapter, name in sorted(desired.components.items())
                       if self._ensure_component(name, self._adapter_request(desired, adapter), tags, ctx)]
            for name in started:
                if self.calls.wait("inference_component", name, ctx) is None:
                    return Outcome.pending(outputs, self._left(endpoint, ctx))
        return Outcome.ready(outputs)

    def _adapter_request(self, desired: Desired, adapter: str) -> dict[str, Any]:
        return {"EndpointName": desired.endpoint, "VariantName": VARIANT,
                "Specification": serving.adapter_component_spec(desired.base_component, desired.artifacts[adapter])}

    def _ensure(self, what: str, piece: Piece, tags: Mapping[str, str], ctx: Context) -> bool:
        """Create a model or endpoint config unless it exists (its name is its content's hash)."""
        key = "ModelName" if what == "model" else "EndpointConfigName"
        if self.calls.describe(what, **{key: piece.name}) is not None:
            return False
        created = self.calls.create(what, **{key: piece.name, **piece.request, "Tags": serving.tag_list(tags)})
        if created:
            ctx.progress(f"created {what.replace('_', ' ')} {piece.name}")
        return created

    def _ensure_component(self, name: str, request: Mapping[str, Any], tags: Mapping[str, str], ctx: Context) -> bool:
        """Create an inference component unless it exists; one that failed is deleted and created again.
        True when it is not (yet) in service, so that the caller waits for it."""
        found = self.calls.describe("inference_component", InferenceComponentName=name)
        if found is not None and found.get("InferenceComponentStatus") == FAILED:
            ctx.progress(f"inference component {name} failed ({found.get('FailureReason', 'no reason given')}): "
                         "creating it again")
            self.calls.delete("inference_component", InferenceComponentName=name)
            self.calls.wait_gone("inference_component", name, ctx)
            found = None
        if found is not None:
            return found.get("InferenceComponentStatus") != IN_SERVICE
        self.calls.create("inference_component", InferenceComponentName=name, **request, Tags=serving.tag_list(tags))
        ctx.progress(f"creating inference component {name}")
        return True

    def _outputs(self, desired: Desired, created: datetime, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "endpoint_name": desired.endpoint,
            "endpoint_arn": None,
            "endpoint_config_name": desired.config.name,
            "model_name": desired.model.name,
            "mode": desired.mode,
            "image": desired.image,
            "region": self.session.region,
            "instance_type": desired.instance_type,
            "instance_count": desired.count,
            "base_component": desired.base_component,
            "components": dict(sorted(desired.components.items())),
            "adapters": sorted(desired.artifacts),
            "artifacts": dict(sorted(desired.artifacts.items())),
            "expires_at": serving.expires_at(inputs, created),
            "variant_name": VARIANT,
            "prompt_format": desired.prompt_format,
            "created_at": created.isoformat(),
        }

    @staticmethod
    def _left(endpoint: str, ctx: Context) -> str:
        why = "interrupted" if ctx.cancelled.is_set() else "--no-wait"
        return f"{why}: endpoint {endpoint} is still being set up in SageMaker; the next apply finishes it"

    # --- updating --------------------------------------------------------------------------------

    def update(self, change: Change, prior: ResourceState, ctx: Context) -> Outcome:
        """Only what changed (see the module's docstring). The base model never changes here: it forces
        a replacement (config/kinds.py)."""
        before, after = prior.inputs or {}, change.after or {}
        recorded = dict(prior.outputs or {})
        endpoint = str(recorded.get("endpoint_name") or prior.physical_name)
        created = _utc(recorded["created_at"]) if recorded.get("created_at") else (prior.created_at or ctx.now())
        desired = self.desired(change, ctx, endpoint)
        if recorded.get("mode") and recorded["mode"] != desired.mode:
            raise ProviderError(f"{change.address} would move from {recorded['mode']} to {desired.mode} serving",
                                f"Replace it: fastuner apply --replace {change.address}")
        old_tags = self.tags(change.address, before, created)
        tags = self.tags(change.address, after, created)
        arns = self._arns(recorded)
        self._retag(arns, old_tags, tags, ctx)  # before any new piece: new pieces are born with the new tags
        outputs = self._outputs(desired, created, after)
        outputs["endpoint_arn"] = recorded.get("endpoint_arn")
        if desired.mode == SERVE:
            self._swap_config(desired, recorded, tags, ctx, old_model=str(recorded.get("model_name") or ""))
            return Outcome.ready(outputs)
        old_model = str(recorded.get("model_name") or "")
        if desired.model.name != old_model:
            self._ensure("model", desired.model, tags, ctx)
        self._swap_config(desired, recorded, tags, ctx)
        base = str(recorded.get("base_component") or desired.base_component)
        outputs["base_component"] = base
        moved = desired.model.name != old_model or \
            instances.gpus(desired.instance_type) != instances.gpus(str(recorded.get("instance_type") or ""))
        if moved:
            ctx.progress(f"updating base inference component {base}")
            self.calls.call("update_inference_component", InferenceComponentName=base,
                       Specification=serving.base_component_spec(desired.model.name, desired.instance_type))
            self.calls.wait("inference_component", base, ctx, required=True)
            if old_model and old_model != desired.model.name:
                self.calls.delete("model", ModelName=old_model)
        if desired.count != recorded.get("instance_count"):
            ctx.progress(f"setting base inference component {base} to {desired.count} copies")
            self.calls.call("update_inference_component_runtime_config", InferenceComponentName=base,
                       DesiredRuntimeConfig={"CopyCount": desired.count})
            self.calls.wait("inference_component", base, ctx, required=True)
        outputs["components"] = self._update_adapters(desired, recorded, base, tags, ctx)
        return Outcome.ready(outputs)

    def _update_adapters(self, desired: Desired, recorded: Mapping[str, Any], base: str, tags: Mapping[str, str],
                         ctx: Context) -> dict[str, str]:
        """One call per adapter that changed: Delete (removed), Create (added), Update (retrained)."""
        components = dict(recorded.get("components") or {})
        artifacts = dict(recorded.get("artifacts") or {})
        waiting = []
        for adapter in sorted(set(components) - set(desired.artifacts)):
            ctx.progress(f"removing adapter {adapter} (inference component {components[adapter]})")
            self.calls.delete("inference_component", InferenceComponentName=components.pop(adapter))
        for adapter, artifact in sorted(desired.artifacts.items()):
            name = components.get(adapter)
            spec = serving.adapter_component_spec(base, artifact)
            if name is None:
                name = desired.components[adapter]
                ctx.progress(f"adding adapter {adapter} (inference component {name})")
                if self.calls.describe("inference_component", InferenceComponentName=name) is None:
                    self.calls.create("inference_component", InferenceComponentName=name, EndpointName=desired.endpoint,
                                 VariantName=VARIANT, Specification=spec, Tags=serving.tag_list(tags))
                components[adapter] = name
                waiting.append(name)
            elif artifacts.get(adapter) != artifact:
                ctx.progress(f"swapping in the retrained adapter {adapter} (inference component {name})")
                self.calls.call("update_inference_component", InferenceComponentName=name, Specification=spec)
                waiting.append(name)
        for name in waiting:
            self.calls.wait("inference_component", name, ctx, required=True)
        return dict(sorted(components.items()))

    def _swap_config(self, desired: Desired, recorded: Mapping[str, Any], tags: Mapping[str, str], ctx: Context,
                     old_model: str = "") -> None:
        """A new endpoint config (new instances, or a new model in serve mode) swapped in by UpdateEndpoint;
        the endpoint serves throughout. Then the old config (and model) go."""
        old = str(recorded.get("endpoint_config_name") or "")
        if desired.config.name == old:
            return
        if old_model and old_model != desired.model.name:
            self._ensure("model", desired.model, tags, ctx)
        self._ensure("endpoint_config", desired.config, tags, ctx)
        ctx.progress(f"updating endpoint {desired.endpoint} to {desired.count} × {desired.instance_type}")
        self.calls.call("update_endpoint", EndpointName=desired.endpoint, EndpointConfigName=desired.config.name)
        self.calls.wait("endpoint", desired.endpoint, ctx, required=True)
        if old:
            self.calls.delete("endpoint_config", EndpointConfigName=old)
        if old_model and old_model != desired.model.name:
            self.calls.delete("model", ModelName=old_model)

    def _arns(self, recorded: Mapping[str, Any]) -> list[str]:
        """The ARNs of every piece state records (the endpoint's ARN gives the account)."""
        endpoint_arn = str(recorded.get("endpoint_arn") or "")
        if not endpoint_arn:
            described = self.calls.describe("endpoint", EndpointName=str(recorded.get("endpoint_name") or ""))
            endpoint_arn = str((described or {}).get("EndpointArn") or "")
        if not endpoint_arn:
            return []
        head = endpoint_arn.rsplit(":", 1)[0]
        names = [("endpoint-config", recorded.get("endpoint_config_name")), ("model", recorded.get("model_name")),
                 ("inference-component", recorded.get("base_component")),
                 *(("inference-component", c) for c in (recorded.get("components") or {}).values())]
        return [endpoint_arn] + [f"{head}:{kind}/{str(name).lower()}" for kind, name in names if name]

    def _retag(self, arns: Sequence[str], before: Mapping[str, str], after: Mapping[str, str], ctx: Context) -> None:
        remove, add = serving.tag_changes(before, after)
        if not remove and not add:
            return
        ctx.progress(f"retagging {len(arns)} resource(s)")
        for arn in arns:
            if remove:
                self.calls.call("delete_tags", ResourceArn=arn, TagKeys=remove)
            if add:
                self.calls.call("add_tags", ResourceArn=arn, Tags=serving.tag_list(add))

    # --- deleting --------------------------------------------------------------------------------

    def delete(self, rs: ResourceState, ctx: Context) -> None:
        """The endpoint's tree (components, endpoint, configs, models), then what state recorded that the
        tree no longer names (a config or model left by an interrupted update). Silent when gone."""
        endpoint = str(rs.outputs.get("endpoint_name") or rs.physical_name or "")
        if not endpoint:
            return
        tree = self._delete_tree(endpoint, rs.address, ctx)
        config, model = rs.outputs.get("endpoint_config_name"), rs.outputs.get("model_name")
        if config and config not in tree.configs:
            self.calls.delete("endpoint_config", EndpointConfigName=str(config))
        if model and model not in tree.models:
            self.calls.delete("model", ModelName=str(model))

    def _delete_tree(self, endpoint: str, address: str, ctx: Context) -> EndpointTree:
        ours = {reaping.PROJECT_TAG: self.project, reaping.WORKSPACE_TAG: self.workspace, reaping.ADDRESS_TAG: address}
        return delete_endpoint_tree(self.session, endpoint, tags=ours, progress=ctx.progress, poll=self.calls.poll,
                                    timeout=self.calls.timeout, sleep=self.calls.pause_for(ctx))

    # --- reading ---------------------------------------------------------------------------------

    def read(self, rs: ResourceState) -> Observation:
        name = self._endpoint_of(rs)
        endpoint = self.calls.describe("endpoint", EndpointName=name)
        summary = None if endpoint is None else {"EndpointName": name, "EndpointStatus": endpoint.get("EndpointStatus"),
                                                 "FailureReason": endpoint.get("FailureReason")}
        components = self.calls.list_components(EndpointNameEquals=name) if endpoint is not None else []
        obs = self._observe(rs, summary, components)
        if obs.status is ObservationStatus.READY and (rs.inputs or {}).get("idle_ttl"):
            seen = self._last_activity([(rs, components)])
            return Observation(obs.status, obs.outputs, obs.detail, last_activity=seen.get(name))
        return obs

    def read_many(self, states: Sequence[ResourceState]) -> dict[str, Observation]:
        """One ListEndpoints and one ListInferenceComponents listing of the project's names (every page:
        an empty page may still carry a NextToken) for all of them, and one CloudWatch call for the idle
        ones."""
        if len(states) < BATCH_FROM:
            return super().read_many(states)
        names = {rs.address: self._endpoint_of(rs) for rs in states}
        prefix = common_prefix(list(names.values()))[:63].rstrip("-")
        endpoints = {e["EndpointName"]: e for e in self.calls.list("list_endpoints", "Endpoints", prefix)}
        components: dict[str, list[dict[str, Any]]] = {}
        for c in self.calls.list("list_inference_components", "InferenceComponents", prefix):
            components.setdefault(c.get("EndpointName", ""), []).append(c)
        out = {rs.address: self._observe(rs, endpoints.get(names[rs.address]), components.get(names[rs.address], []))
               for rs in states}
        idle = [(rs, components.get(names[rs.address], [])) for rs in states
                if out[rs.address].status is ObservationStatus.READY and (rs.inputs or {}).get("idle_ttl")]
        if idle:
            seen = self._last_activity(idle)
            for rs, _ in idle:
                obs = out[rs.address]
                out[rs.address] = Observation(obs.status, obs.outputs, obs.detail,
                                              last_activity=seen.get(names[rs.address]))
        return out

    def _observe(self, rs: ResourceState, endpoint: Mapping[str, Any] | None,
                 components: Sequence[Mapping[str, Any]]) -> Observation:
        name = self._endpoint_of(rs)
        if endpoint is None:
            if rs.pending is not None:
                return Observation(ObservationStatus.PENDING, detail=f"endpoint {name} is not created yet; apply "
                                   "creates it")
            return Observation(ObservationStatus.MISSING, detail=f"endpoint {name} does not exist")
        status = str(endpoint.get("EndpointStatus") or "")
        if status == FAILED:
            why = endpoint.get("FailureReason") or "no reason given"
            return Observation(ObservationStatus.FAILED, detail=f"endpoint {name} failed: {why}")
        if status == reaping.DELETING:
            return Observation(ObservationStatus.MISSING, detail=f"endpoint {name} is being deleted")
        if rs.pending is not None:
            if status != IN_SERVICE:
                return Observation(ObservationStatus.PENDING, detail=f"endpoint {name} is {status}")
            return Observation(ObservationStatus.PENDING, detail=f"endpoint {name} is in service; apply finishes "
                               "its inference components")
        found = {c["InferenceComponentName"]: c.get("InferenceComponentStatus") for c in components}
        wanted = [rs.outputs.get("base_component"), *(rs.outputs.get("components") or {}).values()]
        for component in (c for c in wanted if c):
            if component not in found:
                return Observation(ObservationStatus.FAILED, detail=f"inference component {component} of endpoint "
                                   f"{name} no longer exists")
            if found[component] == FAILED:
                return Observation(ObservationStatus.FAILED, detail=f"inference component {component} of endpoint "
                                   f"{name} failed")
        return Observation(ObservationStatus.READY)

    def _last_activity(self, items: Sequence[tuple[ResourceState, Sequence[Mapping[str, Any]]]]) -> dict[str, Any]:
        window = max(parse_duration(rs.inputs["idle_ttl"]) for rs, _ in items)
        sources = {self._endpoint_of(rs): reaping.MetricSource(
            variants=(str(rs.outputs.get("variant_name") or VARIANT),),
            components=tuple(c["InferenceComponentName"] for c in comps)) for rs, comps in items}
        with provider_errors("reading the endpoints' invocations", "cloudwatch"):
            return reaping.last_activity(self.session, list(sources), now=self.clock(), window=window, sources=sources)

    @staticmethod
    def _endpoint_of(rs: ResourceState) -> str:
        return str(rs.outputs.get("endpoint_name") or rs.physical_name or "")

    # --- importing -------------------------------------------------------------------------------

    def import_resource(self, change: Change, resource_id: str, ctx: Context) -> Outcome:
        """Adopt the endpoint `resource_id` as the deployment `change` plans: its instances, its base
        model and (lmi) an adapter component for every adapter of the spec, serving that adapter's
        recorded artifact. The names found are recorded, so later updates change those pieces."""
        name = self._name(resource_id)
        endpoint = self.calls.describe("endpoint", EndpointName=name)
        if endpoint is None:
            raise ProviderError(f"there is no endpoint {name} in {self.session.region}",
                                f"List them: aws sagemaker list-endpoints --region {self.session.region}")
        if endpoint.get("EndpointStatus") != IN_SERVICE:
            raise ProviderError(f"endpoint {name} is {endpoint.get('EndpointStatus')}",
                                "Import an endpoint that is in service.")
        desired = self.desired(change, ctx, name)
        config = self.calls.describe("endpoint_config", EndpointConfigName=str(endpoint.get("EndpointConfigName") or "")) \
            or {}
        variant = (config.get("ProductionVariants") or [{}])[0]
        differences = []
        for what, ran, wanted in (("compute.instance_type", variant.get("InstanceType"), desired.instance_type),
                                  ("compute.count", variant.get("InitialInstanceCount"), desired.count)):
            if ran != wanted:
                differences.append(f"{what}: the endpoint runs {ran!r}, the spec says {wanted!r}")
        components: dict[str, str] = {}
        base = ""
        model = str(variant.get("ModelName") or "")
        if desired.mode == LMI:
            by_artifact: dict[str, str] = {}
            for summary in self.calls.list_components(EndpointNameEquals=name):
                described = self.calls.describe("inference_component",
                                           InferenceComponentName=summary["InferenceComponentName"]) or {}
                spec = described.get("Specification") or {}
                if spec.get("BaseInferenceComponentName"):
                    url = (spec.get("Container") or {}).get("ArtifactUrl") or ""
                    by_artifact[str(url)] = summary["InferenceComponentName"]
                elif spec.get("ModelName"):
                    base, model = summary["InferenceComponentName"], str(spec["ModelName"])
            if not base:
                differences.append("it has no base inference component (a model with the LMI image)")
            for adapter, artifact in sorted(desired.artifacts.items()):
                if artifact in by_artifact:
                    components[adapter] = by_artifact[artifact]
                else:
                    differences.append(f"adapter {adapter}: no inference component serves {artifact}")
        described_model = self.calls.describe("model", ModelName=model) if model else None
        env = ((described_model or {}).get("PrimaryContainer") or {}).get("Environment") or {}
        wanted_base = (change.after or {}).get("base_model")
        if desired.mode == LMI and env.get("HF_MODEL_ID") != wanted_base:
            differences.append(f"base_model: the endpoint serves {env.get('HF_MODEL_ID')!r}, the spec says "
                               f"{wanted_base!r}")
        if differences:
            raise ProviderError("it differs from the spec: " + "; ".join(differences),
                                "Write the spec as the endpoint runs (then import again), or let fastuner create "
                                "the deployment itself: fastuner apply")
        created = _utc(endpoint["CreationTime"]) if endpoint.get("CreationTime") else ctx.now()
        outputs = self._outputs(desired, created, change.after or {})
        outputs.update(endpoint_arn=endpoint.get("EndpointArn"), endpoint_config_name=endpoint.get("EndpointConfigName"),
                       model_name=model, base_component=base, components=components)
        return Outcome.ready(outputs)

    # --- calls -----------------------------------------------------------------------------------

    def _name(self, name: str) -> str:
        try:
            return check_sagemaker_name(name, "endpoint name")
        except UserError as exc:
            d = exc.diagnostics[0]
            raise ProviderError(d.summary, d.detail) from None

def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


