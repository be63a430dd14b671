"""Approximate on-demand SageMaker prices (USD per instance-hour, us-east-1), for plan estimates.

Estimates, not quotes: the plan shows them so that a reviewer sees what a change may cost. Spot
training can cost up to about 70 % less than the figure shown. Unknown instance types get no estimate.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastuner.config.duration import format_duration
from fastuner.config.kinds import Usage

HOURLY_USD: dict[str, float] = {
    "ml.m5.large": 0.115, "ml.m5.xlarge": 0.23, "ml.m5.2xlarge": 0.461,
    "ml.c5.xlarge": 0.204, "ml.c5.2xlarge": 0.408,
    "ml.g4dn.xlarge": 0.736, "ml.g4dn.2xlarge": 0.94, "ml.g4dn.12xlarge": 4.89,
    "ml.g5.xlarge": 1.408, "ml.g5.2xlarge": 1.515, "ml.g5.4xlarge": 2.03, "ml.g5.8xlarge": 3.06,
    "ml.g5.12xlarge": 7.09, "ml.g5.24xlarge": 10.18, "ml.g5.48xlarge": 20.36,
    "ml.g6.xlarge": 1.006, "ml.g6.2xlarge": 1.222, "ml.g6.12xlarge": 5.752, "ml.g6e.xlarge": 2.336,
    "ml.p3.2xlarge": 3.825, "ml.p4d.24xlarge": 37.688, "ml.p5.48xlarge": 113.07,
    "ml.inf2.xlarge": 0.99, "ml.trn1.2xlarge": 1.546,
}


def training_cost(instance_type: str, count: int, max_hours: float, spot: bool) -> dict[str, Any]:
    price = HOURLY_USD.get(instance_type)
    if price is None:
        return {"note": f"no price known for {instance_type}"}
    out: dict[str, Any] = {"max_one_time_usd": round(price * count * max_hours, 2),
                           "note": f"at most {max_hours:g} h × {count} × {instance_type} on demand"}
    if spot:
        out["note"] += " (spot: usually much less)"
    return out


def endpoint_cost(instance_type: str, count: int, ttl_hours: float | None, *, adapters: int = 0,
                  hours_left: float | None = None) -> dict[str, Any]:
    """An endpoint's price by the hour; with a ttl, the most it costs until the ttl ends it (`hours_left`
    of it for a running endpoint, the whole ttl for a new one); with adapters, the price per
    adapter-hour and what the same adapters would cost on one endpoint each: what sharing saves."""
    price = HOURLY_USD.get(instance_type)
    if price is None:
        return {"note": f"no price known for {instance_type}"}
    hourly = price * count
    out: dict[str, Any] = {"hourly_usd": round(hourly, 4), "note": f"{count} × {instance_type}"}
    if ttl_hours is not None:
        ttl = format_duration(timedelta(hours=ttl_hours))  # as the spec writes it
        if hours_left is None:
            out["max_one_time_usd"] = round(hourly * ttl_hours, 2)
            out["note"] += f", at most {ttl} (ttl)"
        else:
            left = max(0.0, min(hours_left, ttl_hours))
            out["max_one_time_usd"] = round(hourly * left, 2)
            out["note"] += f", {format_duration(timedelta(hours=round(left * 60) / 60))} left of its {ttl} ttl"
    if adapters:
        out["adapters"] = adapters
        out["per_adapter_hourly_usd"] = round(hourly / adapters, 4)
        out["separate_hourly_usd"] = round(hourly * adapters, 4)
    return out


def price(usage: Usage, *, running_only: bool = False, hours_left: float | None = None) -> dict[str, Any]:
    """The estimate for what a resource runs on; `running_only`: only what it costs by the hour (a
    resource being deleted saves that, and no job is started); `hours_left`: of a running endpoint's ttl."""
    if usage.hourly:
        return endpoint_cost(usage.instance_type, usage.count, None if running_only else usage.hours,
                             adapters=usage.shared_by, hours_left=hours_left)
    if running_only or usage.hours is None:
        return {}
    return training_cost(usage.instance_type, usage.count, usage.hours, usage.spot)
