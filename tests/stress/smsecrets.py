"""The SageMaker half of tests/stress/secrets.py: the AWS quickstart against a moto server, canaries in
the environment and a sensitive variable in the tags; every request fastuner sent, every object it
wrote to S3 (each version of the state too) and every output grepped."""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import shutil
import stat
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.stress import Report
from tests.stress.secrets import canaries, find_canaries, scenario

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "adapter.intents-lora"


def sagemaker_scenario(trials: int, first_seed: int, workdir: Path, log: Callable[[str], None], *,
                       short: bool = False) -> Report:
    """`short`: only bootstrap, apply, logs and destroy (each CLI run costs seconds of imports)."""
    import logging

    from moto.server import ThreadedMotoServer

    from tests.aws.motoext import JobWorld

    world = JobWorld("us-east-1").install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    try:
        return scenario("secrets/sagemaker cycle (moto)", trials, first_seed, workdir, log,
                        lambda rng, folder, report: sagemaker_trial(f"http://{host}:{port}", world, rng, folder,
                                                                    report, short=short))
    finally:
        server.stop()
        world.uninstall()


def sagemaker_trial(url: str, world, rng: random.Random, folder: Path, report: Report, *,
                    short: bool = False) -> str | None:
    from tests.aws.test_e2e_server import Cloud

    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10)
    world.created.clear()
    world.hold = True
    planted = canaries(rng)
    secret = planted["sensitive"]
    project = folder / "quickstart-aws"
    shutil.copytree(ROOT / "examples" / "quickstart-aws", project)
    shutil.copytree(ROOT / "examples" / "quickstart" / "data", folder / "quickstart" / "data")
    text = (project / "fastuner.yaml").read_text()
    text = text.replace('region: "${var.region}"}', 'region: "${var.region}", lock_lease: 3s}')
    text = text.replace("variables:\n", "variables:\n  owner: {description: a sensitive canary, sensitive: true}\n")
    text = text.replace("    task: classification\n", "    task: classification\n"
                        "    tags: {owner: \"team-${var.owner}\"}\n")
    text = text.replace("    dataset: intents\n", "    dataset: intents\n    tags: {owner: \"${var.owner}\"}\n")
    (project / "fastuner.yaml").write_text(text)
    cloud = Cloud(url, world, project)
    cloud.env.update({k: v for k, v in planted.items() if k != "sensitive"}, FASTUNER_VAR_owner=secret,
                     PYTHONPATH=str(ROOT))
    outputs: dict[str, str] = {}

    def fastuner(*args: str, codes: tuple[int, ...] = (0,)) -> str:
        done = cloud.run(*args, timeout=300)
        report.cases += 1
        outputs[" ".join(args)] = done.stdout + done.stderr
        if done.returncode not in codes or "Traceback" in done.stderr:
            raise AssertionError(f"`fastuner {' '.join(args)}` exited {done.returncode}: {done.stderr[-800:]}")
        return done.stdout

    problems: list[str] = []
    try:
        fastuner("bootstrap", "--auto-approve")
        cloud.autofinish()
        if short:
            fastuner("apply", "--auto-approve")
            fastuner("logs", ADDRESS)
        else:
            fastuner("plan", "--json", codes=(0, 2))
            fastuner("plan", "--out", "plan.json", codes=(0, 2))
            fastuner("show", "plan.json", "--markdown")
            fastuner("apply", "plan.json")
            for args in (["state", "pull", "-"], ["show"], ["state", "show", ADDRESS], ["logs", ADDRESS]):
                fastuner(*args)
            fastuner("plan", "--detailed-exitcode")
        problems += _check_requests(cloud, planted, report)
        problems += _check_objects(cloud, planted, report)
    finally:
        cloud.close()
        with contextlib.suppress(Exception):
            fastuner("destroy", "--auto-approve")
    for name, out in outputs.items():
        problems += [f"{c} in the output of `fastuner {name}`" for c in find_canaries(out, planted)]
    return "; ".join(problems[:8]) or None


def _check_requests(cloud, planted: dict[str, str], report: Report) -> list[str]:
    """No canary in any request fastuner sent, but for the sensitive tag in the Tags that carry it."""
    problems = []
    if stat.S_IMODE(cloud.call_log.stat().st_mode) != 0o600:
        problems.append(f"the AWS call log is {oct(cloud.call_log.stat().st_mode)}, not 0600")
    creates = cloud.calls("CreateTrainingJob")
    if len(creates) != 1:
        problems.append(f"{len(creates)} CreateTrainingJob calls, expected 1")
    for call in cloud.calls():
        report.cases += 1
        params = dict(call["params"])
        tags = params.pop("Tags", None)
        for name in find_canaries(json.dumps(params), planted):
            problems.append(f"{name} in {call['operation']}'s request")
        if tags is not None:
            problems += [f"{n} in {call['operation']}'s Tags"
                         for n in find_canaries(json.dumps(tags), planted, allow=frozenset({"sensitive"}))]
    for call in creates:
        sent = call["params"]
        tags = {t["Key"]: t["Value"] for t in sent.get("Tags", [])}
        if tags.get("owner") != planted["sensitive"]:
            problems.append(f"the job's owner tag is {tags.get('owner')!r}, not the variable's value (the "
                            "provider must be handed the value, not its marker)")
        for part in ("HyperParameters", "Environment"):
            problems += [f"{n} in CreateTrainingJob's {part}" for n in find_canaries(json.dumps(sent.get(part)), planted)]
    return problems


def _check_objects(cloud, planted: dict[str, str], report: Report) -> list[str]:
    """Every version of every object in every bucket (the state's history too), unpacked if gzipped."""
    problems = []
    markers = 0
    for bucket in [b["Name"] for b in cloud.s3.list_buckets().get("Buckets", [])]:
        pages = cloud.s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
        for page in pages:
            for version in page.get("Versions", []):
                body = cloud.s3.get_object(Bucket=bucket, Key=version["Key"],
                                           VersionId=version["VersionId"])["Body"].read()
                report.cases += 1
                text = _readable(body)
                markers += "(sensitive:" in text
                problems += [f"{n} in s3://{bucket}/{version['Key']}" for n in find_canaries(text, planted)]
    if not markers:
        problems.append("no object in S3 holds a (sensitive:…) marker: the state should record the tags with one")
    return problems


def _readable(body: bytes) -> str:
    if body[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError, tarfile.TarError):
            body = gzip.decompress(body)
    return body.decode("utf-8", errors="replace")
