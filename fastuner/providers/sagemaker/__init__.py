"""The SageMaker provider: datasets in S3, adapters as SageMaker training jobs, deployments as endpoints
serving many adapters (inference components on the LMI image, or fastuner's own server).

Built by `sagemaker_provider` in the composition root (cli/project.py) from `provider: {sagemaker: …}`.
Every AWS call goes through one `AwsSession` (fastuner/aws/clients.py) and every AWS failure through
its error mapper (fastuner/aws/errors.py), turned into `ProviderError` by `errors.provider_errors`.
Nothing is called while the provider is built: credentials are needed only when a command reads or
changes something in AWS (a plan against a state that records resources, apply, destroy).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastuner.config.loader import Spec
from fastuner.providers.base import Provider

POLL_ENV = "FASTUNER_SAGEMAKER_POLL"  # seconds between Describe calls while waiting (default 15)


def sagemaker_provider(spec: Spec, workspace: str, environ: Mapping[str, str]) -> Provider:
    """`environ`: the environment the composition root was handed; the AWS session reads credentials,
    profile and endpoints from it, never from `os.environ` directly."""
    from fastuner.aws.clients import AwsSession
    from fastuner.data.tokens import spec_work
    from fastuner.providers.programs import code_hash
    from fastuner.providers.sagemaker.checks import check_deployments, check_training
    from fastuner.providers.sagemaker.datasets import SageMakerDatasets
    from fastuner.providers.sagemaker.deployments import SageMakerDeployments
    from fastuner.providers.sagemaker.invoke import SageMakerEndpoints
    from fastuner.providers.sagemaker.metrics import SageMakerMetrics
    from fastuner.providers.sagemaker.pricelist import cache_dir, price_book
    from fastuner.providers.sagemaker.training import TrainingJobs

    settings = spec.config.provider.sagemaker
    if settings is None:
        raise ValueError("sagemaker_provider needs a spec with `provider: {sagemaker: …}`")
    session = AwsSession(settings.region, environ=environ)
    datasets = SageMakerDatasets(session, settings.bucket, settings.prefix, spec.base_dir,
                                 kms_key_id=settings.kms_key_id)
    poll = float(environ.get(POLL_ENV) or 15.0)
    adapters = TrainingJobs(session, settings, project=spec.config.project, workspace=workspace,
                            spec_dir=spec.base_dir, poll=poll, max_poll=max(poll, 60.0 if poll >= 15 else poll * 4))
    config = spec.config
    tasks = {name: config.datasets[a.dataset].task.value for name, a in config.adapters.items()
             if a.dataset in config.datasets}
    deployments = SageMakerDeployments(session, settings, project=config.project, workspace=workspace,
                                       spec_dir=spec.base_dir, adapter_tasks=tasks, poll=poll,
                                       max_poll=max(poll, 60.0 if poll >= 15 else poll * 4))
    return Provider(
        name="sagemaker",
        resources={"dataset": datasets, "adapter": adapters, "deployment": deployments},
        logs={"adapter": adapters},
        splits=datasets,
        endpoints=SageMakerEndpoints(session),
        metrics=SageMakerMetrics(session),
        importers={"adapter": adapters, "deployment": deployments},
        priced=True,
        training_code_hash=lambda: code_hash("train"),
        checks=lambda: check_training(spec) + check_deployments(spec),
        price_book=lambda: price_book(environ),
        training_work=lambda sources: spec_work(spec, sources, cache_dir(environ)),
    )
