"""`fastuner iam-policy`: least privilege, scoped to the project (tenant isolation), valid for IAM, and
comparable with a recorded call log (`covers`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fastuner.aws.clients import AwsSession, iam_action
from fastuner.config.loader import load_spec
from fastuner.errors import UserError
from fastuner.providers.sagemaker.iam import (
    EXECUTION,
    LOCK_PREFIX,
    RUNNER,
    UNSCOPED,
    Scope,
    covers,
    policy,
    read_call_log,
    requests_of,
    scope_of,
    trust_policy,
)
from tests.aws.conftest import ACCOUNT, FAKE_CREDENTIALS, SPEC

ROLE = f"arn:aws:iam::{ACCOUNT}:role/fastuner-demo"
JOBS = f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:training-job/demo-*"


def scope(text: str, tmp_path: Path) -> Scope:
    path = tmp_path / "fastuner.yaml"
    path.write_text(text)
    return scope_of(load_spec(path, resources=False, environ={}).config)


@pytest.fixture
def demo(tmp_path: Path) -> Scope:
    return scope(SPEC, tmp_path)


def statements(doc: dict) -> dict[str, dict]:
    return {s["Sid"]: s for s in doc["Statement"]}


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


# --- the documents -----------------------------------------------------------------------------


def test_every_statement_is_scoped_and_star_only_for_the_unscoped_actions(demo: Scope) -> None:
    for role in ("runner", "execution"):
        doc = policy(replace(demo, kms_key_id="1234abcd-12ab-34cd-56ef-1234567890ab", subnets=("subnet-1",),
                             security_group_ids=("sg-1",)), role)
        json.loads(json.dumps(doc))
        assert doc["Version"] == "2012-10-17"
        for s in doc["Statement"]:
            assert s["Effect"] == "Allow" and s["Sid"]
            resources = as_list(s["Resource"])
            if "*" in resources:
                assert resources == ["*"], s
                assert set(as_list(s["Action"])) <= set(UNSCOPED), f"{s['Sid']}: '*' for a scopable action"
            for r in resources:
                assert r == "*" or r.startswith("arn:aws:"), r
                assert "::demo-artifacts/" not in r or "::demo-artifacts/fastuner/" in r, r
    # and the list of unscoped actions holds only actions some grant uses
    used = {a for g in RUNNER + EXECUTION for a in g.actions}
    assert set(UNSCOPED) <= used


def test_runner_policy_is_the_projects_own(demo: Scope) -> None:
    doc = statements(policy(demo))
    assert doc["Objects"]["Resource"] == "arn:aws:s3:::demo-artifacts/fastuner/*"
    assert doc["ObjectListing"]["Condition"] == {"StringLike": {"s3:prefix": "fastuner/*"}}
    # the state of every workspace (demo.json, demo.dev.json) and its lock objects, nothing else
    assert as_list(doc["StateObjects"]["Resource"]) == ["arn:aws:s3:::demo-state/fastuner/demo.*",
                                                        f"arn:aws:s3:::demo-state/{LOCK_PREFIX}fastuner/demo.*"]
    assert doc["StateListing"]["Condition"]["StringLike"]["s3:prefix"] == [
        "fastuner/demo.*", f"{LOCK_PREFIX}fastuner/demo.*"]
    # tenant isolation: created tagged with the project, existing jobs only if tagged with it
    create = doc["CreateTrainingJobs"]
    assert create["Resource"] == JOBS
    assert set(as_list(create["Action"])) == {"sagemaker:CreateTrainingJob", "sagemaker:AddTags"}
    assert create["Condition"]["StringEquals"] == {"aws:RequestTag/fastuner:project": "demo"}
    assert create["Condition"]["ForAnyValue:StringEquals"] == {"aws:TagKeys": "fastuner:project"}
    manage = doc["ManageTrainingJobs"]
    assert "sagemaker:StopTrainingJob" in manage["Action"] and manage["Resource"] == JOBS
    assert manage["Condition"]["StringEquals"] == {"aws:ResourceTag/fastuner:project": "demo"}
    read = doc["ReadTrainingJobs"]
    assert read["Condition"] == {"StringEqualsIfExists": {"aws:ResourceTag/fastuner:project": "demo"}}
    for sid in ("CreateTrainingJobs", "ReadTrainingJobs", "ManageTrainingJobs"):
        assert any("fastuner:project" in json.dumps(c) for c in doc[sid]["Condition"].values())
    # PassRole: only the spec's role, only to SageMaker
    assert doc["PassExecutionRole"] == {
        "Sid": "PassExecutionRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": ROLE,
        "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}}
    logs = doc["TrainingLogStreams"]
    assert logs["Resource"] == (f"arn:aws:logs:eu-west-1:{ACCOUNT}:log-group:/aws/sagemaker/TrainingJobs"
                                ":log-stream:demo-*")
    assert "StateKey" not in doc and "ObjectKey" not in doc  # no KMS key in the spec


def test_invoking_and_metrics_stop_at_the_projects_endpoints(demo: Scope) -> None:
    doc = statements(policy(demo))
    where = f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}"
    invoke = doc["InvokeEndpoints"]
    assert invoke["Action"] == "sagemaker:InvokeEndpoint"
    assert invoke["Resource"] == [f"{where}:endpoint/demo-*", f"{where}:inference-component/demo-*"]
    assert invoke["Condition"] == {"StringEqualsIfExists": {"aws:ResourceTag/fastuner:project": "demo"}}
    assert doc["ReadEndpointsToInvoke"]["Resource"] == f"{where}:endpoint/demo-*"
    assert doc["ReadMetrics"] == {"Sid": "ReadMetrics", "Effect": "Allow", "Action": "cloudwatch:GetMetricData",
                                  "Resource": "*"}
    assert "cloudwatch:GetMetricData" in UNSCOPED


def test_reaping_deletes_only_the_projects_endpoint_trees(demo: Scope) -> None:
    doc = statements(policy(demo))
    arn = f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:"
    delete = doc["DeleteEndpointTrees"]
    assert delete["Resource"] == [arn + k + "/demo-*" for k in ("inference-component", "endpoint", "endpoint-config",
                                                                "model")]
    assert delete["Condition"] == {"StringEquals": {"aws:ResourceTag/fastuner:project": "demo"}}
    assert doc["ReadEndpointTrees"]["Condition"] == {
        "StringEqualsIfExists": {"aws:ResourceTag/fastuner:project": "demo"}}
    assert "*" not in as_list(doc["ReadEndpointTrees"]["Resource"])
    # deployments' in-place changes share reaping's statements: same resources, same tag conditions
    assert "sagemaker:UpdateEndpoint" in delete["Action"] and "UpdateEndpointTrees" not in doc
    assert "sagemaker:DescribeModel" in doc["ReadEndpointTrees"]["Action"] and "ReadModels" not in doc
    assert {s for s in doc if doc[s]["Resource"] == "*"} >= {"FindTaggedEndpoints", "ReadMetrics", "ListEndpoints"}


def test_execution_policy_reads_inputs_and_writes_outputs_only(demo: Scope) -> None:
    doc = statements(policy(demo, "execution"))
    base = "arn:aws:s3:::demo-artifacts/fastuner/"
    assert doc["ReadInputs"]["Resource"] == [base + p for p in ("datasets/*", "code/*", "config/*", "checkpoints/*")]
    assert doc["WriteOutputs"]["Resource"] == [base + "adapters/*", base + "checkpoints/*"]
    assert doc["PullImages"]["Resource"] == ["arn:aws:ecr:eu-west-1:*:repository/huggingface-pytorch-training",
                                             "arn:aws:ecr:eu-west-1:*:repository/djl-inference"]
    assert doc["ReadServedArtifacts"]["Resource"] == [base + "adapters/*", base + "serving/*"]
    assert not {"UseKey", "EncryptVolumes", "DescribeNetwork", "CreateInterfaces"} & set(doc)
    assert trust_policy()["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                                            "Action": "sts:AssumeRole"}]


def test_kms_vpc_and_a_custom_image_add_exactly_their_grants(tmp_path: Path) -> None:
    text = SPEC.replace("    prefix: fastuner\n", """\
    prefix: teams/nlp
    kms_key_id: alias/fastuner
    training_image: 111122223333.dkr.ecr.eu-west-1.amazonaws.com/my-train:1.0
    subnets: [subnet-1, subnet-2]
    security_group_ids: [sg-9]
""").replace("region: us-east-1}", "region: us-east-1, kms_key_id: arn:aws:kms:us-east-1:123456789012:key/k1}")
    s = scope(text, tmp_path)
    runner = statements(policy(s))
    assert runner["Objects"]["Resource"] == "arn:aws:s3:::demo-artifacts/teams/nlp/*"
    # a key named by an alias is matched through kms:ResourceAliases (IAM never matches alias ARNs)
    assert runner["ObjectKey"]["Resource"] == f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/*"
    assert runner["ObjectKey"]["Condition"] == {
        "StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"},
        "ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/fastuner"}}
    assert runner["StateKey"]["Resource"] == "arn:aws:kms:us-east-1:123456789012:key/k1"
    assert runner["StateKey"]["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
    execution = statements(policy(s, "execution"))
    assert execution["PullImages"]["Resource"] == ["arn:aws:ecr:eu-west-1:111122223333:repository/my-train",
                                                   "arn:aws:ecr:eu-west-1:*:repository/djl-inference"]
    assert execution["EncryptVolumes"]["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": "true"}
    assert execution["CreateInterfaces"]["Resource"] == [
        f"arn:aws:ec2:eu-west-1:{ACCOUNT}:subnet/subnet-1", f"arn:aws:ec2:eu-west-1:{ACCOUNT}:subnet/subnet-2",
        f"arn:aws:ec2:eu-west-1:{ACCOUNT}:security-group/sg-9",
        f"arn:aws:ec2:eu-west-1:{ACCOUNT}:network-interface/*"]
    assert execution["DescribeNetwork"]["Resource"] == "*"


def test_account_and_partition_come_from_role_arn(tmp_path: Path) -> None:
    s = scope(SPEC.replace(f"arn:aws:iam::{ACCOUNT}:role/fastuner-demo",
                           "arn:aws-cn:iam::210987654321:role/service-role/fastuner-demo")
              .replace("eu-west-1", "cn-north-1"), tmp_path)
    assert (s.partition, s.account) == ("aws-cn", "210987654321")
    doc = statements(policy(s))
    assert doc["CreateTrainingJobs"]["Resource"] == "arn:aws-cn:sagemaker:cn-north-1:210987654321:training-job/demo-*"
    assert doc["Objects"]["Resource"] == "arn:aws-cn:s3:::demo-artifacts/fastuner/*"
    with pytest.raises(UserError, match="is not an IAM role ARN"):
        scope(SPEC.replace(f"arn:aws:iam::{ACCOUNT}:role/fastuner-demo", "fastuner-demo"), tmp_path)


def test_a_state_only_spec_gets_only_the_state_statements(tmp_path: Path) -> None:
    s = scope("version: 1\nproject: demo\nbackend: {s3: {bucket: st, key: demo.json, region: eu-west-1}}\n", tmp_path)
    assert set(statements(policy(s))) == {"StateObjects", "StateListing"}
    with pytest.raises(UserError, match="does not use SageMaker"):
        policy(s, "execution")
    with pytest.raises(UserError, match="no AWS calls"):
        policy(scope("version: 1\nproject: demo\n", tmp_path))


def test_the_documents_are_valid_iam_policies(demo: Scope, aws) -> None:
    """IAM's own syntax check (moto validates policy documents like IAM): every document, with all
    optional grants, within the 6,144 characters of a managed policy (inline ones may have 10,240)."""
    import boto3

    iam = boto3.client("iam", region_name="us-east-1")
    full = replace(demo, kms_key_id="alias/k", state_kms_key_id="k2", subnets=("subnet-1",),
                   security_group_ids=("sg-1",))
    for role in ("runner", "execution"):
        doc = policy(full, role)
        assert len(json.dumps(doc, separators=(",", ":"))) < 6144
        iam.create_policy(PolicyName=f"fastuner-{role}", PolicyDocument=json.dumps(doc))
    iam.create_role(RoleName="r", AssumeRolePolicyDocument=json.dumps(trust_policy()))


# --- the IAM action of a recorded call -----------------------------------------------------------


@pytest.mark.parametrize(("call", "action"), [
    ({"service": "s3", "operation": "HeadObject", "params": {"Bucket": "b", "Key": "k"}}, "s3:GetObject"),
    ({"service": "s3", "operation": "GetObject", "params": {"Bucket": "b", "Key": "k", "VersionId": "v"}},
     "s3:GetObjectVersion"),
    ({"service": "s3", "operation": "HeadObject", "params": {"VersionId": "v"}}, "s3:GetObjectVersion"),
    ({"service": "s3", "operation": "DeleteObject", "params": {"VersionId": "v"}}, "s3:DeleteObjectVersion"),
    ({"service": "s3", "operation": "ListObjectVersions", "params": {}}, "s3:ListBucketVersions"),
    ({"service": "s3", "operation": "UploadPart", "params": {}}, "s3:PutObject"),
    ({"service": "s3", "operation": "ListParts", "params": {}}, "s3:ListMultipartUploadParts"),
    ({"service": "s3", "operation": "PutBucketLifecycleConfiguration", "params": {}}, "s3:PutLifecycleConfiguration"),
    ({"service": "cloudwatch", "signing_name": "monitoring", "operation": "GetMetricData"}, "cloudwatch:GetMetricData"),
    ({"service": "resourcegroupstaggingapi", "signing_name": "tagging", "operation": "GetResources"},
     "tag:GetResources"),
    ({"service": "resourcegroupstaggingapi", "operation": "GetResources"}, "tag:GetResources"),
    ({"service": "sagemaker-runtime", "signing_name": "sagemaker", "operation": "InvokeEndpoint"},
     "sagemaker:InvokeEndpoint"),
    ({"service": "logs", "signing_name": "logs", "operation": "GetLogEvents"}, "logs:GetLogEvents"),
])
def test_iam_action_of_a_call(call: dict, action: str) -> None:
    assert iam_action(call) == action


def test_recorded_calls_name_their_iam_actions(aws) -> None:
    """Calls as AwsSession records them (botocore's service model gives the signing name)."""
    session = AwsSession("eu-west-1", environ=FAKE_CREDENTIALS)
    calls: list[dict] = []
    session.observe(calls.append)
    session.client("s3").create_bucket(Bucket="bkt", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    session.client("s3").list_objects_v2(Bucket="bkt", Prefix="fastuner/")
    session.client("cloudwatch").list_metrics(Namespace="AWS/SageMaker")
    session.client("resourcegroupstaggingapi").get_resources(TagFilters=[{"Key": "fastuner:project"}])
    assert [iam_action(c) for c in calls] == ["s3:CreateBucket", "s3:ListBucket", "cloudwatch:ListMetrics",
                                              "tag:GetResources"]


# --- covers(): a policy against what fastuner did --------------------------------------------------


def train_call(name: str = "demo-adapter-1a2b", project: str = "demo", role: str = ROLE) -> dict:
    return {"service": "sagemaker", "signing_name": "sagemaker", "operation": "CreateTrainingJob",
            "params": {"TrainingJobName": name, "RoleArn": role,
                       "Tags": [{"Key": "fastuner:project", "Value": project},
                                {"Key": "fastuner:address", "Value": "adapter.x"}]}}


def s3_call(operation: str, bucket: str = "demo-artifacts", **params) -> dict:
    return {"service": "s3", "signing_name": "s3", "operation": operation, "params": {"Bucket": bucket, **params}}


def sm_call(operation: str, **params) -> dict:
    return {"service": "sagemaker", "signing_name": "sagemaker", "operation": operation, "params": params}


def logs_call(operation: str, **params) -> dict:
    return {"service": "logs", "signing_name": "logs", "operation": operation, "params": params}


DEPLOY_TAGS = [{"Key": "fastuner:project", "Value": "demo"}, {"Key": "fastuner:address", "Value": "deployment.api"}]
ENDPOINT = f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:endpoint/demo-ep-api-1a2b"


def full_run() -> list[dict]:
    """A hand-made log of everything the runner's policy allows, each used once, as fastuner calls it."""
    return [
        s3_call("HeadObject", "demo-state", Key="fastuner/demo.json"),
        s3_call("GetObject", "demo-state", Key="fastuner/demo.dev.json", VersionId="v1"),
        s3_call("PutObject", "demo-state", Key=f"{LOCK_PREFIX}fastuner/demo.json.lock", IfNoneMatch="*"),
        s3_call("DeleteObject", "demo-state", Key=f"{LOCK_PREFIX}fastuner/demo.json.lock"),
        s3_call("ListObjectVersions", "demo-state", Prefix="fastuner/demo.json"),
        s3_call("ListObjectsV2", "demo-state", Prefix="fastuner/demo.json"),
        s3_call("HeadObject", Key="fastuner/datasets/ab12/data.jsonl"),
        s3_call("CreateMultipartUpload", Key="fastuner/datasets/ab12/data.jsonl"),
        s3_call("AbortMultipartUpload", Key="fastuner/datasets/ab12/data.jsonl", UploadId="u"),
        s3_call("DeleteObjects", Delete={"Objects": [{"Key": "fastuner/datasets/ab12/data.jsonl"},
                                                     {"Key": "fastuner/config/cd34/config.json"}]}),
        s3_call("ListObjectsV2", Prefix="fastuner/adapters/"),
        train_call(),
        sm_call("DescribeTrainingJob", TrainingJobName="demo-adapter-1a2b"),
        sm_call("ListTrainingJobs", NameContains="demo-"),
        sm_call("StopTrainingJob", TrainingJobName="Demo-Adapter-1a2b"),
        sm_call("DeleteTrainingJob", TrainingJobName="demo-adapter-1a2b"),
        sm_call("ListTags", ResourceArn=JOBS.replace("*", "adapter-1a2b")),
        sm_call("DeleteTags", ResourceArn=JOBS.replace("*", "adapter-1a2b"), TagKeys=["fastuner:expires"]),
        logs_call("DescribeLogStreams", logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix="demo-a"),
        logs_call("GetLogEvents", logGroupName="/aws/sagemaker/TrainingJobs",
                  logStreamName="demo-adapter-1a2b/algo-1-1700000000"),
        sm_call("DescribeEndpoint", EndpointName="demo-ep-api-1a2b3c4d"),
        {"service": "sagemaker-runtime", "signing_name": "sagemaker", "operation": "InvokeEndpoint",
         "params": {"EndpointName": "demo-ep-api-1a2b3c4d", "InferenceComponentName": "demo-ep-api-1a2b3c4d-a1",
                    "Body": b"{}"}},
        {"service": "cloudwatch", "signing_name": "monitoring", "operation": "GetMetricData",
         "params": {"MetricDataQueries": []}},
        # reaping by tags
        {"service": "resourcegroupstaggingapi", "signing_name": "tagging", "operation": "GetResources",
         "params": {"TagFilters": [{"Key": "fastuner:project", "Values": ["demo"]}]}},
        sm_call("ListEndpoints", NameContains="demo-"),
        sm_call("ListInferenceComponents", EndpointNameEquals="demo-ep-api-1a2b"),
        sm_call("DescribeEndpoint", EndpointName="demo-ep-api-1a2b"),
        sm_call("DescribeEndpointConfig", EndpointConfigName="demo-ep-api-1a2b"),
        sm_call("DescribeInferenceComponent", InferenceComponentName="demo-ep-api-1a2b-base"),
        sm_call("DeleteInferenceComponent", InferenceComponentName="demo-ep-api-1a2b-base"),
        sm_call("DeleteEndpoint", EndpointName="demo-ep-api-1a2b"),
        sm_call("DeleteEndpointConfig", EndpointConfigName="demo-ep-api-1a2b"),
        sm_call("DeleteModel", ModelName="demo-ep-api-1a2b"),
        # deployments: born tagged, updated in place, retagged
        sm_call("CreateModel", ModelName="demo-ep-api-1a2b-m1", ExecutionRoleArn=ROLE, Tags=DEPLOY_TAGS),
        sm_call("DescribeModel", ModelName="demo-ep-api-1a2b-m1"),
        sm_call("CreateEndpointConfig", EndpointConfigName="demo-ep-api-1a2b-c1", ExecutionRoleArn=ROLE,
                Tags=DEPLOY_TAGS),
        sm_call("CreateEndpoint", EndpointName="demo-ep-api-1a2b", EndpointConfigName="demo-ep-api-1a2b-c1",
                Tags=DEPLOY_TAGS),
        sm_call("CreateInferenceComponent", InferenceComponentName="demo-ep-api-1a2b-base",
                EndpointName="demo-ep-api-1a2b", Tags=DEPLOY_TAGS),
        sm_call("UpdateEndpoint", EndpointName="demo-ep-api-1a2b", EndpointConfigName="demo-ep-api-1a2b-c2"),
        sm_call("UpdateInferenceComponent", InferenceComponentName="demo-ep-api-1a2b-a-x"),
        sm_call("UpdateInferenceComponentRuntimeConfig", InferenceComponentName="demo-ep-api-1a2b-base"),
        sm_call("DeleteTags", ResourceArn=ENDPOINT, TagKeys=["fastuner:expires-at"]),
        sm_call("AddTags", ResourceArn=ENDPOINT, Tags=[{"Key": "fastuner:expires-at", "Value": "2026-12-08T00:00:00"}]),
    ]


def test_covers_a_run_that_uses_exactly_the_policy(demo: Scope) -> None:
    coverage = covers(policy(demo), requests_of(full_run(), demo))
    assert coverage.denied == () and coverage.unused == () and coverage.exact


def test_covers_names_what_was_never_used(demo: Scope) -> None:
    calls = [c for c in full_run() if c["operation"] not in ("StopTrainingJob", "DescribeLogStreams")]
    coverage = covers(policy(demo), requests_of(calls, demo))
    assert coverage.denied == ()
    assert coverage.unused == ("logs:DescribeLogStreams", "sagemaker:StopTrainingJob")
    # bare actions work too (no resources, no conditions checked)
    assert covers(policy(demo), ["s3:GetObject", "ec2:RunInstances"]).denied == ("ec2:RunInstances",)


@pytest.mark.parametrize(("call", "denied"), [
    (s3_call("PutObject", Key="other-team/datasets/x"), "s3:PutObject on arn:aws:s3:::demo-artifacts/other-team/datasets/x"),
    (s3_call("PutObject", "demo-state", Key="fastuner/demo-other.json"),
     "s3:PutObject on arn:aws:s3:::demo-state/fastuner/demo-other.json"),
    (s3_call("ListObjectsV2"), "s3:ListBucket on arn:aws:s3:::demo-artifacts"),  # no prefix: the whole bucket
    (s3_call("ListObjectsV2", Prefix="other/"), "s3:ListBucket on arn:aws:s3:::demo-artifacts"),
    (s3_call("GetObject", Key="fastuner/x", VersionId="v"), "s3:GetObjectVersion on arn:aws:s3:::demo-artifacts/fastuner/x"),
    (train_call(name="other-adapter"), f"sagemaker:CreateTrainingJob on {JOBS.replace('demo-*', 'other-adapter')}"),
    (train_call(project="other"), f"sagemaker:CreateTrainingJob on {JOBS.replace('*', 'adapter-1a2b')}"),
    (train_call(role=f"arn:aws:iam::{ACCOUNT}:role/admin"), f"iam:PassRole on arn:aws:iam::{ACCOUNT}:role/admin"),
    (sm_call("StopTrainingJob", TrainingJobName="other-job"), f"sagemaker:StopTrainingJob on {JOBS.replace('demo-*', 'other-job')}"),
    (logs_call("GetLogEvents", logGroupName="/aws/sagemaker/TrainingJobs", logStreamName="other/algo-1"),
     "logs:GetLogEvents on arn:aws:logs:eu-west-1:123456789012:log-group:/aws/sagemaker/TrainingJobs:log-stream:other/algo-1"),
    (sm_call("CreateEndpoint", EndpointName="demo-api"),  # untagged
     f"sagemaker:CreateEndpoint on arn:aws:sagemaker:eu-west-1:{ACCOUNT}:endpoint/demo-api"),
    (sm_call("CreateEndpoint", EndpointName="other-api", Tags=DEPLOY_TAGS),
     f"sagemaker:CreateEndpoint on arn:aws:sagemaker:eu-west-1:{ACCOUNT}:endpoint/other-api"),
    (sm_call("CreateModel", ModelName="demo-m", ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/admin", Tags=DEPLOY_TAGS),
     f"iam:PassRole on arn:aws:iam::{ACCOUNT}:role/admin"),
])
def test_covers_catches_what_the_policy_refuses(demo: Scope, call: dict, denied: str) -> None:
    coverage = covers(policy(demo), requests_of([call], demo))
    assert denied in coverage.denied and not coverage.exact


def test_an_untagged_create_is_refused(demo: Scope) -> None:
    call = train_call()
    call["params"]["Tags"] = [{"Key": "team", "Value": "demo"}]
    assert covers(policy(demo), requests_of([call], demo)).denied == (
        f"sagemaker:CreateTrainingJob on {JOBS.replace('*', 'adapter-1a2b')}",
        f"sagemaker:AddTags on {JOBS.replace('*', 'adapter-1a2b')}")


def test_covers_reads_a_call_log_file(demo: Scope, tmp_path: Path, aws) -> None:
    """The JSON lines FASTUNER_AWS_CALL_LOG writes, read back and compared."""
    log = tmp_path / "calls.jsonl"
    session = AwsSession("eu-west-1", environ={**FAKE_CREDENTIALS, "FASTUNER_AWS_CALL_LOG": str(log)})
    s3 = session.client("s3")
    s3.create_bucket(Bucket="demo-artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket="demo-artifacts", Key="fastuner/code/ab/sourcedir.tar.gz", Body=b"x")
    s3.list_objects_v2(Bucket="demo-artifacts", Prefix="fastuner/code/")
    coverage = covers(policy(demo), requests_of(read_call_log(log.read_text()), demo))
    assert coverage.denied == ("s3:CreateBucket on arn:aws:s3:::demo-artifacts",)  # bootstrap's, not the runner's
    assert "s3:PutObject" not in coverage.unused and "s3:ListBucket" not in coverage.unused


# --- the command -------------------------------------------------------------------------------


def test_iam_policy_command_prints_the_documents(spec_dir: Path, cli, demo: Scope) -> None:
    run = cli("iam-policy", cwd=spec_dir, environ={})
    assert run.code == 0, run.text
    assert json.loads(run.out) == policy(demo)
    assert "put-role-policy" in run.err and "--policy-name fastuner-demo" in run.err
    run = cli("iam-policy", "--role", "execution", environ={})
    assert run.code == 0 and json.loads(run.out) == policy(demo, "execution")
    run = cli("iam-policy", "--role", "execution", "--trust", environ={})
    assert run.code == 0 and json.loads(run.out) == trust_policy()
    run = cli("iam-policy", "--trust", environ={})
    assert run.code == 1 and "--trust is for --role execution" in run.err and "Traceback" not in run.text
    (spec_dir / "fastuner.yaml").write_text("version: 1\nproject: demo\n")
    run = cli("iam-policy", environ={})
    assert run.code == 1 and "needs no AWS permissions" in run.err and run.out == ""
