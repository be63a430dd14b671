"""`fastuner invoke` on a SageMaker deployment: InvokeEndpoint as fastuner sends it (validated against the
service model by botocore's Stubber), answers in the local server's shape, retries of throttling and 5xx,
and `--batch` through `run_rows` against a fake endpoint that answers on the wire (a throttling storm,
a bad row, a vanished component)."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from fastuner.aws.clients import AwsSession
from fastuner.providers.base import ProviderError
from fastuner.providers.endpoint import InvokeError, Row, run_rows
from fastuner.providers.sagemaker.invoke import (
    MAX_CONCURRENCY,
    SageMakerEndpoint,
    SageMakerEndpoints,
    lmi_answer,
)
from fastuner.state.model import ResourceState, Status

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
ENDPOINT = "demo-ep-api-1a2b3c4d"
COMPONENTS = {"intents": f"{ENDPOINT}-intents", "entities": f"{ENDPOINT}-entities"}


def runtime() -> Any:
    return AwsSession("us-east-1", environ=ENV).client("sagemaker-runtime", max_attempts=1)


def body(payload: Any) -> dict[str, Any]:
    data = json.dumps(payload).encode()
    return {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentType": "application/json"}


def sent(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(params["Body"])


class Recorder:
    """Every request as the client sent it (after validation against the service model)."""

    def __init__(self, client: Any) -> None:
        self.calls: list[dict[str, Any]] = []
        client.meta.events.register("provide-client-params.sagemaker-runtime.InvokeEndpoint",
                                    lambda params, **_: self.calls.append(dict(params)))


def lmi(client: Any, **kw: Any) -> SageMakerEndpoint:
    kw.setdefault("sleep", lambda s: None)
    return SageMakerEndpoint(client, ENDPOINT, mode="lmi", base_component=f"{ENDPOINT}-base",
                             components=COMPONENTS, **kw)


# --- what is sent, what comes back -------------------------------------------------------------------


def test_lmi_names_the_adapters_component_and_sends_the_prompt_as_training_built_it() -> None:
    client = runtime()
    seen = Recorder(client)
    with Stubber(client) as stub:
        stub.add_response("invoke_endpoint", body({"choices": [{"message": {"content": "Whiterun"}}]}),
                          {"EndpointName": ENDPOINT, "InferenceComponentName": COMPONENTS["entities"], "Body": ANY,
                           "ContentType": "application/json", "Accept": "application/json"})
        stub.add_response("invoke_endpoint", body({"generated_text": " a city"}),
                          {"EndpointName": ENDPOINT, "InferenceComponentName": f"{ENDPOINT}-base", "Body": ANY,
                           "ContentType": "application/json", "Accept": "application/json"})
        stub.add_response("invoke_endpoint", body([{"generated_text": "Riften"}]),  # TGI-compatible list
                          {"EndpointName": ENDPOINT, "InferenceComponentName": COMPONENTS["entities"], "Body": ANY,
                           "ContentType": "application/json", "Accept": "application/json"})
        endpoint = lmi(client)
        assert endpoint.invoke("Where is Dragonsreach?", "entities") == {"generated_text": "Whiterun"}
        assert endpoint.invoke("Whiterun is", None, {"max_new_tokens": 8, "temperature": 0.7, "top_p": 0.9,
                                                     "stop": ["\n"], "seed": 7}) == {"generated_text": " a city"}
        plain = lmi(client, prompt_format="plain")
        assert plain.invoke("Where is the Ratway?", "entities") == {"generated_text": "Riften"}
        stub.assert_no_pending_responses()
    chat, base, plain_body = (sent(c) for c in seen.calls)
    # the chat template is LMI's to apply (as training applied the base tokenizer's); greedy, 64 tokens
    assert chat == {"messages": [{"role": "user", "content": "Where is Dragonsreach?"}], "max_tokens": 64,
                    "temperature": 0.0}
    # the base model gets the input as is; the options in LMI's names
    assert base == {"inputs": "Whiterun is", "parameters": {"max_new_tokens": 8, "do_sample": True,
                                                            "temperature": 0.7, "top_p": 0.9,
                                                            "stop_sequences": ["\n"], "seed": 7}}
    # an adapter trained without a chat template: the input and a newline, as training formatted it
    assert plain_body == {"inputs": "Where is the Ratway?\n", "parameters": {"max_new_tokens": 64, "do_sample": False}}
    assert endpoint.requests == 2 and plain.requests == 1


def test_lmi_sends_a_list_one_input_a_request_and_answers_in_order() -> None:
    client = runtime()
    with Stubber(client) as stub:
        for text in ("one", "two", "three"):
            stub.add_response("invoke_endpoint", body({"generated_text": text.upper()}))
        assert lmi(client).invoke(["one", "two", "three"], "intents") == [
            {"generated_text": "ONE"}, {"generated_text": "TWO"}, {"generated_text": "THREE"}]


def test_serve_mode_sends_the_local_servers_body_to_the_endpoint() -> None:
    client = runtime()
    seen = Recorder(client)
    with Stubber(client) as stub:
        stub.add_response("invoke_endpoint", body([{"label": "refund", "scores": {"refund": 0.9, "other": 0.1}}] * 2),
                          {"EndpointName": ENDPOINT, "Body": ANY, "ContentType": "application/json",
                           "Accept": "application/json"})
        endpoint = SageMakerEndpoint(client, ENDPOINT, mode="serve", components={"intents": ""})
        answer = endpoint.invoke(["a", "b"], "intents", {"max_new_tokens": 5})
    assert answer == [{"label": "refund", "scores": {"refund": 0.9, "other": 0.1}}] * 2
    assert sent(seen.calls[0]) == {"inputs": ["a", "b"], "max_new_tokens": 5, "adapter": "intents"}
    assert "InferenceComponentName" not in seen.calls[0]


@pytest.mark.parametrize(("error", "code", "status", "fatal"), [
    # the container refused: its own status and code (the local server's JSON error)
    ({"service_error_code": "ModelError", "http_status_code": 424, "modeled_fields": {
        "OriginalStatusCode": 422, "OriginalMessage": json.dumps({"error": "inputs[0] is 9,000 characters",
                                                                  "code": "input_too_long"})}},
     "input_too_long", 422, False),
    ({"service_error_code": "ModelError", "http_status_code": 424, "modeled_fields": {
        "OriginalStatusCode": 404, "OriginalMessage": json.dumps({"error": "no adapter 'x'", "code": "unknown_adapter"})}},
     "unknown_adapter", 404, True),
    # SageMaker refused: an inference component that is gone, an endpoint that is gone, no permission
    ({"service_error_code": "ValidationError", "http_status_code": 400,
      "service_message": f"Inference Component {COMPONENTS['intents']} not found."}, "unknown_adapter", 400, True),
    ({"service_error_code": "ValidationError", "http_status_code": 400,
      "service_message": f"Endpoint {ENDPOINT} of account 123456789012 not found."}, "endpoint_not_found", 400, True),
    ({"service_error_code": "AccessDeniedException", "http_status_code": 400,
      "service_message": "User is not authorized to perform: sagemaker:InvokeEndpoint"}, "access_denied", 400, True),
])
def test_refusals_are_not_retried_and_keep_the_codes_batches_act_on(error: dict, code: str, status: int,
                                                                       fatal: bool) -> None:
    client = runtime()
    with Stubber(client) as stub:
        stub.add_client_error("invoke_endpoint", **error)
        endpoint = lmi(client, retries=3)
        with pytest.raises(InvokeError) as caught:
            endpoint.invoke("text", "intents")
    assert (caught.value.code, caught.value.status, caught.value.fatal) == (code, status, fatal)
    assert endpoint.requests == 1


def test_throttling_and_5xx_are_retried_with_backoff_then_given_up() -> None:
    client = runtime()
    slept: list[float] = []
    with Stubber(client) as stub:
        stub.add_client_error("invoke_endpoint", "ThrottlingException", "Rate exceeded", 400)
        stub.add_client_error("invoke_endpoint", "ModelNotReadyException", "not ready", 429)
        stub.add_client_error("invoke_endpoint", "ModelError", "container failed", 424,
                              modeled_fields={"OriginalStatusCode": 503, "OriginalMessage": "busy"})
        stub.add_client_error("invoke_endpoint", "ServiceUnavailable", "try again", 503)
        stub.add_response("invoke_endpoint", body({"generated_text": "ok"}))
        endpoint = lmi(client, retries=4, sleep=slept.append)
        assert endpoint.invoke("x", "intents") == {"generated_text": "ok"}
        assert endpoint.requests == 5 and len(slept) == 4
        assert all(0.5 * 0.5 * 2 ** i <= s <= 0.5 * 2 ** i for i, s in enumerate(slept))  # doubling, jittered
        for _ in range(3):
            stub.add_client_error("invoke_endpoint", "InternalFailure", "oops", 500)
        with pytest.raises(InvokeError) as caught:
            lmi(client, retries=2).invoke("x", "intents")
    assert caught.value.status == 500 and not caught.value.fatal


def test_no_answer_at_all_is_retried_then_stops_the_batch() -> None:
    from botocore.exceptions import EndpointConnectionError

    client = runtime()
    attempts = []

    def refuse(request: Any, **_: Any) -> None:
        attempts.append(request.url)
        raise EndpointConnectionError(endpoint_url=request.url)

    client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", refuse)
    with pytest.raises(InvokeError) as caught:
        lmi(client, retries=2).invoke("x", "intents")
    assert len(attempts) == 3 and caught.value.status is None and caught.value.fatal  # connection_failed


def test_a_cancelled_endpoint_starts_no_new_attempt() -> None:
    client = runtime()
    with Stubber(client) as stub:
        stub.add_client_error("invoke_endpoint", "ThrottlingException", "Rate exceeded", 400)
        endpoint = lmi(client, retries=5)
        endpoint.sleep = lambda s: endpoint.cancel.set()  # Ctrl-C while backing off
        with pytest.raises(InvokeError) as caught:
            endpoint.invoke("x", "intents")
    assert caught.value.code == "interrupted" and endpoint.requests == 1


def test_lmi_answers_without_text_are_errors() -> None:
    with pytest.raises(InvokeError, match="failed while generating"):
        lmi_answer({"generated_text": "", "details": {"finish_reason": "error"}})
    with pytest.raises(InvokeError) as caught:
        lmi_answer({"outputs": []})
    assert caught.value.code == "bad_answer"


def test_an_adapter_without_a_component_is_unknown_before_anything_is_sent() -> None:
    client = runtime()
    with Stubber(client):
        endpoint = lmi(client)
        with pytest.raises(InvokeError) as caught:
            endpoint.invoke("x", "not-deployed")
    assert caught.value.code == "unknown_adapter" and caught.value.fatal and endpoint.requests == 0


# --- batches on the wire -----------------------------------------------------------------------------


class Raw:
    def __init__(self, data: bytes) -> None:
        self._io = io.BytesIO(data)

    def stream(self, **_: Any):
        yield self._io.read()

    def read(self, amt: int | None = None) -> bytes:
        return self._io.read() if amt is None else self._io.read(amt)

    def close(self) -> None:
        pass


class FakeLmi:
    """An LMI endpoint on the wire (what botocore parses): answers each input upper-cased; throttles the
    first `storm` requests; refuses inputs containing "BAD" as the container would (a 4xx ModelError);
    a component in `gone` is unknown to SageMaker."""

    def __init__(self, client: Any, storm: int = 0, gone: frozenset[str] = frozenset()) -> None:
        self.storm = storm
        self.gone = gone
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = self.most_in_flight = 0
        client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", self.answer)

    def answer(self, request: Any, **_: Any) -> AWSResponse:
        component = request.headers.get("X-Amzn-SageMaker-Inference-Component")
        component = component.decode() if isinstance(component, bytes) else component
        payload = json.loads(request.body)
        with self.lock:
            self.requests += 1
            throttled = self.requests <= self.storm
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.003)  # the model's time: lets requests overlap
            if throttled:
                return reply(request, 400, {"message": "Rate exceeded"}, "ThrottlingException")
            if component in self.gone:
                return reply(request, 400, {"message": f"Inference Component {component} not found."}, "ValidationError")
            text = (payload.get("messages") or [{}])[0].get("content") or payload.get("inputs")
            if "BAD" in text:
                return reply(request, 424, {"Message": "Received client error (400) from primary",
                                            "OriginalStatusCode": 400,
                                            "OriginalMessage": json.dumps({"error": "bad input", "code": 424})},
                             "ModelError")
            return reply(request, 200, {"generated_text": text.upper()})
        finally:
            with self.lock:
                self.in_flight -= 1


def reply(request: Any, status: int, payload: Any, error: str = "") -> AWSResponse:
    data = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
    if error:
        headers["x-amzn-ErrorType"] = error
    return AWSResponse(request.url, status, headers, Raw(data))


def rows(n: int, bad: int | None = None) -> list[Row]:
    return [Row(i + 1, {"input": f"row {i + 1}" + (" BAD" if i + 1 == bad else "")}) for i in range(n)]


def test_a_batch_rides_out_a_throttling_storm_and_reports_the_bad_row_in_input_order() -> None:
    client = runtime()
    fake = FakeLmi(client, storm=12)
    endpoint = lmi(client, retries=12)  # no row can run out of retries, however the storm falls
    out = list(run_rows(endpoint, rows(40, bad=17), adapter="intents", concurrency=4, rows_per_request=3))
    assert [line.get("row") or int(line["input"].split()[1]) for line in out] == list(range(1, 41))
    errors = [line for line in out if "error" in line]
    assert len(errors) == 1 and errors[0]["row"] == 17
    assert errors[0]["status"] == 400 and errors[0]["error"] == "bad input" and errors[0]["code"] == "http_400"
    assert [line["output"] for line in out[:2]] == [{"generated_text": "ROW 1"}, {"generated_text": "ROW 2"}]
    # one row a request (LMI takes one prompt), so the bad row fails alone and nothing is sent twice
    assert endpoint.requests == fake.requests == 40 + 12
    assert 1 < fake.most_in_flight <= 4  # bounded concurrency


def test_a_vanished_component_stops_the_batch_instead_of_trying_every_row() -> None:
    client = runtime()
    fake = FakeLmi(client, gone=frozenset({COMPONENTS["intents"]}))
    endpoint = lmi(client)
    out = list(run_rows(endpoint, rows(30), adapter="intents", concurrency=1, rows_per_request=1))
    assert all(line["code"] == "unknown_adapter" for line in out)
    assert fake.requests == 1 and out[1]["error"].startswith("not sent:")


# --- the endpoint source ----------------------------------------------------------------------------


def deployment(**outputs: Any) -> ResourceState:
    base = {"endpoint_name": ENDPOINT, "mode": "lmi", "base_component": f"{ENDPOINT}-base",
            "components": COMPONENTS, "adapters": sorted(COMPONENTS)}
    return ResourceState(address="deployment.api", kind="deployment", name="api", status=Status.READY,
                         physical_name=ENDPOINT, outputs={**base, **outputs})


def test_the_source_checks_the_endpoint_serves_once_and_builds_its_endpoint() -> None:
    session = AwsSession("us-east-1", environ=ENV)
    sagemaker = session.client("sagemaker")
    with Stubber(sagemaker) as stub:
        stub.add_response("describe_endpoint", describe("Updating"), {"EndpointName": ENDPOINT})
        endpoint = SageMakerEndpoints(session).endpoint(deployment(), timeout=300.0, retries=2)
        stub.assert_no_pending_responses()
    assert (endpoint.endpoint_name, endpoint.mode, endpoint.retries) == (ENDPOINT, "lmi", 2)
    assert endpoint.components == COMPONENTS and endpoint.base_component == f"{ENDPOINT}-base"
    config = endpoint.runtime.meta.config
    assert config.read_timeout == 300.0 and config.max_pool_connections == MAX_CONCURRENCY
    assert config.retries["total_max_attempts"] == 1  # the endpoint's own retries are the only ones


@pytest.mark.parametrize(("answer", "message"), [
    ({"status": "Creating"}, f"the endpoint {ENDPOINT} of deployment.api is Creating"),
    ({"status": "Failed", "reason": "out of capacity"}, "is Failed: out of capacity"),
    ({"error": f"Could not find endpoint \"{ENDPOINT}\"."}, f"the endpoint {ENDPOINT} of deployment.api no longer exists"),
])
def test_an_endpoint_that_does_not_serve_is_a_provider_error(answer: dict, message: str) -> None:
    session = AwsSession("us-east-1", environ=ENV)
    with Stubber(session.client("sagemaker")) as stub:
        if "error" in answer:
            stub.add_client_error("describe_endpoint", "ValidationException", answer["error"], 400)
        else:
            stub.add_response("describe_endpoint", describe(answer["status"], answer.get("reason")))
        with pytest.raises(ProviderError) as caught:
            SageMakerEndpoints(session).endpoint(deployment(), timeout=60.0, retries=1)
    assert message in caught.value.message and caught.value.hint


def test_a_deployment_without_an_endpoint_name_is_explained() -> None:
    rs = deployment(endpoint_name=None)
    with pytest.raises(ProviderError, match="records no SageMaker endpoint"):
        SageMakerEndpoints(AwsSession("us-east-1", environ=ENV)).endpoint(rs, timeout=1.0, retries=0)


def describe(status: str, reason: str | None = None) -> dict[str, Any]:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 1, tzinfo=UTC)
    out = {"EndpointName": ENDPOINT, "EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{ENDPOINT}",
           "EndpointStatus": status, "CreationTime": now, "LastModifiedTime": now}
    if reason:
        out["FailureReason"] = reason
    return out


def test_evaluate_scores_the_adapter_on_its_component_and_the_base_model_on_the_base_component() -> None:
    from fastuner.config.tasks import Task
    from fastuner.providers.evaluation import EvalSplit, evaluate

    client = runtime()
    seen = Recorder(client)
    FakeLmi(client)  # answers upper-cased whatever the component: the base model's answers differ below

    def base_model(request: Any, **_: Any) -> AWSResponse | None:  # answers the input as is
        component = request.headers.get("X-Amzn-SageMaker-Inference-Component")
        component = component.decode() if isinstance(component, bytes) else component
        return reply(request, 200, {"generated_text": json.loads(request.body)["inputs"]}) \
            if component == f"{ENDPOINT}-base" else None

    client.meta.events.register_first("before-send.sagemaker-runtime.InvokeEndpoint", base_model)
    split = EvalSplit("adapter.entities", "dataset.d", Task.TEXT_GENERATION,
                      [{"input": "abc", "target": "ABC"}, {"input": "xyz", "target": "XYZ"}, {"input": "Q", "target": "Q"}])
    result = evaluate(lmi(client), split, "entities", {"test_exact_match": 1.0}, deployment="deployment.api",
                      concurrency=2, rows_per_request=8)
    assert result["adapter_metrics"] == {"exact_match": 1.0}
    assert result["base_metrics"]["exact_match"] == pytest.approx(1 / 3) and result["failed"] == {
        "adapter": 0, "base model": 0}
    components = sorted(c["InferenceComponentName"] for c in seen.calls)
    assert components == [f"{ENDPOINT}-base"] * 3 + [COMPONENTS["entities"]] * 3
