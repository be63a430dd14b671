"""fastuner's training program: LoRA / QLoRA fine-tuning under the SageMaker training contract.

`train.py` (one folder up) is the entry point; the modules here are small and import torch,
transformers and peft only when they need them, so that bad hyperparameters fail in milliseconds.
"""
