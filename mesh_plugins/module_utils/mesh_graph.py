"""Graph measures for a topology's edges: degrees, diameter, vertex connectivity, churn between two builds.

Standard library only, pure functions, sized for meshes up to a few thousand nodes (`meshctl simulate`).
Exact vertex connectivity costs one max-flow per node, too slow in Python for large meshes; `connectivity`
then reports proven bounds instead and says which it did.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .mesh_topology import Edge

Adjacency = Mapping[str, frozenset[str]]

# Above this many nodes `connectivity` gives bounds rather than run the exact algorithm (N = 400: ~1 s;
# N = 1000: ~7 s, one max-flow per node).
EXACT_CONNECTIVITY_LIMIT = 400


@dataclass(frozen=True, slots=True)
class Connectivity:
    """Vertex connectivity: exact when `lower == upper`, else the true value lies in [lower, upper]."""

    lower: int
    upper: int
    method: str

    @property
    def exact(self) -> bool:
        return self.lower == self.upper


def adjacency(names: Iterable[str], edges: Iterable[Edge]) -> dict[str, frozenset[str]]:
    """Neighbours of every name (names without edges included)."""
    neighbours: dict[str, set[str]] = {name: set() for name in names}
    for edge in edges:
        neighbours.setdefault(edge.a, set()).add(edge.b)
        neighbours.setdefault(edge.b, set()).add(edge.a)
    return {name: frozenset(peers) for name, peers in sorted(neighbours.items())}


def degree_range(graph: Adjacency) -> tuple[int, int]:
    """(min degree, max degree); (0, 0) for an empty graph."""
    degrees = [len(peers) for peers in graph.values()]
    return (min(degrees), max(degrees)) if degrees else (0, 0)


def diameter(graph: Adjacency) -> int | None:
    """The longest shortest path, in hops; None when the graph is disconnected.

    All BFS at once on bit sets: reach[v] holds the nodes within d hops of v, and each round ORs the
    neighbours' sets in, so a 1000-node, 10,000-edge graph takes a few hundredths of a second.
    """
    names = list(graph)
    if len(names) <= 1:
        return 0
    index = {name: i for i, name in enumerate(names)}
    neighbours = [[index[peer] for peer in graph[name]] for name in names]
    reach = [1 << i for i in range(len(names))]
    everyone = (1 << len(names)) - 1
    hops = 0
    while any(r != everyone for r in reach):
        grown = []
        for own, peers in zip(reach, neighbours, strict=True):
            for peer in peers:
                own |= reach[peer]
            grown.append(own)
        if grown == reach:
            return None
        reach = grown
        hops += 1
    return hops


def is_connected(graph: Adjacency) -> bool:
    if not graph:
        return True
    start = next(iter(graph))
    seen = {start}
    queue = deque([start])
    while queue:
        for peer in graph[queue.popleft()]:
            if peer not in seen:
                seen.add(peer)
                queue.append(peer)
    return len(seen) == len(graph)


def local_connectivity(graph: Adjacency, source: str, target: str, limit: int | None = None) -> int:
    """How many internally node-disjoint paths join two non-adjacent nodes (Menger), counted up to `limit`."""
    return _FlowNetwork(graph).local_connectivity(source, target, limit)


class _FlowNetwork:
    """The split graph of `graph` for node-disjoint paths, built once and reused for many max-flows.

    Node v becomes v_in (2i) -> v_out (2i + 1) with capacity 1, and each edge u-v the arcs u_out -> v_in and
    v_out -> u_in; a unit-capacity max-flow from source_out to target_in then equals the smallest node cut
    between them. Each flow undoes its own changes, so building costs O(E) once, not once per pair.
    """

    def __init__(self, graph: Adjacency) -> None:
        self.index = {name: i for i, name in enumerate(graph)}
        self.graph = graph
        # residual[x][y]: remaining capacity of arc x -> y.
        self.residual: list[dict[int, int]] = [{} for _slot in range(2 * len(self.index))]
        for name, i in self.index.items():
            self.residual[2 * i][2 * i + 1] = 1
            self.residual[2 * i + 1].setdefault(2 * i, 0)
            for peer in graph[name]:
                j = self.index[peer]
                self.residual[2 * i + 1][2 * j] = 1
                self.residual[2 * j].setdefault(2 * i + 1, 0)

    def local_connectivity(self, source: str, target: str, limit: int | None = None) -> int:
        if source == target or target in self.graph[source]:
            raise ValueError(f"{source!r} and {target!r} must be distinct and not adjacent")
        start, sink = 2 * self.index[source] + 1, 2 * self.index[target]
        residual = self.residual
        used: list[tuple[int, int]] = []
        flow = 0
        while limit is None or flow < limit:
            parent = _augmenting_path(residual, start, sink)
            if parent is None:
                break
            node = sink
            while node != start:
                previous = parent[node]
                residual[previous][node] -= 1
                residual[node][previous] += 1
                used.append((previous, node))
                node = previous
            flow += 1
        for previous, node in reversed(used):
            residual[previous][node] += 1
            residual[node][previous] -= 1
        return flow


def _augmenting_path(residual: list[dict[int, int]], start: int, sink: int) -> dict[int, int] | None:
    parent = {start: start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt, capacity in residual[node].items():
            if capacity > 0 and nxt not in parent:
                parent[nxt] = node
                if nxt == sink:
                    return parent
                queue.append(nxt)
    return None


def vertex_connectivity(graph: Adjacency, known_lower: int = 0) -> int:
    """Exact vertex connectivity (Esfahanian & Hakimi 1984): about n + min_degree^2 local max-flows.

    With v of minimum degree, kappa is the least local connectivity between v and a non-neighbour, or
    between two non-adjacent neighbours of v. `known_lower` (a proven lower bound) only ends the search early.
    """
    count = len(graph)
    if count <= 1 or not is_connected(graph):
        return 0
    hub = min(graph, key=lambda name: (len(graph[name]), name))
    best = len(graph[hub]) if any(len(p) < count - 1 for p in graph.values()) else count - 1
    pairs = itertools.chain(
        ((hub, other) for other in graph if other != hub and other not in graph[hub]),
        ((a, b) for a, b in itertools.combinations(sorted(graph[hub]), 2) if b not in graph[a]),
    )
    network = _FlowNetwork(graph)
    for source, target in pairs:
        if best <= known_lower:
            break
        best = min(best, network.local_connectivity(source, target, limit=best))
    return best


def connectivity(
    graph: Adjacency,
    *,
    proven_lower: int = 0,
    proof: str = "",
    samples: int = 4,
    exact_limit: int = EXACT_CONNECTIVITY_LIMIT,
) -> Connectivity:
    """Vertex connectivity, exact for graphs up to `exact_limit` nodes, else bounds.

    Bounds: the lower one is `proven_lower` (a structural proof the caller names in `proof`, e.g. a Harary
    subgraph); the upper one is the minimum degree, tightened by max-flows from a minimum-degree node to
    `samples` spread-out non-neighbours (each flow is a true local connectivity, so an upper bound on kappa).
    """
    if len(graph) <= exact_limit:
        value = vertex_connectivity(graph, proven_lower)
        return Connectivity(value, value, "exact (Esfahanian-Hakimi max-flows)")
    if not is_connected(graph):
        return Connectivity(0, 0, "exact (disconnected)")
    upper = degree_range(graph)[0]
    hub = min(graph, key=lambda name: (len(graph[name]), name))
    others = [name for name in graph if name != hub and name not in graph[hub]]
    stride = max(1, len(others) // max(samples, 1))
    network = _FlowNetwork(graph)
    for target in others[::stride][:samples]:
        upper = min(upper, network.local_connectivity(hub, target, limit=upper))
    lower = min(proven_lower, upper)
    method = (
        f"bounds: lower {proof or 'none proven'}; upper min degree and {samples} sampled max-flows"
        if lower < upper
        else f"exact: {proof} meets the min-degree/max-flow upper bound"
    )
    return Connectivity(lower, upper, method)


def churn(before: Iterable[Edge], after: Iterable[Edge]) -> int:
    """Edges added plus edges removed between two builds (each is a Unison archive made or dropped)."""
    old = {(edge.a, edge.b) for edge in before}
    new = {(edge.a, edge.b) for edge in after}
    return len(old ^ new)
