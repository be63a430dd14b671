"""The training estimate from the work: token counts (tokenizer or characters, cached), the throughput
table, start-up, the max_runtime cap, spot as a range, and the calibration from finished jobs in state."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fastuner.config.loader import load_spec
from fastuner.data.tokens import count_train_tokens, model_params_b, spec_work
from fastuner.plan.estimate import (
    Work,
    calibration,
    efficiency,
    estimate_seconds,
    flops_per_token,
    params_from_name,
    startup_seconds,
    tokens_per_second,
)
from fastuner.plan.observed import Observed
from fastuner.plan.planner import make_plan
from fastuner.plan.prices import shipped_book
from fastuner.plan.pricing import training_cost
from fastuner.state.model import ResourceState, State

NOW = datetime(2025, 6, 2, tzinfo=UTC)  # within 90 days of the shipped prices: no age note


@pytest.mark.parametrize(("name", "size"), [
    ("Qwen/Qwen2.5-0.5B", 0.5), ("meta-llama/Llama-3.2-1B-Instruct", 1.0), ("mistralai/Mistral-7B-v0.1", 7.0),
    ("facebook/opt-350m", 0.35), ("models/tiny-llama", None), ("org/Model-v2", None), ("x/Llama-3.1-70B", 70.0),
])
def test_the_size_a_name_states(name: str, size: float | None) -> None:
    assert params_from_name(name) == size


def test_throughput_scales_with_the_gpus_and_the_model_and_unknown_types_have_none() -> None:
    one = tokens_per_second("ml.p5.48xlarge", 1, 7.0)
    assert tokens_per_second("ml.p5.48xlarge", 8, 7.0) == pytest.approx(one * (1 + 0.9 * 7))
    assert tokens_per_second("ml.g5.2xlarge", 1, 7.0) < tokens_per_second("ml.g6e.xlarge", 1, 7.0) < one
    # bigger models run at a higher share of the peak, but fewer tokens a second
    assert efficiency(1.8) == pytest.approx(0.34)
    assert efficiency(0.5) < efficiency(1.8) < efficiency(7.7) < efficiency(14.2) <= efficiency(70) == 0.55
    assert tokens_per_second("ml.p4d.24xlarge", 1, 1.8) > tokens_per_second("ml.p4d.24xlarge", 1, 7.7)
    # the published A100 LoRA profile the efficiency is fitted on: within 10 %
    assert tokens_per_second("ml.p4d.24xlarge", 1, 7.7, checkpointing=True) == pytest.approx(16384 / 5.2, rel=0.1)
    assert flops_per_token(7.0, "qlora", True) == pytest.approx(4 * 7e9 * 1.5 * 1.35)
    assert tokens_per_second("ml.trn1.2xlarge", 1, 1.0) is None and tokens_per_second("ml.zz9.large", 1, 1.0) is None


def test_an_estimate_is_start_up_plus_tokens_over_throughput_capped_by_max_runtime() -> None:
    work = Work(tokens=2_000_000, counted="tokenizer", epochs=3, params_b=7.0, params_from="name")
    est = estimate_seconds(work, "ml.g5.2xlarge", 1, 1, None)
    loop = 6_000_000 / tokens_per_second("ml.g5.2xlarge", 1, 7.0)
    assert est.loop_seconds == pytest.approx(loop) and est.startup_seconds == startup_seconds(7.0)
    assert est.seconds == pytest.approx(loop + startup_seconds(7.0)) and not est.capped
    short = estimate_seconds(work, "ml.g5.2xlarge", 1, 1, 1800)
    assert short.seconds == 1800 and short.capped
    two = estimate_seconds(work, "ml.g5.2xlarge", 2, 1, None)  # two instances share the tokens
    assert two.loop_seconds == pytest.approx(loop / 2)


def test_a_spot_job_shows_its_estimate_as_a_range_beside_the_bound() -> None:
    prices = shipped_book().region("us-east-1")
    work = Work(tokens=1_000_000, counted="chars", epochs=2, params_b=1.0, params_from="assumed")
    cost = training_cost("ml.g5.2xlarge", 1, 4.0, True, prices, work=work)
    on_demand = cost["estimate_usd"]
    low, high = prices.spot_savings
    assert cost["spot_usd"] == [round(on_demand * (1 - high), 2), round(on_demand * (1 - low), 2)] or \
        cost["spot_usd"] == pytest.approx([on_demand * (1 - high), on_demand * (1 - low)], abs=0.011)
    assert cost["max_one_time_usd"] == round(prices.training["ml.g5.2xlarge"] * 4, 2) > on_demand
    assert "~4 chars/token" in cost["note"] and "1B model (assumed)" in cost["note"]
    assert cost["train_tokens"] == 1_000_000 and cost["tokens_counted"] == "chars"


def test_calibration_is_the_pooled_ratio_of_measured_to_predicted_loop_time() -> None:
    jobs = [
        {"instance_type": "ml.g5.2xlarge", "predicted_loop_s": 1000, "startup_s": 200, "training_seconds": 1700},
        {"instance_type": "ml.g5.2xlarge", "predicted_loop_s": 3000, "startup_s": 200, "training_seconds": 3700},
        {"instance_type": "ml.g5.2xlarge", "predicted_loop_s": 50, "startup_s": 200, "training_seconds": 3600,
         "capped": True},  # cut off: says nothing about the rate
        {"instance_type": "ml.p5.48xlarge", "predicted_loop_s": 10, "startup_s": 200, "training_seconds": 900},
    ]
    assert calibration(jobs, "ml.g5.2xlarge") == (pytest.approx((1500 + 3500) / 4000), 2)
    assert calibration(jobs, "ml.g6.xlarge") == (1.0, 0)


def test_tokens_are_counted_by_characters_without_a_tokenizer_and_cached(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"input": "' + "a" * 400 + '", "target": "' + "b" * 400 + '"}\n\n{"input": "xyzw", "label": 3}\n')
    got = count_train_tokens(data, "sha-1", 0.5, None, tmp_path / "cache")
    assert got == {"tokens": round((800 + 4 + 1) / 4 * 0.5), "counted": "chars"}
    data.unlink()  # the cache answers for the same file hash without reading it
    assert count_train_tokens(data, "sha-1", 0.5, None, tmp_path / "cache") == got
    with pytest.raises(OSError):
        count_train_tokens(data, "sha-2", 0.5, None, tmp_path / "cache")


def _tiny_model(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20,
                            trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>"]))
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 2048,
                                                    "num_hidden_layers": 16, "intermediate_size": 8192,
                                                    "num_attention_heads": 32, "num_key_value_heads": 8,
                                                    "vocab_size": 128256, "hidden_act": "silu"}))


def test_a_local_base_model_counts_with_its_tokenizer_and_states_its_size(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    _tiny_model(tmp_path / "model")
    rows = [{"input": "the quick brown fox", "target": "jumps over the lazy dog"}] * 10
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = Tokenizer.from_file(str(tmp_path / "model" / "tokenizer.json"))
    per_row = len(tok.encode("the quick brown fox").ids) + len(tok.encode("jumps over the lazy dog").ids)
    got = count_train_tokens(tmp_path / "d.jsonl", "s", 0.8, tmp_path / "model", None)
    assert got == {"tokens": round(per_row * 10 * 0.8), "counted": "tokenizer"}
    assert model_params_b(tmp_path / "model") == pytest.approx(1.24, abs=0.03)  # a Llama-3.2-1B shape


SPEC = """version: 1
project: p
provider: {sagemaker: {region: us-east-1, role_arn: "arn:aws:iam::123456789012:role/r", bucket: b}}
datasets:
  d: {path: d.jsonl, task: text_generation, split: {train: 0.8, validation: 0.1, test: 0.1}}
adapters:
  a: {base_model: model, dataset: d, training: {epochs: 2}, compute: {instance_type: ml.g5.2xlarge, max_runtime: 8h}}
"""


def test_the_plan_estimates_from_the_work_refresh_measured_and_calibrates_from_finished_jobs(tmp_path) -> None:
    _tiny_model(tmp_path / "model")
    (tmp_path / "fastuner.yaml").write_text(SPEC)
    (tmp_path / "d.jsonl").write_text('{"input": "the quick brown fox", "target": "jumps"}\n' * 50)
    spec = load_spec(tmp_path / "fastuner.yaml")
    work = spec_work(spec, {"d": "00"}, tmp_path / "cache")
    assert work["a"]["counted"] == "tokenizer" and work["a"]["params_b"] == pytest.approx(1.24, abs=0.03)
    work = {"a": {**work["a"], "tokens": 20_000_000}}  # a real-sized split, so the loop dominates
    observed = Observed(dataset_sources={"d": "00"}, training_code_hash="c", priced=True, work=work)
    cost = make_plan(spec, State(project="p"), observed, NOW).change("adapter.a").cost
    predicted = cost["predicted_loop_s"]
    assert cost["estimate_seconds"] == round(predicted + cost["startup_s"])
    assert cost["estimate_usd"] < cost["max_one_time_usd"] and "calibration" not in cost

    # a finished job on the same instance type ran its loop 1.5× slower than the table said
    done = {"instance_type": "ml.g5.2xlarge", "predicted_loop_s": 1000.0, "startup_s": 200,
            "training_seconds": 1700.0, "billed_seconds": 1700.0, "usd_per_hour": 1.515}
    prior = State(project="p", resources={"adapter.old": ResourceState(
        address="adapter.old", kind="adapter", name="old", outputs={"cost": done})})
    calibrated = make_plan(spec, prior, observed, NOW).change("adapter.a").cost
    assert calibrated["calibration"] == 1.5 and calibrated["calibrated_from"] == 1
    assert calibrated["estimate_seconds"] == round(predicted * 1.5 + cost["startup_s"])
    assert "×1.50 from 1 finished job" in calibrated["note"]


def test_a_tokenizer_that_cannot_load_falls_back_on_characters(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tokenizer.json").write_text("{not a tokenizer")
    (tmp_path / "d.jsonl").write_text('{"input": "abcdefgh"}\n')
    assert count_train_tokens(tmp_path / "d.jsonl", "s", 1.0, tmp_path / "model", None) == \
        {"tokens": 2, "counted": "chars"}


def test_the_estimators_gpu_counts_agree_with_what_the_sagemaker_provider_launches() -> None:
    from fastuner.plan import pricing
    from fastuner.providers.sagemaker import instances

    names = set(shipped_book().region("us-east-1").training) | {f"ml.{t}" for t in pricing._GPUS}
    for name in sorted(names):
        launched = instances.gpus(name)
        if launched:  # GPU types (CPU and Neuron ones have none to agree on)
            assert pricing.gpus(name) == launched, name
