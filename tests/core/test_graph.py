"""The resource graph: references, dangling ones, cycles, waves."""

from __future__ import annotations

import itertools

import pytest

from fastuner.errors import DiagnosticsError
from fastuner.graph import Edge, Graph, build_graph, graph_from_dependencies

HEAD = "version: 1\nproject: demo\n"

DIAMOND = HEAD + """\
datasets:
  d1: {path: a, task: qa}
  d2: {path: b, task: qa}
adapters:
  a1: {base_model: m, dataset: d1}
  a2: {base_model: m, dataset: d1}
  a3: {base_model: m, dataset: d2}
deployments:
  e1: {base_model: m, adapters: [a1, a2]}
  e2: {base_model: m, adapters: [a3], depends_on: [deployment.e1]}
"""


def graph_errors(load, text: str):
    spec = load(text)
    with pytest.raises(DiagnosticsError) as info:
        build_graph(spec)
    return info.value.diagnostics


def position(d) -> tuple[int | None, int | None]:
    assert d.source is not None
    return d.source.line, d.source.column


def test_edges_from_references_and_depends_on(load) -> None:
    g = build_graph(load(DIAMOND))
    assert g.nodes == sorted(["dataset.d1", "dataset.d2", "adapter.a1", "adapter.a2", "adapter.a3",
                              "deployment.e1", "deployment.e2"])
    assert g.dependencies("adapter.a1") == ["dataset.d1"]
    assert g.dependencies("deployment.e1") == ["adapter.a1", "adapter.a2"]
    assert g.dependencies("deployment.e2") == ["adapter.a3", "deployment.e1"]
    assert g.dependents("dataset.d1") == ["adapter.a1", "adapter.a2"]
    assert g.descendants("dataset.d1") == {"adapter.a1", "adapter.a2", "deployment.e1", "deployment.e2"}
    assert g.dependencies("nope.x") == [] and g.dependents("nope.x") == [] and g.descendants("nope.x") == set()


def test_create_waves_put_dependencies_first(load) -> None:
    waves = build_graph(load(DIAMOND)).create_waves()
    assert waves == [
        ["dataset.d1", "dataset.d2"],
        ["adapter.a1", "adapter.a2", "adapter.a3"],
        ["deployment.e1"],
        ["deployment.e2"],
    ]


def test_destroy_waves_put_dependents_first(load) -> None:
    waves = build_graph(load(DIAMOND)).destroy_waves()
    assert waves == [
        ["deployment.e2"],
        ["adapter.a3", "deployment.e1"],
        ["adapter.a1", "adapter.a2", "dataset.d2"],
        ["dataset.d1"],
    ]
    flat = [a for w in waves for a in w]
    g = build_graph(load(DIAMOND))
    for a in flat:  # every dependent is destroyed before what it depends on
        for dep in g.dependencies(a):
            assert flat.index(a) < flat.index(dep)


def test_independent_resources_share_a_wave(load) -> None:
    g = build_graph(load(HEAD + "datasets:\n  x: {path: a, task: qa}\n  y: {path: b, task: qa}\n"))
    assert g.create_waves() == [["dataset.x", "dataset.y"]]
    assert g.destroy_waves() == [["dataset.x", "dataset.y"]]


def test_empty_spec_graph(load) -> None:
    g = build_graph(load(HEAD))
    assert g.nodes == [] and g.create_waves() == [] and g.destroy_waves() == []


def test_dangling_dataset_reference_with_did_you_mean(load) -> None:
    [d] = graph_errors(load, HEAD + "datasets:\n  entities: {path: a, task: qa}\n"
                                     "adapters:\n  a:\n    base_model: m\n    dataset: entitys\n")
    assert d.summary == "adapter.a refers to dataset.entitys, which does not exist"
    assert d.detail == "Did you mean `entities`?"
    assert d.address == "adapter.a"
    assert position(d) == (8, 14)


def test_dangling_adapter_reference_lists_known_ones(load) -> None:
    [d] = graph_errors(load, HEAD + "datasets:\n  ds: {path: a, task: qa}\n"
                                     "adapters:\n  alpha: {base_model: m, dataset: ds}\n"
                                     "deployments:\n  ep:\n    base_model: m\n    adapters: [alpha, zzz]\n")
    assert d.summary == "deployment.ep refers to adapter.zzz, which does not exist"
    assert d.detail == "Known adapters: alpha."
    assert position(d) == (10, 23)


def test_dangling_reference_to_an_empty_section(load) -> None:
    [d] = graph_errors(load, HEAD + "adapters:\n  a: {base_model: m, dataset: ds}\n")
    assert d.detail == "Declare it under `datasets:`."


def test_dangling_depends_on(load) -> None:
    [d] = graph_errors(load, HEAD + "datasets:\n  ds:\n    path: a\n    task: qa\n"
                                     "    depends_on: [deployment.api]\n"
                                     "deployments:\n  apy: {base_model: m}\n")
    assert d.summary == "dataset.ds refers to deployment.api, which does not exist"
    assert d.detail == "Did you mean `apy`?"
    assert position(d) == (7, 18)


def test_every_dangling_reference_is_reported(load) -> None:
    ds = graph_errors(load, HEAD + "adapters:\n  a: {base_model: m, dataset: x}\n  b: {base_model: m, dataset: y}\n")
    assert sorted(d.address for d in ds) == ["adapter.a", "adapter.b"]


def test_self_dependency(load) -> None:
    [d] = graph_errors(load, HEAD + "datasets:\n  ds:\n    path: a\n    task: qa\n"
                                     "    depends_on: [dataset.ds]\n")
    assert d.summary == "dataset.ds depends on itself"
    assert position(d) == (7, 18)


CYCLE = HEAD + """\
datasets:
  ds:
    path: a
    task: qa
    depends_on: [deployment.ep]
adapters:
  ad: {base_model: m, dataset: ds}
deployments:
  ep: {base_model: m, adapters: [ad]}
"""


def test_cycle_names_every_edge(load) -> None:
    [d] = graph_errors(load, CYCLE)
    assert d.summary.startswith("dependency cycle: ")
    chain = d.summary.removeprefix("dependency cycle: ").split(" -> ")
    assert chain[0] == chain[-1]
    assert set(chain) == {"dataset.ds", "adapter.ad", "deployment.ep"}
    assert len(chain) == 4
    for a, b in itertools.pairwise(chain):  # consecutive pairs are real references
        assert f"{b} refers to {a} at " in d.detail
    assert d.detail.count(" refers to ") == 3
    assert "fastuner.yaml:7:18" in d.detail  # dataset.ds depends_on[0]
    assert "fastuner.yaml:9:32" in d.detail  # adapter.ad dataset
    assert "fastuner.yaml:11:34" in d.detail  # deployment.ep adapters[0]
    assert d.source is not None and d.source.line in (7, 9, 11)


def test_two_node_cycle_through_depends_on(load) -> None:
    [d] = graph_errors(load, HEAD + "datasets:\n"
                                     "  x: {path: a, task: qa, depends_on: [dataset.y]}\n"
                                     "  y: {path: b, task: qa, depends_on: [dataset.x]}\n")
    chain = d.summary.removeprefix("dependency cycle: ").split(" -> ")
    assert sorted(chain[:2]) == ["dataset.x", "dataset.y"] and chain[0] == chain[2]
    assert "dataset.x refers to dataset.y" in d.detail and "dataset.y refers to dataset.x" in d.detail


def test_graph_from_recorded_dependencies() -> None:
    g = graph_from_dependencies({
        "deployment.e": ["adapter.a", "adapter.gone"],
        "adapter.a": ["dataset.d"],
        "dataset.d": [],
    })
    assert g.destroy_waves() == [["deployment.e"], ["adapter.a"], ["dataset.d"]]
    assert "adapter.gone" not in g.nodes


def test_graph_from_dependencies_keeps_a_subset() -> None:
    g = graph_from_dependencies({"deployment.e": ["adapter.a"], "adapter.a": ["dataset.d"], "dataset.d": []},
                                keep=lambda a: a != "adapter.a")
    assert g.nodes == ["dataset.d", "deployment.e"]
    assert g.create_waves() == [["dataset.d", "deployment.e"]]


def test_subgraph_and_find_cycle() -> None:
    g = Graph(["a", "b", "c"], [Edge("a", "b", ("x",)), Edge("b", "c")])
    assert g.find_cycle() is None
    assert g.subgraph(["b", "c"]).create_waves() == [["b"], ["c"]]
    looped = Graph(["a", "b"], [Edge("a", "b", ("p",)), Edge("b", "a", ("q",))])
    cycle = looped.find_cycle()
    assert cycle is not None
    assert {(a, b) for a, b, _ in cycle} == {("a", "b"), ("b", "a")}
    assert {p for _, _, p in cycle} == {("p",), ("q",)}


def test_waves_and_reachability_equal_networkx_on_random_graphs() -> None:
    """The graph's own layered sort and reachability (networkx loads only to describe a cycle) give
    what networkx's topological_generations, ancestors and descendants give, and refuse every cycle."""
    import random

    import networkx as nx

    from fastuner.graph import CycleError, Edge, Graph

    rng = random.Random(7)
    for trial in range(300):
        n = rng.randint(1, 30)
        nodes = [f"dataset.n{i}" for i in range(n)]
        order = rng.sample(nodes, n)
        pairs = {(order[i], order[j]) for i in range(n) for j in range(i + 1, n) if rng.random() < 0.15}
        if trial % 3 == 0 and n > 1:  # a back edge: a cycle
            i, j = sorted(rng.sample(range(n), 2))
            pairs.add((order[j], order[i]))
        graph = Graph(nodes, [Edge(a, b) for a, b in pairs])
        reference = nx.DiGraph()
        reference.add_nodes_from(nodes)
        reference.add_edges_from(pairs)
        if not nx.is_directed_acyclic_graph(reference):
            with pytest.raises(CycleError):
                graph.create_waves()
            cycle = graph.find_cycle()
            assert cycle and all((a, b) in pairs for a, b, _ in cycle)
            continue
        assert graph.find_cycle() is None
        assert graph.create_waves() == [sorted(w) for w in nx.topological_generations(reference)]
        assert graph.destroy_waves() == [sorted(w) for w in nx.topological_generations(reference.reverse())]
        for node in rng.sample(nodes, min(3, n)):
            assert graph.descendants(node) == nx.descendants(reference, node)
            assert graph.with_dependencies([node]) == {node} | nx.ancestors(reference, node)
            assert graph.dependencies(node) == sorted(reference.predecessors(node))
        keep = rng.sample(nodes, n // 2)
        sub = graph.subgraph(keep)
        assert sub.create_waves() == [sorted(w) for w in nx.topological_generations(reference.subgraph(keep))]
