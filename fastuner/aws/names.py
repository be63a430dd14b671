"""Names and keys checked before any call: botocore checks types, not lengths or patterns, so a bad
name would otherwise fail half-way through an apply."""

from __future__ import annotations

import re
from collections.abc import Sequence

from fastuner.errors import UserError

SAGEMAKER_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
SAGEMAKER_NAME_MAX = 63
BUCKET = re.compile(r"(?!xn--)(?!.*-s3alias$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def check_sagemaker_name(name: str, what: str = "name") -> str:
    """`name` if SageMaker accepts it for a job, model, endpoint or inference component."""
    if len(name) > SAGEMAKER_NAME_MAX:
        raise UserError(f"the SageMaker {what} {name!r} is {len(name)} characters long (at most "
                        f"{SAGEMAKER_NAME_MAX})", "Use a shorter project or resource name.")
    if not SAGEMAKER_NAME.fullmatch(name):
        raise UserError(f"the SageMaker {what} {name!r} is not valid",
                        "SageMaker names are letters, digits and single or repeated dashes, starting and "
                        "ending with a letter or digit.")
    return name


def check_bucket(bucket: str) -> str:
    if not BUCKET.fullmatch(bucket) or ".." in bucket:
        raise UserError(f"{bucket!r} is not a valid S3 bucket name",
                        "Bucket names are 3-63 lowercase letters, digits, dots and dashes.")
    return bucket


def check_key(key: str, what: str = "key") -> str:
    """An S3 key fastuner writes: no leading slash, no empty or relative segments, ≤ 1024 bytes."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts[:-1]) or \
            len(key.encode()) > 1024:
        raise UserError(f"the S3 {what} {key!r} is not valid",
                        "Write it as a relative path such as fastuner/skyrim.json.")
    return key


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def common_prefix(names: Sequence[str]) -> str:
    """The characters every name starts with: one List call's NameContains for all of them."""
    if not names:
        return ""
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]
