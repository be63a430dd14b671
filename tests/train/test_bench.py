"""The throughput benchmark runs end to end in tiny mode (what CI can run without a GPU). It runs
in-process: `main()` is the script's entry point."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.train.jobs import REPO

pytestmark = pytest.mark.slow


def test_benchmark_tiny_mode_reports_every_variant(capsys: pytest.CaptureFixture) -> None:
    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "bench" / "train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up
    spec.loader.exec_module(bench)
    assert bench.main(["--tiny", "--quick"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["bench"] == "train_throughput" and report["tiny"] is True
    assert set(report["results"]) == {"a_padded_bs4", "b_packed_4x2048", "c_fastuner"}
    for name, numbers in report["results"].items():
        assert "error" not in numbers, (name, numbers)
        assert numbers["tokens_per_s"] > 0 and numbers["tflops_6n"] > numbers["tflops_4n"] > 0
    c = report["results"]["c_fastuner"]
    assert c["attention"] == "sdpa" and c["masking_check_max_abs_diff"] < 1e-4
    assert set(report["ratios"]) == {"c_over_b", "b_over_a"}
    assert "c_over_b:" in out and "variant" in out
