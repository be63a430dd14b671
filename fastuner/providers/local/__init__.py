"""The local provider: everything on this machine, no cloud account.

Datasets are validated, split and stored in a content-addressed object store under the work folder
(`.fastuner/` next to fastuner.yaml by default); adapters are trained by the training program
(containers/train) in a detached process; deployments are served by the inference server
(containers/serve) as a detached process on 127.0.0.1.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from fastuner.config.loader import Spec
from fastuner.providers.base import Provider


def work_dir(spec: Spec) -> Path:
    local = spec.config.provider.local
    return spec.resolve(local.work_dir if local else ".fastuner")


def local_provider(spec: Spec, workspace: str, env: Mapping[str, str] | None = None) -> Provider:
    """`env`: the environment the composition root was handed (the training and serving programs
    start with it; the base-model checks read the Hugging Face cache settings from it)."""
    from fastuner.providers.local.adapters import LocalAdapters
    from fastuner.providers.local.base_models import check_base_models
    from fastuner.providers.local.datasets import LocalDatasets
    from fastuner.providers.local.deployments import LocalDeployments
    from fastuner.providers.programs import code_hash

    env = dict(os.environ if env is None else env)
    root = work_dir(spec)
    settings = spec.config.provider.local
    datasets = LocalDatasets(root, spec.base_dir)
    adapters = LocalAdapters(root, spec.base_dir, python=settings.python, device=settings.device,
                             slots=settings.training_slots, env=env)
    deployments = LocalDeployments(root, spec.base_dir, python=settings.python, device=settings.device, env=env)
    return Provider(
        name="local",
        resources={"dataset": datasets, "adapter": adapters, "deployment": deployments},
        logs={"adapter": adapters, "deployment": deployments},
        endpoints=deployments,
        metrics=deployments,
        splits=datasets,
        priced=False,
        training_code_hash=lambda: code_hash("train"),
        checks=lambda: check_base_models(spec, env),
        keep_previous=settings.keep_previous,
    )
