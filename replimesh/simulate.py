"""`meshctl simulate`: build a topology for N made-up nodes and measure it, no hosts needed.

Everything measured comes from mesh_plugins/module_utils (mesh_topology builds, mesh_graph measures); this
module only picks the node names, runs the join/leave experiments and formats the report.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_config import TOPOLOGY_KINDS
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_graph import (
    adjacency,
    churn,
    connectivity,
    degree_range,
    diameter,
)
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_topology import (
    build_edges,
    default_degree,
    ring_certificate,
)

MAX_NODES = 5000
# Joins and leaves tried; the report gives the worst of them.
CHURN_SAMPLES = 4


class SimulateError(Exception):
    """Bad simulation arguments, with a message for a person."""


@dataclass(frozen=True, slots=True)
class Report:
    kind: str
    nodes: int
    degree: int | None  # the overlay's k (given or default); None for the full mesh
    degree_rule: str
    edges: int
    max_degree: int
    min_degree: int
    diameter: int | None
    diameter_bound: int
    connectivity: int  # exact, or the proven lower bound when connectivity_exact is false
    connectivity_exact: bool
    connectivity_upper_bound: int
    connectivity_method: str
    edges_changed_on_add: int
    edges_changed_on_remove: int
    churn_samples: int
    seconds: float


def simulate(nodes: int, degree: int | None = None, kind: str = "overlay") -> Report:
    """Build `kind` over node1..nodeN and measure it; churn is the worst of CHURN_SAMPLES joins and leaves."""
    if kind not in TOPOLOGY_KINDS:
        raise SimulateError(f"unknown topology kind {kind!r}; known: {', '.join(TOPOLOGY_KINDS)}")
    if not 2 <= nodes <= MAX_NODES:
        raise SimulateError(f"--nodes must be between 2 and {MAX_NODES}, got {nodes}")
    if degree is not None and kind != "overlay":
        raise SimulateError("--degree applies only to --kind overlay")
    if degree is not None and degree < 2:
        raise SimulateError(f"--degree must be at least 2, got {degree}")
    started = time.perf_counter()
    names = [f"node{i}" for i in range(1, nodes + 1)]
    # Churn is measured at the same k: a default k that steps up on a join is a separate, documented event.
    k = (default_degree(nodes) if degree is None else degree) if kind == "overlay" else None
    edges = build_edges(kind, names, k)
    graph = adjacency(names, edges)
    low, high = degree_range(graph)
    proven = ring_certificate(names, k, edges)
    kappa = connectivity(graph, proven_lower=proven, proof=f"{proven} (Harary ring subgraph, verified)")
    added = max(
        churn(edges, build_edges(kind, [*names, f"joiner{j}"], k)) for j in range(1, CHURN_SAMPLES + 1)
    )
    leavers = [names[(j * nodes) // CHURN_SAMPLES] for j in range(CHURN_SAMPLES)]
    removed = max(churn(edges, build_edges(kind, [n for n in names if n != gone], k)) for gone in leavers)
    return Report(
        kind=kind,
        nodes=nodes,
        degree=k,
        degree_rule=_degree_rule(kind, degree),
        edges=len(edges),
        max_degree=high,
        min_degree=low,
        diameter=diameter(graph),
        diameter_bound=(nodes - 1).bit_length() + 1,
        connectivity=kappa.lower,
        connectivity_exact=kappa.exact,
        connectivity_upper_bound=kappa.upper,
        connectivity_method=kappa.method,
        edges_changed_on_add=added,
        edges_changed_on_remove=removed,
        churn_samples=CHURN_SAMPLES,
        seconds=round(time.perf_counter() - started, 3),
    )


def _degree_rule(kind: str, degree: int | None) -> str:
    if kind != "overlay":
        return "full mesh: every pair"
    return "given" if degree is not None else "default max(2, ceil(log2 N))"


def as_json(report: Report) -> str:
    return json.dumps(asdict(report), indent=2)


def as_text(report: Report) -> str:
    kappa = (
        f"{report.connectivity} (exact)"
        if report.connectivity_exact
        else f"{report.connectivity}..{report.connectivity_upper_bound} (bounds)"
    )
    topology = report.kind + (f", degree k = {report.degree} ({report.degree_rule})" if report.degree else "")
    rows: list[tuple[str, Any]] = [
        ("topology", topology),
        ("nodes", report.nodes),
        ("edges", report.edges),
        ("degree", f"min {report.min_degree}, max {report.max_degree}"),
        ("diameter", f"{report.diameter} (target <= ceil(log2 N) + 1 = {report.diameter_bound})"),
        ("connectivity", f"{kappa}; {report.connectivity_method}"),
        ("churn", f"add one node: {report.edges_changed_on_add} edges, remove one: "
                  f"{report.edges_changed_on_remove} (worst of {report.churn_samples} each)"),
        ("time", f"{report.seconds:.2f} s"),
    ]  # fmt: skip
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
