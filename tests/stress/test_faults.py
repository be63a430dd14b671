"""The faults category in the normal suite: the injector itself (each kind, as fastuner's clients meet
it), and a trial or two of the scenarios of tests/stress/faults.py (the full run: `python -m tests.stress
faults --trials 100`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from moto import mock_aws

from fastuner.aws.clients import AwsSession
from fastuner.aws.errors import explain
from tests.stress import faults, localfaults
from tests.stress.inject import FaultPlan, injected

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_MAX_ATTEMPTS": "3"}


def test_the_plan_is_read_from_one_string_and_written_back() -> None:
    text = "share:0.2,seed:7,kinds:throttle,500,timeout,reset,ops:CreateTrainingJob,PutObject,limit:3"
    plan = FaultPlan.parse(text)
    assert plan.share == 0.2 and plan.seed == 7 and plan.limit == 3
    assert plan.kinds == ("throttle", "500", "timeout", "reset")
    assert plan.ops == {"CreateTrainingJob", "PutObject"}
    assert FaultPlan.parse(plan.to_env()) == plan
    with pytest.raises(ValueError, match="unknown kinds"):
        FaultPlan.parse("kinds:meteor")


@pytest.mark.parametrize("kind", ["throttle", "500", "timeout", "reset"])
def test_each_kind_is_retried_by_fastuners_clients(kind: str) -> None:
    with mock_aws(), injected(FaultPlan(share=1.0, kinds=(kind,), ops=frozenset({"PutObject"}), limit=2)) as inj:
        s3 = AwsSession("us-east-1", environ=ENV).client("s3")
        s3.create_bucket(Bucket="fault-test")
        s3.put_object(Bucket="fault-test", Key="k", Body=b"v")  # two faults, the third attempt goes through
        assert inj.injected == {kind: 2}
        assert s3.get_object(Bucket="fault-test", Key="k")["Body"].read() == b"v"


def test_faults_past_the_retries_are_explained() -> None:
    from botocore.exceptions import ClientError

    plan = FaultPlan(share=1.0, kinds=("quota",), ops=frozenset({"ListTrainingJobs"}),
                     quota="ml.p4d.24xlarge for training job")
    with mock_aws(), injected(plan):
        client = AwsSession("us-east-1", environ=ENV).client("sagemaker")
        with pytest.raises(ClientError) as raised:
            client.list_training_jobs()
    said = explain(raised.value)
    assert said.code == "ResourceLimitExceeded" and "ml.p4d.24xlarge for training job usage" in said.message
    assert "Service Quotas" in said.hint


def test_clients_made_before_or_after_are_left_alone() -> None:
    with mock_aws():
        with injected(FaultPlan(share=1.0, kinds=("500",))):
            pass
        s3 = AwsSession("us-east-1", environ=ENV).client("s3")
        s3.create_bucket(Bucket="fault-test")  # no fault: the injector is gone


@pytest.mark.slow
def test_a_dataset_changed_while_apply_reads_it(tmp_path: Path) -> None:
    report = localfaults.dataset_changed(1, 3, tmp_path, log=lambda _: None)
    assert report.ok, report.failures


@pytest.mark.slow
@pytest.mark.skipif(not localfaults.can_mount(), reason="mounting a tmpfs needs root")
def test_a_full_disk_and_a_read_only_state_folder(tmp_path: Path) -> None:
    for scenario in (localfaults.disk_full, localfaults.read_only_state):
        report = scenario(1, 0, tmp_path / scenario.__name__, log=lambda _: None)
        assert report.ok, report.failures


@pytest.mark.slow
def test_the_sagemaker_scenarios_once(tmp_path: Path) -> None:
    from tests.stress.faultworld import Server

    server = Server()
    try:
        reports = [faults.aws_calls(server, 1, 0, tmp_path / "aws", log=lambda _: None)]
        reports += [faults.named(name, scenario, server, 1, 0, tmp_path / name.replace(" ", "-"), log=lambda _: None)
                    for name, scenario in faults.SAGEMAKER.items()]
    finally:
        server.close()
    assert [r.failures for r in reports if not r.ok] == []
    assert all(r.faults for r in reports)
