"""An adapter's life on SageMaker through the real planner and engine (moto in process): apply, a no-op
re-plan, a replace that keeps the earlier version, going back to it without training (the adapter cache
on S3), and destroy, which leaves neither jobs nor files.

The dataset kind is played by a stand-in that stores splits where the S3 dataset provider does
(`datasets/<sha256>/data.jsonl`, each split's `uri` its channel prefix); the adapter kind is the real
`TrainingJobs`. moto completes a job at once but writes no artifact; the test puts SageMaker's
model.tar.gz where the job's description says it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from fastuner.config.loader import load_spec
from fastuner.data.s3store import S3ObjectStore
from fastuner.engine.apply import apply_plan
from fastuner.engine.refresh import refresh
from fastuner.plan.model import Action, Plan
from fastuner.plan.observed import Observation, ObservationStatus
from fastuner.plan.planner import make_plan
from fastuner.providers.base import Context, Outcome, Provider, ResourceProvider
from fastuner.providers.programs import code_hash
from fastuner.state.local import LocalStateStore
from fastuner.state.model import ResourceState
from tests.providers.sagemaker_world import BUCKET, REGION, ROLE, World, rows

SPEC = f"""\
version: 1
project: demo
provider:
  sagemaker: {{region: {REGION}, role_arn: "{ROLE}", bucket: {BUCKET}, prefix: ft}}
datasets:
  intents: {{path: data/intents.jsonl, task: classification}}
adapters:
  intents-lora:
    base_model: org/tiny-bert
    dataset: intents
    lora: {{r: RANK, alpha: 8}}
    training: {{max_steps: 3, batch_tokens: 512, max_seq_len: 32}}
"""


class StoredSplits(ResourceProvider):
    """Stands in for the S3 dataset provider: the file's rows as train / validation / test in S3."""

    kind = "dataset"

    def __init__(self, world: World) -> None:
        self.store = S3ObjectStore(world.session, BUCKET, "ft", namespace="datasets", filename="data.jsonl")

    def read(self, rs: ResourceState) -> Observation:
        return Observation(ObservationStatus.READY)

    def create(self, change: Any, ctx: Context) -> Outcome:
        splits = {}
        for split, n in (("train", 40), ("validation", 8), ("test", 8)):
            data = rows(split, n)
            key = self.store.put_bytes(data)
            splits[split] = {"key": key, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "rows": n,
                             "uri": self.store.folder_uri(key)}
        return Outcome.ready({"splits": splits, "labels": {"account_access": 14, "cancel_order": 14,
                                                           "order_status": 14, "refund_request": 14},
                              "counts": {"records": 56, "duplicates": 0}})

    def update(self, change: Any, prior: ResourceState, ctx: Context) -> Outcome:
        return Outcome.ready(prior.outputs)

    def delete(self, rs: ResourceState, ctx: Context) -> None:
        pass


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.world = World(root)
        self.jobs = self.world.jobs
        self.provider = Provider(name="sagemaker", resources={"dataset": StoredSplits(self.world), "adapter": self.jobs},
                                 logs={"adapter": self.jobs}, priced=True, training_code_hash=lambda: code_hash("train"),
                                 keep_previous=1)
        self.store = LocalStateStore(root / "state" / "demo.json")
        (root / "data").mkdir()
        (root / "data" / "intents.jsonl").write_bytes(rows("all", 56))

    def plan(self, rank: int = 4, **kw: Any) -> Plan:
        (self.root / "fastuner.yaml").write_text(SPEC.replace("RANK", str(rank)))
        spec = load_spec(self.root / "fastuner.yaml", variables={}, environ={})
        state = self.store.read()
        assert state is not None or not kw.get("destroy")
        from fastuner.state.model import empty_state

        state = state or empty_state("demo", "default")
        return make_plan(spec, state, refresh(spec, state, self.provider), datetime.now(UTC), **kw)

    def apply(self, plan: Plan) -> None:
        result = apply_plan(plan, self.store, self.provider, spec_dir=self.root, parallelism=2)
        assert result.ok, [(r.address, r.message) for r in result.results]
        for rs in (result.state.resources.values() if result.state else []):  # SageMaker's upload of SM_MODEL_DIR
            uri = rs.outputs.get("model_data")
            if uri and uri[len(f"s3://{BUCKET}/"):] not in self.world.objects():
                self.world.put_artifact(uri)

    def adapter(self) -> ResourceState:
        state = self.store.read()
        assert state is not None
        return state.resources["adapter.intents-lora"]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with mock_aws():
        yield Project(tmp_path)


def actions(plan: Plan) -> dict[str, Action]:
    return {c.address: c.action for c in plan.changes if c.action is not Action.NOOP}


def test_apply_replace_restore_destroy(project: Project) -> None:
    world = project.world
    project.apply(project.plan(rank=4))
    first = project.adapter()
    assert first.status == "ready" and first.outputs["job_name"] == first.physical_name
    assert first.outputs["artifact"]["model.tar.gz"].endswith(f"/{first.physical_name}/output/model.tar.gz")
    assert len(world.sent("CreateTrainingJob")) == 1

    before = len(world.calls)
    again = project.plan(rank=4)
    assert not again.has_changes
    assert {c["operation"] for c in world.calls[before:]} <= {"DescribeTrainingJob"}  # refresh only reads

    project.apply(project.plan(rank=8))  # a new version; the earlier one stays restorable
    second = project.adapter()
    assert second.physical_name != first.physical_name and len(world.sent("CreateTrainingJob")) == 2
    assert [t.physical_name for t in second.history] == [first.physical_name]
    assert first.outputs["model_data"][len(f"s3://{BUCKET}/"):] in world.objects()
    assert not world.sent("DeleteTrainingJob")

    back = project.plan(rank=4)
    change = next(c for c in back.changes if c.address == "adapter.intents-lora")
    assert change.action is Action.REPLACE and change.restore and "no training" in change.detail
    project.apply(back)
    restored = project.adapter()
    assert len(world.sent("CreateTrainingJob")) == 2  # found again, not trained again
    assert restored.outputs["restored_from"] == first.physical_name
    assert restored.outputs["artifact"] == first.outputs["artifact"]
    assert [t.physical_name for t in restored.history] == [second.physical_name]

    destroy = project.plan(rank=4, destroy=True)
    assert set(actions(destroy).values()) == {Action.DELETE}
    project.apply(destroy)
    assert not [k for k in world.objects() if k.startswith(("ft/adapters/", "ft/checkpoints/"))]
    assert sorted(p["TrainingJobName"] for p in world.sent("DeleteTrainingJob")) == sorted(
        [first.physical_name, second.physical_name])
    assert world.session.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_no_wait_leaves_the_job_and_the_next_plan_picks_up_its_result(project: Project) -> None:
    world = project.world
    plan = project.plan()
    result = apply_plan(plan, project.store, project.provider, spec_dir=project.root, wait_for=False)
    assert result.ok
    pending = project.adapter()
    name = pending.pending.detail["job_name"]
    assert pending.status == "pending" and name == pending.physical_name
    job = World.moto_job(name)
    job.training_job_status = "InProgress"

    running = project.plan()
    change = next(c for c in running.changes if c.address == "adapter.intents-lora")
    assert change.action is Action.CREATE and "still in flight" in change.detail and name in change.detail

    job.training_job_status = "Completed"
    done = project.plan()
    assert not actions(done) and done.refresh["adapter.intents-lora"]["status"] == "ready"
    project.apply(done)  # records what refresh saw
    ready = project.adapter()
    assert ready.status == "ready" and ready.outputs["job_name"] == name and ready.outputs["artifact"]
    assert len(world.sent("CreateTrainingJob")) == 1
