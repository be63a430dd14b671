"""A SageMaker deployment end to end: the `fastuner` CLI as a subprocess against a moto server on
127.0.0.1 whose SageMaker is extended with training jobs that run until finished (tests/aws/motoext.py)
and with endpoints and inference components (tests/aws/moto_endpoints.py; moto has none).

The AWS quickstart plus three text-generation adapters on one causal LM and a deployment serving two of
them (LMI mode: one endpoint, a base inference component, one adapter component each): planned,
applied, re-planned with no change, given a third adapter (one CreateInferenceComponent, nothing else
on the endpoint), relieved of one (one DeleteInferenceComponent), retagged for a new ttl (DeleteTags,
then AddTags), served a retrained adapter (one UpdateInferenceComponent), moved to another instance
type (a new endpoint config and UpdateEndpoint) and destroyed in SageMaker's order. Then, with no state
at all, `fastuner reap --from-tags` finds an expired deployment by its tags and deletes its tree.
Assertions are on what the
CLI sent (its call log, FASTUNER_AWS_CALL_LOG) and on the state it recorded, and the whole call log is
checked against `fastuner iam-policy`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.aws.moto_endpoints import Endpoints
from tests.aws.motoext import JobWorld, adapter_files
from tests.aws.test_e2e_server import ROOT, Cloud, ok

ACCOUNT = "123456789012"
REGION = "us-east-1"
BASE = "Qwen/Qwen2.5-0.5B"
RANKS = {"ent-a": 8, "ent-b": 16, "ent-c": 8}  # vLLM's max_lora_rank 16 fits them all: no model swap
MUTATING = ("Create", "Update", "Delete", "Add", "Stop")
pytestmark = pytest.mark.slow

EXTRA = """
  entities:
    path: ../skyrim/data/entities.jsonl
    task: text_generation
    split: {train: 0.8, validation: 0.1, test: 0.1, seed: 42}
"""


def adapter(name: str, r: int, lr: str = "2.0e-4") -> str:
    return f"""
  {name}:
    base_model: {BASE}
    dataset: entities
    lora: {{r: {r}, alpha: {2 * r}, dropout: 0.05, target_modules: all-linear}}
    training: {{epochs: 1, learning_rate: {lr}, batch_tokens: 4096, max_seq_len: 512}}
    compute: {{instance_type: ml.g5.2xlarge, spot: true, max_runtime: 1h, max_wait: 2h}}
"""


def deployment(adapters: list[str], ttl: str = "8h", instance_type: str = "ml.g5.xlarge") -> str:
    return f"""
deployments:
  chat:
    base_model: {BASE}
    adapters: [{", ".join(adapters)}]
    compute: {{instance_type: {instance_type}, count: 1}}
    ttl: {ttl}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, JobWorld, Endpoints]]:
    jobs = JobWorld(REGION).install()
    endpoints = Endpoints(REGION, settle=2, linger=1).install()
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    try:
        yield f"http://{host}:{port}", jobs, endpoints
    finally:
        srv.stop()
        endpoints.uninstall()
        jobs.uninstall()


class DeployCloud(Cloud):
    """The quickstart's cloud, whose jobs leave text-generation adapters of the rank they were asked for."""

    def __init__(self, url: str, world: JobWorld, endpoints: Endpoints, folder: Path, base_spec: str) -> None:
        super().__init__(url, world, folder)
        self.endpoints = endpoints
        self.base_spec = base_spec
        kw = dict(endpoint_url=url, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
        self.sm = boto3.client("sagemaker", **kw)

    def finish(self, name: str) -> None:
        sent = next(c["params"] for c in self.calls("CreateTrainingJob") if c["params"]["TrainingJobName"] == name)
        address = {t["Key"]: t["Value"] for t in sent["Tags"]}["fastuner:address"]
        files = adapter_files()
        if address != "adapter.intents-lora":
            r = int(json.loads(sent["HyperParameters"]["lora_r"]))
            files["adapter_config.json"] = json.dumps({"r": r, "peft_type": "LORA", "base_model_name_or_path": BASE,
                                                       "task_type": "CAUSAL_LM"}).encode()
            files["fastuner.json"] = json.dumps({"task": "text_generation", "metrics": {"eval_loss": 0.5}}).encode()
        self.world.finish(name, lambda b, k, d: self.s3.put_object(Bucket=b, Key=k, Body=d), billable=187,
                          files=files, metrics={"eval_loss": 0.387})

    def write_spec(self, adapters: list[str], ttl: str = "8h", instance_type: str = "ml.g5.xlarge") -> None:
        (self.folder / "fastuner.yaml").write_text(self.base_spec + deployment(adapters, ttl, instance_type))

    def state(self) -> dict:
        """The state the CLI recorded, read from the backend's bucket (quicker than `state pull`)."""
        body = self.s3.get_object(Bucket=f"fastuner-{ACCOUNT}", Key="state/quickstart-aws.json")["Body"].read()
        return json.loads(body)

    @staticmethod
    def changes(calls: list[dict]) -> list[tuple[str, str]]:
        """(operation, the name or ARN it acts on) of every SageMaker call that changes something."""
        keys = ("InferenceComponentName", "EndpointName", "EndpointConfigName", "ModelName", "ResourceArn")
        return [(c["operation"], next((str(c["params"][k]) for k in keys if k in c["params"]), ""))
                for c in calls if c["service"] == "sagemaker" and c["operation"].startswith(MUTATING)
                and "TrainingJob" not in c["operation"]]

    def left(self) -> dict[str, list[str]]:
        """What the server still holds of endpoints (the test's own look, not fastuner's)."""
        return {"endpoints": [e["EndpointName"] for e in self.sm.list_endpoints()["Endpoints"]],
                "configs": [c["EndpointConfigName"] for c in self.sm.list_endpoint_configs()["EndpointConfigs"]],
                "models": [m["ModelName"] for m in self.sm.list_models()["Models"]],
                "components": [c["InferenceComponentName"]
                               for c in self.sm.list_inference_components()["InferenceComponents"]]}


@pytest.fixture
def cloud(server, tmp_path: Path) -> Iterator[DeployCloud]:
    import urllib.request

    url, jobs, endpoints = server
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10)
    jobs.created.clear()
    endpoints.created.clear()
    jobs.hold = True
    folder = tmp_path / "quickstart-aws"
    shutil.copytree(ROOT / "examples" / "quickstart-aws", folder)
    shutil.copytree(ROOT / "examples" / "quickstart" / "data", tmp_path / "quickstart" / "data")
    shutil.copytree(ROOT / "examples" / "skyrim" / "data", tmp_path / "skyrim" / "data")
    text = (folder / "fastuner.yaml").read_text()
    text = text.replace("\nadapters:\n", EXTRA + "\nadapters:\n")
    text += "".join(adapter(n, r) for n, r in RANKS.items())
    c = DeployCloud(url, jobs, endpoints, folder, text)
    (folder / "fastuner.yaml").write_text(text)
    yield c
    c.close()




def tags_of(params: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in params.get("Tags") or []}


def test_a_deployment_planned_applied_changed_in_place_and_destroyed(cloud: DeployCloud) -> None:
    from fastuner.config.loader import load_spec
    from fastuner.providers.sagemaker.iam import covers, policy, read_call_log, requests_of, scope_of

    ok(cloud.run("bootstrap", "--auto-approve"))
    cloud.write_spec(["ent-a", "ent-b"])
    plan = ok(cloud.run("plan", "--detailed-exitcode"), 2)
    assert "Plan: 7 to create" in plan and "2 adapters: $0.70 per adapter-hour" in plan
    cloud.autofinish()
    mark = cloud.mark()
    assert "Resources: 7 created" in ok(cloud.run("apply", "--auto-approve"))

    state = cloud.state()["resources"]
    out = state["deployment.chat"]["outputs"]
    ep, model, config = out["endpoint_name"], out["model_name"], out["endpoint_config_name"]
    base, comp = f"{ep}-base", {a: f"{ep}-a-{a}" for a in RANKS}
    assert out["mode"] == "lmi" and out["base_component"] == base
    assert out["components"] == {"ent-a": comp["ent-a"], "ent-b": comp["ent-b"]}
    artifacts = {a: state[f"adapter.{a}"]["outputs"]["artifact"]["model.tar.gz"] for a in RANKS}
    assert out["artifacts"] == {"ent-a": artifacts["ent-a"], "ent-b": artifacts["ent-b"]}
    # in SageMaker's order, each piece once
    assert cloud.changes(cloud.since(mark)) == [
        ("CreateModel", model), ("CreateEndpointConfig", config), ("CreateEndpoint", ep),
        ("CreateInferenceComponent", base), ("CreateInferenceComponent", comp["ent-a"]),
        ("CreateInferenceComponent", comp["ent-b"])]
    assert cloud.endpoints.created == [("model", model), ("endpoint-config", config), ("endpoint", ep),
                                                    ("inference-component", base),
                                                    ("inference-component", comp["ent-a"]),
                                                    ("inference-component", comp["ent-b"])]
    sent = {"{}:{}".format(*cloud.changes([c])[0]): c["params"] for c in cloud.since(mark) if cloud.changes([c])}
    container = sent[f"CreateModel:{model}"]["PrimaryContainer"]
    assert "djl-inference" in container["Image"]
    assert container["Environment"] == {"HF_MODEL_ID": BASE, "OPTION_ENABLE_LORA": "true", "OPTION_MAX_LORAS": "8",
                                        "OPTION_MAX_LORA_RANK": "16", "OPTION_MAX_CPU_LORAS": "16"}
    [variant] = sent[f"CreateEndpointConfig:{config}"]["ProductionVariants"]
    assert variant["InstanceType"] == "ml.g5.xlarge" and variant["InitialInstanceCount"] == 1
    assert "ModelName" not in variant  # component style
    assert sent[f"CreateEndpointConfig:{config}"]["ExecutionRoleArn"].endswith(":role/fastuner-quickstart-aws")
    assert sent[f"CreateInferenceComponent:{base}"]["Specification"]["ModelName"] == model
    for a in ("ent-a", "ent-b"):
        spec = sent[f"CreateInferenceComponent:{comp[a]}"]["Specification"]
        assert spec == {"BaseInferenceComponentName": base, "Container": {"ArtifactUrl": artifacts[a]}}
    expires = out["expires_at"]
    for params in sent.values():
        assert tags_of(params).items() >= {"fastuner:project": "quickstart-aws", "fastuner:workspace": "default",
                                           "fastuner:address": "deployment.chat",
                                           "fastuner:expires-at": expires}.items()

    mark = cloud.mark()
    ok(cloud.run("plan", "--detailed-exitcode"), 0)  # nothing to do
    assert cloud.changes(cloud.since(mark)) == []

    # a third adapter: one inference component, nothing else touched
    cloud.write_spec(["ent-a", "ent-b", "ent-c"])
    mark = cloud.mark()
    assert "1 updated" in ok(cloud.run("apply", "--auto-approve"))
    [(op, name)] = cloud.changes(cloud.since(mark))
    assert (op, name) == ("CreateInferenceComponent", comp["ent-c"])
    [added] = [c["params"] for c in cloud.since(mark) if c["operation"] == "CreateInferenceComponent"]
    assert added["Specification"] == {"BaseInferenceComponentName": base,
                                      "Container": {"ArtifactUrl": artifacts["ent-c"]}}
    assert tags_of(added)["fastuner:expires-at"] == expires
    assert cloud.state()["resources"]["deployment.chat"]["outputs"]["components"] == {
        a: comp[a] for a in ("ent-a", "ent-b", "ent-c")}

    # one removed: one delete
    cloud.write_spec(["ent-b", "ent-c"])
    mark = cloud.mark()
    assert "1 updated" in ok(cloud.run("apply", "--auto-approve"))
    assert cloud.changes(cloud.since(mark)) == [("DeleteInferenceComponent", comp["ent-a"])]
    out = cloud.state()["resources"]["deployment.chat"]["outputs"]
    assert out["components"] == {"ent-b": comp["ent-b"], "ent-c": comp["ent-c"]} and out["adapters"] == ["ent-b", "ent-c"]

    # a new ttl: the lifetime tag rewritten on every piece, deleted before it is added
    cloud.write_spec(["ent-b", "ent-c"], ttl="12h")
    mark = cloud.mark()
    assert "1 updated" in ok(cloud.run("apply", "--auto-approve"))
    out = cloud.state()["resources"]["deployment.chat"]["outputs"]
    assert out["expires_at"] != expires
    arn = out["endpoint_arn"].rsplit(":", 1)[0]
    pieces = [out["endpoint_arn"], f"{arn}:endpoint-config/{config}", f"{arn}:model/{model}",
              f"{arn}:inference-component/{base}", f"{arn}:inference-component/{comp['ent-b']}",
              f"{arn}:inference-component/{comp['ent-c']}"]
    assert cloud.changes(cloud.since(mark)) == [(op, piece) for piece in pieces for op in ("DeleteTags", "AddTags")]
    for c in cloud.since(mark):
        if c["operation"] == "DeleteTags":
            assert c["params"]["TagKeys"] == ["fastuner:expires-at"]
        if c["operation"] == "AddTags":
            assert c["params"]["Tags"] == [{"Key": "fastuner:expires-at", "Value": out["expires_at"]}]
    assert tags_of(cloud.sm.list_tags(ResourceArn=pieces[4]))["fastuner:expires-at"] == out["expires_at"]

    # a retrained adapter: its component serves the new artifact (one UpdateInferenceComponent)
    cloud.base_spec = cloud.base_spec.replace(adapter("ent-b", 16), adapter("ent-b", 16, lr="3.0e-4"))
    cloud.write_spec(["ent-b", "ent-c"], ttl="12h")
    mark = cloud.mark()
    assert "1 updated" in ok(cloud.run("apply", "--auto-approve"))
    state = cloud.state()["resources"]
    retrained = state["adapter.ent-b"]["outputs"]["artifact"]["model.tar.gz"]
    assert retrained != artifacts["ent-b"] and len(cloud.calls("CreateTrainingJob")) == 5
    assert cloud.changes(cloud.since(mark)) == [("UpdateInferenceComponent", comp["ent-b"])]
    [swapped] = [c["params"] for c in cloud.since(mark) if c["operation"] == "UpdateInferenceComponent"]
    assert swapped["Specification"] == {"BaseInferenceComponentName": base, "Container": {"ArtifactUrl": retrained}}
    assert state["deployment.chat"]["outputs"]["artifacts"]["ent-b"] == retrained

    # another instance type: a new endpoint config swapped in by UpdateEndpoint, then the old one goes
    cloud.write_spec(["ent-b", "ent-c"], ttl="12h", instance_type="ml.g6.xlarge")
    mark = cloud.mark()
    assert "1 updated" in ok(cloud.run("apply", "--auto-approve"))
    out = cloud.state()["resources"]["deployment.chat"]["outputs"]
    moved = out["endpoint_config_name"]
    assert cloud.changes(cloud.since(mark)) == [("CreateEndpointConfig", moved), ("UpdateEndpoint", ep),
                                                ("DeleteEndpointConfig", config)]
    [new_config] = [c["params"] for c in cloud.since(mark) if c["operation"] == "CreateEndpointConfig"]
    assert new_config["ProductionVariants"][0]["InstanceType"] == "ml.g6.xlarge"
    assert [c["params"]["EndpointConfigName"] for c in cloud.since(mark) if c["operation"] == "UpdateEndpoint"] == [moved]
    assert out["instance_type"] == "ml.g6.xlarge" and out["endpoint_name"] == ep
    assert cloud.sm.describe_endpoint(EndpointName=ep)["EndpointConfigName"] == moved  # the update ended
    config = moved

    # destroy: adapter components, the base, the endpoint, its config, its model
    mark = cloud.mark()
    ok(cloud.run("destroy", "--auto-approve"))
    assert cloud.changes(cloud.since(mark)) == [("DeleteInferenceComponent", comp["ent-b"]), ("DeleteInferenceComponent", comp["ent-c"]),
                           ("DeleteInferenceComponent", base), ("DeleteEndpoint", ep),
                           ("DeleteEndpointConfig", config), ("DeleteModel", model)]
    assert cloud.left() == {"endpoints": [], "configs": [], "models": [], "components": []}
    assert "deployment.chat" not in cloud.state()["resources"]

    # `fastuner iam-policy` allows every call of the whole life, and every deployment call was needed
    spec = load_spec(cloud.folder / "fastuner.yaml", variables={"account": ACCOUNT}, environ={})
    scope = scope_of(spec.config)
    made = [c for c in read_call_log(cloud.call_log.read_text())
            if c["service"] not in ("iam",) and not c["operation"].startswith((
                "CreateBucket", "PutBucket", "PutPublicAccess", "GetBucket", "GetPublicAccess", "HeadBucket"))]
    coverage = covers(policy(scope), requests_of(made, scope))
    assert coverage.denied == ()
    assert not {f"sagemaker:{op}" for op in (
        "CreateModel", "CreateEndpointConfig", "CreateEndpoint", "CreateInferenceComponent", "DescribeEndpoint",
        "DescribeInferenceComponent", "DeleteInferenceComponent", "DeleteEndpoint", "DeleteEndpointConfig",
        "DeleteModel", "AddTags", "DeleteTags", "UpdateInferenceComponent", "UpdateEndpoint")} & set(coverage.unused)


REAPER_SPEC = f"""\
version: 1
project: quickstart-aws
backend: {{local: {{path: state/reaper.json}}}}
provider:
  sagemaker:
    region: {REGION}
    role_arn: "arn:aws:iam::{ACCOUNT}:role/fastuner-quickstart-aws"
    bucket: fastuner-{ACCOUNT}
"""


def test_reap_from_tags_with_no_state_finds_the_expired_deployment_and_deletes_its_tree(
        cloud: DeployCloud, cli, tmp_path: Path) -> None:
    from fastuner.config.loader import load_spec
    from fastuner.providers.sagemaker.iam import covers, policy, requests_of, scope_of
    from tests.conftest import Clock

    ok(cloud.run("bootstrap", "--auto-approve"))
    cloud.write_spec(["ent-a", "ent-b"], ttl="1h")
    cloud.autofinish()
    ok(cloud.run("apply", "--auto-approve"))
    out = cloud.state()["resources"]["deployment.chat"]["outputs"]
    ep, base = out["endpoint_name"], out["base_component"]

    # elsewhere, with the project's name and region but no state: only the tags tell
    reaper = tmp_path / "reaper"
    reaper.mkdir()
    (reaper / "fastuner.yaml").write_text(REAPER_SPEC)
    log = reaper / "calls.jsonl"
    environ = {**cloud.env, "FASTUNER_AWS_CALL_LOG": str(log), "FASTUNER_SAGEMAKER_POLL": "0"}
    created = datetime.fromisoformat(out["created_at"])
    young = cli("reap", "--from-tags", "--auto-approve", cwd=reaper, clock=Clock(created + timedelta(minutes=59)),
                environ=environ)
    assert young.code == 0 and "0 past their ttl" in young.out and "Reaped" not in young.out, young.text
    assert cloud.left()["endpoints"] == [ep]

    run = cli("reap", "--from-tags", "--auto-approve", cwd=reaper, clock=Clock(created + timedelta(hours=2)),
              environ=environ)
    assert run.code == 0, run.text
    assert f"Reaped deployment.chat (endpoint {ep})" in run.out and "ttl ended" in run.out
    assert "saves $1.41/h" in run.out  # ml.g5.xlarge
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    [found, *_] = [c["params"] for c in calls if c["operation"] == "GetResources"]
    assert found["TagFilters"] == [{"Key": "fastuner:project", "Values": ["quickstart-aws"]}]
    assert cloud.changes(calls) == [
        ("DeleteInferenceComponent", out["components"]["ent-a"]), ("DeleteInferenceComponent", out["components"]["ent-b"]),
        ("DeleteInferenceComponent", base), ("DeleteEndpoint", ep),
        ("DeleteEndpointConfig", out["endpoint_config_name"]), ("DeleteModel", out["model_name"])]
    assert cloud.left() == {"endpoints": [], "configs": [], "models": [], "components": []}
    assert not (reaper / "state").exists()  # no state was made up
    scope = scope_of(load_spec(reaper / "fastuner.yaml", resources=False, environ={}).config)
    assert covers(policy(scope), requests_of(calls, scope)).denied == ()
