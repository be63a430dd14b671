"""Checks across resources that a single model cannot make (pure: no file access)."""

from __future__ import annotations

from pydantic import BaseModel

from fastuner.config.duration import format_duration
from fastuner.config.loader import Spec
from fastuner.config.models import PROVIDER_ONLY, SECTION
from fastuner.errors import Diagnostic


def check_spec(spec: Spec) -> list[Diagnostic]:
    """Deployments serve adapters of their own base model and of one kind of task."""
    config = spec.config
    out: list[Diagnostic] = []
    for name, dep in config.deployments.items():
        families: dict[str, list[str]] = {}
        for i, adapter_name in enumerate(dep.adapters):
            adapter = config.adapters.get(adapter_name)
            if adapter is None:
                continue  # reported by the graph as a dangling reference
            if adapter.base_model != dep.base_model:
                out.append(Diagnostic.error(
                    f"deployment.{name} serves base model `{dep.base_model}` but adapter.{adapter_name} "
                    f"is trained on `{adapter.base_model}`",
                    "An adapter only works on the base model it was trained on: serve it from a deployment "
                    f"with base_model: {adapter.base_model}, or retrain it.",
                    source=spec.source(("deployments", name, "adapters", i)), address=f"deployment.{name}"))
            dataset = config.datasets.get(adapter.dataset)
            if dataset is not None:
                families.setdefault(dataset.task.family, []).append(adapter_name)
        if len(families) > 1:
            listing = "; ".join(f"{fam}: {', '.join(names)}" for fam, names in sorted(families.items()))
            out.append(Diagnostic.error(
                f"deployment.{name} mixes {' and '.join(sorted(families))} adapters ({listing})",
                "A deployment serves one kind of model head; split them into two deployments.",
                source=spec.source(("deployments", name, "adapters")), address=f"deployment.{name}"))
        if dep.ttl is not None and dep.idle_ttl is not None and dep.idle_ttl > dep.ttl:
            out.append(Diagnostic.warning(
                f"deployment.{name}: idle_ttl ({format_duration(dep.idle_ttl)}) is longer than ttl "
                f"({format_duration(dep.ttl)}) and never applies",
                source=spec.source(("deployments", name, "idle_ttl")), address=f"deployment.{name}"))
    for name, adapter in config.adapters.items():
        dataset = config.datasets.get(adapter.dataset)
        if dataset is not None and dataset.split.validation == 0:
            out.append(Diagnostic.warning(
                f"adapter.{name} trains on dataset.{adapter.dataset}, which has no validation split",
                "The best checkpoint is then the last one; set split.validation to evaluate every epoch.",
                source=spec.source(("datasets", adapter.dataset, "split")), address=f"adapter.{name}"))
    out.extend(_other_provider_fields(spec))
    return out


def _other_provider_fields(spec: Spec) -> list[Diagnostic]:
    """A field set for the other provider is accepted (a spec may move between providers) but has no
    effect here, and plans leave it out: say so once per resource, at the first such field."""
    provider = spec.config.provider.name
    out: list[Diagnostic] = []
    for kind, paths in PROVIDER_ONLY.items():
        for name, model in getattr(spec.config, SECTION[kind]).items():
            unused = [p for p, owner in paths.items() if owner != provider and _is_set(model, p)]
            if not unused:
                continue
            owner = {"sagemaker": "SageMaker", "local": "Local-provider"}[paths[unused[0]]]
            out.append(Diagnostic.warning(
                f"{kind}.{name}: {', '.join(unused)}: no effect on the {provider} provider",
                f"{owner}-only settings are accepted here but do nothing: {provider} plans neither show nor store "
                f"them. Remove them, or keep them for a move to `provider: {{{paths[unused[0]]}: ...}}`.",
                source=spec.source((SECTION[kind], name, *unused[0].split(".")), key=True), address=f"{kind}.{name}"))
    return out


def _is_set(model: BaseModel, path: str) -> bool:
    """Whether the spec wrote the field at the dotted `path` (a default is not set)."""
    value: object = model
    for part in path.split("."):
        if not isinstance(value, BaseModel) or part not in value.model_fields_set:
            return False
        value = getattr(value, part)
    return True
