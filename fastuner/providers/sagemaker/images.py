"""The container image a training job runs: `training_image` from the spec, else the Hugging Face PyTorch
training image for the region, resolved offline by sagemaker-core (`image_uris.retrieve` reads the image
tables shipped inside the package: no credentials, no call).

Full versions are passed (an alias such as `pytorch2.9` would leak into the tag). The image's
transformers is older than the training program asks for; the training toolkit installs
containers/train/requirements.txt when the job starts, so only the CUDA build of torch comes from the
image. sagemaker-core is imported only here, and only when no image is given: it is large and slow to
import, and the `aws` extra is the only thing that installs it.
"""

from __future__ import annotations

from fastuner.providers.base import ProviderError
from fastuner.providers.sagemaker import instances

TRANSFORMERS_VERSION = "5.3.0"
PYTORCH_VERSION = "2.9.0"
PY_VERSION = "py312"


def training_image(region: str, instance_type: str, override: str | None = None) -> str:
    """The image URI a training job on `instance_type` runs."""
    if override:
        return override
    if instances.gpus(instance_type) == 0:
        raise ProviderError(
            f"{instance_type} has no GPU, and the Hugging Face training image is built for GPUs only",
            "Choose a GPU instance type (e.g. ml.g5.xlarge), or set provider.sagemaker.training_image to an image "
            "built for CPUs from containers/train/Dockerfile.")
    try:
        from sagemaker.core import image_uris
    except ImportError:
        raise ProviderError(
            "finding the Hugging Face training image needs sagemaker-core, which is not installed",
            "pip install 'fastuner[aws]', or set provider.sagemaker.training_image to an image URI.") from None
    try:
        return image_uris.retrieve(framework="huggingface", region=region, version=TRANSFORMERS_VERSION,
                                   base_framework_version=f"pytorch{PYTORCH_VERSION}", py_version=PY_VERSION,
                                   instance_type=instance_type, image_scope="training")
    except ValueError as exc:
        raise ProviderError(
            f"no Hugging Face training image (transformers {TRANSFORMERS_VERSION}, PyTorch {PYTORCH_VERSION}) "
            f"for {instance_type} in {region}: {exc}",
            "Set provider.sagemaker.training_image to an image URI, or choose another region or instance type.") from None


LMI_VERSION = "0.36.0"  # DJL LMI (vLLM with LoRA: max_lora_rank up to 512)


def lmi_image(region: str, instance_type: str, override: str | None = None) -> str:
    """The LMI (DJL) image a generation deployment runs: `inference_image` from the spec, else the
    one sagemaker-core's tables give for the region (offline, like the training image)."""
    if override:
        return override
    try:
        from sagemaker.core import image_uris
    except ImportError:
        raise ProviderError(
            "finding the LMI (DJL) inference image needs sagemaker-core, which is not installed",
            "pip install 'fastuner[aws]', or set provider.sagemaker.inference_image to an image URI.") from None
    try:
        return image_uris.retrieve(framework="djl-lmi", region=region, version=LMI_VERSION,
                                   instance_type=instance_type, image_scope="inference")
    except ValueError as exc:
        raise ProviderError(
            f"no LMI (DJL {LMI_VERSION}) inference image for {instance_type} in {region}: {exc}",
            "Set provider.sagemaker.inference_image to an image URI, or choose another region.") from None
