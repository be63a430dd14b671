"""`fastuner invoke deployment.NAME`: one input, a JSONL batch, or an evaluation on the test split.

The deployment's URL and adapters come from state; nothing is planned or changed. Everything the user
can get wrong (address, expired or dead server, adapter, a refused request) is a one-line error.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from fastuner.cli.commands import EXIT_ERROR, EXIT_OK
from fastuner.cli.project import open_project
from fastuner.errors import UserError
from fastuner.providers.base import Provider, ProviderError
from fastuner.providers.endpoint import Endpoint, InvokeError, input_problem, read_rows, run_rows, screen_rows
from fastuner.state.model import ResourceState, State, Status
from fastuner.views.documents import write_document

FIRST_ERRORS = 3


@dataclass(frozen=True)
class Options:
    adapter: str | None = None
    text: str | None = None
    batch: str | None = None
    out: str | None = None
    evaluate: bool = False
    params: dict[str, Any] | None = None
    concurrency: int = 8
    rows_per_request: int = 8
    retries: int = 3
    timeout: float = 120.0
    json_out: bool = False


def generation_params(max_new_tokens, temperature, top_p, stop, seed) -> dict[str, Any]:
    """Only the options given: the server's defaults (and its refusal of generation keys on a
    classification server) apply to the rest."""
    given = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
             "stop": list(stop) if stop else None, "seed": seed}
    return {k: v for k, v in given.items() if v is not None}


def run_invoke(address: str, options: Options, file, var, workspace, *, console: Console,
               err_console: Console, clock: Callable[[], datetime]) -> int:
    modes = [m for m, on in (("--input", options.text is not None), ("--batch", options.batch is not None),
                             ("--evaluate", options.evaluate)) if on]
    if len(modes) != 1:
        raise UserError("give exactly one of --input TEXT, --batch FILE or --evaluate"
                        + (f" (got {' and '.join(modes)})" if modes else ""))
    if options.out is not None and options.batch is None:
        raise UserError("--out goes with --batch")
    project = open_project(file, var, workspace)
    state = project.store.read()
    deployment = find_deployment(state, address)
    adapters = served_adapters(deployment.outputs)
    adapter = pick_adapter(address, options, adapters, err_console)
    if deployment.expires_at is not None and deployment.expires_at < clock():
        err_console.print(f"[yellow]Warning:[/yellow] {escape(address)} is past its ttl (since "
                          f"{deployment.expires_at.isoformat(timespec='minutes')}); the next `fastuner apply` or "
                          "`fastuner reap` tears it down.")
    max_chars = input_limit(state, adapter)
    if options.text is not None and (problem := input_problem(options.text, max_chars, adapter)):
        code, message = problem
        raise UserError(f"the input {message}; {address} would refuse it ({code}), so nothing was sent")
    client = open_endpoint(project.provider, deployment, options)
    if options.text is not None:
        return _single(client, address, adapter, adapters, options, console)
    if options.batch is not None:
        return _batch(client, address, adapter, adapters, max_chars, options, console, err_console)
    return _evaluate(client, project.provider, state, address, adapter, options, console, err_console)


def find_deployment(state: State | None, address: str) -> ResourceState:
    """The deployment's record, if it can be invoked; otherwise a UserError saying what to do."""
    if not address.startswith("deployment."):
        raise UserError(f"{address} is not a deployment address; invoke takes deployment.NAME")
    rs = state.get(address) if state is not None else None
    if rs is None:
        known = sorted(a for a in (state.resources if state else {}) if a.startswith("deployment."))
        raise UserError(f"{address} is not in state (deployments in state: {', '.join(known) or 'none'}); "
                        "run `fastuner apply` to create it")
    if rs.status is Status.EXPIRED:
        # expired_at is when it was torn down (ttl or idle_ttl); expires_at may be the later hard ttl
        torn_down = rs.outputs.get("expired_at")
        when = (datetime.fromisoformat(torn_down) if torn_down else rs.expires_at)
        shown = when.isoformat(timespec="minutes") if when else "earlier"
        raise UserError(f"{address} expired at {shown} and was torn down; bring it back with "
                        f"`fastuner apply --renew {address}`")
    if rs.status is Status.FAILED:
        raise UserError(f"{address} failed: {rs.error or 'unknown error'}; fix the cause and run `fastuner apply`")
    if rs.status is Status.PENDING or not (rs.outputs.get("url") or rs.outputs.get("endpoint_name")):
        raise UserError(f"{address} is not ready yet (still starting); run `fastuner apply` to finish it")
    return rs


def served_adapters(outputs: dict[str, Any]) -> dict[str, str]:
    """The adapters a deployment serves, by name: the local provider records where each one's artifact
    is, the SageMaker provider a list of names."""
    recorded = outputs.get("adapters") or {}
    if isinstance(recorded, dict):
        return {str(k): str(v) for k, v in recorded.items()}
    return {str(name): "" for name in recorded}


def pick_adapter(address: str, options: Options, adapters: dict[str, str], err_console: Console) -> str | None:
    """`--adapter` if the deployment serves it; without one, the deployment's only adapter (said on stderr,
    since the answer depends on it). With several and no `--adapter`, `--evaluate` refuses listing them,
    and an invocation goes to the base model: a classification server refuses that (`adapter_required`,
    listed in `_refused`), a generation server answers with the base model."""
    if options.adapter is not None:
        if options.adapter not in adapters:
            raise UserError(_unknown_adapter(address, options.adapter, adapters))
        return options.adapter
    if len(adapters) == 1:
        only = next(iter(adapters))
        err_console.print(f"Using adapter {escape(only)}, the only adapter {escape(address)} serves.", highlight=False)
        return only
    if options.evaluate:
        raise UserError(f"--evaluate needs --adapter: {address} serves {_listing(adapters)}")
    return None


def input_limit(state: State, adapter: str | None) -> int | None:
    """The `max_input_chars` of the dataset the adapter was trained on, as state records it (the server
    holds the same number, from the adapter's fastuner.json); None for the base model."""
    adapter_rs = state.get(f"adapter.{adapter}") if adapter else None
    dataset_rs = state.get(f"dataset.{adapter_rs.inputs.get('dataset')}") if adapter_rs else None
    limit = ((dataset_rs.inputs.get("checks") or {}).get("max_input_chars")) if dataset_rs else None
    return limit if isinstance(limit, int) else None


def open_endpoint(provider: Provider, deployment: ResourceState, options: Options) -> Endpoint:
    """The deployment's endpoint from its provider; one that does not answer is a UserError."""
    try:
        return provider.endpoint_source().endpoint(deployment, timeout=options.timeout, retries=options.retries)
    except ProviderError as exc:
        raise UserError(exc.message, exc.hint) from None


def _listing(adapters: dict[str, str]) -> str:
    return ", ".join(sorted(adapters)) or "no adapters (only the base model)"


def _unknown_adapter(address: str, adapter: str, adapters: dict[str, str]) -> str:
    return f"{address} serves no adapter {adapter!r}; its adapters: {_listing(adapters)}"


def _refused(address: str, exc: InvokeError, adapter: str | None, adapters: dict[str, str]) -> UserError:
    if exc.code == "unknown_adapter" and adapter:
        return UserError(_unknown_adapter(address, adapter, adapters))
    if exc.status is None:
        return UserError(f"{address}: {exc.message}; `fastuner plan` shows whether the server must be recreated")
    hint = f" (adapters: {_listing(adapters)})" if exc.code == "adapter_required" else ""
    return UserError(f"{address} refused the request (HTTP {exc.status} {exc.code}): {exc.message}{hint}")


# --- modes -------------------------------------------------------------------------------------------


def _single(client: Endpoint, address: str, adapter, adapters, options: Options, console: Console) -> int:
    from fastuner.views.invoke import render_answer

    try:
        answer = client.invoke(options.text or "", adapter, options.params)
    except InvokeError as exc:
        raise _refused(address, exc, adapter, adapters) from None
    if options.json_out:
        write_document("invoke-answer", {"deployment": address, "adapter": adapter, "answer": answer}, indent=None)
    else:
        render_answer(answer, console)
    return EXIT_OK


def _batch(client: Endpoint, address: str, adapter, adapters, max_chars: int | None, options: Options,
           console: Console, err_console: Console) -> int:
    from fastuner.views.invoke import BatchProgress, render_batch_summary

    try:
        with open(options.batch or "", "rb") as f:
            rows = screen_rows(read_rows(f), max_chars, adapter)
    except OSError as exc:
        raise UserError(f"cannot read {options.batch}: {exc.strerror or exc}") from None
    to_stdout = options.out in (None, "-")
    # rows go to stdout when there is no --out: then everything else goes to stderr
    talk = err_console if to_stdout else console
    sink = sys.stdout if to_stdout else _open_out(options.out or "")
    ok = failed = 0
    first_errors: list[dict[str, Any]] = []
    start = time.monotonic()
    try:
        with BatchProgress(err_console, len(rows), label=f"{address} {adapter or 'base model'}") as progress:
            for line in run_rows(client, rows, adapter=adapter, params=options.params,
                                 concurrency=options.concurrency, rows_per_request=options.rows_per_request,
                                 on_done=progress.advance):
                sink.write(json.dumps(line, ensure_ascii=False) + "\n")
                if "error" in line:
                    failed += 1
                    if len(first_errors) < FIRST_ERRORS:
                        first_errors.append({"row": line["row"], "error": line["error"]})
                else:
                    ok += 1
    finally:
        if not to_stdout:
            sink.close()
    seconds = max(time.monotonic() - start, 1e-9)
    summary = {"rows": len(rows), "ok": ok, "failed": failed, "requests": client.requests,
               "seconds": round(seconds, 3), "rows_per_s": round(len(rows) / seconds, 2),
               "requests_per_s": round(client.requests / seconds, 2), "first_errors": first_errors,
               "out": None if to_stdout else options.out}
    if options.json_out and not to_stdout:
        write_document("invoke-batch", {"deployment": address, "adapter": adapter, **summary}, indent=None)
    else:
        render_batch_summary(summary, talk)
    return EXIT_OK if failed == 0 else EXIT_ERROR


def _open_out(path: str):
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return open(out, "w", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _evaluate(client: Endpoint, provider: Provider, state: State, address: str, adapter: str, options: Options,
              console: Console, err_console: Console) -> int:
    from fastuner.providers.evaluation import evaluate, read_test_split
    from fastuner.views.invoke import BatchProgress, render_evaluation

    try:
        splits = provider.split_source()
    except ProviderError as exc:
        raise UserError(exc.message, exc.hint) from None
    split = read_test_split(state, f"adapter.{adapter}", splits)
    adapter_rs = state.get(f"adapter.{adapter}")
    metrics = (adapter_rs.outputs.get("metrics") or {}) if adapter_rs else {}
    passes = 2 if split.task.definition.base_model_answers else 1
    with BatchProgress(err_console, len(split.records) * passes, label=f"evaluating {adapter}") as progress:
        result = evaluate(client, split, adapter, metrics, deployment=address, params=options.params,
                          concurrency=options.concurrency, rows_per_request=options.rows_per_request,
                          on_done=progress.advance)
    if options.json_out:
        write_document("evaluation", result)
    else:
        render_evaluation(result, console)
    if any(result["failed"].values()):
        log = (state.get(address).outputs or {}).get("log")  # type: ignore[union-attr]
        where = f"; the server log is at {escape(str(log))}" if log else ""
        err_console.print(f"[red]Some requests failed[/red]: see above{where}")
        return EXIT_ERROR
    return EXIT_OK
