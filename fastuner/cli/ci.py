"""`fastuner ci github`: write a GitHub Actions workflow that plans pull requests, applies the default
branch and reaps expired deployments on a schedule (so no laptop has to be on to tear them down)."""

from __future__ import annotations

import re
import sys
from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.markup import escape

from fastuner import __version__
from fastuner.cli.commands import EXIT_ERROR, EXIT_OK
from fastuner.errors import UserError

CRON_FIELD = re.compile(r"^[0-9*/,\-A-Za-z]+$")
PYTHON = re.compile(r"^3\.\d+(\.\d+)?$")
BRANCH = re.compile(r"^[A-Za-z0-9._/\-]+$")
# The settings `fastuner ci github` writes without options (its defaults in cli/main.py, which
# tests/cli/test_init.py checks against these), and `fastuner init --ci github` writes.
GITHUB_DEFAULTS: dict[str, str | None] = {"python": "3.11", "workdir": ".", "reap_cron": "17 * * * *",
                                          "branch": "main", "runs_on": "ubuntu-latest", "install": None}


def github_settings(*, python: str, workdir: str, reap_cron: str, branch: str, runs_on: str,
                    install: str | None) -> dict[str, str]:
    """The template's inputs, checked: a bad value is a user error here, not a broken workflow later."""
    fields = reap_cron.split()
    if len(fields) != 5 or not all(CRON_FIELD.match(f) for f in fields):
        raise UserError(f"--reap-cron {reap_cron!r} is not a 5-field cron expression",
                        'For example "17 * * * *" (hourly, at minute 17; GitHub runs schedules in UTC).')
    if not PYTHON.match(python):
        raise UserError(f"--python {python!r} is not a Python 3 version like 3.11")
    if not BRANCH.match(branch):
        raise UserError(f"--branch {branch!r} is not a branch name")
    path = PurePosixPath(workdir.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not str(path).isprintable():
        raise UserError(f"--workdir {workdir!r} must be a folder inside the repository, relative to its root")
    for flag, value in (("--runs-on", runs_on), ("--install", install or "x")):
        if not value.strip() or not value.isprintable():
            raise UserError(f"{flag} must be one printable line")
    folder = str(path)  # "." for the root

    def inside(name: str) -> str:
        return name if folder == "." else f"{folder}/{name}"

    slug = re.sub(r"[^a-z0-9]+", "-", folder.lower()).strip("-") or "root"
    return {
        "version": __version__,
        "python": python,
        "workdir": folder,
        "reap_cron": " ".join(fields),
        "branch": branch,
        "runs_on": runs_on,
        "install": install or f"pip install fastuner=={__version__}",
        "slug": slug,
        "state_group": f"fastuner-state-{slug}",
        "plan_path": inside("plan.json"),
        "markdown_path": inside("plan.md"),
        "marker": f"<!-- fastuner-plan: {folder} -->",
    }


def run_ci_github(*, out: str, python: str, workdir: str, reap_cron: str, branch: str, runs_on: str,
                  install: str | None, force: bool, console: Console) -> int:
    from fastuner.views.ci import render_github_workflow

    text = render_github_workflow(github_settings(python=python, workdir=workdir, reap_cron=reap_cron,
                                                  branch=branch, runs_on=runs_on, install=install))
    if out == "-":
        sys.stdout.write(text)
        return EXIT_OK
    path = Path(out)
    if path.exists() and path.read_text(encoding="utf-8") != text and not force:
        console.print(f"[red]{escape(out)} exists and differs[/red]; use --force to overwrite it, or --out - to "
                      "print the workflow.")
        return EXIT_ERROR
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    console.print(f"Wrote {escape(out)}: plan on pull requests, apply on push to {escape(branch)}, reap on "
                  f"{escape(' '.join(reap_cron.split()))} (UTC). Commit it to turn it on.")
    return EXIT_OK
