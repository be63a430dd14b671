"""Datasets on the SageMaker provider (moto in process): splits stored content-addressed in S3 with
their channel URIs, never uploaded twice, refreshed with List calls, deleted sparing what state still
references; AWS failures as ProviderError with what to do; and the CLI's apply, no-op plan and destroy
on a SageMaker spec. Assertions are on the calls fastuner sent (AwsSession.observe)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fastuner.aws.errors import AwsError
from fastuner.errors import DiagnosticsError, UserError
from fastuner.plan.model import Action, Change, Reason
from fastuner.plan.observed import ObservationStatus
from fastuner.providers.base import Context, ProviderError
from fastuner.providers.sagemaker.datasets import SageMakerDatasets, UploadProgress, format_bytes
from fastuner.providers.sagemaker.errors import provider_errors
from fastuner.state.model import ResourceState
from tests.aws.moto_s3 import BUCKET, ENV, moto_s3, raw_s3
from tests.cli.helpers import intents_rows, write_jsonl

PREFIX = "team/fastuner"
ROOT = f"s3://{BUCKET}/{PREFIX}/datasets/"


@pytest.fixture
def s3():
    with moto_s3(BUCKET) as (session, calls):
        yield session, calls


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "data" / "intents.jsonl", intents_rows(200))
    return tmp_path


def change(project: Path, name: str = "intents") -> Change:
    path = project / "data" / f"{name}.jsonl"
    return Change(address=f"dataset.{name}", kind="dataset", name=name, action=Action.CREATE,
                  reason=Reason.CREATE_BECAUSE_NEW,
                  after={"path": f"data/{name}.jsonl", "task": "classification",
                         "split": {"train": 0.8, "validation": 0.1, "test": 0.1, "seed": 42},
                         "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest()})


def context(project: Path, lines: list[str] | None = None, referenced: set[str] | None = None) -> Context:
    return Context(address="dataset.intents", spec_dir=project,
                   progress=(lines.append if lines is not None else lambda _text: None),
                   referenced=lambda: set(referenced or ()))


def state_of(outputs: dict, name: str = "intents") -> ResourceState:
    return ResourceState(address=f"dataset.{name}", kind="dataset", name=name, outputs=outputs)


def created(session, project: Path, prefix: str = PREFIX) -> dict:
    datasets = SageMakerDatasets(session, BUCKET, prefix, project)
    return dict(datasets.create(change(project), context(project)).outputs)


def test_create_stores_each_split_under_its_hash_with_its_channel_uri(s3, project: Path) -> None:
    session, calls = s3
    lines: list[str] = []
    datasets = SageMakerDatasets(session, BUCKET, PREFIX, project)
    outcome = datasets.create(change(project), context(project, lines))
    outputs = outcome.outputs
    assert outputs["store"] == ROOT
    assert outputs["counts"]["distinct"] == 200
    assert set(outputs["labels"]) == {"order_status", "refund_request", "cancel_order", "account_access"}
    assert sum(s["rows"] for s in outputs["splits"].values()) == 200
    s3c = raw_s3(session)
    for name, split in outputs["splits"].items():
        assert split["key"] == f"datasets/{split['sha256']}/data.jsonl"
        assert split["uri"] == f"{ROOT}{split['sha256']}/"  # the folder: a SageMaker channel's S3Uri
        body = s3c.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{split['key']}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == split["sha256"] and len(body) == split["bytes"]
        assert body.count(b"\n") == split["rows"], name
    manifest = json.loads(s3c.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{outputs['manifest_key']}")["Body"].read())
    assert manifest["splits"]["train"]["key"] == outputs["splits"]["train"]["key"]
    assert calls.ops("PutObject") == ["PutObject"] * 4
    assert all(p["IfNoneMatch"] == "*" for p in calls.params("PutObject"))
    # each upload's progress is reported under its own name, with its own size
    assert lines[:2] == ["validating rows", f"storing splits in {ROOT}"]
    for name in ("train", "validation", "test"):
        size = format_bytes(outputs["splits"][name]["bytes"])
        assert f"uploading {name} split 100% ({size} of {size})" in lines
    assert any(line.startswith("uploading manifest 100%") for line in lines)


def test_recreating_a_stored_version_makes_only_heads_and_uploads_nothing(s3, project: Path) -> None:
    """State was lost (or another workspace stored the same version): the objects are there already."""
    session, calls = s3
    first = created(session, project)
    calls.clear()
    again = created(session, project)
    assert again == first
    assert calls.ops() == ["HeadObject"] * 4
    assert calls.writes == [] and calls.bytes_sent == 0


def test_a_large_split_goes_up_in_parts_with_throttled_progress(s3, tmp_path: Path) -> None:
    session, calls = s3
    rows = [{"input": f"message {i} " + "x" * 1000, "label": "ab"[i % 2]} for i in range(8000)]
    write_jsonl(tmp_path / "data" / "intents.jsonl", rows)
    datasets = SageMakerDatasets(session, BUCKET, PREFIX, tmp_path, part_size=1, multipart_threshold=5 << 20)
    lines: list[str] = []
    outputs = datasets.create(change(tmp_path), context(tmp_path, lines)).outputs
    train = outputs["splits"]["train"]
    assert train["bytes"] > 5 << 20
    assert len(calls.params("UploadPart")) == 2 and calls.params("CompleteMultipartUpload")[0]["IfNoneMatch"] == "*"
    uploads = [line for line in lines if line.startswith("uploading train split")]
    assert uploads[-1] == f"uploading train split 100% ({format_bytes(train['bytes'])} of {format_bytes(train['bytes'])})"
    assert len(uploads) <= 2


def test_upload_progress_is_throttled_by_step_and_time_and_always_ends() -> None:
    lines: list[str] = []
    now = [0.0]
    progress = UploadProgress(lines.append, "train split", clock=lambda: now[0])
    total = 26_700_000
    for sent in range(0, total + 1, 267_000):  # every percent, 1/8 s apart
        progress(sent, total)
        now[0] += 0.125
    assert lines[0] == "uploading train split 0% (0 B of 26.7 MB)"
    assert lines[-1] == "uploading train split 100% (26.7 MB of 26.7 MB)"
    assert "uploading train split 45% (12.0 MB of 26.7 MB)" not in lines  # the throttle skipped it
    assert len(lines) == 11  # 0, 10, ..., 90 and the end
    burst: list[str] = []
    fast = UploadProgress(burst.append, "test split", clock=lambda: 5.0)  # parts land in the same second
    for sent in (10, 50, 90, 100):
        fast(sent, 100)
    fast(100, 100)
    assert burst == ["uploading test split 10% (10 B of 100 B)", "uploading test split 100% (100 B of 100 B)"]
    assert [format_bytes(n) for n in (0, 999, 1000, 1_500, 12_000_000, 999_960_000, 3 * 10**15)] == [
        "0 B", "999 B", "1.0 kB", "1.5 kB", "12.0 MB", "1.0 GB", "3000.0 TB"]


def test_read_many_covers_fifty_datasets_with_a_list_call(s3, project: Path) -> None:
    session, calls = s3
    datasets = SageMakerDatasets(session, BUCKET, PREFIX, project)
    states = [state_of(_stored_version(datasets, f"d{i}"), f"d{i}") for i in range(50)]
    calls.clear()
    observed = datasets.read_many(states)
    assert {o.status for o in observed.values()} == {ObservationStatus.READY}
    assert set(observed) == {rs.address for rs in states}
    assert observed["dataset.d7"].outputs == states[7].outputs
    assert 1 <= len(calls) <= 2 and set(calls.ops()) == {"ListObjectsV2"}
    assert calls.params("ListObjectsV2")[0]["Prefix"] == f"{PREFIX}/datasets/"


def test_a_deleted_object_reads_as_missing(s3, project: Path) -> None:
    session, calls = s3
    outputs = created(session, project)
    raw_s3(session).delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{outputs['splits']['validation']['key']}")
    datasets = SageMakerDatasets(session, BUCKET, PREFIX, project)
    calls.clear()
    observation = datasets.read(state_of(outputs))
    assert observation.status is ObservationStatus.MISSING
    assert observation.detail == f"1 stored object(s) are gone from {ROOT}"
    assert calls.ops() == ["ListObjectsV2"]
    assert datasets.read(state_of({})).detail == "no stored version recorded"


def test_listing_jumps_over_objects_it_does_not_need(s3, project: Path) -> None:
    """Many other objects under the prefix: each page starts just before the next key wanted, so the
    calls stay within one per key wanted, and a key past a page's end is still found."""
    session, calls = s3
    datasets = SageMakerDatasets(session, BUCKET, PREFIX, project, list_page=5)
    for i in range(60):
        datasets.store.put_bytes(f"someone else's {i}\n".encode())
    states = [state_of(_stored_version(datasets, f"d{i}"), f"d{i}") for i in range(3)]
    gone = states[1].outputs["splits"]["test"]["key"]
    raw_s3(session).delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{gone}")
    calls.clear()
    observed = datasets.read_many(states)
    assert [observed[rs.address].status for rs in states] == [
        ObservationStatus.READY, ObservationStatus.MISSING, ObservationStatus.READY]
    assert 1 <= len(calls.ops("ListObjectsV2")) <= 12
    assert all(p["MaxKeys"] == 5 and p["StartAfter"] for p in calls.params("ListObjectsV2"))


def test_an_empty_page_that_says_there_is_more_is_followed(s3, project: Path) -> None:
    """moto (and S3, rarely) can answer an empty page with a continuation token: listing goes on."""
    session, calls = s3
    datasets = SageMakerDatasets(session, BUCKET, PREFIX, project)
    states = [state_of(_stored_version(datasets, f"d{i}"), f"d{i}") for i in range(2)]
    # a token moto knows, pointing past an object that sorts before every stored version
    raw_s3(session).put_object(Bucket=BUCKET, Key=f"{PREFIX}/datasets/!", Body=b"")
    token = raw_s3(session).list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/datasets/",
                                            MaxKeys=1)["NextContinuationToken"]
    answered: list[dict] = []

    def empty_page(params, **_):
        if answered:
            return None
        answered.append(params)
        from botocore.awsrequest import AWSResponse

        return AWSResponse("https://s3.test/", 200, {}, None), {
            "IsTruncated": True, "KeyCount": 0, "NextContinuationToken": token,
            "ResponseMetadata": {"HTTPStatusCode": 200}}

    session.client("s3").meta.events.register("before-call.s3.ListObjectsV2", empty_page)
    calls.clear()
    observed = datasets.read_many(states)
    assert {o.status for o in observed.values()} == {ObservationStatus.READY}
    first, second = calls.params("ListObjectsV2")
    assert "ContinuationToken" not in first and second["ContinuationToken"] == token


def test_delete_spares_keys_state_still_references(s3, project: Path) -> None:
    session, calls = s3
    outputs = created(session, project)
    train = outputs["splits"]["train"]["key"]
    datasets = SageMakerDatasets(session, BUCKET, PREFIX, project)
    calls.clear()
    datasets.delete(state_of(outputs), context(project, referenced={train}))
    deleted = sorted(p["Key"] for p in calls.params("DeleteObject"))
    assert deleted == sorted(f"{PREFIX}/{k}" for k in
                             [outputs["manifest_key"]] + [s["key"] for s in outputs["splits"].values()]
                             if k != train)
    listed = raw_s3(session).list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", [])
    assert [o["Key"] for o in listed] == [f"{PREFIX}/{train}"]
    datasets.delete(state_of(outputs), context(project))  # again: what is gone is no error
    assert raw_s3(session).list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("KeyCount") == 0


def test_a_version_recorded_elsewhere_is_read_and_deleted_where_it_is(s3, project: Path) -> None:
    """The spec's prefix changed after the dataset was stored: state's store is the one read and cleaned."""
    session, calls = s3
    outputs = created(session, project, prefix="old/place")
    datasets = SageMakerDatasets(session, BUCKET, PREFIX, project)
    assert datasets.read(state_of(outputs)).status is ObservationStatus.READY
    assert {p["Prefix"] for p in calls.params("ListObjectsV2")} == {"old/place/datasets/"}
    datasets.delete(state_of(outputs), context(project))
    assert {p["Key"].split("/")[0] for p in calls.params("DeleteObject")} == {"old"}
    assert raw_s3(session).list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_a_version_stored_by_the_local_provider_is_missing_here_and_left_alone(s3, project: Path) -> None:
    session, calls = s3
    local = {"store": str(project / ".fastuner" / "objects"), "manifest_key": "sha256/ab/" + "ab" * 32,
             "splits": {"train": {"key": "sha256/cd/" + "cd" * 32, "rows": 1}}}
    datasets = SageMakerDatasets(session, BUCKET, PREFIX, project)
    observation = datasets.read(state_of(local))
    assert observation.status is ObservationStatus.MISSING
    assert observation.detail == f"stored at {local['store']}, not in S3 by this provider"
    datasets.delete(state_of(local), context(project))
    with pytest.raises(ProviderError, match=r"dataset\.intents's train split .* is missing"):
        datasets.read_split(state_of(local), "train")
    assert calls == []


def test_read_split_returns_the_stored_bytes(s3, project: Path) -> None:
    session, _ = s3
    outputs = created(session, project)
    datasets = SageMakerDatasets(session, BUCKET, PREFIX, project)
    test = datasets.read_split(state_of(outputs), "test")
    assert hashlib.sha256(test).hexdigest() == outputs["splits"]["test"]["sha256"]
    raw_s3(session).delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{outputs['splits']['test']['key']}")
    with pytest.raises(ProviderError, match=rf"dataset\.intents's test split \(datasets/.*\) is missing from {ROOT}") \
            as info:
        datasets.read_split(state_of(outputs), "test")
    assert info.value.hint == "Re-create it: fastuner apply --replace dataset.intents"


def test_a_missing_bucket_says_to_bootstrap(s3, project: Path) -> None:
    session, calls = s3
    datasets = SageMakerDatasets(session, "no-such-bucket-here", PREFIX, project)
    with pytest.raises(ProviderError) as info:
        datasets.create(change(project), context(project))
    assert "the S3 bucket no-such-bucket-here does not exist" in info.value.message
    assert "fastuner bootstrap" in info.value.hint
    assert calls.writes == []
    outputs = created(session, project)
    with pytest.raises(ProviderError, match="no-such-bucket-here does not exist") as info:
        datasets.read_many([state_of({**outputs, "store": datasets.store.root})])
    assert info.value.address == "dataset.intents" and "fastuner bootstrap" in info.value.hint
    # a bucket deleted with everything in it: the dataset is gone, and destroying it is no error
    datasets.delete(state_of({**outputs, "store": datasets.store.root}), context(project))


def test_a_bad_dataset_and_a_changed_file_are_explained(s3, project: Path) -> None:
    session, calls = s3
    datasets = SageMakerDatasets(session, BUCKET, PREFIX, project)
    planned = change(project)
    write_jsonl(project / "data" / "intents.jsonl", intents_rows(210))
    with pytest.raises(ProviderError, match=r"data/intents\.jsonl changed since the plan was made"):
        datasets.create(planned, context(project))
    (project / "data" / "intents.jsonl").write_text('{"input": "a"}\n')
    with pytest.raises(ProviderError, match=r"intents\.jsonl:1"):
        datasets.create(change(project), context(project))
    assert calls == []


def test_provider_errors_turns_aws_failures_into_provider_errors() -> None:
    from botocore.exceptions import ClientError, NoCredentialsError

    with pytest.raises(ProviderError) as info, provider_errors("reading s3://b/k"):
        raise AwsError("the S3 bucket b does not exist", "Create it with `fastuner bootstrap`.")
    assert (info.value.message, info.value.hint) == ("the S3 bucket b does not exist",
                                                     "Create it with `fastuner bootstrap`.")
    with pytest.raises(ProviderError) as info, provider_errors("creating the training job x"):
        raise ClientError({"Error": {"Code": "ResourceLimitExceeded", "Message": "The account-level service "
                                     "limit 'ml.g5.2xlarge for training job usage' is 0 Instances"}},
                          "CreateTrainingJob")
    assert info.value.message.startswith("creating the training job x: an AWS quota is too low: "
                                         "ml.g5.2xlarge for training job usage")
    assert "Service Quotas" in info.value.hint
    with pytest.raises(ProviderError, match="listing: no AWS credentials were found"), provider_errors("listing"):
        raise NoCredentialsError()
    with pytest.raises(ProviderError, match=r"^object k is missing"), provider_errors("reading"):
        raise DiagnosticsError.single("object k is missing", "")
    with pytest.raises(ProviderError, match=r"^bad name$"), provider_errors("reading"):
        raise UserError("bad name")
    with pytest.raises(KeyError), provider_errors("a bug"):  # anything else is a bug, untouched
        raise KeyError("x")


def _stored_version(datasets: SageMakerDatasets, name: str) -> dict:
    """The outputs of a stored dataset version (four small objects), without scanning a file."""
    store = datasets.store
    s3 = raw_s3(datasets.session)

    def put(data: bytes) -> str:
        key = store.key_for(hashlib.sha256(data).hexdigest())
        s3.put_object(Bucket=BUCKET, Key=store.object_key(key), Body=data)
        return key

    splits = {split: {"key": put(f"{name} {split}\n".encode()), "rows": 1} for split in ("train", "validation", "test")}
    for split in splits.values():
        split["uri"] = store.folder_uri(split["key"])
    return {"manifest_key": put(f"{name} manifest\n".encode()), "splits": splits, "store": store.root}


# --- the CLI on a SageMaker spec ----------------------------------------------------------------------

SPEC = f"""\
version: 1
project: demo
provider:
  sagemaker:
    region: us-east-1
    role_arn: arn:aws:iam::123456789012:role/fastuner
    bucket: {BUCKET}
    prefix: {PREFIX}
datasets:
  intents:
    path: data/intents.jsonl
    task: classification
"""


def test_apply_no_op_plan_and_destroy_through_the_cli(s3, project: Path, cli) -> None:
    session, calls = s3
    (project / "fastuner.yaml").write_text(SPEC)
    log = project / "calls.jsonl"
    environ = {**ENV, "FASTUNER_AWS_CALL_LOG": str(log)}
    run = cli("apply", "--auto-approve", cwd=project, environ=environ)
    assert run.code == 0, run.text
    assert "Apply complete! Resources: 1 created" in run.out
    state = json.loads((project / "state" / "demo.json").read_text())
    outputs = state["resources"]["dataset.intents"]["outputs"]
    assert outputs["store"] == ROOT
    assert all(s["uri"].startswith(ROOT) for s in outputs["splits"].values())
    keys = [o["Key"] for o in raw_s3(session).list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert sorted(keys) == sorted(f"{PREFIX}/{k}" for k in
                                  [outputs["manifest_key"]] + [s["key"] for s in outputs["splits"].values()])
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["action"] for c in sent].count("s3:PutObject") == 4

    log.unlink()
    run = cli("plan", "--detailed-exitcode", cwd=project, environ=environ)
    assert run.code == 0, run.text
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    assert {c["operation"] for c in sent} == {"ListObjectsV2"}  # a no-op refresh: reads only
    log.unlink()
    run = cli("apply", "--auto-approve", cwd=project, environ=environ)
    assert run.code == 0, run.text
    assert [json.loads(line)["operation"] for line in log.read_text().splitlines()] == ["ListObjectsV2"]

    run = cli("destroy", "--auto-approve", cwd=project, environ=environ)
    assert run.code == 0, run.text
    assert "Destroy complete! Resources: 1 destroyed." in run.out
    assert raw_s3(session).list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert calls == []  # the CLI made its own session, from the environment it was handed
