"""How the dataset rules read the spec's `Split` and `DatasetChecks` (fastuner.config.models, validated
there): the split names, exact split fractions, the text length the limits count, and the version of a
record's normalised form. Everything a scan reads from the spec is part of a dataset's `version`:
change a limit or the seed and the dataset gets a new version.
"""

from __future__ import annotations

import unicodedata
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastuner.config.models import Split

SPLITS = ("train", "validation", "test")

# Bump when the normalised form of a record (and so its bytes in a split file and its digest) changes.
NORMALISATION_VERSION = 1


def split_fractions(split: Split) -> tuple[Fraction, Fraction, Fraction]:
    """Exact (train, validation, test) fractions of the distinct records, from the decimal values as
    written. `train` takes every record not picked for validation or test, so float noise in the
    fractions never loses or duplicates a record."""
    validation, test = _exact(split.validation), _exact(split.test)
    return 1 - validation - test, validation, test


def text_length(text: str) -> int:
    """The length the row rules check against `max_input_chars`: code points after NFC normalisation and
    stripping (0: empty or only whitespace). `rows.py` computes the same inline, row by row."""
    return len((text if text.isascii() else unicodedata.normalize("NFC", text)).strip())


def _exact(value: float) -> Fraction:
    # repr() is the shortest decimal that round-trips, so 0.1 becomes exactly 1/10.
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
