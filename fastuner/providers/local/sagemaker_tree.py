"""The `input/config` folder of a SageMaker training job, written for a local run as the platform
writes it, so that the run folder is a SageMaker `/opt/ml` tree: the SageMaker training toolkit (what the
Hugging Face training images start the program with) runs it unchanged with `SAGEMAKER_BASE_DIR` set to
the run folder (tests/providers/test_sagemaker_toolkit.py runs it).

    hyperparameters.json   the training program's config (the toolkit JSON-decodes each value it can)
    inputdataconfig.json   one entry per channel under input/data, as for an S3 channel in File mode
    resourceconfig.json    one host, "localhost": the toolkit waits until every host resolves by DNS,
                           and SageMaker's own names ("algo-1") resolve only on the platform's network

Formats: https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-running-container.html
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HOST = "localhost"
INSTANCE_GROUP = "homogeneousCluster"


def input_data_config(channels: Iterable[str]) -> dict[str, dict[str, str]]:
    """What the platform writes for S3 channels downloaded in File mode (the JSON Lines splits)."""
    return {name: {"ContentType": "application/jsonlines", "TrainingInputMode": "File",
                   "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
            for name in channels}


def resource_config(host: str = HOST) -> dict[str, Any]:
    """One host in one instance group; "local" is the toolkit's own instance type for a local tree,
    and the loopback interface is where this host's address lives."""
    return {
        "current_host": host,
        "current_instance_type": "local",
        "current_group_name": INSTANCE_GROUP,
        "hosts": [host],
        "instance_groups": [{"instance_group_name": INSTANCE_GROUP, "instance_type": "local", "hosts": [host]}],
        "network_interface_name": "lo",
    }


def write_input_config(config_dir: Path, hyperparameters: dict[str, Any], channels: Iterable[str]) -> Path:
    """Write the three files; returns the hyperparameters file (the program's --config)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    files = {"hyperparameters.json": hyperparameters, "inputdataconfig.json": input_data_config(channels),
             "resourceconfig.json": resource_config()}
    for name, data in files.items():
        (config_dir / name).write_text(json.dumps(data, indent=2) + "\n")
    return config_dir / "hyperparameters.json"
