"""The loader's one-pass reader (`read_plain`) against the careful path and `yaml.safe_load`.

`read_plain` builds data and positions from libyaml's events for speed; it must give exactly what
`parse_yaml` (the marked node tree) and `yaml.safe_load` give, and hand anything it does not handle
to them instead of guessing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fastuner.config.loader import _Unusual, load_spec, parse_yaml, read_plain

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(p for p in ROOT.glob("**/*.yaml") if ".venv" not in p.parts and "node_modules" not in p.parts)

SCALARS = """\
version: 1
project: "demo"
ints: [0, -3, +7, 0x1f, 0o17, 1_000, 012]
floats: [1.5, -2.0e-4, .inf, -.Inf, .nan, 6.8523015e+5, 1_0.5]
bools: [yes, No, true, FALSE, on, Off, y, n]
nulls: [~, null, Null, '']
empty_value:
dates: [2026-06-01, 2026-06-01T12:30:00Z, 2001-12-14 21:59:43.10 -5]
strings: ['yes', "1.5", plain text, "tab\\tand \\u00e9", 'it''s', -x, .hidden, 8h, 2.0.1]
block: |
  two
  lines
folded: >-
  one
  line
empty_map: {}
empty_list: []
nested:
  - {a: 1, b: [x, {c: d}]}
  -
    - deep
    - - deeper
unicode_ké: vålue
"key with spaces": 1
'quoted: key': 2
"""


def same(text: str) -> tuple:
    data, positions, keys = read_plain(text)
    careful, careful_positions, careful_keys = parse_yaml(text, "f")
    assert data == careful == yaml.safe_load(text)
    assert positions == careful_positions
    assert keys == careful_keys
    return data, positions, keys


def test_plain_scalars_read_as_safe_load_reads_them() -> None:
    data, positions, keys = same(SCALARS)
    assert data["ints"][3] == 31 and data["bools"][1] is False and data["strings"][0] == "yes"
    assert positions[("nested", 1, 1, 0)] == (22, 9)
    assert keys[("nested", 0, "b")] == (19, 12)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_in_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    try:
        read_plain(text)
    except _Unusual:
        return  # left to the other paths, which the rest of the suite covers
    except yaml.YAMLError:
        return
    same(text)


@pytest.mark.parametrize("text", [
    "a: &x 1\nb: *x\n",                      # anchors and aliases
    "a: !!str 1\n",                          # explicit tags
    "a: !custom {b: 1}\n",
    "no: 1\n", "2024: 1\n", "~: 1\n",        # keys YAML reads as bool, int, null
    "a: {<<: {b: 1}}\n",                     # merge keys
    "a: 1\na: 2\n",                          # duplicates
    "a: 1\n---\nb: 2\n",                     # two documents
    "a: =\n",                                # a value YAML cannot construct
    "? [a]\n: 1\n",                          # a key that is not a scalar
])
def test_what_it_leaves_to_the_other_paths(text: str) -> None:
    with pytest.raises(_Unusual):
        read_plain(text)


def test_empty_streams() -> None:
    assert read_plain("") == (None, {}, {})
    assert read_plain("# only a comment\n") == (None, {}, {})
    assert read_plain("---\n")[0] is None


def test_syntax_errors_reach_the_careful_path(tmp_path: Path) -> None:
    (tmp_path / "fastuner.yaml").write_text("version: 1\nproject: demo\ndatasets:\n  ds: {path: a.jsonl\n")
    with pytest.raises(yaml.YAMLError):
        read_plain((tmp_path / "fastuner.yaml").read_text())
    with pytest.raises(Exception, match="invalid YAML"):
        load_spec(tmp_path / "fastuner.yaml")


def test_a_spec_read_in_one_pass_points_at_its_lines(tmp_path: Path) -> None:
    (tmp_path / "fastuner.yaml").write_text(
        "version: 1\nproject: demo\ndatasets:\n  ds:\n    path: a.jsonl\n    task: qa\n")
    spec = load_spec(tmp_path / "fastuner.yaml")
    assert spec.index._maps is not None  # known from the one pass, no second parse
    assert str(spec.source(("datasets", "ds", "task"))).endswith("fastuner.yaml:6:11")
    assert str(spec.source(("datasets", "ds", "task"), key=True)).endswith("fastuner.yaml:6:5")


def test_a_reference_written_with_an_escape_is_still_substituted(tmp_path: Path) -> None:
    """Substitution is skipped for a spec without `${`, but `\\x24{` writes one in a quoted string."""
    (tmp_path / "fastuner.yaml").write_text(
        'version: 1\nproject: "\\x24{var.name}"\nvariables:\n  name: {default: demo}\n')
    assert load_spec(tmp_path / "fastuner.yaml").config.project == "demo"
