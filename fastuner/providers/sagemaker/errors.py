"""AWS failures as the engine expects them from a provider: `ProviderError(message, hint)`.

The engine records a `ProviderError` as a failed resource with what to do, and treats anything else as a
bug (with its traceback). Every AWS call of the SageMaker provider runs inside `provider_errors`, which
turns the error mapper's `AwsError` (fastuner/aws/errors.py), a raw botocore failure, or another user
error of the layers below (an object missing from the store) into one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastuner.aws.errors import explain
from fastuner.errors import DiagnosticsError
from fastuner.providers.base import ProviderError


@contextmanager
def provider_errors(doing: str, service: str = "") -> Iterator[None]:
    """Turn AWS failures inside the block into `ProviderError`. `doing` ("reading s3://…", "creating the
    training job …") prefixes the message of a botocore failure the block did not explain itself;
    `service` (s3, sagemaker, logs) names the IAM action when AWS denies one without saying which."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except DiagnosticsError as exc:  # AwsError among them: already explained
        raise as_provider_error(exc) from None
    except (BotoCoreError, ClientError) as exc:
        raise as_provider_error(explain(exc, doing, service)) from None


def as_provider_error(exc: DiagnosticsError) -> ProviderError:
    first = exc.diagnostics[0] if exc.diagnostics else None
    if first is None:
        return ProviderError(str(exc))
    more = f" (and {len(exc.diagnostics) - 1} more)" if len(exc.diagnostics) > 1 else ""
    return ProviderError(first.summary + more, first.detail, address=first.address)
