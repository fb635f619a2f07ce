"""Topology: every pair syncs once, the initiator of a pair never depends on the rest of the mesh, and the
sparse overlay keeps its promises (k-connected, short, few edges per node and per join or leave)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_config import (
    NAME_RE,
    TOPOLOGY_KINDS,
    Mesh,
    parse_mesh,
)
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_graph import (
    adjacency,
    churn,
    connectivity,
    degree_range,
    diameter,
    is_connected,
    local_connectivity,
    vertex_connectivity,
)
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_topology import (
    TOPOLOGY_BUILDERS,
    Edge,
    build_edges,
    default_degree,
    edge_between,
    full_mesh,
    host_topology,
    initiated_by,
    overlay,
    peers_of,
    ring_certificate,
    ring_order,
)
from replimesh.cli import app

NAMES = st.from_regex(NAME_RE, fullmatch=True)
NAME_SETS = st.sets(NAMES, max_size=12)


def mesh_of(names: list[str], topology: dict[str, object] | None = None) -> Mesh:
    nodes = {
        name: {"address": f"10.0.{i // 250}.{i % 250 + 1}", "port": 2200 + i} for i, name in enumerate(names)
    }
    data = {"folders": [{"name": "f", "path": "/srv/f"}], "nodes": nodes, "topology": topology}
    return parse_mesh(data)


def numbered(count: int) -> list[str]:
    return [f"node{i}" for i in range(1, count + 1)]


def log2_ceil(count: int) -> int:
    return (count - 1).bit_length()


def test_initiators_are_pinned() -> None:
    # Changing the hash changes who starts existing pairs and strands their Unison archives: never silently.
    assert {(e.a, e.b): e.initiator for e in full_mesh(["node1", "node2", "node3"])} == {
        ("node1", "node2"): "node2",
        ("node1", "node3"): "node1",
        ("node2", "node3"): "node3",
    }


def test_edge_between_is_symmetric_and_ordered() -> None:
    assert edge_between("zeta", "alpha") == edge_between("alpha", "zeta")
    edge = edge_between("zeta", "alpha")
    assert (edge.a, edge.b) == ("alpha", "zeta")
    assert {edge.initiator, edge.responder} == {"alpha", "zeta"}


def test_edge_between_rejects_a_self_loop() -> None:
    with pytest.raises(ValueError, match="own peer"):
        edge_between("node1", "node1")


@pytest.mark.parametrize(("a", "b", "initiator"), [("b", "a", "a"), ("a", "a", "a"), ("a", "b", "c")])
def test_edge_rejects_inconsistent_fields(a: str, b: str, initiator: str) -> None:
    with pytest.raises(ValueError):
        Edge(a, b, initiator)


def test_edge_other_end() -> None:
    edge = Edge("a", "b", "a")
    assert (edge.other("a"), edge.other("b"), edge.responder) == ("b", "a", "b")
    with pytest.raises(ValueError):
        edge.other("c")


@pytest.mark.parametrize("names", [[], ["solo"]])
def test_fewer_than_two_names_have_no_edges(names: list[str]) -> None:
    assert full_mesh(names) == []


def test_full_mesh_ignores_duplicate_names() -> None:
    assert full_mesh(["b", "a", "b"]) == [edge_between("a", "b")]


@given(NAME_SETS)
def test_every_pair_has_exactly_one_edge(names: set[str]) -> None:
    edges = full_mesh(names)
    pairs = [(e.a, e.b) for e in edges]
    assert pairs == sorted(itertools.combinations(sorted(names), 2))
    assert all(e.a < e.b and e.initiator in (e.a, e.b) for e in edges)


@given(NAME_SETS, NAMES)
def test_initiator_is_stable_when_a_node_is_added_or_removed(names: set[str], newcomer: str) -> None:
    before = {(e.a, e.b): e.initiator for e in full_mesh(names)}
    after = {(e.a, e.b): e.initiator for e in full_mesh(names | {newcomer})}
    assert all(after[pair] == initiator for pair, initiator in before.items())
    if names:
        leaver = sorted(names)[0]
        shrunk = {(e.a, e.b): e.initiator for e in full_mesh(names - {leaver})}
        assert all(before[pair] == initiator for pair, initiator in shrunk.items())


@given(NAME_SETS)
def test_initiator_depends_on_the_pair_only(names: set[str]) -> None:
    assert all(e == edge_between(e.b, e.a) for e in full_mesh(names))


@given(NAME_SETS, st.sampled_from(TOPOLOGY_KINDS))
def test_peers_and_initiated_edges_agree(names: set[str], kind: str) -> None:
    edges = build_edges(kind, sorted(names))
    graph = adjacency(names, edges)
    for name in names:
        assert peers_of(name, edges) == sorted(graph[name])
        if kind == "full":
            assert peers_of(name, edges) == sorted(names - {name})
    assert sorted(e for name in names for e in initiated_by(name, edges)) == sorted(edges)


def test_initiators_are_balanced_over_a_large_mesh() -> None:
    names = [f"n{i:03d}" for i in range(120)]
    edges = full_mesh(names)
    lower_starts = sum(e.initiator == e.a for e in edges) / len(edges)
    assert 0.47 < lower_starts < 0.53
    started = Counter(e.initiator for e in edges)
    # 119 edges each; a binomial(119, 1/2) stays well inside this band.
    assert all(30 <= started[name] <= 89 for name in names)


def test_peers_of_unknown_node_is_empty() -> None:
    assert peers_of("ghost", full_mesh(["a", "b"])) == []
    assert initiated_by("ghost", full_mesh(["a", "b"])) == []


def test_known_kinds_match_builders() -> None:
    assert set(TOPOLOGY_KINDS) == set(TOPOLOGY_BUILDERS)


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="known: full, overlay"):
        build_edges("ring", ["a", "b"])


def test_host_topology_of_three_nodes() -> None:
    mesh = mesh_of(["node3", "node1", "node2"])
    topology = host_topology(mesh)
    assert topology["node1"] == [
        {"name": "node2", "address": "10.0.0.3", "port": 2202, "initiator": False},
        {"name": "node3", "address": "10.0.0.1", "port": 2200, "initiator": True},
    ]
    assert [peer["name"] for peer in topology["node3"]] == ["node1", "node2"]


@given(st.sets(NAMES, min_size=2, max_size=10))
def test_host_topology_gives_each_pair_exactly_one_initiator(names: set[str]) -> None:
    mesh = mesh_of(sorted(names))
    topology = host_topology(mesh)
    assert set(topology) == names
    for here, peers in topology.items():
        assert [p["name"] for p in peers] == sorted(names - {here})
        for peer in peers:
            back = next(p for p in topology[peer["name"]] if p["name"] == here)
            assert peer["initiator"] != back["initiator"]
            assert peer["initiator"] == (edge_between(here, peer["name"]).initiator == here)
            node = mesh.node(peer["name"])
            assert (peer["address"], peer["port"]) == (node.address, node.port)


# --- the sparse overlay ---

DEGREES = st.integers(min_value=2, max_value=6)


def without(graph: dict[str, frozenset[str]], gone: set[str]) -> dict[str, frozenset[str]]:
    return {name: peers - gone for name, peers in graph.items() if name not in gone}


DEFAULT_DEGREES = [
    (1, 2),
    (2, 2),
    (4, 2),
    (5, 3),
    (8, 3),
    (9, 4),
    (16, 4),
    (17, 5),
    (100, 7),
    (1000, 10),
    (1025, 11),
]


@pytest.mark.parametrize(("count", "k"), DEFAULT_DEGREES)
def test_default_degree_is_ceil_log2_and_at_least_two(count: int, k: int) -> None:
    assert default_degree(count) == k == max(2, math.ceil(math.log2(max(count, 1))))


def test_overlay_is_pinned() -> None:
    # The edges a deployed overlay has: changing the hashes moves Unison archives on every node.
    assert ring_order(numbered(6)) == ["node2", "node6", "node3", "node1", "node5", "node4"]
    # Six nodes, k = 2: the ring alone (no two of them share the first 3 bits of the level hash).
    assert [(e.a, e.b) for e in overlay(numbered(6), 2)] == [
        ("node1", "node3"), ("node1", "node5"), ("node2", "node4"), ("node2", "node6"), ("node3", "node6"),
        ("node4", "node5"),
    ]  # fmt: skip
    # Forty nodes, k = 4: ring edges to 2 successors (80) and the skip rings' links (38 more).
    forty = overlay(numbered(40), 4)
    assert len(forty) == 118
    assert hashlib.sha256("".join(f"{e.a}-{e.b}\n" for e in forty).encode()).hexdigest()[:16] == (
        "efc533aadec2575f"
    )


@given(st.sets(NAMES, max_size=40), st.none() | DEGREES, st.randoms(use_true_random=False))
def test_overlay_is_deterministic_and_keeps_pair_initiators(
    names: set[str], k: int | None, rnd: object
) -> None:
    shuffled = sorted(names)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    edges = overlay(shuffled, k)
    assert edges == overlay(sorted(names), k) == sorted(edges)
    assert all(edge == edge_between(edge.a, edge.b) for edge in edges)


@given(st.sets(NAMES, max_size=8), DEGREES)
def test_overlay_of_at_most_k_plus_one_nodes_is_the_full_mesh(names: set[str], k: int) -> None:
    if len(names) <= k + 1:
        assert overlay(names, k) == full_mesh(names)
    else:
        # Sparser or equal: on 4 or 5 nodes the ring and skip-ring edges together can cover every pair.
        assert set(overlay(names, k)) <= set(full_mesh(names))


def test_overlay_rejects_a_degree_below_two() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        overlay(numbered(10), 1)


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("count", [6, 9, 12])
def test_overlay_survives_any_k_minus_one_failures(count: int, k: int) -> None:
    names = numbered(count)
    graph = adjacency(names, overlay(names, k))
    for gone in itertools.combinations(names, k - 1):
        assert is_connected(without(graph, set(gone))), gone


@settings(max_examples=30, deadline=None)
@given(st.sets(NAMES, min_size=3, max_size=12), DEGREES)
def test_exact_connectivity_matches_brute_force_and_is_at_least_k(names: set[str], k: int) -> None:
    graph = adjacency(names, overlay(names, k))
    brute = next(
        size
        for size in range(len(names))
        if size == len(names) - 1
        or any(not is_connected(without(graph, set(cut))) for cut in itertools.combinations(graph, size))
    )
    assert vertex_connectivity(graph) == brute >= min(k, len(names) - 1)
    assert ring_certificate(names, k, overlay(names, k)) <= brute


@pytest.mark.parametrize("k", [None, 2])
@pytest.mark.parametrize("count", [20, 64, 65, 257, 1000])
def test_overlay_degree_and_diameter_bounds(count: int, k: int | None) -> None:
    names = numbered(count)
    degree = default_degree(count) if k is None else k
    graph = adjacency(names, overlay(names, k))
    low, high = degree_range(graph)
    ring = 2 * math.ceil(degree / 2)
    assert ring <= low <= high <= ring + 2 * math.ceil(log2_ceil(count) / 3) + 1  # base-8 skip levels
    assert diameter(graph) is not None
    assert diameter(graph) <= log2_ceil(count) + 1


@settings(max_examples=40, deadline=None)
@given(st.sets(NAMES, min_size=2, max_size=80), NAMES, st.none() | DEGREES)
def test_one_join_or_leave_moves_few_edges(names: set[str], newcomer: str, k: int | None) -> None:
    degree = default_degree(len(names)) if k is None else k
    bound = 3 * math.ceil(degree / 2) + 3 * log2_ceil(len(names) + 1)
    before = overlay(names, degree)
    assert churn(before, overlay(names | {newcomer}, degree)) <= bound
    assert churn(before, overlay(names - {min(names)}, degree)) <= bound


def test_churn_stays_small_at_a_thousand_nodes() -> None:
    names = numbered(1000)
    before = overlay(names, 10)
    assert churn(before, overlay([*names, "newcomer"], 10)) <= 45
    assert churn(before, overlay(names[1:], 10)) <= 45


def test_graph_measures_on_known_graphs() -> None:
    ring = [edge_between(f"r{i}", f"r{(i + 1) % 6}") for i in range(6)]
    graph = adjacency([], ring)
    assert (degree_range(graph), diameter(graph), vertex_connectivity(graph)) == ((2, 2), 3, 2)
    assert local_connectivity(graph, "r0", "r3") == 2
    assert local_connectivity(graph, "r0", "r3", limit=1) == 1
    with pytest.raises(ValueError, match="not adjacent"):
        local_connectivity(graph, "r0", "r1")
    split = adjacency(["x", "y"], [edge_between("x", "y")]) | adjacency(["z"], [])
    assert (diameter(split), is_connected(split), vertex_connectivity(split)) == (None, False, 0)
    assert vertex_connectivity(adjacency([], full_mesh("abcde"))) == 4
    assert churn(ring, ring[1:]) == 1


def test_connectivity_reports_bounds_above_the_exact_limit() -> None:
    names = numbered(60)
    edges = overlay(names, 4)
    graph = adjacency(names, edges)
    exact = connectivity(graph)
    assert exact.exact and exact.lower == vertex_connectivity(graph) >= 4
    bounded = connectivity(
        graph, proven_lower=ring_certificate(names, 4, edges), proof="ring", exact_limit=10
    )
    assert bounded.lower == 4 <= exact.lower <= bounded.upper <= degree_range(graph)[0]
    assert ("bounds" in bounded.method) == (not bounded.exact)


def test_ring_certificate_needs_every_ring_edge() -> None:
    names = numbered(30)
    edges = overlay(names, 5)
    assert ring_certificate(names, 5, edges) == 6
    order = ring_order(names)
    assert ring_certificate(names, 5, [e for e in edges if (e.a, e.b) != tuple(sorted(order[:2]))]) == 0
    assert ring_certificate(names, None, full_mesh(names)) == 29


def test_host_topology_of_an_overlay_mesh() -> None:
    names = numbered(40)
    mesh = mesh_of(names, {"kind": "overlay", "degree": 3})
    topology = host_topology(mesh)
    graph = adjacency(names, overlay(names, 3))
    assert {name: [p["name"] for p in peers] for name, peers in topology.items()} == {
        name: sorted(peers) for name, peers in graph.items()
    }
    default = host_topology(mesh_of(names, {"kind": "overlay"}))
    assert sum(map(len, default.values())) == 2 * len(overlay(names))


# --- meshctl simulate ---

SIMULATE_KEYS = {
    *("nodes", "edges", "max_degree", "min_degree", "diameter", "connectivity", "connectivity_exact"),
    *("connectivity_method", "edges_changed_on_add", "edges_changed_on_remove"),
}


def test_simulate_a_thousand_node_overlay_as_json() -> None:
    result = CliRunner().invoke(app, ["simulate", "--nodes", "1000", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= SIMULATE_KEYS
    assert (report["nodes"], report["degree"]) == (1000, 10)
    assert report["diameter"] <= report["diameter_bound"] == 11
    assert 10 <= report["connectivity"] <= report["connectivity_upper_bound"] <= report["min_degree"]
    assert report["max_degree"] <= 20  # 18 with these names; every skip level (base 2) gave 23
    assert report["edges_changed_on_add"] <= 45 and report["edges_changed_on_remove"] <= 45


def test_simulate_prints_text_and_exact_connectivity_for_small_meshes() -> None:
    result = CliRunner().invoke(app, ["simulate", "--nodes", "12", "--degree", "3"])
    assert result.exit_code == 0, result.output
    assert "degree k = 3 (given)" in result.stdout and "(exact)" in result.stdout
    full = json.loads(
        CliRunner().invoke(app, ["simulate", "--nodes", "6", "--kind", "full", "--json"]).stdout
    )
    assert (full["edges"], full["diameter"], full["connectivity"], full["edges_changed_on_add"]) == (
        15,
        1,
        5,
        6,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "1"], "between 2 and"),
        (["--nodes", "8", "--kind", "ring"], "known: full, overlay"),
        (["--nodes", "8", "--kind", "full", "--degree", "3"], "only to --kind overlay"),
        (["--nodes", "8", "--degree", "1"], "at least 2"),
    ],
)
def test_simulate_rejects_bad_arguments(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["simulate", *args])
    assert result.exit_code == 1
    assert message in result.stderr
