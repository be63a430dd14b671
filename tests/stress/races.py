"""Races on one state: applies started together, a holder killed or stalled mid-apply, `reap` meanwhile.

Scenarios (each `trials` times; trial i draws its choices from `random.Random(seed + i)`):
- "races/local lock": 2–3 `fastuner apply` started together on one project with the local state file
  after its dataset changed. Exactly one carries the change out; each other one fails fast naming the
  holder (lock ID and the pid of another racer), or, given `--lock-timeout`, waits, plans again and
  finds nothing left to do. No update is lost: the serial moves by exactly what one apply of
  that change writes (measured once), and the state records the new dataset, ready.
- "races/s3 lock": the same with the state on S3 (a moto server); besides, every version the bucket
  kept has its own serial, consecutive from 1, in one lineage (two writers at one serial = a lost update).
- "races/s3 killed holder": a SageMaker apply (moto's jobs held running) SIGKILLed once it holds the
  lock; the next apply waits, takes the lock over when the lease (3 s) ends, adopts the job — created
  once — and converges; the plan after it is empty.
- "races/s3 stalled holder": the same apply SIGSTOPped while it holds the lock; another takes over after
  the lease; the stalled one gets SIGCONT (while the other runs or after it finished) and must not
  write: its conditional write (or renewal) fails, it exits non-zero without a traceback, and the state
  is the other run's, intact (versions consecutive, job created once).
- "races/reap during apply" (a fifth of the trials: a real server, a ttl to wait out): a deployment of a
  tiny Llama on 127.0.0.1 whose ttl ends while a person's apply runs; `fastuner reap` (as CI runs it)
  starts once the apply holds the lock: it fails fast naming the apply's pid, or waits (--lock-timeout)
  and reaps; the apply's work is all recorded, the server is gone, the plan after is empty.
- "races/local lock hammer", "races/s3 lock hammer" (a fifth): 3–4 processes taking one lock in a tight
  loop: every acquisition exclusive (a counter under the lock, the serial), no error.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import shutil
import signal
import time
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
    intents,
    mentions,
    parse,
    sagemaker_project,
)

DEFECTS: list[str] = [
    "An auto-approved apply or reap that waited for the lock (--lock-timeout) while the holder applied "
    "always failed afterwards with a stale plan, so waiting was useless; it now plans again (fix: "
    "\"apply and reap --auto-approve: a plan gone stale while waiting for the lock is made again …\").",
    "Two runs taking the local state lock at once: one could open the new lock file between its creation "
    "and its creator's flock, take the flock itself, and the creator failed with a BlockingIOError "
    "traceback (fix: \"local state lock: the lock file is flocked and written under a temporary name, then "
    "hard-linked into place …\").",
]


def run(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None]) -> list[Report]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    reports = [run_local_lock(trials, seed, workdir / "local", log=log),
               run_hammer(trials, seed, workdir / "hammer", log=log)]
    moto = Moto()
    try:
        reports += run_s3(moto, trials, seed, workdir / "s3", log=log)
        reports.append(run_hammer(max(1, trials // 5), seed, workdir / "s3hammer", log=log, moto=moto))
    finally:
        moto.close()
    return reports


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FASTUNER_"))}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="200",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra or {})
    return env


def _record(report: Report, seed: int, problem: str | None, log: Callable[[str], None]) -> None:
    report.trial(seed, problem)
    if problem:
        log(f"FAILED {report.scenario} seed {seed}: {problem}")


# --- applies started together ----------------------------------------------------------------------------


def local_lock_project(folder: Path, backend: str = "") -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    intents(folder, seed=0)
    (folder / "fastuner.yaml").write_text(
        "version: 1\nproject: races\n" + (f"backend: {backend}\n" if backend else "") +
        "provider: {local: {}}\ndatasets:\n  intents: {path: data/intents.jsonl, task: classification}\n")
    return folder


def race(procs: Procs, rng: random.Random) -> tuple[list[Done], list[int], list[bool]]:
    """2–3 applies at once (some with --lock-timeout); their results, pids and which ones waited."""
    n = rng.choice((2, 3))
    waits = [rng.random() < 0.4 for _ in range(n)]
    started = []
    for w in waits:
        args = ["apply", "--auto-approve"] + (["--lock-timeout", "30s"] if w else [])
        started.append(procs.start(*args))
        time.sleep(rng.uniform(0, 0.3))
    pids = [p.pid for p in started]
    return [procs.collect(p, timeout=180) for p in started], pids, waits


def judge_race(results: list[Done], pids: list[int], waits: list[bool]) -> str | None:
    """Exactly one apply carries the change out; each other one fails fast naming another racer as the
    holder, or (having waited for the lock, or come late) plans again and finds nothing left to do. None
    ends on a stale plan: an auto-approved apply plans again."""
    applied = [i for i, r in enumerate(results) if r.code == 0 and "Apply complete!" in r.out]
    if len(applied) != 1:
        return f"{len(applied)} applies carried the change out: " + " | ".join(r.text for r in results)
    for i, r in enumerate(results):
        if "Traceback" in r.err:
            return f"racer {i} printed a traceback: {r.text}"
        if i in applied or (r.code == 0 and "No changes" in r.out):
            continue
        if r.code == 1 and "the state is locked" in r.err:
            holder = re.search(r"held by: .* \(pid (\d+)\)", r.err)
            if holder is None or int(holder.group(1)) not in pids or int(holder.group(1)) == pids[i]:
                return f"racer {i} was refused without naming another racer as the holder: {r.text}"
            if "Lock ID:" not in r.err:
                return f"racer {i} was refused without the lock's ID: {r.text}"
            if waits[i]:
                return f"racer {i} was given --lock-timeout 30s but did not wait: {r.text}"
            if r.secs > 20:
                return f"racer {i} had no --lock-timeout but took {r.secs:.0f} s to fail"
            continue
        return f"racer {i} ended neither applied, refused nor with nothing to do: {r.text}"
    return None


def change_dataset(folder: Path, seed: int) -> None:
    intents(folder, rows=120 + seed % 7, seed=seed + 1)


def run_local_lock(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None]) -> Report:
    report = Report("races/local lock")
    folder = local_lock_project(workdir / "calibration")
    procs = Procs(folder, _env())
    try:
        writes = calibrate(procs, folder, lambda: local_state(folder))
        log(f"races/local lock: one apply of the change writes the state {writes} times")
    finally:
        procs.close()
    for i in range(trials):
        s = seed + i
        rng = random.Random(s)
        folder = local_lock_project(workdir / f"races-{s}")
        procs = Procs(folder, _env())
        try:
            first = procs.run("apply", "--auto-approve")
            if first.code != 0:
                _record(report, s, f"the first apply failed: {first.text}", log)
                continue
            before = local_state(folder)
            change_dataset(folder, s)
            results, pids, waits = race(procs, rng)
            report.faults += len(results) - 1
            problem = judge_race(results, pids, waits) or lost_update(before, local_state(folder), writes, folder)
            _record(report, s, problem, log)
        finally:
            procs.close()
            shutil.rmtree(folder, ignore_errors=True)
    return report


def calibrate(procs: Procs, folder: Path, read: Callable[[], object]) -> int:
    """How many state writes one apply of a changed dataset makes (the serial it moves)."""
    first = procs.run("apply", "--auto-approve")
    before = read()
    change_dataset(folder, 12345)
    second = procs.run("apply", "--auto-approve")
    if first.code or second.code:
        raise RuntimeError(f"calibration failed: {first.text}\n{second.text}")
    return read().serial - before.serial  # type: ignore[attr-defined]


def local_state(folder: Path):
    path = folder / "state" / "races.json"
    return parse(path.read_text("utf-8"), str(path)) if path.exists() else None


def lost_update(before, after, writes: int, folder: Path) -> str | None:
    if after is None or after.lineage != before.lineage:
        return "the state's lineage changed or the state is gone"
    if after.serial - before.serial != writes:
        return f"serial moved {after.serial - before.serial}, one apply writes {writes}"
    rs = after.resources.get("dataset.intents")
    if rs is None or rs.status != "ready" or rs.pending:
        return f"dataset.intents is not ready in the final state: {rs}"
    source = hashlib.sha256((folder / "data" / "intents.jsonl").read_bytes()).hexdigest()
    if rs.inputs.get("source_sha256") != source:
        return "the final state records another version of the dataset than the one on disk"
    return None


# --- S3 -------------------------------------------------------------------------------------------------


def run_s3(moto: Moto, trials: int, seed: int, workdir: Path, *, log: Callable[[str], None],
           reap_trials: int | None = None) -> list[Report]:
    """`reap_trials`: how many of the trials also race a reap (default a fifth, at least one)."""
    lock, killed, stalled, reap = (Report("races/s3 lock"), Report("races/s3 killed holder"),
                                   Report("races/s3 stalled holder"), Report("races/reap during apply"))
    workdir.mkdir(parents=True, exist_ok=True)
    boot = sagemaker_project(workdir / "bootstrap", "races-bootstrap")
    bootstrap(moto, boot, moto.env(boot / "calls.jsonl"))
    name = "races-calibration"
    backend = f"{{s3: {{bucket: {BUCKET}, key: state/{name}.json, region: us-east-1, lock_lease: 3s}}}}"
    folder = local_lock_project(workdir / name, backend)
    procs = Procs(folder, moto.env(folder / "calls.jsonl"))
    try:
        writes = calibrate(procs, folder, lambda: moto.state(f"state/{name}.json"))
    finally:
        procs.close()
    log(f"races/s3 lock: one apply of the change writes the state {writes} times")
    for i in range(trials):
        s = seed + i
        for report, trial in ((lock, s3_lock_trial), (killed, killed_holder_trial), (stalled, stalled_holder_trial),
                              (reap, reap_trial)):
            if trial is reap_trial and i >= (max(1, trials // 5) if reap_trials is None else reap_trials):
                continue  # a real server and a ttl to wait out: a fifth of the trials
            try:
                problem, faults = trial(moto, s, workdir, writes, log)
            except Exception as exc:  # the harness itself: name the seed all the same
                problem, faults = f"harness error: {type(exc).__name__}: {exc}", 0
            report.faults += faults
            _record(report, s, problem, log)
    return [lock, killed, stalled, reap]


def consecutive(moto: Moto, key: str) -> str | None:
    """Every kept version of the state has its own serial, 1, 2, 3 … in one lineage: nothing overwrote."""
    versions = moto.versions(key)
    serials = [v.serial for v in versions]
    if serials != list(range(1, len(serials) + 1)):
        return f"the state's versions have serials {serials}: an update was lost or overwritten"
    if len({v.lineage for v in versions}) > 1:
        return "the state's versions belong to more than one lineage"
    return None


def s3_lock_trial(moto: Moto, seed: int, workdir: Path, writes: int, log: Callable[[str], None]) -> tuple[str | None, int]:
    rng = random.Random(seed)
    name = f"races-lock-{seed}"
    key = f"state/{name}.json"
    backend = f"{{s3: {{bucket: {BUCKET}, key: {key}, region: us-east-1, lock_lease: 3s}}}}"
    folder = local_lock_project(workdir / name, backend)
    (folder / "fastuner.yaml").write_text((folder / "fastuner.yaml").read_text().replace("project: races",
                                                                                         f"project: {name}"))
    procs = Procs(folder, moto.env(folder / "calls.jsonl"))
    try:
        first = procs.run("apply", "--auto-approve")
        if first.code != 0:
            return f"the first apply failed: {first.text}", 0
        before = moto.state(key)
        change_dataset(folder, seed)
        results, pids, waits = race(procs, rng)
        problem = judge_race(results, pids, waits) or lost_update(before, moto.state(key), writes, folder) \
            or consecutive(moto, key)
        if problem is None and moto.keys(f"fastuner-locks/{key}"):
            problem = "the lock object is left after every racer ended"
        return problem, len(results) - 1
    finally:
        procs.close()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _holding_apply(moto: Moto, seed: int, workdir: Path, tag: str) -> tuple[Procs, Path, str, str, object]:
    """A SageMaker project whose apply is running: it holds the lock and its job was created (moto keeps
    it running until `moto.finish_after`)."""
    name = f"races-{tag}-{seed}"
    folder = workdir / name
    shutil.rmtree(folder, ignore_errors=True)
    sagemaker_project(folder, name, adapters=1)
    procs = Procs(folder, moto.env(folder / "calls.jsonl"))
    return procs, folder, name, f"state/{name}.json", procs.start("apply", "--auto-approve")


def killed_holder_trial(moto: Moto, seed: int, workdir: Path, writes: int, log: Callable[[str], None]) -> tuple[str | None, int]:
    rng = random.Random(seed)
    moto.finish_after = rng.uniform(6, 10)
    procs, folder, name, key, holder = _holding_apply(moto, seed, workdir, "killed")
    try:
        lock = f"fastuner-locks/{key}.lock"
        # kill it while it holds the lock: at once, or once its job runs
        when = rng.choice(("locked", "job"))
        ready = (lambda: bool(moto.keys(lock))) if when == "locked" else (lambda: bool(moto.jobs(name)))
        if not _wait_for(lambda: ready() or holder.poll() is not None, 60) or holder.poll() is not None:
            return f"the apply never held the lock ({when}): {procs.collect(holder).text}", 0
        time.sleep(rng.uniform(0, 0.5))
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        start = time.monotonic()
        nxt = procs.run("apply", "--auto-approve", "--lock-timeout", "60s")
        if nxt.code != 0 or "Traceback" in nxt.err:
            return f"the apply after the kill failed: {nxt.text}", 1
        if "took over the state lock" not in nxt.out or f"pid {holder.pid}" not in nxt.out:
            return f"the next apply did not say it took the killed holder's lock over: {nxt.text}", 1
        if time.monotonic() - start > moto.finish_after + 30:
            return f"taking over took {time.monotonic() - start:.0f} s", 1
        return _converged(moto, procs, folder, name, key), 1
    finally:
        procs.close()
        shutil.rmtree(folder, ignore_errors=True)


def _converged(moto: Moto, procs: Procs, folder: Path, name: str, key: str) -> str | None:
    state = moto.state(key)
    created = [j for j in moto.world.created if j.startswith(f"{name}-")]
    sent = [c for c in calls(folder / "calls.jsonl", "CreateTrainingJob")]
    if len(created) != 1 or len(sent) != 1:
        return f"training job created {len(created)} times, CreateTrainingJob sent {len(sent)} times"
    if not mentions(state, created[0]) or state.resources["adapter.lora-0"].status != "ready":
        return f"the job {created[0]} is not recorded ready in state"
    plan = procs.run("plan", "--detailed-exitcode")
    if plan.code != 0:
        return f"the plan after convergence is not empty: {plan.text}"
    return consecutive(moto, key) or (f"the lock is left: {key}" if moto.keys(f"fastuner-locks/{key}") else None)


def _lock_pid(moto: Moto, key: str) -> int | None:
    """The pid the state's lock object names (None when there is none)."""
    import json

    try:
        body = moto.s3.get_object(Bucket=BUCKET, Key=f"fastuner-locks/{key}.lock")["Body"].read()
        return int(json.loads(body)["pid"])
    except Exception:  # no lock object, or one being replaced
        return None


def stalled_holder_trial(moto: Moto, seed: int, workdir: Path, writes: int, log: Callable[[str], None]
                         ) -> tuple[str | None, int]:
    rng = random.Random(seed)
    moto.finish_after = rng.uniform(8, 12)
    procs, folder, name, key, stalled = _holding_apply(moto, seed, workdir, "stalled")
    try:
        if not _wait_for(lambda: bool(moto.jobs(name)) or stalled.poll() is not None, 60) or stalled.poll() is not None:
            return f"the apply never started its job: {procs.collect(stalled).text}", 0
        time.sleep(rng.uniform(0, 1.0))
        stalled.send_signal(signal.SIGSTOP)  # a laptop lid closed, a VM paused
        try:
            time.sleep(4.5)  # its 3 s lease (+1 s slack) ends
            other = procs.start("apply", "--auto-approve", "--lock-timeout", "60s")
            # woken only once the other run has taken the lock over (until then the stalled one may
            # rightly carry on: nobody took its expired lease)
            if not _wait_for(lambda: _lock_pid(moto, key) == other.pid or other.poll() is not None, 90):
                return "the other run never took the lock over", 1
            wake = rng.choice(("while the other runs", "after the other finished"))
            if wake == "while the other runs":
                _wait_for(lambda: other.poll() is not None, rng.uniform(0.0, 2.0))
            else:
                other.wait(120)
        finally:
            stalled.send_signal(signal.SIGCONT)
        woke = procs.collect(stalled, timeout=120)
        done = procs.collect(other, timeout=120)
        said = woke.err + woke.out
        log(f"races/s3 stalled holder seed {seed}: woken {wake}, it exited {woke.code}: "
            + " / ".join(line for line in said.splitlines() if "lock" in line or "underneath" in line)[:400])
        if done.code != 0 or "Traceback" in done.err or "took over the state lock" not in done.out:
            return f"the run that took over failed or did not take over ({wake}): {done.text}", 1
        if woke.code == 0 or "Traceback" in woke.err:
            return f"the stalled run, woken {wake}, exited {woke.code} (it must fail without a traceback): {woke.text}", 1
        if not any(m in said for m in ("lost the state lock", "changed underneath", "the state is locked")):
            return f"the stalled run did not say why it stopped: {woke.text}", 1
        if done.code == 0 and "Apply complete!" not in done.out:
            return f"the run that took over did not complete: {done.text}", 1
        return _converged(moto, procs, folder, name, key), 1
    finally:
        procs.close()
        if alive(stalled.pid):
            stalled.send_signal(signal.SIGCONT)
        shutil.rmtree(folder, ignore_errors=True)


def reap_project(folder: Path, name: str, model: Path, ttl: int) -> Path:
    """Local resources (a dataset, a deployment of a tiny Llama on 127.0.0.1 with a short ttl), state on
    S3: what a CI reap and a person's apply share."""
    shutil.rmtree(folder, ignore_errors=True)
    intents(folder)
    (folder / "fastuner.yaml").write_text(f"""\
version: 1
project: {name}
backend: {{s3: {{bucket: {BUCKET}, key: state/{name}.json, region: us-east-1, lock_lease: 3s}}}}
provider: {{local: {{device: cpu}}}}
datasets:
  intents: {{path: data/intents.jsonl, task: classification}}
deployments:
  api: {{base_model: "{model}", ttl: {ttl}s}}
""")
    return folder


def reap_trial(moto: Moto, seed: int, workdir: Path, writes: int, log: Callable[[str], None]) -> tuple[str | None, int]:
    """A deployment's ttl ends while a person's apply (of a changed dataset) runs; CI's reap starts once
    the apply holds the lock, waiting for it or not."""
    from tests.stress.kit import kill_mentioning
    from tests.tinymodels import make_tiny_llama

    rng = random.Random(seed)
    model = workdir / "llama"
    if not (model / "config.json").exists():
        make_tiny_llama(model)
    name = f"races-reap-{seed}"
    key = f"state/{name}.json"
    ttl = 12
    folder = reap_project(workdir / name, name, model, ttl)
    procs = Procs(folder, moto.env(folder / "calls.jsonl"))
    try:
        first = procs.run("apply", "--auto-approve")
        if first.code != 0:
            return f"the first apply failed: {first.text}", 0
        deployed = moto.state(key).resources["deployment.api"]
        server = deployed.outputs["pid"]
        change_dataset(folder, seed)
        # the apply starts a few seconds before the ttl ends: it plans before (then the reap has work) or
        # after (then the apply reaps it itself)
        ends = deployed.expires_at.timestamp()
        time.sleep(max(0.0, ends - rng.uniform(1.0, 5.0) - time.time()))
        applying = procs.start("apply", "--auto-approve")
        lock = f"fastuner-locks/{key}.lock"
        _wait_for(lambda: bool(moto.keys(lock)) or applying.poll() is not None, 60)
        time.sleep(rng.uniform(0, 1.0))
        waits = rng.random() < 0.5
        reaped = procs.run("reap", "--auto-approve", *(["--lock-timeout", "60s"] if waits else []))
        applied = procs.collect(applying, timeout=120)
        log(f"races/reap seed {seed}: apply exit {applied.code}, reap ({'waiting' if waits else 'not waiting'}) "
            f"exit {reaped.code}: " + " / ".join(ln for ln in reaped.out.splitlines() + reaped.err.splitlines()
                                                  if "Reaped" in ln or "locked" in ln or "again" in ln
                                                  or "Nothing" in ln)[:300])
        if applied.code != 0 or "Traceback" in applied.err:
            return f"the apply failed while reap ran: {applied.text}", 1
        if "Traceback" in reaped.err:
            return f"reap printed a traceback: {reaped.text}", 1
        if reaped.code != 0 and (waits or "the state is locked" not in reaped.err
                                 or f"pid {applying.pid}" not in reaped.err):
            return (f"reap ({'with' if waits else 'without'} --lock-timeout) failed other than by being refused "
                    f"naming the apply's pid {applying.pid}: {reaped.text}"), 1
        if moto.state(key).resources["deployment.api"].status != "expired":
            again = procs.run("reap", "--auto-approve", "--lock-timeout", "60s")
            if again.code != 0:
                return f"the reap after both failed: {again.text}", 1
        state = moto.state(key)
        if state.resources["deployment.api"].status != "expired":
            return f"deployment.api is {state.resources['deployment.api'].status} after its ttl and a reap", 1
        if _wait_for(lambda: not alive(server), 30) is False:
            return f"the reaped deployment's server (pid {server}) still runs", 1
        rs = state.resources["dataset.intents"]
        source = hashlib.sha256((folder / "data" / "intents.jsonl").read_bytes()).hexdigest()
        if rs.status != "ready" or rs.inputs.get("source_sha256") != source:
            return "the apply's dataset is not recorded in state (lost to the reap?)", 1
        plan = procs.run("plan", "--detailed-exitcode")
        if plan.code != 0:
            return f"the plan after the reap is not empty: {plan.text}", 1
        return consecutive(moto, key) or (f"the lock is left: {key}" if moto.keys(lock) else None), 1
    finally:
        procs.close()
        kill_mentioning(str(folder))
        shutil.rmtree(folder, ignore_errors=True)


# --- the lock itself, hammered -------------------------------------------------------------------------

HAMMER = r"""
import os, sys, time
from pathlib import Path
from fastuner.state.model import empty_state
path, rounds = Path(sys.argv[1]), int(sys.argv[2])
counter = path.with_name("counter")
if len(sys.argv) > 3:  # the S3 store: bucket, key
    from fastuner.aws.clients import AwsSession
    from fastuner.state.s3 import S3StateStore
    store = S3StateStore(AwsSession(), sys.argv[3], sys.argv[4], lock_timeout=120, lease=3)
else:
    from fastuner.state.local import LocalStateStore
    store = LocalStateStore(path, lock_timeout=60)
for _ in range(rounds):
    with store.lock("hammer"):
        # inside the lock: a read-modify-write of a plain file (a second holder would lose an update)
        n = int(counter.read_text()) if counter.exists() else 0
        time.sleep(0.001)
        counter.write_text(str(n + 1))
        state = store.read() or empty_state("races", "default")
        store.write(state)
"""


def run_hammer(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None],
               moto: Moto | None = None) -> Report:
    """3–4 processes taking and releasing one state lock (local, or on S3 with `moto`) in a tight loop,
    waiting for each other with a lock timeout: every acquisition exclusive (a counter written under the
    lock and the state's serial both end at the number of acquisitions), no error, no traceback."""
    import subprocess
    import sys

    report = Report("races/s3 lock hammer" if moto else "races/local lock hammer")
    for i in range(trials):
        s = seed + i
        rng = random.Random(s)
        folder = workdir / f"hammer-{s}"
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "state").mkdir(parents=True)
        n, rounds = rng.choice((3, 4)), rng.randint(15, 30) if moto is None else rng.randint(4, 8)
        state = folder / "state" / "races.json"
        key = f"state/hammer-{s}.json"
        argv = [str(state), str(rounds)] + ([BUCKET, key] if moto else [])
        env = moto.env(folder / "calls.jsonl") if moto else _env()
        procs = [subprocess.Popen([sys.executable, "-c", HAMMER, *argv], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(n)]
        outs = [p.communicate(timeout=600) for p in procs]
        problem = None
        for p, (_out, err) in zip(procs, outs, strict=True):
            if p.returncode != 0:
                problem = f"a contending process exited {p.returncode}: {err[-1500:]}"
                break
        if problem is None:
            count = int((folder / "state" / "counter").read_text())
            serial = moto.state(key).serial if moto else local_state_at(state).serial
            if count != n * rounds or serial != n * rounds:
                problem = f"{n} × {rounds} acquisitions, but the counter says {count} and the serial {serial}"
        if problem is None and moto is not None:
            problem = consecutive(moto, key)
        report.faults += n * rounds
        _record(report, s, problem, log)
        shutil.rmtree(folder, ignore_errors=True)
    return report


def local_state_at(path: Path):
    return parse(path.read_text("utf-8"), str(path))
