"""`fastuner ci github`: write a GitHub Actions workflow that plans pull requests, applies the default
branch and reaps expired deployments on a schedule (so no laptop has to be on to tear them down).

A project that uses AWS (`provider: {sagemaker: …}` or `backend: {s3: …}` in its fastuner.yaml, or
`--aws`) gets the AWS variant: every job assumes an IAM role through GitHub's OIDC provider
(aws-actions/configure-aws-credentials), and the scheduled reap judges the endpoints by their tags, so
that it needs no state lock and never waits behind a long apply.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from rich.console import Console
from rich.markup import escape

from fastuner import __version__
from fastuner.cli.commands import EXIT_ERROR, EXIT_OK
from fastuner.errors import UserError

CRON_FIELD = re.compile(r"^[0-9*/,\-A-Za-z]+$")
REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
ROLE_VAR, PLAN_ROLE_VAR = "vars.FASTUNER_AWS_ROLE", "vars.FASTUNER_AWS_PLAN_ROLE"
VARIABLE = re.compile(r"^\$\{\s*var\.([A-Za-z_][A-Za-z0-9_]*)\s*\}$")
REFERENCE = re.compile(r"\$\{var\.([A-Za-z_][A-Za-z0-9_]*)\}")  # as the loader substitutes them
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PYTHON = re.compile(r"^3\.\d+(\.\d+)?$")
BRANCH = re.compile(r"^[A-Za-z0-9._/\-]+$")
# The settings `fastuner ci github` writes without options (its defaults in cli/main.py, which
# tests/cli/test_init.py checks against these), and `fastuner init --ci github` writes.
GITHUB_DEFAULTS: dict[str, str | None] = {"python": "3.11", "workdir": ".", "reap_cron": "17 * * * *",
                                          "branch": "main", "runs_on": "ubuntu-latest", "install": None}


def github_settings(*, python: str, workdir: str, reap_cron: str, branch: str, runs_on: str,
                    install: str | None, aws: bool = False, aws_region: str | None = None,
                    aws_role: str | None = None, variables: Iterable[str] = ()) -> dict[str, Any]:
    """The template's inputs, checked: a bad value is a user error here, not a broken workflow later.
    `aws`: the AWS variant, in `aws_region`, assuming `aws_role` (default: the repository variable
    FASTUNER_AWS_ROLE). `variables`: the spec's variable names (`spec_variables`), each passed to every
    job as FASTUNER_VAR_NAME from the repository secret, else the repository variable, of that name."""
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
        **_aws_settings(aws, aws_region, aws_role, slug),
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
        "spec_env": _spec_env(variables),
    }


def _spec_env(variables: Iterable[str]) -> list[tuple[str, str]]:
    """(FASTUNER_VAR_NAME, its expression) per variable. GitHub gives an unset secret or variable as an
    empty string, which the loader takes as unset: the spec's default applies, or the error names it."""
    out = []
    for name in sorted(set(variables)):
        if not NAME.match(name):
            raise UserError(f"variable {name!r} cannot be passed from GitHub: a name is letters, digits and _")
        key = f"FASTUNER_VAR_{name}"
        out.append((key, "${{ secrets." + key + " || vars." + key + " }}"))
    return out


def spec_variables(text: str) -> list[str]:
    """The variables a spec declares (`variables:`) or uses (`${var.NAME}` in a value, not in a
    comment), read from its YAML as written; [] when it does not parse."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    if not isinstance(doc, dict):
        return []
    found = set(doc["variables"]) if isinstance(doc.get("variables"), dict) else set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            found.update(REFERENCE.findall(value.replace("$${", "")))

    walk({k: v for k, v in doc.items() if k != "variables"})
    return sorted(n for n in found if isinstance(n, str))


def _aws_settings(aws: bool, region: str | None, role: str | None, slug: str) -> dict[str, str]:
    if not aws:
        return {"aws": "", "aws_region": "", "aws_role": "", "aws_role_doc": "", "aws_plan_role": "",
                "reap_group": ""}
    if not region or not REGION.match(region):
        raise UserError(f"--aws-region {region!r} is not an AWS region" if region else "the AWS variant needs a region",
                        "Pass --aws-region, e.g. --aws-region eu-west-1 (the region of the spec's provider).")
    if role is not None and not ROLE_ARN.match(role):
        raise UserError(f"--aws-role {role!r} is not an IAM role ARN",
                        "Write it as arn:aws:iam::ACCOUNT:role/NAME, or leave it out to use the repository "
                        "variable FASTUNER_AWS_ROLE.")
    fallback = f"'{role}'" if role else ROLE_VAR
    return {"aws": "yes", "aws_region": region,
            "aws_role": role or "${{ " + ROLE_VAR + " }}",
            "aws_role_doc": role or ROLE_VAR,
            "aws_plan_role": "${{ " + f"{PLAN_ROLE_VAR} || {fallback}" + " }}",
            "reap_group": f"fastuner-reap-{slug}"}


def aws_of_spec(path: Path) -> tuple[bool, str | None]:
    """Whether the spec at `path` uses AWS, and its region (the provider's, else the state backend's; a
    `${var.NAME}` with a default is that default), read from the YAML as written: no variable needs a
    value to write a workflow. (False, None) when there is no spec there."""
    try:
        return aws_of_spec_text(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False, None


def aws_of_spec_text(text: str) -> tuple[bool, str | None]:
    """`aws_of_spec` of a spec's text (`fastuner init` asks before writing it)."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return False, None
    if not isinstance(doc, dict):
        return False, None
    provider, backend = doc.get("provider") or {}, doc.get("backend") or {}
    sagemaker = provider.get("sagemaker") if isinstance(provider, dict) else None
    s3 = backend.get("s3") if isinstance(backend, dict) else None
    if sagemaker is None and s3 is None:
        return False, None
    variables = doc.get("variables") if isinstance(doc.get("variables"), dict) else {}
    for section in (sagemaker, s3):
        region = section.get("region") if isinstance(section, dict) else None
        if isinstance(region, str) and (m := VARIABLE.match(region.strip())):
            default = (variables.get(m.group(1)) or {}).get("default") if isinstance(
                variables.get(m.group(1)), dict) else None
            region = default if isinstance(default, str) else None
        if isinstance(region, str) and region.strip():
            return True, region.strip()
    return True, None


def run_ci_github(*, out: str, python: str, workdir: str, reap_cron: str, branch: str, runs_on: str,
                  install: str | None, force: bool, console: Console, aws: bool | None = None,
                  aws_region: str | None = None, aws_role: str | None = None) -> int:
    from fastuner.views.ci import render_github_workflow

    uses_aws, spec_region = aws_of_spec(Path(workdir) / "fastuner.yaml")
    aws = uses_aws if aws is None else aws
    try:
        spec_text = (Path(workdir) / "fastuner.yaml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        spec_text = ""
    text = render_github_workflow(github_settings(python=python, workdir=workdir, reap_cron=reap_cron,
                                                  branch=branch, runs_on=runs_on, install=install, aws=aws,
                                                  aws_region=aws_region or spec_region, aws_role=aws_role,
                                                  variables=spec_variables(spec_text)))
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
    if aws and not aws_role:
        console.print("AWS: set the repository variable FASTUNER_AWS_ROLE to the role the jobs assume (and "
                      "optionally FASTUNER_AWS_PLAN_ROLE for pull requests); the workflow's header says what "
                      "their trust policies allow.")
    return EXIT_OK
