"""What a new dataset version changes, for reviewers: rows and the label mix, before and after.

Pure: the figures before are the ones state recorded when the old version was stored (`counts`,
`labels`), the figures after are those the CLI measured on the changed file (`Observed.dataset_figures`;
plan scans only datasets whose file changed, so an unchanged project plans as fast as before). State keeps
counts, not the rows themselves, so the difference in rows is a net one: 40 removed and 100 added read as
+60. When the file could not be measured (it has errors) or the old version recorded nothing, the diff
says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIGURES = ("records", "distinct", "duplicates")


def figures_of(counts: Mapping[str, Any] | None, labels: Mapping[str, int] | None) -> dict[str, Any] | None:
    """The figures a diff compares, from a scan's or a stored version's `counts` and `labels`."""
    if not counts:
        return None
    out: dict[str, Any] = {k: int(counts[k]) for k in FIGURES if k in counts}
    out["labels"] = dict(labels) if labels else None
    return out


def dataset_diff(recorded: Mapping[str, Any] | None, now: Mapping[str, Any] | None) -> dict[str, Any]:
    """`recorded`: the old version's outputs in state; `now`: the changed file's figures (or
    `{"error": ...}` when it could not be read). Shares are fractions of the distinct records that
    carry a label; a shift is in percentage points."""
    before = figures_of((recorded or {}).get("counts"), (recorded or {}).get("labels"))
    error = (now or {}).get("error")
    after = None if now is None or error else {k: v for k, v in now.items() if k in (*FIGURES, "labels")}
    out: dict[str, Any] = {"before": before, "after": after, "rows_net": None, "labels": [],
                           "largest_shift_pp": None, "unknown": None}
    if after is None:
        out["unknown"] = error or "the changed file was not measured; `fastuner validate` shows its figures"
        return out
    if before is None:
        out["unknown"] = "the stored version recorded no figures"
        return out
    out["rows_net"] = after.get("distinct", 0) - before.get("distinct", 0)
    b_labels, a_labels = before.get("labels") or {}, after.get("labels") or {}
    if b_labels or a_labels:
        b_total, a_total = sum(b_labels.values()) or 1, sum(a_labels.values()) or 1
        rows = []
        for label in sorted(set(b_labels) | set(a_labels)):
            b, a = b_labels.get(label, 0), a_labels.get(label, 0)
            b_share, a_share = b / b_total, a / a_total
            rows.append({"label": label, "before": b, "after": a, "before_share": round(b_share, 4),
                         "after_share": round(a_share, 4), "shift_pp": round((a_share - b_share) * 100, 1)})
        out["labels"] = rows
        out["largest_shift_pp"] = max((abs(r["shift_pp"]) for r in rows), default=0.0)
    return out
