"""Expired fastuner endpoints found from their tags alone, with no state at hand.

Every deployment resource the SageMaker provider creates carries `fastuner:project`,
`fastuner:workspace` and `fastuner:address`, and, when the spec sets them, `fastuner:expires-at` (ISO
8601 UTC: creation + ttl, rewritten when the ttl changes) and `fastuner:idle-ttl` (the duration as
written). That is enough to enforce lifetimes from anywhere with credentials — a scheduled CI job, a
teammate's laptop, after a crashed apply lost its state write — so that no endpoint outlives its ttl
by more than the reap interval.

`find_expired` lists the account's fastuner endpoints through the Resource Groups Tagging API
(`GetResources`, one project or all, paginated to the end), their creation times and statuses with
`ListEndpoints`, and the last invocation of those with an idle ttl from CloudWatch (`last_activity`:
`Invocations` in `AWS/SageMaker`, one `GetMetricData` call for up to 500 series). The rule is the
planner's: past `expires-at` → expired ("ttl ended …"); no invocation in the last idle ttl, counted
from the endpoint's creation if it is younger → expired ("no invocation since …"). Deleting what it
finds is `endpoint_tree.delete_endpoint_tree`'s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastuner.aws.clients import AwsSession
from fastuner.aws.errors import aws_errors, error_code, error_message
from fastuner.config.duration import parse_duration
from fastuner.config.kinds import KINDS, Expiry

PROJECT_TAG = "fastuner:project"
WORKSPACE_TAG = "fastuner:workspace"
ADDRESS_TAG = "fastuner:address"
EXPIRES_TAG = "fastuner:expires-at"
IDLE_TAG = "fastuner:idle-ttl"

NAMESPACE = "AWS/SageMaker"
INVOCATIONS = "Invocations"
MAX_QUERIES = 500  # GetMetricData's limit per call
MAX_POINTS = 100_800  # … and its data points per call, all queries together
DELETING = "Deleting"

_ENDPOINT_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[^:]*:[0-9]*:endpoint/([a-zA-Z0-9](?:-*[a-zA-Z0-9])*)$")


@dataclass(frozen=True)
class TaggedEndpoint:
    """One endpoint as the tagging API describes it. A tag that cannot be read is ignored and named in
    `problems` (the endpoint is then judged by the other rule, or left alone)."""

    name: str
    arn: str
    tags: Mapping[str, str]
    expires_at: datetime | None = None
    idle_ttl: timedelta | None = None
    problems: tuple[str, ...] = ()

    @property
    def project(self) -> str:
        return self.tags.get(PROJECT_TAG, "")

    @property
    def workspace(self) -> str:
        return self.tags.get(WORKSPACE_TAG, "")

    @property
    def address(self) -> str:
        return self.tags.get(ADDRESS_TAG, "")

    @property
    def idle_text(self) -> str:
        return self.tags.get(IDLE_TAG, "")


@dataclass(frozen=True)
class Found:
    """A tagged endpoint judged at `now`: `expiry` says when and why its lifetime ended (None: it lives
    on); `created` and `status` come from SageMaker; `last_activity` is the last invocation CloudWatch
    saw in the idle window (None: none, or no idle ttl); `note` says why it was left alone."""

    endpoint: TaggedEndpoint
    created: datetime | None
    status: str
    last_activity: datetime | None = None
    expiry: Expiry | None = None
    note: str = ""


@dataclass(frozen=True)
class MetricSource:
    """The series of an endpoint's invocations: one per production variant (`EndpointName`,
    `VariantName`) and one per inference component (`InferenceComponentName`), whose invocations
    CloudWatch counts on their own."""

    variants: tuple[str, ...] = ()
    components: tuple[str, ...] = field(default=())


# --- finding ---------------------------------------------------------------------------------------


def find_endpoints(session: AwsSession, project: str | None) -> list[TaggedEndpoint]:
    """The endpoints tagged `fastuner:project` = `project` (None: any project) in the session's region,
    from the tagging API, every page. The tagging API may still list an endpoint deleted moments ago;
    `find_expired` checks each against SageMaker."""
    tag_filter: dict[str, Any] = {"Key": PROJECT_TAG}
    if project is not None:
        tag_filter["Values"] = [project]
    found: dict[str, TaggedEndpoint] = {}
    tagging = session.client("resourcegroupstaggingapi")
    with aws_errors("finding fastuner's endpoints by their tags", "tag"):
        for page in tagging.get_paginator("get_resources").paginate(
                ResourceTypeFilters=["sagemaker:endpoint"], TagFilters=[tag_filter], ResourcesPerPage=100):
            for item in page.get("ResourceTagMappingList") or []:
                match = _ENDPOINT_ARN.search(str(item.get("ResourceARN") or ""))
                if match is None:
                    continue
                tags = {t["Key"]: t["Value"] for t in item.get("Tags") or []}
                found[match.group(1)] = read_tags(match.group(1), item["ResourceARN"], tags)
    return sorted(found.values(), key=lambda e: (e.project, e.workspace, e.address, e.name))


def read_tags(name: str, arn: str, tags: Mapping[str, str]) -> TaggedEndpoint:
    """The lifetime an endpoint's tags give it. `expires-at` without a zone is read as UTC."""
    problems = []
    expires_at = idle = None
    if tags.get(EXPIRES_TAG):
        try:
            expires_at = datetime.fromisoformat(tags[EXPIRES_TAG])
            expires_at = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
        except ValueError:
            problems.append(f"its {EXPIRES_TAG} tag {tags[EXPIRES_TAG]!r} is not an ISO 8601 time")
    if tags.get(IDLE_TAG):
        try:
            idle = parse_duration(tags[IDLE_TAG])
        except ValueError:
            problems.append(f"its {IDLE_TAG} tag {tags[IDLE_TAG]!r} is not a duration")
    return TaggedEndpoint(name=name, arn=arn, tags=dict(tags), expires_at=expires_at, idle_ttl=idle,
                          problems=tuple(problems))


def find_expired(session: AwsSession, *, project: str | None, now: datetime) -> list[Found]:
    """Every tagged endpoint of `project` (None: of every project) that SageMaker still has, judged at
    `now`. Endpoints being deleted are left out: their reaping is under way."""
    tagged = find_endpoints(session, project)
    if not tagged:
        return []
    live = _list_endpoints(session, f"{project}-" if project else None)
    judged: list[Found] = []
    idle = []
    for ep in tagged:
        created, status = live.get(ep.name, (None, ""))
        if not status or status == DELETING:
            continue
        if _ttl_ended(ep, now) is None and ep.idle_ttl is not None:
            idle.append(ep)
        judged.append(Found(ep, created, status, note="; ".join(ep.problems)))
    window = max((ep.idle_ttl for ep in idle), default=None)
    seen = last_activity(session, [ep.name for ep in idle], now=now, window=window) if window else {}
    out = []
    for found in judged:
        last = seen.get(found.endpoint.name)
        expiry = expiry_of(found.endpoint, found.created, last, now, window=window)
        out.append(Found(found.endpoint, found.created, found.status, last, expiry, found.note))
    return out


def expiry_of(ep: TaggedEndpoint, created: datetime | None, last: datetime | None, now: datetime, *,
              window: timedelta | None = None) -> Expiry | None:
    """When and why the endpoint's lifetime ended (None: it has not). `last`: its last invocation seen
    in CloudWatch over the `window` before `now`; with none seen, the idle time counts from the start
    of the window, or from the endpoint's creation if that is later. The idle rule and its words are
    the deployment kind's (config/kinds.py), so both reaps say the same."""
    ended = _ttl_ended(ep, now)
    if ended is not None:
        return ended
    if ep.idle_ttl is None or created is None:
        return None
    start = created if window is None else max(created, _whole_second(now - window))
    return KINDS["deployment"].expiry({"idle_ttl": ep.idle_text}, created, last or start, now)


def _ttl_ended(ep: TaggedEndpoint, now: datetime) -> Expiry | None:
    if ep.expires_at is None or ep.expires_at > now:
        return None
    return Expiry(ep.expires_at, f"ttl ended {ep.expires_at.astimezone(UTC).isoformat()}", idle=False)


def _list_endpoints(session: AwsSession, prefix: str | None) -> dict[str, tuple[datetime, str]]:
    """Creation time and status of every endpoint (whose name contains `prefix`), 100 a call."""
    sagemaker = session.client("sagemaker")
    out = {}
    with aws_errors("listing SageMaker endpoints", "sagemaker"):
        for page in sagemaker.get_paginator("list_endpoints").paginate(
                MaxResults=100, **({"NameContains": prefix} if prefix else {})):
            for ep in page.get("Endpoints") or []:
                out[ep["EndpointName"]] = (_utc(ep["CreationTime"]), ep.get("EndpointStatus") or "")
    return out


# --- idleness ----------------------------------------------------------------------------------------


def last_activity(session: AwsSession, endpoint_names: Iterable[str], *, now: datetime, window: timedelta,
                  sources: Mapping[str, MetricSource] | None = None) -> dict[str, datetime | None]:
    """The last invocation of each endpoint that CloudWatch saw in the `window` before `now` (None:
    none in it, or the endpoint is gone), to the end of the metric period it fell in (so it is never
    earlier than the invocation). `sources`: the series of endpoints the caller already knows (the
    deployment provider records its components); the others are looked up (DescribeEndpoint,
    ListInferenceComponents). One GetMetricData call covers 500 series."""
    names = list(dict.fromkeys(endpoint_names))
    known = dict(sources or {})
    for name in names:
        if name not in known:
            source = metric_source(session, name)
            if source is not None:
                known[name] = source
    queries, owner = [], {}
    for name in names:
        source = known.get(name)
        if source is None:
            continue
        series = [[{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": v}]
                  for v in source.variants] + [[{"Name": "InferenceComponentName", "Value": c}]
                                               for c in source.components]
        for dimensions in series:
            qid = f"q{len(queries)}"
            owner[qid] = name
            queries.append({"Id": qid, "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": NAMESPACE, "MetricName": INVOCATIONS, "Dimensions": dimensions},
                "Period": metric_period(window), "Stat": "Sum"}})
    latest: dict[str, datetime] = {}
    period = timedelta(seconds=metric_period(window))
    cloudwatch = session.client("cloudwatch")
    with aws_errors("reading the endpoints' invocations from CloudWatch", "cloudwatch"):
        for start in range(0, len(queries), MAX_QUERIES):
            pages = cloudwatch.get_paginator("get_metric_data").paginate(
                MetricDataQueries=queries[start:start + MAX_QUERIES], StartTime=now - window, EndTime=now,
                ScanBy="TimestampDescending")
            for page in pages:
                for result in page.get("MetricDataResults") or []:
                    name = owner.get(result.get("Id", ""))
                    for stamp, value in zip(result.get("Timestamps") or [], result.get("Values") or [], strict=False):
                        if name is not None and value > 0:
                            seen = min(now, _utc(stamp) + period)
                            latest[name] = max(latest.get(name, seen), seen)
    return {name: latest.get(name) for name in names}


def metric_period(window: timedelta) -> int:
    """Seconds per data point: a minute where it fits, and coarse enough that 500 series of the window
    stay within GetMetricData's 100,800 points; CloudWatch keeps 1-minute data for 15 days and
    5-minute data for 63, so older windows ask for 5-minute or hourly points."""
    seconds = max(60.0, window.total_seconds())
    period = 60 * math.ceil(seconds / (MAX_POINTS // MAX_QUERIES) / 60)
    if window > timedelta(days=63):
        return 3600 * math.ceil(period / 3600)
    if window > timedelta(days=15):
        return 300 * math.ceil(period / 300)
    return period


def metric_source(session: AwsSession, endpoint_name: str) -> MetricSource | None:
    """The endpoint's variants and inference components (None: it is gone)."""
    from botocore.exceptions import ClientError

    sagemaker = session.client("sagemaker")
    with aws_errors(f"reading endpoint {endpoint_name}", "sagemaker"):
        try:
            described = sagemaker.describe_endpoint(EndpointName=endpoint_name)
        except ClientError as exc:
            if not_found(exc):
                return None
            raise
        components = []
        for page in sagemaker.get_paginator("list_inference_components").paginate(
                EndpointNameEquals=endpoint_name, MaxResults=100):
            components += [c["InferenceComponentName"] for c in page.get("InferenceComponents") or []]
    variants = tuple(v["VariantName"] for v in described.get("ProductionVariants") or [] if v.get("VariantName"))
    return MetricSource(variants=variants, components=tuple(components))


def not_found(exc: BaseException) -> bool:
    """SageMaker's "no such endpoint, config, model or component" (a ValidationException)."""
    message = error_message(exc).lower()
    return error_code(exc) in ("ResourceNotFound", "ResourceNotFoundException") or (
        error_code(exc) == "ValidationException" and ("could not find" in message or "not found" in message))


def _whole_second(t: datetime) -> datetime:
    """`t` to the second, as people read it (what CloudWatch saw spans whole minutes anyway)."""
    return t.replace(microsecond=0)


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
