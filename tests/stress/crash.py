"""Crash injection: `fastuner apply` and `fastuner destroy` SIGKILLed at a random moment, then checked.

Each trial draws, from `random.Random(seed + i)`, when to kill (a delay within the duration measured by
an uninterrupted run of the same project) and, against SageMaker, how long the training jobs take. After
the kill of an apply:
- the state parses and validates as fastuner reads it (JSON, format version, the pydantic model);
- the next apply (waiting for the killed run's lock: `--lock-timeout`) converges, and then everything
  that exists is in state — SageMaker: every training job of the project and every S3 object under its
  prefix; local: every run folder, every server process (by its pid file) and every object in the store;
- nothing was created twice: one `CreateTrainingJob` per adapter in what fastuner sent
  (FASTUNER_AWS_CALL_LOG) and in what moto created (JobWorld.created); locally one training start per
  run (the training log's start lines);
- the following `plan --detailed-exitcode` exits 0, and no training process is left running.
After the kill of a destroy: the state parses, the next destroy converges, and nothing of the project
is left (objects, jobs, run folders, server processes), nor any lock but the killed run's own (a destroy
killed after its last delete leaves it, the next one has nothing to do and takes no lock; the next run
that writes takes it over).

Scenarios: "crash/sagemaker apply|destroy" against a moto server in this process (the bulk: `trials`
each), "crash/local apply|destroy" with real processes — a dataset, a training run of a tiny BERT of a
few steps, a deployment served on 127.0.0.1 — (`max(1, trials // 10)` each: a trial trains for real).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.stress import Report
from tests.stress.kit import (
    BUCKET,
    Done,
    Moto,
    Procs,
    alive,
    bootstrap,
    calls,
    kill_mentioning,
    mentions,
    parse,
    pids_mentioning,
    sagemaker_project,
    traceback_in,
)

DEFECTS: list[str] = [
    "A local training run's or server's `sh` wrapper killed outright (SIGKILL cannot be passed on) left its "
    "program running, unrecorded: the next apply saw the work gone and started a second server or trainer "
    "in the same folder (seen while building the fault scenarios; fix: \"local processes: what a killed "
    "wrapper left running … is stopped before the work starts again there …\"; "
    "tests/providers/test_processes.py).",
]

# The program's content-addressed tarball (s3://BUCKET/PREFIX/code/<sha256>/sourcedir.tar.gz): the same
# bytes for every adapter of every run of this fastuner version, uploaded once and kept on purpose.
SHARED_CODE = "/code/"


def run(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None]) -> list[Report]:
    reports = run_sagemaker(trials, seed, workdir / "sagemaker", log=log)
    reports += run_local(max(1, trials // 10), seed, workdir / "local", log=log)
    return reports


# --- SageMaker against moto ---------------------------------------------------------------------------


def run_sagemaker(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None],
                  durations: tuple[float, float] | None = None) -> list[Report]:
    """`durations`: of an apply and a destroy, instead of measuring them (the normal suite's shortcut)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    applies, destroys = Report("crash/sagemaker apply"), Report("crash/sagemaker destroy")
    workdir.mkdir(parents=True, exist_ok=True)
    moto = Moto()
    try:
        calibration = sagemaker_project(workdir / "calibration", "crash-calibration")
        env = moto.env(workdir / "calibration" / "calls.jsonl")
        bootstrap(moto, calibration, env)
        if durations is None:
            procs = Procs(calibration, env)
            moto.finish_after = 1.0
            first = procs.run("apply", "--auto-approve")
            gone = procs.run("destroy", "--auto-approve")
            procs.close()
            if first.code != 0 or gone.code != 0:
                raise RuntimeError(f"the calibration run failed:\n{first.text}\n{gone.text}")
            durations = (first.secs, gone.secs)
        log(f"crash/sagemaker: an apply takes {durations[0]:.1f} s, a destroy {durations[1]:.1f} s")
        for i in range(trials):
            s = seed + i
            a, d = sagemaker_trial(moto, s, workdir, *durations, log)
            for report, (problem, killed) in ((applies, a), (destroys, d)):
                if problem == "skipped":
                    continue
                report.faults += killed
                report.trial(s, problem)
                if problem:
                    log(f"FAILED {report.scenario} seed {s}: {problem}")
    finally:
        moto.close()
    return [applies, destroys]


Outcome = tuple[str | None, int]  # (problem or None, 1 if a process was killed)


def sagemaker_trial(moto: Moto, seed: int, workdir: Path, apply_secs: float, destroy_secs: float,
                    log: Callable[[str], None]) -> tuple[Outcome, Outcome]:
    rng = random.Random(seed)
    name = f"crash-{seed}"
    folder = workdir / name
    shutil.rmtree(folder, ignore_errors=True)
    sagemaker_project(folder, name, adapters=2)
    call_log = folder / "calls.jsonl"
    procs = Procs(folder, moto.env(call_log))
    key, prefix = f"state/{name}.json", f"{name}/"
    moto.finish_after = rng.uniform(0.2, 4.0)
    try:
        delay = rng.uniform(0, apply_secs)
        killed, early = kill_after(procs, ("apply", "--auto-approve"), delay)
        log(f"crash/sagemaker seed {seed}: apply killed at {delay:.2f} s" if killed else
            f"crash/sagemaker seed {seed}: apply ended before the kill at {delay:.2f} s")
        problem = (early and bad_exit(early)) or check_state_parses(lambda: moto.state(key))
        if problem is None:
            problem = converge_sagemaker(moto, procs, name, key, prefix, call_log)
        applied = (problem, killed)
        if problem:
            return applied, ("skipped", 0)
        delay = rng.uniform(0, destroy_secs)
        killed, early = kill_after(procs, ("destroy", "--auto-approve"), delay)
        problem = (early and bad_exit(early)) or check_state_parses(lambda: moto.state(key))
        if problem is None:
            problem = destroyed_sagemaker(moto, procs, name, key, prefix, procs.started[-1].pid)
        return applied, (problem, killed)
    finally:
        procs.close()
        shutil.rmtree(folder, ignore_errors=True)


def converge_sagemaker(moto: Moto, procs: Procs, name: str, key: str, prefix: str, call_log: Path) -> str | None:
    again = procs.run("apply", "--auto-approve", "--lock-timeout", "60s")
    if again.code != 0 or "Traceback" in again.err:
        return f"the apply after the kill did not converge: {again.text}"
    state = moto.state(key)
    for job in moto.jobs(name):
        if not mentions(state, job):
            return f"training job {job} exists but is not in state"
    for obj in moto.keys(prefix):
        if SHARED_CODE not in obj and not mentions(state, obj.removeprefix(prefix)):
            return f"s3://{BUCKET}/{obj} exists but state does not point at it"
    created = Counter(j for j in moto.world.created if j.startswith(f"{name}-"))
    sent = Counter(c["params"].get("TrainingJobName") for c in calls(call_log, "CreateTrainingJob"))
    adapters = [a for a in state.resources if a.startswith("adapter.")] if state else []
    if sorted(created.values()) != [1] * len(adapters) or len(created) != len(adapters):
        return f"training jobs created {dict(created)} for {len(adapters)} adapters"
    if any(n > 1 for n in sent.values()):
        return f"CreateTrainingJob sent more than once for a job: {dict(sent)}"
    if any(rs.status != "ready" or rs.pending for rs in state.resources.values()):
        return "a resource is not ready after the apply converged: " + ", ".join(
            f"{a}={rs.status}" for a, rs in state.resources.items())
    plan = procs.run("plan", "--detailed-exitcode")
    if plan.code != 0:
        return f"plan after convergence shows changes or fails: {plan.text}"
    return None


def destroyed_sagemaker(moto: Moto, procs: Procs, name: str, key: str, prefix: str, killed: int) -> str | None:
    """`killed`: the pid of the destroy that was killed (or ended by itself)."""
    again = procs.run("destroy", "--auto-approve", "--lock-timeout", "60s")
    if again.code != 0 or "Traceback" in again.err:
        return f"the destroy after the kill did not converge: {again.text}"
    state = moto.state(key)
    if state is not None and state.resources:
        return f"state keeps {sorted(state.resources)} after destroy"
    left = [k for k in moto.keys(prefix) if SHARED_CODE not in k]
    if left:
        return f"objects left after destroy: {left}"
    if moto.jobs(name):
        return f"training jobs left after destroy: {moto.jobs(name)}"
    if moto.keys(f"fastuner-locks/{key}"):
        # A destroy killed after its last delete leaves its lock, and the next one, with nothing to do,
        # takes no lock: the dead run's lock stays until a run that writes takes it over (the races
        # category's "killed holder"). Any other lock left is a failure.
        from tests.stress.races import _lock_pid

        holder = _lock_pid(moto, key)
        if holder != killed or alive(killed):
            return f"a state lock held by pid {holder} is left after destroy (the killed destroy was {killed})"
    return None


# --- the local provider, real processes -----------------------------------------------------------------


def run_local(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None],
              durations: tuple[float, float] | None = None) -> list[Report]:
    from tests.tinymodels import make_tiny_bert

    applies, destroys = Report("crash/local apply"), Report("crash/local destroy")
    workdir.mkdir(parents=True, exist_ok=True)
    bert = workdir / "bert"
    if not (bert / "config.json").exists():
        make_tiny_bert(bert)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FASTUNER_"))}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="200", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if durations is None:
        calibration = local_project(workdir / "calibration", bert)
        procs = Procs(calibration, env)
        try:
            first = procs.run("apply", "--auto-approve", timeout=600)
            gone = procs.run("destroy", "--auto-approve", timeout=300)
        finally:
            procs.close()
            kill_mentioning(str(calibration))
        if first.code != 0 or gone.code != 0:
            raise RuntimeError(f"the calibration run failed:\n{first.text}\n{gone.text}")
        durations = (first.secs, gone.secs)
    log(f"crash/local: an apply takes {durations[0]:.1f} s, a destroy {durations[1]:.1f} s")
    for i in range(trials):
        s = seed + i
        a, d = local_trial(s, workdir, bert, env, *durations, log)
        for report, (problem, killed) in ((applies, a), (destroys, d)):
            if problem == "skipped":
                continue
            report.faults += killed
            report.trial(s, problem)
            if problem:
                log(f"FAILED {report.scenario} seed {s}: {problem}")
    return [applies, destroys]


def local_project(folder: Path, bert: Path) -> Path:
    from tests.stress.kit import intents

    shutil.rmtree(folder, ignore_errors=True)
    intents(folder)
    (folder / "fastuner.yaml").write_text(f"""\
version: 1
project: crash
provider: {{local: {{device: cpu}}}}
datasets:
  intents: {{path: data/intents.jsonl, task: classification}}
adapters:
  intents-lora:
    base_model: "{bert}"
    dataset: intents
    lora: {{r: 4, alpha: 8, dropout: 0.0}}
    training: {{epochs: 1, max_steps: 3, batch_tokens: 512, max_seq_len: 32, checkpoint_every: 1}}
deployments:
  api:
    base_model: "{bert}"
    adapters: [intents-lora]
    ttl: 1h
""")
    return folder


def local_trial(seed: int, workdir: Path, bert: Path, env: dict[str, str], apply_secs: float,
                destroy_secs: float, log: Callable[[str], None]) -> tuple[Outcome, Outcome]:
    rng = random.Random(seed)
    folder = local_project(workdir / f"crash-{seed}", bert)
    procs = Procs(folder, env)
    try:
        delay = rng.uniform(0, apply_secs)
        killed, early = kill_after(procs, ("apply", "--auto-approve"), delay, timeout=600)
        log(f"crash/local seed {seed}: apply killed at {delay:.2f} s" if killed else
            f"crash/local seed {seed}: apply ended before the kill at {delay:.2f} s")
        problem = (early and bad_exit(early)) or check_state_parses(lambda: local_state(folder))
        if problem is None:
            problem = converge_local(procs, folder)
        applied = (problem, killed)
        if problem:
            return applied, ("skipped", 0)
        delay = rng.uniform(0, destroy_secs)
        killed, early = kill_after(procs, ("destroy", "--auto-approve"), delay, timeout=300)
        problem = (early and bad_exit(early)) or check_state_parses(lambda: local_state(folder))
        if problem is None:
            problem = destroyed_local(procs, folder, procs.started[-1].pid)
        return applied, (problem, killed)
    finally:
        procs.close()
        left = kill_mentioning(str(folder))
        if left:
            log(f"crash/local seed {seed}: killed leftover processes {left}")
        shutil.rmtree(folder, ignore_errors=True)


def local_state(folder: Path):
    path = folder / "state" / "crash.json"
    return parse(path.read_text("utf-8"), str(path)) if path.exists() else None


TRAIN_START = "[fastuner] INFO: dataset: "  # the training program's first log line, once per start


def converge_local(procs: Procs, folder: Path) -> str | None:
    again = procs.run("apply", "--auto-approve", "--lock-timeout", "60s", timeout=600)
    if again.code != 0 or "Traceback" in again.err:
        return f"the apply after the kill did not converge: {again.text}"
    state = local_state(folder)
    work = folder / ".fastuner"
    for run in sorted((work / "runs").glob("*")):
        if not mentions(state, run.name):
            return f"run folder {run} exists but is not in state"
        starts = (run / "train.log").read_text(errors="replace").count(TRAIN_START) if (run / "train.log").exists() else 0
        if starts != 1:
            return f"training of {run.name} started {starts} times"
    for dep in sorted((work / "deployments").glob("*")):
        info = (dep / "process.json")
        if not info.exists():
            return f"deployment folder {dep} has no process.json"
        import json

        pid = json.loads(info.read_text())["pid"]
        if alive(pid) and not mentions(state, dep.name):
            return f"server pid {pid} ({dep.name}) runs but is not in state"
    for obj in sorted(p for p in (work / "objects").rglob("*") if p.is_file() and "tmp" not in p.parts):
        key = obj.relative_to(work / "objects").as_posix()
        if not mentions(state, key):
            return f"store object {key} exists but state does not point at it"
    if any(rs.status != "ready" or rs.pending for rs in state.resources.values()):
        return "a resource is not ready after the apply converged: " + ", ".join(
            f"{a}={rs.status}" for a, rs in state.resources.items())
    # a server is a process group: the wrapper shell (its pid is the group's, and what state records)
    # and the server program it runs
    servers = sorted({_group(p) for p in pids_mentioning(str(folder)) if "serve" in _cmdline(p)})
    recorded = state.resources["deployment.api"].outputs.get("pid")
    if servers != [recorded]:
        return f"server process groups running: {servers}, state records pid {recorded}"
    trainers = [p for p in pids_mentioning(str(folder)) if "train" in _cmdline(p) and "serve" not in _cmdline(p)]
    if trainers:
        return f"training processes still running after the apply converged: {trainers}"
    plan = procs.run("plan", "--detailed-exitcode")
    if plan.code != 0:
        return f"plan after convergence shows changes or fails: {plan.text}"
    return None


def destroyed_local(procs: Procs, folder: Path, killed: int) -> str | None:
    again = procs.run("destroy", "--auto-approve", "--lock-timeout", "60s", timeout=300)
    if again.code != 0 or "Traceback" in again.err:
        return f"the destroy after the kill did not converge: {again.text}"
    state = local_state(folder)
    if state is not None and state.resources:
        return f"state keeps {sorted(state.resources)} after destroy"
    left = pids_mentioning(str(folder))
    if left:
        return f"processes left after destroy: {[(p, _cmdline(p)[:120]) for p in left]}"
    work = folder / ".fastuner"
    runs = list((work / "runs").glob("*")) + list((work / "deployments").glob("*"))
    if runs:
        return f"folders left after destroy: {runs}"
    objects = [p for p in (work / "objects").rglob("*") if p.is_file()]
    if objects:
        return f"store objects left after destroy: {objects[:5]}"
    lock = folder / "state" / "crash.json.lock"
    if lock.exists():  # only a dead destroy's, as on S3 (a run with nothing to do takes no lock)
        import json

        holder = json.loads(lock.read_text() or "{}").get("pid")
        if holder != killed or alive(killed):
            return f"a state lock file of pid {holder} is left after destroy (the killed destroy was {killed})"
    return None


def _group(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return -1


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# --- shared ----------------------------------------------------------------------------------------------


def kill_after(procs: Procs, args: tuple[str, ...], delay: float, timeout: float = 300) -> tuple[int, Done | None]:
    """Start the command, SIGKILL it (the CLI process only, as a cancelled CI job's runner would) after
    `delay` seconds; (1, None) when killed, (0, its result) when it ended first."""
    proc = procs.start(*args)
    try:
        proc.wait(timeout=delay)
    except Exception:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.communicate(timeout=30)
        return 1, None
    return 0, procs.collect(proc, timeout=timeout)


def bad_exit(done: Done) -> str | None:
    if done.code != 0 or "Traceback" in done.err:
        return f"the run that was not killed failed: {done.text}"
    return traceback_in(done)


def check_state_parses(read: Callable[[], object]) -> str | None:
    try:
        read()
    except Exception as exc:  # a UserError (damaged, foreign) or worse: either way a failed trial
        return f"the state does not parse after the kill: {type(exc).__name__}: {exc}"
    return None
