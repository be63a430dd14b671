"""Adapters registered at s3:// locations (a folder prefix or a SageMaker model.tar.gz), on a moto server."""

from __future__ import annotations

import json
import shutil
import tarfile

import pytest

from tests.serve.helpers import AWS, LABELS3, LABELS5, TEXTS

pytestmark = pytest.mark.slow  # starts the inference server as a process


def test_s3_adapters_are_downloaded_on_first_use(cls_server, models, reference, s3_endpoint, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=AWS["AWS_DEFAULT_REGION"],
                      aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"], aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"])
    bucket = f"artifacts-{tmp_path.name.lower().replace('_', '-')}"[:60]
    s3.create_bucket(Bucket=bucket)
    for file in models["c3"].iterdir():
        s3.upload_file(str(file), bucket, f"adapters/c3/{file.name}")
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        for file in models["c5"].iterdir():
            tar.add(file, arcname=file.name)
    s3.upload_file(str(tmp_path / "model.tar.gz"), bucket, "jobs/c5/output/model.tar.gz")
    other = shutil.copytree(models["c3"], tmp_path / "other")
    meta = json.loads((other / "fastuner.json").read_text())
    (other / "fastuner.json").write_text(json.dumps({**meta, "base_model": "org/another-model"}))
    for file in other.iterdir():
        s3.upload_file(str(file), bucket, f"adapters/other/{file.name}")

    server = cls_server
    status, added = server.request("POST", "/adapters/s3c3", {"path": f"s3://{bucket}/adapters/c3/"})
    assert status == 201 and "labels" not in added  # registered, not downloaded yet
    status, out = server.invoke({"inputs": TEXTS[0], "adapter": "s3c3"})
    assert status == 200, out
    want = reference.classify("c3", TEXTS[0], LABELS3)
    assert all(abs(out["scores"][k] - v) < 1e-5 for k, v in want.items())
    assert server.request("GET", "/adapters/s3c3")[1]["labels"] == LABELS3

    status, _ = server.request("POST", "/adapters/s3c5", {"path": f"s3://{bucket}/jobs/c5/output/model.tar.gz"})
    assert status == 201
    status, out = server.invoke({"inputs": TEXTS[1], "adapter": "s3c5"})
    assert status == 200, out
    want = reference.classify("c5", TEXTS[1], LABELS5)
    assert all(abs(out["scores"][k] - v) < 1e-5 for k, v in want.items())

    server.request("POST", "/adapters/s3gone", {"path": f"s3://{bucket}/adapters/none/"})
    status, error = server.invoke({"inputs": "x", "adapter": "s3gone"})
    assert (status, error["code"]) == (404, "adapter_download_failed") and "no objects" in error["error"]
    server.request("POST", "/adapters/s3other", {"path": f"s3://{bucket}/adapters/other"})
    status, error = server.invoke({"inputs": "x", "adapter": "s3other"})
    assert (status, error["code"]) == (409, "adapter_base_mismatch")
    for name in ("s3c3", "s3c5", "s3gone", "s3other"):
        assert server.request("DELETE", f"/adapters/{name}")[0] == 200
