"""Least-privilege IAM policies for a spec, as pure functions of its settings (nothing here calls AWS).

Two identities need a policy: the one that RUNS fastuner (a laptop's SSO role, a CI role) and the
SageMaker execution role that training jobs assume. Each policy is a declaration, `RUNNER` and
`EXECUTION`: rows of `Grant(feature, sid, actions, resources, conditions, when)` whose resources and
conditions are templates filled from a `Scope` (partition, account, region, project, buckets, prefixes)
taken from the spec. Adding a feature (part 2's endpoints, inference components and CloudWatch
metrics) is one more row. Actions that cannot be scoped to a resource are listed once, in `UNSCOPED`.

Tenant isolation: object actions stop at the project's prefix (and the state's key); SageMaker actions
at `training-job/PROJECT-*` and, through the `fastuner:project` tag, at the project's own jobs —
`aws:RequestTag` + `aws:TagKeys` when creating (so a job is born tagged), `aws:ResourceTag` on existing
jobs (so one team's role cannot stop, describe or retag another team's). Reaping deletes only endpoints,
configs, models and components named `PROJECT-*` and tagged with the project: `reap --all-projects`
needs a role beyond any one project's policy.

`covers(policy, used)` compares a policy with what fastuner did (the call log that
FASTUNER_AWS_CALL_LOG writes): the requests no statement allows, and the actions allowed but never used.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastuner.aws.clients import Call, iam_action
from fastuner.config.models import Config
from fastuner.errors import UserError
from fastuner.state.s3 import LOCK_PREFIX  # the bootstrap's lifecycle rule expires old lock versions there

VERSION = "2012-10-17"
PROJECT_TAG = "fastuner:project"  # the tag the SageMaker provider puts on everything it creates
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
SAGEMAKER_SERVICE = "sagemaker.amazonaws.com"
DEFAULT_TRAINING_REPOSITORY = "huggingface-pytorch-training"  # the Hugging Face PyTorch training images
DEFAULT_SERVING_REPOSITORY = "djl-inference"  # the LMI (DJL) images generation deployments run
ENDPOINT_LOG_GROUP = "/aws/sagemaker/Endpoints"

# Actions that take no resource-level permissions: AWS only accepts `Resource: "*"` for them. Every
# `"*"` in a generated policy is one of these (tests/aws/test_iam_policy.py checks it), each narrowed
# by a condition where AWS offers one.
UNSCOPED = {
    "sagemaker:ListTrainingJobs": "List calls are not resource-scoped; refresh lists the project's jobs by "
                                  "name prefix and reads each one's tags",
    "ecr:GetAuthorizationToken": "an ECR login token is account-wide",
    "cloudwatch:PutMetricData": "metrics are not resources; narrowed to SageMaker's namespaces",
    "cloudwatch:GetMetricData": "metrics are not resources; `fastuner show deployment.NAME` reads the "
                                "endpoint's (AWS/SageMaker) and its server's (fastuner/serve), `reap` the "
                                "endpoints' Invocations",
    "ec2:DescribeNetworkInterfaces": "EC2 Describe calls are not resource-scoped",
    "ec2:DescribeVpcs": "EC2 Describe calls are not resource-scoped",
    "ec2:DescribeDhcpOptions": "EC2 Describe calls are not resource-scoped",
    "ec2:DescribeSubnets": "EC2 Describe calls are not resource-scoped",
    "ec2:DescribeSecurityGroups": "EC2 Describe calls are not resource-scoped",
    "tag:GetResources": "the tagging API is not resource-scoped; `reap` asks it only for the project's tag",
    "sagemaker:ListEndpoints": "List calls are not resource-scoped; `reap` lists endpoints by the project's prefix",
    "sagemaker:ListInferenceComponents": "List calls are not resource-scoped; `reap` lists one endpoint's",
}


@dataclass(frozen=True)
class Grant:
    """One policy statement as a template. `resources` and condition values are `str.format` templates
    over `Scope.values()`; a field holding a list expands to one string per item. `when` names the
    `Scope.features` entry the grant needs (a KMS key, a VPC, an S3 state backend)."""

    feature: str
    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: Mapping[str, Mapping[str, str | tuple[str, ...]]] = field(default_factory=dict)
    when: str = "sagemaker"
    # the Sid of a statement with the same resources and conditions that takes this grant's actions
    # (a shorter document); without it, or when they differ, the grant is a statement of its own
    merge_into: str = ""


_S3 = "arn:{partition}:s3:::"
_JOBS = "arn:{partition}:sagemaker:{region}:{account}:training-job/{project}-*"
_LOG_GROUP = "arn:{partition}:logs:{region}:{account}:log-group:" + TRAINING_LOG_GROUP
_ENDPOINTS = "arn:{partition}:sagemaker:{region}:{account}:endpoint/{project}-*"
_COMPONENTS = "arn:{partition}:sagemaker:{region}:{account}:inference-component/{project}-*"
_SAGEMAKER = "arn:{partition}:sagemaker:{region}:{account}:"
_ENDPOINT_TREE = tuple(_SAGEMAKER + kind + "/{project}-*"
                       for kind in ("inference-component", "endpoint", "endpoint-config", "model"))
_ENDPOINT_LOGS = "arn:{partition}:logs:{region}:{account}:log-group:" + ENDPOINT_LOG_GROUP + "/{project}-*"
_BORN_TAGGED = {"StringEquals": {f"aws:RequestTag/{PROJECT_TAG}": "{project}"},
                "ForAnyValue:StringEquals": {"aws:TagKeys": PROJECT_TAG},
                "StringEqualsIfExists": {f"aws:ResourceTag/{PROJECT_TAG}": "{project}"}}
# a key named by an alias is matched through kms:ResourceAliases (IAM never matches an alias ARN);
# a condition whose values are empty (no alias) is left out
_VIA_S3 = {"StringEquals": {"kms:ViaService": "s3.{region}.amazonaws.com"},
           "ForAnyValue:StringEquals": {"kms:ResourceAliases": "{kms_alias}"}}
_VIA_STATE_S3 = {"StringEquals": {"kms:ViaService": "s3.{state_region}.amazonaws.com"},
                 "ForAnyValue:StringEquals": {"kms:ResourceAliases": "{state_kms_alias}"}}
_BY_ALIAS = {"ForAnyValue:StringEquals": {"kms:ResourceAliases": "{kms_alias}"}}

# What the identity running fastuner (plan, apply, destroy, logs, reap) may do, grouped by feature.
RUNNER: tuple[Grant, ...] = (
    # --- state (backend: s3): the state object of every workspace, its versions and its lock objects
    Grant("state", "StateObjects",
          ("s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject"),
          (_S3 + "{state_bucket}/{state_objects}", _S3 + "{state_bucket}/{lock_objects}"), when="state"),
    # ListBucket also turns a missing object's 403 into a 404; S3 checks `s3:prefix` against the key then
    Grant("state", "StateListing", ("s3:ListBucket", "s3:ListBucketVersions"), (_S3 + "{state_bucket}",),
          {"StringLike": {"s3:prefix": ("{state_objects}", "{lock_objects}")}}, when="state"),
    Grant("state", "StateKey", ("kms:Decrypt", "kms:GenerateDataKey"), ("{state_kms_key}",), _VIA_STATE_S3,
          when="state_kms"),
    # --- objects under the provider's prefix: datasets, code, config (written); adapters (read back)
    Grant("objects", "Objects", ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"),
          (_S3 + "{bucket}/{objects}*",)),
    Grant("objects", "ObjectListing", ("s3:ListBucket",), (_S3 + "{bucket}",),
          {"StringLike": {"s3:prefix": "{objects}*"}}),
    Grant("objects", "ObjectKey", ("kms:Decrypt", "kms:GenerateDataKey"), ("{kms_key}",), _VIA_S3, when="kms"),
    # --- training jobs: born tagged with the project (SageMaker authorises tags on create as AddTags)
    Grant("training", "CreateTrainingJobs", ("sagemaker:CreateTrainingJob", "sagemaker:AddTags"), (_JOBS,),
          {"StringEquals": {f"aws:RequestTag/{PROJECT_TAG}": "{project}"},
           "ForAnyValue:StringEquals": {"aws:TagKeys": PROJECT_TAG},
           "StringEqualsIfExists": {f"aws:ResourceTag/{PROJECT_TAG}": "{project}"}}),
    # reading a job that does not exist yet (adopting after a crash) must answer "not found", not
    # AccessDenied: reads accept a job without the tag, never one tagged for another project
    Grant("training", "ReadTrainingJobs", ("sagemaker:DescribeTrainingJob", "sagemaker:ListTags"), (_JOBS,),
          {"StringEqualsIfExists": {f"aws:ResourceTag/{PROJECT_TAG}": "{project}"}}),
    Grant("training", "ManageTrainingJobs", ("sagemaker:StopTrainingJob", "sagemaker:DeleteTrainingJob",
                                             "sagemaker:AddTags", "sagemaker:DeleteTags"),
          (_JOBS,), {"StringEquals": {f"aws:ResourceTag/{PROJECT_TAG}": "{project}"},
                     "StringEqualsIfExists": {f"aws:RequestTag/{PROJECT_TAG}": "{project}"}}),
    Grant("training", "ListTrainingJobs", ("sagemaker:ListTrainingJobs",), ("*",)),
    Grant("training", "PassExecutionRole", ("iam:PassRole",), ("{role_arn}",),
          {"StringEquals": {"iam:PassedToService": SAGEMAKER_SERVICE}}),
    # --- training logs (`fastuner logs`, the live loss): the streams are named after the jobs
    Grant("logs", "TrainingLogGroup", ("logs:DescribeLogStreams",),
          (_LOG_GROUP, _LOG_GROUP + ":*")),
    Grant("logs", "TrainingLogStreams", ("logs:GetLogEvents",), (_LOG_GROUP + ":log-stream:{project}-*",)),
    # --- invoking deployments (`fastuner invoke`): the endpoint is checked once, then invoked. A request
    # naming an inference component is authorised on the endpoint's ARN; the project's components are
    # granted too, so that the grant holds whichever of the two AWS names in the authorisation
    Grant("invoke", "ReadEndpointsToInvoke", ("sagemaker:DescribeEndpoint",), (_ENDPOINTS,),
          {"StringEqualsIfExists": {f"aws:ResourceTag/{PROJECT_TAG}": "{project}"}}),
    Grant("invoke", "InvokeEndpoints", ("sagemaker:InvokeEndpoint",), (_ENDPOINTS, _COMPONENTS),
          {"StringEqualsIfExists": {f"aws:ResourceTag/{PROJECT_TAG}": "{project}"}}),
    # --- a deployment's metrics (`fastuner show deployment.NAME`): one GetMetricData call
    Grant("metrics", "ReadMetrics", ("cloudwatch:GetMetricData",), ("*",)),
    # --- deployments (endpoints): the model, endpoint config, endpoint and inference components are born
    # tagged with the project (CreateEndpoint also names its config, CreateInferenceComponent its
    # endpoint and model: those carry the tag already); updates, retagging and reads need the tag
    Grant("deploy", "CreateEndpointTrees", ("sagemaker:CreateModel", "sagemaker:CreateEndpointConfig",
                                            "sagemaker:CreateEndpoint", "sagemaker:CreateInferenceComponent",
                                            "sagemaker:AddTags"), _ENDPOINT_TREE, _BORN_TAGGED),
    # a new ttl retags every piece: one ARN pattern for the four types keeps the runner's policy within
    # the 6,144 characters of a managed policy, and the tag condition keeps it to the project's own
    Grant("deploy", "RetagEndpointTrees", ("sagemaker:AddTags",), (_SAGEMAKER + "*/{project}-*",),
          {"StringEquals": {f"aws:ResourceTag/{PROJECT_TAG}": "{project}"},
           "StringEqualsIfExists": {f"aws:RequestTag/{PROJECT_TAG}": "{project}"}}),
    # reading and changing a tree in place: the same resources and conditions as reaping's rows below,
    # so they share those statements (`merge_into`)
    Grant("deploy", "ReadModels", ("sagemaker:DescribeModel",), _ENDPOINT_TREE,
          {"StringEqualsIfExists": {f"aws:ResourceTag/{PROJECT_TAG}": "{project}"}}, merge_into="ReadEndpointTrees"),
    Grant("deploy", "UpdateEndpointTrees", ("sagemaker:UpdateEndpoint", "sagemaker:UpdateInferenceComponent",
                                            "sagemaker:UpdateInferenceComponentRuntimeConfig", "sagemaker:DeleteTags"),
          _ENDPOINT_TREE, {"StringEquals": {f"aws:ResourceTag/{PROJECT_TAG}": "{project}"}},
          merge_into="DeleteEndpointTrees"),
    # --- reaping expired endpoints by their tags (`fastuner reap`): found through the tagging API, idle
    # time from CloudWatch (ReadMetrics above), each deleted with its components, configs and models —
    # the project's only
    Grant("reap", "FindTaggedEndpoints", ("tag:GetResources",), ("*",)),
    Grant("reap", "ListEndpoints", ("sagemaker:ListEndpoints", "sagemaker:ListInferenceComponents"), ("*",)),
    Grant("reap", "ReadEndpointTrees", ("sagemaker:DescribeEndpoint", "sagemaker:DescribeEndpointConfig",
                                        "sagemaker:DescribeInferenceComponent"), _ENDPOINT_TREE,
          {"StringEqualsIfExists": {f"aws:ResourceTag/{PROJECT_TAG}": "{project}"}}),
    Grant("reap", "DeleteEndpointTrees", ("sagemaker:DeleteInferenceComponent", "sagemaker:DeleteEndpoint",
                                          "sagemaker:DeleteEndpointConfig", "sagemaker:DeleteModel"), _ENDPOINT_TREE,
          {"StringEquals": {f"aws:ResourceTag/{PROJECT_TAG}": "{project}"}}),
)

# What SageMaker itself does with the execution role while a training job runs.
EXECUTION: tuple[Grant, ...] = (
    Grant("inputs", "ReadInputs", ("s3:GetObject",),
          tuple(_S3 + "{bucket}/{objects}" + p + "/*" for p in ("datasets", "code", "config", "checkpoints"))),
    Grant("inputs", "ListInputs", ("s3:ListBucket",), (_S3 + "{bucket}",),
          {"StringLike": {"s3:prefix": tuple("{objects}" + p + "/*"
                                             for p in ("datasets", "code", "config", "checkpoints"))}}),
    Grant("outputs", "WriteOutputs", ("s3:PutObject", "s3:AbortMultipartUpload"),
          (_S3 + "{bucket}/{objects}adapters/*", _S3 + "{bucket}/{objects}checkpoints/*")),
    Grant("outputs", "SyncCheckpoints", ("s3:DeleteObject",), (_S3 + "{bucket}/{objects}checkpoints/*",)),
    Grant("kms", "UseKey", ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"), ("{kms_key}",), _BY_ALIAS,
          when="kms"),
    Grant("kms", "EncryptVolumes", ("kms:CreateGrant",), ("{kms_key}",),
          {"Bool": {"kms:GrantIsForAWSResource": "true"}, **_BY_ALIAS}, when="kms"),
    Grant("logs", "WriteLogs", ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                                "logs:DescribeLogStreams"), (_LOG_GROUP, _LOG_GROUP + ":*")),
    Grant("metrics", "PutMetrics", ("cloudwatch:PutMetricData",), ("*",),
          {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}),
    Grant("images", "EcrLogin", ("ecr:GetAuthorizationToken",), ("*",)),
    Grant("images", "PullImages", ("ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer",
                                   "ecr:BatchGetImage"), ("{repository}", "{serving_repository}")),
    # --- endpoints: the adapters' artifacts and the server's settings (serve mode), the endpoint's log
    Grant("serving", "ReadServedArtifacts", ("s3:GetObject",),
          (_S3 + "{bucket}/{objects}adapters/*", _S3 + "{bucket}/{objects}serving/*")),
    Grant("serving", "WriteEndpointLogs", ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"),
          (_ENDPOINT_LOGS, _ENDPOINT_LOGS + ":*")),
    Grant("vpc", "DescribeNetwork", ("ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions",
                                     "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"), ("*",), when="vpc"),
    Grant("vpc", "CreateInterfaces", ("ec2:CreateNetworkInterface",),
          ("arn:{partition}:ec2:{region}:{account}:subnet/{subnet}",
           "arn:{partition}:ec2:{region}:{account}:security-group/{security_group}",
           "arn:{partition}:ec2:{region}:{account}:network-interface/*"), when="vpc"),
    Grant("vpc", "ManageInterfaces", ("ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface",
                                      "ec2:DeleteNetworkInterfacePermission"),
          ("arn:{partition}:ec2:{region}:{account}:network-interface/*",), when="vpc"),
)

ROLES = {"runner": RUNNER, "execution": EXECUTION}


# --- the scope: what a spec fills the templates with ---------------------------------------------


@dataclass(frozen=True)
class Scope:
    """The settings of one spec the policies depend on. The account comes from `role_arn` (an ARN holds
    its account), so no STS call is needed."""

    project: str
    partition: str = "aws"
    account: str = ""
    region: str = ""
    role_arn: str = ""
    bucket: str = ""
    prefix: str = ""
    kms_key_id: str | None = None
    training_image: str | None = None
    inference_image: str | None = None
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    state_bucket: str = ""
    state_key: str = ""
    state_region: str = ""
    state_kms_key_id: str | None = None

    @property
    def features(self) -> frozenset[str]:
        out = set()
        if self.role_arn:
            out.add("sagemaker")
            if self.kms_key_id:
                out.add("kms")
            if self.subnets:
                out.add("vpc")
        if self.state_bucket:
            out.add("state")
            if self.state_kms_key_id:
                out.add("state_kms")
        return frozenset(out)

    def values(self) -> dict[str, str | tuple[str, ...]]:
        """Every template field. Key prefixes end with "/" (or are empty: the whole bucket)."""
        states = state_objects(self.state_key) if self.state_key else ()
        objects = self.prefix.strip("/") + "/" if self.prefix.strip("/") else ""
        state_region = self.state_region or self.region
        kms_key, kms_alias = self._key(self.kms_key_id, self.region)
        state_kms_key, state_kms_alias = self._key(self.state_kms_key_id, state_region)
        return {
            "partition": self.partition, "account": self.account, "region": self.region,
            "project": self.project, "role_arn": self.role_arn, "bucket": self.bucket, "objects": objects,
            "kms_key": kms_key, "kms_alias": kms_alias,
            "repository": self._repository(self.training_image, DEFAULT_TRAINING_REPOSITORY),
            "serving_repository": self._repository(self.inference_image, DEFAULT_SERVING_REPOSITORY),
            "subnet": self.subnets, "security_group": self.security_group_ids,
            "state_bucket": self.state_bucket, "state_region": state_region,
            "state_objects": states, "lock_objects": tuple(LOCK_PREFIX + k for k in states),
            "state_kms_key": state_kms_key, "state_kms_alias": state_kms_alias,
        }

    def _key(self, key_id: str | None, region: str) -> tuple[str, tuple[str, ...]]:
        """The KMS key's ARN and, when the spec names it by an alias, that alias: IAM authorises a key
        by its key ARN, so an alias becomes any key of the account that carries that alias."""
        if not key_id:
            return "", ()
        m = re.fullmatch(r"arn:[\w-]+:kms:([\w-]+):(\d{12}):(alias/.+)", key_id)
        if m:
            region, account, alias = m.groups()
            return f"arn:{self.partition}:kms:{region}:{account}:key/*", (alias,)
        if key_id.startswith("arn:"):
            return key_id, ()
        where = f"arn:{self.partition}:kms:{region or '*'}:{self.account or '*'}"
        if key_id.startswith("alias/"):
            return f"{where}:key/*", (key_id,)
        return f"{where}:key/{key_id}", ()

    def _repository(self, image: str | None, default: str) -> str:
        """The ECR repository of an image: the spec's (`training_image`, `inference_image`), else the
        default images' (`default`), which live in an AWS account that differs between regions."""
        m = re.fullmatch(r"(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)(?:[:@].*)?",
                         image or "")
        if m:
            account, region, repository = m.groups()
            return f"arn:{self.partition}:ecr:{region}:{account}:repository/{repository}"
        repository = default
        if image:  # not an ECR URI fastuner can read: its name, in any account
            repository = image.split("/")[-1].split(":")[0].split("@")[0]
        return f"arn:{self.partition}:ecr:{self.region}:*:repository/{repository}"


def state_objects(key: str) -> tuple[str, ...]:
    """Patterns of the state objects of every workspace of the state at `key`: the key itself and its
    workspace siblings (`fastuner/skyrim.json`, `fastuner/skyrim.dev.json`: `fastuner/skyrim.*`). Lock
    objects are the same patterns under LOCK_PREFIX (`fastuner-locks/fastuner/skyrim.json.lock` fits).
    Must cover what `fastuner.state.s3.workspace_key` derives."""
    stem = key.removesuffix(".json")
    return (stem + ".*",) if stem != key else (key, key + ".*")


def parse_role_arn(arn: str) -> tuple[str, str, str, str]:
    """(partition, account, path, name) of `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`."""
    m = re.fullmatch(r"arn:(aws[a-z-]*):iam::(\d{12}):role(/(?:[\w+=,.@-]+/)*)([\w+=,.@-]{1,64})", arn)
    if not m:
        raise UserError(f"role_arn {arn!r} is not an IAM role ARN",
                        "Write it as arn:aws:iam::ACCOUNT:role/NAME (`fastuner bootstrap` creates the role).")
    partition, account, path, name = m.groups()
    return partition, account, path, name


def scope_of(config: Config) -> Scope:
    """The policies' settings from a loaded spec (provider: sagemaker and/or backend: s3)."""
    sm = config.provider.sagemaker
    s3 = config.backend.s3
    kwargs: dict[str, Any] = {"project": config.project}
    if sm is not None:
        partition, account, _, _ = parse_role_arn(sm.role_arn)
        kwargs.update(partition=partition, account=account, region=sm.region, role_arn=sm.role_arn,
                      bucket=sm.bucket, prefix=sm.prefix, kms_key_id=sm.kms_key_id,
                      training_image=sm.training_image, inference_image=sm.inference_image, subnets=tuple(sm.subnets),
                      security_group_ids=tuple(sm.security_group_ids))
    if s3 is not None:
        kwargs.update(state_bucket=s3.bucket, state_key=s3.key.lstrip("/"),
                      state_region=s3.region or kwargs.get("region", ""), state_kms_key_id=s3.kms_key_id)
        if "partition" not in kwargs and (s3.region or "").startswith("cn-"):
            kwargs["partition"] = "aws-cn"
    return Scope(**kwargs)


# --- the documents -----------------------------------------------------------------------------


def policy(scope: Scope, role: str = "runner") -> dict[str, Any]:
    """The policy document for `role` ("runner": who runs fastuner; "execution": what training jobs
    assume): only the grants whose feature the scope has, templates filled."""
    grants = [g for g in ROLES[role] if g.when in scope.features]
    if not grants and role == "execution":
        raise UserError("the execution role is SageMaker's, and this spec does not use SageMaker",
                        "Set `provider: {sagemaker: {region, role_arn, bucket}}` in fastuner.yaml.")
    if not grants:
        raise UserError("this spec makes no AWS calls, so it needs no AWS permissions",
                        "Only `provider: {sagemaker: …}` and `backend: {s3: …}` use AWS.")
    values = scope.values()
    statements: list[dict[str, Any]] = []
    for g in grants:
        statement: dict[str, Any] = {"Sid": g.sid, "Effect": "Allow", "Action": _one(list(g.actions)),
                                     "Resource": _one(_fill_all(g.resources, values))}
        conditions = {op: {key: _one(filled) for key, v in keys.items() if (filled := _fill_all(_many(v), values))}
                      for op, keys in g.conditions.items()}
        if any(conditions.values()):
            statement["Condition"] = {op: keys for op, keys in conditions.items() if keys}
        statements.append(statement)
    for g in grants:
        if g.merge_into:
            _merge(statements, g.sid, g.merge_into)
    return {"Version": VERSION, "Statement": statements}


def _merge(statements: list[dict[str, Any]], sid: str, into: str) -> None:
    """Move the actions of statement `sid` into statement `into` when both allow on the same resources
    under the same conditions (then nothing else changes)."""
    source = next((s for s in statements if s["Sid"] == sid), None)
    target = next((s for s in statements if s["Sid"] == into), None)
    if source is None or target is None or (source["Resource"], source.get("Condition")) != \
            (target["Resource"], target.get("Condition")):
        return
    actions = list(dict.fromkeys([*_many(target["Action"]), *_many(source["Action"])]))
    target["Action"] = _one(actions)
    statements.remove(source)


def trust_policy() -> dict[str, Any]:
    """The execution role's trust policy: SageMaker may assume it (as SageMaker's own default roles do;
    `aws:SourceArn` conditions are left out because not every SageMaker path sets them)."""
    return {"Version": VERSION, "Statement": [{"Effect": "Allow", "Principal": {"Service": SAGEMAKER_SERVICE},
                                               "Action": "sts:AssumeRole"}]}


def policy_name(scope: Scope) -> str:
    """The inline policy's name on the execution role: one per project, so projects can share a role."""
    return f"fastuner-{scope.project}"


def _many(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else value


def _one(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def _fill_all(templates: Iterable[str], values: Mapping[str, str | tuple[str, ...]]) -> list[str]:
    out: list[str] = []
    for template in templates:
        for filled in _fill(template, values):
            if filled not in out:
                out.append(filled)
    return out


def _fill(template: str, values: Mapping[str, str | tuple[str, ...]]) -> list[str]:
    """`template` with each field replaced; a tuple-valued field gives one string per item."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    choices = [_many(values[name]) for name in names]
    return [template.format(**dict(zip(names, combo, strict=True))) for combo in itertools.product(*choices)]


# --- comparing a policy with what fastuner did ---------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One authorisation AWS makes: an action, on a resource ARN (None: not derived, not checked), with
    the condition keys the call determines (`known`: keys whose absence is known too)."""

    action: str
    resource: str | None = None
    context: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    known: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return self.action + (f" on {self.resource}" if self.resource else "")


@dataclass(frozen=True)
class Coverage:
    denied: tuple[str, ...]  # requests no statement allows
    unused: tuple[str, ...]  # actions a statement allows that no request used

    @property
    def exact(self) -> bool:
        return not self.denied and not self.unused


def covers(policy_doc: Mapping[str, Any], used: Iterable[str | Request]) -> Coverage:
    """What `used` (IAM actions, or `Request`s from `requests_of`) needs that the policy does not allow,
    and what the policy allows that was never used. Actions and resources are matched as IAM does
    (case-insensitive actions, `*` and `?` wildcards); conditions are checked for the keys a request
    knows (tags sent, an S3 list prefix, the service a role is passed to) and assumed met otherwise."""
    requests = [u if isinstance(u, Request) else Request(u) for u in used]
    statements = [s for s in _statements(policy_doc) if s.get("Effect") == "Allow"]
    denied = [str(r) for r in requests if not any(_allows(s, r) for s in statements)]
    allowed = sorted({a for s in statements for a in _many(s.get("Action", ()))})
    unused = [a for a in allowed if not any(_match(a, r.action, case=False) for r in requests)]
    return Coverage(tuple(dict.fromkeys(denied)), tuple(unused))


def requests_of(calls: Iterable[Call], scope: Scope) -> list[Request]:
    """The authorisations behind recorded calls (`AwsSession.observe`, or the JSON lines of
    FASTUNER_AWS_CALL_LOG), including those a call implies: CreateTrainingJob passes its role
    (iam:PassRole) and tags the job (sagemaker:AddTags)."""
    out: list[Request] = []
    for call in calls:
        action = call.get("action") or iam_action(call)
        params = call.get("params") or {}
        if action == "s3:DeleteObject" and isinstance(params.get("Delete"), Mapping):  # DeleteObjects: each key
            out += [Request(action, _resource(action, {"Bucket": params.get("Bucket"), "Key": o.get("Key")}, scope))
                    for o in params["Delete"].get("Objects") or []]
            continue
        request = Request(action, _resource(action, params, scope), *_context(action, params))
        out.append(request)
        if action in _BORN_TAGGED_CREATES:
            role = params.get("RoleArn") or params.get("ExecutionRoleArn")
            if role:
                out.append(Request("iam:PassRole", role, {"iam:passedtoservice": SAGEMAKER_SERVICE},
                                   frozenset({"iam:passedtoservice"})))
            if params.get("Tags"):
                out.append(Request("sagemaker:AddTags", request.resource, request.context, request.known))
    return out


_BORN_TAGGED_CREATES = frozenset({"sagemaker:CreateTrainingJob", "sagemaker:CreateModel",
                                  "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint",
                                  "sagemaker:CreateInferenceComponent"})
# the parameter naming the resource a SageMaker call acts on, most specific first, and its ARN's type
_NAMED = (("InferenceComponentName", "inference-component"), ("EndpointName", "endpoint"),
          ("EndpointConfigName", "endpoint-config"), ("ModelName", "model"))


def read_call_log(text: str) -> list[Call]:
    """The calls of a FASTUNER_AWS_CALL_LOG file (one JSON object a line)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _resource(action: str, params: Mapping[str, Any], scope: Scope) -> str | None:
    service = action.split(":")[0]
    if service == "s3" and params.get("Bucket"):
        key = params.get("Key")
        return f"arn:{scope.partition}:s3:::{params['Bucket']}" + (f"/{key}" if key is not None else "")
    if service == "sagemaker":
        if params.get("ResourceArn"):
            return str(params["ResourceArn"])
        if params.get("TrainingJobName"):  # SageMaker ARNs hold names in lower case
            return (f"arn:{scope.partition}:sagemaker:{scope.region}:{scope.account}:training-job/"
                    f"{str(params['TrainingJobName']).lower()}")
        if action.split(":")[1].startswith("List"):
            return "*"
        for key, kind in _NAMED:
            if params.get(key):
                return f"arn:{scope.partition}:sagemaker:{scope.region}:{scope.account}:{kind}/{str(params[key]).lower()}"
        return None
    if service == "logs" and params.get("logGroupName"):
        group = f"arn:{scope.partition}:logs:{scope.region}:{scope.account}:log-group:{params['logGroupName']}"
        if action == "logs:GetLogEvents" and params.get("logStreamName"):
            return f"{group}:log-stream:{params['logStreamName']}"
        return group + ":*"
    if action == "tag:GetResources":
        return "*"
    return None


def _context(action: str, params: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    if action in _BORN_TAGGED_CREATES or action == "sagemaker:AddTags":
        tags = {t["Key"]: t["Value"] for t in params.get("Tags") or []}
        context: dict[str, Any] = {f"aws:requesttag/{k}".lower(): v for k, v in tags.items()}
        context["aws:tagkeys"] = tuple(tags)
        known = {"aws:requesttag/*", "aws:tagkeys"}
        if action in _BORN_TAGGED_CREATES:  # (and the AddTags it implies) the resource has no tags yet
            known.add("aws:resourcetag/*")
        return context, frozenset(known)
    if action in ("s3:ListBucket", "s3:ListBucketVersions") and "Key" not in params:
        context = {"s3:prefix": params["Prefix"]} if params.get("Prefix") is not None else {}
        return context, frozenset({"s3:prefix"})
    return {}, frozenset()


def _statements(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statements = doc.get("Statement", [])
    return [statements] if isinstance(statements, Mapping) else list(statements)


def _allows(statement: Mapping[str, Any], request: Request) -> bool:
    if not any(_match(a, request.action, case=False) for a in _many(statement.get("Action", ()))):
        return False
    if request.resource is not None and not any(_match(r, request.resource, case=True)
                                                for r in _many(statement.get("Resource", ()))):
        return False
    return all(_condition(op, key, _many(values), request)
               for op, keys in (statement.get("Condition") or {}).items() for key, values in keys.items())


def _condition(op: str, key: str, wanted: tuple[str, ...], request: Request) -> bool:
    """One condition, as IAM evaluates it, for the keys the request knows; anything else is assumed met."""
    name = key.lower()
    knows = name in request.known or any(fnmatch.fnmatchcase(name, k) for k in request.known)
    if not knows:
        return True
    qualifier, _, operator = op.rpartition(":")
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    present = name in request.context
    values = _many(request.context[name]) if present else ()
    if not present:
        return if_exists or qualifier == "ForAllValues"
    like = operator in ("StringLike", "ArnLike", "StringNotLike")
    negate = operator.startswith("StringNot")

    def hit(value: str) -> bool:
        found = any(_match(w, value, case=True) if like else w == value for w in wanted)
        return not found if negate else found

    if operator not in ("StringEquals", "StringLike", "StringNotEquals", "StringNotLike", "ArnEquals", "ArnLike"):
        return True
    if qualifier == "ForAllValues":
        return all(hit(v) for v in values)
    return any(hit(v) for v in values)


def _match(pattern: str, value: str, *, case: bool) -> bool:
    """IAM's wildcards: `*` any run of characters (slashes included), `?` one character."""
    if not case:
        pattern, value = pattern.lower(), value.lower()
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.S) is not None
