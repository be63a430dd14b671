"""The local provider: everything on this machine, no cloud account.

Datasets are validated, split and stored in a content-addressed object store under the work folder
(`.fastuner/` next to fastuner.yaml by default).
"""

from __future__ import annotations

from pathlib import Path

from fastuner.config.loader import Spec
from fastuner.providers.base import Provider


def work_dir(spec: Spec) -> Path:
    local = spec.config.provider.local
    return spec.resolve(local.work_dir if local else ".fastuner")


def local_provider(spec: Spec, workspace: str) -> Provider:
    from fastuner.providers.local.datasets import LocalDatasets

    root = work_dir(spec)
    return Provider(
        name="local",
        resources={"dataset": LocalDatasets(root, spec.base_dir)},
        priced=False,
        unsupported={
            "adapter": "the local provider cannot train adapters in this version of fastuner",
            "deployment": "the local provider cannot serve deployments in this version of fastuner",
        },
    )
