"""Words shared by every rendering of a plan: headings and reason sentences (no computation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastuner.config.kinds import KINDS
from fastuner.plan.kinds import flatten

HEADINGS = {
    "create": "will be created",
    "update": "will be updated in-place",
    "replace": "must be replaced",
    "delete": "will be destroyed",
    "no-op": "is up to date",
}

REASONS = {
    "none": "",
    "create_because_new": "",
    "create_because_missing": "it is recorded in state but no longer exists",
    "create_because_pending": "an earlier run started it",
    "create_because_renewed": "renewed after expiry",
    "update_because_changed": "",
    "update_because_upstream_replaced": "an adapter it serves is retrained",
    "replace_because_cannot_update": "",
    "replace_because_upstream_replaced": "an upstream resource is replaced",
    "replace_because_tainted": "the last attempt failed",
    "replace_by_request": "replacement requested with --replace",
    "delete_because_no_resource_config": "it is no longer in the spec",
    "delete_because_ttl_expired": "its ttl expired",
    "delete_because_idle_ttl_expired": "its idle_ttl expired",
    "delete_because_destroy": "",  # the heading already says "will be destroyed"
    "delete_because_deposed": "an old instance left by a replacement",
    "noop_because_expired": "expired; stays down until renewed",
}

DERIVED_PATHS = frozenset(p for kind in KINDS.values() for p in kind.derived)  # inputs fastuner adds, not the spec

SYMBOLS = {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "no-op": " "}


def reason_text(change: dict[str, Any], changes: Mapping[str, dict[str, Any]] | None = None) -> str:
    """The reason sentence, then the change's own detail, e.g. "its ttl expired: ttl 8h ended ...".

    `changes` (the plan's changes by address) lets an update caused upstream say which adapters are
    retrained and why, from their own changes: the planner records only that one is."""
    base = REASONS.get(change["reason"], change["reason"])
    detail = change.get("detail") or ""
    upstream = _retrained(change, changes or {}) if change["action"] == "update" and not detail else ""
    if upstream:
        if change["reason"] == "update_because_upstream_replaced":
            return upstream
        spec = [p for p in change.get("changed_paths") or [] if p.split(".")[0] not in DERIVED_PATHS]
        return upstream + (f"; {', '.join(spec)} changed in the spec" if spec else "")
    if base and detail:
        return f"{base}: {detail}"
    return base or detail


def _retrained(change: dict[str, Any], changes: Mapping[str, dict[str, Any]]) -> str:
    """"adapter.a is retrained: dataset.d gets a new version" for each adapter whose identity changed."""
    before = (change.get("before") or {}).get("adapter_identities") or {}
    after = (change.get("after") or {}).get("adapter_identities") or {}
    parts = []
    for name in sorted(a for a in after if a in before and before[a] != after[a]):
        address = f"adapter.{name}"
        upstream = changes.get(address)
        why = (upstream.get("detail") or REASONS.get(upstream["reason"], "")) if upstream else ""
        parts.append(f"{address} is retrained" + (f": {why}" if why else ""))
    return "; ".join(parts)


def summary_line(summary: dict[str, int], mode: str = "normal") -> str:
    if mode == "destroy":
        return f"Plan: {summary['delete']} to destroy."
    return (f"Plan: {summary['create']} to create, {summary['update']} to update, "
            f"{summary['replace']} to replace, {summary['delete']} to destroy.")


def cost_text(cost: dict[str, Any]) -> str:
    """One resource's estimate: "$1.41/h, at most $11.26 (1 × ml.g5.xlarge, at most 8h (ttl)) · 3
    adapters: $0.47 per adapter-hour, $4.22/h on one endpoint each" ("" without a note)."""
    if not cost.get("note"):
        return ""
    parts = []
    if "hourly_usd" in cost:
        parts.append(f"${cost['hourly_usd']:.2f}/h")
    if "estimate_usd" in cost and "hourly_usd" not in cost:  # a job: the estimate from its work, then the bound
        parts.append(f"~${cost['estimate_usd']:.2f}")
        if cost.get("spot_usd"):
            low, high = cost["spot_usd"]
            parts.append(f"spot ${low:.2f}–${high:.2f}")
    if "max_one_time_usd" in cost:
        parts.append(f"at most ${cost['max_one_time_usd']:.2f}")
    text = f"{', '.join(parts)} ({cost['note']})" if parts else cost["note"]
    if (cost.get("adapters") or 0) > 1 and "per_adapter_hourly_usd" in cost:  # what sharing one endpoint saves
        text += (f" · {cost['adapters']} adapters: ${cost['per_adapter_hourly_usd']:.2f} per adapter-hour, "
                 f"${cost['separate_hourly_usd']:.2f}/h on one endpoint each")
    return text


def cost_line(cost: dict[str, Any]) -> str:
    """The plan's cost estimate in one sentence ("" when nothing is billed)."""
    bits = []
    if cost.get("hourly_usd"):
        bits.append(f"~${cost['hourly_usd']:.2f}/h while deployments run")
    if cost.get("max_one_time_usd"):
        estimate = cost.get("estimate_usd")
        about = f"~${estimate:.2f} estimated, " if estimate is not None and estimate < cost["max_one_time_usd"] else ""
        bits.append(f"{about}at most ${cost['max_one_time_usd']:.2f} for training and TTL-bounded endpoints")
    if cost.get("hourly_usd_saved"):
        bits.append(f"saves ${cost['hourly_usd_saved']:.2f}/h")
    if not bits and cost.get("note"):  # the local provider: nothing billed, and it says so
        return f"Estimated cost: {cost['note']}."
    return f"Estimated cost: {'; '.join(bits)} (on-demand list prices)." if bits else ""


def violation_text(violation: dict[str, Any], policy: dict[str, Any] | None) -> str:
    """One broken guard-rail as a sentence naming the rule, its limit and source, the resource and the
    figure: "policy max_hourly_cost $5.00/h (spec): deployment.api would cost $7.09/h (5 × ml.g5.xlarge)"."""
    source = violation["source"]
    if source == "policy_file":
        source = f"policy file {(policy or {}).get('file') or '(unnamed)'}"
    rule = violation["rule"] + (f" {violation['limit']}" if violation.get("limit") else "")
    subject = violation.get("address") or "this plan"
    text = f"policy {rule} ({source}): {subject} {violation['detail']}"
    if violation["rule"] == "protect":
        text += "; remove it from protect to allow this"
    return text


def fmt_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {fmt_value(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


def attribute_rows(change: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of (symbol, path, before, after, forces) to show for one change."""
    action = change["action"]
    before = flatten(change.get("before") or {})
    after = flatten(change.get("after") or {})
    forcing = set(change.get("replace_paths") or [])
    rows = []
    if action == "create":
        for path, value in after.items():
            if value is None or value == [] or value == {}:
                continue  # unset optional fields: nothing to review
            rows.append({"symbol": "+", "path": path, "before": None, "after": fmt_value(value), "forces": False})
    elif action == "delete":
        for path, value in before.items():
            if value is None or value == [] or value == {}:
                continue
            rows.append({"symbol": "-", "path": path, "before": fmt_value(value), "after": None, "forces": False})
    else:
        for path in change.get("changed_paths") or []:
            b, a = before.get(path), after.get(path)
            symbol = "+" if path not in before else "-" if path not in after else "~"
            rows.append({"symbol": symbol, "path": path, "before": fmt_value(b) if path in before else None,
                         "after": fmt_value(a) if path in after else None, "forces": path in forcing})
    return rows


HYPERPARAMETER_SECTIONS = ("base_model", "method", "lora", "training")  # an adapter's, in the PR table


def hyperparameter_rows(change: dict[str, Any]) -> list[dict[str, str]]:
    """An adapter's changed training settings (base model, method, LoRA, training), before and after."""
    if change["kind"] != "adapter" or change["action"] not in ("update", "replace"):
        return []
    before, after = flatten(change.get("before") or {}), flatten(change.get("after") or {})
    return [{"address": change["address"], "path": path,
             "before": fmt_value(before[path]) if path in before else "—",
             "after": fmt_value(after[path]) if path in after else "—"}
            for path in change.get("changed_paths") or [] if path.split(".")[0] in HYPERPARAMETER_SECTIONS]


def lead_line(plan: dict[str, Any], *, drift: int = 0) -> str:
    """The one line a pull-request comment leads with: resources by action, then the cost —
    "**Plan:** 2 to create, 1 to update, 0 to replace, 0 to destroy · $3.40/h after apply, up to $27.20
    one-time"."""
    if plan["mode"] == "refresh-only":
        return f"**Refresh-only: {drift} to record in state.**" if drift else "**No changes.**"
    if not plan["has_changes"]:
        return "**No changes.**"
    s = plan["summary"]
    counts = (f"{s['delete']} to destroy" if plan["mode"] == "destroy" else
              f"{s['create']} to create, {s['update']} to update, {s['replace']} to replace, {s['delete']} to destroy")
    cost = plan.get("cost") or {}
    bits = []
    if cost.get("hourly_usd"):
        bits.append(f"${cost['hourly_usd']:.2f}/h after apply")
    if cost.get("max_one_time_usd"):
        bits.append(f"up to ${cost['max_one_time_usd']:.2f} one-time")
    if cost.get("hourly_usd_saved"):
        bits.append(f"saves ${cost['hourly_usd_saved']:.2f}/h")
    if not bits and plan.get("provider") == "local" and plan["mode"] != "destroy":
        bits.append("$0: runs on this machine")
    return f"**Plan:** {counts}" + (f" · {', '.join(bits)}" if bits else "")
