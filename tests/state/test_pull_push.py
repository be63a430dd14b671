"""`fastuner state pull` / `state push`: moving a state between the local and the S3 backend with the
store's lineage and serial checks, through the CLI in process (moto for S3); and the push rules alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastuner.errors import UserError
from fastuner.state.model import State, empty_state
from fastuner.state.push import pushed_document
from tests.cli.helpers import intents_rows, write_jsonl
from tests.state.conftest import BUCKET, ENV

LOCAL = """\
version: 1
project: demo
datasets:
  intents: {path: data/intents.jsonl, task: classification}
"""
ON_S3 = LOCAL.replace("version: 1\n", f"version: 1\nbackend: {{s3: {{bucket: {BUCKET}, key: teams/demo.json, "
                                      "region: us-east-1}}\n")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "data" / "intents.jsonl", intents_rows(120))
    (tmp_path / "fastuner.yaml").write_text(LOCAL)
    (tmp_path / "s3.yaml").write_text(ON_S3)
    return tmp_path


def test_a_state_moves_from_local_to_s3_and_back(project: Path, cli, aws) -> None:
    def run(*argv: str):
        return cli(*argv, cwd=project, environ=ENV)

    assert run("apply", "--auto-approve").code == 0
    local = json.loads((project / "state" / "demo.json").read_text())
    pulled = run("state", "pull")  # stdout: the state and nothing else
    assert pulled.code == 0 and json.loads(pulled.out) == local
    assert run("state", "pull", "local.json").code == 0
    assert (project / "local.json").read_text() == (project / "state" / "demo.json").read_text()

    run_ = run("state", "push", "local.json", "--file", "s3.yaml")
    assert run_.code == 0, run_.text
    assert f"Pushed local.json to s3://{BUCKET}/teams/demo.json: lineage {local['lineage']}, serial " \
           f"{local['serial']}." in run_.out
    assert json.loads(run("state", "pull", "--file", "s3.yaml").out) == local  # the same document, serial kept
    assert run("state", "list", "--file", "s3.yaml").out.split() == ["dataset.intents"]
    assert run("plan", "--detailed-exitcode", "--file", "s3.yaml").code == 0  # nothing to do: it is the state
    assert aws.list_objects_v2(Bucket=BUCKET, Prefix="fastuner-locks/").get("KeyCount") == 0  # lock released
    assert "already holds this state" in run("state", "push", "local.json", "--file", "s3.yaml").out

    # and back, into a fresh local workspace: the S3 copy is pushed under another name
    (project / "s3.json").write_text(run("state", "pull", "--file", "s3.yaml").out)
    run_ = run("state", "push", "s3.json", "--workspace", "copy")
    assert run_.code == 1 and "is the state of workspace default, not copy" in run_.err
    (project / "state" / "demo.json").unlink()
    assert run("state", "push", "s3.json").code == 0
    assert json.loads((project / "state" / "demo.json").read_text()) == local


def test_push_refuses_another_lineage_or_an_older_serial_unless_forced(project: Path, cli, aws) -> None:
    def run(*argv: str):
        return cli(*argv, "--file", "s3.yaml", cwd=project, environ=ENV)

    assert run("apply", "--auto-approve").code == 0
    (project / "old.json").write_text(run("state", "pull").out)
    stored = json.loads((project / "old.json").read_text())
    assert run("state", "rm", "dataset.intents").code == 0  # the stored state moves on (serial + 1)

    refused = run("state", "push", "old.json")
    assert refused.code == 1
    assert f"it is older than the stored state (serial {stored['serial']}, stored: serial {stored['serial'] + 1})" \
        in refused.err
    stranger = empty_state("demo", "default")
    (project / "stranger.json").write_text(stranger.model_dump_json())
    refused = run("state", "push", "stranger.json")
    assert refused.code == 1 and "belongs to another state lineage" in refused.err and "--force" in refused.err
    assert json.loads(run("state", "pull").out)["serial"] == stored["serial"] + 1  # nothing was written

    forced = run("state", "push", "old.json", "--force")
    assert forced.code == 0, forced.text
    after = json.loads(run("state", "pull").out)
    assert after["serial"] == stored["serial"] + 2 and after["resources"] == stored["resources"]  # never backwards
    assert run("state", "push", "stranger.json", "--force").code == 0
    assert json.loads(run("state", "pull").out)["lineage"] == stranger.lineage


def test_pull_and_push_say_what_is_wrong(project: Path, cli, aws) -> None:
    run = cli("state", "pull", "--file", "s3.yaml", cwd=project, environ=ENV)
    assert run.code == 1 and f"no state yet at s3://{BUCKET}/teams/demo.json" in run.err
    run = cli("state", "push", "nope.json", cwd=project, environ=ENV)
    assert run.code == 1 and "nope.json: no such file" in run.err
    (project / "bad.json").write_text("{")
    run = cli("state", "push", "bad.json", cwd=project, environ=ENV)
    assert run.code == 1 and "the state at bad.json is not valid JSON" in run.err
    (project / "other.json").write_text(empty_state("elsewhere", "default").model_dump_json())
    run = cli("state", "push", "other.json", cwd=project, environ=ENV)
    assert run.code == 1 and "other.json is a state of project elsewhere, not demo" in run.err
    (project / "nobucket.yaml").write_text(ON_S3.replace(BUCKET, "no-such-bucket"))
    run = cli("state", "pull", "--file", "nobucket.yaml", cwd=project, environ=ENV)
    assert run.code == 1 and "the S3 bucket no-such-bucket does not exist" in run.err and "Traceback" not in run.err


# --- the rules alone -------------------------------------------------------------------------------------


def push(current: State | None, pushed: State, force: bool = False) -> State | None:
    return pushed_document(current, pushed, project="demo", workspace="default", force=force, source="f.json",
                           location="the store")


def test_push_rules() -> None:
    base = State(project="demo", serial=5)
    assert push(None, base) == base  # into an empty store: as it is
    assert push(base, base) is None  # already there
    assert push(base, base.model_copy(update={"serial": 8})).serial == 8  # newer: its serial is kept
    assert push(base, base.model_copy(update={"fastuner_version": "x"})).serial == 6  # an edit of this version
    with pytest.raises(UserError, match="older than the stored state"):
        push(base, base.model_copy(update={"serial": 4}))
    assert push(base, base.model_copy(update={"serial": 4}), force=True).serial == 6
    other = State(project="demo", serial=9)
    with pytest.raises(UserError, match="another state lineage"):
        push(base, other)
    forced = push(base, other, force=True)
    assert (forced.lineage, forced.serial) == (other.lineage, 9)
    assert push(base, State(project="demo", serial=1), force=True).serial == 6
    with pytest.raises(UserError, match="workspace staging, not default"):
        push(None, State(project="demo", workspace="staging"), force=True)


def test_an_earlier_version_is_pulled_from_the_buckets_versions_and_restored(project: Path, cli, aws) -> None:
    def run(*argv: str):
        return cli(*argv, "--file", "s3.yaml", cwd=project, environ=ENV)

    aws.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    assert run("apply", "--auto-approve").code == 0
    applied = json.loads(run("state", "pull").out)
    assert run("state", "rm", "dataset.intents").code == 0
    old = run("state", "pull", "--serial", str(applied["serial"]))
    assert old.code == 0, old.text
    assert json.loads(old.out) == applied
    missing = run("state", "pull", "--serial", "99")
    assert missing.code == 1 and "no version with serial 99" in missing.err
    assert f"serial {applied['serial'] + 1}, {applied['serial']}" in missing.err
    (project / "old.json").write_text(old.out)
    assert run("state", "push", "old.json", "--force").code == 0
    assert run("state", "list").out.split() == ["dataset.intents"]
