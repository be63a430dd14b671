"""Sensitive variables: their values stay out of plans, state and what fastuner prints.

A variable declared `sensitive: true` is substituted into the spec as any other, but every plan holds
a marker in its place, `(sensitive:0123456789ab)` (the first 12 hex digits of the value's SHA-256), and
so does everything computed from the plan: its JSON, Markdown and terminal forms, the saved plan file,
the inputs recorded in state. A changed value changes the marker, so a plan still shows that (and
where) it changed. Only the provider sees the value: the engine reveals it in the inputs it hands to a
create or update, from the variables of the run that applies.

A value is replaced wherever it occurs inside a string (a tag value "team-${var.key}" too); one shorter
than `MIN_SUBSTRING` characters only where it is the whole string, so that a short value does not mask
every text that contains it. Numbers and booleans are left alone: a sensitive variable holds a string. The marker is a hash, not encryption: a value that can be guessed
can be confirmed from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable
from typing import Any

from fastuner.errors import Diagnostic, UserError

MIN_SUBSTRING = 6
MARKER = re.compile(r"\(sensitive:[0-9a-f]{12}\)")


def marker(value: str) -> str:
    return f"(sensitive:{hashlib.sha256(value.encode()).hexdigest()[:12]})"


class Sensitive:
    """The values of a spec's sensitive variables (as strings), masked and revealed."""

    def __init__(self, values: Iterable[Any] = ()) -> None:
        texts = {str(v) for v in values if v is not None and str(v) != ""}
        self.values = tuple(sorted(texts, key=lambda v: (-len(v), v)))  # longest first: one inside another
        self._by_marker = {marker(v): v for v in self.values}
        long = [re.escape(v) for v in self.values if len(v) >= MIN_SUBSTRING]
        self._pattern = re.compile("|".join(long)) if long else None

    def __bool__(self) -> bool:
        return bool(self.values)

    def mask(self, data: Any) -> Any:
        """`data` (plain JSON values) with every sensitive value replaced by its marker."""
        if not self.values:
            return data
        if isinstance(data, dict):
            return {self.mask(k): self.mask(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.mask(v) for v in data]
        if isinstance(data, str):
            return self.mask_text(data)
        return data  # a number or a boolean is no secret (and one that equals a value may be a coincidence)

    def mask_text(self, text: str) -> str:
        if text in self._by_marker.values():
            return marker(text)
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: marker(m.group(0)), text)

    def mask_diagnostic(self, diagnostic: Diagnostic) -> Diagnostic:
        """A diagnostic whose words quote no sensitive value (a check may name the value it refuses)."""
        if not self.values:
            return diagnostic
        return dataclasses.replace(diagnostic, summary=self.mask_text(diagnostic.summary),
                                   detail=self.mask_text(diagnostic.detail))

    def reveal(self, data: Any) -> Any:
        """`data` with every marker replaced by its value again; a marker of no value known to this run
        (the variable changed since the plan was saved) is an error, never sent on."""
        if isinstance(data, dict):
            return {self.reveal(k): self.reveal(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.reveal(v) for v in data]
        if isinstance(data, str) and "(sensitive:" in data:
            return MARKER.sub(lambda m: self._value(m.group(0)), data)
        return data

    def _value(self, found: str) -> str:
        value = self._by_marker.get(found)
        if value is None:
            raise UserError(f"the plan holds a sensitive value {found} that no sensitive variable of this run has",
                            "Its variable changed since the plan was made: run `fastuner plan` again.")
        return value
