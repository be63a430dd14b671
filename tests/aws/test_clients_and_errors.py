"""fastuner/aws: one session honouring the environment it is handed, every call observable, and every
AWS failure worded as what to do."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from botocore.stub import Stubber
from moto import mock_aws

from fastuner.aws.clients import AwsSession, endpoint_url, iam_action
from fastuner.aws.errors import AwsError, aws_errors, explain
from fastuner.aws.names import check_bucket, check_key, check_sagemaker_name
from fastuner.errors import UserError

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def client_error(code: str, message: str, operation: str = "CreateTrainingJob", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def test_the_session_uses_the_handed_environment_not_the_process_one(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://process.invalid")
    session = AwsSession(None, environ={**ENV, "AWS_REGION": "eu-west-3", "AWS_MAX_ATTEMPTS": "3",
                                        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"})
    s3 = session.client("s3")
    assert session.region == "eu-west-3"
    assert s3.meta.endpoint_url == "http://127.0.0.1:9"
    assert s3.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 3}
    assert session.client("s3") is s3  # made once
    assert endpoint_url("sagemaker-runtime", {"AWS_ENDPOINT_URL": "http://a"}) == "http://a"
    assert endpoint_url("sagemaker-runtime", {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": "http://b"}) == "http://b"


def test_no_region_and_an_unknown_profile_are_explained() -> None:
    with pytest.raises(AwsError, match="no AWS region is set"):
        _ = AwsSession(None, environ={**ENV, "AWS_CONFIG_FILE": "/nonexistent"}).region
    with pytest.raises(AwsError, match="the AWS profile 'nobody' is not in your AWS config") as info:
        _ = AwsSession("us-east-1", environ={"AWS_PROFILE": "nobody", "AWS_CONFIG_FILE": "/nonexistent"}).session
    assert "aws configure list-profiles" in info.value.hint


def test_every_call_is_observed_as_sent_and_logged_to_the_call_log(tmp_path) -> None:
    log = tmp_path / "calls.jsonl"
    with mock_aws():
        session = AwsSession("us-east-1", environ={**ENV, "FASTUNER_AWS_CALL_LOG": str(log)})
        seen = []
        session.observe(seen.append)
        s3 = session.client("s3")
        s3.create_bucket(Bucket="calls-bucket")
        s3.put_object(Bucket="calls-bucket", Key="k", Body=b"abc", IfNoneMatch="*")
    assert [c["operation"] for c in seen] == ["CreateBucket", "PutObject"]
    assert seen[1]["params"]["IfNoneMatch"] == "*"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(c["action"], c["params"].get("Key")) for c in lines] == [("s3:CreateBucket", None), ("s3:PutObject", "k")]
    assert lines[1]["params"]["Body"] == "<3 bytes>"


def test_iam_actions_of_calls_whose_names_differ_from_their_action() -> None:
    assert iam_action({"service": "s3", "signing_name": "s3", "operation": "HeadObject"}) == "s3:GetObject"
    assert iam_action({"service": "s3", "operation": "ListObjectsV2"}) == "s3:ListBucket"
    assert iam_action({"service": "sagemaker", "operation": "CreateTrainingJob"}) == "sagemaker:CreateTrainingJob"


@pytest.mark.parametrize(("error", "summary", "hint"), [
    (NoCredentialsError(), "no AWS credentials were found", "aws configure"),
    (EndpointConnectionError(endpoint_url="http://x"), "cannot reach AWS at http://x", "AWS_ENDPOINT_URL"),
    (client_error("AccessDeniedException", "User: arn:aws:sts::1:assumed-role/ci/x is not authorized to perform: "
                  "sagemaker:CreateTrainingJob on resource: arn:aws:sagemaker:us-east-1:1:training-job/p-ad-x "
                  "because no identity-based policy allows the sagemaker:CreateTrainingJob action"),
     "access denied: sagemaker:CreateTrainingJob on arn:aws:sagemaker:us-east-1:1:training-job/p-ad-x",
     "fastuner iam-policy"),
    (client_error("AccessDenied", "Access Denied", "PutObject", 403), "access denied: s3:PutObject", "Allow s3:PutObject"),
    (client_error("ResourceLimitExceeded", "The account-level service limit 'ml.g5.2xlarge for training job usage' "
                  "is 0 Instances, with current utilization of 0 Instances and a request delta of 1 Instances."),
     "an AWS quota is too low: ml.g5.2xlarge for training job usage", "Service Quotas"),
    (client_error("ValidationException", "Instance type ml.p5.48xlarge is not supported in region eu-north-1"),
     "ml.p5.48xlarge is not offered here", "another region"),
    (client_error("NoSuchBucket", "The specified bucket does not exist", "PutObject", 404),
     "the S3 bucket does not exist", "fastuner bootstrap"),
    (client_error("AccessDeniedException", "User: arn:aws:iam::1:user/dev is not authorized to perform: iam:PassRole "
                  "on resource: arn:aws:iam::1:role/fastuner-exec"),
     "you may not pass arn:aws:iam::1:role/fastuner-exec to SageMaker", "iam:PassRole"),
    (client_error("ThrottlingException", "Rate exceeded", "DescribeTrainingJob"),
     "AWS kept throttling DescribeTrainingJob after the retries", "AWS_MAX_ATTEMPTS"),
    (client_error("ExpiredTokenException", "The security token included in the request is expired"),
     "AWS did not accept the credentials", "refresh them"),
])
def test_aws_failures_are_worded_as_what_to_do(error, summary, hint) -> None:
    explained = explain(error)
    assert summary in explained.message and hint in explained.hint
    assert isinstance(explained, UserError)  # the CLI prints it as a diagnostic: no traceback


def test_a_missing_bucket_names_it_when_s3_says_which() -> None:
    error = ClientError({"Error": {"Code": "NoSuchBucket", "Message": "The specified bucket does not exist",
                                   "BucketName": "team-data"}}, "PutObject")
    assert explain(error).message == "the S3 bucket team-data does not exist"


def test_a_throttling_storm_ends_in_the_mapped_error_after_the_retries() -> None:
    session = AwsSession("us-east-1", environ={**ENV, "AWS_MAX_ATTEMPTS": "1"})
    sm = session.client("sagemaker")
    with Stubber(sm) as stub:
        stub.add_client_error("describe_training_job", "ThrottlingException", "Rate exceeded", 400,
                              expected_params={"TrainingJobName": "p-ad-x"})
        with pytest.raises(AwsError, match="AWS kept throttling DescribeTrainingJob"), aws_errors():
            sm.describe_training_job(TrainingJobName="p-ad-x")


def test_names_are_checked_before_any_call() -> None:
    assert check_sagemaker_name("skyrim-ad-entities-1a2b3c4d") == "skyrim-ad-entities-1a2b3c4d"
    with pytest.raises(UserError, match="64 characters long"):
        check_sagemaker_name("a" * 64, "training job name")
    with pytest.raises(UserError, match="is not valid"):
        check_sagemaker_name("bad_name")
    with pytest.raises(UserError, match="not a valid S3 bucket name"):
        check_bucket("Team_Bucket")
    with pytest.raises(UserError, match="is not valid"):
        check_key("/abs/key")
    assert check_key("fastuner/skyrim.json") == "fastuner/skyrim.json"
