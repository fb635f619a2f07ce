"""Which nodes sync with which, and which end of each pair starts the sync.

Standard library only (shipped to nodes as module_utils alongside mesh_config).

Unison keeps its archive per (root, root) pair, and inside the SSH chroot jail the paths differ per side, so
the node that initiates an edge must never change for the lifetime of that edge. The initiator is therefore a
function of the pair alone: adding or removing a third node cannot flip it.

Kinds: `full` (every pair syncs) and `overlay` (a sparse graph, see `overlay`). For the same reason (one
archive per pair), the overlay is built so that one node joining or leaving moves only a few edges.
"""

from __future__ import annotations

import hashlib
import itertools
import math
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
        if self.a >= self.b:
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


# Salts keep the two overlay hashes independent of each other and of edge_between's.
_RING_SALT = b"replimesh-overlay-ring\x00"
_LEVEL_SALT = b"replimesh-overlay-level\x00"
_LEVEL_BITS = 256
# Each skip-ring level splits the rings above it by this many bits (2**3 = 8 rings): a base-8 skip graph.
_SKIP_DIGIT_BITS = 3


def default_degree(count: int) -> int:
    """The overlay's k when the mesh file gives none: max(2, ceil(log2 count)); 2 for count <= 4.

    ceil(log2 n) is computed exactly as (n - 1).bit_length(): 8 -> 3, 9 -> 4, 16 -> 4, 100 -> 7, 1000 -> 10.
    """
    return max(2, (max(count, 1) - 1).bit_length())


def ring_order(names: Iterable[str]) -> list[str]:
    """The overlay ring: distinct names ordered by sha256 of the name (ties, never seen, by name)."""
    return sorted(set(names), key=lambda name: (_digest(_RING_SALT, name), name))


def ring_reach(degree: int) -> int:
    """How many ring successors each node links to: ceil(k/2); that ring alone is 2*ceil(k/2)-connected."""
    return math.ceil(degree / 2)


def overlay(names: Iterable[str], degree: int | None = None) -> list[Edge]:
    """A sparse, k-connected, low-diameter graph whose edges move little when one node joins or leaves.

    Nodes sit on a ring ordered by sha256(name) (`ring_order`), as in consistent hashing, so a join or a
    leave only touches its neighbourhood. Two layers of edges:

    1. Ring: each node links to its next r = ceil(k/2) ring successors (the circulant C_n(1..r), Harary's
       graph H_{2r,n}). Proven: it is 2r-connected for n > 2r (Harary 1962), so the overlay survives any
       2r - 1 >= k - 1 failed nodes. A join removes the r pairs that straddle the new node at distance r and
       adds the newcomer's 2r edges (a leave is the reverse): 3r edges.
    2. Skip ring (a skip graph, Aspnes & Shah 2003, in base 8): a second hash gives each node a bit
       string; at level i the nodes sharing its first 3i bits form a ring (in ring order) and each links to
       its successor there, a jump of about 8**i ring positions. Each level adds at most 2 edges per node
       and a join or leave changes at most 3 edges per level; the levels give the O(log n) diameter. Base 8
       rather than base 2: the ring's own reach already covers the short jumps, and a third of the levels
       keeps the diameter (5 at n = 1000, as with every level) at 4-6 fewer edges per node.

    Measured (not proven; tests and `meshctl simulate` check them) for n up to 1000 and many name sets:
    max degree <= 2*ceil(k/2) + 2*ceil(ceil(log2 n) / 3) + 1 (17-18 at n = 1000, k = 10; every level
    gave 22-23), diameter well inside ceil(log2 n) + 1 (5 at n = 1000), and 10-25 edges changed per join
    or leave.
    For n <= k + 1 the result is the full mesh. The degree defaults to `default_degree(n)`; with that
    default, a join that raises ceil(k/2) (n growing past 4, 16, 64, 256, 1024, ...) adds a whole ring layer,
    about n edges at once: pin `degree` in the mesh file to avoid that step. Deterministic: names and sha256.
    """
    order = ring_order(names)
    count = len(order)
    k = default_degree(count) if degree is None else degree
    if k < 2:
        raise ValueError(f"overlay degree must be at least 2, got {k}")
    if count <= k + 1:
        return full_mesh(order)
    pairs: set[tuple[str, str]] = set()
    for index, name in enumerate(order):
        for step in range(1, ring_reach(k) + 1):
            pairs.add(_pair(name, order[(index + step) % count]))
    pairs |= _skip_ring_pairs(order)
    return sorted(edge_between(a, b) for a, b in pairs)


def _skip_ring_pairs(order: list[str]) -> set[tuple[str, str]]:
    bits = {name: _digest(_LEVEL_SALT, name) for name in order}
    digit = (1 << _SKIP_DIGIT_BITS) - 1
    pairs: set[tuple[str, str]] = set()
    groups = [order]
    for level in range(1, _LEVEL_BITS // _SKIP_DIGIT_BITS + 1):
        shift = _LEVEL_BITS - level * _SKIP_DIGIT_BITS
        split: list[list[str]] = []
        for group in groups:
            rings: dict[int, list[str]] = {}
            for name in group:  # in ring order, so each ring is too
                rings.setdefault((bits[name] >> shift) & digit, []).append(name)
            for members in rings.values():
                if len(members) > 1:
                    split.append(members)
                    pairs.update(_pair(m, members[(i + 1) % len(members)]) for i, m in enumerate(members))
        groups = split
        if not groups:
            break
    return pairs


def _pair(first: str, second: str) -> tuple[str, str]:
    return (first, second) if first < second else (second, first)


def _digest(salt: bytes, name: str) -> int:
    return int.from_bytes(hashlib.sha256(salt + name.encode()).digest(), "big")


def ring_certificate(names: Iterable[str], degree: int | None, edges: Iterable[Edge]) -> int:
    """A proven lower bound on the vertex connectivity of `edges` over `names`, from the overlay's ring.

    2*ceil(k/2) when `edges` contain the whole circulant C_n(1..ceil(k/2)) on `ring_order(names)` (checked
    here edge by edge), n - 1 when they are the full mesh, else 0 (no claim).
    """
    order = ring_order(names)
    count = len(order)
    present = {(edge.a, edge.b) for edge in edges}
    if len(present) == count * (count - 1) // 2:
        return max(count - 1, 0)
    reach = ring_reach(default_degree(count) if degree is None else degree)
    if 2 * reach >= count:
        return 0
    ring = all(
        _pair(name, order[(index + step) % count]) in present
        for index, name in enumerate(order)
        for step in range(1, reach + 1)
    )
    return 2 * reach if ring else 0


def _full(names: Sequence[str], degree: int | None) -> list[Edge]:
    return full_mesh(names)


# Topology kind -> edge builder taking (names, degree or None). mesh_config.TOPOLOGY_KINDS lists the same
# kinds for validation; the degree is only ever set for the overlay (mesh_config rejects it with kind full).
TOPOLOGY_BUILDERS: dict[str, Callable[[Sequence[str], int | None], list[Edge]]] = {
    "full": _full,
    "overlay": overlay,
}


def build_edges(kind: str, names: Sequence[str], degree: int | None = None) -> list[Edge]:
    try:
        builder = TOPOLOGY_BUILDERS[kind]
    except KeyError:
        raise ValueError(f"unknown topology kind {kind!r}; known: {', '.join(TOPOLOGY_BUILDERS)}") from None
    return builder(names, degree)


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
    edges = build_edges(mesh.topology_kind, list(by_name), mesh.topology_degree)
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
