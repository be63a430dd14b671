"""`fastuner bootstrap`: the bucket(s) and the SageMaker execution role a spec needs, made idempotently.

First every setting is read (`plan_bootstrap`, reads only), then only what differs is written
(`Step.run`), so a second run makes no write call and reports every step "already as wanted". Nothing
is ever deleted: an existing lifecycle configuration keeps its other rules (merged by rule ID), an
existing trust policy keeps its other statements, and a bucket that is encrypted some other way than
the spec asks stays as it is unless the spec names a KMS key.

Each bucket: created in its region (LocationConstraint except in us-east-1), versioning on, default
encryption (SSE-S3, or SSE-KMS with the spec's key and an S3 Bucket Key), every public access blocked,
and lifecycle rules: where the state lives, old versions of lock objects expire after a day; where the
provider's objects live, incomplete multipart uploads are aborted after 7 days. The role: created with
SageMaker's trust policy and given the execution policy (`iam.policy(scope, "execution")`) as an inline
policy named after the project.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fastuner.aws.clients import AwsSession
from fastuner.aws.errors import AwsError, aws_errors, error_code, is_not_found
from fastuner.aws.names import check_bucket
from fastuner.providers.sagemaker.iam import (
    LOCK_PREFIX,
    PROJECT_TAG,
    SAGEMAKER_SERVICE,
    Scope,
    parse_role_arn,
    policy,
    policy_name,
    trust_policy,
)

LOCK_RULE_ID = "fastuner-lock-versions"
UPLOADS_RULE_ID = "fastuner-abort-incomplete-uploads"
LOCK_VERSION_DAYS = 1
UPLOAD_DAYS = 7
PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                       "RestrictPublicBuckets": True}


class Change(Enum):
    CREATE = "created"
    UPDATE = "updated"
    NONE = "already as wanted"

    @property
    def planned(self) -> str:
        return {"created": "will be created", "updated": "will be updated"}.get(self.value, self.value)


@dataclass
class Step:
    """One setting of one AWS object: what it is, what bootstrap does to it, and the write that does it."""

    subject: str  # "s3://bucket", "iam role NAME"
    setting: str  # "bucket", "versioning", "encryption", ..., "trust policy", "policy NAME"
    change: Change
    detail: str = ""
    write: Callable[[], None] | None = field(default=None, repr=False)

    def run(self) -> None:
        if self.change is not Change.NONE and self.write is not None:
            self.write()

    def to_dict(self) -> dict[str, str]:
        return {"subject": self.subject, "setting": self.setting, "result": self.change.value, "detail": self.detail}


@dataclass(frozen=True)
class Bucket:
    """A bucket as bootstrap wants it. `locks`: the state's lock objects live here; `uploads_prefix`:
    the provider's objects live under it (None: they do not live here)."""

    name: str
    region: str
    kms_key_id: str | None = None
    locks: bool = False
    uploads_prefix: str | None = None

    def rules(self) -> list[dict[str, Any]]:
        rules = []
        if self.locks:
            rules.append({"ID": LOCK_RULE_ID, "Status": "Enabled", "Filter": {"Prefix": LOCK_PREFIX},
                          "NoncurrentVersionExpiration": {"NoncurrentDays": LOCK_VERSION_DAYS},
                          "Expiration": {"ExpiredObjectDeleteMarker": True}})
        if self.uploads_prefix is not None:
            rules.append({"ID": UPLOADS_RULE_ID, "Status": "Enabled", "Filter": {"Prefix": self.uploads_prefix},
                          "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": UPLOAD_DAYS}})
        return rules


@dataclass(frozen=True)
class Role:
    name: str
    path: str
    policy_name: str
    policy: dict[str, Any]
    project: str
    account: str  # the account role_arn names


@dataclass
class Wanted:
    buckets: list[Bucket]
    role: Role | None
    notes: list[str]


def wanted(scope: Scope, role_name: str | None = None) -> Wanted:
    """What the spec needs on AWS: its buckets (the provider's, and the state's if it is another) and,
    with the SageMaker provider, its execution role (`role_name`, default the one `role_arn` names)."""
    notes: list[str] = []
    buckets: dict[str, Bucket] = {}
    if scope.bucket:
        prefix = scope.prefix.strip("/")
        buckets[scope.bucket] = Bucket(check_bucket(scope.bucket), scope.region, scope.kms_key_id,
                                       uploads_prefix=f"{prefix}/" if prefix else "")
    if scope.state_bucket:
        same = buckets.get(scope.state_bucket)
        if same is not None:
            buckets[scope.state_bucket] = Bucket(same.name, same.region, same.kms_key_id or scope.state_kms_key_id,
                                                 locks=True, uploads_prefix=same.uploads_prefix)
        else:
            buckets[scope.state_bucket] = Bucket(check_bucket(scope.state_bucket), scope.state_region or scope.region,
                                                 scope.state_kms_key_id, locks=True)
    role = None
    if scope.role_arn:
        _, _, path, spec_name = parse_role_arn(scope.role_arn)
        name = role_name or spec_name
        if name != spec_name:
            notes.append(f"The spec's role_arn names the role {spec_name}, not {name}: set role_arn to "
                         f"arn:{scope.partition}:iam::{scope.account}:role/{name} to use the role made here.")
            path = "/"
        role = Role(name, path, policy_name(scope), policy(scope, "execution"), scope.project, scope.account)
    return Wanted(list(buckets.values()), role, notes)


def plan_bootstrap(sessions: Callable[[str], AwsSession], want: Wanted) -> list[Step]:
    """Every step, read from AWS (reads only). `sessions(region)`: the AWS session for a region."""
    steps: list[Step] = []
    for bucket in want.buckets:
        steps += _bucket_steps(sessions(bucket.region).client("s3"), bucket, want.notes)
    if want.role is not None:
        region = want.buckets[0].region if want.buckets else ""
        steps += _role_steps(sessions(region).client("iam"), want.role, want.notes)
    return steps


def changes(steps: list[Step]) -> list[Step]:
    return [s for s in steps if s.change is not Change.NONE]


# --- buckets -----------------------------------------------------------------------------------


def _bucket_steps(s3: Any, bucket: Bucket, notes: list[str]) -> list[Step]:
    subject = f"s3://{bucket.name}"
    name = bucket.name
    with aws_errors(f"reading the bucket {name}", "s3"):
        found = _head_bucket(s3, name)
    if found is not None and found and found != bucket.region:
        notes.append(f"The bucket {name} is in {found}, not {bucket.region}: fastuner uses it there, at the "
                     "cost of traffic between regions.")
    exists = found is not None
    encryption = _encryption(bucket.kms_key_id)
    what = f"encryption ({'SSE-KMS ' + bucket.kms_key_id if bucket.kms_key_id else 'SSE-S3'})"
    rules = bucket.rules()

    def create() -> None:
        kwargs: dict[str, Any] = {"Bucket": name}
        if bucket.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": bucket.region}
        with aws_errors(f"creating the bucket {name}", "s3"):
            try:
                s3.create_bucket(**kwargs)
            except Exception as exc:
                if error_code(exc) == "BucketAlreadyExists":
                    raise AwsError(f"the bucket name {name} is taken by another AWS account",
                                   "Bucket names are global: choose another `bucket:` in fastuner.yaml.") from None
                if error_code(exc) != "BucketAlreadyOwnedByYou":
                    raise

    def put_versioning() -> None:
        with aws_errors(f"turning on versioning of {name}", "s3"):
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})

    def put_encryption() -> None:
        with aws_errors(f"setting the default encryption of {name}", "s3"):
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [encryption]})

    def put_public_access_block() -> None:
        with aws_errors(f"blocking public access to {name}", "s3"):
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)

    if not exists:
        steps = [Step(subject, "bucket", Change.CREATE, bucket.region, create),
                 Step(subject, "versioning", Change.CREATE, "", put_versioning),
                 Step(subject, what, Change.CREATE, "", put_encryption),
                 Step(subject, "public access block", Change.CREATE, "", put_public_access_block)]
        if rules:
            steps.append(_lifecycle_step(s3, subject, name, rules, None, {}))
        return steps

    with aws_errors(f"reading the settings of the bucket {name}", "s3"):
        versioning = s3.get_bucket_versioning(Bucket=name).get("Status")
        current_encryption = _read(s3.get_bucket_encryption, name, "ServerSideEncryptionConfigurationNotFoundError",
                                   "ServerSideEncryptionConfiguration")
        block = _read(s3.get_public_access_block, name, "NoSuchPublicAccessBlockConfiguration",
                      "PublicAccessBlockConfiguration")
        lifecycle = _read(s3.get_bucket_lifecycle_configuration, name, "NoSuchLifecycleConfiguration") \
            if rules else None
    steps = [Step(subject, "bucket", Change.NONE, found or "")]
    steps.append(Step(subject, "versioning",
                      Change.NONE if versioning == "Enabled" else Change.UPDATE if versioning else Change.CREATE,
                      "was suspended" if versioning == "Suspended" else "", put_versioning))
    change = _encryption_change(current_encryption, bucket.kms_key_id)
    had = _describe_encryption(current_encryption)
    steps.append(Step(subject, what, change, f"was {had}" if change is Change.UPDATE else
                      "" if had == "SSE-S3" and not bucket.kms_key_id else had, put_encryption))
    blocked = all((block or {}).get(k) is True for k in PUBLIC_ACCESS_BLOCK)
    steps.append(Step(subject, "public access block",
                      Change.NONE if blocked else Change.UPDATE if block else Change.CREATE, "",
                      put_public_access_block))
    if rules:
        existing = (lifecycle or {}).get("Rules") or []
        extra = {k: lifecycle[k] for k in ("TransitionDefaultMinimumObjectSize",) if lifecycle and lifecycle.get(k)}
        steps.append(_lifecycle_step(s3, subject, name, rules, existing, extra))
    return steps


def _head_bucket(s3: Any, name: str) -> str | None:
    """The bucket's region ("" if AWS did not say), or None if there is no such bucket."""
    try:
        response = s3.head_bucket(Bucket=name)
    except Exception as exc:
        if is_not_found(exc) or error_code(exc) == "NoSuchBucket":
            return None
        if error_code(exc) in ("403", "AccessDenied", "Forbidden"):
            raise AwsError(f"the bucket {name} exists but you may not use it (HeadBucket was refused)",
                           "It may belong to another AWS account (bucket names are global): choose another "
                           "`bucket:`; or allow s3:ListBucket on it for the identity running fastuner.") from None
        raise
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return str(response.get("BucketRegion") or headers.get("x-amz-bucket-region") or "")


def _read(get: Callable[..., dict[str, Any]], bucket: str, missing: str, part: str | None = None) -> Any:
    """A bucket setting, or None where the bucket has none."""
    try:
        response = get(Bucket=bucket)
    except Exception as exc:
        if error_code(exc) == missing:
            return None
        raise
    return response.get(part) if part else response


def _encryption(kms_key_id: str | None) -> dict[str, Any]:
    if kms_key_id:
        return {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_id},
                "BucketKeyEnabled": True}
    return {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}


def _encryption_change(current: dict[str, Any] | None, kms_key_id: str | None) -> Change:
    """SSE-S3 is wanted: any default encryption will do. A KMS key is wanted: that key, by any name
    AWS may echo back (its id, its ARN)."""
    defaults = [r.get("ApplyServerSideEncryptionByDefault") or {} for r in (current or {}).get("Rules") or []]
    if not defaults:
        return Change.CREATE
    if not kms_key_id:
        return Change.NONE
    for d in defaults:
        key = str(d.get("KMSMasterKeyID") or "")
        if d.get("SSEAlgorithm", "").startswith("aws:kms") and key and (
                key == kms_key_id or key.endswith("/" + kms_key_id) or kms_key_id.endswith("/" + key)):
            return Change.NONE
    return Change.UPDATE


def _describe_encryption(current: dict[str, Any] | None) -> str:
    for rule in (current or {}).get("Rules") or []:
        d = rule.get("ApplyServerSideEncryptionByDefault") or {}
        if d.get("SSEAlgorithm") == "AES256":
            return "SSE-S3"
        if d.get("SSEAlgorithm"):
            return f"{d['SSEAlgorithm']} {d.get('KMSMasterKeyID', '')}".rstrip()
    return ""


def _lifecycle_step(s3: Any, subject: str, name: str, rules: list[dict[str, Any]],
                    existing: list[dict[str, Any]] | None, extra: dict[str, Any]) -> Step:
    """fastuner's rules merged into the bucket's by rule ID: the others are kept as they are."""
    current = {r.get("ID"): r for r in existing or []}
    differ = [r["ID"] for r in rules if _lifecycle_rule(current.get(r["ID"])) != _lifecycle_rule(r)]
    ours = {r["ID"]: r for r in rules}
    merged = [ours.pop(r.get("ID")) if r.get("ID") in ours else r for r in existing or []] + list(ours.values())
    kept = len([r for r in existing or [] if r.get("ID") not in {x["ID"] for x in rules}])
    detail = ", ".join(differ) + (f" (keeping {kept} other rule{'s' * (kept != 1)})" if kept else "")
    if not differ:
        change = Change.NONE
        detail = ", ".join(r["ID"] for r in rules)
    else:
        change = Change.CREATE if not existing else Change.UPDATE

    def put() -> None:
        with aws_errors(f"setting the lifecycle rules of {name}", "s3"):
            s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": merged}, **extra)

    return Step(subject, "lifecycle rules", change, detail, put)


def _lifecycle_rule(rule: dict[str, Any] | None) -> dict[str, Any] | None:
    """A rule as AWS returns it, without the empty fields it may add, to compare with one of ours."""
    if rule is None:
        return None
    rule = {k: v for k, v in rule.items() if v not in (None, {}, [], "")}
    if rule.get("Filter") == {"Prefix": ""}:  # the whole bucket, however AWS words it
        rule.pop("Filter")
    return rule


# --- the execution role ------------------------------------------------------------------------


def _role_steps(iam: Any, role: Role, notes: list[str]) -> list[Step]:
    subject = f"iam role {role.name}"
    document = json.dumps(role.policy, indent=2)
    trust = trust_policy()

    def put_policy() -> None:
        with aws_errors(f"writing the policy {role.policy_name} of the role {role.name}", "iam"):
            iam.put_role_policy(RoleName=role.name, PolicyName=role.policy_name, PolicyDocument=document)

    with aws_errors(f"reading the role {role.name}", "iam"):
        current = _read_iam(lambda: iam.get_role(RoleName=role.name)["Role"])
    if current is None:
        def create() -> None:
            with aws_errors(f"creating the role {role.name}", "iam"):
                made = iam.create_role(RoleName=role.name, Path=role.path, AssumeRolePolicyDocument=json.dumps(trust),
                                       Description="The SageMaker execution role of fastuner's training jobs.",
                                       Tags=[{"Key": PROJECT_TAG, "Value": role.project}])
            _check_account(made["Role"].get("Arn", ""), role, notes)

        return [Step(subject, "role", Change.CREATE, f"trusts {SAGEMAKER_SERVICE}", create),
                Step(subject, f"policy {role.policy_name}", Change.CREATE, "", put_policy)]

    steps = [Step(subject, "role", Change.NONE, current.get("Arn", ""))]
    _check_account(current.get("Arn", ""), role, notes)
    trusted = _trust_document(current.get("AssumeRolePolicyDocument"))
    if _trusts_sagemaker(trusted):
        steps.append(Step(subject, "trust policy", Change.NONE, f"trusts {SAGEMAKER_SERVICE}"))
    else:
        merged = {"Version": trusted.get("Version", trust["Version"]),
                  "Statement": _as_list(trusted.get("Statement")) + trust["Statement"]}

        def put_trust() -> None:
            with aws_errors(f"updating the trust policy of the role {role.name}", "iam"):
                iam.update_assume_role_policy(RoleName=role.name, PolicyDocument=json.dumps(merged))

        steps.append(Step(subject, "trust policy", Change.UPDATE, f"adding {SAGEMAKER_SERVICE}", put_trust))
    with aws_errors(f"reading the policy {role.policy_name} of the role {role.name}", "iam"):
        existing = _read_iam(lambda: iam.get_role_policy(RoleName=role.name, PolicyName=role.policy_name))
    if existing is None:
        change = Change.CREATE
    else:
        same = _canonical(_trust_document(existing.get("PolicyDocument"))) == _canonical(role.policy)
        change = Change.NONE if same else Change.UPDATE
    steps.append(Step(subject, f"policy {role.policy_name}", change, "", put_policy))
    return steps


def _check_account(arn: str, role: Role, notes: list[str]) -> None:
    account = arn.split(":")[4] if arn.count(":") >= 5 else ""
    if account and role.account and account != role.account:
        notes.append(f"The role {role.name} is in account {account}, but the spec's role_arn names account "
                     f"{role.account}: the credentials are for another account than the spec's.")


def _read_iam(get: Callable[[], Any]) -> Any:
    try:
        return get()
    except Exception as exc:
        if error_code(exc) == "NoSuchEntity":
            return None
        raise


def _trust_document(document: Any) -> dict[str, Any]:
    """A policy document as boto3 returns it (already decoded) or as a JSON string (URL-encoded by IAM)."""
    if isinstance(document, str):
        from urllib.parse import unquote

        return json.loads(unquote(document))
    return dict(document or {})


def _trusts_sagemaker(document: dict[str, Any]) -> bool:
    for statement in _as_list(document.get("Statement")):
        services = _as_list((statement.get("Principal") or {}).get("Service") if isinstance(
            statement.get("Principal"), dict) else None)
        actions = _as_list(statement.get("Action"))
        if statement.get("Effect") == "Allow" and SAGEMAKER_SERVICE in services and \
                any(a in ("sts:AssumeRole", "sts:*", "*") for a in actions):
            return True
    return False


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _canonical(value: Any) -> Any:
    """A policy in a form where a lone string equals a one-item list and order does not matter."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        if len(items) == 1 and not isinstance(items[0], dict | list):
            return items[0]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return value
