"""`fastuner cost` (spent vs estimated, from state) and `fastuner prices update` (the Price List API)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from rich.console import Console
from rich.markup import escape

from fastuner.cli import runtime
from fastuner.cli.project import build_store, load_settings
from fastuner.errors import UserError
from fastuner.views.documents import write_document


def run_cost(file, var, workspace, *, json_out: bool, console: Console, clock: Callable[[], datetime]) -> int:
    from fastuner.plan.spend import cost_report
    from fastuner.state.model import empty_state
    from fastuner.views.cost import render_cost

    spec, ws = load_settings(file, var, workspace)
    state = build_store(spec, ws, environ=runtime.current().environ).read() or empty_state(spec.config.project, ws)
    report = cost_report(state, spec.config.provider.name, clock())
    if json_out:
        write_document("cost", report)
    else:
        render_cost(report, console)
    return 0


def run_prices_update(regions: list[str] | None, *, json_out: bool, console: Console,
                      clock: Callable[[], datetime]) -> int:
    """Fetch every region asked for (default: each region fastuner ships prices for) and write them all,
    or nothing."""
    from fastuner.aws.clients import AwsSession
    from fastuner.plan.prices import shipped_book
    from fastuner.providers.base import ProviderError
    from fastuner.providers.sagemaker.pricelist import PRICING_REGION, prices_dir, update_prices

    environ = runtime.current().environ
    wanted = list(dict.fromkeys(regions or sorted(shipped_book().regions)))
    folder = prices_dir(environ)
    client = AwsSession(PRICING_REGION, environ=environ).client("pricing")
    try:
        done = update_prices(client, wanted, folder, clock())
    except ProviderError as exc:
        raise UserError(exc.message, exc.hint) from None
    if json_out:
        write_document("prices", {"folder": str(folder), "regions": [
            {"region": u.region, "file": str(u.path), "training": u.training, "hosting": u.hosting} for u in done]})
        return 0
    for u in done:
        console.print(f"{escape(u.region)}: {u.training} training and {u.hosting} hosting prices → {escape(str(u.path))}")
    console.print(f"Plans now price with these (newer than the shipped ones). Folder: {escape(str(folder))} "
                  "(FASTUNER_PRICES_DIR to move it).", style="dim")
    return 0


def run_prices_show(*, json_out: bool, console: Console, clock: Callable[[], datetime]) -> int:
    """Each region's prices as plans use them: shipped or updated, as of when, from where."""
    from fastuner.plan.prices import STALE_AFTER
    from fastuner.providers.sagemaker.pricelist import price_book, prices_dir

    environ = runtime.current().environ
    now = clock()
    regions = [{"region": p.region, "as_of": p.as_of.isoformat(), "stale": p.stale(now), "origin": p.origin,
                "source": dict(p.source), "training": len(p.training), "hosting": len(p.hosting),
                "spot_savings": list(p.spot_savings)}
               for p in sorted(price_book(environ).regions.values(), key=lambda p: p.region)]
    if json_out:
        write_document("prices", {"folder": str(prices_dir(environ)), "regions": regions})
        return 0
    for r in regions:
        age = f" [yellow](over {STALE_AFTER.days} days old)[/yellow]" if r["stale"] else ""
        console.print(f"{escape(r['region'])}: as of {r['as_of']}{age}, {r['training']} training and "
                      f"{r['hosting']} hosting prices, {escape(r['origin'])}")
    console.print(f"Refresh with `fastuner prices update`; updated copies go to {escape(str(prices_dir(environ)))}.",
                  style="dim")
    return 0
