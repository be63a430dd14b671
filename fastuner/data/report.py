"""The diagnostics of a dataset scan: bad rows (errors), and what was skipped or adjusted (warnings).

Every diagnostic names the dataset file and, where there is one, the row (the line in the file, from 1)
and the column (in characters, from 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fastuner.data.rows import BlockScan, RowError
from fastuner.data.rules import SPLITS
from fastuner.data.split import Deduplication
from fastuner.errors import Diagnostic, DiagnosticsError, Source

MAX_REPORTED_ERRORS = 20
_MAX_SPLIT_WARNINGS = 20


@dataclass(frozen=True)
class Reporter:
    file: str
    address: str | None

    def error(self, summary: str, detail: str = "", line: int | None = None,
              column: int | None = None) -> DiagnosticsError:
        return DiagnosticsError([self.diagnostic(summary, detail, line, column)])

    def diagnostic(self, summary: str, detail: str = "", line: int | None = None,
                   column: int | None = None) -> Diagnostic:
        return Diagnostic.error(summary, detail, source=Source(self.file, line, column), address=self.address)

    def warning(self, summary: str, detail: str = "", line: int | None = None) -> Diagnostic:
        return Diagnostic.warning(summary, detail, source=Source(self.file, line), address=self.address)


def raise_row_errors(results: Sequence[BlockScan], block_lines: Sequence[int], report: Reporter) -> None:
    total = sum(r.n_errors for r in results)
    if not total:
        return
    diagnostics = []
    for result, first_line in zip(results, block_lines, strict=True):
        for error in result.errors:
            if len(diagnostics) == MAX_REPORTED_ERRORS:
                break
            diagnostics.append(_row_diagnostic(error, first_line, report))
    if total > len(diagnostics):
        more = total - len(diagnostics)
        diagnostics.append(report.diagnostic(
            f"… and {more:,} more bad row{plural(more)} ({total:,} in all)",
            f"only the first {MAX_REPORTED_ERRORS} are listed; fix them and run again to see the rest"))
    raise DiagnosticsError(diagnostics)


def _row_diagnostic(error: RowError, first_line: int, report: Reporter) -> Diagnostic:
    line = first_line + error.line
    detail = error.detail.replace("of the row", f"of row {line}")
    return report.diagnostic(error.summary, detail, line, error.column)


def too_few(n_records: int, n_distinct: int, min_rows: int) -> tuple[str, str]:
    need = f"at least {min_rows:,} distinct rows are needed"
    if n_distinct == n_records:
        return (f"only {n_distinct:,} row{plural(n_distinct)}; {need}", "add rows, or lower the minimum (min_rows)")
    if n_distinct == 1:
        return (f"all {n_records:,} rows are duplicates of 1 distinct record; {need}",
                "every row normalises to the same record (fields other than the task's are ignored, "
                "whitespace is stripped)")
    return (f"only {n_distinct:,} distinct records in {n_records:,} rows "
            f"({n_records - n_distinct:,} are duplicates); {need}",
            "duplicates are rows whose normalised records are equal; the first occurrence is kept")


def row_warnings(results: Sequence[BlockScan], block_lines: Sequence[int], dups: Deduplication, second: str,
                  report: Reporter) -> list[Diagnostic]:
    def first_line(attribute: str) -> int | None:
        for result, base in zip(results, block_lines, strict=True):
            line = getattr(result, attribute)
            if line is not None:
                return base + line
        return None

    warnings = []
    n_blank = sum(r.n_blank for r in results)
    if n_blank:
        first_blank = next(base + r.blank_lines[0] for r, base in zip(results, block_lines, strict=True)
                           if r.blank_lines)
        warnings.append(report.warning(f"skipped {n_blank:,} blank line{plural(n_blank)}",
                                       "blank lines hold no record", first_blank))
    known = ("input", second)
    fields: dict[str, int] = {}
    n_extra = 0
    for result in results:
        for names, count in result.field_sets.items():
            n_extra += count
            for name in names:
                if name not in known:
                    fields[name] = fields.get(name, 0) + count
    if n_extra:
        ranked = sorted(fields.items(), key=lambda item: (-item[1], item[0]))
        listed = ", ".join(f'"{name}" ({count:,})' for name, count in ranked[:5])
        if len(ranked) > 5:
            listed += f" and {len(ranked) - 5} more"
        warnings.append(report.warning(
            f"ignored fields other than \"input\" and \"{second}\" in {n_extra:,} row{plural(n_extra)}",
            f"fields ignored: {listed}", first_line("first_extra")))
    n_int = sum(r.n_int_labels for r in results)
    if n_int:
        warnings.append(report.warning(
            f"converted {n_int:,} integer label{plural(n_int)} to strings",
            'a label 3 becomes "3"; write labels as strings to silence this', first_line("first_int_label")))
    if dups.count:
        duplicate, original = (line_of(g, results, block_lines) for g in dups.example)
        warnings.append(report.warning(
            f"removed {dups.count:,} duplicate row{plural(dups.count)} (the first occurrence of each record is kept)",
            f"e.g. row {duplicate} repeats row {original} after normalisation", duplicate))
    return warnings


def split_warnings(label_names: list[str], stratum_sizes: list[int], sizes: list[tuple[int, int, int]],
                    fractions, report: Reporter) -> list[Diagnostic]:
    active = [name for name, f in zip(SPLITS, fractions, strict=True) if f > 0]
    short = []
    for i, size in enumerate(sizes):
        missing = [name for k, name in enumerate(SPLITS) if fractions[k] > 0 and size[k] == 0]
        if missing and stratum_sizes[i]:
            short.append((label_names[i] if label_names else None, stratum_sizes[i], missing))
    short.sort(key=lambda item: (item[0] or ""))
    warnings = []
    for name, count, missing in short[:_MAX_SPLIT_WARNINGS]:
        what = f'label "{name}" has' if name is not None else "the dataset has"
        warnings.append(report.warning(
            f"{what} only {count} distinct record{plural(count)}, too few for {len(active)} splits: "
            f"none in {' or '.join(missing)}",
            "add records with this label, or accept that it is not evaluated there"
            if name is not None else "add records"))
    if len(short) > _MAX_SPLIT_WARNINGS:
        more = len(short) - _MAX_SPLIT_WARNINGS
        warnings.append(report.warning(f"… and {more} more label{plural(more)} missing from some split"))
    return warnings


def line_of(g: int, results: Sequence[BlockScan], block_lines: Sequence[int]) -> int:
    for result, base in zip(results, block_lines, strict=True):
        if g < result.n_valid:
            for j, line in enumerate(row_lines(result.n_lines, result.blank_lines)):
                if j == g:
                    return base + line
        g -= result.n_valid
    raise IndexError(g)


def row_lines(n_lines: int, blank_lines: Sequence[int]):
    """The lines (1-based, within a block) holding rows, in a block without bad rows."""
    blank = set(blank_lines)
    return (line for line in range(1, n_lines + 1) if line not in blank)


def plural(n: int) -> str:
    return "" if n == 1 else "s"
