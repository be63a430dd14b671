"""What a SageMaker training job cannot run, found from the spec alone (no call): checked at validate and
plan with the spec's line and column (`check_training`, for the provider's `checks`), and again by
`create` before anything is uploaded (a plan file may have been made elsewhere).

- an instance type SageMaker does not train on (with the closest one);
- a CPU or Neuron instance type with the default image, which is built for GPUs only;
- `network_isolation` with the default image, which installs the program's dependencies from PyPI
  when the job starts;
- a base model that is a folder on this machine: a job runs elsewhere and reads a hub id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastuner.config.loader import Spec
from fastuner.config.models import SageMakerProvider
from fastuner.errors import Diagnostic
from fastuner.providers.sagemaker import instances
from fastuner.providers.training import resolve_model


@dataclass(frozen=True)
class Problem:
    field: tuple[str, ...]  # where in the adapter (("compute", "instance_type")); () for the provider's settings
    summary: str
    hint: str


def provider_problems(settings: SageMakerProvider) -> list[Problem]:
    if settings.network_isolation and not settings.training_image:
        return [Problem((), "network_isolation needs a training image with the program's dependencies: the default "
                        "image installs them from PyPI when the job starts",
                        "Build containers/train/Dockerfile, push it to ECR and set provider.sagemaker.training_image.")]
    return []


def adapter_problems(base_model: str, instance_type: str, settings: SageMakerProvider, spec_dir: Path) -> list[Problem]:
    out: list[Problem] = []
    unknown = instances.unknown_instance_type(instance_type)
    if unknown:
        out.append(Problem(("compute", "instance_type"), unknown,
                           "Set compute.instance_type to a SageMaker training instance type (or upgrade boto3 if "
                           "the type is new)."))
    elif instances.gpus(instance_type) == 0 and not settings.training_image:
        out.append(Problem(("compute", "instance_type"),
                           f"{instance_type} has no GPU, and the Hugging Face training image is built for GPUs only",
                           "Choose a GPU instance type (e.g. ml.g5.xlarge), or set provider.sagemaker.training_image "
                           "to an image built for CPUs from containers/train/Dockerfile."))
    local = resolve_model(base_model, spec_dir)
    if Path(local).is_absolute() and Path(local).exists():
        out.append(Problem(("base_model",), f"base_model {base_model} is a folder on this machine, which a SageMaker "
                           "job cannot read", "Use a Hugging Face hub id (org/name), or a training_image that has "
                           "the model in its HF_HOME."))
    return out


def check_training(spec: Spec) -> list[Diagnostic]:
    """Every problem of the spec's adapters on SageMaker, at its place in fastuner.yaml."""
    settings = spec.config.provider.sagemaker
    if settings is None:
        return []
    out = [Diagnostic.error(p.summary, p.hint, source=spec.source(("provider", "sagemaker", "network_isolation")))
           for p in provider_problems(settings)]
    for name, adapter in spec.config.adapters.items():
        for p in adapter_problems(adapter.base_model, adapter.compute.instance_type, settings, spec.base_dir):
            out.append(Diagnostic.error(f"adapter.{name}: {p.summary}", p.hint,
                                        source=spec.source(("adapters", name, *p.field)), address=f"adapter.{name}"))
    return out


SERVE_IMAGE_HINT = ("Build containers/serve/Dockerfile, push it to ECR and set provider.sagemaker.inference_image "
                    "to its URI (classification adapters run on fastuner's own server: vLLM serves causal LMs only).")


def deployment_problems(base_model: str, instance_type: str, mode: str, settings: SageMakerProvider,
                        spec_dir: Path) -> list[Problem]:
    """What an endpoint of `mode` (serving.LMI or SERVE) cannot serve, found from the spec alone."""
    out: list[Problem] = []
    if mode == "serve" and not settings.inference_image:
        out.append(Problem((), "a classification deployment runs fastuner's own server (containers/serve), and "
                           "provider.sagemaker.inference_image is not set", SERVE_IMAGE_HINT))
    unknown = instances.unknown_hosting_type(instance_type)
    if unknown:
        out.append(Problem(("compute", "instance_type"), unknown,
                           "Set compute.instance_type to a SageMaker hosting instance type (or upgrade boto3 if "
                           "the type is new)."))
    elif mode == "lmi" and instances.gpus(instance_type) == 0 and not settings.inference_image:
        out.append(Problem(("compute", "instance_type"),
                           f"{instance_type} has no GPU, and the LMI (vLLM) image that serves generation adapters "
                           "needs one", "Choose a GPU instance type (e.g. ml.g5.xlarge)."))
    local = resolve_model(base_model, spec_dir)
    if Path(local).is_absolute() and Path(local).exists():
        out.append(Problem(("base_model",), f"base_model {base_model} is a folder on this machine, which a SageMaker "
                           "endpoint cannot read", "Use a Hugging Face hub id (org/name) or an s3:// URI of the "
                           "model's files."))
    return out


def check_deployments(spec: Spec) -> list[Diagnostic]:
    """Every problem of the spec's deployments on SageMaker, at its place in fastuner.yaml."""
    from fastuner.providers.sagemaker.serving import mode_of

    settings = spec.config.provider.sagemaker
    if settings is None:
        return []
    config = spec.config
    out = []
    for name, dep in config.deployments.items():
        tasks = [config.datasets[config.adapters[a].dataset].task.value for a in dep.adapters
                 if a in config.adapters and config.adapters[a].dataset in config.datasets]
        for p in deployment_problems(dep.base_model, dep.compute.instance_type, mode_of(tasks), settings,
                                     spec.base_dir):
            where = ("deployments", name, *p.field) if p.field else ("deployments", name)
            out.append(Diagnostic.error(f"deployment.{name}: {p.summary}", p.hint, source=spec.source(where),
                                        address=f"deployment.{name}"))
    return out
