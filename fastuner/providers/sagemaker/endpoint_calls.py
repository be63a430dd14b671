"""The SageMaker calls of a deployment's pieces (models, endpoint configs, endpoints, inference
components), each explained on failure (`ProviderError`): describe (None when it does not exist), create
(False when another run created it a moment ago), delete (silent when it is gone), List calls read to
their last page, and waiting for a piece to come into service or to go, with a progress line at each
change of status. deployments.py decides what to call; this module only calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastuner.aws.clients import AwsSession
from fastuner.aws.errors import error_code, error_message
from fastuner.providers.base import Context, ProviderError
from fastuner.providers.sagemaker.errors import provider_errors
from fastuner.providers.sagemaker.reaping import not_found

IN_SERVICE = "InService"
FAILED = "Failed"
LIST_PAGE = 100
WAIT_TIMEOUT_S = 3600.0  # an endpoint or component not in service after this long is reported


class EndpointCalls:
    def __init__(self, session: AwsSession, *, poll: float = 15.0, max_poll: float = 60.0,
                 sleep: Callable[[float], None] | None = None, timeout: float = WAIT_TIMEOUT_S) -> None:
        """`poll`: seconds between Describe calls while waiting, doubling up to `max_poll`; `sleep`
        replaces the pause (tests; by default it ends early on Ctrl-C)."""
        self.session = session
        self.poll = poll
        self.max_poll = max(poll, max_poll)
        self._sleep = sleep
        self.timeout = timeout

    @property
    def sagemaker(self) -> Any:
        return self.session.client("sagemaker")

    def list(self, operation: str, key: str, prefix: str) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"MaxResults": LIST_PAGE}
        if prefix:
            params["NameContains"] = prefix
        out: list[dict[str, Any]] = []
        with provider_errors(f"listing {key}", "sagemaker"):
            while True:
                answer = getattr(self.sagemaker, operation)(**params)
                out += answer.get(key) or []
                if not answer.get("NextToken"):
                    return out
                params["NextToken"] = answer["NextToken"]

    def list_components(self, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        params = {"MaxResults": LIST_PAGE, **params}
        with provider_errors("listing inference components", "sagemaker"):
            while True:
                answer = self.sagemaker.list_inference_components(**params)
                out += answer.get("InferenceComponents") or []
                if not answer.get("NextToken"):
                    return out
                params["NextToken"] = answer["NextToken"]

    def describe(self, what: str, **params: str) -> dict[str, Any] | None:
        """`describe_<what>`; None when it does not exist."""
        if not any(params.values()):
            return None
        with provider_errors(f"reading {what.replace('_', ' ')} {next(iter(params.values()))}", "sagemaker"):
            try:
                return getattr(self.sagemaker, f"describe_{what}")(**params)
            except Exception as exc:
                if not_found(exc):
                    return None
                raise

    def create(self, what: str, **params: Any) -> bool:
        """`create_<what>`; False when it exists already (another run created it a moment ago)."""
        name = next(iter(params.values()))
        with provider_errors(f"creating {what.replace('_', ' ')} {name}", "sagemaker"):
            try:
                getattr(self.sagemaker, f"create_{what}")(**params)
                return True
            except Exception as exc:
                message = error_message(exc).lower()
                if error_code(exc) == "ResourceInUse" or "already exist" in message:
                    return False
                raise

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        name = next(iter(params.values()))
        with provider_errors(f"{operation.replace('_', ' ')} {name}", "sagemaker"):
            return getattr(self.sagemaker, operation)(**params)

    def delete(self, what: str, **params: str) -> None:
        """`delete_<what>`; silent when it is already gone."""
        with provider_errors(f"deleting {what.replace('_', ' ')} {next(iter(params.values()))}", "sagemaker"):
            try:
                getattr(self.sagemaker, f"delete_{what}")(**params)
            except Exception as exc:
                if not not_found(exc):
                    raise

    def wait(self, what: str, name: str, ctx: Context, *, required: bool = False) -> dict[str, Any] | None:
        """Poll `describe_<what>` until it is in service, with a progress line at each change; None when
        `--no-wait` or Ctrl-C leaves it to the next apply (never when `required`: an update waits, since
        the next step needs it). ProviderError when it fails or takes too long."""
        key = "EndpointName" if what == "endpoint" else "InferenceComponentName"
        status_key = "EndpointStatus" if what == "endpoint" else "InferenceComponentStatus"
        words = what.replace("_", " ")
        interval, waited, shown = self.poll, 0.0, ""
        while True:
            described = self.describe(what, **{key: name})
            if described is None:
                raise ProviderError(f"{words} {name} disappeared while it was being set up",
                                    "Run apply again: it creates it again.")
            status = str(described.get(status_key) or "")
            if status == IN_SERVICE:
                if shown:
                    ctx.progress(f"{words} {name}: InService")
                return described
            if status == FAILED:
                raise ProviderError(f"{words} {name} failed: {described.get('FailureReason') or 'no reason given'}",
                                    f"See its CloudWatch log (/aws/sagemaker/Endpoints/{ctx.address.split('.')[-1]}…); "
                                    "fix the cause, then run apply again (it recreates what failed).")
            if status != shown:
                ctx.progress(f"{words} {name}: {status}")
                shown = status
            if not required and (ctx.cancelled.is_set() or not ctx.wait):
                return None
            if waited >= self.timeout:
                raise ProviderError(f"{words} {name} is still {status} after {self.timeout / 60:.0f} min",
                                    "It may still finish; run apply again to pick it up.")
            self.pause_for(ctx)(interval)
            waited += interval
            interval = min(interval * 2, self.max_poll)

    def wait_gone(self, what: str, name: str, ctx: Context) -> None:
        key = "EndpointName" if what == "endpoint" else "InferenceComponentName"
        interval, waited = self.poll, 0.0
        while self.describe(what, **{key: name}) is not None:
            if waited >= self.timeout:
                raise ProviderError(f"{what.replace('_', ' ')} {name} is still being deleted",
                                    "SageMaker finishes on its own; run apply again later.")
            self.pause_for(ctx)(interval)
            waited += interval
            interval = min(interval * 2, self.max_poll)

    def pause_for(self, ctx: Context) -> Callable[[float], None]:
        """The pause between polls: cut short by the first Ctrl-C; after it, a wait that must go on
        (an update's next step needs what it waits for) sleeps in full rather than polling hot."""
        if self._sleep is not None:
            return self._sleep

        def pause(seconds: float) -> None:
            if ctx.cancelled.is_set():
                time.sleep(seconds)
            else:
                ctx.cancelled.wait(seconds)

        return pause
