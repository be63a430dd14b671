"""Secrets and exposure (issue 12): canaries planted where secrets live, grepped for everywhere.

Canaries: AWS credentials and Hugging Face tokens in the environment, and a spec variable marked
`sensitive: true` used in tags (and, in the plan scenario, in other string fields). Random per trial
(`random.Random(seed + i)`), with characters that need escaping in JSON, YAML and regexes.

- plan renderings (in-process, fast): validate, plan --json / --out / terminal, show --markdown and
  --json of the saved plan: no canary in any output or in the plan file, in any escaping.
- local cycle (CLI subprocesses, a tiny BERT adapter trained for three steps and served): validate,
  plan, apply, show, state show/pull, logs of the job and the server, invoke, ci github; then every
  output, every file under the project (state, its backup, the run folders, the logs, the workflow)
  and the server's command line are grepped. While it serves: it listens on 127.0.0.1 only, its
  management API refuses a request without the deployment's token, and the state files and the token
  are owner-only (0600).
- SageMaker cycle (the CLI against a moto server, tests/aws/motoext.py): bootstrap, plan, apply, state
  pull, logs, destroy; every request fastuner sent (its call log), CreateTrainingJob's hyperparameters
  and environment in particular, every object it wrote to S3 (the state included) and every output
  are grepped; the sensitive tag reaches the job's Tags (the one place it is meant for) and nowhere else.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import socket
import stat
import string
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.stress import Report

ROOT = Path(__file__).resolve().parents[2]
DEFECTS: list[str] = [
    "The local state, its backup and its lock file were world-readable (0644): "
    "'local state: the state file, its backup, its lock and the copies plan --out and state pull write are "
    "owner-only (0600), not world-readable'.",
    "The inference server's management API had no authentication at all (any local user could load an "
    "adapter from any path): 'serve: the management API (/adapters) requires the deployment's token "
    "(FASTUNER_MANAGEMENT_TOKEN, Bearer) when one is set, and is off without one off loopback; the local "
    "provider gives each server its own token (run folder, 0600)'.",
    "A spec had no way to keep a variable out of plans, state and logs: 'sensitive variables (variables: "
    "NAME: {sensitive: true}): plans (JSON, Markdown, terminal, saved files), state and fastuner logs hold "
    "(sensitive:HASH) markers; the engine reveals the value only to the provider'.",
    "Diagnostics quoting a sensitive value (the offline base-model check names the revision) reached plan "
    "--json and the terminal, and the AWS call log was world-readable: 'sensitive variables: diagnostics that "
    "quote a value (the offline base-model check names the revision) are masked in validate, plan and errors; "
    "the AWS call log is owner-only; tests/stress/secrets: canaries grepped in plan renderings and a local "
    "train-and-serve cycle'.",
]
SENSITIVE_FIELDS = ("tags", "base_model_revision", "description")


def run(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None], local: int | None = None,
        sagemaker: int | None = None) -> list[Report]:
    """`trials` plan-rendering trials; `local` local cycles (default 1 + trials // 100) and `sagemaker`
    SageMaker cycles (default 1 + trials // 20): each takes a minute or tens of seconds."""
    local = 1 + trials // 100 if local is None else local
    sagemaker = 1 + trials // 20 if sagemaker is None else sagemaker
    reports = [scenario("secrets/plan renderings", trials, seed, workdir / "plans", log, plan_trial)]
    if local:
        reports.append(scenario("secrets/local cycle (train, serve)", local, seed, workdir / "local", log,
                                local_trial))
    if sagemaker:
        from tests.stress.smsecrets import sagemaker_scenario

        reports.append(sagemaker_scenario(sagemaker, seed, workdir / "sagemaker", log))
    return reports


def scenario(name: str, trials: int, first_seed: int, workdir: Path, log: Callable[[str], None],
             trial: Callable[[random.Random, Path, Report], str | None]) -> Report:
    report = Report(name)
    workdir.mkdir(parents=True, exist_ok=True)
    for i in range(trials):
        trial_seed = first_seed + i
        folder = workdir / f"t{trial_seed}"
        try:
            problem = trial(random.Random(trial_seed), folder, report)
        except Exception as error:
            problem = f"{type(error).__name__}: {error}"
        report.trial(trial_seed, problem)
        if problem:
            log(f"{name}: seed {trial_seed}: {problem}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    log(f"{name}: {report.passed}/{report.trials} trials, {report.cases} outputs and files grepped")
    return report


# --- canaries ------------------------------------------------------------------------------------------


def canaries(rng: random.Random) -> dict[str, str]:
    """Secret values, each unique to the trial; `sensitive` has characters JSON, YAML and regexes treat
    specially (no newline or `"`: it goes into a quoted YAML string)."""
    def word(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    odd = rng.choice(["", "\\", "+*?", "$", "é€", " # ", "&", "'", "{}", "|"])
    return {
        "AWS_ACCESS_KEY_ID": "AKIA" + word(16, string.ascii_uppercase + string.digits),
        "AWS_SECRET_ACCESS_KEY": word(40),
        "AWS_SESSION_TOKEN": "FwoG" + word(60),
        "HF_TOKEN": "hf_" + word(34),
        "HUGGING_FACE_HUB_TOKEN": "hf_" + word(34),
        "sensitive": f"sv{word(6)}{odd}{word(8)}",
    }


def forms(value: str) -> set[str]:
    """The ways a value can appear in an output: as is, JSON-escaped, YAML/Python-repr escaped."""
    out = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1]}
    return {f for f in out if f}


def find_canaries(text: str, planted: dict[str, str], *, allow: frozenset[str] = frozenset()) -> list[str]:
    """Names of the canaries `text` holds (in any of their forms), except those in `allow`."""
    return [name for name, value in planted.items()
            if name not in allow and any(form in text for form in forms(value))]


def grep_files(root: Path, planted: dict[str, str], report: Report, *,
               allow: Callable[[Path], frozenset[str]] = lambda _: frozenset()) -> list[str]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        report.cases += 1
        text = path.read_bytes().decode("utf-8", errors="replace")
        for name in find_canaries(text, planted, allow=allow(path)):
            found.append(f"{name} in {path.relative_to(root)}")
    return found


# --- plan renderings (in-process) ------------------------------------------------------------------


def plan_trial(rng: random.Random, folder: Path, report: Report, *, sensitive: bool = True) -> str | None:
    """`sensitive=False` declares the variable plainly: the trial must then find it (the check works)."""
    from tests.cli.helpers import intents_rows, write_jsonl

    planted = canaries(rng)
    secret = planted["sensitive"]
    write_jsonl(folder / "data" / "intents.jsonl", intents_rows(120, seed=rng.randrange(1000)))
    field = rng.choice(SENSITIVE_FIELDS)
    prefix = rng.choice(["", "team-", "x/"])
    use = f"{prefix}${{var.owner}}"
    extra = {"tags": f"tags: {{owner: {json.dumps(use)}}}", "base_model_revision": f"base_model_revision: {json.dumps(use)}",
             "description": f"tags: {{note: {json.dumps('about ' + use + ' and more')}}}"}[field]
    (folder / "fastuner.yaml").write_text(f"""\
version: 1
project: secrets
variables:
  owner: {{description: a sensitive canary, sensitive: {str(sensitive).lower()}}}
datasets:
  intents: {{path: data/intents.jsonl, task: classification, {extra if field != "base_model_revision" else ""}}}
adapters:
  intents-lora:
    base_model: tiny/base
    dataset: intents
    {extra}
deployments:
  api:
    base_model: tiny/base
    adapters: [intents-lora]
    ttl: 1h
    {extra if field != "base_model_revision" else ""}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "HUGGING", "FASTUNER_"))}
    env.update({k: v for k, v in planted.items() if k != "sensitive"}, FASTUNER_VAR_owner=secret,
               HF_HUB_OFFLINE="1", COLUMNS="160", NO_COLOR="1")
    outputs = {}
    for args in (["validate"], ["plan", "--json"], ["plan", "--out", "plan.json"], ["plan"],
                 ["show", "plan.json", "--markdown"], ["show", "plan.json", "--json"], ["show", "plan.json"]):
        code, out = cli_in_process(args, folder, env)
        report.cases += 1
        outputs[" ".join(args)] = out
        if code not in (0, 2) and not (args == ["validate"] and code == 1 and "base model" in out):
            return f"`fastuner {' '.join(args)}` exited {code}: {out[-600:]}"
    if sensitive and "(sensitive:" not in outputs["plan --json"]:
        return f"plan --json shows no (sensitive:…) marker for the {field} that uses the variable"
    for name, out in outputs.items():
        leaked = find_canaries(out, planted)
        if leaked:
            return f"{', '.join(leaked)} in the output of `fastuner {name}`"
    leaked = grep_files(folder, planted, report)
    return f"canary {', '.join(leaked)}" if leaked else None


def cli_in_process(args: list[str], folder: Path, env: dict[str, str]) -> tuple[int, str]:
    from fastuner.cli.main import main

    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(args, environ=env)
    finally:
        os.chdir(cwd)
    return code, out.getvalue()


# --- the local cycle (subprocesses, real training and serving) ----------------------------------------


def local_trial(rng: random.Random, folder: Path, report: Report) -> str | None:
    from tests.cli.helpers import intents_rows, write_jsonl
    from tests.tinymodels import make_tiny_bert

    planted = canaries(rng)
    bert = make_tiny_bert(folder / "models" / "bert")
    project = folder / "p"
    write_jsonl(project / "data" / "intents.jsonl", intents_rows(120, seed=rng.randrange(1000)))
    (project / "fastuner.yaml").write_text(f"""\
version: 1
project: secrets
provider: {{local: {{device: cpu}}}}
variables:
  owner: {{description: a sensitive canary, sensitive: true}}
datasets:
  intents: {{path: data/intents.jsonl, task: classification, tags: {{owner: "team-${{var.owner}}"}}}}
adapters:
  intents-lora:
    base_model: "{bert}"
    dataset: intents
    lora: {{r: 4, alpha: 8, dropout: 0.0}}
    training: {{epochs: 1, max_steps: 3, batch_tokens: 512, max_seq_len: 32}}
    tags: {{owner: "${{var.owner}}"}}
deployments:
  api:
    base_model: "{bert}"
    adapters: [intents-lora]
    ttl: 1h
    tags: {{owner: "${{var.owner}}"}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "HUGGING", "FASTUNER_"))}
    env.update({k: v for k, v in planted.items() if k != "sensitive"}, FASTUNER_VAR_owner=planted["sensitive"],
               HF_HUB_OFFLINE="1", COLUMNS="160", NO_COLOR="1", PYTHONPATH=str(ROOT))

    def fastuner(*args: str, timeout: float = 300) -> str:
        done = subprocess.run([sys.executable, "-m", "fastuner.cli.main", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=timeout)
        report.cases += 1
        outputs[" ".join(args)] = done.stdout + done.stderr
        if done.returncode not in (0, 2) or "Traceback" in done.stderr:
            raise AssertionError(f"`fastuner {' '.join(args)}` exited {done.returncode}: {done.stderr[-800:]}")
        return done.stdout

    outputs: dict[str, str] = {}
    problems: list[str] = []
    try:
        fastuner("validate")
        fastuner("plan", "--json")
        fastuner("plan", "--out", "plan.json")
        fastuner("show", "plan.json", "--markdown")
        fastuner("apply", "plan.json", timeout=900)
        for args in (["show"], ["state", "list"], ["state", "show", "adapter.intents-lora"],
                     ["state", "show", "deployment.api"], ["state", "pull", "-"], ["state", "pull", "pulled.json"],
                     ["logs", "adapter.intents-lora"], ["logs", "deployment.api"], ["show", "deployment.api"],
                     ["invoke", "deployment.api", "--input", "where is my order"],
                     ["invoke", "deployment.api", "--evaluate", "--json"], ["plan", "--detailed-exitcode"],
                     ["ci", "github"]):
            fastuner(*args)
        problems += serving_checks(project, planted, report)
    finally:
        with contextlib.suppress(Exception):
            fastuner("destroy", "--auto-approve")
    for name, out in outputs.items():
        problems += [f"{c} in the output of `fastuner {name}`" for c in find_canaries(out, planted)]
    problems += [f"canary {f}" for f in grep_files(project, planted, report)]
    return "; ".join(problems[:8]) or None


def serving_checks(project: Path, planted: dict[str, str], report: Report) -> list[str]:
    """While the deployment runs: where it listens, who may manage it, what its files and argv hold."""
    from fastuner.providers.local.http import HttpError, request
    from fastuner.state.local import LocalStateStore

    problems = []
    store = LocalStateStore(project / "state" / "secrets.json")
    dep = store.read().resources["deployment.api"]
    url, pid = dep.outputs["url"], int(dep.outputs["pid"])
    port = int(url.rsplit(":", 1)[1])
    listening = listening_addresses(port)
    report.cases += 1
    if not listening or any(host not in ("127.0.0.1", "::1") for host in listening):
        problems.append(f"the server listens on {listening or 'nothing'} for port {port}, not 127.0.0.1 only")
    other = outside_address()
    if other is not None:
        with contextlib.suppress(OSError), socket.create_connection((other, port), timeout=2):
            problems.append(f"the server answers on {other}:{port}, not on 127.0.0.1 alone")
    token_file = project / ".fastuner" / "deployments" / (dep.physical_name or "") / "token"
    for path in [store.path, store.backup_path, token_file, project / "pulled.json", project / "plan.json"]:
        report.cases += 1
        if not path.exists() or stat.S_IMODE(path.stat().st_mode) != 0o600:
            problems.append(f"{path.relative_to(project)} is {'missing' if not path.exists() else oct(path.stat().st_mode)}"
                            ", not owner-only (0600)")
    for headers in ({}, {"Authorization": "Bearer " + "x" * 43}):
        report.cases += 1
        try:
            request("GET", f"{url}/adapters", headers=headers)
            problems.append(f"the management API answered without the deployment's token ({headers or 'none'})")
        except HttpError as error:
            if error.status != 401:
                problems.append(f"the management API answered {error.status} without the token, not 401")
    listed = request("GET", f"{url}/adapters", headers={"Authorization": f"Bearer {token_file.read_text()}"})
    problems += [f"{c} in GET /adapters" for c in find_canaries(json.dumps(listed), planted)]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    report.cases += 1
    problems += [f"{c} in the server's command line" for c in find_canaries(argv, planted)]
    if token_file.exists() and token_file.read_text() in argv:
        problems.append("the management token is on the server's command line")
    return problems


def listening_addresses(port: int) -> list[str]:
    """The local addresses with a listening TCP socket on `port` (from /proc/net/tcp and tcp6)."""
    found = []
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].split(":")
                if int(hex_port, 16) != port or fields[3] != "0A":  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address)
                if size == 4:
                    found.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.append(socket.inet_ntop(socket.AF_INET6, words))
    return found


def outside_address() -> str | None:
    """An address of this machine that is not loopback (None if it has none)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: only the route is chosen
        address = s.getsockname()[0]
        if not address.startswith("127."):
            return address
    return None

