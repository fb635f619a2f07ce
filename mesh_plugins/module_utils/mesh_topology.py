"""Which nodes sync with which, and which end of each pair starts the sync.

Standard library only (shipped to nodes as module_utils alongside mesh_config).

Unison keeps its archive per (root, root) pair, and inside the SSH chroot jail the paths differ per side, so
the node that initiates an edge must never change for the lifetime of that edge. The initiator is therefore a
function of the pair alone: adding or removing a third node cannot flip it.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .mesh_config import Mesh


@dataclass(frozen=True, slots=True, order=True)
class Edge:
    """An undirected sync pair, with `a < b`; `initiator` (one of them) runs Unison for this pair."""

    a: str
    b: str
    initiator: str

    def __post_init__(self) -> None:
        if not self.a < self.b:
            raise ValueError(f"edge ends must be ordered and distinct, got {self.a!r}, {self.b!r}")
        if self.initiator not in (self.a, self.b):
            raise ValueError(f"initiator {self.initiator!r} is not an end of edge {self.a}-{self.b}")

    @property
    def responder(self) -> str:
        return self.b if self.initiator == self.a else self.a

    def other(self, node: str) -> str:
        if node == self.a:
            return self.b
        if node == self.b:
            return self.a
        raise ValueError(f"{node!r} is not an end of edge {self.a}-{self.b}")


def edge_between(first: str, second: str) -> Edge:
    """The edge for a pair. The initiator depends on the two names only; sha256 balances it in expectation."""
    if first == second:
        raise ValueError(f"a node cannot be its own peer: {first!r}")
    a, b = sorted((first, second))
    digest = hashlib.sha256(f"{a}\x00{b}".encode()).digest()
    return Edge(a=a, b=b, initiator=b if digest[-1] & 1 else a)


def full_mesh(names: Iterable[str]) -> list[Edge]:
    """Every pair of distinct nodes, sorted by (a, b)."""
    unique = sorted(set(names))
    return [edge_between(a, b) for a, b in itertools.combinations(unique, 2)]


# Topology kind -> edge builder. mesh_config.TOPOLOGY_KINDS lists the same kinds for validation.
TOPOLOGY_BUILDERS: dict[str, Callable[[Sequence[str]], list[Edge]]] = {
    "full": full_mesh,
}


def build_edges(kind: str, names: Sequence[str]) -> list[Edge]:
    try:
        builder = TOPOLOGY_BUILDERS[kind]
    except KeyError:
        raise ValueError(f"unknown topology kind {kind!r}; known: {', '.join(TOPOLOGY_BUILDERS)}") from None
    return builder(names)


def peers_of(node: str, edges: Iterable[Edge]) -> list[str]:
    """Names of the nodes `node` shares an edge with, sorted."""
    return sorted(edge.other(node) for edge in edges if node in (edge.a, edge.b))


def initiated_by(node: str, edges: Iterable[Edge]) -> list[Edge]:
    """The edges for which `node` runs Unison."""
    return [edge for edge in edges if edge.initiator == node]


def host_topology(mesh: Mesh) -> dict[str, list[dict[str, Any]]]:
    """Per node name: its peers as {name, address, port, initiator}, sorted by peer name.

    `initiator` is True when this node starts the sync for that pair.
    """
    by_name = {node.name: node for node in mesh.nodes}
    edges = build_edges(mesh.topology_kind, list(by_name))
    result: dict[str, list[dict[str, Any]]] = {name: [] for name in by_name}
    for edge in edges:
        for here, there in ((edge.a, edge.b), (edge.b, edge.a)):
            peer = by_name[there]
            result[here].append(
                {
                    "name": peer.name,
                    "address": peer.address,
                    "port": peer.port,
                    "initiator": edge.initiator == here,
                }
            )
    for peers in result.values():
        peers.sort(key=lambda peer: peer["name"])
    return result
