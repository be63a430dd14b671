"""`fastuner bootstrap`: buckets and the execution role made idempotently (a second run writes nothing),
existing settings kept where they already fit, nothing deleted, AWS refusals explained."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from fastuner.aws.clients import AwsSession
from fastuner.aws.errors import AwsError
from fastuner.config.loader import load_spec
from fastuner.providers.sagemaker.bootstrap import (
    LOCK_RULE_ID,
    UPLOADS_RULE_ID,
    Change,
    changes,
    plan_bootstrap,
    wanted,
)
from fastuner.providers.sagemaker.iam import LOCK_PREFIX, Scope, policy, scope_of, trust_policy
from tests.aws.conftest import ACCOUNT, FAKE_CREDENTIALS, SPEC

READS = ("Get", "Head", "List")


class Recorder:
    """AWS sessions by region, every call they send recorded (what fastuner SENT, not what moto kept)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.sessions: dict[str, AwsSession] = {}

    def __call__(self, region: str) -> AwsSession:
        if region not in self.sessions:
            session = self.sessions[region] = AwsSession(region or "us-east-1", environ=FAKE_CREDENTIALS)
            session.observe(self.calls.append)
        return self.sessions[region]

    def writes(self) -> list[str]:
        return [c["operation"] for c in self.calls if not c["operation"].startswith(READS)]

    def sent(self, operation: str) -> list[dict]:
        return [c["params"] for c in self.calls if c["operation"] == operation]


def demo_scope(tmp_path: Path, text: str = SPEC) -> Scope:
    (tmp_path / "fastuner.yaml").write_text(text)
    return scope_of(load_spec(tmp_path / "fastuner.yaml", resources=False, environ={}).config)


def bootstrap(scope: Scope, recorder: Recorder, role_name: str | None = None):
    want = wanted(scope, role_name)
    steps = plan_bootstrap(recorder, want)
    for step in steps:
        step.run()
    return steps, want


def table(steps) -> list[tuple[str, str, str]]:
    return [(s.subject, s.setting, s.change.value) for s in steps]


def test_bootstrap_twice_creates_then_writes_nothing(tmp_path: Path, aws) -> None:
    scope = demo_scope(tmp_path)
    first = Recorder()
    steps, want = bootstrap(scope, first)
    assert want.notes == []
    assert table(steps) == [
        ("s3://demo-artifacts", "bucket", "created"),
        ("s3://demo-artifacts", "versioning", "created"),
        ("s3://demo-artifacts", "encryption (SSE-S3)", "created"),
        ("s3://demo-artifacts", "public access block", "created"),
        ("s3://demo-artifacts", "lifecycle rules", "created"),
        ("s3://demo-state", "bucket", "created"),
        ("s3://demo-state", "versioning", "created"),
        ("s3://demo-state", "encryption (SSE-S3)", "created"),
        ("s3://demo-state", "public access block", "created"),
        ("s3://demo-state", "lifecycle rules", "created"),
        ("iam role fastuner-demo", "role", "created"),
        ("iam role fastuner-demo", "policy fastuner-demo", "created"),
    ]
    # each bucket in its region: a LocationConstraint outside us-east-1 only
    assert first.sent("CreateBucket") == [
        {"Bucket": "demo-artifacts", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}},
        {"Bucket": "demo-state"}]
    assert first.sent("PutBucketEncryption")[0]["ServerSideEncryptionConfiguration"] == {
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
    [role] = first.sent("CreateRole")
    assert json.loads(role["AssumeRolePolicyDocument"]) == trust_policy()
    assert role["Tags"] == [{"Key": "fastuner:project", "Value": "demo"}]
    [put] = first.sent("PutRolePolicy")
    assert put["RoleName"] == "fastuner-demo" and json.loads(put["PolicyDocument"]) == policy(scope, "execution")

    # what the buckets now hold
    for name, region in (("demo-artifacts", "eu-west-1"), ("demo-state", "us-east-1")):
        s3 = boto3.client("s3", region_name=region)
        assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
        block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        assert all(block[k] for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                                      "RestrictPublicBuckets"))
        rule = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    artifacts = boto3.client("s3", region_name="eu-west-1").get_bucket_lifecycle_configuration(Bucket="demo-artifacts")
    assert [(r["ID"], r["Filter"], r["AbortIncompleteMultipartUpload"]) for r in artifacts["Rules"]] == [
        (UPLOADS_RULE_ID, {"Prefix": "fastuner/"}, {"DaysAfterInitiation": 7})]
    state = boto3.client("s3", region_name="us-east-1").get_bucket_lifecycle_configuration(Bucket="demo-state")
    [locks] = state["Rules"]
    assert (locks["ID"], locks["Filter"], locks["NoncurrentVersionExpiration"]) == (
        LOCK_RULE_ID, {"Prefix": LOCK_PREFIX}, {"NoncurrentDays": 1})
    assert boto3.client("iam").get_role(RoleName="fastuner-demo")["Role"]["AssumeRolePolicyDocument"] == trust_policy()

    second = Recorder()
    steps, _ = bootstrap(scope, second)
    assert second.writes() == []
    assert {s.change for s in steps} == {Change.NONE} and changes(steps) == []
    assert len(steps) == 13  # the role's trust policy is read (and reported) once the role exists


def test_one_bucket_for_state_and_objects_gets_both_rules(tmp_path: Path, aws) -> None:
    scope = demo_scope(tmp_path, SPEC.replace("bucket: demo-state", "bucket: demo-artifacts")
                       .replace("region: us-east-1", "region: eu-west-1"))
    steps, _ = bootstrap(scope, Recorder())
    assert [s.subject for s in steps if s.setting == "bucket"] == ["s3://demo-artifacts"]
    rules = boto3.client("s3", region_name="eu-west-1").get_bucket_lifecycle_configuration(Bucket="demo-artifacts")
    assert [r["ID"] for r in rules["Rules"]] == [LOCK_RULE_ID, UPLOADS_RULE_ID]


def test_an_existing_bucket_keeps_its_foreign_rules_and_gets_only_what_differs(tmp_path: Path, aws) -> None:
    scope = demo_scope(tmp_path)
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="demo-artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_bucket_versioning(Bucket="demo-artifacts", VersioningConfiguration={"Status": "Suspended"})
    s3.put_bucket_encryption(Bucket="demo-artifacts", ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "k0"}}]})
    foreign = {"ID": "archive-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 30}}
    stale = {"ID": UPLOADS_RULE_ID, "Status": "Enabled", "Filter": {"Prefix": "fastuner/"},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 30}}
    s3.put_bucket_lifecycle_configuration(Bucket="demo-artifacts", LifecycleConfiguration={"Rules": [foreign, stale]})
    recorder = Recorder()
    steps, _ = bootstrap(scope, recorder)
    got = {s.setting: (s.change.value, s.detail) for s in steps if s.subject == "s3://demo-artifacts"}
    assert got == {
        "bucket": ("already as wanted", "eu-west-1"),
        "versioning": ("updated", "was suspended"),
        "encryption (SSE-S3)": ("already as wanted", "aws:kms k0"),  # a KMS default is kept, not weakened
        "public access block": ("created", ""),
        "lifecycle rules": ("updated", f"{UPLOADS_RULE_ID} (keeping 1 other rule)"),
    }
    [put] = [p for p in recorder.sent("PutBucketLifecycleConfiguration") if p["Bucket"] == "demo-artifacts"]
    assert put["LifecycleConfiguration"]["Rules"][0] == foreign  # in its place, untouched
    assert put["LifecycleConfiguration"]["Rules"][1]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert put["TransitionDefaultMinimumObjectSize"] == "all_storage_classes_128K"  # what the bucket had
    assert "PutBucketEncryption" not in [c["operation"] for c in recorder.calls if c["params"].get("Bucket")
                                         == "demo-artifacts"]
    rules = s3.get_bucket_lifecycle_configuration(Bucket="demo-artifacts")["Rules"]
    assert [r["ID"] for r in rules] == ["archive-logs", UPLOADS_RULE_ID]
    again = Recorder()
    bootstrap(scope, again)
    assert again.writes() == []


def test_a_kms_key_is_set_as_the_default_and_compared_by_any_name(tmp_path: Path, aws) -> None:
    scope = demo_scope(tmp_path, SPEC.replace("    prefix: fastuner\n", "    prefix: fastuner\n    kms_key_id: k1\n"))
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="demo-artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_bucket_encryption(Bucket="demo-artifacts", ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    recorder = Recorder()
    steps, _ = bootstrap(scope, recorder)
    [step] = [s for s in steps if s.subject == "s3://demo-artifacts" and s.setting.startswith("encryption")]
    assert (step.setting, step.change, step.detail) == ("encryption (SSE-KMS k1)", Change.UPDATE, "was SSE-S3")
    [put] = [p for p in recorder.sent("PutBucketEncryption") if p["Bucket"] == "demo-artifacts"]
    assert put["ServerSideEncryptionConfiguration"]["Rules"] == [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "k1"},
        "BucketKeyEnabled": True}]
    # AWS may answer with the key's ARN: still the same key
    s3.put_bucket_encryption(Bucket="demo-artifacts", ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                               "KMSMasterKeyID": f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/k1"}}]})
    again = Recorder()
    bootstrap(scope, again)
    assert again.writes() == []


def test_an_existing_role_is_updated_only_where_it_differs(tmp_path: Path, aws) -> None:
    scope = demo_scope(tmp_path)
    iam = boto3.client("iam")
    ec2_trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName="fastuner-demo", AssumeRolePolicyDocument=json.dumps(ec2_trust))
    iam.put_role_policy(RoleName="fastuner-demo", PolicyName="fastuner-demo", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    iam.put_role_policy(RoleName="fastuner-demo", PolicyName="someone-elses", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
    recorder = Recorder()
    steps, _ = bootstrap(scope, recorder)
    assert [(s.setting, s.change.value) for s in steps if s.subject.startswith("iam")] == [
        ("role", "already as wanted"), ("trust policy", "updated"), ("policy fastuner-demo", "updated")]
    assert "CreateRole" not in recorder.writes()
    [trust] = recorder.sent("UpdateAssumeRolePolicy")
    # the ec2 statement is kept, SageMaker's added
    assert json.loads(trust["PolicyDocument"])["Statement"] == ec2_trust["Statement"] + trust_policy()["Statement"]
    assert iam.list_role_policies(RoleName="fastuner-demo")["PolicyNames"] == ["fastuner-demo", "someone-elses"]
    again = Recorder()
    steps, _ = bootstrap(scope, again)
    assert again.writes() == [] and {s.change for s in steps} == {Change.NONE}


def test_role_name_other_than_role_arn_is_said(tmp_path: Path, aws) -> None:
    scope = demo_scope(tmp_path)
    recorder = Recorder()
    steps, want = bootstrap(scope, recorder, role_name="team-sagemaker")
    assert [s.subject for s in steps if s.setting == "role"] == ["iam role team-sagemaker"]
    assert want.notes == [f"The spec's role_arn names the role fastuner-demo, not team-sagemaker: set role_arn to "
                          f"arn:aws:iam::{ACCOUNT}:role/team-sagemaker to use the role made here."]


def test_credentials_of_another_account_are_said(tmp_path: Path, aws) -> None:
    scope = demo_scope(tmp_path, SPEC.replace(ACCOUNT, "210987654321"))
    _, want = bootstrap(scope, Recorder())
    assert any("in account 123456789012, but the spec's role_arn names account 210987654321" in n for n in want.notes)


def test_access_denied_is_explained(tmp_path: Path, aws) -> None:
    """IAM refuses CreateRole: the error names the action and resource (Stubber: moto allows everything)."""
    scope = demo_scope(tmp_path)
    recorder = Recorder()
    iam = recorder("eu-west-1").client("iam")
    stub = Stubber(iam)
    stub.add_client_error("get_role", "NoSuchEntity", "The role with name fastuner-demo cannot be found.", 404)
    stub.add_client_error("create_role", "AccessDenied",
                          f"User: arn:aws:iam::{ACCOUNT}:user/dev is not authorized to perform: iam:CreateRole on "
                          f"resource: arn:aws:iam::{ACCOUNT}:role/fastuner-demo", 403)
    with stub:
        steps = plan_bootstrap(recorder, wanted(scope))
        with pytest.raises(AwsError) as err:
            for step in steps:
                step.run()
    assert err.value.message == (f"creating the role fastuner-demo: access denied: iam:CreateRole on "
                                 f"arn:aws:iam::{ACCOUNT}:role/fastuner-demo")
    assert "fastuner iam-policy" in err.value.hint


def test_a_bucket_name_taken_elsewhere_is_explained(tmp_path: Path, aws) -> None:
    scope = demo_scope(tmp_path)
    recorder = Recorder()
    s3 = recorder("eu-west-1").client("s3")
    stub = Stubber(s3)
    stub.add_client_error("head_bucket", "403", "Forbidden", 403)
    with stub, pytest.raises(AwsError, match="the bucket demo-artifacts exists but you may not use it"):
        plan_bootstrap(recorder, wanted(scope))


# --- the command -------------------------------------------------------------------------------


def log_writes(path: Path) -> list[str]:
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return [c["operation"] for c in lines if not c["operation"].startswith(READS)]


def test_bootstrap_command_asks_then_reports_each_step(spec_dir: Path, cli, environ: dict, aws) -> None:
    log = Path(environ["FASTUNER_AWS_CALL_LOG"])
    run = cli("bootstrap", cwd=spec_dir, environ=environ)  # no terminal to confirm on: nothing is done
    assert run.code == 1 and "confirmation needed" in run.err and "Traceback" not in run.text
    assert "s3://demo-artifacts" in run.out and "will be created" in run.out
    assert log_writes(log) == []

    run = cli("bootstrap", "--auto-approve", environ=environ)
    assert run.code == 0, run.text
    lines = [line.split() for line in run.out.splitlines() if line.startswith("  ")]
    assert ["s3://demo-artifacts", "bucket", "created", "(eu-west-1)"] in lines
    assert ["s3://demo-state", "lifecycle", "rules", "created", f"({LOCK_RULE_ID})"] in lines
    assert ["iam", "role", "fastuner-demo", "policy", "fastuner-demo", "created"] in lines
    assert "Bootstrap complete! 12 created, 0 updated, 0 already as wanted." in run.out
    assert "CreateBucket" in log_writes(log)

    log.unlink()
    run = cli("bootstrap", environ=environ)  # nothing to change: no question asked
    assert run.code == 0, run.text
    assert log_writes(log) == []
    lines = [line for line in run.out.splitlines() if line.startswith("  ")]
    assert len(lines) == 13 and all(line.rstrip().endswith("already as wanted") or "already as wanted  (" in line
                                    for line in lines)
    assert "Nothing to do: everything is already as wanted." in run.out

    run = cli("bootstrap", "--json", environ=environ)
    assert run.code == 0
    report = json.loads(run.out)
    assert report["kind"] == "bootstrap" and report["format_version"] == 1
    assert {s["result"] for s in report["steps"]} == {"already as wanted"} and report["notes"] == []


def test_bootstrap_command_refusals(spec_dir: Path, cli, environ: dict) -> None:
    (spec_dir / "fastuner.yaml").write_text("version: 1\nproject: demo\n")
    run = cli("bootstrap", "--auto-approve", cwd=spec_dir, environ=environ)
    assert run.code == 1 and "nothing to bootstrap" in run.err
    (spec_dir / "fastuner.yaml").write_text(SPEC.replace(f"arn:aws:iam::{ACCOUNT}:role/fastuner-demo", "fastuner"))
    run = cli("bootstrap", "--auto-approve", environ=environ)
    assert run.code == 1 and "role_arn 'fastuner' is not an IAM role ARN" in run.err and "Traceback" not in run.text
    (spec_dir / "fastuner.yaml").write_text(
        "version: 1\nproject: demo\nbackend: {s3: {bucket: st, key: demo.json, region: eu-west-1}}\n")
    run = cli("bootstrap", "--role-name", "x", environ=environ)
    assert run.code == 1 and "--role-name: the execution role is SageMaker's" in run.err
