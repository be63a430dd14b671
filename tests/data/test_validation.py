"""Bad input: every problem is reported with the file, row (line) and column, and nothing is accepted."""

from __future__ import annotations

import json

import pytest

from fastuner.config.models import DatasetChecks
from fastuner.config.tasks import Task
from fastuner.data import MAX_REPORTED_ERRORS, scan_dataset
from fastuner.data.rows import _check_row, normalise_line
from fastuner.data.scan import limits_for
from fastuner.errors import DiagnosticsError, Severity
from tests.data.helpers import classification_rows, generation_rows


def errors_of(path, task="classification", **kwargs) -> list:
    with pytest.raises(DiagnosticsError) as caught:
        scan_dataset(path, task, **kwargs)
    diagnostics = caught.value.diagnostics
    assert all(d.severity == Severity.ERROR for d in diagnostics)
    return diagnostics


def test_malformed_json_names_row_and_column(write_rows):
    rows = classification_rows(150)
    rows[41] = '{"input": "hello", "label": "billing",}'
    (error,) = errors_of(write_rows(rows))
    assert error.source.line == 42
    assert error.source.column == 38  # the comma
    assert error.summary == "not valid JSON: trailing comma is not allowed"


def test_non_utf8_byte_at_row_517_says_row_517_and_where(write_rows):
    rows = [json.dumps(r).encode() for r in classification_rows(600)]
    rows[516] = b'{"input": "caf\xe9 au lait", "label": "billing"}'  # Latin-1, not UTF-8
    path = write_rows(rows)
    (error,) = errors_of(path)
    assert error.source.file.endswith("data.jsonl")
    assert (error.source.line, error.source.column) == (517, 15)
    assert error.summary == "not valid UTF-8"
    assert "byte 0xe9 at byte offset 14 of row 517" in error.detail
    assert str(error.source).endswith("data.jsonl:517:15")


def test_non_utf8_after_multibyte_characters_counts_columns_in_characters(write_rows):
    rows = classification_rows(150)
    rows[9] = b'{"input": "\xc3\xa9\xc3\xa9\xff", "label": "x"}'
    (error,) = errors_of(write_rows(rows))
    assert (error.source.line, error.source.column) == (10, 14)
    assert "byte offset 15" in error.detail


def test_duplicate_only_file_says_so(write_rows):
    path = write_rows([{"input": "same", "label": "a"}] * 250)
    (error,) = errors_of(path)
    assert error.summary == ("all 250 rows are duplicates of 1 distinct record; "
                             "at least 100 distinct rows are needed")
    assert error.source.line is None


def test_mostly_duplicates_counts_them(write_rows):
    rows = classification_rows(30) * 5
    (error,) = errors_of(write_rows(rows))
    assert error.summary == ("only 30 distinct records in 150 rows (120 are duplicates); "
                             "at least 100 distinct rows are needed")


def test_99_rows_are_too_few_and_the_minimum_is_configurable(write_rows):
    path = write_rows(classification_rows(99))
    (error,) = errors_of(path)
    assert error.summary == "only 99 rows; at least 100 distinct rows are needed"
    scan = scan_dataset(path, "classification", rules=DatasetChecks(min_rows=99))
    assert scan.counts.distinct == 99
    assert scan_dataset(write_rows(classification_rows(100)), "classification").counts.distinct == 100


def test_missing_label_suggests_the_field_that_is_there(write_rows):
    rows = classification_rows(120)
    rows[4] = {"input": "where is my parcel", "category": "shipping"}
    rows[6] = {"input": "refund please", "target": "refund"}
    first, second = errors_of(write_rows(rows))
    assert (first.source.line, first.summary) == (5, 'missing field "label"')
    assert 'did you mean "category"?' in first.detail
    assert second.source.line == 7
    assert "task: text_generation" in second.detail


def test_generation_row_with_a_label_hints_at_the_task(write_rows):
    rows = generation_rows(120)
    rows[0] = {"input": "hi", "label": "greeting"}
    rows[1] = {"prompt": "hi", "target": "hello"}
    first, second = errors_of(write_rows(rows), "text_generation")
    assert first.summary == 'missing field "target"' and "task: classification" in first.detail
    assert second.summary == 'missing field "input"' and 'did you mean "prompt"?' in second.detail


def test_length_limits_are_inclusive_and_counted_after_normalisation(write_rows):
    rows = generation_rows(120)
    rows[0] = {"input": "x" * 8192, "target": "y" * 2048}  # at the limits: fine
    rows[1] = {"input": "  " + "x" * 8191 + "  ", "target": "ok"}  # 8,191 after stripping: fine
    rows[2] = {"input": "x" * 8193, "target": "ok"}
    rows[3] = {"input": "ok", "target": "y" * 2049}
    too_long_input, too_long_target = errors_of(write_rows(rows), "qa")
    assert too_long_input.source.line == 3
    assert too_long_input.summary == '"input" is too long: 8,193 characters (limit 8,192)'
    assert too_long_input.source.column == 2
    assert too_long_target.summary == '"target" is too long: 2,049 characters (limit 2,048)'


def test_limits_come_from_rules(write_rows):
    rows = generation_rows(120)
    rows[7] = {"input": "a" * 21, "target": "b"}
    (error,) = errors_of(write_rows(rows), "text_generation", rules=DatasetChecks(max_input_chars=20))
    assert error.summary == '"input" is too long: 21 characters (limit 20)'


@pytest.mark.parametrize(("row", "summary"), [
    ({"input": 12, "label": "a"}, '"input" must be a string, got number'),
    ({"input": None, "label": "a"}, '"input" must be a string, got null'),
    ({"input": ["a"], "label": "a"}, '"input" must be a string, got array'),
    ({"input": "a", "label": 1.5}, '"label" must be a string or an integer, got number'),
    ({"input": "a", "label": True}, '"label" must be a string or an integer, got boolean'),
    ({"input": "a", "label": {"x": 1}}, '"label" must be a string or an integer, got object'),
    ({"input": "   ", "label": "a"}, '"input" is empty'),
    ({"input": "a", "label": ""}, '"label" is empty'),
    ('["input", "label"]', "row is a JSON array, not an object"),
    ('"just a string"', "row is a JSON string, not an object"),
    ('{"input": "\\ud800", "label": "a"}', "not valid JSON: no low surrogate in string"),
    ('{"input": "a", "label": "b"} {"input": "c"}', "not valid JSON: unexpected content after document"),
])
def test_wrong_types_and_shapes(write_rows, row, summary):
    rows = classification_rows(120)
    rows[9] = row
    (error,) = errors_of(write_rows(rows))
    assert error.source.line == 10
    assert error.summary.startswith(summary)


def test_target_must_be_a_string_even_when_an_integer(write_rows):
    rows = generation_rows(120)
    rows[0] = {"input": "two plus two", "target": 4}
    (error,) = errors_of(write_rows(rows), "text_generation")
    assert error.summary == '"target" must be a string, got number'


def test_integer_labels_are_converted_with_a_warning(write_rows):
    rows = [{"input": f"text {i}", "label": i % 3} for i in range(120)]
    rows[4]["label"] = "1"  # the same label as the integer 1
    scan = scan_dataset(write_rows(rows), "classification")
    assert scan.labels == {"0": 40, "1": 40, "2": 40}
    (warning,) = [w for w in scan.warnings if "integer" in w.summary]
    assert warning.summary == "converted 119 integer labels to strings"
    assert warning.source.line == 1


def test_blank_lines_are_skipped_counted_and_numbered(write_rows):
    rows = classification_rows(120)
    rows[10:10] = ["", "   ", "\t"]
    rows.append({"input": "bad", "label": None})
    (error,) = errors_of(write_rows(rows))
    assert error.source.line == 124  # blank lines count as lines
    del rows[-1]
    scan = scan_dataset(write_rows(rows), "classification")
    assert (scan.counts.lines, scan.counts.blank, scan.counts.records) == (123, 3, 120)
    (warning,) = [w for w in scan.warnings if "blank" in w.summary]
    assert warning.summary == "skipped 3 blank lines" and warning.source.line == 11
    assert 11 not in scan.rows_in("train") + scan.rows_in("validation") + scan.rows_in("test")


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.jsonl"
    (error,) = errors_of(path)
    assert error.summary.startswith("dataset file not found: ") and "nope.jsonl" in error.summary
    assert str(path) in error.detail


def test_directory_is_not_a_dataset(tmp_path):
    (error,) = errors_of(tmp_path)
    assert error.summary.startswith("dataset path is a directory")


def test_empty_file(write_rows):
    (error,) = errors_of(write_rows([]))
    assert error.summary == "dataset file is empty"
    (error,) = errors_of(write_rows(["", "  "], name="blank.jsonl"))
    assert error.summary == "dataset file has no records"
    assert error.detail == "its 2 lines are blank"


def test_unknown_task(write_rows):
    with pytest.raises(DiagnosticsError, match="unknown dataset task"):
        scan_dataset(write_rows(classification_rows(100)), "summarisation")


def test_extra_fields_are_ignored_with_one_warning_naming_them(write_rows):
    rows = classification_rows(120)
    for i, row in enumerate(rows):
        row["id"] = i
        if i % 2:
            row["source"] = "web"
    scan = scan_dataset(write_rows(rows), "classification")
    (warning,) = [w for w in scan.warnings if "ignored" in w.summary]
    assert warning.summary == 'ignored fields other than "input" and "label" in 120 rows'
    assert warning.detail == 'fields ignored: "id" (120), "source" (60)'
    assert scan.counts.distinct == 120


def test_all_errors_are_counted_and_the_first_20_reported(write_rows):
    rows = classification_rows(200)
    for i in range(5, 200, 4):  # 49 bad rows
        rows[i] = {"input": "x", "label": None}
    errors = errors_of(write_rows(rows), workers=1, block_bytes=512)  # errors from many blocks
    assert len(errors) == MAX_REPORTED_ERRORS + 1
    assert [e.source.line for e in errors[:20]] == list(range(6, 6 + 4 * 20, 4))
    assert errors[-1].summary == "… and 29 more bad rows (49 in all)"
    assert errors[-1].source.line is None


def test_exactly_20_errors_have_no_more_line(write_rows):
    rows = classification_rows(200)
    for i in range(20):
        rows[i] = "{"
    errors = errors_of(write_rows(rows))
    assert len(errors) == 20 and all(e.source.line for e in errors)


def test_address_is_carried_on_diagnostics(write_rows):
    with pytest.raises(DiagnosticsError) as caught:
        scan_dataset(write_rows(classification_rows(5)), "classification", address="dataset.intents")
    assert caught.value.diagnostics[0].address == "dataset.intents"


def test_byte_order_mark_and_crlf_are_accepted(write_rows):
    rows = [json.dumps(r).encode() for r in classification_rows(120)]
    rows[0] = b"\xef\xbb\xbf" + rows[0]
    scan = scan_dataset(write_rows(rows, newline=b"\r\n"), "classification")
    assert scan.counts.distinct == 120 and not scan.warnings


@pytest.mark.parametrize("line", [
    b'{"input": "plain", "label": "a"}',
    b'{"input": "  padded\\t", "label": " a "}',
    b'{"label": "a", "input": "order swapped", "extra": [1, 2]}',
    '{"input": "e\u0301 decomposed", "label": "cafe\u0301"}'.encode(),
    '{"input": "\u00e9 composed", "label": "caf\u00e9"}'.encode(),
    b'{"input": "quote \\" and \\\\ and \\n and \\u0000", "label": "a"}',
    b'{"input": "ok", "label": 7}',
    b'{"input": "ok", "label": ""}',
    b'{"input": "", "label": "a"}',
    b'{"input": "\\u00e9\\u0301", "label": "a"}',
    b'   ',
    b'[]',
    b'{"input": "\xff", "label": "a"}',
])
def test_fast_path_and_careful_path_agree(line):
    """The scan's fast path must accept exactly what the careful path accepts, with the same bytes."""
    for limits in (limits_for(Task.CLASSIFICATION, DatasetChecks()), limits_for(Task.TEXT_GENERATION, DatasetChecks())):
        fast = normalise_line(line.replace(b'"label"', b'"target"') if limits.second == "target" else line,
                              limits)
        slow = _check_row(line.replace(b'"label"', b'"target"') if limits.second == "target" else line,
                          limits)
        if slow is None or not isinstance(slow, tuple):
            assert type(fast) is type(slow)
            if slow is not None:
                assert (fast.summary, fast.column) == (slow.summary, slow.column)
        else:
            assert fast == slow[1]
