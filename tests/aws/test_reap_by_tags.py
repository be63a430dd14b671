"""Expired endpoints found from their tags alone (no state anywhere), their idleness read from
CloudWatch, and each deleted with what belongs to it, in SageMaker's order; moto in process, with
inference components from a test-only extension (moto has none)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from fastuner.providers.base import ProviderError
from fastuner.providers.sagemaker.endpoint_tree import delete_endpoint_tree, find_endpoint_tree
from fastuner.providers.sagemaker.reaping import (
    MAX_QUERIES,
    MetricSource,
    expiry_of,
    find_endpoints,
    find_expired,
    last_activity,
    metric_period,
    read_tags,
)
from tests.aws.moto_endpoints import Endpoints
from tests.aws.reap_world import ReapWorld


@pytest.fixture
def world(aws) -> Iterator[ReapWorld]:
    components = Endpoints(settle=0).install()
    try:
        yield ReapWorld(components)
    finally:
        components.uninstall()


# --- judging by tags -------------------------------------------------------------------------------


def test_expired_endpoints_are_found_by_their_tags_alone(world: ReapWorld) -> None:
    now = world.later(hours=2)
    world.deployment("demo-ep-old", expires_at=world.later(hours=1))  # ttl ended an hour ago
    world.deployment("demo-ep-young", expires_at=world.later(hours=8))
    world.deployment("demo-ep-quiet", idle_ttl="1h", adapters=("a",))
    world.deployment("demo-ep-busy", idle_ttl="1h")
    world.deployment("other-ep-old", project="other", expires_at=world.later(hours=1))
    world.deployment("demo-ep-forever")  # no lifetime at all
    # the quiet one: its metric exists but counts no invocation in the last hour; the busy one: three
    world.invoked({"EndpointName": "demo-ep-quiet", "VariantName": "AllTraffic"}, world.later(hours=1.5), 0)
    world.invoked({"InferenceComponentName": "demo-ep-quiet-a"}, world.later(minutes=30), 5)  # before the window
    world.invoked({"EndpointName": "demo-ep-busy", "VariantName": "AllTraffic"}, world.later(hours=1.5), 3)

    found = {f.endpoint.name: f for f in find_expired(world.session, project="demo", now=now)}
    assert set(found) == {"demo-ep-old", "demo-ep-young", "demo-ep-quiet", "demo-ep-busy", "demo-ep-forever"}
    expired = {name: f.expiry for name, f in found.items() if f.expiry is not None}
    assert set(expired) == {"demo-ep-old", "demo-ep-quiet"}
    old = expired["demo-ep-old"]
    assert not old.idle and old.detail == f"ttl ended {world.later(hours=1).replace(microsecond=0).isoformat()}"
    quiet = expired["demo-ep-quiet"]
    since = world.later(hours=1).replace(microsecond=0)  # the window's start, to the second
    assert quiet.idle and quiet.detail.startswith(f"no invocation since {since.isoformat()}")
    assert quiet.detail.endswith("(idle_ttl 1h)")
    busy = found["demo-ep-busy"]
    assert busy.last_activity is not None and busy.last_activity > world.later(hours=1.5)
    assert found["demo-ep-old"].endpoint.address == "deployment.demo-ep-old"
    assert found["demo-ep-old"].endpoint.workspace == "default"

    # what was asked: the project's endpoints by tag, every page; the idle ones' invocations in ONE call
    [get] = world.sent("GetResources")
    assert get["ResourceTypeFilters"] == ["sagemaker:endpoint"]
    assert get["TagFilters"] == [{"Key": "fastuner:project", "Values": ["demo"]}]
    [metrics] = world.sent("GetMetricData")
    assert metrics["EndTime"] == now and metrics["StartTime"] == now - timedelta(hours=1)
    series = {tuple((d["Name"], d["Value"]) for d in q["MetricStat"]["Metric"]["Dimensions"])
              for q in metrics["MetricDataQueries"]}
    assert series == {(("EndpointName", "demo-ep-quiet"), ("VariantName", "AllTraffic")),
                      (("InferenceComponentName", "demo-ep-quiet-base"),),
                      (("InferenceComponentName", "demo-ep-quiet-a"),),
                      (("EndpointName", "demo-ep-busy"), ("VariantName", "AllTraffic"))}
    for q in metrics["MetricDataQueries"]:
        stat = q["MetricStat"]
        assert (stat["Metric"]["Namespace"], stat["Metric"]["MetricName"], stat["Stat"], stat["Period"]) == (
            "AWS/SageMaker", "Invocations", "Sum", 60)
    # only the idle ones are looked at closely; nothing was changed
    assert {p["EndpointName"] for p in world.sent("DescribeEndpoint")} == {"demo-ep-quiet", "demo-ep-busy"}
    assert not [c for c in world.calls if c["operation"].startswith(("Delete", "Update", "Create"))]


def test_another_projects_endpoints_are_found_only_when_every_project_is_asked_for(world: ReapWorld) -> None:
    world.deployment("demo-ep-a", expires_at=world.later(hours=1))
    world.deployment("other-ep-b", project="other", expires_at=world.later(hours=1))
    assert [e.name for e in find_endpoints(world.session, "demo")] == ["demo-ep-a"]
    assert [e.name for e in find_endpoints(world.session, None)] == ["demo-ep-a", "other-ep-b"]
    assert world.sent("GetResources")[-1]["TagFilters"] == [{"Key": "fastuner:project"}]
    every = find_expired(world.session, project=None, now=world.later(hours=2))
    assert {f.endpoint.name for f in every if f.expiry} == {"demo-ep-a", "other-ep-b"}


def test_a_young_endpoint_counts_its_idle_time_from_its_creation() -> None:
    created = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    ep = read_tags("e", "arn", {"fastuner:idle-ttl": "2h"})
    assert expiry_of(ep, created, None, created + timedelta(hours=1), window=timedelta(hours=2)) is None
    ended = expiry_of(ep, created, None, created + timedelta(hours=3), window=timedelta(hours=4))
    assert ended is not None and ended.idle and ended.ended == created + timedelta(hours=2)
    assert ended.detail == f"no invocation since {created.isoformat()} (idle_ttl 2h)"
    # older than the window: what is known is that nothing came in the window
    ended = expiry_of(ep, created, None, created + timedelta(hours=5), window=timedelta(hours=2))
    assert ended is not None and ended.detail.startswith(f"no invocation since {(created + timedelta(hours=3)).isoformat()}")
    # an invocation inside the window keeps it; one idle_ttl after it, it ends
    last = created + timedelta(hours=2, minutes=30)
    assert expiry_of(ep, created, last, created + timedelta(hours=3), window=timedelta(hours=2)) is None
    assert expiry_of(ep, created, last, created + timedelta(hours=4, minutes=30), window=timedelta(hours=2))


def test_unreadable_tags_are_named_and_ignored() -> None:
    ep = read_tags("e", "arn", {"fastuner:expires-at": "tomorrow", "fastuner:idle-ttl": "soon"})
    assert ep.expires_at is None and ep.idle_ttl is None
    assert ep.problems == ("its fastuner:expires-at tag 'tomorrow' is not an ISO 8601 time",
                           "its fastuner:idle-ttl tag 'soon' is not a duration")
    assert expiry_of(ep, datetime(2020, 1, 1, tzinfo=UTC), None, datetime(2030, 1, 1, tzinfo=UTC)) is None
    naive = read_tags("e", "arn", {"fastuner:expires-at": "2026-12-07T18:00:00"})
    assert naive.expires_at == datetime(2026, 12, 7, 18, tzinfo=UTC)


# --- reading invocations -----------------------------------------------------------------------------


def test_last_activity_asks_for_500_series_a_call(world: ReapWorld) -> None:
    now = world.now
    sources = {f"ep-{i}": MetricSource(variants=("AllTraffic",), components=(f"ep-{i}-base",)) for i in range(260)}
    world.invoked({"InferenceComponentName": "ep-259-base"}, now - timedelta(minutes=10), 2)
    seen = last_activity(world.session, sources, now=now, window=timedelta(hours=1), sources=sources)
    calls = world.sent("GetMetricData")
    assert [len(c["MetricDataQueries"]) for c in calls] == [MAX_QUERIES, 520 - MAX_QUERIES]
    ids = [q["Id"] for c in calls for q in c["MetricDataQueries"]]
    assert len(set(ids)) == 520 and all(i[0] == "q" for i in ids)
    assert seen["ep-259"] is not None and now - timedelta(minutes=10) < seen["ep-259"] <= now
    assert seen["ep-0"] is None and len(seen) == 260
    assert not world.sent("DescribeEndpoint")  # the series were known


def test_a_gone_endpoint_has_no_activity(world: ReapWorld) -> None:
    assert last_activity(world.session, ["nope"], now=world.now, window=timedelta(hours=1)) == {"nope": None}
    assert not world.sent("GetMetricData")


@pytest.mark.parametrize(("window", "period"), [
    (timedelta(minutes=5), 60), (timedelta(hours=1), 60), (timedelta(hours=3), 60), (timedelta(hours=8), 180),
    (timedelta(days=1), 480), (timedelta(days=20), 8700), (timedelta(days=90), 39600)])
def test_the_metric_period_keeps_500_series_within_a_calls_data_points(window: timedelta, period: int) -> None:
    assert metric_period(window) == period
    assert window.total_seconds() / period * MAX_QUERIES <= 100_800
    assert period % 60 == 0 and (window <= timedelta(days=15) or period % 300 == 0)


# --- deleting a tree -----------------------------------------------------------------------------------


def test_the_tree_goes_components_first_then_endpoint_configs_and_models(world: ReapWorld) -> None:
    world.deployment("demo-ep-api", idle_ttl="1h", adapters=("a", "b"))
    # an earlier instance type's config and model of the same deployment, tagged alike
    world.deployment("demo-ep-api-old", address="deployment.demo-ep-api", config="demo-ep-api-config-0",
                     model="demo-ep-api-model-0")
    world.sm.delete_endpoint(EndpointName="demo-ep-api-old")
    # a replacement of the same address, live: its config and model are spared
    world.deployment("demo-ep-api-next", address="deployment.demo-ep-api")
    world.deployment("demo-ep-else")  # another deployment: untouched
    sleeps: list[float] = []

    tree = delete_endpoint_tree(world.session, "demo-ep-api", poll=2.0, sleep=sleeps.append)

    assert tree.adapter_components == ["demo-ep-api-a", "demo-ep-api-b"]
    assert tree.other_components == ["demo-ep-api-base"]
    assert tree.configs == ["demo-ep-api-config", "demo-ep-api-config-0"]
    assert tree.models == ["demo-ep-api-model", "demo-ep-api-model-0"]
    assert (tree.instance_type, tree.instance_count) == ("ml.m5.large", 1)
    deletes = [op for op in world.operations() if op[0].startswith("Delete")]
    assert deletes == [("DeleteInferenceComponent", "demo-ep-api-a"), ("DeleteInferenceComponent", "demo-ep-api-b"),
                       ("DeleteInferenceComponent", "demo-ep-api-base"), ("DeleteEndpoint", "demo-ep-api"),
                       ("DeleteEndpointConfig", "demo-ep-api-config"),
                       ("DeleteEndpointConfig", "demo-ep-api-config-0"),
                       ("DeleteModel", "demo-ep-api-model"), ("DeleteModel", "demo-ep-api-model-0")]
    # each group of components was waited for until gone (one pause each: they linger one describe)
    assert sleeps == [2.0, 2.0]
    ops = world.operations()
    base_deleted = ops.index(("DeleteInferenceComponent", "demo-ep-api-base"))
    assert ("DescribeInferenceComponent", "demo-ep-api-a") in ops[ops.index(("DeleteInferenceComponent",
                                                                              "demo-ep-api-b")):base_deleted]
    assert world.endpoints() == {"demo-ep-api-next", "demo-ep-else"}
    assert world.configs() == {"demo-ep-api-next-config", "demo-ep-else-config"}
    assert world.models() == {"demo-ep-api-next-model", "demo-ep-else-model"}
    # the tagged resources were looked up by the deployment's three tags
    [tagged] = world.sent("GetResources")
    assert tagged["TagFilters"] == [{"Key": "fastuner:project", "Values": ["demo"]},
                                    {"Key": "fastuner:workspace", "Values": ["default"]},
                                    {"Key": "fastuner:address", "Values": ["deployment.demo-ep-api"]}]

    # again: everything is gone, nothing fails, nothing is deleted twice
    mark = len(world.calls)
    again = delete_endpoint_tree(world.session, "demo-ep-api", sleep=sleeps.append)
    assert again.status == "" and again.components == [] and again.configs == [] and again.models == []
    assert not [c for c in world.calls[mark:] if c["operation"].startswith("Delete")]


def test_an_endpoint_whose_components_do_not_go_is_left_for_the_next_reap(world: ReapWorld) -> None:
    world.components.linger = 10**6
    world.deployment("demo-ep-stuck", adapters=("a",))
    clock = iter(range(0, 10_000, 60))
    with pytest.raises(ProviderError, match="still being deleted") as caught:
        delete_endpoint_tree(world.session, "demo-ep-stuck", timeout=600, sleep=lambda s: None,
                             monotonic=lambda: float(next(clock)))
    assert "fastuner reap" in caught.value.hint
    assert "demo-ep-stuck" in world.endpoints() and not world.sent("DeleteEndpoint")


def test_without_fastuner_tags_the_tree_is_what_the_endpoint_names(world: ReapWorld) -> None:
    world.deployment("demo-ep-x")
    world.deployment("demo-ep-y", address="deployment.demo-ep-x")
    tree = find_endpoint_tree(world.session, "demo-ep-x", tags={})
    assert (tree.configs, tree.models) == (["demo-ep-x-config"], ["demo-ep-x-model"])
    assert not world.sent("GetResources")


def test_every_page_is_read_the_tagging_apis_and_cloudwatchs(world: ReapWorld) -> None:
    """Pages that moto does not make: answered by botocore's Stubber (requests checked against the
    service model), the second page holding the later invocation and the second endpoint."""
    from botocore.stub import Stubber

    now = world.now
    arn = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/"
    tagging = world.session.client("resourcegroupstaggingapi")
    with Stubber(tagging) as stub:
        for page, token in ((["demo-ep-a"], "t1"), (["demo-ep-b"], "")):
            stub.add_response("get_resources", {"PaginationToken": token, "ResourceTagMappingList": [
                {"ResourceARN": arn + name, "Tags": [{"Key": "fastuner:project", "Value": "demo"}]} for name in page]})
        assert [e.name for e in find_endpoints(world.session, "demo")] == ["demo-ep-a", "demo-ep-b"]
        stub.assert_no_pending_responses()
    cloudwatch = world.session.client("cloudwatch")
    with Stubber(cloudwatch) as stub:
        earlier, later = now - timedelta(minutes=40), now - timedelta(minutes=5)
        stub.add_response("get_metric_data", {"NextToken": "n1", "MetricDataResults": [
            {"Id": "q0", "Timestamps": [earlier], "Values": [4.0], "StatusCode": "PartialData"}]})
        stub.add_response("get_metric_data", {"MetricDataResults": [
            {"Id": "q0", "Timestamps": [later, now - timedelta(minutes=2)], "Values": [1.0, 0.0],
             "StatusCode": "Complete"}]})
        seen = last_activity(world.session, ["e"], now=now, window=timedelta(hours=1),
                             sources={"e": MetricSource(variants=("AllTraffic",))})
        stub.assert_no_pending_responses()
    assert seen == {"e": later + timedelta(minutes=1)}  # the end of the minute of the last non-zero count
