"""What a training job needs to know about an instance type: how many GPUs it has (one process per GPU
under SageMaker's `torch_distributed` launcher) and whether its disk is local NVMe storage (SageMaker
refuses a `VolumeKmsKeyId` there: the hardware encrypts it).

The instance types SageMaker trains on come from botocore's service model (`TrainingInstanceType`), so
a typo is caught before any call, with a suggestion. The GPU counts are AWS's published figures for
each size; a GPU type missing from the table (a new family) is launched distributed anyway, which costs
nothing on one GPU: the launcher starts one process per GPU it finds.
"""

from __future__ import annotations

import difflib
import functools

# GPUs per instance, by family and size (sizes not listed have one GPU)
_MULTI_GPU: dict[str, dict[str, int]] = {
    "g4dn": {"12xlarge": 4},
    "g5": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "g6": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "g6e": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "g7e": {"12xlarge": 2, "24xlarge": 4, "48xlarge": 8},
    "p2": {"8xlarge": 8, "16xlarge": 16},
    "p3": {"8xlarge": 4, "16xlarge": 8},
    "p3dn": {"24xlarge": 8},
    "p4d": {"24xlarge": 8},
    "p4de": {"24xlarge": 8},
    "p5": {"48xlarge": 8},
    "p5e": {"48xlarge": 8},
    "p5en": {"48xlarge": 8},
    "p6-b200": {"48xlarge": 8},
    "p6-b300": {"48xlarge": 8},
    "p6e-gb200": {"36xlarge": 4},
}
GPU_FAMILIES = frozenset(_MULTI_GPU)
# families whose training volume is local instance storage (NVMe): no VolumeKmsKeyId
LOCAL_STORAGE = frozenset({"g4dn", "g5", "g6", "g6e", "g7e", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200",
                           "p6-b300", "p6e-gb200", "m5d", "c5d", "r5d", "trn1", "trn1n", "trn2"})
CPU_FAMILIES = frozenset({"c4", "c5", "c5n", "c6i", "c7i", "c7i-flex", "c8i", "c8i-flex", "m4", "m5", "m6i", "m7i",
                          "m7i-flex", "m8i", "m8i-flex", "r5", "r5d", "r6i", "r7i", "r8i", "r8i-flex", "t3"})
NEURON_FAMILIES = frozenset({"trn1", "trn1n", "trn2", "inf1", "inf2"})


def family(instance_type: str) -> str:
    """"g5" of "ml.g5.12xlarge"."""
    parts = instance_type.split(".")
    return parts[1] if len(parts) == 3 else ""


def gpus(instance_type: str) -> int | None:
    """GPUs of one instance: 0 for CPU and Neuron types, None for a type this table does not know."""
    fam = family(instance_type)
    if fam in CPU_FAMILIES or fam in NEURON_FAMILIES:
        return 0
    if fam in GPU_FAMILIES:
        return _MULTI_GPU[fam].get(instance_type.split(".")[2], 1)
    return None


def distributed(instance_type: str, count: int) -> bool:
    """Whether the job runs one process per GPU under torchrun (several GPUs or several instances)."""
    n = gpus(instance_type)
    return count > 1 or n is None or n > 1


def local_storage(instance_type: str) -> bool:
    return family(instance_type) in LOCAL_STORAGE


@functools.cache
def training_instance_types() -> frozenset[str]:
    """The instance types CreateTrainingJob accepts, from botocore's service model (no call)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return frozenset(model.shape_for("TrainingInstanceType").enum)


def unknown_instance_type(instance_type: str) -> str | None:
    """Why `instance_type` is not a SageMaker training instance type (with the closest one), or None."""
    known = training_instance_types()
    if instance_type in known:
        return None
    close = difflib.get_close_matches(instance_type, sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{instance_type} is not a SageMaker training instance type{hint}"


@functools.cache
def hosting_instance_types() -> frozenset[str]:
    """The instance types an endpoint config accepts, from botocore's service model (no call)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return frozenset(model.shape_for("ProductionVariantInstanceType").enum)


def unknown_hosting_type(instance_type: str) -> str | None:
    """Why `instance_type` is not a SageMaker hosting instance type (with the closest one), or None."""
    known = hosting_instance_types()
    if instance_type in known:
        return None
    close = difflib.get_close_matches(instance_type, sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{instance_type} is not a SageMaker hosting instance type{hint}"
