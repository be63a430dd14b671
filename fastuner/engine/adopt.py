"""Import: bring an existing cloud resource under fastuner, as the creation the plan would make.

`fastuner import ADDRESS ID` plans as usual, takes the planned creation of ADDRESS and asks the kind's
provider to adopt `ID` as it (the provider checks the resource against the spec and refuses, listing the
differences, when it is something else). State then records it exactly as if fastuner had created it
under that name: the next plan shows no change for it, and a later change to the spec updates or replaces
it like any other resource.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fastuner.engine.apply import _mark_pending, _record_outcome
from fastuner.engine.ledger import Ledger
from fastuner.errors import UserError
from fastuner.plan.model import Action, Plan
from fastuner.providers.base import Context, Provider, ProviderError, utcnow
from fastuner.state.model import ResourceState, Status, empty_state
from fastuner.state.store import StateStore


def import_resource(plan: Plan, address: str, resource_id: str, store: StateStore, provider: Provider, *,
                    spec_dir: Path, clock: Callable[[], datetime] = utcnow,
                    progress: Callable[[str], None] = lambda _text: None) -> ResourceState:
    change = next((c for c in plan.changes if c.address == address and c.deposed is None), None)
    if change is None or change.action is not Action.CREATE:
        raise UserError(f"{address} is already in state",
                        f"To adopt another resource as {address}, forget the current one first: "
                        f"fastuner state rm {address}")
    importer = provider.importer(change.kind)
    with store.lock("import"):
        state = store.read() or empty_state(plan.project, plan.workspace)
        if address in state.resources and state.resources[address].status is not Status.EXPIRED:
            raise UserError(f"{address} is already in state", f"Forget it first: fastuner state rm {address}")
        missing = [d for d in change.depends_on if d not in state.resources
                   or state.resources[d].status is not Status.READY]
        if missing:
            raise UserError(f"{address} depends on {', '.join(missing)}, which is not applied yet",
                            f"Apply it first: fastuner apply --target {missing[0]}")
        adopted = dataclasses.replace(change, physical_name=resource_id)
        ctx = Context(address=address, spec_dir=spec_dir,
                      upstream={d: state.resources[d] for d in change.depends_on}, progress=progress,
                      now=clock)
        try:
            outcome = importer.import_resource(adopted, resource_id, ctx)
        except ProviderError as exc:
            raise UserError(f"cannot import {resource_id} as {address}: {exc.message}", exc.hint) from None
        ledger = Ledger(store, state)
        now = clock()
        ledger.mutate(lambda s: (_mark_pending(s, adopted, "create", now),
                                 _record_outcome(s, adopted, outcome, now, planned_at=plan.created_at,
                                                 keep=provider.keep_previous)))
        return ledger.state.resources[address]
