"""The SageMaker provider: datasets in S3, adapters as SageMaker training jobs (deployments: part 2).

Built by `sagemaker_provider` in the composition root (cli/project.py) from `provider: {sagemaker: …}`.
Every AWS call goes through one `AwsSession` (fastuner/aws/clients.py) and every AWS failure through
its error mapper (fastuner/aws/errors.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastuner.config.kinds import KINDS
from fastuner.config.loader import Spec
from fastuner.providers.base import Provider


def sagemaker_provider(spec: Spec, workspace: str, environ: Mapping[str, str]) -> Provider:
    unsupported = "the sagemaker provider is not available in this version of fastuner"
    return Provider(name="sagemaker", resources={}, priced=True, unsupported={k: unsupported for k in KINDS})
