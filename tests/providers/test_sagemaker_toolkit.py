"""The local executor's run folder is a SageMaker `/opt/ml` tree: the SageMaker training toolkit (what
the Hugging Face training images start the program with) reads it and runs the training program in it
unchanged, with the hyperparameters rendered on the command line as the toolkit renders them.

The platform side is played as on SageMaker: the program's folder is extracted into `code/` (the SDK's
sourcedir) and the entry point is named by `SAGEMAKER_PROGRAM`; everything else comes from the tree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastuner.providers.programs import CONTAINERS
from tests.cli.helpers import fastuner_subprocess
from tests.providers.test_local_adapters import state_of, write_project

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("sagemaker_training") is None,
                       reason="sagemaker-training is not installed (pip install -e '.[dev]')"),
]

CLASSIFIER = """\
  intents-lora:
    base_model: ${var.bert}
    dataset: intents
    lora: {r: 4, alpha: 8, dropout: 0.0, target_modules: [query, value]}
    training: {epochs: 1, max_steps: 3, batch_tokens: 512, max_seq_len: 32}
"""

READ_ENVIRONMENT = """
import json
from sagemaker_training import environment
env = environment.Environment()
print(json.dumps({"hosts": env.hosts, "current_host": env.current_host, "channels": env.channel_input_dirs,
                  "model_dir": env.model_dir, "output_data_dir": env.output_data_dir,
                  "network_interface_name": env.network_interface_name, "hyperparameters": env.hyperparameters,
                  "args": env.to_cmd_args()}))
"""


def toolkit_env(base: Path) -> dict[str, str]:
    """The environment of a SageMaker training container: nothing of the local executor's SM_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
    env.update({"SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_PROGRAM": "train.py", "AWS_REGION": "us-east-1"})
    return env


def test_the_run_folder_runs_unchanged_under_the_sagemaker_training_toolkit(tmp_path: Path, tiny_models) -> None:
    root = write_project(tmp_path / "p", tiny_models, adapters=CLASSIFIER)
    proc = fastuner_subprocess("apply", "--auto-approve", cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = Path(state_of(root).resources["adapter.intents-lora"].outputs["artifact_dir"]).parent
    config = json.loads((run / "input" / "config" / "hyperparameters.json").read_text())
    before = (run / "model" / "adapter_model.safetensors").stat().st_mtime_ns

    read = subprocess.run([sys.executable, "-c", READ_ENVIRONMENT], env=toolkit_env(run), capture_output=True,
                          text=True, timeout=120)
    assert read.returncode == 0, read.stderr
    seen = json.loads(read.stdout.splitlines()[-1])
    assert seen["hosts"] == ["localhost"] and seen["current_host"] == "localhost"
    assert seen["channels"] == {s: str(run / "input" / "data" / s) for s in ("train", "validation", "test")}
    assert seen["model_dir"] == str(run / "model") and seen["output_data_dir"] == str(run / "output" / "data")
    assert seen["hyperparameters"] == config
    args = seen["args"]
    assert args[args.index("--labels") + 1] == str(config["labels"])  # "['account_access', ...]"
    assert args[args.index("--target_modules") + 1] == "['query', 'value']"
    assert args[args.index("--base_model_revision") + 1] == ""  # a null

    # the platform extracts the SDK's sourcedir into code/ (which importing the toolkit created, empty)
    shutil.copytree(CONTAINERS / "train", run / "code", dirs_exist_ok=True)
    train = subprocess.run([sys.executable, "-c", "from sagemaker_training import trainer; trainer.train()"],
                           env=toolkit_env(run), capture_output=True, text=True, timeout=600)
    out = train.stdout + train.stderr
    assert train.returncode == 0, out
    assert "Invoking script with the following command" in out and "--labels ['" in out
    assert (run / "output" / "success").is_file() and not (run / "output" / "failure").exists()
    assert (run / "model" / "adapter_model.safetensors").stat().st_mtime_ns > before
    steps = [line for line in out.splitlines() if line.startswith("[fastuner] step=") and "train_loss=" in line]
    assert steps and "total_steps=3" in steps[-1]
    metrics = json.loads((run / "model" / "metrics.json").read_text())
    assert metrics["steps"] == 3 and "test_accuracy" in metrics
