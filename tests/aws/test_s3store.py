"""The S3 object store (moto in process): bytes never uploaded twice, conditional creates that count a
412 as done and retry a 409, multipart uploads completed conditionally and aborted on failure, the KMS
key on every write, and keys checked before any call. Assertions are on the calls fastuner sent."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from fastuner.aws.errors import AwsError
from fastuner.data.s3store import S3ObjectStore
from fastuner.errors import DiagnosticsError
from tests.aws.moto_s3 import BUCKET, answer, moto_s3, raw_s3

KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
MIB = 1 << 20
BIG = 11 * MIB  # three parts of 5 MiB (S3's smallest part), the last one 1 MiB


def small_parts(session, **kw) -> S3ObjectStore:
    return S3ObjectStore(session, BUCKET, "team/fastuner", namespace="datasets", filename="data.jsonl",
                         part_size=5 * MIB, multipart_threshold=8 * MIB, **kw)


@pytest.fixture
def s3():
    with moto_s3(BUCKET) as (session, calls):
        yield session, calls


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    path.write_bytes(os.urandom(BIG))
    return path


def stored(session, store: S3ObjectStore, key: str) -> bytes:
    return raw_s3(session).get_object(Bucket=BUCKET, Key=store.object_key(key))["Body"].read()


def pending_uploads(session) -> list:
    return raw_s3(session).list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def test_keys_and_uris_name_the_content_under_the_prefix(s3) -> None:
    session, calls = s3
    store = S3ObjectStore(session, BUCKET, "/team/fastuner/", namespace="datasets", filename="data.jsonl")
    data = b'{"input":"a","label":"x"}\n'
    digest = hashlib.sha256(data).hexdigest()
    key = store.put_bytes(data)
    assert key == f"datasets/{digest}/data.jsonl"
    assert store.uri(key) == f"s3://{BUCKET}/team/fastuner/datasets/{digest}/data.jsonl"
    assert store.folder_uri(key) == f"s3://{BUCKET}/team/fastuner/datasets/{digest}/"
    assert store.root == f"s3://{BUCKET}/team/fastuner/datasets/"
    assert stored(session, store, key) == data
    assert calls.ops() == ["HeadObject", "PutObject"]
    assert calls.params("PutObject")[0]["IfNoneMatch"] == "*"
    assert S3ObjectStore(session, BUCKET).root == f"s3://{BUCKET}/objects/"


def test_the_same_bytes_again_cost_one_head_and_no_write(s3, tmp_path: Path) -> None:
    session, calls = s3
    store = small_parts(session)
    data = b"same bytes\n" * 100
    key = store.put_bytes(data)
    calls.clear()
    path = tmp_path / "same.jsonl"
    path.write_bytes(data)
    assert store.put_bytes(data) == key
    assert store.put_file(path) == key
    writer = store.open_writer()
    writer.write(data)
    assert writer.commit() == key
    assert calls.ops() == ["HeadObject"] * 3
    assert calls.writes == [] and calls.bytes_sent == 0


def test_an_object_created_between_the_head_and_the_put_counts_as_stored(s3) -> None:
    """Another run stores the same bytes first: S3 answers 412 to the conditional create, which is done."""
    session, calls = s3
    store = small_parts(session)
    data = b"raced\n"
    key = store.key_for(hashlib.sha256(data).hexdigest())
    other = raw_s3(session)

    def someone_else_first(call) -> None:
        if call["operation"] == "PutObject":
            other.put_object(Bucket=BUCKET, Key=store.object_key(key), Body=data)

    session.observe(someone_else_first)
    progress: list[tuple[int, int]] = []
    assert store.put_bytes(data, progress=lambda *p: progress.append(p)) == key
    assert calls.ops() == ["HeadObject", "PutObject"]  # the 412 was not retried, nor an error
    assert progress == [(len(data), len(data))]
    assert stored(session, store, key) == data


def test_a_conflicting_conditional_write_is_retried(s3) -> None:
    """S3's 409 ConditionalRequestConflict (a concurrent conditional write) is re-read and retried."""
    session, calls = s3
    store = small_parts(session)
    answered = answer(session, "PutObject", "ConditionalRequestConflict", 409)
    key = store.put_bytes(b"contended\n")
    assert len(answered) == 1
    assert calls.ops() == ["HeadObject", "PutObject", "HeadObject", "PutObject"]
    assert stored(session, store, key) == b"contended\n"


def test_endless_conflicts_give_up_with_what_to_do(s3) -> None:
    session, calls = s3
    store = small_parts(session)
    answer(session, "PutObject", "ConditionalRequestConflict", 409, times=100)
    with pytest.raises(DiagnosticsError, match="kept conflicting with another writer") as info:
        store.put_bytes(b"contended\n")
    assert "Run again" in info.value.diagnostics[0].detail
    assert calls.ops("PutObject") == ["PutObject"] * 5


def test_kms_key_on_every_write(s3, big_file: Path) -> None:
    session, calls = s3
    store = small_parts(session, kms_key_id=KMS)
    store.put_bytes(b"secret\n")
    store.put_file(big_file)
    for op in ("PutObject", "CreateMultipartUpload"):
        (params,) = calls.params(op)
        assert params["ServerSideEncryption"] == "aws:kms" and params["SSEKMSKeyId"] == KMS
    calls.clear()
    small_parts(session).put_bytes(b"plain\n")
    assert "SSEKMSKeyId" not in calls.params("PutObject")[0]


def test_a_large_file_goes_up_in_parts_completed_conditionally(s3, big_file: Path) -> None:
    session, calls = s3
    store = small_parts(session)
    progress: list[tuple[int, int]] = []
    key = store.put_file(big_file, progress=lambda *p: progress.append(p))
    assert key == store.key_for(hashlib.sha256(big_file.read_bytes()).hexdigest())
    assert calls.ops() == ["HeadObject", "CreateMultipartUpload", "UploadPart", "UploadPart", "UploadPart",
                           "CompleteMultipartUpload"]
    assert sorted(len(p["Body"]) for p in calls.params("UploadPart")) == [MIB, 5 * MIB, 5 * MIB]
    (complete,) = calls.params("CompleteMultipartUpload")
    assert complete["IfNoneMatch"] == "*"
    assert [p["PartNumber"] for p in complete["MultipartUpload"]["Parts"]] == [1, 2, 3]
    assert [sent for sent, _ in progress] == sorted(sent for sent, _ in progress)
    assert progress[-1] == (BIG, BIG) and {total for _, total in progress} == {BIG}
    assert stored(session, store, key) == big_file.read_bytes()
    assert pending_uploads(session) == []


def test_a_multipart_upload_beaten_to_the_key_is_aborted_and_counts_as_stored(s3, big_file: Path) -> None:
    session, calls = s3
    store = small_parts(session)
    data = big_file.read_bytes()
    key = store.key_for(hashlib.sha256(data).hexdigest())
    other = raw_s3(session)

    def someone_else_first(call) -> None:
        if call["operation"] == "CompleteMultipartUpload":
            other.put_object(Bucket=BUCKET, Key=store.object_key(key), Body=data)

    session.observe(someone_else_first)
    assert store.put_file(big_file) == key
    assert calls.ops()[-2:] == ["CompleteMultipartUpload", "AbortMultipartUpload"]
    assert pending_uploads(session) == []
    assert stored(session, store, key) == data


def test_a_conflicting_completion_starts_the_upload_again(s3, big_file: Path) -> None:
    """S3 drops an upload whose conditional completion conflicted (409): a new upload is started."""
    session, calls = s3
    store = small_parts(session)
    answer(session, "CompleteMultipartUpload", "ConditionalRequestConflict", 409)
    key = store.put_file(big_file)
    assert calls.ops("CreateMultipartUpload", "CompleteMultipartUpload", "AbortMultipartUpload", "HeadObject") == [
        "HeadObject", "CreateMultipartUpload", "CompleteMultipartUpload", "AbortMultipartUpload", "HeadObject",
        "CreateMultipartUpload", "CompleteMultipartUpload"]
    assert len(calls.params("UploadPart")) == 6
    assert stored(session, store, key) == big_file.read_bytes()
    assert pending_uploads(session) == []


def test_a_failed_part_stops_the_upload_and_aborts_it(s3, big_file: Path) -> None:
    session, calls = s3
    store = small_parts(session, part_workers=1)
    answer(session, "UploadPart", "AccessDenied", 403, after=1)
    with pytest.raises(AwsError, match=r"uploading part 2 of s3://.*: access denied: s3:UploadPart") as info:
        store.put_file(big_file)
    assert "fastuner iam-policy" in info.value.hint
    # part 3 was never sent; the upload was aborted; nothing is visible under the key
    assert calls.ops() == ["HeadObject", "CreateMultipartUpload", "UploadPart", "UploadPart",
                           "AbortMultipartUpload"]
    assert pending_uploads(session) == []
    assert raw_s3(session).list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_a_failed_completion_aborts_the_upload(s3, big_file: Path) -> None:
    session, calls = s3
    store = small_parts(session)
    answer(session, "CompleteMultipartUpload", "InternalError", 500, times=100)
    with pytest.raises(AwsError, match="AWS failed to answer CompleteMultipartUpload"):
        store.put_file(big_file)
    assert calls.ops()[-1] == "AbortMultipartUpload"
    assert pending_uploads(session) == []
    assert raw_s3(session).list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_a_streamed_object_is_spooled_then_stored_under_its_hash(s3) -> None:
    session, calls = s3
    store = small_parts(session)
    writer = store.open_writer()
    writer.write(b"line 1\n")
    writer.write(b"line 2\n")
    assert writer.size == 14
    key = writer.commit()
    assert key == store.key_for(hashlib.sha256(b"line 1\nline 2\n").hexdigest()) == store.key_for(writer.sha256)
    assert store.get(key) == b"line 1\nline 2\n"
    aborted = store.open_writer()
    aborted.write(b"never stored\n")
    aborted.abort()
    assert calls.writes == ["PutObject"]


def test_materialize_downloads_in_place_and_a_missing_object_is_explained(s3, tmp_path: Path) -> None:
    session, _ = s3
    store = small_parts(session)
    key = store.put_bytes(b"train rows\n")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "train.jsonl").write_bytes(b"old")
    path = store.materialize(key, tmp_path / "train", "train.jsonl")
    assert path == tmp_path / "train" / "train.jsonl" and path.read_bytes() == b"train rows\n"
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["train.jsonl"]  # no temporary left
    missing = store.key_for("0" * 64)
    with pytest.raises(DiagnosticsError, match=f"object {missing} is missing from s3://{BUCKET}/team/fastuner/datasets/"):
        store.materialize(missing, tmp_path / "test", "test.jsonl")
    assert not any((tmp_path / "test").iterdir())
    with pytest.raises(DiagnosticsError, match="is missing from"):
        store.get(missing)


def test_delete_removes_the_object_and_a_missing_one_silently(s3) -> None:
    session, calls = s3
    store = small_parts(session)
    key = store.put_bytes(b"to delete\n")
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)
    assert calls.ops("DeleteObject") == ["DeleteObject", "DeleteObject"]
    assert calls.params("DeleteObject")[0]["Key"] == store.object_key(key)


BAD_KEYS = [
    "datasets/../../etc/data.jsonl",
    "../datasets/" + "a" * 64 + "/data.jsonl",
    "datasets/" + "A" * 64 + "/data.jsonl",
    "datasets/" + "a" * 63 + "/data.jsonl",
    "objects/" + "a" * 64 + "/data.jsonl",
    "datasets/" + "a" * 64 + "/other.jsonl",
    "sha256/aa/" + "a" * 64,  # a local store's key
    "",
]


def test_keys_that_are_not_this_stores_are_refused_before_any_call(s3, tmp_path: Path) -> None:
    session, calls = s3
    store = small_parts(session)
    for key in BAD_KEYS:
        for call in (store.uri, store.folder_uri, store.exists, store.get, store.delete,
                     lambda k: store.materialize(k, tmp_path, "x.jsonl")):
            with pytest.raises(ValueError, match="not an object key of s3://"):
                call(key)
    assert calls == []


def test_a_missing_bucket_is_not_a_missing_object(s3) -> None:
    session, calls = s3
    store = S3ObjectStore(session, "no-such-bucket-here", "fastuner", namespace="datasets")
    with pytest.raises(AwsError, match="the S3 bucket no-such-bucket-here does not exist") as info:
        store.put_bytes(b"x\n")
    assert "fastuner bootstrap" in info.value.hint
    assert calls.writes == []
