"""The few S3 operations on objects named by URI that training jobs need (SageMaker speaks in
`s3://bucket/key` URIs): whether an artifact is there, reading a small JSON file back, and removing
everything under a prefix (a job's output folder, its checkpoints). Content-addressed uploads go through
the object store (fastuner/data/s3store.py) instead."""

from __future__ import annotations

import json
from typing import Any

from fastuner.aws.clients import AwsSession
from fastuner.aws.errors import is_not_found
from fastuner.providers.base import ProviderError
from fastuner.providers.sagemaker.errors import provider_errors


def split_uri(uri: str) -> tuple[str, str]:
    """("bucket", "key/part") of "s3://bucket/key/part"."""
    if not uri.startswith("s3://"):
        raise ProviderError(f"not an S3 URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def exists(session: AwsSession, uri: str) -> bool:
    bucket, key = split_uri(uri)
    with provider_errors(f"checking {uri}", "s3"):
        try:
            session.client("s3").head_object(Bucket=bucket, Key=key)
            return True
        except Exception as exc:
            if is_not_found(exc):
                return False
            raise


def read_json(session: AwsSession, uri: str) -> dict[str, Any]:
    """A JSON object stored at `uri`; {} when it is gone."""
    bucket, key = split_uri(uri)
    with provider_errors(f"reading {uri}", "s3"):
        try:
            data = json.loads(session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
        except Exception as exc:
            if is_not_found(exc):
                return {}
            raise
    return data if isinstance(data, dict) else {}


def delete_prefix(session: AwsSession, prefix_uri: str) -> None:
    """Every object under an S3 prefix, a thousand per DeleteObjects call (in a versioned bucket, each
    gets a delete marker: the bucket's lifecycle rule expires the old versions)."""
    bucket, prefix = split_uri(prefix_uri)
    s3 = session.client("s3")
    with provider_errors(f"deleting {prefix_uri}", "s3"):
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        while True:
            answer = s3.list_objects_v2(**params)
            keys = [{"Key": o["Key"]} for o in answer.get("Contents") or []]
            if keys:
                result = s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                failed = result.get("Errors") or []
                if failed:
                    raise ProviderError(f"could not delete {len(failed)} object(s) under {prefix_uri}: "
                                        f"{failed[0].get('Code')} {failed[0].get('Message')}",
                                        "Check s3:DeleteObject on the bucket, then run the command again.")
            token = answer.get("NextContinuationToken")
            if not answer.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token


def read_tar_json(session: AwsSession, uri: str, member: str) -> dict[str, Any] | None:
    """The JSON object `member` (at the archive's root) of the `.tar.gz` at `uri`, read as a stream and
    stopped as soon as it is found; None when the archive has no such member."""
    import tarfile

    bucket, key = split_uri(uri)
    with provider_errors(f"reading {member} from {uri}", "s3"):
        body = session.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
        try:
            with tarfile.open(fileobj=body, mode="r|gz") as tar:
                for info in tar:
                    if info.isfile() and info.name.lstrip("./") == member:
                        handle = tar.extractfile(info)
                        data = json.loads(handle.read()) if handle is not None else None
                        return data if isinstance(data, dict) else None
        except (tarfile.TarError, OSError, ValueError) as exc:
            raise ProviderError(f"{uri} is not a readable adapter archive: {exc}",
                                "Re-train the adapter (fastuner apply --replace ADDRESS).") from None
        finally:
            body.close()
    return None
