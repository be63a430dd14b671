"""SageMaker prices from the AWS Price List API, kept in a user-writable folder beside the shipped ones.

`fastuner prices update` calls `pricing:GetProducts` (the API answers only in us-east-1, and a few other
regions, for every region's products) with `ServiceCode=AmazonSageMaker` and a `regionCode` filter,
to the last page. Each PriceList entry is a JSON string: `product.attributes` names the instance
(`instanceName`, or `instanceType`) and the use, in `usagetype` ("USE1-Train:ml.g5.xlarge",
"USE1-Host:ml.g5.xlarge"; `component` "Training"/"Hosting" where present); `terms.OnDemand.*.
priceDimensions.*.pricePerUnit.USD` with `unit` "Hrs" is the price. Spot has no SageMaker rate there:
the shipped spot-savings range is kept.

Every region asked for is fetched before anything is written; then each file is written beside its
final name and moved into place, so an update that fails (offline, no access, a region with no
prices) writes nothing. The folder: `FASTUNER_PRICES_DIR`, else `<cache>/prices` where the cache is
`FASTUNER_CACHE_DIR`, `$XDG_CACHE_HOME/fastuner` or `~/.cache/fastuner`. A region's copy there is
used when it is newer than the shipped one (plan/prices `merge`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastuner.plan.prices import PriceBook, RegionPrices, merge, parse_price_file, price_file, shipped_book
from fastuner.providers.base import ProviderError
from fastuner.providers.sagemaker.errors import provider_errors

PRICING_REGION = "us-east-1"
_USAGE = re.compile(r"-(Train|Host):(ml\.[a-z0-9-]+\.[a-z0-9]+)$")
_KIND = {"Train": "training", "Host": "hosting"}


def cache_dir(environ: Mapping[str, str]) -> Path:
    if environ.get("FASTUNER_CACHE_DIR"):
        return Path(environ["FASTUNER_CACHE_DIR"])
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "fastuner"


def prices_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ["FASTUNER_PRICES_DIR"]) if environ.get("FASTUNER_PRICES_DIR") else cache_dir(environ) / "prices"


def read_user_prices(folder: Path) -> list[RegionPrices]:
    """The price files in `folder`; one that cannot be read or parsed is left out (the shipped one stands)."""
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            found.append(parse_price_file(json.loads(path.read_text()), origin=str(path)))
        except (OSError, ValueError):
            continue
    return found


def price_book(environ: Mapping[str, str]) -> PriceBook:
    return merge(shipped_book(), read_user_prices(prices_dir(environ)))


@dataclass(frozen=True)
class Updated:
    region: str
    path: Path
    training: int
    hosting: int


def update_prices(client: Any, regions: Iterable[str], folder: Path, now: datetime) -> list[Updated]:
    """Fetch each region's SageMaker prices with `client` (a `pricing` client) and write them to `folder`:
    all of them or, on any failure, none. ProviderError saying why and what to do."""
    fetched = [fetch_region(client, region, now) for region in regions]
    folder.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for prices in fetched:
            final = folder / f"{prices.region}.json"
            tmp = folder / f".{prices.region}.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(price_file(prices), indent=1) + "\n")
            staged.append((tmp, final, prices))
    except OSError as exc:
        for tmp, _, _ in staged:
            tmp.unlink(missing_ok=True)
        raise ProviderError(f"cannot write prices to {folder}: {exc.strerror or exc}",
                            "Set FASTUNER_PRICES_DIR to a folder you can write.") from None
    for tmp, final, _ in staged:
        tmp.replace(final)
    return [Updated(p.region, final, len(p.training), len(p.hosting)) for _, final, p in staged]


def fetch_region(client: Any, region: str, now: datetime) -> RegionPrices:
    training: dict[str, float] = {}
    hosting: dict[str, float] = {}
    params: dict[str, Any] = {"ServiceCode": "AmazonSageMaker", "FormatVersion": "aws_v1", "MaxResults": 100,
                              "Filters": [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": region}]}
    with _pricing_errors(region):
        while True:
            page = client.get_products(**params)
            for entry in page.get("PriceList") or ():
                found = parse_product(entry)
                if found is not None:
                    kind, instance, usd = found
                    (training if kind == "training" else hosting)[instance] = usd
            token = page.get("NextToken")
            if not token:
                break
            params["NextToken"] = token
    if not training and not hosting:
        raise ProviderError(f"the AWS Price List API has no SageMaker instance prices for {region}",
                            "Check the region's name (for example eu-west-1); nothing was written.")
    shipped = shipped_book().region(region) or shipped_book().region(PRICING_REGION)
    spot = shipped.spot_savings if shipped is not None else (0.5, 0.7)
    source = {"api": "AWS Price List API", "service_code": "AmazonSageMaker", "fetched_at": now.isoformat(),
              "note": "On-demand training (usage type Train) and real-time hosting (Host) by the instance-hour; "
                      "the spot savings range is the shipped assumption (the API has no SageMaker spot rate)."}
    return RegionPrices(region=region, as_of=now.date(), source=source, training=training, hosting=hosting,
                        spot_savings=spot, origin="api")


def parse_product(entry: str | Mapping[str, Any]) -> tuple[str, str, float] | None:
    """("training" | "hosting", instance type, USD per hour) of one PriceList entry, or None for any
    other SageMaker product (notebooks, processing, batch transform, storage, …)."""
    doc = json.loads(entry) if isinstance(entry, str) else entry
    attributes = (doc.get("product") or {}).get("attributes") or {}
    match = _USAGE.search(attributes.get("usagetype") or "")
    if match is None:
        return None
    kind, instance = _KIND[match.group(1)], match.group(2)
    named = attributes.get("instanceName") or attributes.get("instanceType") or instance
    if not str(named).startswith(instance):
        return None
    for term in ((doc.get("terms") or {}).get("OnDemand") or {}).values():
        for dimension in (term.get("priceDimensions") or {}).values():
            usd = (dimension.get("pricePerUnit") or {}).get("USD")
            if usd is not None and str(dimension.get("unit", "Hrs")).lower().startswith("hr"):
                value = float(usd)
                if value > 0:
                    return kind, instance, value
    return None


class _pricing_errors:
    """Offline, no credentials, no access: said plainly (the plan keeps the prices it has)."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.inner = provider_errors(f"reading SageMaker prices for {region} from the AWS Price List API", "pricing")

    def __enter__(self) -> None:
        self.inner.__enter__()

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool | None:
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        keep = "Nothing was written; plans keep using the prices they have."
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            raise ProviderError("cannot reach the AWS Price List API (api.pricing.us-east-1.amazonaws.com): "
                                "offline or blocked", keep) from None
        if isinstance(exc, NoCredentialsError):
            raise ProviderError("no AWS credentials to call the AWS Price List API",
                                f"Configure credentials (AWS_PROFILE or aws configure). {keep}") from None
        if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
                "AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            raise ProviderError("access denied to the AWS Price List API",
                                f"Allow pricing:GetProducts for these credentials. {keep}") from None
        return self.inner.__exit__(kind, exc, tb)
