"""The throughput benchmark runs end to end in tiny mode (what CI can run without a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def test_benchmark_tiny_mode_reports_every_variant() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "train_throughput.py"), "--tiny", "--quick"],
                            capture_output=True, text=True, timeout=240, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["bench"] == "train_throughput" and report["tiny"] is True
    assert set(report["results"]) == {"a_padded_bs4", "b_packed_4x2048", "c_fastuner"}
    for name, numbers in report["results"].items():
        assert "error" not in numbers, (name, numbers)
        assert numbers["tokens_per_s"] > 0 and numbers["tflops_6n"] > numbers["tflops_4n"] > 0
    c = report["results"]["c_fastuner"]
    assert c["attention"] == "sdpa" and c["masking_check_max_abs_diff"] < 1e-4
    assert set(report["ratios"]) == {"c_over_b", "b_over_a"}
    assert "c_over_b:" in result.stdout and "variant" in result.stdout
