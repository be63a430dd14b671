"""Prices as data: the shipped files parse, cover the regions and instance types the plan prices, say
where they come from; a newer copy wins; a plan notes prices older than 90 days, once."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from fastuner.config.loader import load_spec
from fastuner.plan.observed import Observed
from fastuner.plan.planner import make_plan
from fastuner.plan.prices import PriceBook, merge, parse_price_file, price_file, shipped_book
from fastuner.plan.pricing import endpoint_cost, training_cost
from fastuner.state.model import State

REGIONS = {"us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1"}


def test_shipped_prices_cover_the_regions_and_name_their_source() -> None:
    book = shipped_book()
    assert set(book.regions) >= REGIONS
    for prices in book.regions.values():
        assert prices.source["api"] == "AWS Price List API" and prices.source["service_code"] == "AmazonSageMaker"
        assert "not fetched" in prices.describe()
        assert prices.training["ml.g5.2xlarge"] > 0 and prices.hosting["ml.g5.xlarge"] > 0
        low, high = prices.spot_savings
        assert 0 < low < high < 1
        assert "ml.inf2.xlarge" not in prices.training  # Inferentia serves, it does not train
    # a region's own figures, not us-east-1's
    assert book.region("eu-central-1").training["ml.g5.2xlarge"] > book.region("us-east-1").training["ml.g5.2xlarge"]


def test_a_price_file_round_trips_and_bad_ones_are_refused() -> None:
    prices = shipped_book().region("eu-west-1")
    again = parse_price_file(price_file(prices))
    assert (again.training, again.hosting, again.as_of, again.spot_savings) == \
        (prices.training, prices.hosting, prices.as_of, prices.spot_savings)
    doc = price_file(prices)
    with pytest.raises(ValueError, match="format_version"):
        parse_price_file({**doc, "format_version": 9})
    with pytest.raises(ValueError, match="not a price"):
        parse_price_file({**doc, "instances": {"ml.g5.xlarge": {"training": "cheap"}}})
    with pytest.raises(ValueError, match="spot savings"):
        parse_price_file({**doc, "spot": {"savings_min": 0.9, "savings_max": 0.2}})


def test_the_newer_copy_of_a_region_wins() -> None:
    shipped = shipped_book()
    doc = price_file(shipped.region("us-east-1"))
    newer = parse_price_file({**doc, "as_of": "2099-01-01",
                              "instances": {"ml.g5.xlarge": {"training": 2.0, "hosting": 2.5}}}, origin="/u/us-east-1.json")
    older = parse_price_file({**doc, "as_of": "2000-01-01",
                              "instances": {"ml.g5.xlarge": {"training": 9.0, "hosting": 9.0}}}, origin="/u/x.json")
    book = merge(shipped, [newer])
    assert book.region("us-east-1").hosting["ml.g5.xlarge"] == 2.5 and book.region("us-west-2") is not None
    assert merge(shipped, [older]).region("us-east-1") == shipped.region("us-east-1")


def test_costs_use_the_regions_prices_and_say_when_a_region_is_unknown() -> None:
    eu = shipped_book().region("eu-central-1")
    assert endpoint_cost("ml.g5.xlarge", 2, None, eu)["hourly_usd"] == round(2 * eu.hosting["ml.g5.xlarge"], 4)
    assert training_cost("ml.g5.2xlarge", 1, 2.0, False, eu)["max_one_time_usd"] == \
        round(2 * eu.training["ml.g5.2xlarge"], 2)
    assert training_cost("ml.g5.2xlarge", 1, 2.0, False, region="sa-east-1")["note"] == \
        "no prices known for sa-east-1: run `fastuner prices update --region sa-east-1`"
    assert endpoint_cost("ml.x9.huge", 1, None)["note"] == "no hosting price known for ml.x9.huge in us-east-1"


SPEC = """version: 1
project: p
provider: {sagemaker: {region: REGION, role_arn: "arn:aws:iam::123456789012:role/r", bucket: b}}
datasets:
  d: {path: d.jsonl, task: text_generation}
deployments: {}
adapters:
  a: {base_model: org/Model-7B, dataset: d}
"""


def _plan(tmp_path, now: datetime, region: str = "us-east-1", prices: PriceBook | None = None):
    (tmp_path / "fastuner.yaml").write_text(SPEC.replace("REGION", region))
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    observed = Observed(dataset_sources={"d": "00"}, training_code_hash="c", priced=True, prices=prices)
    return make_plan(load_spec(tmp_path / "fastuner.yaml"), State(project="p"), observed, now)


def test_a_plan_notes_prices_older_than_90_days_once(tmp_path) -> None:
    as_of = shipped_book().region("us-east-1").as_of
    fresh = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC)
    assert not [d for d in _plan(tmp_path, fresh).diagnostics if "prices" in d["summary"]]
    late = _plan(tmp_path, datetime(2030, 1, 1, tzinfo=UTC))
    notes = [d for d in late.diagnostics if "prices" in d["summary"]]
    assert len(notes) == 1 and notes[0]["severity"] == "warning"
    assert "fastuner prices update --region us-east-1" in notes[0]["summary"]
    assert "as of " + as_of.isoformat() in notes[0]["summary"]
    # a fresher copy (as `fastuner prices update` writes) silences it and is what the plan prices with
    doc = price_file(shipped_book().region("us-east-1"))
    fresh_copy = parse_price_file({**doc, "as_of": date(2029, 12, 1).isoformat(),
                                   "instances": {"ml.g5.2xlarge": {"training": 2.0, "hosting": 2.0}}})
    plan = _plan(tmp_path, datetime(2030, 1, 1, tzinfo=UTC), prices=merge(shipped_book(), [fresh_copy]))
    assert not [d for d in plan.diagnostics if "prices" in d["summary"]]
    assert plan.change("adapter.a").cost["usd_per_hour"] == 2.0


def test_a_plan_in_another_region_prices_with_that_region(tmp_path) -> None:
    plan = _plan(tmp_path, datetime(2025, 6, 2, tzinfo=UTC), region="ap-northeast-1")
    assert plan.change("adapter.a").cost["usd_per_hour"] == shipped_book().region("ap-northeast-1").training[
        "ml.g5.2xlarge"]
