"""One mapper from AWS failures to what the user should do.

`explain(exc)` turns a botocore exception into an `AwsError`: a sentence saying what AWS refused and a
hint saying how to fix it (set credentials; the IAM action and resource to allow; the quota to raise and
where; the instance types a region offers; `fastuner bootstrap` for a missing bucket; `iam:PassRole`
on the execution role; what to do when throttling outlasted the retries). `aws_errors(doing)` wraps a
block of calls. Anything that is not an AWS failure passes through untouched: it is a bug.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastuner.errors import UserError

THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
    "RequestLimitExceeded", "SlowDown", "RequestThrottled", "RequestThrottledException",
    "ProvisionedThroughputExceededException", "BandwidthLimitExceeded", "PriorRequestNotComplete",
})
ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
                           "AuthorizationError", "Forbidden", "403"})
EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId",
                     "UnrecognizedClientException", "SignatureDoesNotMatch", "InvalidAccessKeyId"})
NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404", "ResourceNotFound", "ResourceNotFoundException"})

CREDENTIALS_HINT = (
    "Set credentials the AWS way: `aws configure` (or `aws sso login --profile NAME` and AWS_PROFILE=NAME), "
    "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment; in CI, an OIDC role "
    "(aws-actions/configure-aws-credentials). Check with `aws sts get-caller-identity`.")


class AwsError(UserError):
    """An AWS failure, explained. `code` is AWS's error code ("" for client-side failures)."""

    def __init__(self, summary: str, detail: str = "", *, code: str = "", operation: str = "",
                 address: str | None = None) -> None:
        super().__init__(summary, detail, address=address)
        self.code = code
        self.operation = operation
        self.message = summary
        self.hint = detail


def error_code(exc: BaseException) -> str:
    """AWS's error code of a ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str((response.get("Error") or {}).get("Code") or "")


def http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0
    return int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)


def is_code(exc: BaseException, *codes: str) -> bool:
    code = error_code(exc)
    return bool(code) and code in codes


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND or http_status(exc) == 404


def is_precondition_failed(exc: BaseException) -> bool:
    """A conditional write refused: the object exists (`IfNoneMatch`) or changed (`IfMatch`)."""
    return error_code(exc) == "PreconditionFailed" or http_status(exc) == 412


def is_conditional_conflict(exc: BaseException) -> bool:
    """S3's 409 `ConditionalRequestConflict`: a concurrent conditional write; re-read and retry."""
    return error_code(exc) == "ConditionalRequestConflict" or (http_status(exc) == 409 and "Conditional"
                                                                in error_code(exc))


def explain(exc: BaseException, doing: str = "", service: str = "") -> AwsError:
    """What went wrong and what to do, for any botocore failure. `service`: the IAM prefix of the call
    (s3, sagemaker, logs), for naming the action AWS denied when its message does not."""
    from botocore import exceptions as bx

    prefix = f"{doing}: " if doing else ""
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError | bx.CredentialRetrievalError):
        return AwsError(f"{prefix}no AWS credentials were found", CREDENTIALS_HINT)
    if isinstance(exc, bx.TokenRetrievalError | bx.SSOTokenLoadError | bx.UnauthorizedSSOTokenError):
        return AwsError(f"{prefix}the AWS SSO session has expired",
                        "Log in again: aws sso login (with the same AWS_PROFILE).")
    if isinstance(exc, bx.NoRegionError):
        return AwsError(f"{prefix}no AWS region is set", "Set `region:` in fastuner.yaml, or AWS_REGION.")
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError
                  | bx.ConnectionClosedError):
        url = getattr(exc, "kwargs", {}).get("endpoint_url", "")
        return AwsError(f"{prefix}cannot reach AWS{f' at {url}' if url else ''}",
                        "Check the network (a proxy, a VPC endpoint) and AWS_ENDPOINT_URL if set; nothing was "
                        "changed by the call that failed, and fastuner can be run again.")
    if isinstance(exc, bx.ParamValidationError):
        return AwsError(f"{prefix}a request was refused before it was sent: {exc}",
                        "This is a fastuner bug if the spec validated; please report it.")
    if not isinstance(exc, bx.ClientError):
        return AwsError(f"{prefix}{exc}")
    return _explain_client_error(exc, prefix, service)


def _explain_client_error(exc: Any, prefix: str, service: str) -> AwsError:
    code = error_code(exc)
    operation = getattr(exc, "operation_name", "") or ""
    error = exc.response.get("Error") or {}
    message = str(error.get("Message") or "").strip()
    said = f"{message} ({code})" if message else code
    service = service or _service_of(exc, operation)

    def err(summary: str, hint: str) -> AwsError:
        return AwsError(prefix + summary, hint, code=code, operation=operation)

    if "iam:PassRole" in message or ("PassRole" in message and "not authorized" in message):
        role = _match(r"resource:\s*(arn:aws[\w-]*:iam::\S+)", message) or "the execution role"
        return err(f"{operation} was refused: you may not pass {role} to SageMaker",
                   f"Allow iam:PassRole on {role} for the identity running fastuner (`fastuner iam-policy` "
                   "prints a policy that does), and check that the role trusts sagemaker.amazonaws.com.")
    if code in ACCESS_DENIED or (http_status(exc) == 403 and code not in EXPIRED):
        action = _match(r"perform:\s*([\w-]+:[\w*]+)", message) or (f"{service}:{operation}" if operation else "")
        resource = _match(r"on resource:\s*(\S+)", message)
        where = f" on {resource.rstrip('.,')}" if resource else ""
        why = " (an explicit deny)" if "explicit deny" in message else ""
        return err(f"access denied{why}: {action}{where}",
                   f"Allow {action}{where} for the identity running fastuner (`aws sts get-caller-identity` "
                   "names it); `fastuner iam-policy` prints the policy this spec needs.")
    if code in EXPIRED:
        return err(f"AWS did not accept the credentials: {said}",
                   "The credentials are expired or wrong: refresh them (aws sso login, or new keys) and run "
                   "again. " + CREDENTIALS_HINT)
    if code == "ResourceLimitExceeded":
        quota = _match(r"'([^']+)'", message) or _match(r"limit for ([^.]+)", message) or "the service quota"
        return err(f"an AWS quota is too low: {quota} ({message})",
                   f"Request an increase of \"{quota}\" in the Service Quotas console (Amazon SageMaker), or "
                   f"`aws service-quotas list-service-quotas --service-code sagemaker` to find its code, then "
                   "`aws service-quotas request-service-quota-increase`; or choose another instance type.")
    if code == "ValidationException" and re.search(r"instance type|InstanceType", message, re.I) and \
            re.search(r"not (supported|available|offered|valid)|isn't supported|failed to satisfy", message, re.I):
        instance = _match(r"(ml\.[a-z0-9]+\.[a-z0-9]+)", message) or "this instance type"
        return err(f"{instance} is not offered here: {message}",
                   "Choose an instance type the region offers (see the SageMaker pricing page for the region), "
                   "or another region.")
    if code == "NoSuchBucket":
        bucket = error.get("BucketName") or _match(r"bucket\s+['\"]([a-z0-9.-]+)['\"]", message)
        return err(f"the S3 bucket {bucket} does not exist" if bucket else "the S3 bucket does not exist",
                   "Create it with `fastuner bootstrap` (versioned, encrypted, private), or fix `bucket:` in "
                   "fastuner.yaml.")
    if code in THROTTLING:
        return err(f"AWS kept throttling {operation or 'the calls'} after the retries ({said})",
                   "Nothing is lost: run again in a minute, lower --parallelism, or raise AWS_MAX_ATTEMPTS.")
    if code in ("ServiceUnavailable", "InternalError", "InternalFailure", "ServiceUnavailableException") \
            or http_status(exc) >= 500:
        return err(f"AWS failed to answer {operation or 'a call'} ({said})",
                   "A problem on AWS's side that outlasted the retries: run again; state records what was done.")
    return err(f"AWS refused {operation or 'a call'}: {said}", "")


def _service_of(exc: Any, operation: str) -> str:
    """The IAM prefix of the failed call's service, when the exception or the operation's name tells it."""
    m = re.search(r"arn:aws[\w-]*:([a-z0-9-]+):", error_message(exc))
    if m:
        return m.group(1)
    if re.search(r"(Object|Objects|ObjectsV2|Bucket\w*|MultipartUpload|Part|ObjectVersions)$", operation):
        return "s3"
    return "sagemaker"


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return str(exc)
    return str((response.get("Error") or {}).get("Message") or "")


def _match(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    return m.group(1) if m else ""


@contextmanager
def aws_errors(doing: str = "", service: str = "") -> Iterator[None]:
    """Turn any botocore failure inside the block into an explained `AwsError`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise explain(exc, doing, service) from None
