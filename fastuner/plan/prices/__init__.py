"""SageMaker prices as data: per region and instance type, the on-demand price of training and of
real-time hosting by the instance-hour, an expected range of what managed spot training saves, and
where the figures came from and when (`source`, `as_of`).

The files shipped beside this module (`<region>.json`) are a starting point; `fastuner prices update`
writes fresher ones from the AWS Price List API into a user-writable folder, and for each region the
newer of the two wins (`merge`). A plan whose figures are older than `STALE_AFTER` says so once.

Everything here is pure: parsing a file's JSON and reading the package's own data. Reading or writing
the user's copy is the SageMaker provider's business (providers/sagemaker/pricelist.py).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from importlib import resources
from typing import Any

FORMAT_VERSION = 1
STALE_AFTER = timedelta(days=90)
SHIPPED = "shipped"


@dataclass(frozen=True)
class RegionPrices:
    """One region's prices (USD per instance-hour). `origin`: "shipped" or the file it was read from."""

    region: str
    as_of: date
    source: Mapping[str, Any]
    training: Mapping[str, float]
    hosting: Mapping[str, float]
    spot_savings: tuple[float, float] = (0.5, 0.7)  # the expected fraction spot saves, low to high
    origin: str = SHIPPED

    def stale(self, now: datetime) -> bool:
        return now.date() - self.as_of > STALE_AFTER

    def describe(self) -> str:
        """Where the figures come from, in words: "AWS Price List API (AmazonSageMaker), 2025-06-01"."""
        api = self.source.get("api") or "unknown source"
        service = self.source.get("service_code")
        fetched = "fetched" if self.source.get("fetched_at") else "not fetched: compiled from the public page"
        return f"{api}{f' ({service})' if service else ''}, {fetched}, as of {self.as_of.isoformat()}"


@dataclass(frozen=True)
class PriceBook:
    regions: Mapping[str, RegionPrices] = field(default_factory=dict)

    def region(self, name: str) -> RegionPrices | None:
        return self.regions.get(name)


def parse_price_file(doc: Mapping[str, Any], origin: str = SHIPPED) -> RegionPrices:
    """A price file's JSON as `RegionPrices`; ValueError naming what is wrong with it."""
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"price file format_version {doc.get('format_version')!r} is not {FORMAT_VERSION}")
    if doc.get("currency", "USD") != "USD":
        raise ValueError(f"price file currency {doc.get('currency')!r}: only USD is supported")
    try:
        region = str(doc["region"])
        as_of = date.fromisoformat(str(doc["as_of"]))
        instances = doc["instances"]
    except (KeyError, ValueError) as exc:
        raise ValueError(f"price file lacks a valid region, as_of or instances: {exc}") from None
    training: dict[str, float] = {}
    hosting: dict[str, float] = {}
    for name, row in instances.items():
        for key, table in (("training", training), ("hosting", hosting)):
            value = row.get(key)
            if value is None:
                continue
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"price file {region}: {name}.{key} is not a price: {value!r}")
            table[name] = float(value)
    spot = doc.get("spot") or {}
    low, high = float(spot.get("savings_min", 0.5)), float(spot.get("savings_max", 0.7))
    if not 0 <= low <= high < 1:
        raise ValueError(f"price file {region}: spot savings range {low}..{high} is not within [0, 1)")
    return RegionPrices(region=region, as_of=as_of, source=dict(doc.get("source") or {}), training=training,
                        hosting=hosting, spot_savings=(low, high), origin=origin)


def price_file(prices: RegionPrices) -> dict[str, Any]:
    """The JSON form `parse_price_file` reads (what `fastuner prices update` writes)."""
    names = sorted(set(prices.training) | set(prices.hosting))
    return {
        "format_version": FORMAT_VERSION, "region": prices.region, "currency": "USD", "unit": "instance-hour",
        "as_of": prices.as_of.isoformat(), "source": dict(prices.source),
        "spot": {"savings_min": prices.spot_savings[0], "savings_max": prices.spot_savings[1]},
        "instances": {n: {"training": prices.training.get(n), "hosting": prices.hosting.get(n)} for n in names},
    }


@functools.cache
def shipped_book() -> PriceBook:
    """The price files shipped with fastuner (package data)."""
    found: dict[str, RegionPrices] = {}
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".json"):
            prices = parse_price_file(json.loads(entry.read_text()))
            found[prices.region] = prices
    return PriceBook(found)


def merge(base: PriceBook, others: Iterable[RegionPrices]) -> PriceBook:
    """`base` with each region of `others` in its place where that one is newer (or the region is new)."""
    regions = dict(base.regions)
    for prices in others:
        current = regions.get(prices.region)
        if current is None or prices.as_of >= current.as_of:
            regions[prices.region] = prices
    return PriceBook(regions)
