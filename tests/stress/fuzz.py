"""Fuzzing (issue 12): generated and mutated specs, dataset files and HTTP requests, with hypothesis.

Each trial is one hypothesis run of `cases` examples seeded with `seed + i` (so a failure names the seed
that replays it). What must hold for every input:

- spec (`fastuner.yaml`, schema-aware mutations of a valid spec and byte-level mutations of the example
  specs): loading and checking either succeeds or raises `DiagnosticsError` whose every error names
  file:line:col inside the file; nothing else is raised. A few go through the CLI (`validate`): exit 0
  or 1, never a traceback.
- dataset (JSONL in odd encodings, BOMs, CRLF, huge lines, deep nesting, NaN, duplicate keys, blank and
  truncated lines): the scan succeeds or raises `DiagnosticsError` whose every row error names a row;
  writing the splits of a good scan leaves exactly its objects in the store, a failed scan none.
- server (`tests/stress/serverfuzz.py`): every error is a 4xx with a JSON body, never a 5xx for bad
  input, and the server keeps serving.

`--trials 100` runs 10,000 cases: `CASES_PER_TRIAL` per target and trial.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.stress import Report

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

# cases per trial and target: --trials 100 gives 3,000 + 3,000 + 2,000 + 2,000 = 10,000 cases
CASES_PER_TRIAL = {"spec": 30, "spec-bytes": 30, "dataset": 20, "server": 20}
CLI_PER_TRIAL = 1  # CLI runs of a generated spec (a subprocess each: about a second)

DEFECTS: list[str] = [
    "A spec holding a control character YAML forbids (NUL, ESC) gave a diagnostic with no line or column "
    "(YAML's reader error carries an offset, counted in bytes by libyaml): 'spec loader: a control character "
    "YAML forbids (NUL, ESC) is a diagnostic at its line and column, not one without a position (found by the "
    "fuzzer)'.",
    "The inference server answered an unknown method (PATCH, OPTIONS) with http.server's HTML 501 page and a "
    "malformed request line with an HTML 400: 'serve: http.server's own refusals (unknown method, malformed "
    "request line) are JSON 4xx, not an HTML 501/400; a negative or odd Content-Length is a 400, not a 500 or "
    "a hung read (found by the fuzzer)'.",
    "A negative Content-Length was a 500 (read(-10)), and -1 kept a server thread reading until the client "
    "hung up: same commit as above.",
    "A YAML error found at the end of a file without a final newline pointed at a line after the last one: "
    "'spec loader: a YAML error found at the end of the file points at the end of its last line, not at a "
    "line after it (found by the fuzzer)'.",
    "JSON nested deeper than the parser's recursion limit (an invocation or a management body) was a 500 "
    "(RecursionError), and an input holding a lone surrogate (\\ud800) reached the tokenizer and was a 500: "
    "'serve: deeply nested JSON and inputs with a lone surrogate are 400s, not 500s (found by the fuzzer)'.",
]


def run(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None],
        cases: dict[str, int] | None = None, cli: int = CLI_PER_TRIAL, server: bool = True) -> list[Report]:
    cases = {**CASES_PER_TRIAL, **(cases or {})}
    targets = [
        ("fuzz/spec (schema-aware)", spec_strategy(), check_spec_text, cases["spec"], "spec"),
        ("fuzz/spec (byte-level)", spec_bytes_strategy(), check_spec_text, cases["spec-bytes"], "spec-bytes"),
        ("fuzz/spec via CLI (validate)", st.one_of(spec_strategy(), spec_bytes_strategy()), check_spec_cli, cli,
         "spec-cli"),
        ("fuzz/dataset jsonl", dataset_strategy(), check_dataset_bytes, cases["dataset"], "dataset"),
    ]
    reports = [fuzz_target(scenario, strategy, check, trials, seed, n, workdir / folder, log)
               for scenario, strategy, check, n, folder in targets if n > 0]
    if server:
        from tests.stress.serverfuzz import fuzz_server

        reports.extend(fuzz_server(trials, seed, cases["server"], workdir / "server", log))
    return reports


def fuzz_target(scenario: str, strategy: st.SearchStrategy, check: Callable[[Any, Path], str | None],
                trials: int, first_seed: int, cases: int, workdir: Path, log: Callable[[str], None]) -> Report:
    """`trials` hypothesis runs of `cases` examples each; `check(example, folder)` returns a problem or None."""
    report = Report(scenario)
    workdir.mkdir(parents=True, exist_ok=True)
    for i in range(trials):
        trial_seed = first_seed + i
        problem = run_hypothesis(strategy, check, trial_seed, cases, workdir / f"t{trial_seed}", report)
        report.trial(trial_seed, problem)
        if problem:
            log(f"{scenario}: seed {trial_seed}: {problem}")
    log(f"{scenario}: {report.passed}/{report.trials} trials, {report.cases} cases")
    return report


def run_hypothesis(strategy: st.SearchStrategy, check: Callable[[Any, Path], str | None], trial_seed: int,
                   cases: int, folder: Path, report: Report) -> str | None:
    """One seeded hypothesis run; the shrunk failing example's problem, or None."""
    folder.mkdir(parents=True, exist_ok=True)
    found: list[str] = []

    @seed(trial_seed)
    @settings(max_examples=cases, database=None, deadline=None, derandomize=False, print_blob=False,
              phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck))
    @given(strategy)
    def case(example: Any) -> None:
        report.cases += 1
        problem = check(example, folder)
        if problem:
            found.append(problem)
            raise AssertionError(problem)

    try:
        case()
    except AssertionError:
        return found[-1] if found else "hypothesis failed"
    except Exception as error:  # the check itself broke: a harness bug is a failure too
        return f"harness error: {''.join(traceback.format_exception_only(error)).strip()}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return None


# --- specs -------------------------------------------------------------------------------------------

BASE_SPEC: dict[str, Any] = {
    "version": 1,
    "project": "fuzz",
    "backend": {"local": {"path": "state/fuzz.json"}},
    "provider": {"local": {}},
    "variables": {"base": {"description": "base model", "default": "tiny/base"}},
    "datasets": {"intents": {"path": "data/support_intents.jsonl", "task": "classification",
                             "split": {"train": 0.8, "validation": 0.1, "test": 0.1, "seed": 42}}},
    "adapters": {"intents-lora": {
        "base_model": "${var.base}", "dataset": "intents",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "training": {"epochs": 1, "learning_rate": 3.0e-3, "batch_tokens": 2048, "max_seq_len": 64},
        "compute": {"instance_type": "ml.g5.2xlarge", "spot": False, "max_runtime": "1h"}}},
    "deployments": {"intents-api": {"base_model": "${var.base}", "adapters": ["intents-lora"],
                                    "ttl": "8h", "idle_ttl": "1h", "port": 8081}},
    "policy": {"max_ttl": "1d", "protect": []},
}

KEYS = ["version", "project", "backend", "provider", "variables", "datasets", "adapters", "deployments",
        "policy", "path", "task", "split", "train", "validation", "test", "seed", "checks", "min_rows",
        "base_model", "dataset", "method", "lora", "r", "alpha", "dropout", "target_modules", "training",
        "epochs", "learning_rate", "compute", "instance_type", "spot", "max_runtime", "max_wait", "adapters",
        "ttl", "idle_ttl", "tags", "depends_on", "local", "s3", "sagemaker", "bucket", "key", "region",
        "lock_lease", "port", "cache_size", "default", "description", "learnig_rate", "epoch", "<<"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "1h", "-5m", "0s", "99999999999d", "lora", "qlora", "classification", "qa",
                     "dataset.intents", "adapter.intents-lora", "deployment.intents-api", "adapter.nope",
                     "${var.base}", "${var.missing}", "${env.HOME}", "$${var.base}", "${", "${var.", "intents",
                     "intents-lora", "Intents", "all-linear", "a" * 300, "~/x", "/etc/passwd", "../../x",
                     "\x00", "\t", "ml.g5.*", "1e400", "0x1F", "yes", "no", "null", ".inf"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner,
                                                 max_size=4)), max_leaves=12)


def _paths(data: Any, at: tuple = ()) -> list[tuple]:
    out = [at]
    if isinstance(data, dict):
        for k, v in data.items():
            out.extend(_paths(v, (*at, k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.extend(_paths(v, (*at, i)))
    return out


def _get(data: Any, path: tuple) -> Any:
    for p in path:
        data = data[p]
    return data


@st.composite
def spec_strategy(draw) -> str:
    """A valid spec, mutated a few times where the schema has structure, dumped in a random YAML style."""
    import copy

    data = copy.deepcopy(BASE_SPEC)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "add-key", "delete", "rename", "reference", "cycle", "list"]))
        parent = _get(data, path[:-1]) if path else None
        if op == "replace" and path:
            parent[path[-1]] = draw(values)
        elif op == "add-key":
            target = _get(data, path)
            if isinstance(target, dict):
                target[draw(st.sampled_from(KEYS))] = draw(values)
        elif op == "delete" and path and isinstance(parent, dict | list):
            del parent[path[-1]]
        elif op == "rename" and path and isinstance(parent, dict):
            new = draw(st.one_of(st.sampled_from(["Intents", "a_b", "-x", "x" * 40, "", "1", "intents"]),
                                 st.text(max_size=6)))
            parent[new] = parent.pop(path[-1])
        elif op == "reference":
            adapters = data.get("adapters")
            name = draw(st.sampled_from(["nope", "intents", "intents-api", "intents-lora", ""]))
            if isinstance(adapters, dict):
                for adapter in adapters.values():
                    if isinstance(adapter, dict):
                        adapter["dataset"] = name
            deployments = data.get("deployments")
            if isinstance(deployments, dict):
                for dep in deployments.values():
                    if isinstance(dep, dict):
                        dep["adapters"] = [name, draw(st.sampled_from(["intents-lora", "x"]))]
        elif op == "cycle":
            for kind, name, other in (("datasets", "intents", "adapter.intents-lora"),
                                      ("adapters", "intents-lora", "deployment.intents-api"),
                                      ("deployments", "intents-api", "dataset.intents")):
                section = data.get(kind)
                if isinstance(section, dict) and isinstance(section.get(name), dict):
                    section[name]["depends_on"] = [draw(st.sampled_from([other, f"{kind[:-1]}.{name}",
                                                                         "dataset.nope", "bad ref"]))]
        elif op == "list":
            target = _get(data, path)
            if path and isinstance(parent, dict | list):
                parent[path[-1]] = [target, draw(values)]
    flow = draw(st.sampled_from([False, True, None]))
    return yaml.safe_dump(data, default_flow_style=flow, sort_keys=draw(st.booleans()), allow_unicode=True)


def _example_specs() -> list[bytes]:
    return [p.read_bytes() for p in sorted(EXAMPLES.glob("*/fastuner.yaml"))] or [yaml.safe_dump(BASE_SPEC).encode()]


@st.composite
def spec_bytes_strategy(draw) -> bytes:
    """An example spec with a few byte-level mutations: flips, inserts, deletes, duplicated or swapped
    lines, tabs, odd characters, truncation."""
    data = bytearray(draw(st.sampled_from(_example_specs())))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup-line", "swap-lines", "indent", "truncate",
                                   "token"]))
        if op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 40))]
        elif op in ("dup-line", "swap-lines", "indent"):
            lines = bytes(data).split(b"\n")
            k = draw(st.integers(0, len(lines) - 1))
            if op == "dup-line":
                lines.insert(k, lines[k])
            elif op == "swap-lines":
                j = draw(st.integers(0, len(lines) - 1))
                lines[k], lines[j] = lines[j], lines[k]
            else:
                lines[k] = draw(st.sampled_from([b"\t", b" ", b"   ", b""])) + lines[k].lstrip()
            data = bytearray(b"\n".join(lines))
        elif op == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.sampled_from([b": ", b"- ", b"{", b"]", b"&a ", b"*a", b"!!python/name:os.system ",
                                                b"<<: ", b"'", b'"', b"#", b"${var.", b"\xef\xbb\xbf", b"\r\n",
                                                b"%YAML 1.1\n---\n", b"\n---\n", b"\x00", b"\xff\xfe"]))
    return bytes(data)


def _spec_folder(folder: Path) -> Path:
    """A project folder with the example datasets next to the spec (a valid spec finds them)."""
    data = folder / "data"
    if not data.exists():
        data.mkdir(parents=True)
        for path in EXAMPLES.glob("*/data/*.jsonl"):
            shutil.copy(path, data / path.name)
    return folder / "fastuner.yaml"


def check_spec_text(text: str | bytes, folder: Path) -> str | None:
    """Load and check in-process: success, or only diagnostics that each name file:line:col in the file."""
    from fastuner.config.checks import check_spec
    from fastuner.config.loader import load_spec
    from fastuner.errors import DiagnosticsError, Severity
    from fastuner.graph import build_graph

    file = _spec_folder(folder)
    raw = text.encode() if isinstance(text, str) else text
    file.write_bytes(raw)
    try:
        spec = load_spec(file, environ={})
        build_graph(spec)
        diagnostics = [d for d in check_spec(spec) if d.severity is Severity.ERROR]
    except DiagnosticsError as error:
        diagnostics = error.diagnostics
    except Exception as error:
        return f"traceback for a spec: {type(error).__name__}: {error} — spec {raw[:300]!r}"
    return spec_problem(diagnostics, file, raw)


def spec_problem(diagnostics: list, file: Path, raw: bytes) -> str | None:
    """The first error that does not name file:line:col inside `file` (holding `raw`)."""
    # the lines an editor shows (CR and the Unicode line breaks count, as they do in YAML)
    n_lines = max(raw.count(b"\n") + 1, len(raw.decode("utf-8", errors="replace").splitlines()))
    for d in diagnostics:
        where = d.source
        if where is None or where.line is None or where.column is None:
            return f"spec error without file:line:col: {d.summary!r} — spec {raw[:300]!r}"
        if where.file != str(file) or not 1 <= where.line <= n_lines:
            return f"spec error at {where} outside the file ({n_lines} lines): {d.summary!r}"
    return None


def check_spec_cli(example: str | bytes, folder: Path) -> str | None:
    """`fastuner validate` on a generated spec, as a user runs it: exit 0 or 1, no traceback, and an
    error names file:line:col."""
    file = _spec_folder(folder)
    file.write_bytes(example.encode() if isinstance(example, str) else example)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTUNER_")}
    env.update(PYTHONPATH=str(ROOT), NO_COLOR="1", COLUMNS="200")
    done = subprocess.run([sys.executable, "-m", "fastuner.cli.main", "validate", "-f", str(file)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    if done.returncode not in (0, 1):
        return f"validate exited {done.returncode}: {out[-500:]}"
    if "Traceback" in out:
        return f"validate printed a traceback: {out[-500:]}"
    if done.returncode == 1 and "fastuner.yaml:" not in out and "dataset" not in out:
        return f"validate's error names no file:line:col: {out[-500:]}"
    return None


# --- datasets ----------------------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=30)


@st.composite
def dataset_row(draw) -> str:
    """One line: mostly valid classification rows, and every odd JSON a file may hold."""
    kind = draw(st.sampled_from(["good", "good", "good", "nested", "nan", "dupkey", "types", "junk", "blank",
                                 "huge", "array", "unicode-escape"]))
    text, label = draw(texts), draw(st.sampled_from(["a", "b", "c", 1, 2]))
    import json

    if kind == "good":
        return json.dumps({"input": text or "x", "label": label}, ensure_ascii=draw(st.booleans()))
    if kind == "nested":
        depth = draw(st.integers(1, 3000))
        return '{"input": "x", "label": "a", "meta": ' + "[" * depth + "]" * depth + "}"
    if kind == "nan":
        return '{"input": "x", "label": "a", "score": ' + draw(st.sampled_from(["NaN", "Infinity", "-Infinity",
                                                                               "1e999", "-0"])) + "}"
    if kind == "dupkey":
        return json.dumps({"input": text}) [:-1] + ', "input": "y", "label": "a"}'
    if kind == "types":
        return json.dumps({"input": draw(values), "label": draw(values)})
    if kind == "junk":
        return draw(st.text(max_size=40))
    if kind == "blank":
        return draw(st.sampled_from(["", " ", "\t", "\x0b"]))
    if kind == "huge":
        return json.dumps({"input": "w" * draw(st.integers(8000, 300_000)), "label": "a"})
    if kind == "array":
        return json.dumps([{"input": "x", "label": "a"}])
    return '{"input": "\\ud800 \\u0000 x", "label": "\\u00e9"}'


@st.composite
def dataset_strategy(draw) -> bytes:
    """A JSONL file in some encoding, newline style, BOM and ending."""
    rows = draw(st.lists(dataset_row(), min_size=0, max_size=12))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(rows) + draw(st.sampled_from([newline, ""]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "latin-1",
                                     "utf-32"]))
    data = text.encode(encoding, errors="replace") if encoding != "latin-1" else text.encode("latin-1", "replace")
    if draw(st.booleans()) and data:  # a truncated last line (a copy cut short)
        data = data[:-draw(st.integers(1, min(len(data), 10)))]
    return data


# the file-level errors (no row to name): fastuner/data/scan.py and report.py
FILE_LEVEL = ("dataset file is empty", "dataset file has no records", "distinct row", "more bad row",
              "rows are more than a dataset may have")


def check_dataset_bytes(data: bytes, folder: Path) -> str | None:
    from fastuner.config.models import DatasetChecks
    from fastuner.data.scan import scan_dataset
    from fastuner.data.store import LocalObjectStore
    from fastuner.data.write import write_splits
    from fastuner.errors import DiagnosticsError

    path = folder / "data.jsonl"
    path.write_bytes(data)
    store_root = folder / "store"
    shutil.rmtree(store_root, ignore_errors=True)
    store = LocalObjectStore(store_root)
    try:
        scan = scan_dataset(path, "classification", rules=DatasetChecks(min_rows=1), workers=0)
    except DiagnosticsError as error:
        return dataset_problem(error.diagnostics, data) or _store_files(store_root, expected=0)
    except Exception as error:
        return f"traceback for a dataset: {type(error).__name__}: {error} — file {data[:200]!r}"
    try:
        outputs = write_splits(scan, store, workers=0)
    except DiagnosticsError as error:
        return f"a scanned dataset failed to write: {error}"
    except Exception as error:
        return f"traceback writing splits: {type(error).__name__}: {error} — file {data[:200]!r}"
    keys = {outputs["manifest_key"], *(split["key"] for split in outputs["splits"].values())}
    missing = [key for key in keys if not store.exists(key)]
    if missing:
        return f"write_splits recorded objects the store lacks: {missing}"
    return _store_files(store_root, expected=len(keys))


def dataset_problem(diagnostics: list, data: bytes) -> str | None:
    """The first error that names no row (but for the file-level ones) or a row the file lacks."""
    from fastuner.errors import Severity

    n_lines = data.count(b"\n") + 1
    for d in diagnostics:
        if d.severity is not Severity.ERROR:
            continue
        if d.source is None or d.source.line is None:
            if any(marker in d.summary for marker in FILE_LEVEL):
                continue
            return f"dataset error names no row: {d.summary!r} — file {data[:200]!r}"
        if not 1 <= d.source.line <= n_lines + 1:
            return f"dataset error at row {d.source.line} of a {n_lines}-line file: {d.summary!r}"
    return None


def _store_files(root: Path, expected: int) -> str | None:
    """The store holds exactly `expected` objects and no leftover temporary files."""
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    if len(files) != expected:
        return f"the store holds {len(files)} files, expected {expected}: {[str(f.relative_to(root)) for f in files]}"
    return None
