"""What a resource will cost, for the plan: SageMaker on-demand prices (plan/prices/) applied to what
it runs on. Estimates, not quotes: a reviewer sees what a change may cost, and an upper bound that holds.

- Training: the estimate from the work (plan/estimate.py: tokens × epochs ÷ throughput + start-up,
  capped by max_runtime) × the price; the bound, max_runtime × the price; with spot, the estimate as a
  range (the region's expected spot savings). Without a token count, the bound alone.
- Endpoints: $/hour, and with a ttl the most it costs until the ttl ends it; per adapter when shared.
- Unknown instance type or region: no figure, and a note saying so.

`recorded_spend` turns what a finished job reported (billed seconds) into what it cost, with the price
the plan used, for state; `RECORDED` names the keys kept there.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from fastuner.config.duration import format_duration
from fastuner.config.kinds import Usage
from fastuner.plan.estimate import Estimate, Work, estimate_seconds
from fastuner.plan.prices import RegionPrices, shipped_book

DEFAULT_REGION = "us-east-1"

# GPUs per instance for the sizes with more than one (AWS's published figures; the same table the
# SageMaker provider launches by, providers/sagemaker/instances.py)
_GPUS = {"g4dn.12xlarge": 4, "g5.12xlarge": 4, "g5.24xlarge": 4, "g5.48xlarge": 8, "g6.12xlarge": 4,
         "g6.24xlarge": 4, "g6.48xlarge": 8, "g6e.12xlarge": 4, "g6e.24xlarge": 4, "g6e.48xlarge": 8,
         "p3.8xlarge": 4, "p3.16xlarge": 8, "p4d.24xlarge": 8, "p4de.24xlarge": 8, "p5.48xlarge": 8}


def gpus(instance_type: str) -> int:
    return _GPUS.get(instance_type.removeprefix("ml."), 1)


def training_cost(instance_type: str, count: int, max_hours: float | None, spot: bool,
                  prices: RegionPrices | None = None, *, region: str = DEFAULT_REGION, work: Work | None = None,
                  calibration: tuple[float, int] = (1.0, 0)) -> dict[str, Any]:
    prices = prices or shipped_book().region(region)
    price = _lookup(prices, "training", instance_type, region)
    if isinstance(price, str):
        return {"note": price}
    out: dict[str, Any] = {"usd_per_hour": price, "instance_type": instance_type, "instance_count": count}
    notes = []
    if max_hours is not None:
        out["max_one_time_usd"] = round(price * count * max_hours, 2)
        notes.append(f"at most {max_hours:g} h × {count} × {instance_type} on demand")
    est = estimate_seconds(work, instance_type, count, gpus(instance_type),
                           max_hours * 3600 if max_hours is not None else None, calibration=calibration[0],
                           calibrated_from=calibration[1]) if work is not None else None
    if est is not None and work is not None:
        out.update(_estimate_fields(est, work, price, count))
        notes.insert(0, _estimate_words(est, work))
        if spot:
            low, high = prices.spot_savings if prices is not None else (0.5, 0.7)
            usd = price * count * est.seconds / 3600
            out["spot_usd"] = [round(usd * (1 - high), 2), round(usd * (1 - low), 2)]
            notes.append(f"spot: {low:.0%}–{high:.0%} less")
    elif work is None:
        notes.append("no token count: the bound only" + (" (spot: usually much less)" if spot else ""))
    else:
        notes.append(f"no throughput known for {instance_type}: the bound only")
    out["note"] = "; ".join(notes)
    return out


def endpoint_cost(instance_type: str, count: int, ttl_hours: float | None, prices: RegionPrices | None = None, *,
                  region: str = DEFAULT_REGION, adapters: int = 0, hours_left: float | None = None) -> dict[str, Any]:
    """An endpoint's price by the hour; with a ttl, the most it costs until the ttl ends it (`hours_left`
    of it for a running endpoint, the whole ttl for a new one); with adapters, the price per
    adapter-hour and what the same adapters would cost on one endpoint each: what sharing saves."""
    prices = prices or shipped_book().region(region)
    price = _lookup(prices, "hosting", instance_type, region)
    if isinstance(price, str):
        return {"note": price}
    hourly = price * count
    out: dict[str, Any] = {"usd_per_hour": price, "hourly_usd": round(hourly, 4), "instance_type": instance_type,
                           "instance_count": count, "note": f"{count} × {instance_type}"}
    if ttl_hours is not None:
        ttl = format_duration(timedelta(hours=ttl_hours))  # as the spec writes it
        if hours_left is None:
            out["max_one_time_usd"] = round(hourly * ttl_hours, 2)
            out["note"] += f", at most {ttl} (ttl)"
        else:
            left = max(0.0, min(hours_left, ttl_hours))
            out["max_one_time_usd"] = round(hourly * left, 2)
            out["note"] += f", {format_duration(timedelta(hours=round(left * 60) / 60))} left of its {ttl} ttl"
        out["estimate_usd"] = out["max_one_time_usd"]  # it runs until its ttl unless removed or idle
    if adapters:
        out["adapters"] = adapters
        out["per_adapter_hourly_usd"] = round(hourly / adapters, 4)
        out["separate_hourly_usd"] = round(hourly * adapters, 4)
    return out


def price(usage: Usage, prices: RegionPrices | None, *, region: str = DEFAULT_REGION, running_only: bool = False,
          hours_left: float | None = None, work: Work | None = None,
          calibration: tuple[float, int] = (1.0, 0)) -> dict[str, Any]:
    """The estimate for what a resource runs on; `running_only`: only what it costs by the hour (a
    resource being deleted saves that, and no job is started); `hours_left`: of a running endpoint's ttl;
    `work`: what a training job will do (its estimate; without it, the bound alone)."""
    if usage.hourly:
        return endpoint_cost(usage.instance_type, usage.count, None if running_only else usage.hours, prices,
                             region=region, adapters=usage.shared_by, hours_left=hours_left)
    if running_only or (usage.hours is None and work is None):
        return {}
    return training_cost(usage.instance_type, usage.count, usage.hours, usage.spot, prices, region=region,
                         work=work, calibration=calibration)


def cost_record(estimate: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any] | None:
    """What state keeps in a resource's `outputs.cost`: the plan's estimate (the `RECORDED` keys) and,
    once the job reported its billed time, what it cost. None for a resource the plan priced at nothing."""
    base = {key: estimate[key] for key in RECORDED if key in estimate}
    if base.get("usd_per_hour") is None:
        return None
    return {**base, **recorded_spend(base, outputs)}


def recorded_spend(cost: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
    """What a training job cost, from its outputs (`billable_seconds`, `training_seconds`, `instance_count`)
    and the price its plan used (`cost.usd_per_hour`), with the plan's estimate kept beside it for
    `fastuner cost` and for calibration. {} when the job has not reported billed time yet."""
    rate = cost.get("usd_per_hour")
    billed = outputs.get("billable_seconds")
    if rate is None or billed is None:
        return {}
    count = int(outputs.get("instance_count") or cost.get("instance_count") or 1)
    out: dict[str, Any] = {}
    out.update(billed_seconds=float(billed), training_seconds=float(outputs.get("training_seconds") or billed),
               instance_count=count, spent_usd=round(float(billed) * count * float(rate) / 3600, 4))
    if outputs.get("spot_savings") is not None:
        out["spot_savings"] = outputs["spot_savings"]  # (training − billable) ÷ training seconds
        saved = out["training_seconds"] - out["billed_seconds"]
        out["spot_saved_usd"] = round(max(saved, 0.0) * count * float(rate) / 3600, 4)
    return out


# what state keeps of the plan's estimate for a resource (outputs.cost)
RECORDED = ("usd_per_hour", "hourly_usd", "estimate_usd", "estimate_seconds", "max_one_time_usd", "spot_usd",
            "instance_type", "instance_count", "train_tokens", "epochs", "predicted_loop_s", "startup_s", "capped",
            "params_b")


def _lookup(prices: RegionPrices | None, what: str, instance_type: str, region: str) -> float | str:
    if prices is None:
        return f"no prices known for {region}: run `fastuner prices update --region {region}`"
    table = prices.training if what == "training" else prices.hosting
    value = table.get(instance_type)
    if value is None:
        return f"no {what} price known for {instance_type} in {prices.region}"
    return value


def _estimate_fields(est: Estimate, work: Work, price: float, count: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "estimate_usd": round(price * count * est.seconds / 3600, 2), "estimate_seconds": round(est.seconds),
        "train_tokens": work.tokens, "tokens_counted": work.counted, "epochs": work.epochs,
        "params_b": work.params_b, "params_from": work.params_from,
        "predicted_loop_s": round(est.loop_seconds / est.calibration, 1), "startup_s": round(est.startup_seconds),
        "capped": est.capped,
    }
    if est.calibrated_from:
        out.update(calibration=round(est.calibration, 3), calibrated_from=est.calibrated_from)
    return out


def _estimate_words(est: Estimate, work: Work) -> str:
    took = format_duration(timedelta(minutes=max(1, round(est.seconds / 60))))
    counted = "tokenizer" if work.counted == "tokenizer" else "~4 chars/token"
    size = f"{work.params_b:g}B model" + (" (assumed)" if work.params_from == "assumed" else "")
    size += " QLoRA" if work.method == "qlora" else ""
    size += ", checkpointing" if work.checkpointing else ""
    words = f"~{took}: {_tokens(work.tokens)} tokens ({counted}) × {work.epochs:g} epochs, {size}"
    if est.calibrated_from:
        words += f", ×{est.calibration:.2f} from {est.calibrated_from} finished job{'s' * (est.calibrated_from > 1)}"
    if est.capped:
        words += ", cut off by max_runtime"
    return words


def _tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}k"
    return str(n)
