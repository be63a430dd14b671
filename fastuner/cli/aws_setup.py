"""`fastuner iam-policy` and `fastuner bootstrap`: what an AWS account needs before the first apply.

The policies are pure functions of the spec's settings (providers/sagemaker/iam.py); bootstrap reads
every setting first, asks, and writes only what differs (providers/sagemaker/bootstrap.py). Both read
only the spec's settings, never its resources, so they run before any dataset exists.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from fastuner.cli import runtime
from fastuner.cli.commands import EXIT_ERROR, EXIT_OK, _confirm
from fastuner.cli.project import aws_session, load_settings
from fastuner.errors import UserError

if TYPE_CHECKING:
    from fastuner.aws.clients import AwsSession


def run_iam_policy(file, var, workspace, *, role: str, trust: bool, err_console: Console) -> int:
    """The policy document on stdout (for `aws iam put-role-policy --policy-document file://…`), how to
    attach it on stderr."""
    from fastuner.providers.sagemaker.iam import policy, policy_name, scope_of, trust_policy

    spec, _ = load_settings(file, var, workspace)
    scope = scope_of(spec.config)
    if trust and role != "execution":
        raise UserError("--trust is for --role execution",
                        "Who may assume the role that runs fastuner (SSO users, a CI provider through OIDC) is "
                        "yours to decide; fastuner only needs its permissions.")
    document = trust_policy() if trust else policy(scope, role)
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    name = policy_name(scope)
    if trust:
        hint = ("The trust policy of the SageMaker execution role: aws iam create-role --role-name NAME "
                "--assume-role-policy-document file://trust.json (or run `fastuner bootstrap`).")
    elif role == "execution":
        hint = (f"The SageMaker execution role's permissions: aws iam put-role-policy --role-name NAME "
                f"--policy-name {name} --policy-document file://execution.json (its trust policy: --trust); "
                "`fastuner bootstrap` creates the role with both.")
    else:
        hint = (f"Attach it to the identity that runs fastuner: aws iam put-role-policy --role-name ROLE "
                f"--policy-name {name} --policy-document file://policy.json")
    err_console.print(escape(hint))
    return EXIT_OK


def run_bootstrap(file, var, workspace, *, role_name: str | None, auto_approve: bool, json_out: bool,
                  console: Console) -> int:
    from fastuner.providers.sagemaker.bootstrap import Change, changes, plan_bootstrap, wanted
    from fastuner.providers.sagemaker.iam import scope_of

    spec, _ = load_settings(file, var, workspace)
    config = spec.config
    if config.provider.sagemaker is None and config.backend.s3 is None:
        raise UserError("this spec uses nothing on AWS, so there is nothing to bootstrap",
                        "Bootstrap prepares `provider: {sagemaker: …}` and `backend: {s3: …}`.")
    if role_name and config.provider.sagemaker is None:
        raise UserError("--role-name: the execution role is SageMaker's, and this spec does not use SageMaker")
    environ = runtime.current().environ
    sessions: dict[str, AwsSession] = {}

    def session(region: str) -> AwsSession:
        if region not in sessions:
            sessions[region] = aws_session(spec, environ, region or None)
        return sessions[region]

    want = wanted(scope_of(config), role_name)
    steps = plan_bootstrap(session, want)
    todo = changes(steps)
    if todo and not auto_approve:
        if json_out:
            raise UserError("bootstrap --json has changes to make and cannot ask for confirmation",
                            "Run it without --json to review them, or add --auto-approve.")
        console.print("fastuner bootstrap will make these changes:\n")
        _print_steps(todo, console, planned=True)
        if not _confirm_changes(console):
            console.print("\nBootstrap cancelled.")
            return EXIT_ERROR
        console.print()
    width = _widths(steps)
    for step in steps:
        step.run()
        if not json_out:
            _print_step(step, console, width)
    if json_out:
        from fastuner.views.documents import write_document

        write_document("bootstrap", {"steps": [s.to_dict() for s in steps], "notes": want.notes})
        return EXIT_OK
    for note in want.notes:
        console.print(f"\n[yellow]Note:[/yellow] {escape(note)}")
    counts = {c: sum(s.change is c for s in steps) for c in Change}
    if not todo:
        console.print("\nNothing to do: everything is already as wanted.")
    else:
        console.print(f"\n[bold green]Bootstrap complete![/bold green] {counts[Change.CREATE]} created, "
                      f"{counts[Change.UPDATE]} updated, {counts[Change.NONE]} already as wanted.")
    return EXIT_OK


def _confirm_changes(console: Console) -> bool:
    if not sys.stdin.isatty():
        raise UserError("confirmation needed, but the input is not a terminal",
                        "Review the changes above and re-run with --auto-approve.")
    return _confirm(console, destroy=False)


_STYLE = {"created": "green", "updated": "yellow", "already as wanted": "dim"}


def _widths(steps) -> tuple[int, int]:
    return max(len(s.subject) for s in steps), max(len(s.setting) for s in steps)


def _print_steps(steps, console: Console, planned: bool = False) -> None:
    width = _widths(steps)
    for step in steps:
        _print_step(step, console, width, planned)


def _print_step(step, console: Console, width: tuple[int, int], planned: bool = False) -> None:
    word = step.change.planned if planned else step.change.value
    detail = f"  ({escape(step.detail)})" if step.detail else ""
    console.print(f"  {escape(step.subject.ljust(width[0]))}  {escape(step.setting.ljust(width[1]))}  "
                  f"[{_STYLE[step.change.value]}]{word}[/]{detail}")
