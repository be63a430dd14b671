"""`fastuner init`: a new project in a folder, ready for `fastuner validate && fastuner plan`.

It writes a commented fastuner.yaml (templates/init/fastuner.yaml.j2), a small sample dataset for the
task, the spec's JSON Schema for editors, and with `--ci github` the workflow `fastuner ci github` writes
(the same settings and template). All or nothing: if any of those files exists, it names every one and
writes none, so it never overwrites work. `.gitignore` is the exception: the lines for fastuner's local
files that it lacks are appended (its own lines are kept), which is why it is not in the refusal.

The sample is smaller than a dataset's default minimum (100 distinct rows), so the spec sets
`checks.min_rows` to what it holds, with a comment saying to raise it: the scaffold validates as written.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.markup import escape

from fastuner import __version__
from fastuner.cli.ci import GITHUB_DEFAULTS, aws_of_spec_text, github_settings, spec_variables
from fastuner.config.models import PROJECT_PATTERN, DatasetChecks
from fastuner.config.tasks import Family, Task
from fastuner.errors import UserError, relpath

PROVIDERS = ("local", "sagemaker")
CI_SYSTEMS = ("github",)
SPEC_FILE = "fastuner.yaml"
SCHEMA_FILE = "specs/fastuner.schema.json"  # where `fastuner schema` writes it too, so it can be refreshed
WORKFLOW_FILE = ".github/workflows/fastuner.yml"  # where `fastuner ci github` writes it
MIN_ROWS = 10  # every sample holds more distinct rows than this

# Each task's dataset name (the adapter is NAME-lora, the deployment NAME-api).
DATASET_NAMES = {Task.CLASSIFICATION: "intents", Task.TEXT_GENERATION: "replies", Task.QA: "faq"}


@dataclass(frozen=True)
class Preset:
    """A base model and training settings that suit a family's sample (small, quick to train)."""

    base_model: str
    epochs: int
    learning_rate: str  # as written in the spec
    max_seq_len: int


PRESETS = {
    # the quickstart's settings: a small encoder whose classification head learns quickly
    Family.CLASSIFICATION: Preset("sentence-transformers/all-MiniLM-L6-v2", 6, "3.0e-3", 64),
    Family.GENERATION: Preset("Qwen/Qwen2.5-0.5B", 3, "2.0e-4", 512),
}
TRAINING_INSTANCE = "ml.g5.xlarge"
SERVING_INSTANCE = "ml.g5.xlarge"

# What the local state backend and the local provider write next to fastuner.yaml that no one should
# commit: the state's lock, its previous version and the temporary files of its atomic writes
# (fastuner/state/local.py), and the work folder (objects, training runs, logs). The state file itself
# is left out: CI with a local backend needs it committed (see the workflow's header).
GITIGNORE_HEADER = "# fastuner: the local state's lock, backup and temporary files, and the local work folder"
GITIGNORE_LINES = ("/.fastuner/", "/state/*.json.lock", "/state/*.json.backup", "/state/.*.tmp")


@dataclass(frozen=True)
class Scaffold:
    """Everything init would write: new files by path (text), and the lines .gitignore lacks."""

    folder: Path
    project: str
    files: dict[Path, str]
    descriptions: dict[Path, str]
    gitignore: Path
    gitignore_missing: list[str]
    notes: list[str]


def project_name(folder: Path, given: str | None) -> str:
    """`given` if it is a valid project name, else the folder's name made into one: accents dropped,
    lowercase, every run of other characters a dash, at most 20 characters."""
    pattern = re.compile(PROJECT_PATTERN)
    if given is not None:
        if pattern.match(given):
            return given
        hint = sanitise(given)
        raise UserError(f"--project {given!r} is not a valid project name",
                        "Use lowercase letters, digits and dashes (at most 20, starting and ending with a letter "
                        "or digit)" + (f", e.g. --project {hint}." if hint else "."))
    name = sanitise(folder.name)
    if not name:
        raise UserError(f"cannot make a project name from the folder name {folder.name!r}",
                        "Pass one with --project NAME (lowercase letters, digits and dashes).")
    return name


def sanitise(text: str) -> str:
    """A project name made from any text, or "" when nothing usable is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    name = name[:20].rstrip("-")
    return name if re.match(PROJECT_PATTERN, name) else ""


def plan_scaffold(folder: Path, *, provider: str, task: str, project: str | None, ci: str | None) -> Scaffold:
    """What init would write into `folder` (reads only)."""
    from fastuner.config.schema import spec_schema_text
    from fastuner.views.scaffold import render_spec, sample_dataset

    if provider not in PROVIDERS:
        raise UserError(f"--provider {provider!r} is not one of {', '.join(PROVIDERS)}")
    if ci is not None and ci not in CI_SYSTEMS:
        raise UserError(f"--ci {ci!r} is not one of {', '.join(CI_SYSTEMS)}")
    try:
        kind = Task(task)
    except ValueError:
        raise UserError(f"--task {task!r} is not one of {', '.join(Task)}") from None
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{relpath(folder)} is a file, not a folder", "Name a folder for the new project.")
    folder = folder.resolve()
    name = project_name(folder, project)
    dataset = DATASET_NAMES[kind]
    data_path = f"data/{dataset}.jsonl"
    sample = sample_dataset(kind.value)
    preset = PRESETS[kind.family]
    spec = render_spec({
        "version": __version__, "project": name, "provider": provider, "task": kind.value,
        "target_field": kind.definition.target_field, "dataset": dataset, "adapter": f"{dataset}-lora",
        "deployment": f"{dataset}-api", "data_path": data_path, "rows": len(sample.splitlines()),
        "min_rows": MIN_ROWS, "default_min_rows": DatasetChecks.model_fields["min_rows"].default,
        "base_model": preset.base_model, "epochs": preset.epochs,
        "learning_rate": preset.learning_rate, "max_seq_len": preset.max_seq_len, "schema_path": SCHEMA_FILE,
        "training_instance": TRAINING_INSTANCE, "serving_instance": SERVING_INSTANCE,
    })
    files = {folder / SPEC_FILE: spec, folder / data_path: sample, folder / SCHEMA_FILE: spec_schema_text()}
    descriptions = {
        folder / SPEC_FILE: f"the spec ({provider} provider), commented",
        folder / data_path: f"{len(sample.splitlines())} sample rows ({kind.value}): replace them with your data",
        folder / SCHEMA_FILE: "the spec's JSON Schema, for your editor",
    }
    notes = []
    if ci == "github":
        path, text, words = _github_workflow(folder, spec)
        files[path], descriptions[path] = text, words
        if provider == "local":
            notes.append("The workflow's header says what CI needs with the local provider: state committed "
                         "to the repository, and a self-hosted runner for apply and reap.")
        else:
            notes.append("The workflow's jobs get AWS credentials by assuming the role in the repository variable "
                         "FASTUNER_AWS_ROLE (its header says what the role must trust); FASTUNER_VAR_account must "
                         "be in the runner's environment: the workflow does not set it.")
    gitignore = folder / ".gitignore"
    return Scaffold(folder, name, files, descriptions, gitignore, _missing_lines(gitignore), notes)


def run_init(directory: str, *, provider: str, task: str, project: str | None, ci: str | None,
             console: Console) -> int:
    scaffold = plan_scaffold(Path(directory), provider=provider, task=task, project=project, ci=ci)
    existing = [p for p in scaffold.files if p.exists() or p.is_symlink()]
    if scaffold.gitignore.exists() and not scaffold.gitignore.is_file():
        existing.append(scaffold.gitignore)  # appended to when it is a file; anything else is in the way
    if existing:
        raise UserError("fastuner init writes no file that exists already; these do: "
                        + ", ".join(relpath(p) for p in existing),
                        "Nothing was written. Move them away, or run init in another folder"
                        + (" (`fastuner ci github --out FILE` writes the workflow elsewhere)."
                           if any(p.name == "fastuner.yml" for p in existing) else "."))
    addition, gitignore_words = _gitignore_addition(scaffold)
    _write_all(scaffold.files, scaffold.gitignore, addition)

    rows = [(relpath(p), scaffold.descriptions[p]) for p in scaffold.files]
    rows.append((relpath(scaffold.gitignore), gitignore_words))
    width = max(len(path) for path, _ in rows)
    where = "here" if scaffold.folder == Path.cwd().resolve() else f"in {relpath(scaffold.folder)}"
    console.print(f"[bold green]Wrote project {escape(scaffold.project)}[/bold green] {escape(where)}:")
    for path, words in rows:
        console.print(f"  {escape(path.ljust(width))}  {escape(words)}")
    for note in scaffold.notes:
        console.print(escape(note))
    console.print("Next:")
    for line in _next_commands(scaffold, provider):
        console.print(f"  {escape(line)}")
    return 0


# --- helpers ------------------------------------------------------------------------------------


def _github_workflow(folder: Path, spec: str) -> tuple[Path, str, str]:
    """The workflow at the root of the git repository holding `folder` (GitHub reads workflows only
    there), running in `folder`; without a repository, in `folder` itself. For a spec on AWS, the
    variant `fastuner ci github` writes for it (OIDC credentials, the reap by tags)."""
    from fastuner.views.ci import render_github_workflow

    root = next((p for p in (folder, *folder.parents) if (p / ".git").exists()), folder)
    workdir = PurePosixPath(*folder.relative_to(root).parts) if folder != root else PurePosixPath(".")
    aws, region = aws_of_spec_text(spec)
    settings = github_settings(**{**GITHUB_DEFAULTS, "workdir": str(workdir)}, aws=aws, aws_region=region,
                               variables=spec_variables(spec))
    rerun = "fastuner ci github --force" + ("" if str(workdir) == "." else f" --workdir {shlex.quote(str(workdir))}")
    words = (f"plan on pull requests, apply on push to {settings['branch']}, reap on {settings['reap_cron']} (UTC); "
             f"`{rerun}` rewrites it with other settings")
    return root / WORKFLOW_FILE, render_github_workflow(settings), words


def _write_all(files: dict[Path, str], gitignore: Path, append: str) -> None:
    """Create every file, none existing before (mode "x"), then append to .gitignore; if anything fails,
    the files created are removed again."""
    written: list[Path] = []
    path = gitignore
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8") as f:
                written.append(path)
                f.write(text)
        path = gitignore
        if append:
            with open(gitignore, "a", encoding="utf-8") as f:
                f.write(append)
    except OSError as exc:
        for done in written:
            done.unlink(missing_ok=True)
        raise UserError(f"cannot write {relpath(path)}: {exc.strerror or exc}", "Nothing was written.") from None


def _missing_lines(gitignore: Path) -> list[str]:
    """Our lines that .gitignore lacks; a line without the leading slash counts (it ignores more)."""
    if not gitignore.is_file():
        return list(GITIGNORE_LINES)
    present = {line.strip() for line in gitignore.read_text("utf-8", errors="replace").splitlines()}
    return [line for line in GITIGNORE_LINES if line not in present and line.lstrip("/") not in present]


def _gitignore_addition(scaffold: Scaffold) -> tuple[str, str]:
    """The text to append to .gitignore ("" for none) and the words for it."""
    path, missing = scaffold.gitignore, scaffold.gitignore_missing
    if not missing:
        return "", "already ignores fastuner's local files (unchanged)"
    before = path.read_text("utf-8", errors="replace") if path.is_file() else ""
    separator = "" if not before else ("\n" if before.endswith("\n") else "\n\n")
    header = [] if GITIGNORE_HEADER in before.splitlines() else [GITIGNORE_HEADER]
    text = separator + "\n".join([*header, *missing]) + "\n"
    if not before:
        return text, "ignores fastuner's local files (state lock and backup, .fastuner/)"
    return text, f"{len(missing)} line(s) for fastuner's local files appended; its other lines kept"


def _next_commands(scaffold: Scaffold, provider: str) -> list[str]:
    lines = []
    if scaffold.folder != Path.cwd().resolve():
        lines.append(f"cd {shlex.quote(relpath(scaffold.folder))}")
    if provider == "sagemaker":
        lines += ["export FASTUNER_VAR_account=123456789012   # your AWS account id",
                  "fastuner iam-policy                         # what the identity that runs fastuner needs",
                  "fastuner bootstrap                          # once: the S3 bucket and the execution role"]
    lines.append("fastuner validate && fastuner plan")
    return lines
