"""Topology: every pair syncs once, and the initiator of a pair never depends on the rest of the mesh."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh_plugins.module_utils.mesh_config import NAME_RE, TOPOLOGY_KINDS, Mesh, parse_mesh
from mesh_plugins.module_utils.mesh_topology import (
    TOPOLOGY_BUILDERS,
    Edge,
    build_edges,
    edge_between,
    full_mesh,
    host_topology,
    initiated_by,
    peers_of,
)

NAMES = st.from_regex(NAME_RE, fullmatch=True)
NAME_SETS = st.sets(NAMES, max_size=12)


def mesh_of(names: list[str]) -> Mesh:
    nodes = {name: {"address": f"10.0.0.{i + 1}", "port": 2200 + i} for i, name in enumerate(names)}
    return parse_mesh({"folders": [{"name": "f", "path": "/srv/f"}], "nodes": nodes})


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
    for name in names:
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
    with pytest.raises(ValueError, match="known: full"):
        build_edges("overlay", ["a", "b"])


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
