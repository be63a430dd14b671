"""The content-addressed object store on S3 (the `ObjectStore` protocol of data/store.py).

An object's key is `<namespace>/<sha256>/<filename>` under the provider's prefix
(`s3://BUCKET/PREFIX/datasets/<sha256>/data.jsonl` for dataset splits): a SageMaker channel points at the
`<namespace>/<sha256>/` prefix and the program finds one `.jsonl` file in its channel folder.

Bytes are never uploaded twice: a HEAD first (an object already there costs one read and no write),
then a conditional create (`IfNoneMatch="*"`); a 412 means another run stored the same bytes first, which
is just as good. Large objects go up in parts, in parallel, and the multipart upload is completed
conditionally too (s3transfer cannot pass `IfNoneMatch`, so the parts are sent here). A 409
`ConditionalRequestConflict` (a concurrent conditional write) is retried after a HEAD: a PUT is sent
again, a multipart upload is started again (S3 drops an upload whose completion conflicted). A failed
or interrupted upload stops sending parts and aborts the upload, so no half object is ever visible
under a key and no parts are left to bill.

Progress is reported per upload as `(bytes sent, total)`: to the store's `progress`, or to the callback
handed to `put_bytes`, `put_file` or `open_writer` (a caller labelling each object it stores).
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
from typing import Any, NoReturn

from fastuner.aws.clients import AwsSession
from fastuner.aws.errors import (
    aws_errors,
    error_code,
    is_conditional_conflict,
    is_not_found,
    is_precondition_failed,
)
from fastuner.aws.names import check_bucket, join_key
from fastuner.errors import DiagnosticsError

MULTIPART_THRESHOLD = 64 << 20  # one PUT below this
PART_SIZE = 16 << 20  # ≥ 5 MiB (S3's minimum part), ≤ 10,000 parts: objects up to 160 GB
PART_WORKERS = 4
CONFLICT_ATTEMPTS = 5  # a conditional write that keeps meeting another writer's (409) gives up after these
_COPY_BYTES = 1 << 20
_HEX = re.compile(r"[0-9a-f]{64}")

Progress = Callable[[int, int], None]  # (bytes sent so far, total bytes)


class S3ObjectStore:
    """Objects in `s3://bucket/prefix/namespace/<sha256>/filename`."""

    def __init__(self, session: AwsSession, bucket: str, prefix: str = "", *, namespace: str = "objects",
                 filename: str = "data", kms_key_id: str | None = None, progress: Progress | None = None,
                 part_size: int = PART_SIZE, multipart_threshold: int = MULTIPART_THRESHOLD,
                 part_workers: int = PART_WORKERS) -> None:
        self.session = session
        self.bucket = check_bucket(bucket)
        self.prefix = prefix.strip("/")
        self.namespace = namespace.strip("/")
        self.filename = filename
        self.kms_key_id = kms_key_id
        self.progress = progress
        self.part_size = max(5 << 20, part_size)
        self.multipart_threshold = multipart_threshold
        self.part_workers = max(1, part_workers)

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
                if is_not_found(exc) and error_code(exc) != "NoSuchBucket":
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

    def put_bytes(self, data: bytes, progress: Progress | None = None) -> str:
        key = self.key_for(hashlib.sha256(data).hexdigest())
        if self.exists(key):
            return key
        self._put_once(key, lambda: {"Body": data}, len(data), progress or self.progress)
        return key

    def put_file(self, path: str | Path, progress: Progress | None = None) -> str:
        """Hashes the file, then uploads it unless the object is already there."""
        h = hashlib.sha256()
        with open(path, "rb") as source:
            while chunk := source.read(_COPY_BYTES):
                h.update(chunk)
        key = self.key_for(h.hexdigest())
        if self.exists(key):
            return key
        self._upload(key, Path(path), progress or self.progress)
        return key

    def open_writer(self, progress: Progress | None = None) -> _S3Writer:
        return _S3Writer(self, progress or self.progress)

    def delete(self, key: str) -> None:
        with aws_errors(f"deleting {self.uri(key)}", "s3"):
            self.s3.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def _extra(self) -> dict[str, Any]:
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {}

    def _upload(self, key: str, path: Path, progress: Progress | None) -> None:
        size = path.stat().st_size
        if size < self.multipart_threshold:
            self._put_once(key, lambda: {"Body": path.read_bytes()}, size, progress)
            return
        for _attempt in range(CONFLICT_ATTEMPTS):
            if self._multipart(key, path, size, progress) or self.exists(key):
                return
        self._conflicting(key)

    def _put_once(self, key: str, body: Callable[[], dict[str, Any]], size: int, progress: Progress | None) -> None:
        """A conditional create; 412: someone stored the same bytes first (done); 409: retried."""
        for _attempt in range(CONFLICT_ATTEMPTS):
            with aws_errors(f"uploading {self.uri(key)}", "s3"):
                try:
                    self.s3.put_object(Bucket=self.bucket, Key=self.object_key(key), IfNoneMatch="*",
                                       **body(), **self._extra())
                except Exception as exc:
                    if is_precondition_failed(exc):
                        _report(progress, size, size)
                        return
                    if is_conditional_conflict(exc):
                        if self.exists(key):
                            _report(progress, size, size)
                            return
                        continue
                    raise
                _report(progress, size, size)
                return
        self._conflicting(key)

    def _multipart(self, key: str, path: Path, size: int, progress: Progress | None) -> bool:
        """One multipart upload, completed conditionally. True when the object is stored (by this upload,
        or by another writer first: 412); False when the completion conflicted with another writer (409),
        which ends the upload: the caller starts a new one unless the object is there by then. Whatever
        does not complete is aborted, parts included."""
        s3 = self.s3
        object_key = self.object_key(key)
        with aws_errors(f"uploading {self.uri(key)}", "s3"):
            upload_id = s3.create_multipart_upload(Bucket=self.bucket, Key=object_key, **self._extra())["UploadId"]
        completed = False
        try:
            parts = self._send_parts(key, path, size, upload_id, progress)
            with aws_errors(f"uploading {self.uri(key)}", "s3"):
                try:
                    s3.complete_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id,
                                                 MultipartUpload={"Parts": parts}, IfNoneMatch="*")
                except Exception as exc:
                    if is_precondition_failed(exc):
                        return True
                    if is_conditional_conflict(exc):
                        return False
                    raise
            completed = True
            return True
        finally:
            if not completed:
                self._abort(object_key, upload_id)

    def _send_parts(self, key: str, path: Path, size: int, upload_id: str,
                    progress: Progress | None) -> list[dict[str, Any]]:
        """The file's parts, `part_workers` at a time; the first failure (or Ctrl-C) cancels the parts not
        yet started and returns once the ones in flight have ended, so that the abort comes after them."""
        s3 = self.s3
        object_key = self.object_key(key)
        sent = 0
        lock = threading.Lock()
        stop = threading.Event()  # a part failed, or Ctrl-C: the parts not started yet are not sent

        def send(index: int, offset: int) -> dict[str, Any] | None:
            nonlocal sent
            if stop.is_set():
                return None
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read(self.part_size)
                with aws_errors(f"uploading part {index} of {self.uri(key)}", "s3"):
                    etag = s3.upload_part(Bucket=self.bucket, Key=object_key, UploadId=upload_id,
                                          PartNumber=index, Body=chunk)["ETag"]
            except BaseException:
                stop.set()
                raise
            with lock:
                sent += len(chunk)
                _report(progress, sent, size)
            return {"PartNumber": index, "ETag": etag}

        with ThreadPoolExecutor(max_workers=self.part_workers) as pool:
            futures = [pool.submit(send, index, offset)
                       for index, offset in enumerate(range(0, size, self.part_size), start=1)]
            try:
                parts = [future.result() for future in futures]
            except BaseException:
                stop.set()
                for future in futures:
                    future.cancel()
                raise
        return [part for part in parts if part is not None]

    def _abort(self, object_key: str, upload_id: str) -> None:
        # already completed or aborted: nothing to do (a lifecycle rule cleans up what a crash leaves)
        with contextlib.suppress(Exception):
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)

    def _conflicting(self, key: str) -> NoReturn:
        raise DiagnosticsError.single(f"uploading {self.uri(key)} kept conflicting with another writer",
                                      "Run again; the object store is unchanged.")


def _report(progress: Progress | None, sent: int, total: int) -> None:
    if progress is not None:
        progress(sent, total)


class _S3Writer:
    """Spools to a local temporary file while hashing (the key is known only at the end), then uploads
    unless the object is already there."""

    def __init__(self, store: S3ObjectStore, progress: Progress | None) -> None:
        self._store = store
        self._progress = progress
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
                self._store._upload(key, self._temp, self._progress)
            return key
        finally:
            self._temp.unlink(missing_ok=True)

    def abort(self) -> None:
        self._file.close()
        self._temp.unlink(missing_ok=True)
