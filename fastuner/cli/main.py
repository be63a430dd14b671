"""The `fastuner` command: typed options in, exit code out.

Heavy modules (pydantic, networkx, the engine, torch) are imported inside commands so that
`fastuner --help` stays fast. User errors (DiagnosticsError) print as diagnostics and exit 1; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from fastuner import __version__

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

FileOpt = Annotated[str | None, typer.Option("--file", "-f", help="Spec file (default: ./fastuner.yaml).")]
VarOpt = Annotated[list[str] | None, typer.Option("--var", help="Set a variable: NAME=VALUE (repeatable).")]
WorkspaceOpt = Annotated[str | None, typer.Option("--workspace", "-w", help="Workspace (one state each); "
                                                  "default from FASTUNER_WORKSPACE or 'default'.")]
NoColorOpt = Annotated[bool, typer.Option("--no-color", help="Plain output.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


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


# --- validate ------------------------------------------------------------------------------------


@app.command()
def validate(file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
             no_color: NoColorOpt = False, json_out: JsonOpt = False) -> None:
    """Check the spec and every dataset (rows, duplicates, splits) without changing anything."""
    from fastuner.cli.commands import run_validate

    raise typer.Exit(run_validate(file, var, workspace, _console(no_color), json_out))


# --- plan / show / apply / destroy ---------------------------------------------------------------


@app.command()
def plan(
    file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
    out: Annotated[str | None, typer.Option("--out", "-out", "-o", help="Save the plan (JSON) for apply.")] = None,
    detailed_exitcode: Annotated[bool, typer.Option("--detailed-exitcode", help="Exit 0: no changes, 1: error, "
                                                    "2: changes present.")] = False,
    destroy: Annotated[bool, typer.Option("--destroy", help="Plan to destroy everything in state.")] = False,
    replace: Annotated[list[str] | None, typer.Option("--replace", help="Force replacement of ADDRESS.")] = None,
    renew: Annotated[list[str] | None, typer.Option("--renew", help="Bring back an expired deployment.")] = None,
    json_out: JsonOpt = False, no_color: NoColorOpt = False,
) -> None:
    """Show what apply would change. Reads only."""
    from fastuner.cli.commands import run_plan

    raise typer.Exit(run_plan(file, var, workspace, out=out, detailed_exitcode=detailed_exitcode, destroy=destroy,
                              replace=replace or [], renew=renew or [], json_out=json_out,
                              console=_console(no_color)))


@app.command()
def show(
    planfile: Annotated[str | None, typer.Argument(help="A saved plan; without it, the state is shown.")] = None,
    file: FileOpt = None, workspace: WorkspaceOpt = None,
    json_out: JsonOpt = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown for a pull-request comment.")] = False,
    no_color: NoColorOpt = False,
) -> None:
    """Render a saved plan (terminal, --json or --markdown), or the current state."""
    from fastuner.cli.commands import run_show

    raise typer.Exit(run_show(planfile, file, workspace, json_out=json_out, markdown=markdown,
                              console=_console(no_color)))


@app.command()
def apply(
    planfile: Annotated[str | None, typer.Argument(help="Apply exactly this saved plan.")] = None,
    file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Skip the confirmation.")] = False,
    parallelism: Annotated[int, typer.Option("--parallelism", min=1, max=256,
                                             help="Operations at once.")] = 10,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Start long operations (training) and return; "
                                          "the next plan or apply picks them up.")] = False,
    replace: Annotated[list[str] | None, typer.Option("--replace", help="Force replacement of ADDRESS.")] = None,
    renew: Annotated[list[str] | None, typer.Option("--renew", help="Bring back an expired deployment.")] = None,
    no_color: NoColorOpt = False,
) -> None:
    """Make the world match the spec (or carry out a saved plan)."""
    from fastuner.cli.commands import run_apply

    raise typer.Exit(run_apply(planfile, file, var, workspace, auto_approve=auto_approve, parallelism=parallelism,
                               wait=not no_wait, replace=replace or [], renew=renew or [], destroy=False,
                               console=_console(no_color)))


@app.command()
def destroy(
    file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Skip the confirmation.")] = False,
    parallelism: Annotated[int, typer.Option("--parallelism", min=1, max=256)] = 10,
    no_color: NoColorOpt = False,
) -> None:
    """Destroy everything recorded in state, dependents first."""
    from fastuner.cli.commands import run_apply

    raise typer.Exit(run_apply(None, file, var, workspace, auto_approve=auto_approve, parallelism=parallelism,
                               wait=True, replace=[], renew=[], destroy=True, console=_console(no_color)))


@app.command()
def reap(
    file: FileOpt = None, var: VarOpt = None, workspace: WorkspaceOpt = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Skip the confirmation.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be reaped.")] = False,
    json_out: JsonOpt = False, no_color: NoColorOpt = False,
) -> None:
    """Destroy every deployment past its ttl or idle_ttl (for a schedule: needs no dataset files)."""
    from fastuner.cli.reap import run_reap

    raise typer.Exit(run_reap(file, var, workspace, auto_approve=auto_approve, dry_run=dry_run, json_out=json_out,
                              console=_console(no_color)))


# --- state ---------------------------------------------------------------------------------------


@state_app.command("list")
def state_list(file: FileOpt = None, workspace: WorkspaceOpt = None, no_color: NoColorOpt = False,
               json_out: JsonOpt = False) -> None:
    """List the addresses in state."""
    from fastuner.cli.state_commands import run_state_list

    raise typer.Exit(run_state_list(file, workspace, _console(no_color), json_out))


@state_app.command("show")
def state_show(address: str, file: FileOpt = None, workspace: WorkspaceOpt = None,
               no_color: NoColorOpt = False, json_out: JsonOpt = False) -> None:
    """Show one resource's inputs, outputs and status."""
    from fastuner.cli.state_commands import run_state_show

    raise typer.Exit(run_state_show(address, file, workspace, _console(no_color), json_out))


@state_app.command("rm")
def state_rm(addresses: list[str], file: FileOpt = None, workspace: WorkspaceOpt = None,
             no_color: NoColorOpt = False) -> None:
    """Forget resources (nothing is destroyed; fastuner stops managing them)."""
    from fastuner.cli.state_commands import run_state_rm

    raise typer.Exit(run_state_rm(addresses, file, workspace, _console(no_color)))


@app.command("force-unlock")
def force_unlock(lock_id: Annotated[str, typer.Argument(help="The lock ID shown by the refused command.")],
                 file: FileOpt = None, workspace: WorkspaceOpt = None, no_color: NoColorOpt = False) -> None:
    """Release a lock left by a crashed run (only when you are sure it is not running)."""
    from fastuner.cli.state_commands import run_force_unlock

    raise typer.Exit(run_force_unlock(lock_id, file, workspace, _console(no_color)))


@app.command()
def logs(
    address: Annotated[str, typer.Argument(help="adapter.NAME (training log) or deployment.NAME (server log).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the process ends.")] = False,
    file: FileOpt = None, workspace: WorkspaceOpt = None,
) -> None:
    """Print the log of a training run or a served deployment."""
    from fastuner.cli.state_commands import run_logs

    raise typer.Exit(run_logs(address, follow, file, workspace, _console()))


@app.command()
def schema(
    check: Annotated[bool, typer.Option("--check", help="Fail if the files in specs/ and state/ are stale.")] = False,
    root: Annotated[str, typer.Option("--root", help="Repository root to write into.")] = ".",
) -> None:
    """Write the JSON Schemas of fastuner.yaml (specs/) and of the state (state/)."""
    from fastuner.cli.state_commands import run_schema

    raise typer.Exit(run_schema(check, root, _console()))


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: user errors become diagnostics and exit 1; bugs keep their traceback.

    Usage errors also exit 1 (not click's 2), so that `plan --detailed-exitcode` keeps 2 for "changes".
    """
    try:
        rc = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        _console(stderr=True).print("Aborted.")
        return 1
    except KeyboardInterrupt:
        _console(stderr=True).print("Interrupted.")
        return 130
    except typer.TyperException as exc:  # usage errors (bad option, missing argument)
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            _console(stderr=True).print(str(exc))
        return 1
    except Exception as exc:
        from fastuner.errors import DiagnosticsError

        if isinstance(exc, DiagnosticsError):
            from fastuner.views.diagnostics import render_diagnostics

            render_diagnostics(exc.diagnostics, _console(stderr=True))
            return 1
        raise
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":  # python -m fastuner.cli.main
    sys.exit(main())
