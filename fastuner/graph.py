"""The dependency graph of resources: the only module that uses networkx (to describe a cycle).

Nodes are addresses (`dataset.x`, `adapter.y`, `deployment.z`); an edge `a -> b` means b depends on a
(an adapter on its dataset, a deployment on its adapters, plus explicit `depends_on`). Apply walks
create waves forward, destroy walks destroy waves backward; each wave is an antichain whose members can
run in parallel.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from fastuner.config.kinds import KINDS
from fastuner.config.loader import Spec
from fastuner.errors import Diagnostic, DiagnosticsError, Source


@dataclass(frozen=True)
class Edge:
    """`dependent` needs `dependency`; `path` is where in the spec the reference is written."""

    dependency: str
    dependent: str
    path: tuple = ()


class Graph:
    """Adjacency sets in both directions and the spec path of each edge.

    The plan path needs only layered topological sorts and reachability, a few lines over dicts;
    networkx (a 0.15-0.25 s import, most of a 1,000-resource plan's budget) is loaded only to describe
    a cycle, which a valid spec never has."""

    def __init__(self, nodes: Iterable[str], edges: Iterable[Edge]) -> None:
        self._succ: dict[str, set[str]] = {n: set() for n in nodes}
        self._pred: dict[str, set[str]] = {n: set() for n in self._succ}
        self._paths: dict[tuple[str, str], tuple] = {}
        for e in edges:
            self._succ.setdefault(e.dependency, set()).add(e.dependent)
            self._pred.setdefault(e.dependent, set()).add(e.dependency)
            self._succ.setdefault(e.dependent, set())
            self._pred.setdefault(e.dependency, set())
            self._paths[(e.dependency, e.dependent)] = e.path
        self._waves: list[list[str]] | None = None

    @property
    def nodes(self) -> list[str]:
        return sorted(self._succ)

    def dependencies(self, address: str) -> list[str]:
        """What `address` directly waits for."""
        return sorted(self._pred.get(address, ()))

    def dependents(self, address: str) -> list[str]:
        return sorted(self._succ.get(address, ()))

    def descendants(self, address: str) -> set[str]:
        return _reach(self._succ, address)

    def with_dependencies(self, addresses: Iterable[str]) -> set[str]:
        """`addresses` and everything they depend on, directly or not (what `--target` must create first)."""
        out = set(addresses)
        for a in list(out):
            out |= _reach(self._pred, a)
        return out

    def with_dependents(self, addresses: Iterable[str]) -> set[str]:
        """`addresses` and everything that depends on them (what `destroy --target` must delete first)."""
        out = set(addresses)
        for a in list(out):
            out |= self.descendants(a)
        return out

    def create_waves(self) -> list[list[str]]:
        """Antichains in dependency order: everything in wave n depends only on waves < n.

        Sorted once (a graph does not change after it is built): `build_graph`'s cycle check sorts,
        and the planner reuses the waves. `CycleError` on a cycle."""
        if self._waves is None:
            self._waves = _generations(self._succ, self._pred)
        return [list(w) for w in self._waves]

    def destroy_waves(self) -> list[list[str]]:
        """Dependents first: the create waves of the reversed graph."""
        return _generations(self._pred, self._succ)

    def find_cycle(self) -> list[tuple[str, str, tuple]] | None:
        """A cycle's edges with the spec paths that wrote them, or None. The topological sort that
        create waves need anyway settles an acyclic graph; networkx describes a cycle that exists."""
        try:
            self.create_waves()
            return None
        except CycleError:
            import networkx as nx

            g = nx.DiGraph([(a, b) for a, succ in self._succ.items() for b in succ])
            cycle = nx.find_cycle(g)
        return [(a, b, self._paths.get((a, b), ())) for a, b, *_ in cycle]

    def subgraph(self, nodes: Iterable[str]) -> Graph:
        keep = set(nodes) & self._succ.keys()
        return Graph(keep, [Edge(a, b, self._paths.get((a, b), ())) for a in keep
                            for b in self._succ[a] if b in keep])


class CycleError(ValueError):
    pass


def _reach(adjacent: Mapping[str, set[str]], start: str) -> set[str]:
    """Every node reachable from `start` (not `start` itself, unless on a cycle)."""
    seen: set[str] = set()
    todo = list(adjacent.get(start, ()))
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(adjacent[n])
    return seen


def _generations(succ: Mapping[str, set[str]], pred: Mapping[str, set[str]]) -> list[list[str]]:
    """Kahn's sort in layers: each generation is every node whose predecessors are all in earlier
    ones (networkx's `topological_generations`), sorted."""
    waiting = {n: len(p) for n, p in pred.items()}
    wave = sorted(n for n, k in waiting.items() if k == 0)
    out, placed = [], 0
    while wave:
        out.append(wave)
        placed += len(wave)
        ready = []
        for n in wave:
            for m in succ[n]:
                waiting[m] -= 1
                if waiting[m] == 0:
                    ready.append(m)
        wave = sorted(ready)
    if placed != len(waiting):
        raise CycleError("the graph has a cycle")
    return out


def spec_edges(spec: Spec) -> tuple[list[Edge], list[Diagnostic]]:
    """References written in the spec (each kind's own, then `depends_on`); a reference to nothing
    becomes a diagnostic naming both ends."""
    config = spec.config
    edges: list[Edge] = []
    errors: list[Diagnostic] = []
    sections = {kind.name: getattr(config, kind.section) for kind in KINDS.values()}
    known = {f"{kind}.{name}" for kind, section in sections.items() for name in section}

    def ref(dependent: str, target_kind: str, target: str, path: tuple) -> None:
        address = f"{target_kind}.{target}"
        if address in known:
            edges.append(Edge(address, dependent, path))
            return
        section = KINDS[target_kind].section
        names = list(sections[target_kind])
        close = difflib.get_close_matches(target, names, n=1)
        hint = f"Did you mean `{close[0]}`?" if close else (
            f"Declare it under `{section}:`." if not names
            else f"Known {section}: {', '.join(sorted(names))}.")
        errors.append(Diagnostic.error(
            f"{dependent} refers to {address}, which does not exist", hint,
            source=spec.source(path), address=dependent))

    for kind in KINDS.values():
        for name, model in sections[kind.name].items():
            for r in kind.references(model):
                ref(f"{kind.name}.{name}", r.kind, r.name, (kind.section, name, *r.path))
    for kind in KINDS.values():
        for name, model in sections[kind.name].items():
            for i, target in enumerate(model.depends_on):
                target_kind, target_name = target.split(".", 1)
                path = (kind.section, name, "depends_on", i)
                if target == f"{kind.name}.{name}":
                    errors.append(Diagnostic.error(f"{target} depends on itself", "Remove it from depends_on.",
                                                   source=spec.source(path), address=target))
                    continue
                ref(f"{kind.name}.{name}", target_kind, target_name, path)
    return edges, errors


def build_graph(spec: Spec) -> Graph:
    """The spec's graph, or `DiagnosticsError` for dangling references and cycles."""
    edges, errors = spec_edges(spec)
    nodes = [f"{kind.name}.{name}" for kind in KINDS.values() for name in getattr(spec.config, kind.section)]
    if errors:
        raise DiagnosticsError(errors)
    graph = Graph(nodes, edges)
    cycle = graph.find_cycle()
    if cycle:
        chain = " -> ".join([cycle[0][1], *[b for _, b, _ in cycle[1:]], cycle[0][1]])
        first_path = cycle[0][2]
        raise DiagnosticsError([Diagnostic.error(
            f"dependency cycle: {chain}",
            "Each arrow is a reference (dataset:, adapters:, depends_on:); remove one to break the cycle. "
            + "; ".join(f"{b} refers to {a} at {spec.source(p)}" for a, b, p in cycle),
            source=spec.source(first_path) if first_path else Source(str(spec.file)),
            address=cycle[0][1])])
    return graph


def graph_from_dependencies(depends_on: Mapping[str, Iterable[str]],
                            keep: Callable[[str], bool] = lambda _: True) -> Graph:
    """A graph from recorded dependencies (state), e.g. to order deletes of resources no longer in the
    spec. Dependencies on addresses not in the mapping are dropped."""
    nodes = [a for a in depends_on if keep(a)]
    present = set(nodes)
    edges = [Edge(dep, a) for a in nodes for dep in depends_on[a] if dep in present]
    return Graph(nodes, edges)
