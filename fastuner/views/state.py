"""The state overview (`fastuner show` without a plan): one row per resource.

A table when every cell fits on one line; otherwise, on a narrow terminal, one block per resource, so
that nothing is folded: an address, a physical name or a URL is never cut across lines (a terminal
user copies them), and long summaries wrap between words.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {"ready": "green", "pending": "cyan", "failed": "red", "expired": "dim"}
COLUMNS = (("address", "address"), ("status", "status"), ("physical name", "physical_name"),
           ("expires", "expires"), ("summary", "summary"))
INDENT = "    "
UNBOUNDED = 1_000_000  # measure the table's natural width, not one already clamped to the console


def render_state_overview(title: str, rows: list[dict[str, Any]], console: Console) -> None:
    """`rows`: dicts with address, status, physical_name, expires and summary (plain strings)."""
    table = _table(title, rows)
    if Measurement.get(console, console.options.update_width(UNBOUNDED), table).maximum <= console.width:
        console.print(table)
        return
    console.print(Text(title, style="italic"), soft_wrap=True)
    for row in rows:
        console.print()
        head = Text.assemble((row["address"], "bold"), "  ", _status(row["status"]))
        if row["expires"]:
            head.append(f"  expires {row['expires']}")
        if head.cell_len <= console.width:
            console.print(head, soft_wrap=True)
        else:  # the address alone on its line, whole
            console.print(Text(row["address"], style="bold"), soft_wrap=True)
            _print_wrapped(console, Text.assemble(_status(row["status"]), f"  expires {row['expires']}"
                                                  if row["expires"] else ""))
        for value in (row["physical_name"], row["summary"]):
            if value:
                _print_wrapped(console, Text(value))


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for heading, _ in COLUMNS:
        table.add_column(heading)
    for row in rows:
        table.add_row(*(_status(row[key]) if key == "status" else Text(row[key]) for _, key in COLUMNS))
    return table


def _status(status: str) -> Text:
    """Styled as a span, not as the cell's style, so that a table pads the cell unstyled."""
    return Text.assemble((status, STATUS_STYLE.get(status, "white")))


def _print_wrapped(console: Console, text: Text) -> None:
    """Indented and wrapped between words to the console's width; a word longer than a line (a URL,
    a physical name) is left whole on its own line, for the terminal to show as it will."""
    width = max(console.width - len(INDENT), 20)
    words = text.split(" ")
    line = Text(INDENT)
    for word in words:
        if line.cell_len > len(INDENT) and line.cell_len + 1 + word.cell_len > width + len(INDENT):
            console.print(line, soft_wrap=True)
            line = Text(INDENT)
        if line.cell_len > len(INDENT):
            line.append(" ")
        line.append_text(word)
    console.print(line, soft_wrap=True)
