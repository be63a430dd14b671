"""How close fastuner's training estimate comes to what training runs really took.

Replays `bench/fixtures/training_jobs.json` (published figures and fastuner's own recorded GPU
measurement, each with its source; see the fixture's `provenance`) through the estimator the plan uses
(`fastuner.plan.estimate.estimate_seconds`, no calibration): for a `job`, the estimate with start-up
against the job's seconds; for a `loop`, the training loop alone against the measured loop. The error
is (estimated − measured) ÷ measured: negative when the plan expects the run to be shorter (cheaper).
Prints each run, then the median and worst absolute error, for all runs, for the held-out ones (those
the estimator was not fitted on) and for those independent of the fitted table (other sources, GPUs or
setups: the honest test). Goal: median within 20 %.

    python bench/cost_accuracy.py [--fixture PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastuner.plan.estimate import Work, estimate_seconds  # noqa: E402

GOAL = 0.20


def replay(job: dict) -> dict:
    work = Work(tokens=int(job["tokens"]), counted="tokenizer", epochs=float(job["epochs"]),
                params_b=float(job["params_b"]), params_from="fixture", method=job["method"],
                checkpointing=bool(job["gradient_checkpointing"]))
    est = estimate_seconds(work, job["instance_type"], int(job["instance_count"]), int(job["gpus"]), None)
    if est is None:
        raise SystemExit(f"{job['name']}: no estimate for {job['instance_type']}")
    estimated = est.seconds if job["kind"] == "job" else est.loop_seconds
    measured = float(job["seconds"])
    return {"name": job["name"], "kind": job["kind"], "instance_type": job["instance_type"],
            "used_in_fit": bool(job["used_in_fit"]), "independent": not job.get("same_table_as_fit", False),
            "measured_s": measured, "estimated_s": round(estimated, 3),
            "error": (estimated - measured) / measured}


def summary(rows: list[dict]) -> dict:
    errors = [abs(r["error"]) for r in rows]
    worst = max(rows, key=lambda r: abs(r["error"]))
    return {"runs": len(rows), "median_abs_error": statistics.median(errors), "worst_abs_error": abs(worst["error"]),
            "worst": worst["name"], "within_goal": statistics.median(errors) <= GOAL}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", default=str(REPO / "bench" / "fixtures" / "training_jobs.json"))
    parser.add_argument("--json", action="store_true", help="one JSON object with every figure")
    args = parser.parse_args(argv)
    fixture = json.loads(Path(args.fixture).read_text())
    rows = [replay(job) for job in fixture["jobs"]]
    held_out = [r for r in rows if not r["used_in_fit"]]
    independent = [r for r in rows if r["independent"]]
    result = {"all": summary(rows), "held_out": summary(held_out) if held_out else None,
              "independent": summary(independent) if independent else None, "runs": rows,
              "goal_median_abs_error": GOAL}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'run':<44} {'kind':<4} {'instance':<16} {'measured':>10} {'estimated':>10} {'error':>7}")
    for r in rows:
        mark = "*" if r["used_in_fit"] else " "
        print(f"{r['name'][:43]:<43}{mark} {r['kind']:<4} {r['instance_type']:<16} {r['measured_s']:>9.1f}s "
              f"{r['estimated_s']:>9.1f}s {r['error']:>+7.0%}")
    print("* used to fit the estimator's efficiency curve or QLoRA factor")
    for label, s in (("all runs", result["all"]), ("held out", result["held_out"]),
                     ("independent of the fitted table", result["independent"])):
        if s:
            verdict = "meets" if s["within_goal"] else "misses"
            print(f"{label}: {s['runs']} runs, median |error| {s['median_abs_error']:.0%}, worst "
                  f"{s['worst_abs_error']:.0%} ({s['worst']}); {verdict} the {GOAL:.0%} goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
