"""Base model, tokenizer and LoRA/QLoRA adapter: loading with clear reasons when something is wrong.

On a GPU with bf16 the base weights are bf16 and training runs under bf16 autocast, with the LoRA
weights kept in fp32 for the optimizer; on CPU everything is fp32. bitsandbytes is imported only for
`qlora`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import TrainError
from .settings import Hyperparameters

log = logging.getLogger("fastuner.train")
HEAD_MODULES = ("classifier", "score")
_SUPPORTED_LAYERS = ("Linear", "Conv1D", "Embedding", "Conv2d", "Linear4bit", "Linear8bitLt")


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype  # base weights and autocast dtype
    autocast: bool

    def autocast_context(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast)


def pick_runtime(local_rank: int) -> Runtime:
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        if torch.cuda.is_bf16_supported():
            return Runtime(device, torch.bfloat16, True)
        log.warning("this GPU has no bf16: training in fp32")
        return Runtime(device, torch.float32, False)
    return Runtime(torch.device("cpu"), torch.float32, False)


def resolve_base_model(name: str) -> str:
    """A local folder if one exists at `name`; otherwise a hub id (an obvious path that is missing fails)."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TrainError(f"base model folder {path} has no config.json")
        return str(path)
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        raise TrainError(f"base model path {name} does not exist")
    return name


def _load_error(name: str, error: Exception) -> TrainError:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    hint = (f" (HF_HUB_OFFLINE is set: only the local cache under "
            f"{os.environ.get('HF_HOME', '~/.cache/huggingface')} is searched)") if offline else ""
    return TrainError(f"cannot load base model '{name}': {first}{hint}")


def load_tokenizer(name: str, revision: str | None) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
    except (OSError, ValueError) as error:
        raise _load_error(name, error) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_config(name: str, revision: str | None) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, revision=revision)
    except (OSError, ValueError, KeyError) as error:
        raise _load_error(name, error) from None


def effective_max_seq_len(hp: Hyperparameters, config: Any) -> int:
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and 0 < limit < hp.max_seq_len:
        log.warning("max_seq_len %d is larger than the model's max_position_embeddings %d: using %d",
                    hp.max_seq_len, limit, limit)
        return limit
    return hp.max_seq_len


def load_model(hp: Hyperparameters, name: str, runtime: Runtime, tokenizer: Any,
               labels: list[str] | None) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from . import attention

    kwargs: dict[str, Any] = {"revision": hp.base_model_revision, "dtype": runtime.dtype}
    if hp.method == "qlora":
        kwargs["quantization_config"] = _bnb_config(runtime, classification=labels is not None)
        if runtime.device.type == "cuda":
            kwargs["device_map"] = {"": runtime.device.index or 0}
    try:
        if labels is not None:
            model = AutoModelForSequenceClassification.from_pretrained(
                name, num_labels=len(labels), id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)}, **kwargs)
        else:
            attention.register()
            model = AutoModelForCausalLM.from_pretrained(name, attn_implementation=attention.NAME, **kwargs)
    except (OSError, ValueError) as error:
        raise _load_error(name, error) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if hp.method != "qlora":
        model.to(runtime.device)
    return model


def _bnb_config(runtime: Runtime, *, classification: bool) -> Any:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TrainError("method 'qlora' needs the bitsandbytes package (pip install bitsandbytes)") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=runtime.dtype,
        llm_int8_skip_modules=[*HEAD_MODULES, "pooler", "lm_head"] if classification else None,
    )


def check_target_modules(model: Any, target_modules: str | tuple[str, ...]) -> None:
    if target_modules == "all-linear":
        return
    names = [n for n, m in model.named_modules() if type(m).__name__ in _SUPPORTED_LAYERS]
    for target in target_modules:
        if not any(n == target or n.endswith("." + target) for n in names):
            leaves = sorted({n.rsplit(".", 1)[-1] for n in names} - set(HEAD_MODULES))
            raise TrainError(f"target module '{target}' does not exist in the base model "
                             f"(its linear layers: {', '.join(leaves[:20])})")


def add_adapter(model: Any, hp: Hyperparameters) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    check_target_modules(model, hp.target_modules)
    if hp.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=hp.gradient_checkpointing)
    elif hp.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    target = hp.target_modules if isinstance(hp.target_modules, str) else list(hp.target_modules)
    config = LoraConfig(
        r=hp.lora_r, lora_alpha=hp.lora_alpha, lora_dropout=hp.lora_dropout, target_modules=target,
        bias="none", task_type=TaskType.CAUSAL_LM if hp.is_causal_lm else TaskType.SEQ_CLS,
    )
    try:
        model = get_peft_model(model, config)
    except ValueError as error:
        raise TrainError(f"cannot add the LoRA adapter: {str(error).splitlines()[0]}") from None
    if hp.method == "lora":
        from .lora import streamline_lora

        streamline_lora(model)
    return model


def decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The transformer body (returns final-normed hidden states) and the output layer of a causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def needs_full_logits(model: Any) -> bool:
    """Models that post-process logits (softcapping, scaling) take the standard forward path."""
    config = model.config
    return any(getattr(config, key, None) not in (None, 1, 1.0) for key in
               ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale"))


def compile_layers(model: Any) -> int:
    """torch.compile each decoder layer (dynamic sequence length); attention stays an eager call."""
    decoder, _ = decoder_and_head(model)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        return 0
    import torch._dynamo.config as dynamo_config

    for knob in ("recompile_limit", "cache_size_limit"):  # one graph serves every layer; allow a few shapes
        if hasattr(dynamo_config, knob):
            setattr(dynamo_config, knob, max(getattr(dynamo_config, knob), 64))
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def decompile_layers(model: Any) -> bool:
    """Undo compile_layers; True if something was compiled."""
    found = False
    for module in model.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
            found = True
    return found


def is_compile_error(error: BaseException) -> bool:
    return type(error).__module__.startswith(("torch._dynamo", "torch._inductor")) or type(error).__name__ in (
        "BackendCompilerFailed", "InductorError", "Unsupported")


class uncompiled:  # a context manager, named like torch.no_grad
    """Run compiled decoder layers eagerly inside the block (generation's KV cache shapes vary)."""

    def __init__(self, model: Any) -> None:
        try:
            decoder, _ = decoder_and_head(model)
        except (AttributeError, NotImplementedError, TypeError):  # not a causal LM: nothing compiled
            decoder = None
        self.layers = list(getattr(decoder, "layers", []) or [])
        self.saved: list[Any] = []

    def __enter__(self) -> None:
        self.saved = [getattr(layer, "_compiled_call_impl", None) for layer in self.layers]
        for layer in self.layers:
            if hasattr(layer, "_compiled_call_impl"):
                layer._compiled_call_impl = None

    def __exit__(self, *exc: Any) -> None:
        for layer, impl in zip(self.layers, self.saved, strict=True):
            if impl is not None:
                layer._compiled_call_impl = impl
