"""A dataset's source file checked against its spec, as every provider does before storing it (and
`fastuner validate` does without storing anything)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastuner.config.models import DatasetChecks, Split

if TYPE_CHECKING:
    from fastuner.data.scan import DatasetScan


def scan_inputs(spec_dir: Path, inputs: dict[str, Any], address: str | None = None) -> DatasetScan:
    """Validate the dataset described by resolved inputs (the spec's dataset fields). The scanning
    modules load here, not with a provider: `plan` reads stored versions and scans nothing."""
    from fastuner.data.scan import scan_dataset

    path = Path(inputs["path"])
    path = path if path.is_absolute() else spec_dir / path
    split = Split(**inputs.get("split", {}))
    rules = DatasetChecks(**inputs.get("checks", {}))
    return scan_dataset(path, inputs["task"], split=split, rules=rules, address=address)

