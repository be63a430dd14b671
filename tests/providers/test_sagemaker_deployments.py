"""Deployments as SageMaker endpoints: what fastuner sends, in which order, for a create, each kind of
in-place update, a delete, a crashed apply and a refresh. SageMaker's endpoint calls are answered by
`FakeEndpoints` (after botocore validated each request against the service model) and by botocore's
Stubber; S3 and CloudWatch are moto's. Assertions are on the requests fastuner sent (AwsSession.observe)
and the outputs it returns."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber
from moto import mock_aws

from fastuner.aws.clients import AwsSession
from fastuner.config.loader import load_spec
from fastuner.config.models import SageMakerProvider
from fastuner.plan.model import Action, Change
from fastuner.plan.observed import ObservationStatus, Observed
from fastuner.plan.planner import make_plan
from fastuner.providers.base import Context, OutcomeStatus, ProviderError
from fastuner.providers.sagemaker.checks import check_deployments
from fastuner.providers.sagemaker.deployments import SageMakerDeployments
from fastuner.providers.sagemaker.serving import child_name, lmi_environment, lora_rank
from fastuner.state.model import Operation, ResourceState, State
from tests.providers.sagemaker_endpoints import FakeEndpoints

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/fastuner"
BUCKET = "ft-bucket"
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION,
       "AWS_MAX_ATTEMPTS": "1"}
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/fastuner-serve:1"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
MUTATING = ("Create", "Update", "Delete", "AddTags")

SPEC = """\
version: 1
project: demo
provider:
  sagemaker: {{region: {region}, role_arn: "{role}", bucket: {bucket}, prefix: ft{extra}}}
datasets:
  chat: {{path: data/chat.jsonl, task: text_generation}}
  intents: {{path: data/intents.jsonl, task: classification}}
adapters:
  a1: {{base_model: org/llm, dataset: chat, lora: {{r: {r1}}}}}
  a2: {{base_model: org/llm, dataset: chat, lora: {{r: 8}}}}
  a3: {{base_model: org/llm, dataset: chat, lora: {{r: 8}}}}
  c1: {{base_model: org/bert, dataset: intents}}
deployments:
  api:
    base_model: org/llm
    adapters: [{adapters}]
    compute: {{instance_type: {instance_type}, count: {count}}}
{lifetime}
  cls:
    base_model: org/bert
    adapters: [c1]
    compute: {{instance_type: ml.c5.xlarge}}
"""


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


class World:
    """One spec, its plan's deployment changes, the provider and the fake SageMaker."""

    def __init__(self, root: Path, *, inference_image: str | None = None) -> None:
        self.root = root
        self.session = AwsSession(REGION, environ=ENV)
        self.calls: list[dict[str, Any]] = []
        self.session.observe(self.calls.append)
        self.session.client("s3").create_bucket(Bucket=BUCKET)
        self.fake = FakeEndpoints(self.session, REGION)
        self.settings = SageMakerProvider(region=REGION, role_arn=ROLE, bucket=BUCKET, prefix="ft",
                                          inference_image=inference_image)
        self.inference_image = inference_image
        self.slept: list[float] = []
        self.progress: list[str] = []
        self.provider = SageMakerDeployments(
            self.session, self.settings, project="demo", workspace="default", spec_dir=root,
            adapter_tasks={"a1": "text_generation", "a2": "text_generation", "a3": "text_generation",
                           "c1": "classification"},
            poll=1.0, max_poll=4.0, sleep=self.slept.append, clock=lambda: NOW)
        (root / "data").mkdir()
        for name in ("chat", "intents"):
            (root / "data" / f"{name}.jsonl").write_text("")

    def spec(self, *, adapters: str = "a1, a2", instance_type: str = "ml.g5.xlarge", count: int = 1, r1: int = 12,
             lifetime: str = "    ttl: 8h\n    idle_ttl: 1h") -> Any:
        extra = f", inference_image: {self.inference_image}" if self.inference_image else ""
        text = SPEC.format(region=REGION, role=ROLE, bucket=BUCKET, extra=extra, r1=r1, adapters=adapters,
                           instance_type=instance_type, count=count, lifetime=lifetime)
        (self.root / "fastuner.yaml").write_text(text)
        return load_spec(self.root / "fastuner.yaml", variables={}, environ={})

    def change(self, address: str = "deployment.api", prior: State | None = None, **spec: Any) -> Change:
        observed = Observed(dataset_sources={"chat": "ab" * 32, "intents": "cd" * 32}, training_code_hash="code")
        plan = make_plan(self.spec(**spec), prior or State(project="demo", workspace="default"), observed, NOW)
        return next(c for c in plan.changes if c.address == address)

    def upstream(self, r1: int = 12, retrained: str = "") -> dict[str, ResourceState]:
        out = {}
        for name, r, task in (("a1", r1, "text_generation"), ("a2", 8, "text_generation"),
                              ("a3", 8, "text_generation"), ("c1", 16, "classification")):
            job = f"demo-ad-{name}-1234abcd{retrained if name == 'a1' else ''}"
            uri = f"s3://{BUCKET}/ft/adapters/{name}/{job}/output/model.tar.gz"
            out[f"adapter.{name}"] = ResourceState(
                address=f"adapter.{name}", kind="adapter", name=name, inputs={"lora": {"r": r}},
                outputs={"artifact": {"model.tar.gz": uri}, "task": task, "prompt_format": "chat_template"})
        return out

    def ctx(self, address: str = "deployment.api", **kw: Any) -> Context:
        upstream = kw.pop("upstream", None) or self.upstream()
        return Context(address=address, spec_dir=self.root, upstream=upstream, progress=self.progress.append,
                       now=lambda: NOW, **kw)

    def state(self, change: Change, outputs: dict[str, Any]) -> ResourceState:
        return ResourceState(address=change.address, kind="deployment", name=change.name, identity=change.identity,
                             physical_name=change.physical_name, inputs=dict(change.after or {}),
                             outputs=dict(outputs), depends_on=list(change.depends_on), created_at=NOW)

    def prior(self, rs: ResourceState) -> State:
        return State(project="demo", workspace="default", resources={rs.address: rs})

    def sent(self, operation: str) -> list[dict[str, Any]]:
        return [c["params"] for c in self.calls if c["operation"] == operation]

    def mutations(self) -> list[tuple[str, str]]:
        """(operation, the name it acts on) of every call that changes something, in order."""
        out = []
        for c in self.calls:
            if c["service"] == "sagemaker" and c["operation"].startswith(MUTATING):
                p = c["params"]
                name = p.get("InferenceComponentName") or p.get("EndpointName") or p.get("EndpointConfigName") or \
                    p.get("ModelName") or p.get("ResourceArn")
                out.append((c["operation"], name))
        return out

    def applied(self, **spec: Any) -> tuple[Change, ResourceState]:
        """The deployment created (calls recorded so far are forgotten)."""
        change = self.change(**spec)
        outcome = self.provider.create(change, self.ctx())
        assert outcome.status is OutcomeStatus.READY
        self.calls.clear()
        return change, self.state(change, dict(outcome.outputs))


@pytest.fixture
def world(aws, tmp_path: Path) -> World:
    return World(tmp_path)


def tags_of(params: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in params["Tags"]}


# --- pure parts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ranks", "rank"), [([12], 16), ([300], 320), ([8], 8), ([], 8), ([4, 64, 16], 64),
                                             ([512], 512)])
def test_lora_rank_is_the_smallest_vllm_accepts_above_every_adapter(ranks: list[int], rank: int) -> None:
    assert lora_rank(ranks) == rank


def test_a_rank_above_vllms_largest_is_refused() -> None:
    with pytest.raises(ValueError, match="513"):
        lora_rank([513])


def test_lmi_environment_enables_lora_from_the_cache_size() -> None:
    assert lmi_environment("org/llm", [12, 8], 6) == {
        "HF_MODEL_ID": "org/llm", "OPTION_ENABLE_LORA": "true", "OPTION_MAX_LORAS": "6",
        "OPTION_MAX_LORA_RANK": "16", "OPTION_MAX_CPU_LORAS": "12"}


def test_child_names_fit_63_characters_and_keep_the_identity() -> None:
    endpoint = "p" * 40 + "-ep-" + "d" * 10 + "-1a2b3c4d"
    name = child_name(endpoint, "a-" + "x" * 30)
    assert len(name) <= 63 and "-1a2b3c4d-" in name and name.startswith("p" * 20)
    assert child_name("demo-ep-api-1a2b3c4d", "base") == "demo-ep-api-1a2b3c4d-base"
    assert name != child_name(endpoint, "a-" + "x" * 29 + "y")


# --- create ----------------------------------------------------------------------------------------------


def test_create_lmi_sends_model_config_endpoint_then_components_in_order(world: World) -> None:
    change = world.change()
    endpoint = change.physical_name
    assert endpoint is not None and endpoint.startswith("demo-ep-api-")
    outcome = world.provider.create(change, world.ctx())
    assert outcome.status is OutcomeStatus.READY
    model = world.sent("CreateModel")[0]
    config = world.sent("CreateEndpointConfig")[0]
    assert world.mutations() == [
        ("CreateModel", model["ModelName"]), ("CreateEndpointConfig", config["EndpointConfigName"]),
        ("CreateEndpoint", endpoint), ("CreateInferenceComponent", f"{endpoint}-base"),
        ("CreateInferenceComponent", f"{endpoint}-a-a1"), ("CreateInferenceComponent", f"{endpoint}-a-a2")]
    # the base component is created only once the endpoint is in service, the adapters once the base is
    operations = [c["operation"] for c in world.calls]
    first_component = operations.index("CreateInferenceComponent")
    assert "DescribeEndpoint" in operations[operations.index("CreateEndpoint"):first_component]
    assert operations[first_component + 1] == "DescribeInferenceComponent"

    env = model["PrimaryContainer"]["Environment"]
    assert env["HF_MODEL_ID"] == "org/llm" and env["OPTION_ENABLE_LORA"] == "true"
    assert env["OPTION_MAX_LORA_RANK"] == "16"  # a1's r=12, rounded up to a rank vLLM accepts
    assert env["OPTION_MAX_LORAS"] == "8" and env["OPTION_MAX_CPU_LORAS"] == "16"
    assert "djl-inference" in model["PrimaryContainer"]["Image"] and model["ExecutionRoleArn"] == ROLE
    variant = config["ProductionVariants"][0]
    assert "ModelName" not in variant and config["ExecutionRoleArn"] == ROLE
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.g5.xlarge", 1)

    base, a1, a2 = world.sent("CreateInferenceComponent")
    assert base["Specification"] == {"ModelName": model["ModelName"], "ComputeResourceRequirements": {
        "MinMemoryRequiredInMb": 1024, "NumberOfAcceleratorDevicesRequired": 1.0}}
    assert base["RuntimeConfig"] == {"CopyCount": 1}
    uri = world.upstream()["adapter.a1"].outputs["artifact"]["model.tar.gz"]
    assert a1["Specification"] == {"BaseInferenceComponentName": f"{endpoint}-base",
                                   "Container": {"ArtifactUrl": uri}}
    assert a2["Specification"]["Container"]["ArtifactUrl"].endswith("/a2/demo-ad-a2-1234abcd/output/model.tar.gz")

    expires = (NOW + timedelta(hours=8)).isoformat()
    wanted = {"fastuner:project": "demo", "fastuner:workspace": "default", "fastuner:address": "deployment.api",
              "fastuner:expires-at": expires, "fastuner:idle-ttl": "1h"}
    for params in [model, config, *world.sent("CreateEndpoint"), base, a1, a2]:
        assert tags_of(params) == wanted

    outputs = outcome.outputs
    assert outputs["endpoint_name"] == endpoint and outputs["mode"] == "lmi"
    assert outputs["endpoint_arn"] == world.fake.arn("endpoint", endpoint)
    assert outputs["base_component"] == f"{endpoint}-base"
    assert outputs["components"] == {"a1": f"{endpoint}-a-a1", "a2": f"{endpoint}-a-a2"}
    assert outputs["adapters"] == ["a1", "a2"] and outputs["variant_name"] == "AllTraffic"
    assert outputs["expires_at"] == expires and outputs["created_at"] == NOW.isoformat()
    assert (outputs["instance_type"], outputs["instance_count"], outputs["region"]) == ("ml.g5.xlarge", 1, REGION)
    assert outputs["prompt_format"] == "chat_template"
    assert outputs["model_name"] == model["ModelName"] and outputs["endpoint_config_name"] == config["EndpointConfigName"]
    assert any("InService" in line for line in world.progress)


def test_a_crashed_apply_is_adopted_without_creating_anything_twice(world: World) -> None:
    change = world.change()
    # the first apply created the model, the config and the endpoint, then died
    world.provider.create(change, world.ctx(wait=False))
    assert [op for op, _ in world.mutations()] == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    world.calls.clear()
    outcome = world.provider.create(change, world.ctx())
    assert outcome.status is OutcomeStatus.READY
    assert [op for op, _ in world.mutations()] == ["CreateInferenceComponent"] * 3
    assert world.sent("DescribeModel") and world.sent("DescribeEndpointConfig")
    world.calls.clear()
    # and once more, with everything there: nothing is created
    assert world.provider.create(change, world.ctx()).status is OutcomeStatus.READY
    assert world.mutations() == []


def test_no_wait_leaves_the_endpoint_pending_with_its_name(world: World) -> None:
    outcome = world.provider.create(world.change(), world.ctx(wait=False))
    assert outcome.status is OutcomeStatus.PENDING and "--no-wait" in outcome.detail
    assert outcome.outputs["endpoint_name"].startswith("demo-ep-api-")


def test_a_failed_component_is_reported_with_its_reason(world: World) -> None:
    change = world.change()
    world.fake.fail[f"{change.physical_name}-base"] = "CUDA out of memory"
    with pytest.raises(ProviderError, match="CUDA out of memory"):
        world.provider.create(change, world.ctx())


def test_serve_mode_without_an_inference_image_is_refused_with_what_to_do(world: World) -> None:
    change = world.change("deployment.cls")
    with pytest.raises(ProviderError) as caught:
        world.provider.create(change, world.ctx("deployment.cls"))
    assert "inference_image" in caught.value.message and "containers/serve" in caught.value.hint
    assert world.mutations() == []
    spec = world.spec()
    problems = check_deployments(spec)
    assert [d.address for d in problems] == ["deployment.cls"]
    assert "inference_image" in problems[0].summary


def test_serve_mode_runs_the_projects_server_with_its_adapters_from_s3(aws, tmp_path: Path) -> None:
    world = World(tmp_path, inference_image=IMAGE)
    change = world.change("deployment.cls")
    outcome = world.provider.create(change, world.ctx("deployment.cls"))
    endpoint = change.physical_name
    model = world.sent("CreateModel")[0]
    assert [op for op, _ in world.mutations()] == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    container = model["PrimaryContainer"]
    assert container["Image"] == IMAGE and container["Environment"] == {"FASTUNER_ENDPOINT_NAME": endpoint}
    variant = world.sent("CreateEndpointConfig")[0]["ProductionVariants"][0]
    assert variant["ModelName"] == model["ModelName"] and variant["InstanceType"] == "ml.c5.xlarge"
    bucket, _, key = container["ModelDataUrl"][5:].partition("/")
    data = world.session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        settings = json.loads(tar.extractfile("serve.json").read())  # type: ignore[union-attr]
    assert settings == {"base_model": "org/bert", "task": "classification", "cache_size": 8,
                        "adapters": {"c1": world.upstream()["adapter.c1"].outputs["artifact"]["model.tar.gz"]}}
    assert outcome.outputs["mode"] == "serve" and outcome.outputs["components"] == {}
    assert "fastuner:expires-at" not in tags_of(model)  # no ttl in the spec


# --- update in place ---------------------------------------------------------------------------------------


def test_adding_an_adapter_is_one_create_inference_component(world: World) -> None:
    _, rs = world.applied()
    update = world.change(prior=world.prior(rs), adapters="a1, a2, a3")
    assert update.action is Action.UPDATE
    outcome = world.provider.update(update, rs, world.ctx())
    endpoint = rs.outputs["endpoint_name"]
    assert world.mutations() == [("CreateInferenceComponent", f"{endpoint}-a-a3")]
    assert outcome.outputs["components"]["a3"] == f"{endpoint}-a-a3" and outcome.outputs["adapters"] == ["a1", "a2", "a3"]


def test_removing_an_adapter_is_one_delete_inference_component(world: World) -> None:
    _, rs = world.applied()
    update = world.change(prior=world.prior(rs), adapters="a1")
    outcome = world.provider.update(update, rs, world.ctx())
    assert world.mutations() == [("DeleteInferenceComponent", f"{rs.outputs['endpoint_name']}-a-a2")]
    assert outcome.outputs["components"] == {"a1": rs.outputs["components"]["a1"]}


def test_a_retrained_adapter_is_one_update_inference_component(world: World) -> None:
    _, rs = world.applied()
    update = world.change(prior=world.prior(rs), r1=16)  # a1 retrained (same rank bucket: no new model)
    assert update.action is Action.UPDATE
    outcome = world.provider.update(update, rs, world.ctx(upstream=world.upstream(r1=16, retrained="-r1")))
    assert world.mutations() == [("UpdateInferenceComponent", rs.outputs["components"]["a1"])]
    sent = world.sent("UpdateInferenceComponent")[0]["Specification"]
    assert sent["Container"]["ArtifactUrl"].endswith("demo-ad-a1-1234abcd-r1/output/model.tar.gz")
    assert outcome.outputs["artifacts"]["a1"] == sent["Container"]["ArtifactUrl"]


def test_a_larger_rank_swaps_the_model_under_the_base_component(world: World) -> None:
    _, rs = world.applied()
    update = world.change(prior=world.prior(rs), r1=300)
    world.provider.update(update, rs, world.ctx(upstream=world.upstream(r1=300, retrained="-r1")))
    new_model = world.sent("CreateModel")[0]
    assert new_model["PrimaryContainer"]["Environment"]["OPTION_MAX_LORA_RANK"] == "320"
    base = rs.outputs["base_component"]
    assert world.mutations() == [("CreateModel", new_model["ModelName"]), ("UpdateInferenceComponent", base),
                                 ("DeleteModel", rs.outputs["model_name"]),
                                 ("UpdateInferenceComponent", rs.outputs["components"]["a1"])]


def test_a_new_instance_type_is_a_new_config_and_update_endpoint(world: World) -> None:
    _, rs = world.applied()
    update = world.change(prior=world.prior(rs), instance_type="ml.g5.12xlarge", count=2)
    outcome = world.provider.update(update, rs, world.ctx())
    endpoint, base = rs.outputs["endpoint_name"], rs.outputs["base_component"]
    config = world.sent("CreateEndpointConfig")[0]
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g5.12xlarge"
    assert world.mutations() == [
        ("CreateEndpointConfig", config["EndpointConfigName"]), ("UpdateEndpoint", endpoint),
        ("DeleteEndpointConfig", rs.outputs["endpoint_config_name"]),
        ("UpdateInferenceComponent", base),  # 4 GPUs an instance now
        ("UpdateInferenceComponentRuntimeConfig", base)]
    assert world.sent("UpdateEndpoint")[0]["EndpointConfigName"] == config["EndpointConfigName"]
    assert world.sent("UpdateInferenceComponent")[0]["Specification"]["ComputeResourceRequirements"][
        "NumberOfAcceleratorDevicesRequired"] == 4.0
    assert world.sent("UpdateInferenceComponentRuntimeConfig")[0]["DesiredRuntimeConfig"] == {"CopyCount": 2}
    assert outcome.outputs["endpoint_config_name"] == config["EndpointConfigName"]
    assert (outcome.outputs["instance_type"], outcome.outputs["instance_count"]) == ("ml.g5.12xlarge", 2)


def test_a_ttl_change_rewrites_the_expiry_tag_on_every_resource(world: World) -> None:
    _, rs = world.applied()
    update = world.change(prior=world.prior(rs), lifetime="    ttl: 12h\n    idle_ttl: 1h")
    outcome = world.provider.update(update, rs, world.ctx())
    arns = [c[1] for c in world.mutations()]
    assert [op for op, _ in world.mutations()] == ["DeleteTags", "AddTags"] * 6  # endpoint, config, model, 3 components
    assert arns[0::2] == arns[1::2] and len(set(arns)) == 6
    assert all(p["TagKeys"] == ["fastuner:expires-at"] for p in world.sent("DeleteTags"))
    expires = (NOW + timedelta(hours=12)).isoformat()
    assert all(p["Tags"] == [{"Key": "fastuner:expires-at", "Value": expires}] for p in world.sent("AddTags"))
    assert outcome.outputs["expires_at"] == expires
    assert world.fake.tags[rs.outputs["endpoint_arn"]]["fastuner:expires-at"] == expires


def test_a_base_model_change_is_a_replacement_not_an_update(world: World) -> None:
    _, rs = world.applied()
    world.spec()  # writes the file
    text = (world.root / "fastuner.yaml").read_text().replace("    base_model: org/llm\n    adapters: [a1, a2]",
                                                               "    base_model: org/llm2\n    adapters: []")
    (world.root / "fastuner.yaml").write_text(text)
    plan = make_plan(load_spec(world.root / "fastuner.yaml", variables={}, environ={}), world.prior(rs),
                     Observed(dataset_sources={"chat": "ab" * 32, "intents": "cd" * 32}, training_code_hash="c"), NOW)
    replaced = next(c for c in plan.changes if c.address == "deployment.api")
    assert replaced.action is Action.REPLACE and "base_model" in replaced.replace_paths


def test_stubber_add_adapter_sends_exactly_one_call_then_waits(world: World) -> None:
    """The same update as above through botocore's Stubber: nothing but the one create and its waiting."""
    _, rs = world.applied()
    update = world.change(prior=world.prior(rs), adapters="a1, a2, a3")
    endpoint = rs.outputs["endpoint_name"]
    name = f"{endpoint}-a-a3"
    uri = world.upstream()["adapter.a3"].outputs["artifact"]["model.tar.gz"]
    client = world.session.client("sagemaker")
    with Stubber(client) as stub:
        stub.add_client_error("describe_inference_component", "ValidationException",
                              f'Could not find inference component "{name}".',
                              expected_params={"InferenceComponentName": name})
        stub.add_response("create_inference_component", {"InferenceComponentArn": world.fake.arn("inference-component", name)},
                          {"InferenceComponentName": name, "EndpointName": endpoint, "VariantName": "AllTraffic",
                           "Specification": {"BaseInferenceComponentName": f"{endpoint}-base",
                                             "Container": {"ArtifactUrl": uri}},
                           "Tags": [{"Key": k, "Value": v} for k, v in sorted({
                               "fastuner:address": "deployment.api", "fastuner:idle-ttl": "1h",
                               "fastuner:expires-at": (NOW + timedelta(hours=8)).isoformat(),
                               "fastuner:project": "demo", "fastuner:workspace": "default"}.items())]})
        for status in ("Creating", "InService"):
            stub.add_response("describe_inference_component", {
                "InferenceComponentName": name, "InferenceComponentArn": world.fake.arn("inference-component", name),
                "EndpointName": endpoint, "EndpointArn": rs.outputs["endpoint_arn"], "InferenceComponentStatus": status,
                "CreationTime": NOW, "LastModifiedTime": NOW}, {"InferenceComponentName": name})
        world.provider.update(update, rs, world.ctx())
        stub.assert_no_pending_responses()


# --- delete ------------------------------------------------------------------------------------------------


def test_delete_goes_adapters_base_endpoint_config_model(world: World) -> None:
    _, rs = world.applied()
    world.provider.delete(rs, world.ctx())
    endpoint = rs.outputs["endpoint_name"]
    ops = world.mutations()
    assert ops[:2] == [("DeleteInferenceComponent", f"{endpoint}-a-a1"), ("DeleteInferenceComponent", f"{endpoint}-a-a2")]
    assert ops[2:] == [("DeleteInferenceComponent", f"{endpoint}-base"), ("DeleteEndpoint", endpoint),
                       ("DeleteEndpointConfig", rs.outputs["endpoint_config_name"]),
                       ("DeleteModel", rs.outputs["model_name"])]
    operations = [c["operation"] for c in world.calls]
    between = operations[operations.index("DeleteInferenceComponent"):operations.index("DeleteEndpoint")]
    assert between.count("DescribeInferenceComponent") >= 3  # waited until the components were gone
    assert not world.fake.endpoints and not world.fake.models and not world.fake.configs
    world.calls.clear()
    world.provider.delete(rs, world.ctx())  # already gone: silent
    assert world.mutations() == [] or all(op.startswith("Delete") for op, _ in world.mutations())


def test_delete_after_an_instance_change_removes_every_config(world: World) -> None:
    _, rs = world.applied()
    world.fake.configs["leftover"] = {"ProductionVariants": []}
    world.fake.tags[world.fake.arn("endpoint-config", "leftover")] = {
        "fastuner:project": "demo", "fastuner:workspace": "default", "fastuner:address": "deployment.api"}
    world.provider.delete(rs, world.ctx())
    assert not world.fake.configs


# --- read ----------------------------------------------------------------------------------------------------


def test_refresh_lists_instead_of_describing_and_finds_drift(world: World) -> None:
    _, api = world.applied()
    other = world.change(address="deployment.api")
    # a second deployment whose endpoint is gone, a third whose adapter component was deleted outside
    gone = ResourceState(address="deployment.gone", kind="deployment", name="gone", physical_name="demo-ep-gone-00000000",
                         outputs={"endpoint_name": "demo-ep-gone-00000000"})
    world.fake.components.pop(api.outputs["components"]["a2"])
    broken = api
    pending = ResourceState(address="deployment.new", kind="deployment", name="new",
                            physical_name="demo-ep-new-11111111",
                            pending=Operation(action="create", started_at=NOW, run_id="x"))
    observed = world.provider.read_many([broken, gone, pending])
    assert observed["deployment.gone"].status is ObservationStatus.MISSING
    assert observed["deployment.new"].status is ObservationStatus.PENDING
    assert observed["deployment.api"].status is ObservationStatus.FAILED
    assert "a-a2" in observed["deployment.api"].detail
    described = [c for c in world.calls if c["operation"].startswith("Describe")]
    assert described == []
    lists = [c["params"] for c in world.calls if c["operation"] == "ListEndpoints"]
    assert len(lists) >= 2 and lists[0]["NameContains"] == "demo-ep"  # every page, to the empty last one
    assert world.sent("ListInferenceComponents")
    assert other.physical_name == api.physical_name


def test_refresh_reads_the_last_invocation_for_idle_ttl_in_one_call(world: World) -> None:
    _, api = world.applied()
    observed = world.provider.read_many([api, api.model_copy(update={"address": "deployment.twin"})])
    metric_calls = [c for c in world.calls if c["operation"] == "GetMetricData"]
    assert len(metric_calls) == 1
    dims = [q["MetricStat"]["Metric"]["Dimensions"] for q in metric_calls[0]["params"]["MetricDataQueries"]]
    assert [{"Name": "InferenceComponentName", "Value": api.outputs["components"]["a1"]}] in dims
    assert observed["deployment.api"].status is ObservationStatus.READY
    assert observed["deployment.api"].last_activity is None  # no invocation in moto's CloudWatch


# --- import ----------------------------------------------------------------------------------------------------


def test_import_adopts_an_endpoint_that_matches_the_spec(world: World) -> None:
    change, rs = world.applied()
    endpoint = rs.outputs["endpoint_name"]
    outcome = world.provider.import_resource(change, endpoint, world.ctx())
    assert outcome.outputs["components"] == rs.outputs["components"]
    assert outcome.outputs["base_component"] == rs.outputs["base_component"]
    other = world.change(instance_type="ml.g5.2xlarge", adapters="a1, a2, a3")
    with pytest.raises(ProviderError) as caught:
        world.provider.import_resource(other, endpoint, world.ctx())
    assert "compute.instance_type" in caught.value.message and "adapter a3" in caught.value.message
    assert [op for op, _ in world.mutations()] == []


# --- the runner's policy -----------------------------------------------------------------------------------------


def test_every_call_of_a_deployments_life_is_allowed_by_the_runners_policy(aws, tmp_path: Path) -> None:
    """Create, each kind of update, refresh and delete, in both modes: nothing the policy refuses."""
    from fastuner.providers.sagemaker.iam import covers, policy, requests_of, scope_of

    world = World(tmp_path, inference_image=IMAGE)
    change = world.change()
    rs = world.state(change, dict(world.provider.create(change, world.ctx()).outputs))
    calls = [c for c in world.calls if c["operation"] != "CreateBucket"]  # the test's own
    world.calls.clear()
    for spec in ({"adapters": "a1, a2, a3"}, {"instance_type": "ml.g5.12xlarge"}, {"lifetime": "    ttl: 9h"}):
        update = world.change(prior=world.prior(rs), **spec)
        rs = world.state(update, dict(world.provider.update(update, rs, world.ctx()).outputs))
        calls += world.calls
        world.calls.clear()
    world.provider.read_many([rs, rs.model_copy(update={"address": "deployment.twin"})])
    world.provider.delete(rs, world.ctx())
    cls = world.change("deployment.cls")
    world.provider.create(cls, world.ctx("deployment.cls"))
    calls += world.calls
    scope = scope_of(world.spec().config)
    coverage = covers(policy(scope), requests_of(calls, scope))
    assert coverage.denied == ()
    used = {c["operation"] for c in calls}
    assert {"CreateModel", "UpdateEndpoint", "CreateInferenceComponent", "DeleteTags", "AddTags"} <= used


def test_the_prompt_format_comes_from_the_adapters_artifact_when_state_lacks_it(world: World) -> None:
    upstream = world.upstream()
    for rs in upstream.values():
        rs.outputs.pop("prompt_format")
    meta = json.dumps({"prompt_format": "plain", "base_model": "org/llm"}).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in (("adapter_model.safetensors", b"\0" * 4096), ("fastuner.json", meta)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bucket, _, key = upstream["adapter.a1"].outputs["artifact"]["model.tar.gz"][5:].partition("/")
    world.session.client("s3").put_object(Bucket=bucket, Key=key, Body=raw.getvalue())
    outcome = world.provider.create(world.change(), world.ctx(upstream=upstream))
    assert outcome.outputs["prompt_format"] == "plain"
    assert len(world.sent("GetObject")) == 1  # one artifact read, not one per adapter


def test_serve_mode_swaps_a_new_model_and_config_in_with_update_endpoint(aws, tmp_path: Path) -> None:
    world = World(tmp_path, inference_image=IMAGE)
    change = world.change("deployment.cls")
    outcome = world.provider.create(change, world.ctx("deployment.cls"))
    rs = world.state(change, dict(outcome.outputs))
    world.calls.clear()
    text = (world.root / "fastuner.yaml").read_text().replace("    adapters: [c1]\n", "    adapters: [c1]\n    cache_size: 2\n")
    (world.root / "fastuner.yaml").write_text(text)
    observed = Observed(dataset_sources={"chat": "ab" * 32, "intents": "cd" * 32}, training_code_hash="code")
    plan = make_plan(load_spec(world.root / "fastuner.yaml", variables={}, environ={}), world.prior(rs), observed, NOW)
    update = next(c for c in plan.changes if c.address == "deployment.cls")
    assert update.action is Action.UPDATE
    new = world.provider.update(update, rs, world.ctx("deployment.cls")).outputs
    model, config = world.sent("CreateModel")[0]["ModelName"], world.sent("CreateEndpointConfig")[0]["EndpointConfigName"]
    assert world.mutations() == [("CreateModel", model), ("CreateEndpointConfig", config),
                                 ("UpdateEndpoint", rs.outputs["endpoint_name"]),
                                 ("DeleteEndpointConfig", rs.outputs["endpoint_config_name"]),
                                 ("DeleteModel", rs.outputs["model_name"])]
    assert (new["model_name"], new["endpoint_config_name"]) == (model, config)


def test_the_provider_serves_deployments_and_checks_them_at_plan(aws, tmp_path: Path) -> None:
    from fastuner.providers.sagemaker import sagemaker_provider

    world = World(tmp_path)
    provider = sagemaker_provider(world.spec(), "default", ENV)
    assert provider.for_kind("deployment").kind == "deployment" and not provider.unsupported
    assert provider.importer("deployment") is provider.resources["deployment"]
    found = provider.checks()
    assert [(d.address, d.source is not None) for d in found] == [("deployment.cls", True)]


def test_an_adapter_of_another_base_model_is_refused_at_plan_on_sagemaker(world: World) -> None:
    from fastuner.config.checks import check_spec

    world.spec()
    text = (world.root / "fastuner.yaml").read_text().replace("adapters: [c1]", "adapters: [a1]")
    (world.root / "fastuner.yaml").write_text(text)
    errors = [d for d in check_spec(load_spec(world.root / "fastuner.yaml", variables={}, environ={}))
              if d.severity == "error"]
    assert [d.address for d in errors] == ["deployment.cls"]
    assert "trained on `org/llm`" in errors[0].summary


def test_generation_on_a_cpu_instance_is_refused_at_plan(world: World) -> None:
    problems = check_deployments(world.spec(instance_type="ml.c5.xlarge"))
    assert ("deployment.api", True) in [(d.address, "has no GPU" in d.summary) for d in problems]
    typo = check_deployments(world.spec(instance_type="ml.g5.xlarg"))
    assert any("did you mean ml.g5.xlarge" in d.summary for d in typo)


def test_an_instance_type_with_as_many_gpus_leaves_the_components_alone(world: World) -> None:
    _, rs = world.applied()
    update = world.change(prior=world.prior(rs), instance_type="ml.g6.xlarge")
    world.provider.update(update, rs, world.ctx())
    assert [op for op, _ in world.mutations()] == ["CreateEndpointConfig", "UpdateEndpoint", "DeleteEndpointConfig"]


def test_a_failed_endpoint_is_deleted_and_created_again_under_its_name(world: World) -> None:
    change = world.change()
    world.fake.fail[change.physical_name] = "image pull failed"
    with pytest.raises(ProviderError, match="image pull failed"):
        world.provider.create(change, world.ctx())
    assert world.provider.read(world.state(change, {"endpoint_name": change.physical_name})).status \
        is ObservationStatus.FAILED
    world.fake.fail.clear()
    world.calls.clear()
    assert world.provider.create(change, world.ctx()).status is OutcomeStatus.READY
    ops = [op for op, _ in world.mutations()]
    assert ops[:3] == ["DeleteEndpoint", "DeleteEndpointConfig", "DeleteModel"]
    assert ops[3:6] == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
