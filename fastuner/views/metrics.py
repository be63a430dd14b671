"""`fastuner show deployment.NAME`: the deployment's record and what it served (the dict `cli/show.py`
builds around a `MetricsSource` answer; `--json` prints that dict itself)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fastuner.views.state import STATUS_STYLE

SOURCES = {"cloudwatch": "CloudWatch", "server": "the server's /metrics"}
SPECIAL = {None: "base model", "*": "whole endpoint", "__unknown__": "unknown adapters (404)"}


def render_deployment(data: dict[str, Any], console: Console) -> None:
    style = STATUS_STYLE.get(data["status"], "white")
    head = Text.assemble((data["address"], "bold"), "  ", (data["status"], style))
    if data.get("expires_at"):
        head.append(f"  expires {data['expires_at']}")
    console.print(head, soft_wrap=True)
    if data.get("endpoint"):
        mode = f" ({data['mode']} mode)" if data.get("mode") else ""
        console.print(f"  endpoint  {escape(str(data['endpoint']))}{escape(mode)}", highlight=False, soft_wrap=True)
    console.print(f"  adapters  {escape(', '.join(data.get('adapters') or []) or 'none (the base model only)')}",
                  highlight=False, soft_wrap=True)
    metrics = data.get("metrics")
    console.print()
    if metrics is None:
        console.print(f"No metrics: {escape(data['address'])} is {escape(data['status'])}.", highlight=False)
        return
    if metrics["source"] == "server":
        title = f"Since the server started ({metrics.get('since') or 'unknown'}), from {SOURCES['server']}"
    else:
        title = f"Last {data['window']} ({metrics['since']} to {metrics['until']}), from {SOURCES['cloudwatch']}"
    table = Table(title=escape(title), title_justify="left")
    for heading in ("adapter", "invocations", "4xx", "5xx", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(heading, justify="left" if heading == "adapter" else "right")
    cached = any(row.get("cache") for row in metrics["adapters"])
    if cached:
        table.add_column("cache hits / misses / loads", justify="right")
    rows = list(metrics["adapters"]) + ([metrics["endpoint"]] if metrics.get("endpoint") else [])
    for row in rows:
        name = SPECIAL.get(row["adapter"], row["adapter"])
        cells = [Text(name, style="dim" if row["adapter"] in SPECIAL else ""), f"{row['invocations']:,}",
                 f"{row['errors_4xx']:,}", f"{row['errors_5xx']:,}",
                 *(_ms(row["latency_ms"].get(k)) for k in ("p50", "p95", "p99"))]
        if cached:
            cache = row.get("cache")
            cells.append(f"{cache['hits']:,} / {cache['misses']:,} / {cache['loads']:,}" if cache else "")
        table.add_row(*cells)
    console.print(table)
    cache = metrics.get("cache")
    if cache:
        evictions = f", {cache['evictions']:,} evictions" if "evictions" in cache else ""
        console.print(f"Adapter cache: {cache['hits']:,} hits, {cache['misses']:,} misses, {cache['loads']:,} loads"
                      f"{evictions}.", highlight=False)
    for note in metrics.get("notes") or []:
        console.print(Text(note, style="dim"), soft_wrap=True)


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if value >= 1 else f"{value:.2f}"
