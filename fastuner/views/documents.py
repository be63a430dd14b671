"""The machine-readable output of every command that reports (`--json`): one JSON document on stdout.

Each document carries `format_version` (the contract's version, `FORMAT_VERSION`) and `kind` (what it
is: one of `KINDS`), then the kind's own fields. docs/json.md describes every kind and what may change
without a new version; tests/cli/test_json.py keeps that page and `KINDS` equal, so a new kind cannot be
emitted undocumented (`document` refuses a kind missing here).

A command that fails under `--json` still writes one document, of kind `error` (`error_document`), with
the exit code the text output would have had: a CI script reads stdout as JSON whatever happened.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import IO, Any

from fastuner.errors import Diagnostic

FORMAT_VERSION = 1

# kind -> the command that writes it (docs/json.md has a section per kind)
KINDS: dict[str, str] = {
    "plan": "plan --json, show PLANFILE --json",
    "validation": "validate --json",
    "state": "show --json (no argument)",
    "state-list": "state list --json",
    "resource": "state show ADDRESS --json, show ADDRESS --json (not a deployment)",
    "deployment": "show deployment.NAME --json",
    "reap": "reap --json",
    "bootstrap": "bootstrap --json",
    "import": "import ADDRESS ID --json",
    "unlock": "force-unlock LOCK_ID --json",
    "invoke-answer": "invoke --input TEXT --json",
    "invoke-batch": "invoke --batch FILE --out FILE --json",
    "evaluation": "invoke --evaluate --json",
    "cost": "cost --json",
    "prices": "prices update --json, prices show --json",
    "error": "any command above, with --json, when it fails",
}


def document(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body` under the envelope: `format_version` and `kind` first. A body that already carries either
    (a plan is such a document by itself) must agree with it."""
    if kind not in KINDS:
        raise ValueError(f"JSON document kind {kind!r} is not in KINDS (document it in docs/json.md)")
    if body.get("kind", kind) != kind or body.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"a {kind!r} document's body says kind {body.get('kind')!r}, format_version "
                         f"{body.get('format_version')!r}")
    return {"format_version": FORMAT_VERSION, "kind": kind, **body}


def write_document(kind: str, body: dict[str, Any], *, indent: int | None = 2, stream: IO[str] | None = None) -> None:
    (stream or sys.stdout).write(json.dumps(document(kind, body), indent=indent) + "\n")


def error_document(diagnostics: Iterable[Diagnostic], exit_code: int) -> dict[str, Any]:
    """The first error as `message`, `hint` and `location` (file, line, column; or null) — what a script
    shows — and every diagnostic (warnings too) in `diagnostics`, as `validate` would list them."""
    diags = list(diagnostics)
    first = next((d for d in diags if str(d.severity) == "error"), diags[0] if diags else None)
    location = None
    if first is not None and first.source is not None:
        location = {"file": first.source.file, "line": first.source.line, "column": first.source.column}
    return document("error", {
        "message": first.summary if first else "failed",
        "hint": first.detail if first else "",
        "location": location,
        "address": first.address if first else None,
        "exit_code": exit_code,
        "diagnostics": [d.to_dict() for d in diags],
    })


def write_error(diagnostics: Iterable[Diagnostic], exit_code: int, *, stream: IO[str] | None = None) -> None:
    (stream or sys.stdout).write(json.dumps(error_document(diagnostics, exit_code), indent=2) + "\n")
