"""`fastuner invoke` through the CLI against an in-process server: what the user sees for answers,
batches, evaluations and every error that is theirs to fix (one line, exit 1, no traceback)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from fastuner.data.store import LocalObjectStore
from fastuner.state.local import LocalStateStore
from fastuner.state.model import ResourceState, State, Status
from tests.invoke.fakeserver import FakeServer, Script, closed_port_url

CLASSIFICATION_TEST = [{"input": "good 1", "label": "pos"}, {"input": "bad 2", "label": "neg"},
                       {"input": "good 3", "label": "neg"}, {"input": "bad 4", "label": "neg"}]
GENERATION_TEST = [{"input": "abc", "target": "ABC"}, {"input": "xyz", "target": "XYZ"},
                   {"input": "Q", "target": "Q"}]


def make_project(root: Path, url: str, *, task: str = "classification", status: Status = Status.READY,
                 test_rows: list[dict] | None = None, past_ttl: bool = False,
                 adapters: tuple[str, ...] = ("a1",), max_input_chars: int = 8192) -> Path:
    """A spec and a state holding a dataset (test split in the object store), an adapter and a deployment."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "fastuner.yaml").write_text("version: 1\nproject: inv\n")
    store = LocalObjectStore(root / ".fastuner" / "objects")
    rows = test_rows if test_rows is not None else (CLASSIFICATION_TEST if task == "classification" else GENERATION_TEST)
    key = store.put_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    metrics = ({"test_accuracy": 0.75, "test_macro_f1": 0.7, "base_test_accuracy": 0.5, "base_test_macro_f1": 0.33}
               if task == "classification" else {"test_exact_match": 1.0})
    expired = datetime(2020, 1, 2, 20, 0, tzinfo=UTC)
    deployment = ResourceState(
        address="deployment.api", kind="deployment", name="api", status=status,
        outputs={"url": url, "adapters": {a: f"/artifacts/{a}" for a in adapters}, "log": "/logs/serve.log"}
        if status is not Status.EXPIRED else {"expired_at": expired.isoformat()},
        # an idle_ttl expiry leaves the later hard-ttl time in expires_at
        expires_at=expired + timedelta(hours=5) if status is Status.EXPIRED else expired if past_ttl else None)
    resources = {
        "dataset.d": ResourceState(address="dataset.d", kind="dataset", name="d",
                                   inputs={"task": task, "checks": {"max_input_chars": max_input_chars}},
                                   outputs={"store": str(store.root), "splits": {"test": {"key": key, "rows": len(rows)}}}),
        "adapter.a1": ResourceState(address="adapter.a1", kind="adapter", name="a1", inputs={"dataset": "d"},
                                    outputs={"task": task, "metrics": metrics}),
        "deployment.api": deployment,
    }
    LocalStateStore(root / "state" / "inv.json").write(State(project="inv", resources=resources))
    return root


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --- answers ---------------------------------------------------------------------------------------


def test_classification_answer_shows_the_label_and_top_scores(cli, tmp_path, server: FakeServer) -> None:
    root = make_project(tmp_path, server.url)
    run = cli("invoke", "deployment.api", "--adapter", "a1", "--input", "a good day", cwd=root)
    assert run.code == 0, run.text
    assert run.out.splitlines() == ["pos", "  pos   90.0%", "  neg   10.0%"]
    raw = cli("invoke", "deployment.api", "-a", "a1", "-i", "a bad day", "--json", cwd=root)
    assert json.loads(raw.out) == {"format_version": 1, "kind": "invoke-answer", "deployment": "deployment.api",
                                   "adapter": "a1", "answer": {"label": "neg", "scores": {"neg": 0.9, "pos": 0.1}}}


def test_generation_options_reach_the_server(cli, tmp_path) -> None:
    script = Script(task="generation")
    with FakeServer(script) as server:
        root = make_project(tmp_path, server.url, task="text_generation")
        run = cli("invoke", "deployment.api", "-a", "a1", "-i", "hello", "--max-new-tokens", "5",
                  "--temperature", "0.7", "--top-p", "0.9", "--stop", "\n", "--stop", "END", "--seed", "3", cwd=root)
    assert run.code == 0, run.text
    assert run.out.strip() == "HELLO"
    assert script.requests == [{"inputs": "hello", "adapter": "a1", "max_new_tokens": 5, "temperature": 0.7,
                                "top_p": 0.9, "stop": ["\n", "END"], "seed": 3}]


def test_generated_control_characters_never_reach_the_terminal(cli, tmp_path) -> None:
    with FakeServer(Script(task="generation")) as server:
        root = make_project(tmp_path, server.url, task="text_generation")
        run = cli("invoke", "deployment.api", "-a", "a1", "-i", "red \x1b[2J text", cwd=root)
        raw = cli("invoke", "deployment.api", "-a", "a1", "-i", "red \x1b[2J text", "--json", cwd=root)
    assert run.code == 0 and "\x1b" not in run.out and run.out.strip() == "RED \\x1b[2J TEXT"
    assert json.loads(raw.out)["answer"] == {"generated_text": " RED \x1b[2J TEXT "}  # --json keeps it exact


# --- errors the user can fix -----------------------------------------------------------------------


def error_of(run) -> str:
    assert run.code == 1, run.text
    assert "Traceback" not in run.text
    return run.err


def test_address_not_in_state_or_not_a_deployment(cli, tmp_path, server: FakeServer) -> None:
    root = make_project(tmp_path, server.url)
    assert "deployment.nope is not in state (deployments in state: deployment.api)" in error_of(
        cli("invoke", "deployment.nope", "-i", "x", cwd=root))
    assert "adapter.a1 is not a deployment address" in error_of(cli("invoke", "adapter.a1", "-i", "x", cwd=root))


def test_an_expired_deployment_says_when_and_how_to_renew(cli, tmp_path) -> None:
    root = make_project(tmp_path, closed_port_url(), status=Status.EXPIRED)
    err = error_of(cli("invoke", "deployment.api", "-a", "a1", "-i", "x", cwd=root))
    assert "deployment.api expired at 2020-01-02T20:00+00:00" in err
    assert "fastuner apply --renew deployment.api" in err


def test_a_deployment_past_its_ttl_still_answers_with_a_warning(cli, tmp_path, server: FakeServer) -> None:
    root = make_project(tmp_path, server.url, past_ttl=True)
    run = cli("invoke", "deployment.api", "-a", "a1", "-i", "good", cwd=root)
    assert run.code == 0 and run.out.startswith("pos")
    assert "past its ttl (since 2020-01-02T20:00+00:00)" in run.err and "fastuner reap" in run.err


def test_a_dead_server_points_at_the_plan(cli, tmp_path) -> None:
    root = make_project(tmp_path, closed_port_url())
    err = error_of(cli("invoke", "deployment.api", "-a", "a1", "-i", "x", cwd=root))
    assert "is not running" in err and "refused" in err.lower() and "fastuner plan" in err


def test_an_unknown_adapter_lists_the_deployments_adapters(cli, tmp_path, server: FakeServer,
                                                           script: Script) -> None:
    root = make_project(tmp_path, server.url)
    err = error_of(cli("invoke", "deployment.api", "-a", "a2", "-i", "x", cwd=root))
    assert "deployment.api serves no adapter 'a2'; its adapters: a1" in err
    assert script.requests == []  # known from state: nothing was sent


def test_a_4xx_prints_the_servers_message(cli, tmp_path, server: FakeServer, script: Script) -> None:
    root = make_project(tmp_path, server.url)
    err = error_of(cli("invoke", "deployment.api", "-a", "a1", "-i", "x", "--max-new-tokens", "3", cwd=root))
    assert "refused the request (HTTP 400 bad_request): max_new_tokens only apply to generation" in err
    assert len(script.requests) == 1  # 4xx is never retried


def test_the_only_adapter_is_used_and_named_on_stderr(cli, tmp_path, server: FakeServer, script: Script) -> None:
    root = make_project(tmp_path, server.url)
    run = cli("invoke", "deployment.api", "-i", "a good day", cwd=root)
    assert run.code == 0, run.text
    assert run.out.splitlines()[0] == "pos"
    assert "Using adapter a1, the only adapter deployment.api serves." in run.err
    src = jsonl(tmp_path / "in.jsonl", [{"input": "good"}, {"input": "bad"}])
    batch = cli("invoke", "deployment.api", "--batch", str(src), cwd=root)
    assert batch.code == 0, batch.text
    assert [json.loads(line)["output"]["label"] for line in batch.out.splitlines()] == ["pos", "neg"]
    assert "Using adapter a1" in batch.err
    assert [r.get("adapter") for r in script.requests] == ["a1", "a1"]


def test_several_adapters_and_none_named_lists_them(cli, tmp_path, script: Script) -> None:
    script.adapters = ("a1", "a2")
    with FakeServer(script) as server:
        root = make_project(tmp_path, server.url, adapters=("a1", "a2"))
        err = error_of(cli("invoke", "deployment.api", "-i", "x", cwd=root))
        assert "adapter_required" in err and "(adapters: a1, a2)" in err
        err = error_of(cli("invoke", "deployment.api", "--evaluate", cwd=root))
        assert "--evaluate needs --adapter: deployment.api serves a1, a2" in err
    assert [r.get("adapter") for r in script.requests] == [None]  # --evaluate refused before sending


def test_inputs_the_dataset_rules_refuse_are_not_sent(cli, tmp_path, server: FakeServer, script: Script) -> None:
    root = make_project(tmp_path, server.url, max_input_chars=10)
    err = error_of(cli("invoke", "deployment.api", "-i", " \t ", cwd=root))
    assert "the input is empty or only whitespace; deployment.api would refuse it (empty_input)" in err
    err = error_of(cli("invoke", "deployment.api", "-i", "good 567890!", cwd=root))
    assert ("the input is 12 characters; adapter 'a1' accepts at most 10 (the max_input_chars of the dataset it "
            "was trained on)") in err
    assert script.requests == []
    src = jsonl(tmp_path / "in.jsonl", [{"input": "good"}, {"input": "  "}, {"input": "bad 567890!"}, {"input": "bad"}])
    run = cli("invoke", "deployment.api", "--batch", str(src), cwd=root)
    assert run.code == 1
    out = [json.loads(line) for line in run.out.splitlines()]
    assert [o.get("code") for o in out] == [None, "empty_input", "input_too_long", None]
    assert out[1]["error"] == "line 2: the input is empty or only whitespace" and out[2]["row"] == 3
    assert sorted(r["inputs"] for r in script.requests) == ["bad", "good"]  # the refused rows were never sent


@pytest.mark.parametrize("args", [(), ("-i", "x", "--evaluate"), ("--out", "o.jsonl", "-i", "x")])
def test_modes_are_exclusive(cli, tmp_path, server: FakeServer, args) -> None:
    root = make_project(tmp_path, server.url)
    assert "Error:" in error_of(cli("invoke", "deployment.api", *args, cwd=root))


# --- batches ---------------------------------------------------------------------------------------


def test_batch_writes_every_row_in_order_and_fails_on_any_error(cli, tmp_path, server: FakeServer) -> None:
    root = make_project(tmp_path, server.url)
    rows = [{"input": f"good {i}" if i % 2 else f"bad {i}", "id": i} for i in range(30)]
    rows[7] = {"input": "EMPTY", "id": 7}
    src = jsonl(tmp_path / "in.jsonl", [*rows[:12], "{broken", *rows[12:]])
    run = cli("invoke", "deployment.api", "-a", "a1", "--batch", str(src), "--out", str(tmp_path / "out.jsonl"),
              "--rows-per-request", "4", "--concurrency", "3", cwd=root)
    assert run.code == 1, run.text
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(out) == 31
    assert [o.get("id") for o in out] == [*range(12), None, *range(12, 30)]
    assert out[7]["code"] == "empty_input" and out[7]["row"] == 8
    assert out[12]["row"] == 13 and "not JSON" in out[12]["error"]
    assert all(o["output"]["label"] == ("pos" if o["id"] % 2 else "neg") for o in out if "output" in o)
    assert "31 rows: 29 ok, 2 failed" in run.out and "row 8" in run.out and "req/s" in run.out


def test_a_clean_batch_exits_0_with_a_json_summary(cli, tmp_path, server: FakeServer, script: Script) -> None:
    root = make_project(tmp_path, server.url)
    src = jsonl(tmp_path / "in.jsonl", [{"input": f"good {i}"} for i in range(20)])
    run = cli("invoke", "deployment.api", "-a", "a1", "--batch", str(src), "--out", str(tmp_path / "o.jsonl"),
              "--json", cwd=root)
    assert run.code == 0, run.text
    summary = json.loads(run.out)
    assert summary["kind"] == "invoke-batch" and summary["format_version"] == 1
    assert summary["rows"] == summary["ok"] == 20 and summary["failed"] == 0
    assert summary["requests"] == len(script.requests) == 3  # 8 rows per request by default
    assert summary["rows_per_s"] > 0


def test_batch_to_stdout_keeps_talk_on_stderr(cli, tmp_path, server: FakeServer) -> None:
    root = make_project(tmp_path, server.url)
    src = jsonl(tmp_path / "in.jsonl", [{"input": "good"}, {"input": "bad"}])
    run = cli("invoke", "deployment.api", "-a", "a1", "--batch", str(src), cwd=root)
    assert run.code == 0, run.text
    assert [json.loads(line)["output"]["label"] for line in run.out.splitlines()] == ["pos", "neg"]
    assert "2 rows: 2 ok, 0 failed" in run.err


def test_the_server_going_away_mid_batch_stops_sending(cli, tmp_path, server: FakeServer,
                                                       script: Script) -> None:
    root = make_project(tmp_path, server.url)
    script.fail_next = ["drop"] * 50
    src = jsonl(tmp_path / "in.jsonl", [{"input": f"r{i}"} for i in range(40)])
    run = cli("invoke", "deployment.api", "-a", "a1", "--batch", str(src), "--out", str(tmp_path / "o.jsonl"),
              "--retries", "0", "--concurrency", "1", cwd=root)
    assert run.code == 1
    out = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(out) == 40 and all(o["code"] == "connection_failed" for o in out)
    assert out[-1]["error"].startswith("not sent:")
    assert len(script.requests) == 1


# --- evaluation --------------------------------------------------------------------------------------


def test_evaluate_classification_against_the_training_runs_base(cli, tmp_path, server: FakeServer) -> None:
    root = make_project(tmp_path, server.url)
    run = cli("invoke", "deployment.api", "--evaluate", cwd=root)  # the only adapter is chosen
    assert run.code == 0, run.text
    assert "adapter.a1 on the test split of dataset.d (4 rows)" in run.out
    lines = {line.split()[0]: line.split()[1:] for line in run.out.splitlines() if line.startswith(("accuracy", "macro"))}
    assert lines["accuracy"] == ["75.0%", "50.0%", "75.0%"]
    assert lines["macro-F1"] == ["73.3%", "33.0%", "70.0%"]
    assert "untrained head" in run.out
    data = json.loads(cli("invoke", "deployment.api", "--evaluate", "--json", cwd=root).out)
    assert data["kind"] == "evaluation" and data["format_version"] == 1
    assert data["adapter_metrics"]["accuracy"] == 0.75
    assert data["adapter_metrics"]["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert data["base_source"] == "training" and data["base_metrics"]["accuracy"] == 0.5


def test_evaluate_generation_invokes_the_base_model_too(cli, tmp_path) -> None:
    script = Script(task="generation")
    with FakeServer(script) as server:
        root = make_project(tmp_path, server.url, task="text_generation")
        run = cli("invoke", "deployment.api", "--evaluate", "--adapter", "a1", "--json", cwd=root)
    assert run.code == 0, run.text
    data = json.loads(run.out)
    assert data["metrics"] == ["exact_match"]
    assert data["adapter_metrics"] == {"exact_match": 1.0}  # compared after strip()
    assert data["base_metrics"]["exact_match"] == pytest.approx(1 / 3) and data["base_source"] == "server"
    sent = sorted((r.get("adapter") or "", tuple(r["inputs"])) for r in script.requests)
    assert sent == [("", ("abc", "xyz", "Q")), ("a1", ("abc", "xyz", "Q"))]  # the base: no adapter at all


def test_evaluate_needs_a_test_split(cli, tmp_path, server: FakeServer) -> None:
    root = make_project(tmp_path, server.url, test_rows=[])
    assert "dataset.d has no test split" in error_of(cli("invoke", "deployment.api", "--evaluate", cwd=root))
