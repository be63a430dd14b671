"""A plan measures a dataset file that changed (and only that one), and the pull-request comment
says what the new version changes: rows and the label mix."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.helpers import intents_rows, write_jsonl


def test_a_changed_file_is_measured_and_the_comment_shows_rows_and_labels(project: Path, cli) -> None:
    assert cli("apply", "--auto-approve", cwd=project).code == 0
    rows = intents_rows(200)[40:] + [{"input": f"new {i}", "label": "refund_request"} for i in range(100)]
    write_jsonl(project / "data" / "intents.jsonl", rows)
    run = cli("plan", "--out", "p.json")
    assert run.code == 0, run.text
    diff = json.loads((project / "p.json").read_text())["changes"][0]["dataset_diff"]
    assert diff["before"]["distinct"] == 200 and diff["after"]["distinct"] == 260 and diff["rows_net"] == 60
    assert {r["label"]: r["after"] for r in diff["labels"]}["refund_request"] == 140
    text = cli("show", "p.json", "--markdown").out
    assert ("- `dataset.intents`: 200 → 260 rows (+60 net) · largest label shift +28.8 pp (`refund_request`)"
            in text), text
    assert "| `refund_request` | 50 (25.0%) | 140 (53.8%) | +28.8 pp |" in text
    (project / "data" / "intents.jsonl").write_text('{"input": "only one row", "label": "x"}\n')
    diff = json.loads(cli("plan", "--json").out)["changes"][0]["dataset_diff"]
    assert diff["after"] is None and "fastuner validate" in diff["unknown"]


def test_an_unchanged_file_is_not_measured(project: Path, cli, monkeypatch) -> None:
    assert cli("apply", "--auto-approve", cwd=project).code == 0
    import fastuner.providers.datasets as datasets

    def scan(*args, **kwargs):
        raise AssertionError("plan scanned an unchanged dataset")

    monkeypatch.setattr(datasets, "scan_inputs", scan)
    run = cli("plan", "--json")
    assert run.code == 0, run.text
    assert json.loads(run.out)["changes"][0]["dataset_diff"] is None
