"""Fixtures for the AWS tests: moto in process, fake credentials handed in (never the process's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ACCOUNT = "123456789012"  # moto's account
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_MAX_ATTEMPTS": "2"}

SPEC = f"""\
version: 1
project: demo
backend: {{s3: {{bucket: demo-state, key: fastuner/demo.json, region: us-east-1}}}}
provider:
  sagemaker:
    region: eu-west-1
    role_arn: "arn:aws:iam::{ACCOUNT}:role/fastuner-demo"
    bucket: demo-artifacts
    prefix: fastuner
"""


@pytest.fixture
def aws() -> Iterator[None]:
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """What the CLI reads instead of os.environ: fake credentials and a call log."""
    return {**FAKE_CREDENTIALS, "FASTUNER_AWS_CALL_LOG": str(tmp_path / "calls.jsonl")}


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    (tmp_path / "fastuner.yaml").write_text(SPEC)
    return tmp_path
