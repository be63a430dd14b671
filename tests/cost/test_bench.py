"""bench/cost_accuracy.py's fixture names a source for every run, and the estimator reproduces the
published figures it was fitted on (so a change to the estimator that breaks the fit is caught)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "bench" / "fixtures" / "training_jobs.json"
_spec = importlib.util.spec_from_file_location("cost_accuracy", REPO / "bench" / "cost_accuracy.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
main, replay = bench.main, bench.replay


def test_every_run_names_its_source_and_the_fixture_its_provenance() -> None:
    doc = json.loads(FIXTURE.read_text())
    assert "No SageMaker job has been run" in doc["provenance"]
    for job in doc["jobs"]:
        assert job["source"] and job["kind"] in ("job", "loop") and job["seconds"] > 0 and job["tokens"] > 0


def test_the_estimator_reproduces_the_figures_it_was_fitted_on() -> None:
    fitted = [j for j in json.loads(FIXTURE.read_text())["jobs"] if j["used_in_fit"]]
    assert len(fitted) == 5
    for job in fitted:
        assert replay(job)["error"] == pytest.approx(0, abs=0.05), job["name"]


def test_the_bench_reports_median_and_worst(capsys) -> None:
    assert main(["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["all"]["runs"] == 24 and 0 <= out["all"]["median_abs_error"] <= out["all"]["worst_abs_error"]
    assert out["independent"]["runs"] == 6
