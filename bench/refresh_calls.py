"""Refresh at scale on the SageMaker provider: the AWS calls `fastuner plan` makes to read N resources.

A project of N resources (a fifth of them datasets, the rest adapters, each a training job) is applied
for real through the engine and the SageMaker provider against moto in this process (an `after-call`
hook writes each job's model.tar.gz, as SageMaker would). Then, side by side in this process:
(a) refresh as `fastuner plan` does it (`engine.refresh.refresh`: one `read_many` per kind, List calls),
(b) the baseline a provider without batching would make: one read per resource (`read`: a Describe or
HEADs per resource). Every call is counted as fastuner sent it (`AwsSession.observe`). Goal: (a) at most
N/50 + 5 calls. Prints both counts, their ratio and the verdict.

    python bench/refresh_calls.py [--resources 500]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_MAX_ATTEMPTS": "2",
       "FASTUNER_SAGEMAKER_POLL": "0.01"}
ACCOUNT, REGION, BUCKET = "123456789012", "us-east-1", "refresh-bench"


def spec_text(n: int) -> str:
    datasets = max(1, n // 5)
    lines = ["version: 1", "project: bench", "provider:",
             f"  sagemaker: {{region: {REGION}, role_arn: 'arn:aws:iam::{ACCOUNT}:role/fastuner', "
             f"bucket: {BUCKET}, prefix: bench, training_image: 'img:1'}}", "datasets:"]
    lines += [f"  ds-{i}: {{path: data/ds-{i}.jsonl, task: classification, checks: {{min_rows: 10}}}}"
              for i in range(datasets)]
    lines.append("adapters:")
    lines += [f"  ad-{i}: {{base_model: org/tiny-bert, dataset: ds-{i % datasets}, "
              "compute: {instance_type: ml.g5.xlarge, max_runtime: 1h}}" for i in range(n - datasets)]
    return "\n".join(lines) + "\n"


def write_data(root: Path, n: int) -> None:
    (root / "data").mkdir()
    for i in range(max(1, n // 5)):
        rows = [json.dumps({"input": f"message {i}-{j}", "label": ["a", "b"][j % 2]}) for j in range(20)]
        (root / "data" / f"ds-{i}.jsonl").write_text("\n".join(rows) + "\n")


def model_tarball() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        data = b"{}"
        info = tarfile.TarInfo("fastuner.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=500)
    args = parser.parse_args()
    n = args.resources

    from moto import mock_aws

    from fastuner.cli.project import build_provider
    from fastuner.config.loader import load_spec
    from fastuner.engine.apply import apply_plan
    from fastuner.engine.refresh import refresh
    from fastuner.plan.planner import make_plan
    from fastuner.state.local import LocalStateStore
    from fastuner.state.model import empty_state

    with mock_aws(), tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_data(root, n)
        (root / "fastuner.yaml").write_text(spec_text(n))
        spec = load_spec(root / "fastuner.yaml", variables={}, environ={})
        provider = build_provider(spec, "default", {**os.environ, **ENV})
        session = provider.resources["adapter"].session
        s3 = session.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        tarball = model_tarball()

        def write_artifact(call: dict) -> None:  # what the job will write, as SageMaker would
            if call["operation"] == "CreateTrainingJob":
                params = call["params"]
                output = params["OutputDataConfig"]["S3OutputPath"].removeprefix(f"s3://{BUCKET}/")
                key = f"{output.rstrip('/')}/{params['TrainingJobName']}/output/model.tar.gz"
                s3.put_object(Bucket=BUCKET, Key=key, Body=tarball)

        session.observe(write_artifact)
        store = LocalStateStore(root / "state.json")
        started = time.perf_counter()
        empty = empty_state("bench", "default")
        plan = make_plan(spec, empty, refresh(spec, empty, provider), datetime.now(UTC))
        result = apply_plan(plan, store, provider, spec_dir=root, parallelism=16)
        if not result.ok:
            print("apply failed:", [r for r in result.results if r.status != "done"][:3], file=sys.stderr)
            return 1
        state = store.read()
        print(f"applied {len(state.resources)} resources against moto in {time.perf_counter() - started:.1f} s")

        calls: list[dict] = []
        session.observe(calls.append)
        started = time.perf_counter()
        observed = refresh(spec, state, provider)
        batched_s = time.perf_counter() - started
        batched = Counter(c["operation"] for c in calls)
        assert all(o.status == "ready" for o in observed.resources.values()), "refresh saw a change"

        calls.clear()
        started = time.perf_counter()
        for rs in state.resources.values():
            provider.for_kind(rs.kind).read(rs)
        baseline_s = time.perf_counter() - started
        baseline = Counter(c["operation"] for c in calls)

    total, base_total = sum(batched.values()), sum(baseline.values())
    goal = n / 50 + 5
    print(f"\nrefresh of {n} resources ({max(1, n // 5)} datasets, {n - max(1, n // 5)} adapters):")
    print(f"  fastuner (read_many, List calls): {total:5d} calls  {dict(batched)}  {batched_s:.2f} s")
    print(f"  baseline (one read per resource): {base_total:5d} calls  {dict(baseline)}  {baseline_s:.2f} s")
    print(f"  ratio: {base_total / max(total, 1):.0f}x fewer calls; goal ≤ N/50 + 5 = {goal:g}: "
          f"{'met' if total <= goal else 'NOT met'}")
    return 0 if total <= goal else 1


if __name__ == "__main__":
    sys.exit(main())
