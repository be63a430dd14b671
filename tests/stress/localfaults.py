"""Local faults for tests/stress/faults.py: a full disk, a read-only state folder, a dataset file changed
while apply reads it. Each trial is a project folder driven through the CLI as a subprocess; the disk
faults are real (a small tmpfs the trial mounts, full or read-only; this needs root, else the scenario
reports itself skipped with no trials), so every write path in fastuner meets the kernel's ENOSPC or
EROFS rather than a patched function.

After each fault: the command exited 0, or 1 with a clear message and no traceback; the state file (if
any) parses and validates; the object store holds only whole objects (each file's SHA-256 is its name,
no staged leftovers); and once the fault is gone, apply converges and plan shows no change."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.stress import Report

ROOT = Path(__file__).resolve().parents[2]
LABELS = ("order_status", "refund_request", "cancel_order", "account_access")
WORDS = ("please", "help", "my", "order", "refund", "account", "password", "cancel", "where", "when", "today")
STATE = Path("state/faults.json")


def spec(datasets: int) -> str:
    lines = ["version: 1", "project: faults", "backend: {local: {path: state/faults.json}}", "datasets:"]
    for i in range(datasets):
        lines += [f"  d{i}:", f"    path: data/d{i}.jsonl", "    task: classification"]
    return "\n".join(lines) + "\n"


def rows(rng: random.Random, n: int, tag: str = "") -> bytes:
    return "".join(json.dumps({"input": f"{tag}message {i}: " + " ".join(rng.choices(WORDS, k=8)),
                               "label": LABELS[i % len(LABELS)]}) + "\n" for i in range(n)).encode()


def fastuner(folder: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "fastuner.cli.main", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout)


def clear(run: subprocess.CompletedProcess, code: int | None) -> str | None:
    said = run.stdout + run.stderr
    if "Traceback" in said:
        return f"a traceback (exit {run.returncode}): {said[-2500:]}"
    if code is None and run.returncode not in (0, 1):
        return f"exit {run.returncode}: {said[-1000:]}"
    if code is not None and run.returncode != code:
        return f"exit {run.returncode}, not {code}: {said[-1500:]}"
    return None


def consistent(folder: Path) -> str | None:
    """The state parses and validates; the store has whole objects only, and every object the state
    names is there."""
    from fastuner.state.store import parse_state

    state_file = folder / STATE
    keys: set[str] = set()
    if state_file.exists():
        try:
            state = parse_state(state_file.read_text(), str(state_file))
        except Exception as exc:
            return f"the state does not parse: {exc}"
        for rs in state.resources.values():
            if rs.status == "ready":
                keys |= {v["key"] for v in (rs.outputs.get("splits") or {}).values() if v.get("key")}
    objects = folder / ".fastuner" / "objects"
    for path in (objects / "sha256").rglob("*") if (objects / "sha256").exists() else []:
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != path.name:
            return f"a partial object in the store: {path}"
    staged = [p for p in (objects / "tmp").rglob("*") if p.is_file()] if (objects / "tmp").exists() else []
    if staged:
        return f"staged files left in the store: {staged[:3]}"
    missing = [k for k in keys if not (objects / k).exists()]
    if missing:
        return f"state names objects the store lacks: {missing[:3]}"
    return None


def converges(folder: Path) -> str | None:
    if problem := clear(fastuner(folder, "apply", "--auto-approve"), 0):
        return f"apply after the fault: {problem}"
    if problem := clear(fastuner(folder, "plan", "--detailed-exitcode"), 0):
        return f"plan after apply: {problem}"
    return consistent(folder)


# --- a small filesystem of the trial's own -----------------------------------------------------


def can_mount() -> bool:
    if os.geteuid() != 0:
        return False
    probe = Path(f"/tmp/fastuner-stress-mount-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], capture_output=True)
        return ok
    finally:
        probe.rmdir()


@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int) -> Iterator[Callable[[str], None]]:
    """A tmpfs of `size_kb` at `path`; yields `remount(options)` ("size=64m", "ro", "rw")."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], check=True)

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)

    try:
        yield remount
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)


# --- the scenarios ---------------------------------------------------------------------------------


def disk_full(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None]) -> Report:
    """The project on a tmpfs a little too small at a random point: while the splits are written, the
    state saved, or the lock file made. Apply fails clearly (or fits); nothing is half-written; with
    room again, apply converges."""
    report = Report("faults/local disk full")
    if not can_mount():
        log(f"{report.scenario}: skipped (mounting a tmpfs needs root)")
        return report
    for i in range(trials):
        rng = random.Random(seed + i)
        folder = workdir / f"trial-{seed + i}"
        problem = None
        with tmpfs(folder, 64 * 1024) as remount:
            datasets = rng.randint(1, 4)
            (folder / "data").mkdir()
            for d in range(datasets):
                (folder / "data" / f"d{d}.jsonl").write_bytes(rows(rng, rng.randint(200, 3000), f"d{d} "))
            (folder / "fastuner.yaml").write_text(spec(datasets))
            used = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            # the data, plus from nothing to about twice it (splits ≈ the data; objects and state besides)
            remount(f"size={(used + rng.randint(0, 2 * used)) // 1024 + 8}k")
            first = fastuner(folder, "apply", "--auto-approve")
            report.faults += 1
            problem = clear(first, None)
            if problem is None and first.returncode == 1 and "space" not in (first.stdout + first.stderr).lower():
                problem = f"apply failed without saying the disk is full: {(first.stdout + first.stderr)[-1200:]}"
            problem = problem or consistent(folder)
            if problem is None:
                remount("size=64m")
                problem = converges(folder)
        report.trial(seed + i, problem)
        log(f"{report.scenario} seed {seed + i}: {problem or 'ok'} (first apply exit {first.returncode})")
    return report


def read_only_state(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None]) -> Report:
    """The state folder is read-only (a read-only mount): before the first apply, or after it with a
    change to make. Plan still works; apply and state commands that write say they cannot write the state
    (naming it), change nothing, and leave the store whole; writable again, apply converges."""
    report = Report("faults/local read-only state")
    if not can_mount():
        log(f"{report.scenario}: skipped (mounting a tmpfs needs root)")
        return report
    for i in range(trials):
        rng = random.Random(seed + i)
        folder = workdir / f"trial-{seed + i}"
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "d0.jsonl").write_bytes(rows(rng, rng.randint(100, 800)))
        (folder / "fastuner.yaml").write_text(spec(1))
        with tmpfs(folder / "state", 4096) as remount:
            problem = None
            before = b""
            if rng.random() < 0.5:  # a state exists; the dataset changes
                problem = clear(fastuner(folder, "apply", "--auto-approve"), 0)
                (folder / "data" / "d0.jsonl").write_bytes(rows(rng, rng.randint(100, 800), "changed "))
                before = (folder / STATE).read_bytes()
            remount("ro")
            report.faults += 1
            if problem is None:
                problem = clear(fastuner(folder, "plan"), 0)
            commands = [("apply", "--auto-approve")] + ([("destroy", "--auto-approve")] if before else [])
            for command in commands:  # (with no state, destroy has nothing to do, and says so)
                if problem is not None:
                    break
                ran = fastuner(folder, *command)
                problem = clear(ran, 1)
                if problem is None and "state" not in ran.stderr:
                    problem = f"{command[0]} does not say the state cannot be written: {ran.stderr[-1000:]}"
                if problem is None and "read-only" not in ran.stderr.lower():
                    problem = f"{command[0]} does not say the folder is read-only: {ran.stderr[-1000:]}"
            if problem is None and before and (folder / STATE).read_bytes() != before:
                problem = "the state changed on a read-only folder"
            problem = problem or consistent(folder)
            if problem is None:
                remount("rw")
                problem = converges(folder)
        report.trial(seed + i, problem)
        log(f"{report.scenario} seed {seed + i}: {problem or 'ok'}")
    return report


def dataset_changed(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None]) -> Report:
    """The dataset file is rewritten at a random moment while apply runs (in place, appended to, cut,
    or replaced by a rename): apply stores what it validated or refuses with a message saying the file
    changed; never a dataset whose recorded hash is not what it stored; then apply converges."""
    report = Report("faults/local dataset changed")
    for i in range(trials):
        rng = random.Random(seed + i)
        folder = workdir / f"trial-{seed + i}"
        (folder / "data").mkdir(parents=True)
        data = folder / "data" / "d0.jsonl"
        data.write_bytes(rows(rng, rng.randint(50_000, 150_000)))
        (folder / "fastuner.yaml").write_text(spec(1))
        how = rng.choice(["in place", "append", "truncate", "rename"])
        # when: a moment after apply starts (its plan scans the file), or after it starts the dataset
        # (its second pass, writing the splits, checks the file against the plan's scan)
        trigger = rng.choice(["", "Creating", "Creating"])
        delay = rng.uniform(0.5, 3.0) if not trigger else rng.uniform(0.0, 0.8)
        out, err, code = apply_changing(folder, data, how, trigger, delay, rng)
        report.faults += 1
        run = subprocess.CompletedProcess(["apply"], code, out, err)
        problem = clear(run, None)
        if problem is None and run.returncode == 1 and "changed" not in out + err:
            problem = f"apply failed without saying the file changed: {(out + err)[-1200:]}"
        if problem is None and run.returncode == 1 and "data/d0.jsonl" not in out + err:
            problem = f"apply failed without naming the file: {(out + err)[-1200:]}"
        problem = problem or consistent(folder) or recorded_matches_stored(folder)
        problem = problem or converges(folder) or recorded_matches_stored(folder, data)
        report.trial(seed + i, problem)
        log(f"{report.scenario} seed {seed + i}: {problem or 'ok'} ({how} {delay:.1f} s after "
            f"{trigger or 'the start'}, exit {run.returncode})")
    return report


def apply_changing(folder: Path, data: Path, how: str, trigger: str, delay: float,
                   rng: random.Random) -> tuple[str, str, int]:
    """Run apply, changing `data` `delay` seconds after the line with `trigger` (or after the start)."""
    proc = subprocess.Popen([sys.executable, "-m", "fastuner.cli.main", "apply", "--auto-approve"],
                            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200",
                                 "PYTHONUNBUFFERED": "1"})
    changer = threading.Timer(delay, change_file, (data, how, rng))
    lines: list[str] = []

    def watch() -> None:
        assert proc.stdout is not None
        if not trigger:
            changer.start()
        for line in proc.stdout:
            lines.append(line)
            if trigger and trigger in line and not changer.is_alive() and not changer.finished.is_set():
                changer.start()

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.wait(timeout=300)
    watcher.join()
    if changer.is_alive() or changer.finished.is_set():
        changer.join()
    else:  # apply ended before the trigger: change the file now, for the next apply to meet
        change_file(data, how, rng)
    out = "".join(lines)
    return out, err, proc.returncode


def change_file(path: Path, how: str, rng: random.Random) -> None:
    """Change the file as editors and tools do, leaving it a valid dataset (so that a later apply can
    converge): a word rewritten in place, rows appended, the file cut after a line, or replaced whole."""
    data = path.read_bytes()
    if how == "in place":  # same length, so only the bytes differ
        at = data.index(b"please", rng.randrange(len(data) // 2))
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(b"PLEASE")
    elif how == "append":
        with open(path, "ab") as f:
            f.write(rows(rng, rng.randint(1, 50), "late "))
    elif how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(data.index(b"\n", rng.randrange(len(data) // 2, len(data) - 1)) + 1)
    else:
        tmp = path.with_suffix(".new")
        tmp.write_bytes(data + rows(rng, rng.randint(1, 50), "late "))
        os.replace(tmp, path)


def recorded_matches_stored(folder: Path, source: Path | None = None) -> str | None:
    """A ready dataset's stored splits hold exactly its recorded row counts, and (given the source) its
    recorded source hash is the file's."""
    state_file = folder / STATE
    if not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    rs = state["resources"].get("dataset.d0")
    if not rs or rs["status"] != "ready":
        return None
    objects = folder / ".fastuner" / "objects"
    for name, split in (rs["outputs"].get("splits") or {}).items():
        key, want = split.get("key"), split.get("rows")
        if key and want is not None:
            have = (objects / key).read_bytes().count(b"\n")
            if have != want:
                return f"the {name} split holds {have} rows, state says {want}"
    if source is not None:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        if digest not in json.dumps(rs["inputs"]) + json.dumps(rs["outputs"]):
            return "the recorded dataset is not the file's content (its SHA-256 is nowhere in state)"
    return None


def server_killed(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None]) -> Report:
    """The inference server killed (SIGKILL) while `invoke --batch` sends it rows. The batch exits 1
    with one output row per input row, in order: answers up to the kill, error rows after it; plan
    shows the deployment drifted (exit 2); apply starts it again, and the plan after it is empty. One
    project (a tiny BERT adapter, 3 training steps) serves every trial."""
    report = Report("faults/local server killed")
    root = workdir / "project"
    from tests.tinymodels import make_tiny_bert

    bert = make_tiny_bert(workdir / "bert")
    (root / "data").mkdir(parents=True)
    (root / "data" / "intents.jsonl").write_bytes(rows(random.Random(seed), 160))
    (root / "fastuner.yaml").write_text(SERVED.format(bert=bert))
    try:
        if problem := clear(fastuner(root, "apply", "--auto-approve", timeout=600), 0):
            report.trial(seed, f"the first apply: {problem}")
            return report
        for i in range(trials):
            rng = random.Random(seed + i)
            problem = _kill_under_load(root, workdir / f"trial-{seed + i}", rng)
            report.faults += 1
            report.trial(seed + i, problem)
            log(f"{report.scenario} seed {seed + i}: {problem or 'ok'}")
    finally:
        fastuner(root, "destroy", "--auto-approve", timeout=300)
    return report


SERVED = """\
version: 1
project: served
backend: {{local: {{path: state/faults.json}}}}
provider: {{local: {{device: cpu}}}}
datasets:
  d0: {{path: data/intents.jsonl, task: classification}}
adapters:
  lora:
    base_model: "{bert}"
    dataset: d0
    lora: {{r: 4, alpha: 8, dropout: 0.0}}
    training: {{epochs: 1, max_steps: 3, batch_tokens: 512, max_seq_len: 32}}
deployments:
  api:
    base_model: "{bert}"
    adapters: [lora]
    ttl: 1h
"""


def _kill_under_load(root: Path, folder: Path, rng: random.Random) -> str | None:
    import signal

    folder.mkdir(parents=True)
    n = rng.randint(20_000, 50_000)  # the kill comes seconds in, at the first progress line: long before the end
    (folder / "in.jsonl").write_text("".join(json.dumps({"input": f"message {i}: where is my order", "n": i}) + "\n"
                                             for i in range(n)))
    state = json.loads((root / STATE).read_text())
    pid = int(state["resources"]["deployment.api"]["outputs"]["pid"])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    batch = subprocess.Popen([sys.executable, "-m", "fastuner.cli.main", "invoke", "deployment.api", "-a", "lora",
                              "--batch", str(folder / "in.jsonl"), "--out", str(folder / "out.jsonl"),
                              "--rows-per-request", str(rng.choice([1, 2, 5])),
                              "--concurrency", str(rng.choice([1, 2, 4])), "--json"],
                             cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_file = folder / "out.jsonl"
    said: list[str] = []
    answering = threading.Event()

    def progress() -> None:  # "deployment.api lora: 12/400 done, 0 failed (6s)" every few seconds
        assert batch.stderr is not None
        for line in batch.stderr:
            said.append(line)
            if " done, " in line and not line.split(": ", 1)[-1].startswith("0/"):
                answering.set()

    reader = threading.Thread(target=progress)
    reader.start()
    answering.wait(120)
    time.sleep(rng.uniform(0.0, 1.0))
    # state records the supervising shell (it keeps the exit code); the server is its child
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)
    batch.wait(timeout=300)
    reader.join()
    assert batch.stdout is not None
    ran = subprocess.CompletedProcess(batch.args, batch.returncode, batch.stdout.read(), "".join(said))
    problem = _batch_problem(ran, out_file, n, pid, children)
    plan = fastuner(root, "plan", "--detailed-exitcode")
    if problem is None and (plan_problem := clear(plan, 2)):
        problem = f"plan after the kill does not show drift: {plan_problem}"
    if problem is None and "deployment.api" not in plan.stdout:
        problem = f"the plan does not name the dead deployment: {plan.stdout[-800:]}"
    restarted = fastuner(root, "apply", "--auto-approve", timeout=600)  # always: the next trial needs it
    if problem is None and (apply_problem := clear(restarted, 0)):
        problem = f"apply restarting the server: {apply_problem}"
    if problem is None and (plan_problem := clear(fastuner(root, "plan", "--detailed-exitcode"), 0)):
        problem = f"plan after the restart: {plan_problem}"
    again = fastuner(root, "invoke", "deployment.api", "-a", "lora", "--input", "where is my order")
    if problem is None and (invoke_problem := clear(again, 0)):
        problem = f"invoke after the restart: {invoke_problem}"
    return problem


def _batch_problem(ran: subprocess.CompletedProcess, out_file: Path, n: int, pid: int,
                   children: list[str]) -> str | None:
    if not children:
        return f"no server process under the recorded pid {pid}"
    if ran.returncode == 0:
        return f"the batch finished before the kill ({n} rows); make it bigger"
    if problem := clear(ran, 1):
        return f"invoke --batch: {problem}"
    got = [json.loads(line) for line in out_file.read_text().splitlines()]
    if [g.get("n") for g in got] != list(range(n)):
        return f"output rows not one per input in order: {[g.get('n') for g in got][:20]}… ({len(got)} of {n})"
    failed = [i for i, g in enumerate(got) if "error" in g]
    if not failed or failed[0] == 0 or failed != list(range(failed[0], n)):
        return f"error rows are not the rows from the kill on (after some answers): {failed[:10]}…"
    if any("output" not in g for g in got[: failed[0]]):
        return "a row before the first error has no output"
    return None


LOCAL: dict[str, Callable[..., Report]] = {
    "disk full": disk_full,
    "read-only state": read_only_state,
    "dataset changed": dataset_changed,
    "server killed": server_killed,
}
