"""The `fastuner` command: typed options in, exit code out.

Heavy modules (pydantic, networkx, the engine, torch) are imported inside commands so that
`fastuner --help` stays fast. User errors (DiagnosticsError) print as diagnostics and exit 1; anything
else is a bug and keeps its traceback.

No `from __future__ import annotations` here: typer reads every command's annotations on every run,
and evaluating them from strings cost 30 ms, `--help` included.
"""

import gc
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

from fastuner import __version__
from fastuner.cli import runtime

app = typer.Typer(
    name="fastuner",
    help="Declarative LoRA fine-tuning: plan, apply and destroy datasets, adapters and deployments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
state_app = typer.Typer(help="Inspect and edit the state.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(state_app, name="state")
ci_app = typer.Typer(help="Generate CI configuration.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(ci_app, name="ci")
prices_app = typer.Typer(help="SageMaker prices the plan estimates with.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(prices_app, name="prices")

# The options every command that loads the spec takes (tests/cli/test_options.py checks each command).
FileOpt = Annotated[str | None, typer.Option("--file", "-f", metavar="FILE",
                                             help="Spec file (default: ./fastuner.yaml).")]
VarOpt = Annotated[list[str] | None, typer.Option("--var", metavar="NAME=VALUE", help="Set a variable "
                                                  "(repeatable; also FASTUNER_VAR_NAME).")]
WorkspaceOpt = Annotated[str | None, typer.Option("--workspace", "-w", metavar="NAME", help="Workspace (one state "
                                                  "each); default from FASTUNER_WORKSPACE or 'default'.")]
LockTimeoutOpt = Annotated[str, typer.Option("--lock-timeout", metavar="DURATION", help="Wait this long for a "
                                             "state lock held by another run (e.g. 30s, 5m) instead of failing.")]
TargetOpt = Annotated[list[str] | None, typer.Option("--target", metavar="ADDRESS", help="Only this resource and "
                                                     "what it depends on (repeatable; the plan is partial).")]
RefreshOnlyOpt = Annotated[bool, typer.Option("--refresh-only", help="Only record in state what changed outside "
                                              "fastuner; create, update or destroy nothing.")]
ReplaceOpt = Annotated[list[str] | None, typer.Option("--replace", metavar="ADDRESS",
                                                      help="Force replacement of ADDRESS (repeatable).")]
RenewOpt = Annotated[list[str] | None, typer.Option("--renew", metavar="ADDRESS",
                                                    help="Bring back an expired deployment (repeatable).")]
ParallelismOpt = Annotated[int, typer.Option("--parallelism", min=1, max=256, metavar="N",
                                             help="Operations at once.")]
NoColorOpt = Annotated[bool, typer.Option("--no-color", help="Plain output.")]
# --json also makes a failure a JSON document on stdout (kind "error", docs/json.md): eager, so that it is
# known before any other option is converted (and can fail).
_JSON_ERRORS: ContextVar[bool] = ContextVar("fastuner_json_errors", default=False)


def _json_requested(value: bool) -> bool:
    if value:
        _JSON_ERRORS.set(True)
    return value


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output (docs/json.md); errors too.",
                                       callback=_json_requested, is_eager=True)]
PolicyOpt = Annotated[str | None, typer.Option("--policy", metavar="FILE", help="A policy file whose guard-rails "
                                               "add to the spec's `policy:` (stricter only; also FASTUNER_POLICY). "
                                               "A plan that breaks one exits 3 and is never applied.")]


class _Command(TyperCommand):
    """Help that names an argument by its metavar alone (`ADDRESS`), without typer's Python type
    (`<list[str]>`) beside it, and gives every option that takes a value a word for it (`--out FILE`,
    `--seed N`) instead of `<str>` or `<int range>`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument) and param.metavar:
                param.display_type_rich = lambda ctx: None
            elif isinstance(param, TyperOption) and not param.is_flag and not param.metavar:
                param.metavar = _value_word(param)


def _value_word(option: TyperOption) -> str:
    kind = option.bare_type()
    if kind == "int":
        return "N"
    if kind == "float":
        return "NUMBER"
    return max(option.opts, key=len).lstrip("-").replace("-", "_").upper()


def _clock() -> Callable[[], datetime]:
    return runtime.current().clock


def _console(no_color: bool = False, stderr: bool = False):
    from rich.console import Console

    return Console(no_color=no_color, stderr=stderr, highlight=False, soft_wrap=True)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"fastuner {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                                help="Show the version and exit.")] = False) -> None:
    """Declarative LoRA fine-tuning."""


# --- init ----------------------------------------------------------------------------------------


class InitProvider(StrEnum):
    local = "local"
    sagemaker = "sagemaker"


class InitTask(StrEnum):  # the dataset tasks (fastuner/config/tasks.py; tests/cli/test_init.py keeps them equal)
    classification = "classification"
    text_generation = "text_generation"
    qa = "qa"


class CiSystem(StrEnum):
    github = "github"


@app.command(cls=_Command)
def init(
    directory: Annotated[str, typer.Argument(metavar="DIR", help="Folder of the new project (created if "
                                             "missing; default: this one).")] = ".",
    provider: Annotated[InitProvider, typer.Option("--provider", metavar="local|sagemaker", help="Where the work "
                                                   "runs: this machine, or Amazon SageMaker.")] = InitProvider.local,
    task: Annotated[InitTask, typer.Option("--task", metavar="classification|text_generation|qa",
                                           help="The sample dataset's task.")] = InitTask.classification,
    project: Annotated[str | None, typer.Option("--project", metavar="NAME", help="Project name (default: the "
                                                "folder's name, made valid).")] = None,
    ci: Annotated[CiSystem | None, typer.Option("--ci", metavar="github", help="Also write the CI workflow "
                                                "(as `fastuner ci github` does).")] = None,
    no_color: NoColorOpt = False,
) -> None:
    """Start a project: a commented fastuner.yaml, a sample dataset, the spec's JSON Schema and .gitignore
    lines (with --ci github, the workflow too). Overwrites nothing."""
    from fastuner.cli.scaffold import run_init

    raise typer.Exit(run_init(directory, provider=provider.value, task=task.value, project=project,
                              ci=ci.value if ci else None, console=_console(no_color)))


# --- validate ------------------------------------------------------------------------------------


@app.command(cls=_Command)
def validate(file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
             no_color: NoColorOpt = False, json_out: JsonOpt = False) -> None:
    """Check the spec and every dataset (rows, duplicates, splits) without changing anything."""
    from fastuner.cli.commands import run_validate

    raise typer.Exit(run_validate(file, var, workspace, _console(no_color), json_out))


# --- plan / show / apply / destroy ---------------------------------------------------------------


@app.command(cls=_Command)
def plan(
    file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
    out: Annotated[str | None, typer.Option("--out", "-o", metavar="FILE",
                                            help="Save the plan (JSON) for apply.")] = None,
    detailed_exitcode: Annotated[bool, typer.Option("--detailed-exitcode", help="Exit 0: no changes, 1: error, "
                                                    "2: changes present (3: the plan breaks the policy, with or "
                                                    "without this).")] = False,
    destroy: Annotated[bool, typer.Option("--destroy", help="Plan to destroy everything in state.")] = False,
    replace: ReplaceOpt = None, renew: RenewOpt = None, target: TargetOpt = None, refresh_only: RefreshOnlyOpt = False,
    policy: PolicyOpt = None, json_out: JsonOpt = False, no_color: NoColorOpt = False,
) -> None:
    """Show what apply would change. Reads only."""
    from fastuner.cli.commands import run_plan

    raise typer.Exit(run_plan(file, var, workspace, out=out, detailed_exitcode=detailed_exitcode, destroy=destroy,
                              replace=replace or [], renew=renew or [], target=target or [],
                              refresh_only=refresh_only, json_out=json_out, console=_console(no_color),
                              clock=_clock(), policy=policy))


@app.command(cls=_Command)
def show(
    planfile: Annotated[str | None, typer.Argument(metavar="PLANFILE|ADDRESS", help="A saved plan, or a resource "
                                                   "in state (a deployment with its metrics); without it, the "
                                                   "state is shown.")] = None,
    file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
    json_out: JsonOpt = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown for a pull-request comment.")] = False,
    since: Annotated[str | None, typer.Option("--since", metavar="DURATION", help="A deployment's metrics over "
                                              "this long until now (default 1h).")] = None,
    no_color: NoColorOpt = False,
) -> None:
    """Render a saved plan (terminal, --json or --markdown), a resource with a deployment's metrics
    (invocations, errors, latency per adapter), or the current state."""
    from fastuner.cli.commands import run_show

    raise typer.Exit(run_show(planfile, file, var, workspace, json_out=json_out, markdown=markdown,
                              console=_console(no_color), since=since, clock=_clock()))


@app.command(cls=_Command)
def apply(
    planfile: Annotated[str | None, typer.Argument(metavar="PLANFILE", help="Apply exactly this saved plan.")] = None,
    file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Skip the confirmation.")] = False,
    parallelism: ParallelismOpt = 10,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Start long operations (training) and return; "
                                          "the next plan or apply picks them up.")] = False,
    replace: ReplaceOpt = None, renew: RenewOpt = None, target: TargetOpt = None, refresh_only: RefreshOnlyOpt = False,
    policy: PolicyOpt = None, lock_timeout: LockTimeoutOpt = "0s", no_color: NoColorOpt = False,
) -> None:
    """Make the world match the spec (or carry out a saved plan)."""
    from fastuner.cli.commands import run_apply

    raise typer.Exit(run_apply(planfile, file, var, workspace, auto_approve=auto_approve, parallelism=parallelism,
                               wait=not no_wait, replace=replace or [], renew=renew or [], destroy=False,
                               target=target or [], refresh_only=refresh_only, lock_timeout=lock_timeout,
                               console=_console(no_color), clock=_clock(), policy=policy))


@app.command(cls=_Command)
def destroy(
    file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Skip the confirmation.")] = False,
    parallelism: ParallelismOpt = 10,
    target: Annotated[list[str] | None, typer.Option("--target", metavar="ADDRESS", help="Only this resource and "
                                                     "what depends on it (repeatable).")] = None,
    policy: PolicyOpt = None, lock_timeout: LockTimeoutOpt = "0s", no_color: NoColorOpt = False,
) -> None:
    """Destroy everything recorded in state, dependents first (never a protected resource)."""
    from fastuner.cli.commands import run_apply

    raise typer.Exit(run_apply(None, file, var, workspace, auto_approve=auto_approve, parallelism=parallelism,
                               wait=True, replace=[], renew=[], destroy=True, target=target or [],
                               lock_timeout=lock_timeout, console=_console(no_color), clock=_clock(),
                               policy=policy))


@app.command(cls=_Command)
def reap(
    file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Skip the confirmation.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be reaped.")] = False,
    from_tags: Annotated[bool, typer.Option("--from-tags", help="SageMaker: judge every endpoint of the project "
                                            "by its tags alone (fastuner:expires-at, fastuner:idle-ttl), without "
                                            "planning from state; what a state tracks is recorded there.")] = False,
    all_projects: Annotated[bool, typer.Option("--all-projects", help="With --from-tags (implied): the expired "
                                               "endpoints of every fastuner project in the region.")] = False,
    policy: PolicyOpt = None, lock_timeout: LockTimeoutOpt = "0s", json_out: JsonOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Destroy every deployment past its ttl or idle_ttl (for a schedule: needs no dataset files). On
    SageMaker, endpoints that no state records (or, without a state, all) are found by their tags."""
    from fastuner.cli.reap import run_reap

    raise typer.Exit(run_reap(file, var, workspace, auto_approve=auto_approve, dry_run=dry_run, json_out=json_out,
                              lock_timeout=lock_timeout, console=_console(no_color), clock=_clock(),
                              policy=policy, from_tags=from_tags, all_projects=all_projects))


# --- AWS setup ---------------------------------------------------------------------------------


class PolicyRole(StrEnum):
    runner = "runner"
    execution = "execution"


@app.command("iam-policy", cls=_Command)
def iam_policy(
    file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
    role: Annotated[PolicyRole, typer.Option("--role", metavar="runner|execution", help="runner: the identity that runs fastuner; "
                                             "execution: the role SageMaker jobs assume.")] = PolicyRole.runner,
    trust: Annotated[bool, typer.Option("--trust", help="With --role execution: print its trust policy "
                                        "instead.")] = False,
) -> None:
    """Print the least-privilege IAM policy this spec needs (JSON, for `aws iam put-role-policy`)."""
    from fastuner.cli.aws_setup import run_iam_policy

    raise typer.Exit(run_iam_policy(file, var, workspace, role=role.value, trust=trust,
                                    err_console=_console(stderr=True)))


@app.command(cls=_Command)
def bootstrap(
    file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
    role_name: Annotated[str | None, typer.Option("--role-name", metavar="NAME", help="The SageMaker execution "
                                                  "role to create or update (default: the one role_arn names).")] = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Skip the confirmation.")] = False,
    json_out: JsonOpt = False, no_color: NoColorOpt = False,
) -> None:
    """Create the S3 bucket(s) and the SageMaker execution role this spec needs, or bring them in line
    (versioning, encryption, no public access, lifecycle rules, the role's policy). Never deletes."""
    from fastuner.cli.aws_setup import run_bootstrap

    raise typer.Exit(run_bootstrap(file, var, workspace, role_name=role_name, auto_approve=auto_approve,
                                   json_out=json_out, console=_console(no_color)))


# --- cost ----------------------------------------------------------------------------------------


@app.command(cls=_Command)
def cost(file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None, json_out: JsonOpt = False,
         no_color: NoColorOpt = False) -> None:
    """What each resource cost (billed time × price, from state) beside what its plan estimated."""
    from fastuner.cli.cost import run_cost

    raise typer.Exit(run_cost(file, var, workspace, json_out=json_out, console=_console(no_color), clock=_clock()))


@prices_app.command("update", cls=_Command)
def prices_update(region: Annotated[list[str] | None, typer.Option("--region", metavar="REGION", help="A region "
                                                                   "to refresh (repeatable; default: every "
                                                                   "region fastuner ships prices for).")] = None,
                  json_out: JsonOpt = False, no_color: NoColorOpt = False) -> None:
    """Refresh SageMaker prices from the AWS Price List API (pricing:GetProducts) into the user's cache."""
    from fastuner.cli.cost import run_prices_update

    raise typer.Exit(run_prices_update(region, json_out=json_out, console=_console(no_color), clock=_clock()))


@prices_app.command("show", cls=_Command)
def prices_show(json_out: JsonOpt = False, no_color: NoColorOpt = False) -> None:
    """Each region's prices as plans use them: shipped or updated, as of when, from where."""
    from fastuner.cli.cost import run_prices_show

    raise typer.Exit(run_prices_show(json_out=json_out, console=_console(no_color), clock=_clock()))


# --- state ---------------------------------------------------------------------------------------


@state_app.command("list", cls=_Command)
def state_list(file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
               no_color: NoColorOpt = False, json_out: JsonOpt = False) -> None:
    """List the addresses in state."""
    from fastuner.cli.state_commands import run_state_list

    raise typer.Exit(run_state_list(file, var, workspace, _console(no_color), json_out,
                                    _console(no_color, stderr=True)))


@state_app.command("show", cls=_Command)
def state_show(address: Annotated[str, typer.Argument(metavar="ADDRESS")], file: FileOpt = None,
               var: VarOpt = None, workspace: WorkspaceOpt = None, no_color: NoColorOpt = False,
               json_out: JsonOpt = False) -> None:
    """Show one resource's inputs, outputs and status."""
    from fastuner.cli.state_commands import run_state_show

    raise typer.Exit(run_state_show(address, file, var, workspace, _console(no_color), json_out))


@state_app.command("rm", cls=_Command)
def state_rm(addresses: Annotated[list[str], typer.Argument(metavar="ADDRESS", help="One or more (repeatable).")],
             file: FileOpt = None,
             var: VarOpt = None, workspace: WorkspaceOpt = None, lock_timeout: LockTimeoutOpt = "0s",
             no_color: NoColorOpt = False) -> None:
    """Forget resources (nothing is destroyed; fastuner stops managing them)."""
    from fastuner.cli.state_commands import run_state_rm

    raise typer.Exit(run_state_rm(addresses, file, var, workspace, _console(no_color), lock_timeout=lock_timeout))


@state_app.command("pull", cls=_Command)
def state_pull(out: Annotated[str, typer.Argument(metavar="FILE", help="Where to write the state ('-', the "
                                                 "default: stdout).")] = "-",
               serial: Annotated[int | None, typer.Option("--serial", metavar="N", help="An earlier version: "
                                                          "from the S3 bucket's versions, or the local .backup.")] = None,
               file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
               no_color: NoColorOpt = False) -> None:
    """Write the stored state (JSON) to stdout or a file, from whichever backend the spec names."""
    from fastuner.cli.state_commands import run_state_pull

    raise typer.Exit(run_state_pull(out, file, var, workspace, _console(no_color, stderr=out == "-"),
                                    serial=serial))


@state_app.command("push", cls=_Command)
def state_push(source: Annotated[str, typer.Argument(metavar="FILE", help="A state file ('-': stdin), e.g. "
                                                    "written by `state pull`.")],
               force: Annotated[bool, typer.Option("--force", help="Push even a state of another lineage or an "
                                                   "older serial (replaces what is stored).")] = False,
               file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
               lock_timeout: LockTimeoutOpt = "0s", no_color: NoColorOpt = False) -> None:
    """Store a state file in the spec's backend (moving state between backends), under the lock; refuses
    another lineage or an older serial unless --force."""
    from fastuner.cli.state_commands import run_state_push

    raise typer.Exit(run_state_push(source, force, file, var, workspace, _console(no_color), lock_timeout=lock_timeout))


@app.command("force-unlock", cls=_Command)
def force_unlock(lock_id: Annotated[str, typer.Argument(metavar="LOCK_ID",
                                                       help="The lock ID shown by the refused command.")],
                 file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
                 no_color: NoColorOpt = False, json_out: JsonOpt = False) -> None:
    """Release a lock left by a crashed run (only when you are sure it is not running)."""
    from fastuner.cli.state_commands import run_force_unlock

    raise typer.Exit(run_force_unlock(lock_id, file, var, workspace, _console(no_color), json_out))


@app.command("import", cls=_Command)
def import_(address: Annotated[str, typer.Argument(metavar="ADDRESS", help="The resource of the spec, e.g. "
                                                  "adapter.intents-lora.")],
            resource_id: Annotated[str, typer.Argument(metavar="ID", help="What exists: a SageMaker training "
                                                       "job's name.")],
            file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
            lock_timeout: LockTimeoutOpt = "0s", no_color: NoColorOpt = False, json_out: JsonOpt = False) -> None:
    """Bring an existing resource under fastuner, checked against the spec (nothing is created)."""
    from fastuner.cli.commands import run_import

    raise typer.Exit(run_import(address, resource_id, file, var, workspace, console=_console(no_color),
                                clock=_clock(), lock_timeout=lock_timeout, json_out=json_out))


@app.command(cls=_Command)
def logs(
    address: Annotated[str, typer.Argument(metavar="ADDRESS", help="adapter.NAME (training log) or "
                                           "deployment.NAME (server log).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the process ends.")] = False,
    file: Annotated[str | None, typer.Option("--file", metavar="FILE", help="Spec file (default: ./fastuner.yaml; "
                                             "-f is --follow here).")] = None,
    var: VarOpt = None, workspace: WorkspaceOpt = None,
) -> None:
    """Print the log of a training run or a served deployment."""
    from fastuner.cli.state_commands import run_logs

    raise typer.Exit(run_logs(address, follow, file, var, workspace, _console()))


@app.command(cls=_Command)
def invoke(
    address: Annotated[str, typer.Argument(metavar="ADDRESS", help="deployment.NAME")],
    adapter: Annotated[str | None, typer.Option("--adapter", "-a", metavar="NAME", help="Adapter to use (default: the "
                                                "deployment's only adapter, else the base model).")] = None,
    input_text: Annotated[str | None, typer.Option("--input", "-i", metavar="TEXT", help="One input; prints the answer.")] = None,
    batch: Annotated[str | None, typer.Option("--batch", metavar="FILE", help="JSONL file, an object with `input` a line.")] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", metavar="FILE", help="Where --batch writes (default: stdout).")] = None,
    evaluate: Annotated[bool, typer.Option("--evaluate", help="Score the adapter on its dataset's test split "
                                           "next to the base model.")] = False,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", min=1)] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", min=0.0)] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", min=0.0, max=1.0)] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", metavar="TEXT", help="Stop string (repeatable).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampling seed.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256, help="Requests at once.")] = 8,
    rows_per_request: Annotated[int, typer.Option("--rows-per-request", min=1, max=256)] = 8,
    retries: Annotated[int, typer.Option("--retries", min=0, max=20, help="On 5xx and connection errors, "
                                         "with exponential backoff.")] = 3,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds per request.")] = 120.0,
    file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
    json_out: JsonOpt = False, no_color: NoColorOpt = False,
) -> None:
    """Send inputs to a deployment: one (--input), a JSONL file (--batch) or its test split (--evaluate)."""
    from fastuner.cli.invoke import Options, generation_params, run_invoke

    options = Options(adapter=adapter, text=input_text, batch=batch, out=out, evaluate=evaluate,
                      params=generation_params(max_new_tokens, temperature, top_p, stop, seed),
                      concurrency=concurrency, rows_per_request=rows_per_request, retries=retries,
                      timeout=timeout, json_out=json_out)
    raise typer.Exit(run_invoke(address, options, file, var, workspace, console=_console(no_color),
                                err_console=_console(no_color, stderr=True), clock=_clock()))


@ci_app.command("github", cls=_Command)
def ci_github(
    out: Annotated[str, typer.Option("--out", "-o", help="Where to write ('-': stdout).")]
        = ".github/workflows/fastuner.yml",
    python: Annotated[str, typer.Option("--python", help="Python version on the runner.")] = "3.11",
    workdir: Annotated[str, typer.Option("--workdir", help="Folder of fastuner.yaml, from the repository root.")] = ".",
    reap_cron: Annotated[str, typer.Option("--reap-cron", help="When to run `fastuner reap` (UTC cron).")]
        = "17 * * * *",
    branch: Annotated[str, typer.Option("--branch", help="Default branch: a push to it applies.")] = "main",
    runs_on: Annotated[str, typer.Option("--runs-on", help="Runner label.")] = "ubuntu-latest",
    install: Annotated[str | None, typer.Option("--install", help="Command that installs fastuner "
                                                "(default: pip install this version).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a different existing file.")] = False,
    aws: Annotated[bool | None, typer.Option("--aws/--no-aws", help="Jobs assume an AWS role through OIDC and "
                                             "reap by tags (default: when the spec in --workdir uses AWS).",
                                             show_default=False)] = None,
    aws_region: Annotated[str | None, typer.Option("--aws-region", metavar="REGION", help="With --aws: the "
                                                   "region (default: the spec's).")] = None,
    aws_role: Annotated[str | None, typer.Option("--aws-role", metavar="ARN", help="With --aws: the role to "
                                                 "assume (default: the repository variable FASTUNER_AWS_ROLE).")] = None,
) -> None:
    """Write a GitHub Actions workflow: plan on pull requests, apply on push, reap on a schedule."""
    from fastuner.cli.ci import run_ci_github

    raise typer.Exit(run_ci_github(out=out, python=python, workdir=workdir, reap_cron=reap_cron, branch=branch,
                                   runs_on=runs_on, install=install, force=force, console=_console(), aws=aws,
                                   aws_region=aws_region, aws_role=aws_role))


@app.command(cls=_Command)
def schema(
    check: Annotated[bool, typer.Option("--check", help="Fail if the files in specs/ and state/ are stale.")] = False,
    root: Annotated[str, typer.Option("--root", help="Repository root to write into.")] = ".",
) -> None:
    """Write the JSON Schemas of fastuner.yaml (specs/) and of the state (state/)."""
    from fastuner.cli.state_commands import run_schema

    raise typer.Exit(run_schema(check, root, _console()))


# Objects the collector lets pile up before it walks the young generation (CPython's default: 700). A
# command imports typer, pydantic and networkx and builds a plan of mostly acyclic values: by default
# the collector ran 300 times in a 1,000-resource plan, walking every object twice, 0.14 s of its CPU
# (bench/plan_scale.py); at 50,000 it runs a few times for 0.05 s. mypy raises its threshold likewise.
GC_YOUNG_THRESHOLD = 50_000


def main(argv: list[str] | None = None, *, clock: Callable[[], datetime] | None = None,
         environ: Mapping[str, str] | None = None) -> int:
    """Console-script entry point: user errors become diagnostics and exit 1; bugs keep their traceback.

    Usage errors also exit 1 (not click's 2), so that `plan --detailed-exitcode` keeps 2 for "changes".
    `clock` is the current time for every decision a command makes (expiry, idleness); default: the system's.
    `environ` is the environment it reads (FASTUNER_WORKSPACE, FASTUNER_VAR_*, what the training and
    serving programs start with); default: `os.environ`.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
    try:
        with runtime.running(runtime.Runtime(clock=clock or runtime.system_clock,
                                             **({"environ": environ} if environ is not None else {}))):
            return _run(argv)
    finally:
        gc.set_threshold(*thresholds)  # as it was, for a caller in the same process (tests)


def _run(argv: list[str] | None) -> int:
    token = _JSON_ERRORS.set(False)
    try:
        return _run_app(argv)
    finally:
        _JSON_ERRORS.reset(token)


def _run_app(argv: list[str] | None) -> int:
    """With --json, a failure is also written as a JSON error document on stdout (the text still goes
    to stderr); the exit code is the same either way."""
    try:
        rc = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        _console(stderr=True).print("Aborted.")
        return _json_error("Aborted.", "", 1)
    except KeyboardInterrupt:
        _console(stderr=True).print("Interrupted.")
        return _json_error("Interrupted.", "", 130)
    except typer.TyperException as exc:  # usage errors (bad option, missing argument)
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            _console(stderr=True).print(str(exc))
        # parsing failed before --json's callback may have run: the words on the command line decide
        json_asked = "--json" in (argv if argv is not None else sys.argv[1:])
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return _json_error(message, "Run the command with --help for its usage.", 1, asked=json_asked)
    except Exception as exc:
        from fastuner.errors import DiagnosticsError

        if isinstance(exc, DiagnosticsError):
            from fastuner.config.sensitive import Sensitive
            from fastuner.views.diagnostics import render_diagnostics

            hidden = Sensitive(runtime.current().sensitive)  # a check that quotes a sensitive value
            diagnostics = [hidden.mask_diagnostic(d) for d in exc.diagnostics]
            render_diagnostics(diagnostics, _console(stderr=True))
            if _JSON_ERRORS.get():
                from fastuner.views.documents import write_error

                write_error(diagnostics, 1)
            return 1
        raise
    return rc if isinstance(rc, int) else 0


def _json_error(message: str, hint: str, code: int, *, asked: bool = False) -> int:
    if asked or _JSON_ERRORS.get():
        from fastuner.errors import Diagnostic
        from fastuner.views.documents import write_error

        write_error([Diagnostic.error(message, hint)], code)
    return code


if __name__ == "__main__":  # python -m fastuner.cli.main
    sys.exit(main())
