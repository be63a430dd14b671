"""The fuzzing category in small (tests/stress/fuzz.py): a few hundred generated specs, dataset files
and requests. `python -m tests.stress fuzz --trials 100` runs 10,000."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stress import fuzz


def check(reports) -> None:
    for report in reports:
        assert report.ok, f"{report.scenario}: {report.failures}"
        assert report.cases >= report.trials > 0, report


def test_specs_and_datasets_in_process(tmp_path: Path) -> None:
    reports = fuzz.run(2, 1000, tmp_path, log=lambda _: None, cases={"spec": 60, "spec-bytes": 60, "dataset": 25},
                       cli=0, server=False)
    check(reports)
    assert sum(r.cases for r in reports) >= 280


def test_a_generated_spec_through_the_cli(tmp_path: Path) -> None:
    check(fuzz.run(1, 2000, tmp_path, log=lambda _: None, cases={"spec": 0, "spec-bytes": 0, "dataset": 0},
                   cli=2, server=False))


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    """The checks are not vacuous: a traceback, a positionless spec error, a rowless dataset error, a
    half-written store and a 5xx or an HTML error are each reported."""
    from fastuner.errors import Diagnostic, Source
    from tests.stress.serverfuzz import judge

    file = tmp_path / "fastuner.yaml"
    assert fuzz.spec_problem([Diagnostic.error("x", source=Source(str(file), 2, 1))], file, b"a\nb\n") is None
    assert "without file:line:col" in fuzz.spec_problem([Diagnostic.error("x", source=Source(str(file)))], file, b"a")
    assert "outside the file" in fuzz.spec_problem([Diagnostic.error("x", source=Source(str(file), 9, 1))], file, b"a")
    assert fuzz.check_spec_text("version: 1\nproject: Demo\n", tmp_path / "a") is None  # an error, well placed

    assert "names no row" in fuzz.dataset_problem([Diagnostic.error("bad row", source=Source("d"))], b"x\n")
    assert fuzz.dataset_problem([Diagnostic.error("dataset file is empty", source=Source("d"))], b"") is None
    (tmp_path / "c").mkdir()
    assert fuzz.check_dataset_bytes(b'{"input": "x", "label": "a"}\n', tmp_path / "c") is None
    assert fuzz._store_files(tmp_path / "c" / "store", 3) is None  # the three distinct objects of a good write
    (tmp_path / "c" / "store" / "stray").write_bytes(b"x")
    assert "the store holds 4 files, expected 3" in fuzz._store_files(tmp_path / "c" / "store", 3)

    assert judge(500, "application/json", b'{"error": "x", "code": "internal_error"}')
    assert judge(404, "text/html", b"<html>")
    assert judge(404, "application/json", b'{"error": "x", "code": "not_found"}') is None


@pytest.mark.slow  # builds a tiny model and starts the inference server (about 20 s)
def test_the_server(tmp_path: Path) -> None:
    from tests.stress.serverfuzz import fuzz_server

    check(fuzz_server(2, 3000, 15, tmp_path, lambda _: None))
