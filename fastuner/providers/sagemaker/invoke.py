"""Invoking a SageMaker deployment: `sagemaker-runtime` InvokeEndpoint behind the `Endpoint` protocol
(fastuner/providers/endpoint.py), so that `fastuner invoke`, `--batch` and `--evaluate` work as they do
on a local server and print the same answers.

Two serving modes, recorded in the deployment's outputs (`mode`):
- `lmi`: the LMI (DJL, vLLM) image with one inference component per adapter. A request names the
  adapter's component (`InferenceComponentName`, from `outputs.components`), the base model's
  (`outputs.base_component`) when no adapter is given. The LMI handler takes one string a request, so a
  list of inputs is sent one request each. The prompt is built as training built it
  (containers/README.md, `prompt_format`): with the base tokenizer's chat template the request uses
  LMI's chat schema (`messages`: LMI applies the template), otherwise the input plus a newline; the base
  model gets the input as is. Decoding is greedy with 64 new tokens unless the options say otherwise, as
  the local server does; the answer is `{"generated_text": ...}` either way.
- `serve`: the project's own server (containers/serve) on the endpoint; the body is the local server's
  (`{"inputs", "adapter", generation keys}`) and so is the answer.

Retries: throttling (ThrottlingException, 429 ModelNotReadyException), SageMaker's 5xx
(InternalFailure, ServiceUnavailable, InternalDependencyException), the container's 5xx or 429
(ModelError with such an OriginalStatusCode) and connection failures are retried up to `retries` times
with exponential backoff and jitter; botocore itself retries nothing here (one attempt a call), so the
bound is this one and a Ctrl-C stops it between attempts. The container's 4xx and SageMaker's
ValidationError are never retried. Error codes are those of the local server where the container says
one, and `unknown_adapter`, `endpoint_not_found`, `access_denied` (fatal: a batch stops sending) where
SageMaker refuses the request itself.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastuner.providers.base import ProviderError
from fastuner.providers.endpoint import InvokeError
from fastuner.providers.sagemaker.errors import provider_errors
from fastuner.state.model import ResourceState

LMI, SERVE = "lmi", "serve"
CHAT_TEMPLATE, PLAIN = "chat_template", "plain"
DEFAULT_MAX_NEW_TOKENS = 64  # the local server's default, so that answers compare
MAX_CONCURRENCY = 256  # `fastuner invoke --concurrency` at most: the client's connection pool
SERVING = frozenset({"InService", "Updating", "SystemUpdating"})  # an endpoint being updated still serves

# SageMaker's own refusals that say nothing about the request: retried
RETRIED_CODES = frozenset({"ThrottlingException", "Throttling", "ModelNotReadyException", "InternalFailure",
                           "ServiceUnavailable", "InternalDependencyException"})


def _retryable(status: int | None) -> bool:
    return status is not None and (status >= 500 or status == 429)


@dataclass
class SageMakerEndpoint:
    """One SageMaker endpoint's InvokeEndpoint, as an `Endpoint`. `sleep` and `rng` are injectable."""

    runtime: Any  # a sagemaker-runtime client
    endpoint_name: str
    mode: str = LMI
    base_component: str = ""
    components: Mapping[str, str] = field(default_factory=dict)
    prompt_format: str = CHAT_TEMPLATE
    retries: int = 3
    backoff: float = 0.5  # first delay in seconds; doubles on each retry
    max_backoff: float = 10.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    requests: int = 0  # requests sent, retries included (for the summary)
    cancel: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def inputs_per_request(self) -> int | None:
        """LMI takes one prompt a request: a batch sends rows one by one (and `concurrency` of them at
        once, which vLLM batches on the GPU); the project's server takes lists."""
        return 1 if self.mode == LMI else None

    def invoke(self, inputs: str | list[str], adapter: str | None = None,
               params: dict[str, Any] | None = None) -> Any:
        if self.mode == SERVE:
            return self._serve(inputs, adapter, params or {})
        component = self._component(adapter)
        if isinstance(inputs, list):  # LMI takes one prompt a request: one after the other
            return [self._generate(text, component, adapter, params or {}) for text in inputs]
        return self._generate(inputs, component, adapter, params or {})

    # --- the two modes ---------------------------------------------------------------------------

    def _serve(self, inputs: str | list[str], adapter: str | None, params: dict[str, Any]) -> Any:
        body: dict[str, Any] = {"inputs": inputs, **params}
        if adapter:
            body["adapter"] = adapter
        answer = self._send(body, self.base_component or None)
        if isinstance(inputs, list):
            if not isinstance(answer, list) or len(answer) != len(inputs):
                got = len(answer) if isinstance(answer, list) else "a non-list"
                raise InvokeError(f"the endpoint answered {len(inputs)} inputs with {got}", code="bad_answer")
            return answer
        if not isinstance(answer, dict):
            raise InvokeError(f"the endpoint's answer is not a JSON object: {str(answer)[:200]}", code="bad_answer")
        return answer

    def _component(self, adapter: str | None) -> str:
        if adapter is None:
            if not self.base_component:
                raise InvokeError(f"the endpoint {self.endpoint_name} records no base inference component",
                                  status=400, code="adapter_required")
            return self.base_component
        component = self.components.get(adapter)
        if not component:
            raise InvokeError(f"adapter {adapter!r} has no inference component on {self.endpoint_name}",
                              status=404, code="unknown_adapter")
        return component

    def _generate(self, text: str, component: str, adapter: str | None, params: dict[str, Any]) -> dict[str, Any]:
        chat = adapter is not None and self.prompt_format == CHAT_TEMPLATE
        body = lmi_chat_body(text, params) if chat else lmi_body(text if adapter is None else text + "\n", params)
        return lmi_answer(self._send(body, component))

    # --- one request, retried ----------------------------------------------------------------------

    def _send(self, body: dict[str, Any], component: str | None) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as NoConnection

        request: dict[str, Any] = {"EndpointName": self.endpoint_name, "Body": json.dumps(body).encode(),
                                   "ContentType": "application/json", "Accept": "application/json"}
        if component:
            request["InferenceComponentName"] = component
        attempt = 0
        while True:
            if self.cancel.is_set():
                raise InvokeError("not sent: interrupted", code="interrupted")
            with self._lock:
                self.requests += 1
            try:
                response = self.runtime.invoke_endpoint(**request)
                raw = response["Body"].read()
            except ClientError as exc:
                error, retry = invoke_error(exc, self.endpoint_name, component)
            except (NoConnection, HTTPClientError) as exc:  # no answer: connection refused, reset or timed out
                error, retry = InvokeError(f"no answer from the endpoint {self.endpoint_name}: {exc}"), True
            except BotoCoreError as exc:  # the request could not be made (credentials): the same for every row
                error, retry = InvokeError(f"cannot call the endpoint {self.endpoint_name}: {exc}"), False
            else:
                return _decoded(raw)
            if not retry or attempt >= self.retries:
                raise error
            self.sleep(min(self.max_backoff, self.backoff * 2 ** attempt) * self.rng.uniform(0.5, 1.0))
            attempt += 1


# --- bodies and answers ------------------------------------------------------------------------------


def lmi_body(prompt: str, params: dict[str, Any]) -> dict[str, Any]:
    """LMI's standard schema: `{"inputs", "parameters"}`, greedy unless a temperature above 0 is given."""
    parameters: dict[str, Any] = {"max_new_tokens": params.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)}
    temperature = params.get("temperature") or 0.0
    parameters["do_sample"] = temperature > 0
    if temperature > 0:
        parameters["temperature"] = temperature
        if params.get("top_p") is not None:
            parameters["top_p"] = params["top_p"]
    if params.get("stop"):
        parameters["stop_sequences"] = list(params["stop"])
    if params.get("seed") is not None:
        parameters["seed"] = params["seed"]
    return {"inputs": prompt, "parameters": parameters}


def lmi_chat_body(text: str, params: dict[str, Any]) -> dict[str, Any]:
    """LMI's chat schema (OpenAI style): LMI applies the base tokenizer's chat template to the message,
    as training formatted its prompts. Temperature 0 is greedy."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}],
                            "max_tokens": params.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS),
                            "temperature": params.get("temperature") or 0.0}
    if body["temperature"] > 0 and params.get("top_p") is not None:
        body["top_p"] = params["top_p"]
    if params.get("stop"):
        body["stop"] = list(params["stop"])
    if params.get("seed") is not None:
        body["seed"] = params["seed"]
    return body


def lmi_answer(answer: Any) -> dict[str, Any]:
    """`{"generated_text": ...}` from LMI's standard answer, its TGI-compatible list of one, or its chat
    answer (`choices[0].message.content`)."""
    if isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]
    if isinstance(answer, dict):
        details = answer.get("details")
        if isinstance(details, dict) and details.get("finish_reason") == "error":
            raise InvokeError("the model failed while generating (LMI finish_reason: error)", status=500,
                              code="generation_failed")
        if isinstance(answer.get("generated_text"), str):
            return {"generated_text": answer["generated_text"]}
        choices = answer.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            content = (choices[0].get("message") or {}).get("content")
            if isinstance(content, str):
                return {"generated_text": content}
    raise InvokeError(f"the endpoint's answer has no generated text: {json.dumps(answer)[:200]}", code="bad_answer")


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", "replace")
        raise InvokeError(f"the endpoint's answer is not JSON: {text[:200]}", code="bad_answer") from None


def invoke_error(exc: Any, endpoint: str, component: str | None) -> tuple[InvokeError, bool]:
    """(the error, whether to retry) for a ClientError of InvokeEndpoint."""
    response = exc.response
    code = str((response.get("Error") or {}).get("Code") or "")
    message = str((response.get("Error") or {}).get("Message") or exc)
    status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0) or None
    if code == "ModelError":  # the container answered with an error: its own status and body
        original = response.get("OriginalStatusCode")
        original = int(original) if isinstance(original, int | str) and str(original).isdigit() else None
        said, said_code = _container_error(response.get("OriginalMessage"), message)
        return InvokeError(said, status=original or status, code=said_code), _retryable(original)
    if code in RETRIED_CODES or _retryable(status):
        return InvokeError(f"{endpoint}: {message} ({code or status})", status=status,
                           code="throttled" if "Throttl" in code or status == 429 else ""), True
    if code in ("AccessDeniedException", "AccessDenied"):
        return InvokeError(f"{message} — allow sagemaker:InvokeEndpoint on the endpoint {endpoint} "
                           "(`fastuner iam-policy` prints the policy)", status=status, code="access_denied"), False
    lowered = message.lower()
    if "inference component" in lowered and ("not found" in lowered or "does not exist" in lowered
                                             or "could not find" in lowered):
        return InvokeError(f"the inference component {component} is not on the endpoint {endpoint} ({message}); "
                           "`fastuner plan` shows what apply recreates", status=status or 404,
                           code="unknown_adapter"), False
    if "endpoint" in lowered and ("not found" in lowered or "could not find" in lowered):
        return InvokeError(f"the endpoint {endpoint} no longer exists ({message}); `fastuner plan` shows it "
                           "being recreated", status=status or 404, code="endpoint_not_found"), False
    return InvokeError(f"{message} ({code})" if code else message, status=status), False


def _container_error(original: Any, fallback: str) -> tuple[str, str]:
    """What the container said: the local server's `{"error", "code"}`, LMI's `{"error"}` (its `code`
    is a number), or its text."""
    if isinstance(original, str):
        try:
            payload = json.loads(original)
        except ValueError:
            return (original.strip()[:500] or fallback), ""
        if isinstance(payload, dict):
            said = payload.get("error") or payload.get("message")
            code = payload.get("code")
            return (str(said) if said else fallback), (code if isinstance(code, str) else "")
    return fallback, ""


# --- the capability the composition root wires ----------------------------------------------------


class SageMakerEndpoints:
    """`EndpointSource` for SageMaker deployments: reads the deployment's recorded outputs, checks with
    one DescribeEndpoint that the endpoint serves, and hands out its `SageMakerEndpoint`."""

    def __init__(self, session: Any, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.session = session
        self.sleep = sleep

    def endpoint(self, rs: ResourceState, *, timeout: float, retries: int) -> SageMakerEndpoint:
        from botocore.exceptions import ClientError

        from fastuner.aws.errors import error_code

        outputs = rs.outputs or {}
        name = outputs.get("endpoint_name")
        if not name:
            raise ProviderError(f"{rs.address} records no SageMaker endpoint (is it still being created?)",
                                "Run `fastuner apply` to finish it.")
        try:
            with provider_errors(f"reading the endpoint {name}", "sagemaker"):
                try:
                    described = self.session.client("sagemaker").describe_endpoint(EndpointName=name)
                except ClientError as exc:
                    text = str(((exc.response or {}).get("Error") or {}).get("Message") or "")
                    if error_code(exc) == "ValidationException" and "could not find" in text.lower():
                        raise _Gone from None
                    raise
        except _Gone:
            raise ProviderError(f"the endpoint {name} of {rs.address} no longer exists",
                                "`fastuner plan` will show it being recreated, `fastuner apply` recreates it.") from None
        status = described.get("EndpointStatus", "")
        if status not in SERVING:
            why = f": {described['FailureReason']}" if described.get("FailureReason") else ""
            raise ProviderError(f"the endpoint {name} of {rs.address} is {status}{why}",
                                "Wait until it is InService (`fastuner apply` waits for it), or run `fastuner plan` "
                                "to see whether it must be recreated.")
        runtime = self.session.client("sagemaker-runtime", max_attempts=1, read_timeout=timeout,
                                      max_pool_connections=MAX_CONCURRENCY)
        components = outputs.get("components") or {}
        return SageMakerEndpoint(runtime, name, mode=outputs.get("mode") or LMI,
                                 base_component=outputs.get("base_component") or "",
                                 components=dict(components) if isinstance(components, Mapping) else {},
                                 prompt_format=outputs.get("prompt_format") or CHAT_TEMPLATE,
                                 retries=retries, sleep=self.sleep)


class _Gone(Exception):
    pass
