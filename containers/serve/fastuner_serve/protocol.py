"""The /invocations request body and adapter selection, validated into plain values (no torch)."""

from __future__ import annotations

import difflib
import json
import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError

COMPONENT_HEADER = "X-Amzn-SageMaker-Inference-Component"
ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "stop", "seed")
BODY_KEYS = ("inputs", "adapter", "parameters", *GENERATION_KEYS)


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Invocation:
    adapter: str | None  # None: the base model
    inputs: tuple[str, ...]
    batched: bool  # `inputs` was a list: answer with a list
    params: GenerationParams
    generation_keys: tuple[str, ...]  # the generation keys the client gave (refused for classification)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def parse_json(body: bytes) -> Any:
    """A request body as JSON, or a 400: invalid JSON, and JSON nested deeper than the parser's
    recursion limit (`[[[[…]]]]`, which raised RecursionError: a 500, found by the fuzzer)."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad_request(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise bad_request("the body is not valid JSON: it is nested too deeply") from None


def parse_invocation(body: bytes, headers: Mapping[str, str], *, max_inputs: int,
                     max_new_tokens_limit: int) -> Invocation:
    data = parse_json(body)
    if not isinstance(data, dict):
        raise bad_request('the body must be a JSON object like {"inputs": "text"}')
    for key in data:
        if key not in BODY_KEYS:
            close = difflib.get_close_matches(key, BODY_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise bad_request(f"unknown field '{key}'{hint}; fields: {', '.join(BODY_KEYS)}")

    inputs = data.get("inputs")
    batched = isinstance(inputs, list)
    items = inputs if batched else [inputs]
    if inputs is None or not items or not all(isinstance(x, str) for x in items):
        raise bad_request("'inputs' must be a string or a non-empty list of strings")
    for i, item in enumerate(items):
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800") that no tokenizer takes
            where = f"inputs[{i}]" if batched else "the input"
            raise bad_request(f"{where} is not valid Unicode text: it holds a lone surrogate "
                              "(\\ud800-\\udfff without its pair)") from None
    if len(items) > max_inputs:
        raise ApiError(413, "too_many_inputs", f"{len(items)} inputs in one request; the limit is {max_inputs}")

    if not isinstance(data.get("parameters", {}), dict | None):
        raise bad_request("'parameters' must be an object")
    params = dict(data.get("parameters") or {})
    for key in params:
        if key not in GENERATION_KEYS:
            raise bad_request(f"unknown parameter '{key}'; parameters: {', '.join(GENERATION_KEYS)}")
    for key in GENERATION_KEYS:
        if key in data:
            if key in params:
                raise bad_request(f"'{key}' is given both at the top level and in 'parameters'")
            params[key] = data[key]
    return Invocation(
        adapter=select_adapter(data.get("adapter"), headers),
        inputs=tuple(items), batched=batched,
        params=parse_generation(params, max_new_tokens_limit), generation_keys=tuple(params),
    )


def check_texts(invocation: Invocation, *, max_chars: int | None, adapter: str | None) -> None:
    """The dataset rules (fastuner/data/rules.py; this program keeps its own copy) for each input: after
    NFC normalisation and stripping, an input must not be empty and must not be longer than the
    `max_input_chars` of the dataset the adapter was trained on (`None`: no limit known). The
    whole request is refused, naming the first bad input, as for every per-input error."""
    for i, text in enumerate(invocation.inputs):
        where = f"inputs[{i}]" if invocation.batched else "the input"
        problem = text_problem(text, max_chars, adapter)
        if problem is not None:
            status, code, message = problem
            raise ApiError(status, code, f"{where} {message}")


def text_problem(text: str, max_chars: int | None, adapter: str | None) -> tuple[int, str, str] | None:
    """(status, code, message after "the input") for an input the dataset rules would refuse."""
    normal = (text if text.isascii() else unicodedata.normalize("NFC", text)).strip()
    if not normal:
        return 400, "empty_input", "is empty or only whitespace"
    if max_chars is not None and len(normal) > max_chars:
        return (422, "input_too_long", f"is {len(normal):,} characters; adapter '{adapter}' accepts at most "
                f"{max_chars:,} (the max_input_chars of the dataset it was trained on)")
    return None


def select_adapter(body_value: Any, headers: Mapping[str, str]) -> str | None:
    """The adapter named by the body, the inference-component header or `adapter=` custom attribute.

    Any of them may be used; naming two different adapters is an error, not a silent precedence.
    """
    if body_value is not None and not isinstance(body_value, str):
        raise bad_request("'adapter' must be a string (or null for the base model)")
    choices = {}
    if body_value:
        choices["body field 'adapter'"] = body_value
    component = (headers.get(COMPONENT_HEADER) or "").strip()
    if component:
        choices[f"header {COMPONENT_HEADER}"] = component
    attribute = custom_attribute(headers.get(ATTRIBUTES_HEADER) or "", "adapter")
    if attribute:
        choices[f"header {ATTRIBUTES_HEADER}"] = attribute
    names = set(choices.values())
    if len(names) > 1:
        listed = "; ".join(f"{where}: '{name}'" for where, name in choices.items())
        raise bad_request(f"the request names different adapters ({listed})")
    return names.pop() if names else None


def custom_attribute(header: str, key: str) -> str | None:
    """`key=value` out of a custom-attributes header (pairs separated by ',' or ';')."""
    for part in header.replace(";", ",").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == key:
            return value.strip() or None
    return None


def parse_generation(params: dict[str, Any], max_new_tokens_limit: int) -> GenerationParams:
    out: dict[str, Any] = {}
    if "max_new_tokens" in params:
        value = params["max_new_tokens"]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= max_new_tokens_limit:
            raise bad_request(f"max_new_tokens must be an integer from 1 to {max_new_tokens_limit}")
        out["max_new_tokens"] = value
    if "temperature" in params:
        out["temperature"] = number(params["temperature"], "temperature", low=0.0, high=100.0)
    if "top_p" in params:
        out["top_p"] = number(params["top_p"], "top_p", low=0.0, high=1.0, low_open=True)
    if "stop" in params:
        stop = params["stop"]
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or len(stop) > 16 or not all(isinstance(s, str) and s for s in stop):
            raise bad_request("stop must be a list of at most 16 non-empty strings")
        out["stop"] = tuple(stop)
    if "seed" in params and params["seed"] is not None:
        if not isinstance(params["seed"], int) or isinstance(params["seed"], bool):
            raise bad_request("seed must be an integer")
        out["seed"] = params["seed"]
    return GenerationParams(**out)


def number(value: Any, name: str, *, low: float, high: float, low_open: bool = False) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise bad_request(f"{name} must be a number")
    if value > high or value < low or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise bad_request(f"{name} must be in {interval}, got {value}")
    return float(value)
