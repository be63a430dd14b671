"""The whole loop with real processes: apply a project (a tiny BERT classification adapter, 3 training
steps, served by containers/serve), invoke it through the CLI (one input, a batch, an evaluation on the
test split), destroy it, and check that no server of the project is left running."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fastuner.providers.local.http import HttpError, request
from fastuner.state.local import LocalStateStore
from tests.cli.helpers import fastuner_subprocess, intents_rows, write_jsonl
from tests.tinymodels import make_tiny_bert

pytestmark = pytest.mark.slow


def servers_of(root: Path) -> list[int]:
    """pids of serve.py processes whose command line points into this project's folder."""
    out = subprocess.run(["pgrep", "-f", f"serve.py.*{root}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def write_project(root: Path, bert: Path) -> Path:
    write_jsonl(root / "data" / "intents.jsonl", intents_rows(120))
    (root / "fastuner.yaml").write_text(f"""\
version: 1
project: e2e
provider: {{local: {{device: cpu}}}}
datasets:
  intents: {{path: data/intents.jsonl, task: classification, checks: {{max_input_chars: 60}}}}
adapters:
  intents-lora:
    base_model: "{bert}"
    dataset: intents
    lora: {{r: 4, alpha: 8, dropout: 0.0}}
    training: {{epochs: 1, max_steps: 3, batch_tokens: 512, max_seq_len: 32}}
deployments:
  api:
    base_model: "{bert}"
    adapters: [intents-lora]
    ttl: 1h
""")
    return root


def fastuner(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return fastuner_subprocess(*args, cwd=root, timeout=timeout)


def test_apply_invoke_batch_evaluate_destroy(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", make_tiny_bert(tmp_path / "bert"))
    labels = {r["label"] for r in intents_rows(120)}
    try:
        applied = fastuner(root, "apply", "--auto-approve", timeout=600)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert servers_of(root)

        one = fastuner(root, "invoke", "deployment.api", "--input", "where is my order")
        assert one.returncode == 0, one.stdout + one.stderr
        assert one.stdout.splitlines()[0] in labels
        assert "Using adapter intents-lora, the only adapter deployment.api serves." in one.stderr

        # the dataset's rules reach the server through the trained artifact (fastuner.json), not the CLI
        url = LocalStateStore(root / "state" / "e2e.json").read().resources["deployment.api"].outputs["url"]
        for text, status, code, message in ((" \n ", 400, "empty_input", "the input is empty or only whitespace"),
                                            ("x" * 61, 422, "input_too_long", "adapter 'intents-lora' accepts at most 60")):
            with pytest.raises(HttpError) as refused:
                request("POST", f"{url}/invocations", {"inputs": text, "adapter": "intents-lora"})
            assert (refused.value.status, refused.value.code) == (status, code)
            assert message in refused.value.message
        assert request("POST", f"{url}/invocations", {"inputs": "x" * 60, "adapter": "intents-lora"})["label"] in labels
        empty = fastuner(root, "invoke", "deployment.api", "--input", "  ")
        assert empty.returncode == 1 and "the input is empty or only whitespace" in empty.stderr

        rows = [{"input": f"message {i}: please help with my order", "n": i} for i in range(24)]
        write_jsonl(tmp_path / "in.jsonl", rows)
        batch = fastuner(root, "invoke", "deployment.api", "-a", "intents-lora", "--batch", str(tmp_path / "in.jsonl"),
                         "--out", str(tmp_path / "out.jsonl"), "--rows-per-request", "5", "--json")
        assert batch.returncode == 0, batch.stdout + batch.stderr
        summary = json.loads(batch.stdout)
        assert (summary["rows"], summary["ok"], summary["failed"], summary["requests"]) == (24, 24, 0, 5)
        out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert [o["n"] for o in out] == list(range(24))
        assert all(o["output"]["label"] in labels and set(o["output"]["scores"]) == labels for o in out)

        evaluated = fastuner(root, "invoke", "deployment.api", "--evaluate", "--json")
        assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
        result = json.loads(evaluated.stdout)
        test_rows = LocalStateStore(root / "state" / "e2e.json").read().resources[
            "dataset.intents"].outputs["splits"]["test"]["rows"]
        assert result["rows"] == test_rows > 0 and result["failed"] == {"adapter": 0}
        # served as trained: the server's accuracy is the training run's own (a near-tie may flip one row)
        assert abs(result["adapter_metrics"]["accuracy"] - result["training_metrics"]["accuracy"]) <= 1 / test_rows + 1e-9
        assert result["base_source"] == "training" and result["base_metrics"]["accuracy"] is not None
    finally:
        gone = fastuner(root, "destroy", "--auto-approve", timeout=300)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert servers_of(root) == []
    after = fastuner(root, "invoke", "deployment.api", "-i", "x")
    assert after.returncode == 1 and "not in state" in after.stderr and "Traceback" not in after.stderr
