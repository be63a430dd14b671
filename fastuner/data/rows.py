"""One block of JSONL lines: validate, normalise, digest (`scan_block`) and render (`render_block`).

These functions run in worker processes, so they take and return only picklable plain values and
never raise for bad rows: a bad row becomes a `RowError` in the block's result. A block is a run of
whole lines (it ends after a newline, or at the end of the file).

Normalised record (NORMALISATION_VERSION 1):
- only the task's two fields are kept, in the order `input`, then `label` or `target`;
- each is Unicode NFC, then stripped of leading and trailing whitespace (`str.strip`);
- a classification label may be a JSON integer (not a boolean or a float): it becomes its decimal string;
- the record's bytes are compact JSON as orjson writes it (UTF-8, no spaces, only `"`, `\\` and
  control characters escaped); these exact bytes plus a newline are the record's line in a split file.

Row digest: SHA-256 of a seed prefix and the normalised record's bytes. Equal records have equal
digests (deduplication); the digest's first 8 bytes order the records for the seeded split, so a
record's split depends on its content and the seed only, never on its position in the file.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import unicodedata
from array import array
from collections import Counter
from dataclasses import dataclass, field

import orjson

from fastuner.data.blocks import split_lines

PARTITIONS = 32  # digest partitions: deduplication handles one partition's rows at a time (32: ~70K rows a task per GB)
_BOM = b"\xef\xbb\xbf"
_MAX_BLOCK_ERRORS = 20
_loads, _dumps, _nfc = orjson.loads, orjson.dumps, unicodedata.normalize

# Common names for the fields fastuner needs, for "did you mean" hints on a missing field.
_ALIASES = {
    "input": ("text", "prompt", "question", "instruction", "sentence", "content", "source", "query"),
    "target": ("output", "completion", "response", "answer", "label", "labels", "text_target"),
    "label": ("labels", "class", "category", "target", "intent", "sentiment", "y"),
}


@dataclass(frozen=True)
class Limits:
    """The per-row settings a worker needs (picklable, small)."""

    second: str  # the task's row field beside "input" ("label" or "target")
    labelled: bool  # the second field is a class label: an integer is accepted, its ids are kept (strata)
    max_input_chars: int
    max_second_chars: int | None  # None for class labels (no limit)
    other_tasks: tuple[tuple[str, str, str], ...] = ()  # (field, family, task) of tasks with another field


@dataclass
class RowError:
    line: int  # 1-based, within the block
    column: int | None
    summary: str
    detail: str


@dataclass
class BlockScan:
    """What a block contributes to a scan; row data is kept in compact arrays, one entry per valid row
    (valid rows are numbered from 0 within the block: their ordinals)."""

    n_lines: int = 0
    n_blank: int = 0
    blank_lines: array = field(default_factory=lambda: array("I"))  # lines (within the block) skipped
    n_errors: int = 0
    errors: list[RowError] = field(default_factory=list)  # the block's first errors, in line order
    field_sets: dict[tuple, int] = field(default_factory=dict)  # rows with extra fields, by field names
    first_extra: int | None = None
    n_int_labels: int = 0
    first_int_label: int | None = None
    n_valid: int = 0
    label_names: list[str] = field(default_factory=list)  # label id -> label, in order of appearance
    label_counts: list[int] = field(default_factory=list)  # label id -> valid rows with it
    # The valid rows by digest partition, in file order: the first 24 bytes of each row's digest
    # (8 bytes of split key, then 16 bytes of identity), its ordinal, and its label id (classification).
    part_digests: list[bytes] = field(default_factory=list)
    part_ordinals: list[array] = field(default_factory=list)
    part_labels: list[array] = field(default_factory=list)


def row_hasher(seed: int):
    """The SHA-256 state that every row digest continues from (`.copy()` then `.update(record)`)."""
    return hashlib.sha256(b"fastuner-row-v1\x00seed=%d\x00" % seed)


def scan_block(block: tuple[bytes, bytes, int], limits: Limits, seed: int, first_block: bool) -> BlockScan:
    """Validate and digest every line of `block` (`Block.parts()`)."""
    out = BlockScan()
    _walk(block, limits, first_block, out, seed, None)
    return out


def render_block(block: tuple[bytes, bytes, int], limits: Limits, first_block: bool,
                 assignment: bytes) -> tuple[list[bytearray], int]:
    """The normalised lines of `block`'s valid rows, grouped by split code.

    `assignment` holds one code per valid row of the block (0 = duplicate, dropped; 1, 2, 3 = train,
    validation, test). Returns the lines for codes 1..3 (each line ending in a newline) and the
    number of valid rows seen, which the caller checks against the scan.
    """
    out = BlockScan()
    buckets = _walk(block, limits, first_block, out, None, assignment)
    return buckets[1:], out.n_valid


def render_block_to_file(block: tuple[bytes, bytes, int], limits: Limits, first_block: bool, assignment: bytes,
                    staging: str, index: int) -> tuple[tuple[int, ...], int]:
    """`render_block` for a worker process of `write_splits`: the three splits' lines go to the file
    `staging/index`, one after the other (handing them over through a file costs less than through
    the pool's pipe); returns their sizes and the number of valid rows. Defined here so that such a
    worker imports only this module."""
    parts, n_valid = render_block(block, limits, first_block, assignment)
    with open(os.path.join(staging, str(index)), "wb") as out:
        for data in parts:
            out.write(data)
    return tuple(len(data) for data in parts), n_valid


def normalise_line(line: bytes, limits: Limits):
    """One line's verdict, as both passes see it: None for a blank line, a `RowError`, or the
    normalised record's bytes."""
    out = BlockScan()
    buckets = _walk((b"", line + b"\n", len(line) + 1), limits, False, out, None, b"\x01")
    if out.n_blank or not out.n_lines:
        return None
    if out.errors:
        return out.errors[0]
    return bytes(buckets[1][:-1])


def _walk(block: tuple[bytes, bytes, int], limits: Limits, first_block: bool, out: BlockScan,
          seed: int | None, assignment: bytes | None) -> list[bytearray]:
    """The one loop over a block's lines, for both passes.

    Scanning (`assignment` None) digests each valid row; rendering puts its record in the bucket that
    `assignment` names. The fast path handles a well-formed row. Anything unusual (a blank line, bad
    JSON, a missing field, a wrong type, an integer label, a length out of bounds) falls through to
    `_check_row`, which decides what it is: the fast path never rejects a row itself (a test checks
    that both paths agree). A plain loop is the fastest form here: mapping built-ins over batches of
    rows was measured slower for every step (parsing, building records, hashing). Records are
    appended to their split's bytearray at once: a `bytes` from orjson pins about 4 KB of heap while
    it lives, so keeping a block's records in a list would cost ~10x the block's size.
    """
    lines = split_lines(block)
    out.n_lines = len(lines)
    if first_block and lines and lines[0].startswith(_BOM):
        lines[0] = lines[0][len(_BOM):]

    labelled = limits.labelled
    second = limits.second
    max_input = limits.max_input_chars
    max_second = limits.max_second_chars or 0
    loads, dumps, nfc = _loads, _dumps, _nfc
    rendering = assignment is not None
    buckets = [bytearray(), bytearray(), bytearray(), bytearray()]
    base = row_hasher(seed or 0)
    parts = [bytearray() for _ in range(PARTITIONS)]
    part_ords = [array("I") for _ in range(PARTITIONS)]
    part_labels = [array("I") for _ in range(PARTITIONS)]
    label_ids: dict[str, int] = {}
    field_sets = out.field_sets
    first_extra = None
    copy = base.copy
    n = 0

    for index, line in enumerate(lines):
        try:
            obj = loads(line)
            text = obj["input"]
            other = obj[second]
            if type(text) is not str or type(other) is not str:
                raise ValueError
            if not text.isascii():
                text = nfc("NFC", text)
            text = text.strip()
            if not other.isascii():
                other = nfc("NFC", other)
            other = other.strip()
            if not 0 < len(text) <= max_input or not other or (max_second and len(other) > max_second):
                raise ValueError
            record = dumps({"input": text, second: other})
        except Exception:
            verdict = _check_row(line, limits)
            if verdict is None:
                out.n_blank += 1
                out.blank_lines.append(index + 1)
                continue
            if isinstance(verdict, RowError):
                verdict.line = index + 1
                out.n_errors += 1
                if len(out.errors) < _MAX_BLOCK_ERRORS:
                    out.errors.append(verdict)
                continue
            obj, record, other, from_int = verdict
            if from_int and not rendering:
                out.n_int_labels += 1
                if out.first_int_label is None:
                    out.first_int_label = index + 1

        if rendering:
            if n < len(assignment):
                bucket = buckets[assignment[n]]
                bucket += record
                bucket += b"\n"
            n += 1
            continue
        if len(obj) != 2:
            names = tuple(obj)
            field_sets[names] = field_sets.get(names, 0) + 1
            if first_extra is None:
                first_extra = index + 1
        h = copy()
        h.update(record)
        digest = h.digest()
        part = digest[8] >> 3  # PARTITIONS = 32
        parts[part] += digest[:24]
        part_ords[part].append(n)
        if labelled:
            label = label_ids.get(other)
            if label is None:
                label = label_ids[other] = len(label_ids)
            part_labels[part].append(label)
        n += 1

    out.n_valid = n
    out.first_extra = first_extra
    if not rendering:
        out.label_names = list(label_ids)
        tally: Counter = Counter()
        for labels in part_labels:
            tally.update(labels)
        out.label_counts = [tally[i] for i in range(len(label_ids))]
        out.part_digests = [bytes(p) for p in parts]
        out.part_ordinals = part_ords
        out.part_labels = part_labels
    return buckets


def _check_row(line: bytes, limits: Limits):
    """The careful path for one line: None for a blank line, a RowError (line number unset), or
    (object, record bytes, second field's normalised value, label converted from an integer)."""
    if not line or line.isspace():
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return _json_error(line, exc)
    second = limits.second
    if not isinstance(obj, dict):
        return RowError(0, 1, f"row is a JSON {_json_type(obj)}, not an object",
                        f'each row must be a JSON object with "input" and "{second}" fields')

    values = {}
    for name in ("input", second):
        if name not in obj:
            return RowError(0, None, f'missing field "{name}"', _missing_hint(name, obj, limits))
        value = obj[name]
        from_int = False
        if limits.labelled and name == second and type(value) is int:
            value, from_int = str(value), True
        if type(value) is not str:
            expected = "a string or an integer" if limits.labelled and name == second else "a string"
            return RowError(0, _column_of_key(line, name), f'"{name}" must be {expected}, got {_json_type(value)}',
                            _type_hint(name, value, limits.labelled and name == second))
        if not value.isascii():
            value = unicodedata.normalize("NFC", value)
        value = value.strip()
        limit = limits.max_input_chars if name == "input" else limits.max_second_chars
        if not value:
            return RowError(0, _column_of_key(line, name), f'"{name}" is empty',
                            "the value is empty or only whitespace")
        if limit is not None and len(value) > limit:
            return RowError(0, _column_of_key(line, name),
                            f'"{name}" is too long: {len(value):,} characters (limit {limit:,})',
                            f"shorten the {name} or raise the limit (max_{'input' if name == 'input' else 'target'}_chars); "
                            "lengths are counted in Unicode characters after normalisation")
        values[name] = (value, from_int)
    record = orjson.dumps({"input": values["input"][0], second: values[second][0]})
    return obj, record, values[second][0], values[second][1]


def _json_error(line: bytes, exc: orjson.JSONDecodeError) -> RowError:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        column = len(line[:bad.start].decode("utf-8")) + 1
        byte = line[bad.start]
        return RowError(0, column, "not valid UTF-8",
                        f"byte 0x{byte:02x} at byte offset {bad.start} of the row cannot be decoded as "
                        "UTF-8 (save the file as UTF-8)")
    message = exc.msg
    if "surrogate" in message:
        message += " (a \\uD800-\\uDFFF escape that is not part of a valid pair)"
    return RowError(0, exc.colno, f"not valid JSON: {message}", "each row must be one JSON object on one line")


def _missing_hint(name: str, obj: dict, limits: Limits) -> str:
    present = [k for k in obj if isinstance(k, str)]
    shown = ", ".join(f'"{k}"' for k in present[:8]) or "none"
    if name == limits.second:
        for field_name, family, task in limits.other_tasks:
            if field_name in obj:
                return (f'the row has a "{field_name}" field: for a {family} dataset set `task: {task}`, '
                        f'otherwise rename it to "{name}" (fields present: {shown})')
    candidates = [k for k in present if k.lower() in _ALIASES.get(name, ())]
    candidates += difflib.get_close_matches(name, present, n=1, cutoff=0.7)
    if candidates:
        return f'did you mean "{candidates[0]}"? Rename it to "{name}" (fields present: {shown})'
    return f"fields present: {shown}"


def _type_hint(name: str, value, label: bool) -> str:
    if value is None:
        return f'"{name}" is null; remove the row or give it a value'
    if label and isinstance(value, float | bool):
        return "labels are strings (integers are accepted and converted to strings)"
    return "write the value as a JSON string"


def _column_of_key(line: bytes, name: str) -> int | None:
    at = line.find(b'"%s"' % name.encode())
    if at < 0:
        return None
    return len(line[:at].decode("utf-8", errors="replace")) + 1


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
