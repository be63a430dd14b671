"""Durations as written in fastuner.yaml."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from fastuner.config.duration import Duration, format_duration, format_elapsed, parse_duration


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", timedelta(seconds=90)),
    ("90m", timedelta(minutes=90)),
    ("8h", timedelta(hours=8)),
    ("2d", timedelta(days=2)),
    ("1w", timedelta(weeks=1)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("1.5h", timedelta(minutes=90)),
    (" 1H 30M ", timedelta(minutes=90)),
    ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
])
def test_parse_accepts_units(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_parse_passes_timedelta_through() -> None:
    assert parse_duration(timedelta(hours=3)) == timedelta(hours=3)


@pytest.mark.parametrize("text", ["8", "8x", "-1h", "h", "", "1h-", "one hour", "1.h", "8h 2", "1e3s"])
def test_parse_refuses_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [8, 8.5])
def test_bare_numbers_ask_for_a_unit(value: float) -> None:
    with pytest.raises(ValueError, match="add a unit"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, None, ["8h"]])
def test_non_strings_refused(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration") as info:
        parse_duration(value)
    assert "add a unit" not in str(info.value)


@pytest.mark.parametrize("text", ["0s", "0h0m", "0.0d"])
def test_zero_refused(text: str) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (1, "1s"), (90, "1m30s"), (3600, "1h"), (5400, "1h30m"), (28800, "8h"),
    (86400, "1d"), (604800, "7d"), (90061, "1d1h1m1s"),
])
def test_format_shortest_exact_form(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.4, "0s"), (59.6, "1m"), (80, "1m20s"), (167, "2m47s"), (3599, "59m59s"), (3600, "1h"),
    (3725, "1h2m"), (5399, "1h30m"), (90061, "1d1h1m"), (-3, "0s"),
])
def test_elapsed_and_eta_use_the_spec_format(seconds: float, text: str) -> None:
    """One format a user reads everywhere ("2m47s", never "80s" beside it), parseable as a duration."""
    assert format_elapsed(seconds) == text
    if seconds > 0.5:
        parse_duration(text)


@pytest.mark.parametrize("text", ["90s", "90m", "8h", "2d", "1w", "1h30m", "36h", "1d2h3m4s"])
def test_format_round_trips(text: str) -> None:
    value = parse_duration(text)
    assert parse_duration(format_duration(value)) == value


class _Model(BaseModel):
    ttl: Duration


def test_pydantic_type_parses_serialises_and_documents() -> None:
    m = _Model.model_validate({"ttl": "1h30m"})
    assert m.ttl == timedelta(minutes=90)
    assert m.model_dump(mode="json") == {"ttl": "1h30m"}
    schema = _Model.model_json_schema()["properties"]["ttl"]
    assert schema["type"] == "string"
    assert "pattern" in schema
    with pytest.raises(ValidationError, match="invalid duration"):
        _Model.model_validate({"ttl": "8x"})
