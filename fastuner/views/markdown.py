"""The Markdown view of a plan for pull-request comments (Jinja2 template `templates/plan.md.j2`).

The summary line comes first and the per-resource diffs are collapsible. GitHub refuses comments over
65,536 characters, so the output is kept under `LIMIT`: details are dropped from the end with a note
saying how many were left out and how to see them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from fastuner.views.words import (
    HEADINGS,
    SYMBOLS,
    attribute_rows,
    cost_line,
    cost_text,
    reason_text,
    summary_line,
    violation_text,
)

LIMIT = 65_000
ICONS = {True: "📝", False: "✅"}
REFUSED_ICON = "🚫"  # the plan breaks the policy: apply refuses it


def templates_dir() -> Path:
    """`templates/` at the repository root (installed alongside the package as fastuner/_templates)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_templates", here.parent / "templates"):
        if (candidate / "plan.md.j2").exists():
            return candidate
    raise FileNotFoundError("fastuner's templates folder is missing from this installation")


def _env() -> Environment:
    return Environment(loader=FileSystemLoader(templates_dir()), undefined=StrictUndefined,
                       autoescape=False, keep_trailing_newline=True, trim_blocks=False)


def _diff_rows(change: dict[str, Any]) -> list[str]:
    rows = []
    for r in attribute_rows(change):
        forces = "  # forces replacement" if r["forces"] else ""
        if r["symbol"] == "~":
            rows.append(f"! {r['path']} = {r['before']} -> {r['after']}{forces}")
        elif r["symbol"] == "+":
            rows.append(f"+ {r['path']} = {r['after']}{forces}")
        else:
            rows.append(f"- {r['path']} = {r['before']}{forces}")
    return rows


def _summary(plan: dict[str, Any], drift: list[dict[str, Any]]) -> str:
    if plan["mode"] == "refresh-only":
        return f"Refresh-only: {len(drift)} to record in state." if drift else "No changes."
    return summary_line(plan["summary"], plan["mode"]) if plan["has_changes"] else "No changes."


def render_markdown(plan: dict[str, Any], *, limit: int = LIMIT) -> str:
    changes = [c for c in plan["changes"] if c["action"] != "no-op"]
    by_address = {c["address"]: c for c in plan["changes"]}
    rows = [{"symbol": SYMBOLS[c["action"]], "address": c["address"], "action": c["action"],
             "why": reason_text(c, by_address) or "—", "deposed": c.get("deposed")} for c in changes]
    detailed = [{"symbol": SYMBOLS[c["action"]], "address": c["address"], "heading": HEADINGS[c["action"]],
                 "rows": _diff_rows(c), "expires_at": c.get("expires_at"), "cost": cost_text(c.get("cost") or {})}
                for c in changes]
    expired = [{"address": c["address"], "why": reason_text(c)} for c in plan["changes"]
               if c["reason"] == "noop_because_expired"]
    drift = [{"address": a, "detail": d.get("detail") or f"now {d.get('status')}"}
             for a, d in sorted((plan.get("refresh") or {}).items())] if plan["mode"] == "refresh-only" else []
    context = {
        "plan": plan, "changes": rows, "detailed": detailed, "expired": expired, "drift": drift,
        "summary": _summary(plan, drift),
        "icon": REFUSED_ICON if plan.get("violations") else ICONS[bool(plan["has_changes"])],
        "cost_line": cost_line(plan.get("cost") or {}),
        "blocked": [c for c in changes if c.get("blocked")],
        "violations": [violation_text(v, plan.get("policy")) for v in plan.get("violations") or []],
    }
    template = _env().get_template("plan.md.j2")
    text = template.render(**context)
    dropped = 0
    while len(text) > limit and (context["detailed"] or context["changes"]):
        if context["detailed"]:
            context["detailed"] = context["detailed"][:-1]
        else:
            context["changes"] = context["changes"][:-1]
        dropped += 1
        text = template.render(**context)
        if dropped > 5 and len(text) > limit:  # many large sections: drop faster
            cut = max(1, len(context["detailed"]) // 4)
            context["detailed"] = context["detailed"][:-cut]
            dropped += cut
            text = template.render(**context)
    if dropped:
        note = (f"\n> [!NOTE]\n> Truncated to fit a pull-request comment: {dropped} section(s) left out. "
                "Run `fastuner show PLANFILE` for the full plan.\n")
        text = text[: limit - len(note)] + note if len(text) + len(note) > limit else text + note
    return text
