"""The pydantic models of fastuner.yaml.

Every model forbids unknown keys and every field carries a description: that text is what editors show
from the generated JSON Schema (specs/fastuner.schema.json). Models are frozen values: the planner
compares them, it never mutates them.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from fastuner.config.duration import Duration
from fastuner.config.tasks import Task, describe_tasks

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"
PROJECT_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
AddressRef = Annotated[str, StringConstraints(pattern=r"^(dataset|adapter|deployment)\.[a-z0-9][a-z0-9-]*$")]
Tags = dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], Annotated[str, StringConstraints(max_length=256)]]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=False)


class Method(StrEnum):
    LORA = "lora"
    QLORA = "qlora"


# --- where state lives -------------------------------------------------------------------------


class LocalBackend(Strict):
    path: str | None = Field(
        None,
        description="State file, relative to fastuner.yaml. Default: state/<project>.json "
        "(state/<project>.<workspace>.json in a non-default workspace).",
    )


class S3Backend(Strict):
    bucket: str = Field(description="S3 bucket holding the state (versioning should be enabled).")
    key: str = Field(description="Object key of the state, e.g. fastuner/skyrim.json.")
    region: str | None = Field(None, description="AWS region of the bucket; default from the AWS config.")
    kms_key_id: str | None = Field(None, description="KMS key for server-side encryption of the state.")
    lock_lease: Duration = Field(
        timedelta(minutes=2),
        description="How long the state lock outlives its holder's last renewal (the holder renews it every "
        "third of this while it works): a run killed without releasing it (a cancelled CI job) blocks others "
        "at most this long, then the lock is taken over.")

    @field_validator("lock_lease")
    @classmethod
    def _lease(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=3) <= value <= timedelta(hours=1):
            raise ValueError("lock_lease must be between 3s and 1h")
        return value


class Backend(Strict):
    local: LocalBackend | None = Field(None, description="State in a local JSON file with an OS lock.")
    s3: S3Backend | None = Field(None, description="State in S3, locked by a conditional write.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Backend:
        if (self.local is None) == (self.s3 is None):
            raise ValueError("choose exactly one backend: `local` or `s3`")
        return self


# --- where work runs ---------------------------------------------------------------------------


class LocalProvider(Strict):
    work_dir: str = Field(
        ".fastuner", description="Folder (relative to fastuner.yaml) for the object store, runs and logs."
    )
    python: str | None = Field(
        None, description="Python interpreter that runs the training and serving programs; default: this one."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where local training and serving run.")
    training_slots: int = Field(1, ge=1, le=64, description="Adapters trained at the same time on this machine.")
    keep_previous: int = Field(
        3, ge=0, le=100,
        description="Earlier trained versions of each adapter whose files stay in the object store besides "
        "the current one: changing a setting back to one of them restores it in seconds instead of "
        "retraining. 0 keeps none; an adapter removed from the spec (or destroyed) keeps none.",
    )


class SageMakerProvider(Strict):
    region: str = Field(description="AWS region for S3, training jobs and endpoints.")
    role_arn: str = Field(description="IAM execution role SageMaker assumes for jobs and endpoints.")
    bucket: str = Field(description="S3 bucket for datasets and adapter artifacts.")
    prefix: str = Field("fastuner", description="Key prefix inside the bucket.")
    training_image: str | None = Field(
        None, description="Training image URI; default: the Hugging Face PyTorch training image (GPU instance "
        "types only), which installs containers/train/requirements.txt when each job starts. An image built from "
        "containers/train/Dockerfile has them already (needed with network_isolation).")
    inference_image: str | None = Field(
        None, description="Inference image URI for deployments. Generation adapters (text_generation, qa) run on "
        "the LMI (DJL, vLLM) image by default; classification adapters run on fastuner's own server, "
        "containers/serve, which you build and push: required for them.")
    kms_key_id: str | None = Field(None, description="KMS key for S3 objects, volumes and endpoints.")
    subnets: list[str] = Field(default_factory=list, description="VPC subnets for jobs and endpoints (with "
                               "security_group_ids).")
    security_group_ids: list[str] = Field(default_factory=list, description="VPC security groups (with subnets).")
    network_isolation: bool = Field(
        False, description="Run training jobs with no network access (EnableNetworkIsolation): nothing is "
        "downloaded while a job runs, so training_image must hold the program's dependencies and base_model "
        "must be found in it (HF_HOME). S3 channels and outputs still work.")

    @model_validator(mode="after")
    def _vpc(self) -> SageMakerProvider:
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("a VPC needs both subnets and security_group_ids: set both, or neither")
        return self


class Provider(Strict):
    local: LocalProvider | None = Field(None, description="Train and serve on this machine (the default).")
    sagemaker: SageMakerProvider | None = Field(None, description="Train and serve on Amazon SageMaker.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Provider:
        if (self.local is None) == (self.sagemaker is None):
            raise ValueError("choose exactly one provider: `local` or `sagemaker`")
        return self

    @property
    def name(self) -> str:
        return "local" if self.local is not None else "sagemaker"


# --- which provider uses which resource field ---------------------------------------------------

# Which fields only one provider uses is declared per kind (`Kind.provider_only` in config/kinds.py);
# their descriptions start with the matching note.
SAGEMAKER_ONLY_NOTE = "SageMaker only (no effect on the local provider). "
LOCAL_ONLY_NOTE = "Local provider only (no effect on SageMaker). "


# --- datasets ----------------------------------------------------------------------------------


class Split(Strict):
    train: float = Field(0.8, gt=0, le=1, description="Fraction of distinct rows used for training.")
    validation: float = Field(0.1, ge=0, lt=1, description="Fraction for per-epoch evaluation.")
    test: float = Field(0.1, ge=0, lt=1, description="Fraction held out for the final evaluation.")
    seed: int = Field(42, ge=0, description="Seed of the reproducible split.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> Split:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must sum to 1 (got {total:g})")
        return self


class DatasetChecks(Strict):
    min_rows: int = Field(100, ge=1, description="Fewest distinct rows accepted after deduplication.")
    max_input_chars: int = Field(8192, ge=1, description="Longest accepted `input`, in characters.")
    max_target_chars: int = Field(2048, ge=1, description="Longest accepted `target`, in characters.")


class Dataset(Strict):
    path: str = Field(description="JSONL file, relative to fastuner.yaml.")
    task: Task = Field(description=f"{describe_tasks()}.")
    split: Split = Field(default_factory=Split, description="How distinct rows are split (seeded).")
    checks: DatasetChecks = Field(default_factory=DatasetChecks, description="Row validation limits.")
    tags: Tags = Field(default_factory=dict, description="Free-form tags, changed in place.")
    depends_on: list[AddressRef] = Field(
        default_factory=list, description="Extra ordering: addresses (kind.name) this resource waits for."
    )


# --- adapters ----------------------------------------------------------------------------------


class Lora(Strict):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path (0 is fastest).")
    target_modules: Literal["all-linear"] | list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        "all-linear", description="`all-linear` or module names such as [q_proj, v_proj]."
    )


class Training(Strict):
    epochs: float = Field(3, gt=0, le=1000, description="Passes over the training split (may be fractional).")
    learning_rate: float = Field(2.0e-4, gt=0, lt=1, description="Peak learning rate.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of steps with linear warm-up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_tokens: int = Field(16384, ge=64, description="Token budget of one micro-batch (packed).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_seq_len: int = Field(2048, ge=8, description="Longest sequence; longer rows are truncated.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    seed: int = Field(42, description="Seed for initialisation and data order.")
    checkpoint_every: int = Field(100, ge=1, description="Optimizer steps between checkpoints.")
    max_steps: int | None = Field(None, ge=1, description="Optional cap on optimizer steps.")


class TrainingCompute(Strict):
    instance_type: str = Field("ml.g5.2xlarge", description=f"{SAGEMAKER_ONLY_NOTE}Training instance type.")
    instance_count: int = Field(1, ge=1, le=64,
                                description=f"{SAGEMAKER_ONLY_NOTE}Instances (data parallel across all GPUs).")
    spot: bool = Field(False, description=f"{SAGEMAKER_ONLY_NOTE}Use managed spot training (checkpoints resume "
                       "interruptions).")
    max_runtime: Duration = Field(timedelta(hours=4), description="Stop the job after this long (every provider).")
    max_wait: Duration | None = Field(None, description=f"{SAGEMAKER_ONLY_NOTE}Spot only: longest wait incl. "
                                      "interruptions (≥ max_runtime; default: twice max_runtime).")
    volume_size_gb: int = Field(50, ge=1, le=16384, description=f"{SAGEMAKER_ONLY_NOTE}Training volume size.")

    @model_validator(mode="after")
    def _max_wait(self) -> TrainingCompute:
        if self.max_wait is not None and not self.spot:
            raise ValueError("max_wait applies to spot training only: set spot: true or remove max_wait")
        if self.max_wait is not None and self.max_wait < self.max_runtime:
            raise ValueError("max_wait must be at least max_runtime")
        return self


class Adapter(Strict):
    base_model: str = Field(description="Hugging Face hub id (e.g. Qwen/Qwen2.5-0.5B) or a local path.")
    base_model_revision: str | None = Field(None, description="Hub revision (commit, tag or branch) to pin.")
    dataset: Name = Field(description="Name of the dataset (in `datasets:`) to train on.")
    method: Method = Field(Method.LORA, description="lora, or qlora (4-bit NF4 base weights).")
    lora: Lora = Field(default_factory=Lora, description="LoRA hyperparameters.")
    training: Training = Field(default_factory=Training, description="Optimisation settings.")
    compute: TrainingCompute = Field(default_factory=TrainingCompute,
                                     description="Where the job runs: on the local provider only max_runtime applies.")
    tags: Tags = Field(default_factory=dict, description="Free-form tags, changed in place.")
    depends_on: list[AddressRef] = Field(
        default_factory=list, description="Extra ordering: addresses (kind.name) this resource waits for."
    )


# --- deployments -------------------------------------------------------------------------------


class DeploymentCompute(Strict):
    instance_type: str = Field("ml.g5.xlarge", description=f"{SAGEMAKER_ONLY_NOTE}Instance type of the endpoint.")
    count: int = Field(1, ge=1, le=100, description=f"{SAGEMAKER_ONLY_NOTE}Instances behind the endpoint.")


class Deployment(Strict):
    base_model: str = Field(description="Base model served; every listed adapter must be trained on it.")
    adapters: list[Name] = Field(default_factory=list, description="Adapters (names in `adapters:`) to serve.")
    compute: DeploymentCompute = Field(default_factory=DeploymentCompute,
                                       description="Serving capacity (SageMaker only: local serves one process).")
    cache_size: int = Field(8, ge=1, le=1000, description="Adapters kept loaded at once (LRU).")
    port: int | None = Field(None, ge=1, le=65535,
                             description=f"{LOCAL_ONLY_NOTE}Serve on this port of 127.0.0.1 (default: a free one).")
    ttl: Duration | None = Field(None, description="Hard lifetime from creation; then it is destroyed.")
    idle_ttl: Duration | None = Field(None, description="Destroyed after this long with no invocation.")
    tags: Tags = Field(default_factory=dict, description="Free-form tags, changed in place.")
    depends_on: list[AddressRef] = Field(
        default_factory=list, description="Extra ordering: addresses (kind.name) this resource waits for."
    )

    @field_validator("adapters")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        seen = {a for a in value if value.count(a) > 1}
        if seen:
            raise ValueError(f"adapter listed twice: {', '.join(sorted(seen))}")
        return value


# --- guard-rails -------------------------------------------------------------------------------


InstancePattern = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.*?\[\]!-]+$")]


class Policy(Strict):
    """Guard-rails checked at plan time: a plan that breaks one fails (exit code 3) and is never applied.
    A policy file (`--policy FILE`, FASTUNER_POLICY) can only make them stricter: the lower maximum
    applies, a type must be allowed by every allowed_instance_types list, protected addresses add up."""

    max_ttl: Duration | None = Field(
        None, description="Longest ttl a deployment may have. A deployment that a plan creates, updates or "
        "replaces with a longer ttl, or with no ttl at all, breaks it.")
    max_cost_per_apply: float | None = Field(
        None, ge=0, description="USD: the most one apply may commit to, the plan's one-time bound (training "
        "jobs at max_runtime, new deployments until their ttl, at on-demand list prices). A new deployment "
        "without a ttl, or a resource whose price fastuner does not know, cannot be shown to fit and breaks "
        "it. The local provider costs nothing.")
    max_hourly_cost: float | None = Field(
        None, ge=0, description="USD per hour: the most a deployment that a plan creates, updates or replaces "
        "may cost by the hour, and all deployments together once the plan is applied. A deployment whose "
        "price fastuner does not know breaks it. The local provider costs nothing.")
    allowed_instance_types: list[InstancePattern] | None = Field(
        None, description=f"{SAGEMAKER_ONLY_NOTE}Instance types that training jobs and endpoints may use, as "
        "names or globs (`ml.g5.*`, `ml.g6.?xlarge`); every type a plan creates, updates or replaces must match "
        "one. An empty list allows none.")
    protect: list[AddressRef] = Field(
        default_factory=list, description="Addresses (kind.name) that no plan may delete or replace: not "
        "`destroy`, not `reap` when their ttl ends, not removing them from the spec, not --replace. Remove an "
        "address from this list (and from any policy file) to allow it.")

    @field_validator("protect")
    @classmethod
    def _unique_protect(cls, value: list[str]) -> list[str]:
        twice = sorted({a for a in value if value.count(a) > 1})
        if twice:
            raise ValueError(f"address listed twice: {', '.join(twice)}")
        return value


class PolicyFile(Strict):
    """A policy file named in CI (`--policy FILE`): the spec's `policy:` section alone."""

    policy: Policy = Field(description="Guard-rails that add to the spec's: they can only make it stricter.")


# --- the whole file ----------------------------------------------------------------------------


class Variable(Strict):
    description: str = Field("", description="What the variable is for.")
    default: str | int | float | bool | None = Field(None, description="Value used when none is given.")
    sensitive: bool = Field(
        False, description="Keep the value out of plans (JSON, Markdown, terminal), state and logs: they show "
        "(sensitive:HASH) in its place; only the provider sees it. Give it with --var or FASTUNER_VAR_NAME, "
        "not as a default in the spec.")


class Config(Strict):
    version: Literal[1] = Field(description="Format version of fastuner.yaml (1).")
    project: Annotated[str, StringConstraints(pattern=PROJECT_PATTERN)] = Field(
        description="Project name: lowercase letters, digits and dashes; namespaces every name and tag."
    )
    backend: Backend = Field(
        default_factory=lambda: Backend(local=LocalBackend()), description="Where state lives."
    )
    provider: Provider = Field(
        default_factory=lambda: Provider(local=LocalProvider()), description="Where work runs."
    )
    variables: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Variable] = Field(
        default_factory=dict, description="Variables usable as ${var.NAME} (set with --var or FASTUNER_VAR_NAME)."
    )
    datasets: dict[Name, Dataset] = Field(default_factory=dict, description="JSONL datasets, validated and split.")
    adapters: dict[Name, Adapter] = Field(default_factory=dict, description="LoRA adapters trained on datasets.")
    deployments: dict[Name, Deployment] = Field(default_factory=dict, description="Endpoints serving adapters.")
    policy: Policy = Field(default_factory=Policy, description="Guard-rails checked at plan time: maximum ttl "
                           "and cost, allowed instance types, protected resources.")

