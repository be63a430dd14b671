"""`fastuner --help` start-up time against the interpreter's own start-up, measured side by side.

    python bench/cli_startup.py [--runs 20]

Goal: `fastuner --help` under 0.3 s. Heavy libraries (pydantic, networkx, jinja2, torch, boto3) are
imported inside commands, never at start-up; tests/cli/test_commands.py guards that.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    exe = shutil.which("fastuner") or sys.exit("fastuner is not on PATH: pip install -e . first")
    cases = {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "python -c 'import typer'": [sys.executable, "-c", "import typer"],
        "fastuner --help": [exe, "--help"],
        "fastuner plan --help": [exe, "plan", "--help"],
    }
    results = {name: median_seconds(argv, args.runs) for name, argv in cases.items()}
    base = results["python -c pass (baseline)"]
    print(f"{'command':<30}{'median s':>10}{'x python':>10}")
    for name, seconds in results.items():
        print(f"{name:<30}{seconds:>10.3f}{seconds / base:>10.1f}")
    help_s = results["fastuner --help"]
    print(json.dumps({"help_s": round(help_s, 4), "python_s": round(base, 4), "ratio": round(help_s / base, 2),
                      "goal_s": 0.3, "met": help_s < 0.3}))


if __name__ == "__main__":
    main()
