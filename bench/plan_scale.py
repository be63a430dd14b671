"""Plan at scale: 1,000 resources (300 datasets, 500 adapters, 200 deployments).

1. As a user runs it: the median wall and CPU time of `fastuner plan` as a process, on a generated spec with
   its 300 dataset files and an empty state (1,000 to create: the longest output, read from a pipe),
   beside a process that only parses the same YAML (`python -c` + `yaml.load`, libyaml when present).
   Goal: under 1 s, and under 3x the parse-only process. Compare CPU seconds on a shared machine.
2. In this one process, the planner alone: (a) the baseline, parsing the spec YAML and the state JSON
   (`yaml.load` with libyaml when present, `json.loads`), and (b) the spec loaded with positions and
   validated, the state parsed and validated, and the pure `make_plan` — against a state where
   everything exists and nothing changed, and again with 10 % of the datasets changed (which replaces
   their adapters and updates the deployments serving them). Goal: under 0.5 s; under 3x the baseline.

    python bench/plan_scale.py [--repeat 5] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
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


def median_times(argv: list[str], cwd: Path, runs: int) -> tuple[float, float]:
    """Median wall and CPU (user + system) seconds of a process, its output read from a pipe as a CI
    log or `| less` would. CPU time is what to compare on a shared machine, where wall time waits."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def bench_process(runs: int) -> dict[str, float]:
    exe = shutil.which("fastuner") or sys.exit("fastuner is not on PATH: pip install -e . first")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "fastuner.yaml").write_text(make_spec())
        write_datasets(folder)
        parse = [sys.executable, "-c", "import yaml; yaml.load(open('fastuner.yaml'), "
                 "Loader=getattr(yaml, 'CSafeLoader', yaml.SafeLoader))"]
        out = subprocess.run([exe, "plan"], cwd=folder, capture_output=True, text=True, check=True).stdout
        assert "Plan: 1000 to create" in out, out[-500:]
        base, base_cpu = median_times(parse, folder, runs)
        plan, plan_cpu = median_times([exe, "plan"], folder, runs)
    print(f"{'process (median of ' + str(runs) + ' runs)':<34}{'wall s':>10}{'x baseline':>12}{'CPU s':>10}{'x baseline':>12}")
    print(f"{'python: parse the YAML (baseline)':<34}{base:>10.3f}{1:>12.2f}{base_cpu:>10.3f}{1:>12.2f}")
    print(f"{'fastuner plan (1000 to create)':<34}{plan:>10.3f}{plan / base:>12.2f}{plan_cpu:>10.3f}"
          f"{plan_cpu / base_cpu:>12.2f}")
    print(f"  output: {len(out.splitlines()):,} lines, {len(out) / 1e6:.1f} MB")
    return {"process_parse_s": round(base, 4), "process_plan_s": round(plan, 4),
            "process_ratio": round(plan / base, 2), "process_parse_cpu_s": round(base_cpu, 4),
            "process_plan_cpu_s": round(plan_cpu, 4), "process_cpu_ratio": round(plan_cpu / base_cpu, 2),
            "process_goal_s": 1.0, "process_goal_ratio": 3.0}


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
    args = parser.parse_args()
    process = bench_process(args.runs)
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
        print(json.dumps({**process, "baseline_s": round(base, 4), "plan_s": round(t0, 4), "plan_changed_s": round(t10, 4),
                          "ratio": round(t0 / base, 2), "ratio_changed": round(t10 / base, 2),
                          "goal_s": 0.5, "goal_ratio": 3.0}))


if __name__ == "__main__":
    main()
