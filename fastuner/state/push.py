"""`state push`: which document lands in a backend, decided before anything is written.

The checks are the store's own write checks, applied to a whole document brought from elsewhere (a
file, another backend): a state of another lineage is another state, not a version of this one, and an
older serial means the stored state moved on since the copy was pulled; both are refused unless forced.
The serial never goes backwards: a newer copy keeps its serial (a move between backends keeps saved
plans valid), anything else lands one above the stored one, so a plan made against it is stale.
"""

from __future__ import annotations

from fastuner.errors import UserError
from fastuner.state.model import State


def pushed_document(current: State | None, pushed: State, *, project: str, workspace: str, force: bool,
                    source: str, location: str) -> State | None:
    """The document to store in place of `current`, or None when `pushed` is exactly what is stored."""
    if pushed.project and project and pushed.project != project:
        raise UserError(f"{source} is a state of project {pushed.project}, not {project}",
                        "Push it from that project's folder (or with its fastuner.yaml: --file).")
    if pushed.workspace != workspace:
        raise UserError(f"{source} is the state of workspace {pushed.workspace}, not {workspace}",
                        f"Push it into its own workspace: --workspace {pushed.workspace}.")
    if current is None:
        return pushed
    if pushed == current:
        return None
    if current.lineage != pushed.lineage and not force:
        raise UserError(f"refusing to push {source} to {location}: it belongs to another state lineage",
                        f"stored: {current.lineage}, pushing: {pushed.lineage}. They are two different states, "
                        "not versions of one; pushing would replace what is stored (fastuner would forget the "
                        "resources it records). If that is what you mean: --force.")
    if current.lineage == pushed.lineage and pushed.serial < current.serial and not force:
        raise UserError(f"refusing to push {source} to {location}: it is older than the stored state "
                        f"(serial {pushed.serial}, stored: serial {current.serial})",
                        "The stored state moved on since this copy was taken. Pull it again and redo the "
                        "change, or overwrite it anyway with --force.")
    serial = pushed.serial if pushed.serial > current.serial else current.serial + 1
    return pushed.model_copy(update={"serial": serial})
