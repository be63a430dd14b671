"""The content-addressed object store on S3 (the `ObjectStore` protocol of data/store.py).

An object's key is `<namespace>/<sha256>/<filename>` under the provider's prefix
(`s3://BUCKET/PREFIX/datasets/<sha256>/data.jsonl` for dataset splits): a SageMaker channel points at the
`<namespace>/<sha256>/` prefix and the program finds one `.jsonl` file in its channel folder.

Bytes are never uploaded twice: a HEAD first (an object already there costs one read and no write),
then a conditional create (`IfNoneMatch="*"`); a 412 means another run stored the same bytes first, which
is just as good. Large objects go up in parts, in parallel, and the multipart upload is completed
conditionally too (s3transfer cannot pass `IfNoneMatch`, so the parts are sent here); a 409
`ConditionalRequestConflict` (a concurrent conditional write) is retried after a HEAD. A failed or
interrupted upload aborts its parts, so no half object is ever visible under a key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastuner.aws.clients import AwsSession
from fastuner.aws.errors import aws_errors, is_conditional_conflict, is_not_found, is_precondition_failed
from fastuner.aws.names import check_bucket, join_key
from fastuner.errors import DiagnosticsError

MULTIPART_THRESHOLD = 64 << 20  # one PUT below this
PART_SIZE = 16 << 20  # ≥ 5 MiB (S3's minimum part), ≤ 10,000 parts: objects up to 160 GB
PART_WORKERS = 4
_COPY_BYTES = 1 << 20
_HEX = re.compile(r"[0-9a-f]{64}")

Progress = Callable[[int, int], None]  # (bytes sent so far, total bytes)


class S3ObjectStore:
    """Objects in `s3://bucket/prefix/namespace/<sha256>/filename`."""

    def __init__(self, session: AwsSession, bucket: str, prefix: str = "", *, namespace: str = "objects",
                 filename: str = "data", kms_key_id: str | None = None, progress: Progress | None = None,
                 part_size: int = PART_SIZE, multipart_threshold: int = MULTIPART_THRESHOLD) -> None:
        self.session = session
        self.bucket = check_bucket(bucket)
        self.prefix = prefix.strip("/")
        self.namespace = namespace.strip("/")
        self.filename = filename
        self.kms_key_id = kms_key_id
        self.progress = progress
        self.part_size = max(5 << 20, part_size)
        self.multipart_threshold = multipart_threshold

    @property
    def s3(self) -> Any:
        return self.session.client("s3")

    @property
    def root(self) -> str:
        """Where the objects live, for messages."""
        return f"s3://{self.bucket}/{join_key(self.prefix, self.namespace)}/"

    # --- keys --------------------------------------------------------------------------------------

    def key_for(self, sha256_hex: str) -> str:
        return f"{self.namespace}/{sha256_hex}/{self.filename}"

    def check_key(self, key: str) -> str:
        parts = key.split("/")
        digest = parts[-2] if len(parts) >= 3 else ""
        if not _HEX.fullmatch(digest) or key != self.key_for(digest):
            raise ValueError(f"not an object key of {self.root}: {key!r}")
        return key

    def object_key(self, key: str) -> str:
        """The S3 key of a store key (with the prefix)."""
        return join_key(self.prefix, self.check_key(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    def folder_uri(self, key: str) -> str:
        """The `<namespace>/<sha256>/` prefix holding the object: a SageMaker channel's S3Uri."""
        return self.uri(key).rsplit("/", 1)[0] + "/"

    # --- reading -----------------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        with aws_errors(f"checking {self.uri(key)}", "s3"):
            try:
                self.s3.head_object(Bucket=self.bucket, Key=self.object_key(key))
                return True
            except Exception as exc:
                if is_not_found(exc):
                    return False
                raise

    def get(self, key: str) -> bytes:
        with aws_errors(f"reading {self.uri(key)}", "s3"):
            try:
                return self.s3.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"].read()
            except Exception as exc:
                if is_not_found(exc):
                    raise DiagnosticsError.single(f"object {key} is missing from {self.root}") from None
                raise

    def materialize(self, key: str, dest_dir: str | Path, name: str) -> Path:
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / name
        temp = dest_dir / f".{name}.tmp-{os.getpid()}"
        try:
            with aws_errors(f"downloading {self.uri(key)}", "s3"):
                try:
                    self.s3.download_file(self.bucket, self.object_key(key), str(temp))
                except Exception as exc:
                    if is_not_found(exc):
                        raise DiagnosticsError.single(f"object {key} is missing from {self.root}") from None
                    raise
            os.replace(temp, dest)
        finally:
            temp.unlink(missing_ok=True)
        return dest

    # --- writing -----------------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> str:
        key = self.key_for(hashlib.sha256(data).hexdigest())
        if self.exists(key):
            return key
        self._put_once(key, lambda: {"Body": data}, len(data))
        return key

    def put_file(self, path: str | Path) -> str:
        """Hashes the file, then uploads it unless the object is already there."""
        h = hashlib.sha256()
        with open(path, "rb") as source:
            while chunk := source.read(_COPY_BYTES):
                h.update(chunk)
        key = self.key_for(h.hexdigest())
        if self.exists(key):
            return key
        self._upload(key, Path(path))
        return key

    def open_writer(self) -> _S3Writer:
        return _S3Writer(self)

    def delete(self, key: str) -> None:
        with aws_errors(f"deleting {self.uri(key)}", "s3"):
            self.s3.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def _extra(self) -> dict[str, Any]:
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {}

    def _upload(self, key: str, path: Path) -> None:
        size = path.stat().st_size
        if size < self.multipart_threshold:
            self._put_once(key, lambda: {"Body": path.read_bytes()}, size)
        else:
            self._multipart(key, path, size)

    def _put_once(self, key: str, body: Callable[[], dict[str, Any]], size: int) -> None:
        """A conditional create; 412: someone stored the same bytes first (done); 409: retried."""
        for _attempt in range(5):
            with aws_errors(f"uploading {self.uri(key)}", "s3"):
                try:
                    self.s3.put_object(Bucket=self.bucket, Key=self.object_key(key), IfNoneMatch="*",
                                       **body(), **self._extra())
                    self._report(size, size)
                    return
                except Exception as exc:
                    if is_precondition_failed(exc):
                        return
                    if is_conditional_conflict(exc):
                        if self.exists(key):
                            return
                        continue
                    raise
        raise DiagnosticsError.single(f"uploading {self.uri(key)} kept conflicting with another writer",
                                      "Run again; the object store is unchanged.")

    def _multipart(self, key: str, path: Path, size: int) -> None:
        s3 = self.s3
        object_key = self.object_key(key)
        with aws_errors(f"uploading {self.uri(key)}", "s3"):
            upload_id = s3.create_multipart_upload(Bucket=self.bucket, Key=object_key, **self._extra())["UploadId"]
        sent = 0
        lock = threading.Lock()
        offsets = list(range(0, size, self.part_size))

        def send(index_offset: tuple[int, int]) -> dict[str, Any]:
            nonlocal sent
            index, offset = index_offset
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read(self.part_size)
            with aws_errors(f"uploading part {index} of {self.uri(key)}", "s3"):
                etag = s3.upload_part(Bucket=self.bucket, Key=object_key, UploadId=upload_id, PartNumber=index,
                                      Body=chunk)["ETag"]
            with lock:
                sent += len(chunk)
                self._report(sent, size)
            return {"PartNumber": index, "ETag": etag}

        try:
            with ThreadPoolExecutor(max_workers=PART_WORKERS) as pool:
                parts = list(pool.map(send, enumerate(offsets, start=1)))
            with aws_errors(f"uploading {self.uri(key)}", "s3"):
                try:
                    s3.complete_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id,
                                                 MultipartUpload={"Parts": parts}, IfNoneMatch="*")
                except Exception as exc:
                    if not (is_precondition_failed(exc) or (is_conditional_conflict(exc) and self.exists(key))):
                        raise
                    self._abort(object_key, upload_id)
        except BaseException:
            self._abort(object_key, upload_id)
            raise

    def _abort(self, object_key: str, upload_id: str) -> None:
        # already completed or aborted: nothing to do (a lifecycle rule cleans up what a crash leaves)
        with contextlib.suppress(Exception):
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)

    def _report(self, sent: int, total: int) -> None:
        if self.progress is not None:
            self.progress(sent, total)


class _S3Writer:
    """Spools to a local temporary file while hashing (the key is known only at the end), then uploads
    unless the object is already there."""

    def __init__(self, store: S3ObjectStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(prefix="fastuner-upload-")
        self._temp = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._sha.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def commit(self) -> str:
        self._file.close()
        try:
            key = self._store.key_for(self._sha.hexdigest())
            if not self._store.exists(key):
                self._store._upload(key, self._temp)
            return key
        finally:
            self._temp.unlink(missing_ok=True)

    def abort(self) -> None:
        self._file.close()
        self._temp.unlink(missing_ok=True)
