"""docs/architecture.md cannot rot silently: every path it puts in backticks exists, and every name it
puts in backticks is defined somewhere in fastuner/ or containers/ (a def, a class, a field or a key)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
FENCED = re.compile(r"^```.*?^```", re.M | re.S)
TICKED = re.compile(r"`([^`\n]+)`")
PATH = re.compile(r"[\w.-]+(/[\w.-]*)+|[\w-]+\.(py|md|json|toml|yaml)")
NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def ticked() -> list[str]:
    return [t.removesuffix("(...)") for t in TICKED.findall(FENCED.sub("", DOC.read_text("utf-8")))]


@functools.cache
def sources() -> str:
    return "\n".join(p.read_text("utf-8") for top in ("fastuner", "containers") for p in (ROOT / top).rglob("*.py"))


def defined(name: str) -> bool:
    pattern = rf"^\s*(def|class)\s+{name}\b|^\s*{name}\s*(:|=(?!=))|[\"']{name}[\"']\s*:"
    return re.search(pattern, sources(), re.M) is not None


def test_every_path_in_the_doc_exists() -> None:
    paths = [t for t in ticked() if PATH.fullmatch(t)]
    assert len(paths) > 30, paths  # the pattern still finds the doc's paths
    assert [p for p in paths if not (ROOT / p).exists()] == []


def test_every_name_in_the_doc_is_defined() -> None:
    names = [t for t in ticked() if NAME.fullmatch(t) and not PATH.fullmatch(t)]
    assert len(names) > 30, names
    assert [n for n in names if not all(defined(part) for part in n.split("."))] == []


def test_the_readme_links_it() -> None:
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text("utf-8")
