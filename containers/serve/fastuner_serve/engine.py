"""The model side: one base model, adapters in cache slots, one worker thread that runs every forward.

HTTP threads parse, check and tokenize a request (`prepare`), then queue it (`submit`). The worker is
the only thread that touches the model: it takes the oldest job and, for classification, every other
queued job that fits the same forward (at most `max_batch_size` rows and at most `cache_size` distinct
adapters), loads missing adapters into LRU slots and runs one padded forward in which each row uses its
own adapter. Generation runs one input at a time, greedy unless a temperature is given.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .adapters import AdapterEntry, BaseIdentity, Key, Registry, SlotCache
from .artifact import PREFIX, AdapterArtifact, base_model_names
from .errors import EXIT_BASE_MODEL, ApiError, StartupError
from .lora_bank import MultiLoraLinear, RoutedModule, Routing, install
from .metrics import Metrics
from .protocol import GenerationParams, Invocation, check_texts
from .settings import Settings


@dataclass
class LoadedBase:
    model: nn.Module
    tokenizer: Any
    identity: BaseIdentity
    device: torch.device
    max_length: int | None
    labels: tuple[str, ...] | None  # classification labels of the base's own head, if it has a trained one


def load_base(settings: Settings, task_hint: str | None) -> LoadedBase:
    """Load tokenizer and model; a failure is a `StartupError` with exit code 3."""
    import transformers
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    source, revision = settings.base_model, settings.base_model_revision
    try:
        config = AutoConfig.from_pretrained(source, revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    except Exception as error:  # any failure to read the base is a startup failure, said in one line
        raise StartupError(f"cannot load base model '{source}': {one_line(error)}", exit_code=EXIT_BASE_MODEL) \
            from None
    architectures = config.architectures or []
    task = settings.task or task_hint
    if task is None:
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            task = "classification"
        elif any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
            task = "generation"
        else:
            raise StartupError(f"cannot tell the task of '{source}' ({architectures}); pass --task",
                               exit_code=EXIT_BASE_MODEL)
    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    auto = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(source, revision=revision, dtype=dtype)
    except Exception as error:
        raise StartupError(f"cannot load base model '{source}': {one_line(error)}", exit_code=EXIT_BASE_MODEL) \
            from None
    model.to(device).eval()
    if tokenizer.pad_token_id is None:  # as containers/train does
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    labels = None
    if task == "classification" and any(a.endswith("ForSequenceClassification") for a in architectures):
        labels = tuple(str(model.config.id2label[i]) for i in range(model.config.num_labels))
    identity = BaseIdentity(
        task=task, model=source, names=base_model_names(source, settings.base_model_ids),
        revision=revision, tokenizer_hash=tokenizer_hash(tokenizer),
        linear_shapes={name: (m.in_features, m.out_features) for name, m in model.named_modules()
                       if isinstance(m, nn.Linear)},
        modules=frozenset(name for name, _ in model.named_modules()),
    )
    return LoadedBase(model, tokenizer, identity, device, max_length(model.config, tokenizer), labels)


def tokenizer_hash(tokenizer: Any) -> str:
    """As containers/train writes it: sha256 of the fast tokenizer's JSON (`backend_tokenizer.to_str()`)
    without its runtime truncation and padding settings, keys sorted (containers/README.md)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        text = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    else:
        # The runtime truncation and padding settings change as the tokenizer is used: not identity.
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def max_length(config: Any, tokenizer: Any) -> int | None:
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(n) for n in limits if isinstance(n, int) and 0 < n < 10_000_000]
    return min(limits) if limits else None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) < 400 else text[:400] + "..."


@dataclass
class Job:
    kind: str  # "classify" or "generate"
    entry: AdapterEntry | None
    artifact: AdapterArtifact | None
    rows: list[list[int]]
    params: GenerationParams
    future: Future = field(default_factory=Future)
    cache: str = ""  # "hit" or "miss" once the worker found (or loaded) its adapter
    load_seconds: float | None = None  # how long loading it took, on a miss that loaded it

    @property
    def key(self) -> Key | None:
        return None if self.entry is None else self.entry.key


class Engine:
    def __init__(self, base: LoadedBase, registry: Registry, metrics: Metrics, settings: Settings):
        self.base = base
        self.registry = registry
        self.metrics = metrics
        self.settings = settings
        self.task = base.identity.task
        self.routing = Routing()
        self.cache = SlotCache(settings.cache_size)
        self._cache_lock = threading.Lock()
        self._slot_modules: dict[int, list[nn.Module]] = {}
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._tokenizer_lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="fastuner-engine", daemon=True)

    # -- HTTP threads -------------------------------------------------------------------------------

    def prepare(self, invocation: Invocation) -> Job:
        """Resolve the adapter, check the request against it, tokenize: every 4xx is raised here."""
        entry = self.registry.get(invocation.adapter) if invocation.adapter else None
        artifact = self.registry.artifact(entry) if entry else None
        if self.task == "classification":
            if invocation.generation_keys:
                raise ApiError(400, "bad_request", f"{', '.join(invocation.generation_keys)} only apply to "
                               "generation; this server serves classification")
            if entry is None and self.base.labels is None:
                raise ApiError(400, "adapter_required",
                               f"the base model '{self.base.identity.model}' has no trained classification "
                               "head; name an adapter (GET /adapters lists them)")
        check_texts(invocation, max_chars=artifact.max_input_chars if artifact else None, adapter=invocation.adapter)
        rows = [self._encode(text, artifact) for text in invocation.inputs]
        limit = self.base.max_length
        extra = invocation.params.max_new_tokens if self.task == "generation" else 0
        for i, ids in enumerate(rows):
            where = f"inputs[{i}]" if invocation.batched else "the input"
            if not ids:
                raise ApiError(400, "empty_input", f"{where} is empty after tokenization")
            if limit is not None and len(ids) + extra > limit:
                detail = f" plus max_new_tokens={extra}" if extra else ""
                raise ApiError(422, "input_too_long", f"{where} is {len(ids)} tokens{detail}; the model's limit "
                               f"is {limit} tokens")
        return Job("classify" if self.task == "classification" else "generate", entry, artifact, rows,
                   invocation.params)

    def _encode(self, text: str, artifact: AdapterArtifact | None) -> list[int]:
        """Token ids exactly as containers/train builds them (containers/README.md, prompt_format)."""
        tok = self.base.tokenizer
        with self._tokenizer_lock:
            if self.task == "classification" or artifact is None:
                return tok(text)["input_ids"]
            if artifact.prompt_format == "chat_template":
                prompt = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
                return tok(prompt, add_special_tokens=False)["input_ids"]
            return tok(text + "\n")["input_ids"]

    def submit(self, job: Job) -> Future:
        with self._cond:
            if self._stopping:
                raise ApiError(503, "shutting_down", "the server is shutting down")
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def evict(self, key: Key) -> bool:
        """Drop a cached adapter version (replaced or deleted); True if it was loaded."""
        with self._cache_lock:
            dropped = self.cache.drop(key) is not None
        if dropped:
            self.metrics.cache_event(evictions=1)
        return dropped

    def loaded(self) -> list[Key]:
        with self._cache_lock:
            return self.cache.keys()

    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the queued jobs, then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._worker.join(timeout)

    # -- the worker -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                with torch.inference_mode():
                    self._process(batch)
            except Exception as error:  # a bug: every job still waiting gets a 500
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
            finally:
                self._drop_stale()

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch = [first]
            if first.kind != "classify":
                return batch
            rows = len(first.rows)
            keys = {first.key} - {None}
            for job in list(self._queue):
                if rows >= self.settings.max_batch_size:
                    break
                if job.kind != "classify" or rows + len(job.rows) > self.settings.max_batch_size:
                    continue
                if job.key is not None and job.key not in keys and len(keys) >= self.cache.capacity:
                    continue
                self._queue.remove(job)
                batch.append(job)
                rows += len(job.rows)
                keys |= {job.key} - {None}
            return batch

    def _process(self, batch: list[Job]) -> None:
        slots: dict[Key | None, int] = {None: 0}
        ready = []
        for job in batch:
            try:
                if job.key not in slots:
                    slots[job.key] = self._acquire(job, pinned=set(slots.values()))
                else:
                    self._count_hit(job)
                ready.append(job)
            except ApiError as error:
                job.future.set_exception(error)
        if not ready:
            return
        if ready[0].kind == "generate":
            job = ready[0]
            job.future.set_result([self._generate(ids, slots[job.key], job.params) for ids in job.rows])
            return
        rows = [(job, i, slots[job.key]) for job in ready for i in range(len(job.rows))]
        results: dict[int, list[Any]] = {id(job): [None] * len(job.rows) for job in ready}
        size = self.settings.max_batch_size
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            for (job, i, _), scores in zip(chunk, self._classify(chunk), strict=True):
                results[id(job)][i] = scores
        for job in ready:
            job.future.set_result(results[id(job)])

    def _count_hit(self, job: Job) -> None:
        if job.key is not None:
            with self._cache_lock:
                self.cache.lookup(job.key)
            self.metrics.cache_event(hit=True)
            job.cache = "hit"

    def _acquire(self, job: Job, pinned: set[int]) -> int:
        """The slot holding the job's adapter, loading it (and evicting the LRU one) on a miss."""
        with self._cache_lock:
            slot = self.cache.lookup(job.key)
            if slot is not None:
                self.metrics.cache_event(hit=True)
                job.cache = "hit"
                return slot
            slot, evicted = self.cache.admit(job.key, pinned)
        self.metrics.cache_event(miss=True, evictions=int(evicted is not None))
        job.cache = "miss"
        started = time.perf_counter()
        try:
            self._load(job.artifact, slot)
        except Exception as error:
            with self._cache_lock:
                self.cache.drop(job.key)
            self._clear(slot)
            if isinstance(error, ApiError):
                raise
            raise ApiError(422, "adapter_invalid",
                           f"adapter '{job.entry.name}' could not be loaded: {one_line(error)}") from error
        job.load_seconds = time.perf_counter() - started
        self.metrics.adapter_loaded(job.load_seconds)
        return slot

    def _load(self, artifact: AdapterArtifact, slot: int) -> None:
        from safetensors.torch import load_file

        tensors = load_file(str(artifact.weights_file))
        self._clear(slot)
        model, used = self.base.model, []
        n_slots = self.cache.capacity + 1
        for target in artifact.targets:
            layer = install(model, target.module, MultiLoraLinear, self.routing, n_slots)
            layer.write(slot, tensors[f"{PREFIX}{target.module}.lora_A.weight"],
                        tensors[f"{PREFIX}{target.module}.lora_B.weight"], target.scaling)
            used.append(layer)
        for module, params in artifact.saved_modules.items():
            routed = install(model, module, RoutedModule, self.routing)
            routed.write(slot, {name: tensors[f"{PREFIX}{module}.{name}"] for name in params})
            used.append(routed)
        self._slot_modules[slot] = used

    def _clear(self, slot: int) -> None:
        for module in self._slot_modules.pop(slot, []):
            module.clear(slot)

    def _drop_stale(self) -> None:
        """A job queued before a replace may have loaded the old version: free its slot now."""
        for key in self.loaded():
            if not self.registry.current(key):
                self.evict(key)

    def _classify(self, chunk: list[tuple[Job, int, int]]) -> list[dict[str, Any]]:
        pad = self.base.tokenizer.pad_token_id
        rows = [job.rows[i] for job, i, _ in chunk]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for n, row in enumerate(rows):
            ids[n, : len(row)] = torch.tensor(row)
            mask[n, : len(row)] = 1
        self.routing.set([slot for _, _, slot in chunk], self.base.device)
        try:
            logits = self.base.model(input_ids=ids.to(self.base.device),
                                     attention_mask=mask.to(self.base.device)).logits.float().cpu()
        finally:
            self.routing.set([0], self.base.device)
        self.metrics.batch(len(rows))
        out = []
        for n, (job, _, _) in enumerate(chunk):
            labels = job.artifact.labels if job.artifact else self.base.labels
            probs = torch.softmax(logits[n, : len(labels)], dim=-1).tolist()
            best = max(range(len(labels)), key=probs.__getitem__)
            out.append({"label": labels[best], "scores": dict(zip(labels, probs, strict=True))})
        return out

    def _generate(self, ids: list[int], slot: int, params: GenerationParams) -> dict[str, str]:
        model, tok = self.base.model, self.base.tokenizer
        config = copy.deepcopy(model.generation_config)
        config.max_new_tokens = params.max_new_tokens
        config.pad_token_id = tok.pad_token_id
        config.do_sample = params.temperature > 0
        config.temperature = params.temperature if config.do_sample else None
        config.top_p = params.top_p if config.do_sample else None
        config.top_k = None
        extra: dict[str, Any] = {}
        if params.stop:
            config.stop_strings = list(params.stop)
            extra["tokenizer"] = tok
        if params.seed is not None:
            torch.manual_seed(params.seed)
        input_ids = torch.tensor([ids], device=self.base.device)
        self.routing.set([slot], self.base.device)
        try:
            output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                    generation_config=config, **extra)
        finally:
            self.routing.set([0], self.base.device)
        text = tok.decode(output[0, len(ids):], skip_special_tokens=True)
        cut = min((text.find(s) for s in params.stop if s in text), default=-1)
        return {"generated_text": text[:cut] if cut >= 0 else text}
