"""`python -m tests.stress [CATEGORY …] [--trials N] [--seed S] [--summary]` — see tests/stress/__init__.py."""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

from tests.stress import CATEGORIES, Report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress", description=__doc__)
    parser.add_argument("categories", nargs="*", metavar="CATEGORY", help=f"any of {', '.join(CATEGORIES)} (all by default)")
    parser.add_argument("--trials", type=int, default=100, help="trials per scenario (fuzzing: cases per target ÷ 100)")
    parser.add_argument("--seed", type=int, default=0, help="the first trial's seed (trial i uses seed + i)")
    parser.add_argument("--summary", action="store_true", help="print only the table at the end")
    parser.add_argument("--workdir", type=Path, default=None, help="where trials run (a temporary folder by default)")
    args = parser.parse_args(argv)
    unknown = [c for c in args.categories if c not in CATEGORIES]
    if unknown:
        parser.error(f"unknown category {', '.join(unknown)}; choose from {', '.join(CATEGORIES)}")
    chosen = args.categories or list(CATEGORIES)
    reports: list[tuple[str, Report]] = []
    seconds: dict[str, float] = {}
    defects: dict[str, list[str]] = {}

    def log(text: str) -> None:
        if not args.summary:
            print(text, flush=True)

    with tempfile.TemporaryDirectory(prefix="fastuner-stress-") as tmp:
        root = args.workdir or Path(tmp)
        for name in chosen:
            module = importlib.import_module(f"tests.stress.{CATEGORIES[name]}")
            defects[name] = list(getattr(module, "DEFECTS", []))
            started = time.monotonic()
            work = root / name
            work.mkdir(parents=True, exist_ok=True)
            reports.extend((name, report) for report in module.run(args.trials, args.seed, work, log=log))
            seconds[name] = time.monotonic() - started
    print(table(reports, defects, seconds))
    return 0 if all(r.ok for _, r in reports) else 1


def table(reports: list[tuple[str, Report]], defects: dict[str, list[str]], seconds: dict[str, float]) -> str:
    head = f"{'scenario':44} {'trials':>7} {'passed':>7} {'faults':>7} {'cases':>7}"
    lines = [head, "-" * len(head)]
    for _, r in reports:
        lines.append(f"{r.scenario:44} {r.trials:>7} {r.passed:>7} {r.faults:>7} {r.cases:>7}")
    total = [sum(getattr(r, k) for _, r in reports) for k in ("trials", "passed", "faults", "cases")]
    lines.append("-" * len(head))
    lines.append(f"{'total':44} {total[0]:>7} {total[1]:>7} {total[2]:>7} {total[3]:>7}")
    lines.append("time: " + ", ".join(f"{name} {secs:.0f} s" for name, secs in seconds.items()))
    found = sum(len(v) for v in defects.values())
    lines.append(f"defects found and fixed: {found}")
    for name, items in defects.items():
        lines.extend(f"  {name}: {d}" for d in items)
    for _, r in reports:
        lines.extend(f"FAILED {r.scenario}: {f}" for f in r.failures)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
