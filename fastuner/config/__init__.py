"""fastuner.yaml: models, the loader with file positions, cross-resource checks and the JSON Schema."""

from fastuner.config.loader import Spec, load_spec
from fastuner.config.models import Config

__all__ = ["Config", "Spec", "load_spec"]
