"""AWS failures as the provider protocol's `ProviderError` (what happened, what to do).

Temporary: the same `provider_errors(doing)` is being written as `fastuner/providers/sagemaker/errors.py`;
this module goes when that one is merged, and its callers import that one instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastuner.aws.errors import AwsError, aws_errors
from fastuner.errors import DiagnosticsError
from fastuner.providers.base import ProviderError


@contextmanager
def provider_errors(doing: str, service: str = "sagemaker") -> Iterator[None]:
    """Turn a botocore failure (explained by fastuner/aws/errors.py) or a user error raised inside the
    block (a bad name, a missing object) into a ProviderError."""
    try:
        with aws_errors(doing, service):
            yield
    except AwsError as exc:
        raise ProviderError(exc.message, exc.hint) from None
    except DiagnosticsError as exc:
        first = exc.diagnostics[0] if exc.diagnostics else None
        raise ProviderError(first.summary if first else str(exc), first.detail if first else "") from None
