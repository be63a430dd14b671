"""Plan at scale: 1,000 resources (300 datasets, 500 adapters, 200 deployments).

1. As a user runs it: the median wall and CPU time of `fastuner plan` as a process, on a generated spec with
   its 300 dataset files and an empty state (1,000 to create: the longest output, read from a pipe),
   beside a process that only parses the same YAML (`python -c` + `yaml.load`, libyaml when present).
   Goal: under 1 s, and under 3x the parse-only process; the verdict is printed. Compare CPU seconds on
   a shared machine. Bytecode is cached as an installed package's is (in a temporary pycache folder,
   whatever PYTHONDONTWRITEBYTECODE says), so that no run pays for compiling fastuner.
   `--against DIR` also times `fastuner plan` with DIR's fastuner (another checkout, e.g.
   `git worktree add /tmp/old main`) in alternation with this one, so that machine load hits both alike.
2. In this one process, the planner alone: (a) the baseline, parsing the spec YAML and the state JSON
   (`yaml.load` with libyaml when present, `json.loads`), and (b) the spec loaded with positions and
   validated, the state parsed and validated, and the pure `make_plan` — against a state where
   everything exists and nothing changed, and again with 10 % of the datasets changed (which replaces
   their adapters and updates the deployments serving them). Goal: under 0.5 s; under 3x the baseline.

    python bench/plan_scale.py [--repeat 5] [--runs 5] [--process-only] [--against DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from fastuner.config.loader import load_spec
from fastuner.engine.apply import apply_plan
from fastuner.plan.observed import Observation, ObservationStatus, Observed
from fastuner.plan.planner import make_plan
from fastuner.providers.memory import MemoryWorld, memory_provider
from fastuner.state.local import LocalStateStore
from fastuner.state.store import parse_state

N_DATASETS, N_ADAPTERS, N_DEPLOYMENTS = 300, 500, 200
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def make_spec() -> str:
    lines = ["version: 1", "project: scale", "datasets:"]
    for i in range(N_DATASETS):
        lines += [f"  ds-{i}:", f"    path: data/ds-{i}.jsonl",
                  f"    task: {'classification' if i % 2 else 'text_generation'}",
                  f"    split: {{train: 0.8, validation: 0.1, test: 0.1, seed: {i}}}",
                  f"    tags: {{team: t{i % 7}}}"]
    lines.append("adapters:")
    for i in range(N_ADAPTERS):
        base = f"org/base-{i % 4}"
        lines += [f"  ad-{i}:", f"    base_model: {base}", f"    dataset: ds-{i % N_DATASETS}",
                  "    method: lora", f"    lora: {{r: {8 * (1 + i % 4)}, alpha: 32, dropout: 0.05}}",
                  f"    training: {{epochs: {1 + i % 3}, learning_rate: 2.0e-4, max_seq_len: 2048}}",
                  "    compute: {instance_type: ml.g5.2xlarge, spot: true, max_runtime: 4h, max_wait: 6h}"]
    lines.append("deployments:")
    for i in range(N_DEPLOYMENTS):
        # adapters that share this deployment's base model and task family
        adapters = [f"ad-{j}" for j in range(N_ADAPTERS)
                    if j % 4 == i % 4 and (j % N_DATASETS) % 2 == (i // 4) % 2][i % 5: i % 5 + 3]
        lines += [f"  ep-{i}:", f"    base_model: org/base-{i % 4}", f"    adapters: [{', '.join(adapters)}]",
                  "    compute: {instance_type: ml.g5.xlarge, count: 1}", "    ttl: 30d", "    idle_ttl: 7d"]
    return "\n".join(lines) + "\n"


def write_datasets(folder: Path, rows: int = 200) -> None:
    """Each dataset's JSONL file (valid rows for its task), so that the plan hashes real files."""
    (folder / "data").mkdir(exist_ok=True)
    for i in range(N_DATASETS):
        second = "label" if i % 2 else "target"
        lines = (json.dumps({"input": f"example {j} of dataset {i}", second: f"answer {j % 5}"}) for j in range(rows))
        (folder / "data" / f"ds-{i}.jsonl").write_text("\n".join(lines) + "\n")


GOAL_S, GOAL_RATIO = 1.0, 3.0  # the process
PLANNER_GOAL_S = 0.5  # the planner in-process, with the same ratio


def timed_process(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one process, its output read from a pipe as a CI log or
    `| less` would. CPU time is what to compare on a shared machine, where wall time waits."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def median_times(cases: dict[str, tuple[list[str], dict[str, str]]], cwd: Path,
                 runs: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of each case, the cases run in turn (a, b, c, a, b, c, ...)."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, (argv, env) in cases.items():
            samples[name].append(timed_process(argv, cwd, env))
    return {name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
            for name, s in samples.items()}


def process_env(pycache: Path, tree: Path | None = None) -> dict[str, str]:
    """The environment of a timed process: bytecode cached under `pycache`, and `tree`'s fastuner
    first on the path when given."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def verdict(seconds: float, ratio: float, goal_s: float = GOAL_S) -> str:
    met = seconds < goal_s and ratio < GOAL_RATIO
    return (f"{'met' if met else 'NOT met'} ({seconds:.3f} s {'<' if seconds < goal_s else '>='} {goal_s:g} s, "
            f"{ratio:.2f}x {'<' if ratio < GOAL_RATIO else '>='} {GOAL_RATIO:g}x)")


def bench_process(runs: int, against: Path | None = None) -> dict[str, float]:
    exe = shutil.which("fastuner") or sys.exit("fastuner is not on PATH: pip install -e . first")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "project"
        folder.mkdir()
        (folder / "fastuner.yaml").write_text(make_spec())
        write_datasets(folder)
        env = process_env(Path(tmp) / "pycache")
        parse = [sys.executable, "-c", "import yaml; yaml.load(open('fastuner.yaml'), "
                 "Loader=getattr(yaml, 'CSafeLoader', yaml.SafeLoader))"]
        cases = {"parse": (parse, env), "plan": ([exe, "plan"], env)}
        if against is not None:
            cases["against"] = ([exe, "plan"], process_env(Path(tmp) / "pycache", against))
        outputs = {}
        for name, (argv, case_env) in cases.items():  # also the warm-up run that writes the bytecode
            outputs[name] = subprocess.run(argv, cwd=folder, env=case_env, capture_output=True, text=True,
                                           check=True).stdout
        out = outputs["plan"]
        assert "Plan: 1000 to create" in out, out[-500:]
        if against is not None:
            same = [re.sub(r"\d{4}-\d\d-\d\dT[0-9:.+]+", "(time)", o) for o in (out, outputs["against"])]
            assert same[0] == same[1], f"{against} prints another plan than this checkout"
        times = median_times(cases, folder, runs)
    (base, base_cpu), (plan, plan_cpu) = times["parse"], times["plan"]
    rows = [("python: parse the YAML (baseline)", base, base_cpu), ("fastuner plan (1000 to create)", plan, plan_cpu)]
    if against is not None:
        rows.append((f"  the same with {against}", *times["against"]))
    print(f"{'process (median of ' + str(runs) + ' runs)':<34}{'wall s':>10}{'x baseline':>12}{'CPU s':>10}{'x baseline':>12}")
    for name, wall, cpu in rows:
        print(f"{name:<34}{wall:>10.3f}{wall / base:>12.2f}{cpu:>10.3f}{cpu / base_cpu:>12.2f}")
    print(f"  output: {len(out.splitlines()):,} lines, {len(out) / 1e6:.1f} MB")
    print(f"  goal (under {GOAL_S:g} s and under {GOAL_RATIO:g}x the parse): CPU {verdict(plan_cpu, plan_cpu / base_cpu)}; "
          f"wall {verdict(plan, plan / base)}")
    result = {"process_parse_s": round(base, 4), "process_plan_s": round(plan, 4),
              "process_ratio": round(plan / base, 2), "process_parse_cpu_s": round(base_cpu, 4),
              "process_plan_cpu_s": round(plan_cpu, 4), "process_cpu_ratio": round(plan_cpu / base_cpu, 2),
              "process_goal_s": GOAL_S, "process_goal_ratio": GOAL_RATIO,
              "process_goal_met_cpu": plan_cpu < GOAL_S and plan_cpu / base_cpu < GOAL_RATIO,
              "process_goal_met_wall": plan < GOAL_S and plan / base < GOAL_RATIO}
    if against is not None:
        result |= {"against_plan_s": round(times["against"][0], 4), "against_plan_cpu_s": round(times["against"][1], 4)}
    return result


def sources(changed: int = 0) -> dict[str, str]:
    return {f"ds-{i}": (f"{i:064x}" if i >= changed else f"{i + 10**6:064x}") for i in range(N_DATASETS)}


def build_state(spec_path: Path, folder: Path) -> tuple[Path, dict]:
    """Apply the spec with the in-memory provider to get a realistic state where everything exists."""
    spec = load_spec(spec_path)
    store = LocalStateStore(folder / "state.json")
    from fastuner.state.model import empty_state

    state = empty_state("scale", "default")
    plan = make_plan(spec, state, Observed(dataset_sources=sources(), training_code_hash="code"), NOW)
    world = MemoryWorld()
    result = apply_plan(plan, store, memory_provider(world), spec_dir=folder, parallelism=32, clock=lambda: NOW)
    assert result.ok
    observations = {a: Observation(ObservationStatus.READY, outputs=obj["outputs"]) for a, obj in
                    ((a, world.objects[rs.physical_name]) for a, rs in store.read().resources.items())}
    return folder / "state.json", observations


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="in-process repetitions of each planner case")
    parser.add_argument("--runs", type=int, default=5, help="process runs of each command")
    parser.add_argument("--process-only", action="store_true", help="only the process timings (part 1)")
    parser.add_argument("--against", type=Path, metavar="DIR",
                        help="also time `fastuner plan` with DIR's fastuner, in alternation with this one")
    args = parser.parse_args()
    process = bench_process(args.runs, args.against)
    if args.process_only:
        print(json.dumps(process))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec_path = folder / "fastuner.yaml"
        spec_text = make_spec()
        spec_path.write_text(spec_text)
        state_path, observations = build_state(spec_path, folder)
        state_text = state_path.read_text()
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        def baseline() -> None:
            yaml.load(spec_text, Loader=loader)
            json.loads(state_text)

        def plan(changed: int):
            def run():
                spec = load_spec(spec_path)
                state = parse_state(state_text, str(state_path))
                observed = Observed(resources=observations, dataset_sources=sources(changed),
                                    training_code_hash="code")
                return make_plan(spec, state, observed, NOW)
            return run

        unchanged = plan(0)()
        assert not unchanged.has_changes, unchanged.summary()
        changed_plan = plan(N_DATASETS // 10)()
        base = timed(baseline, args.repeat)
        t0 = timed(plan(0), args.repeat)
        t10 = timed(plan(N_DATASETS // 10), args.repeat)
        print(f"resources: {len(unchanged.changes)} ({N_DATASETS} datasets, {N_ADAPTERS} adapters, "
              f"{N_DEPLOYMENTS} deployments); spec {len(spec_text) / 1e3:.0f} kB, state {len(state_text) / 1e6:.1f} MB")
        print(f"{'case':<34}{'seconds':>10}{'x baseline':>12}")
        print(f"{'parse YAML + state JSON (baseline)':<34}{base:>10.3f}{1:>12.2f}")
        print(f"{'plan, nothing changed':<34}{t0:>10.3f}{t0 / base:>12.2f}")
        print(f"{'plan, 10% of datasets changed':<34}{t10:>10.3f}{t10 / base:>12.2f}")
        print(f"  10% changed: {changed_plan.summary()}")
        print(f"  goal (under {PLANNER_GOAL_S:g} s and under {GOAL_RATIO:g}x the parse): nothing changed "
              f"{verdict(t0, t0 / base, PLANNER_GOAL_S)}; 10% changed {verdict(t10, t10 / base, PLANNER_GOAL_S)}")
        print(json.dumps({**process, "baseline_s": round(base, 4), "plan_s": round(t0, 4), "plan_changed_s": round(t10, 4),
                          "ratio": round(t0 / base, 2), "ratio_changed": round(t10 / base, 2),
                          "goal_s": PLANNER_GOAL_S, "goal_ratio": GOAL_RATIO}))


if __name__ == "__main__":
    main()
