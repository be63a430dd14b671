"""The round trip of a training job's settings: what fastuner sends in CreateTrainingJob, laid out as
SageMaker lays it out in the container (/opt/ml/input/config/*.json, the channels downloaded from S3, the
source tarball extracted into /opt/ml/code), read by the real SageMaker training toolkit (what the Hugging
Face training images start the program with) and parsed by the training program's own settings parser,
must give back exactly the training config fastuner computed.

The platform side is played as SageMaker plays it; everything else is the real code on both ends. With
`sagemaker_torch_distributed_enabled`, the toolkit's torch_distributed launcher is asked for the command
it would run (torchrun over every host).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from fastuner.providers.sagemaker.jobs import CHECKPOINT_DIR
from fastuner.providers.training import training_config
from tests.providers.sagemaker_world import BUCKET, World

pytestmark = pytest.mark.skipif(importlib.util.find_spec("sagemaker_training") is None,
                                reason="sagemaker-training is not installed (pip install -e '.[dev]')")

READ_AS_THE_CONTAINER_DOES = """
import dataclasses, json, sys
from sagemaker_training import environment, runner
env = environment.Environment()
args, env_vars = env.to_cmd_args(), env.to_env_vars()
sys.path.insert(0, environment.code_dir)
from fastuner_train.settings import parse_hyperparameters
hp = parse_hyperparameters(args, env_vars)
command = None
if env.additional_framework_parameters.get("sagemaker_torch_distributed_enabled"):
    command = runner.get(runner.RunnerType.TorchDistributed)._create_command()
print(json.dumps({"args": args, "settings": dataclasses.asdict(hp), "channels": env.channel_input_dirs,
                  "framework": env.additional_framework_parameters, "module": env.module_name,
                  "hps": json.loads(env_vars["SM_HPS"]), "command": command}, default=list))
"""


def container_tree(world: World, request: dict[str, Any], base: Path, hosts: list[str] | None = None) -> Path:
    """/opt/ml as SageMaker prepares it for the first host of the job `request` created. `hosts`: the
    hosts' names (SageMaker's "algo-N" resolve only on its network; the toolkit waits for them)."""
    s3 = world.session.client("s3")
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(request["HyperParameters"]))
    (config / "inputdataconfig.json").write_text(json.dumps({
        c["ChannelName"]: {"ContentType": c["ContentType"], "TrainingInputMode": "File",
                           "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for c in request["InputDataConfig"]}))
    resources = request["ResourceConfig"]
    hosts = hosts or [f"algo-{i + 1}" for i in range(resources["InstanceCount"])]
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": hosts[0], "current_instance_type": resources["InstanceType"],
        "current_group_name": "homogeneousCluster", "hosts": hosts, "network_interface_name": "eth0",
        "instance_groups": [{"instance_group_name": "homogeneousCluster",
                             "instance_type": resources["InstanceType"], "hosts": hosts}]}))
    for c in request["InputDataConfig"]:  # S3Prefix channels, downloaded in File mode
        uri = c["DataSource"]["S3DataSource"]["S3Uri"]
        prefix = uri[len(f"s3://{BUCKET}/"):]
        folder = base / "input" / "data" / c["ChannelName"]
        folder.mkdir(parents=True)
        for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]:
            body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            (folder / obj["Key"][len(prefix):]).write_bytes(body)
    source = json.loads(request["HyperParameters"]["sagemaker_submit_directory"])
    tarball = s3.get_object(Bucket=BUCKET, Key=source[len(f"s3://{BUCKET}/"):])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        tar.extractall(base / "code", filter="data")
    return base


def container_env(base: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_", "HF_"))}
    env.update({"SAGEMAKER_BASE_DIR": str(base), "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", **extra})
    return env


def read_in_container(base: Path) -> dict[str, Any]:
    env = container_env(base)
    proc = subprocess.run([sys.executable, "-c", READ_AS_THE_CONTAINER_DOES], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def expected_config(world: World, change: Any, dataset: Any) -> dict[str, Any]:
    labels = sorted(dataset.outputs["labels"])
    return training_config(change.after, dataset.inputs, labels, world.root, CHECKPOINT_DIR)


@pytest.mark.parametrize("case", ["plain", "long labels, two instances"])
def test_the_program_parses_exactly_the_config_fastuner_sent(tmp_path: Path, case: str) -> None:
    with mock_aws():
        world = World(tmp_path / "spec")
        if case == "plain":
            change, dataset = world.change(), world.dataset()
        else:
            labels = {f"intent number {i:03d} with, a comma and 'quotes'": 1 for i in range(150)}
            change = world.change(compute="{instance_type: ml.g5.12xlarge, instance_count: 2}")
            dataset = world.dataset(labels=labels)
        world.jobs.create(change, world.ctx(dataset, wait=False))
        request = world.sent("CreateTrainingJob")[0]
        seen = read_in_container(container_tree(world, request, tmp_path / "opt_ml"))

    config = expected_config(world, change, dataset)
    parsed = {k: list(v) if isinstance(v, tuple) else v for k, v in seen["settings"].items()}
    assert {k: parsed[k] for k in config} == config
    assert not [a for a in seen["args"] if a.startswith("--sagemaker_")]  # the toolkit keeps its own keys
    assert seen["module"] == "train" and set(seen["channels"]) == {c["ChannelName"] for c in request["InputDataConfig"]}
    args = seen["args"]
    if case == "plain":
        assert args[args.index("--labels") + 1] == str(sorted(dataset.outputs["labels"]))  # "['account_access', ...]"
        assert args[args.index("--base_model_revision") + 1] == ""  # a null
        assert seen["command"] is None and seen["hps"]["labels"] == config["labels"]
    else:
        assert "--labels" not in args and args[args.index("--config") + 1] == "config.json"
        assert parsed["config"] == "config.json"
        assert seen["framework"]["sagemaker_torch_distributed_enabled"] is True
        assert seen["framework"]["sagemaker_instance_type"] == "ml.g5.12xlarge"
        command = seen["command"]
        assert command[:5] == ["torchrun", "--nnodes", "2", "--nproc_per_node", command[4]]
        assert command[command.index("--master_addr") + 1] == "algo-1" and command[command.index("--node_rank") + 1] == "0"
        assert command[command.index("train.py") + 1:] == args  # the same arguments on every rank


def hub_cache(home: Path, repo_id: str, model: Path) -> Path:
    """A Hugging Face cache holding `model` under a hub id (what the image would have downloaded)."""
    commit = "0" * 40
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return home


@pytest.mark.slow
def test_a_job_runs_the_uploaded_program_on_its_channels_and_its_artifact_is_adopted(tmp_path: Path,
                                                                                      tiny_models) -> None:
    """The container side played as SageMaker plays it, with the real toolkit (`trainer.train()`): the
    program from the uploaded tarball trains on the channels from S3 with the hyperparameters sent;
    SageMaker's tarball of SM_MODEL_DIR is then what the next apply adopts, without a second job."""
    assert not Path("/opt/ml/checkpoints").exists()
    with mock_aws():
        world = World(tmp_path / "spec")
        change, dataset = world.change(base_model="fastuner-test/tiny-bert"), world.dataset()
        world.jobs.create(change, world.ctx(dataset, wait=False))
        request = world.sent("CreateTrainingJob")[0]
        base = container_tree(world, request, tmp_path / "opt_ml", hosts=["localhost"])
        home = hub_cache(tmp_path / "hf", "fastuner-test/tiny-bert", tiny_models["bert"])
        env = container_env(base, HF_HOME=str(home), HF_HUB_OFFLINE="1", **request["Environment"])
        proc = subprocess.run([sys.executable, "-c", "from sagemaker_training import trainer; trainer.train()"],
                              env=env, capture_output=True, text=True, timeout=600)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log
        assert (base / "output" / "success").is_file() and not (base / "output" / "failure").exists()
        assert "--base_model fastuner-test/tiny-bert" in log and "--labels ['" in log

        # what SageMaker parses from the log with the job's MetricDefinitions (the last value of each)
        final = {}
        for d in request["AlgorithmSpecification"]["MetricDefinitions"]:
            values = [m.group(1) for line in log.splitlines() if (m := re.search(d["Regex"], line))]
            if values:
                final[d["Name"]] = float(values[-1])
        assert final["step"] == 3 and "train_loss" in final and "test_accuracy" in final

        # SageMaker uploads SM_MODEL_DIR as <S3OutputPath><job>/output/model.tar.gz, files at its root
        model_tar = io.BytesIO()
        with tarfile.open(fileobj=model_tar, mode="w:gz") as tar:
            for path in sorted((base / "model").iterdir()):
                tar.add(path, arcname=path.name)
        artifact = f"{request['OutputDataConfig']['S3OutputPath']}{request['TrainingJobName']}/output/model.tar.gz"
        world.put_artifact(artifact, model_tar.getvalue())

        outcome = world.jobs.create(change, world.ctx(dataset))  # moto completed the job at once
        assert len(world.sent("CreateTrainingJob")) == 1
        assert outcome.outputs["artifact"] == {"model.tar.gz": artifact}
    with tarfile.open(fileobj=io.BytesIO(model_tar.getvalue())) as tar:
        names = set(tar.getnames())
    assert {"adapter_config.json", "adapter_model.safetensors", "fastuner.json"} <= names
    assert not Path("/opt/ml/checkpoints").exists()  # the job wrote nothing outside its tree
