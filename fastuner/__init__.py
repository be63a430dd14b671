"""fastuner: declarative LoRA fine-tuning — plan, apply and destroy datasets, adapters and deployments."""

__version__ = "0.1.0"
