"""The Markdown view of a plan for pull-request comments (Jinja2 template `templates/plan.md.j2`).

A reviewer reads it top down: one line with the resources by action and the cost, the table of actions
with why each happens (and which paths force a replacement), then what changes in the data (rows and
the label mix of each new dataset version), the hyperparameters that change (before and after), the
expiries, and the full diff of each resource folded in `<details>`.

GitHub refuses comments over 65,536 characters, so the text is kept under `LIMIT`. What goes first is
what is cut first (`CUTS`): the folded diffs, then the label tables, hyperparameter rows, expiries, and
only then rows of the table of actions; the lead line is always kept, and a note at the end says what
was left out. Each part is cut by a binary search on how many of its items fit (a dozen renders even
for thousands of resources).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from fastuner.views.words import (
    DERIVED_PATHS,
    HEADINGS,
    SYMBOLS,
    attribute_rows,
    cost_text,
    hyperparameter_rows,
    lead_line,
    reason_text,
    violation_text,
)

LIMIT = 65_000
ICONS = {True: "📝", False: "✅"}
REFUSED_ICON = "🚫"  # the plan breaks the policy: apply refuses it
# The cuttable parts, first cut first, with how the note names what was left out of each.
CUTS = (("detailed", "the full diff of {n} resource(s)"),
        ("label_tables", "the label tables of {n} dataset(s)"),
        ("hyperparameters", "{n} hyperparameter change(s)"),
        ("expiries", "{n} expiry line(s)"),
        ("changes", "{n} row(s) of the table of actions"))
NOTE_ROOM = 600  # kept free for the note saying what was cut


def templates_dir() -> Path:
    """`templates/` at the repository root (installed alongside the package as fastuner/_templates)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_templates", here.parent / "templates"):
        if (candidate / "plan.md.j2").exists():
            return candidate
    raise FileNotFoundError("fastuner's templates folder is missing from this installation")


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(templates_dir()), undefined=StrictUndefined,
                      autoescape=False, keep_trailing_newline=True, trim_blocks=False)
    env.filters["code"] = code_cell
    return env


def code_cell(value: Any) -> str:
    """User text as a code span in a table cell: verbatim (HTML escapes would show as typed inside
    backticks), with no backtick to end it early, no line break, and `|` escaped as GFM tables want."""
    text = str(value).replace("`", "'").replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    return f"`{text}`"


def render_markdown(plan: dict[str, Any], *, limit: int = LIMIT) -> str:
    template = _env().get_template("plan.md.j2")
    context = _context(plan)
    text = template.render(**context)
    if len(text) <= limit:
        return text
    cut: list[str] = []
    budget = limit - NOTE_ROOM
    for key, words in CUTS:
        items = context[key]
        if not items:
            continue
        kept = _fit(lambda n, k=key, i=items: len(template.render(**{**context, k: i[:n]})), len(items), budget)
        if kept < len(items):
            cut.append(words.format(n=len(items) - kept))
            context[key] = items[:kept]
        if len(template.render(**context)) <= budget:
            break
    context["truncated"] = (f"Truncated to fit a pull-request comment ({limit:,} characters): left out "
                            f"{'; '.join(cut)}. `fastuner show PLANFILE` shows the whole plan.")
    text = template.render(**context)
    return text if len(text) <= limit else text[:limit]  # unreachable in practice: the lead alone is short


def _fit(size, total: int, budget: int) -> int:
    """The largest n in [0, total] with size(n) <= budget (size grows with n); 0 when none fits."""
    lo, hi = 0, total
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _context(plan: dict[str, Any]) -> dict[str, Any]:
    changes = [c for c in plan["changes"] if c["action"] != "no-op"]
    by_address = {c["address"]: c for c in plan["changes"]}
    drift = [{"address": a, "detail": d.get("detail") or f"now {d.get('status')}"}
             for a, d in sorted((plan.get("refresh") or {}).items())] if plan["mode"] == "refresh-only" else []
    datasets = [_dataset(c) for c in changes if c.get("dataset_diff")]
    return {
        "plan": plan,
        "lead": lead_line(plan, drift=len(drift)),
        "icon": REFUSED_ICON if plan.get("violations") else ICONS[bool(plan["has_changes"])],
        "violations": [violation_text(v, plan.get("policy")) for v in plan.get("violations") or []],
        "blocked": [c for c in changes if c.get("blocked")],
        "drift": drift,
        "changes": [_row(c, by_address) for c in changes],
        "datasets": datasets,
        "label_tables": [d for d in datasets if d["labels"]],
        "hyperparameters": [r for c in changes for r in hyperparameter_rows(c)],
        "expiries": [{"address": c["address"], "expires_at": c["expires_at"], "lifetime": _lifetime(c)}
                     for c in changes if c.get("expires_at") and c["action"] in ("create", "update", "replace")],
        "detailed": [_detail(c) for c in changes],
        "expired": [{"address": c["address"], "why": reason_text(c)} for c in plan["changes"]
                    if c["reason"] == "noop_because_expired"],
        "truncated": "",
    }


def _row(change: dict[str, Any], by_address: dict[str, dict[str, Any]]) -> dict[str, Any]:
    # the paths that force a replacement, where the reason does not name them already
    named = change["reason"] == "replace_because_cannot_update"
    forced = [] if named or change["action"] != "replace" else [
        p for p in change.get("replace_paths") or [] if p.split(".")[0] not in DERIVED_PATHS]
    return {"symbol": SYMBOLS[change["action"]], "address": change["address"], "action": change["action"],
            "why": reason_text(change, by_address) or "—", "deposed": change.get("deposed"), "forced": forced}


def _detail(change: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for r in attribute_rows(change):
        forces = "  # forces replacement" if r["forces"] else ""
        if r["symbol"] == "~":
            rows.append(f"! {r['path']} = {r['before']} -> {r['after']}{forces}")
        elif r["symbol"] == "+":
            rows.append(f"+ {r['path']} = {r['after']}{forces}")
        else:
            rows.append(f"- {r['path']} = {r['before']}{forces}")
    return {"symbol": SYMBOLS[change["action"]], "address": change["address"], "heading": HEADINGS[change["action"]],
            "rows": rows, "expires_at": change.get("expires_at"), "cost": cost_text(change.get("cost") or {})}


def _dataset(change: dict[str, Any]) -> dict[str, Any]:
    """A new dataset version in words: "200 → 260 rows (+60 net)", the largest label shift, and a
    row per label (count and share before and after, the shift in percentage points)."""
    diff = change["dataset_diff"]
    before, after = diff.get("before") or {}, diff.get("after") or {}
    if diff.get("unknown"):
        was = f"was {before['distinct']:,} rows; " if "distinct" in before else ""
        return {"address": change["address"], "summary": f"{was}new figures unknown: {diff['unknown']}", "labels": []}
    net = diff["rows_net"]
    parts = [f"{before['distinct']:,} → {after['distinct']:,} rows ({net:+,} net)"]
    if after.get("duplicates"):
        parts.append(f"{after['duplicates']:,} duplicate(s) dropped")
    labels = diff.get("labels") or []
    if labels:
        top = max(labels, key=lambda r: abs(r["shift_pp"]))
        parts.append(f"largest label shift {top['shift_pp']:+.1f} pp (`{top['label']}`)" if top["shift_pp"]
                     else "label mix unchanged")
    rows = [{"label": r["label"], "before": f"{r['before']:,} ({r['before_share']:.1%})",
             "after": f"{r['after']:,} ({r['after_share']:.1%})", "shift": f"{r['shift_pp']:+.1f} pp"} for r in labels]
    return {"address": change["address"], "summary": " · ".join(parts), "labels": rows}


def _lifetime(change: dict[str, Any]) -> str:
    after = change.get("after") or {}
    bits = [f"{key} {after[key]}" for key in ("ttl", "idle_ttl") if after.get(key)]
    return ", ".join(bits)
