"""Load fastuner.yaml into a `Config`, keeping where every key and value came from.

The YAML is composed into nodes (which carry line and column marks) and converted to plain Python while
a position map records `path -> (line, column)` for every key and value. Variables (`${var.NAME}`) are
substituted in string values, then pydantic validates; each pydantic error is mapped back to the file
position of the offending key or value, with "did you mean" for unknown keys. Nothing here writes.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from fastuner.config.kinds import SECTIONS
from fastuner.config.models import Config, Policy, PolicyFile
from fastuner.config.sensitive import Sensitive
from fastuner.errors import Diagnostic, DiagnosticsError, Source

DEFAULT_FILE = "fastuner.yaml"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: same nodes and marks
VAR_REF = re.compile(r"\$\{var\.([A-Za-z_][A-Za-z0-9_]*)\}")
ENV_PREFIX = "FASTUNER_VAR_"
Path_ = tuple[str | int, ...]


class PositionIndex(Mapping):
    """Where each path's key and value sit in the YAML text.

    Plain YAML (every spec we know of) is read once, data and positions together (`read_plain`);
    anything else takes libyaml's loader, and the node tree with its marks is composed when a
    diagnostic first asks for a position.
    """

    def __init__(self, text: str, file: str, maps: tuple[dict, dict] | None = None) -> None:
        self._text = text
        self._file = file
        self._maps = maps

    def _load(self) -> tuple[dict, dict]:
        if self._maps is None:
            _, positions, key_positions = parse_yaml(self._text, self._file)
            self._maps = (positions, key_positions)
        return self._maps

    @property
    def values(self) -> dict[Path_, tuple[int, int]]:
        return self._load()[0]

    @property
    def keys_(self) -> dict[Path_, tuple[int, int]]:
        return self._load()[1]

    def __getitem__(self, path: Path_) -> tuple[int, int]:
        return self.values[path]

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Spec:
    """A validated spec and everything needed to point back into its file."""

    config: Config
    file: Path
    text: str
    index: PositionIndex = field(repr=False, compare=False)
    variables: Mapping[str, Any] = field(default_factory=dict)
    sensitive: Sensitive = field(default_factory=Sensitive, repr=False, compare=False)

    @cached_property
    def base_dir(self) -> Path:
        """The spec's folder, absolute: relative paths in the spec are relative to it (resolved once:
        a plan resolves every dataset's path)."""
        return self.file.resolve().parent

    @property
    def positions(self) -> Mapping[Path_, tuple[int, int]]:
        return self.index.values

    @property
    def key_positions(self) -> Mapping[Path_, tuple[int, int]]:
        return self.index.keys_

    def source(self, path: Path_, *, key: bool = False) -> Source:
        """The file position of `path` (its key when `key`), falling back to the nearest parent."""
        table = self.key_positions if key else self.positions
        return locate(str(self.file), path, table, self.positions)

    def resolve(self, relative: str) -> Path:
        """A path from the spec, relative to the spec's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.base_dir / p


def locate(file: str, path: Path_, table: Mapping[Path_, tuple[int, int]],
           fallback: Mapping[Path_, tuple[int, int]]) -> Source:
    probe = tuple(path)
    while True:
        for t in (table, fallback):
            if probe in t:
                line, col = t[probe]
                return Source(file, line, col)
        if not probe:
            return Source(file, 1, 1)
        probe = probe[:-1]


# --- YAML with positions -----------------------------------------------------------------------


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.positions: dict[Path_, tuple[int, int]] = {}
        self.key_positions: dict[Path_, tuple[int, int]] = {}
        self.errors: list[Diagnostic] = []
        self._constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: Path_ = ()) -> Any:
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self._error(key_node, "a mapping key must be a plain value")
                    continue
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self._error(key_node, "YAML merge keys (<<) are not supported in fastuner.yaml")
                    continue
                key = self._constructor.construct_object(key_node)
                if not isinstance(key, str):  # `no`, `on`, `2024`, `0x1f`: the name as written, not False or 31
                    key = key_node.value
                if key in out:
                    first = self.key_positions[(*path, key)]
                    self._error(key_node, f"duplicate key `{key}`",
                                f"`{key}` is already set at line {first[0]}; remove one of them.")
                    continue
                self.key_positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = self.build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._constructor.construct_object(node)

    def _error(self, node: yaml.Node, summary: str, detail: str = "") -> None:
        self.errors.append(Diagnostic.error(
            summary, detail, source=Source(self.file, node.start_mark.line + 1, node.start_mark.column + 1)))


class _Unusual(Exception):
    """Raised by the fast readers for what only the careful path reports well (duplicates, merges)."""


_STR = "tag:yaml.org,2002:str"
_RESOLVERS = _LOADER.yaml_implicit_resolvers  # what a plain scalar's first character may make it
_CONSTRUCTORS = yaml.SafeLoader.yaml_constructors


def read_plain(text: str) -> tuple[Any, dict[Path_, tuple[int, int]], dict[Path_, tuple[int, int]]]:
    """Plain data with its value and key positions, in one pass over libyaml's events: faster than
    libyaml's own loader, which gives no positions (65 ms against 170 ms for 1,000 resources), and
    composing the marked node tree for positions cost as much again. Each value is what `yaml.safe_load`
    makes of it: the same events, the same tag resolution and constructors. `_Unusual` for what this
    pass leaves to the others: an anchor, alias or explicit tag, a key that is not a plain string
    (`no`, `2024`, `<<`), a duplicate key, more than one document; `yaml.YAMLError` for a syntax error."""
    positions: dict[Path_, tuple[int, int]] = {}
    keys: dict[Path_, tuple[int, int]] = {}
    resolved: dict[str, tuple[str, Any]] = {}
    constructor = yaml.SafeLoader("")
    parser = _LOADER(text)
    next_event = parser.get_event

    def plain(event: yaml.ScalarEvent) -> tuple[str, Any]:
        """A plain scalar's tag and value, which depend on its text alone (and are immutable: a text
        that recurs, `lora` or `0.05`, is resolved once)."""
        known = resolved.get(event.value)
        if known is None:
            tag = _implicit_tag(event.value)
            if tag == _STR:
                known = (tag, event.value)
            else:
                construct = _CONSTRUCTORS.get(tag)
                if construct is None or tag == "tag:yaml.org,2002:merge":
                    raise _Unusual
                node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
                known = (tag, construct(constructor, node))
            resolved[event.value] = known
        return known

    def node(event: yaml.Event, path: Path_) -> Any:
        mark = event.start_mark
        positions[path] = (mark.line + 1, mark.column + 1)
        kind = type(event)
        if event.anchor is not None or kind is yaml.AliasEvent or (event.tag is not None and event.tag != "!"):
            raise _Unusual
        if kind is yaml.ScalarEvent:
            return plain(event)[1] if event.implicit[0] else event.value  # quoted or block: a string
        if kind is yaml.SequenceStartEvent:
            items: list[Any] = []
            while type(event := next_event()) is not yaml.SequenceEndEvent:
                items.append(node(event, (*path, len(items))))
            return items
        mapping: dict[str, Any] = {}
        while type(event := next_event()) is not yaml.MappingEndEvent:
            if type(event) is not yaml.ScalarEvent or event.anchor is not None or event.tag is not None:
                raise _Unusual
            key = event.value
            if event.implicit[0] and plain(event)[0] != _STR:
                raise _Unusual  # a key YAML reads as bool/int/null/merge: the careful path names it as written
            if key in mapping:
                raise _Unusual
            mark, at = event.start_mark, (*path, key)
            keys[at] = (mark.line + 1, mark.column + 1)
            mapping[key] = node(next_event(), at)
        return mapping

    try:
        next_event()  # the stream's start
        event = next_event()
        if type(event) is yaml.StreamEndEvent:
            return None, positions, keys
        data = node(next_event(), ())
        next_event()  # the document's end
        if type(next_event()) is not yaml.StreamEndEvent:
            raise _Unusual
        return data, positions, keys
    finally:
        parser.dispose()


def _implicit_tag(value: str) -> str:
    """The tag YAML's resolver gives a plain scalar (`yes`, `1.5` and `~` are not strings)."""
    for tag, pattern in _RESOLVERS.get(value[:1], ()):
        if pattern.match(value):
            return tag
    return _STR


class _FastLoader(_LOADER):  # type: ignore[misc, valid-type]
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                raise _Unusual  # merge keys, and keys YAML reads as bool/int/float (`no`, `2024`): names as written
            if key_node.value in seen:
                raise _Unusual
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, file: str) -> tuple[Any, PositionIndex]:
    """Plain data and where it came from, fast; anything unusual (a syntax error, a duplicate key) goes
    through `parse_yaml` for a diagnostic with its position."""
    try:
        data, positions, keys = read_plain(text)
        return data, PositionIndex(text, file, (positions, keys))
    except (_Unusual, yaml.YAMLError):
        pass
    try:
        return yaml.load(text, Loader=_FastLoader), PositionIndex(text, file)
    except (_Unusual, yaml.YAMLError):
        data, positions, keys = parse_yaml(text, file)
        return data, PositionIndex(text, file, (positions, keys))


def parse_yaml(text: str, file: str) -> tuple[Any, dict, dict]:
    """Plain data plus value and key position maps; YAML errors become diagnostics."""
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        started = ""
        if exc.context_mark is not None and mark is not None and exc.context_mark.line != mark.line:
            started = (f"It started at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}. ")
        raise DiagnosticsError.single(
            f"invalid YAML: {problem}{context}",
            started + "Fix the syntax here (indentation, a missing colon, an unclosed quote or bracket).",
            source=_mark_source(file, text, mark),
        ) from None
    except yaml.reader.ReaderError as exc:  # a character YAML forbids (NUL, other controls): no mark, an offset
        position = exc.position
        if _LOADER is not yaml.SafeLoader:  # libyaml counts bytes of the UTF-8 text, not characters
            position = len(text.encode("utf-8")[:position].decode("utf-8", errors="ignore"))
        line, column = _line_column(text, position)
        raise DiagnosticsError.single(
            f"invalid YAML: character U+{exc.character:04X} is not allowed ({exc.reason})",
            "Remove it: YAML allows tabs and newlines but no other control characters.",
            source=Source(file, line, column)) from None
    except yaml.YAMLError as exc:
        raise DiagnosticsError.single(f"invalid YAML: {exc}", source=Source(file, 1, 1)) from None
    if node is None:
        raise DiagnosticsError.single(
            "the spec is empty", "Start with `version: 1` and `project: NAME`.", source=Source(file, 1, 1))
    builder = _Builder(file)
    try:
        data = builder.build(node)
    except yaml.MarkedYAMLError as exc:  # a tag the safe loader cannot construct (!!python/..., !custom)
        mark = exc.problem_mark or exc.context_mark
        raise DiagnosticsError.single(
            f"invalid YAML: {exc.problem or exc.context or 'cannot read this value'}",
            "fastuner.yaml holds plain YAML: remove the `!tag`.",
            source=_mark_source(file, text, mark)) from None
    if builder.errors:
        raise DiagnosticsError(builder.errors)
    return data, builder.positions, builder.key_positions


def _mark_source(file: str, text: str, mark: yaml.Mark | None) -> Source:
    """Where a YAML error's mark points; the end of the stream (a problem found only there) is the end
    of the last line, not a line after it that the file does not have (found by the fuzzer)."""
    if mark is None:
        return Source(file, 1, 1)
    lines = text.split("\n")  # after a final newline, the empty line an editor shows is a line too
    if mark.line + 1 > len(lines):
        return Source(file, len(lines), len(lines[-1]) + 1)
    return Source(file, mark.line + 1, mark.column + 1)


def _line_column(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of the character at `position` in `text`."""
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


# --- variables ---------------------------------------------------------------------------------


def collect_variables(declared: Mapping[str, Any], cli: Mapping[str, str],
                      environ: Mapping[str, str]) -> dict[str, Any]:
    """Values by priority: --var, then FASTUNER_VAR_NAME, then the declared default. An empty
    FASTUNER_VAR_NAME counts as unset: CI systems pass an unset repository variable or secret as an
    empty string (the workflow `fastuner ci github` writes passes every variable of the spec so)."""
    values: dict[str, Any] = {}
    for name, decl in declared.items():
        if isinstance(decl, Mapping) and decl.get("default") is not None:
            values[name] = decl["default"]
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and len(key) > len(ENV_PREFIX) and value != "":
            values[key[len(ENV_PREFIX):]] = value
    values.update(cli)
    return values


def substitute(data: Any, values: Mapping[str, Any], spec_file: str, positions: Mapping[Path_, tuple[int, int]],
               path: Path_ = ()) -> tuple[Any, list[Diagnostic], set[str]]:
    """Replace ${var.NAME} in every string value (a string that is only the reference takes the
    value's own type); `$${` writes a literal `${`. Returns data, diagnostics and the names used."""
    errors: list[Diagnostic] = []
    used: set[str] = set()

    def walk(value: Any, at: Path_) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*at, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*at, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        def lookup(name: str) -> Any:
            used.add(name)
            if name not in values:
                close = difflib.get_close_matches(name, list(values), n=1)
                hint = f" Did you mean `{close[0]}`?" if close else ""
                errors.append(Diagnostic.error(
                    f"variable `{name}` has no value",
                    f"Pass --var {name}=VALUE, set {ENV_PREFIX}{name}, or declare a default under `variables:`.{hint}",
                    source=locate(spec_file, at, positions, positions)))
                return ""
            return values[name]

        escaped = value.replace("$${", "\0")
        leftover = re.search(r"\$\{(?!var\.[A-Za-z_][A-Za-z0-9_]*\})[^}]*\}?", escaped)
        if leftover:
            errors.append(Diagnostic.error(
                f"unsupported reference `{leftover.group(0)}`",
                "Only ${var.NAME} is supported; write $${ for a literal ${.",
                source=locate(spec_file, at, positions, positions)))
            return value
        whole = VAR_REF.fullmatch(escaped)
        if whole:
            return lookup(whole.group(1))
        return VAR_REF.sub(lambda m: str(lookup(m.group(1))), escaped).replace("\0", "${")

    return walk(data, path), errors, used


# --- pydantic errors with positions ------------------------------------------------------------


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the last element of `loc` (for "did you mean")."""
    current: Any = model
    for part in loc[:-1]:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = info.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Strip Optional/Annotated so that a field's model class can be found."""
    while True:
        args = get_args(tp)
        origin = get_origin(tp)
        if origin is None or origin in (dict, list):
            return tp
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            return models[0]
        if args:
            nxt = args[0]
            if nxt is tp:
                return tp
            tp = nxt
            continue
        return tp


def _fmt_loc(loc: tuple) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")


def diagnostics_from(exc: ValidationError, spec: Spec, root: type[BaseModel] = Config) -> list[Diagnostic]:
    """Each pydantic error at its position in `spec`'s file; `root`: the model the file holds."""
    out: list[Diagnostic] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        kind = err["type"]
        where = _fmt_loc(loc) or "(top level)"
        if kind == "extra_forbidden":
            key = str(loc[-1])
            owner = _model_at(root, loc)
            choices = list(owner.model_fields) if owner else []
            close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
            detail = f"Did you mean `{close[0]}`?" if close else (
                f"Allowed here: {', '.join(choices)}." if choices else "Remove it.")
            out.append(Diagnostic.error(f"unknown key `{key}` in {_fmt_loc(loc[:-1]) or 'the top level'}",
                                        detail, source=spec.source(loc, key=True)))
        elif kind == "missing":
            out.append(Diagnostic.error(f"missing required key `{loc[-1]}` in {_fmt_loc(loc[:-1]) or 'the top level'}",
                                        "Add it.", source=spec.source(loc[:-1])))
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            if loc and loc[-1] == "[key]":
                out.append(Diagnostic.error(f"invalid name `{loc[-2]}` in {_fmt_loc(loc[:-2])}", _hint(kind, loc),
                                            source=spec.source(loc[:-1], key=True)))
                continue
            out.append(Diagnostic.error(f"{where}: {msg}", _hint(kind, loc), source=spec.source(loc)))
    return sorted(out, key=lambda d: (d.source.line or 0, d.source.column or 0) if d.source else (0, 0))


def _hint(kind: str, loc: tuple) -> str:
    if kind == "string_pattern_mismatch":
        return "Names use lowercase letters, digits and dashes, start and end with a letter or digit."
    if kind.endswith("_parsing") or kind.endswith("_type"):
        return "Check the value's type against the schema (specs/fastuner.schema.json)."
    return ""


# --- entry point -------------------------------------------------------------------------------


def find_spec(path: str | Path | None) -> Path:
    p = Path(path) if path else Path(DEFAULT_FILE)
    if p.is_dir():
        p = p / DEFAULT_FILE
    if not p.exists():
        raise DiagnosticsError.single(
            f"spec file not found: {p}",
            "Run fastuner in the folder holding fastuner.yaml, or pass --file PATH.")
    return p


def load_spec(path: str | Path | None = None, *, variables: Mapping[str, str] | None = None,
              environ: Mapping[str, str] | None = None, resources: bool = True) -> Spec:
    """Read, substitute and validate the spec; raise `DiagnosticsError` listing every problem.

    With `resources=False` the resource sections are left out (the config has none): commands that
    work on state alone (`state list`, `logs`, ...) then need no value for a variable only a resource
    uses, as `terraform state list` needs no `-var`."""
    file = find_spec(path)
    shown = str(file)
    text = _read_text(file, "the spec")
    data, index = load_yaml(text, shown)
    if data is None:
        raise DiagnosticsError.single(
            "the spec is empty", "Start with `version: 1` and `project: NAME`.", source=Source(shown, 1, 1))
    if not isinstance(data, dict):
        raise DiagnosticsError.single("the spec must be a mapping of keys (version, project, datasets, ...)",
                                      source=Source(shown, 1, 1))
    declared = data.get("variables") if isinstance(data.get("variables"), dict) else {}
    values = collect_variables(declared, variables or {}, os.environ if environ is None else environ)
    skipped = {"variables"} if resources else {"variables", *SECTIONS}
    body = {k: v for k, v in data.items() if k not in skipped}
    errors: list[Diagnostic] = []
    if "${" in text or "\\" in text:  # else no value holds a reference (an escape could write one)
        body, errors, _used = substitute(body, values, shown, index)
    if "variables" in data:
        body["variables"] = data["variables"]
    if errors:
        raise DiagnosticsError(errors)
    partial = Spec(config=None, file=file, text=text, index=index, variables=values)  # type: ignore[arg-type]
    try:
        config = Config.model_validate(body)
    except ValidationError as exc:
        raise DiagnosticsError(diagnostics_from(exc, partial)) from None
    secret = [values.get(name) for name, decl in config.variables.items() if decl.sensitive]
    return Spec(config=config, file=file, text=text, index=index, variables=values, sensitive=Sensitive(secret))


def load_policy_file(path: str | Path) -> Policy:
    """A policy file named in CI (`--policy FILE`): a `policy:` section as the spec writes it, checked
    like the spec (positions, "did you mean"). Variables are not substituted: the file says exactly what
    it enforces."""
    file = Path(path)
    shown = str(file)
    if not file.is_file():
        raise DiagnosticsError.single(f"policy file not found: {shown}",
                                      "Pass an existing file to --policy (or FASTUNER_POLICY), or unset it.")
    text = _read_text(file, "the policy file")
    data, index = load_yaml(text, shown)
    if not isinstance(data, dict):
        raise DiagnosticsError.single(
            "a policy file holds one `policy:` mapping", "Write the rules under `policy:` as in fastuner.yaml, e.g. "
            "`policy: {max_hourly_cost: 10, protect: [deployment.api]}`.", source=Source(shown, 1, 1))
    partial = Spec(config=None, file=file, text=text, index=index)  # type: ignore[arg-type]
    try:
        return PolicyFile.model_validate(data).policy
    except ValidationError as exc:
        raise DiagnosticsError(diagnostics_from(exc, partial, root=PolicyFile)) from None


def _read_text(file: Path, what: str) -> str:
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DiagnosticsError.single(
            f"{what} is not valid UTF-8", f"Byte 0x{raw[exc.start]:02x} cannot be decoded; save the file as UTF-8.",
            source=Source(str(file), line, col)) from None
