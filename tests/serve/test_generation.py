"""Generation over HTTP: greedy output equals PeftModel.generate in-process, per prompt_format."""

from __future__ import annotations

import pytest

from tests.serve.helpers import TEXTS

pytestmark = pytest.mark.slow  # starts the inference server as a process

PROMPT = "where is my order"


def test_greedy_generation_equals_peft_in_process(gen_server, reference):
    outputs = {}
    for adapter, prompt_format in ((None, None), ("g_chat", "chat_template"), ("g_plain", "plain")):
        status, out = gen_server.invoke({"inputs": PROMPT, "adapter": adapter, "max_new_tokens": 12})
        assert status == 200, out
        assert out == {"generated_text": reference.generate(adapter, PROMPT, prompt_format, 12)}
        outputs[adapter] = out["generated_text"]
    assert len(set(outputs.values())) == 3, outputs


def test_parameters_object_batch_and_headers(gen_server, reference):
    want = [reference.generate("g_plain", text, "plain", 6) for text in TEXTS[:3]]
    status, outs = gen_server.invoke({"inputs": TEXTS[:3], "parameters": {"max_new_tokens": 6}},
                                     {"X-Amzn-SageMaker-Inference-Component": "g_plain"})
    assert status == 200
    assert [o["generated_text"] for o in outs] == want


def test_stop_strings_cut_the_text_before_the_stop(gen_server, reference):
    full = reference.generate("g_chat", PROMPT, "chat_template", 24)
    assert len(full) > 4, full
    stop = full[2:4]
    status, out = gen_server.invoke({"inputs": PROMPT, "adapter": "g_chat", "max_new_tokens": 24,
                                     "stop": [stop, "never-generated"]})
    assert status == 200
    assert out["generated_text"] == full[: full.find(stop)]


def test_sampling_is_reproducible_with_a_seed(gen_server):
    body = {"inputs": PROMPT, "adapter": "g_chat", "max_new_tokens": 16, "temperature": 1.5, "top_p": 0.95}
    first = gen_server.invoke({**body, "seed": 7})
    assert first[0] == 200
    assert gen_server.invoke({**body, "seed": 7}) == first
    others = {gen_server.invoke({**body, "seed": seed})[1]["generated_text"] for seed in range(8)}
    assert len(others) > 1


def test_generation_errors(gen_server, reference):
    long_input = " ".join(["fox"] * 505)
    n = len(reference.prompt_ids(long_input, None))
    status, error = gen_server.invoke({"inputs": long_input, "max_new_tokens": 513 - n})
    assert (status, error["code"]) == (422, "input_too_long")
    assert f"{n} tokens plus max_new_tokens={513 - n}" in error["error"] and "limit is 512" in error["error"]
    assert gen_server.invoke({"inputs": long_input, "max_new_tokens": 512 - n})[0] == 200
    for body, text in (({"inputs": "x", "max_new_tokens": 0}, "max_new_tokens"),
                       ({"inputs": "x", "temperature": -1}, "temperature"),
                       ({"inputs": "x", "top_p": 0}, "top_p"),
                       ({"inputs": "x", "stop": [""]}, "stop"),
                       ({"inputs": "x", "parameters": {"max_tokens": 3}}, "unknown parameter"),
                       ({"inputs": "x", "max_new_tokens": 3, "parameters": {"max_new_tokens": 3}}, "both"),
                       ({"inputs": ""}, "empty")):
        status, error = gen_server.invoke(body)
        assert status == 400 and text in error["error"], (body, error)
