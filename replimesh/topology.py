"""meshctl topology: the mesh as the inventory plugin builds it, as text or a picture coloured by health.

The nodes and edges come from the real inventory plugin (`ansible-inventory --list`), the health from
status.yml (the same report as `meshctl status`); Graphviz lays out and
draws the picture (svg, png, pdf or dot, chosen by the file's suffix).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from replimesh.playbooks import UNHEALTHY, BadInputError, PlaybookError, ansible_env

FORMATS = ("svg", "png", "pdf", "dot")
# Health -> Graphviz colour: what needs attention stands out, the rest stays quiet.
COLOURS = {"healthy": "forestgreen", "conflict": "orange", "problem": "red3", "unknown": "gray55"}


def _plain(value: Any) -> Any:
    """ansible-inventory's JSON with its {"__ansible_unsafe": value} wrappers taken off."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def mesh_graph(inventory: Path) -> dict[str, Any]:
    """{nodes: {name: address}, edges: [{a, b}]} from the mesh file, via the inventory plugin."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(inventory.resolve()), "--list"],
        env={**os.environ, **ansible_env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        hostvars = _plain(json.loads(proc.stdout)["_meta"]["hostvars"]) if proc.returncode == 0 else {}
    except (ValueError, KeyError):
        hostvars = {}
    if not hostvars:
        reason = proc.stderr.strip()[-500:] or "no nodes"
        raise BadInputError(f"{inventory}: the inventory plugin gave no mesh: {reason}")
    nodes = {name: str(hv.get("mesh_address", "")) for name, hv in sorted(hostvars.items())}
    edges: dict[tuple[str, str], dict[str, str]] = {}
    for name, hv in hostvars.items():
        for peer in hv.get("mesh_peers", []):
            a, b = sorted((name, peer["name"]))
            edges[(a, b)] = {"a": a, "b": b}
    return {"nodes": nodes, "edges": [edges[pair] for pair in sorted(edges)]}


def with_health(graph: Mapping[str, Any], report: Mapping[str, Any] | None) -> dict[str, Any]:
    """The graph with a `health` per node and edge from a status report (`unknown` without one)."""
    node_rows = {row["node"]: row for row in (report or {}).get("nodes", [])}
    edge_rows = {tuple(row["pair"]): row for row in (report or {}).get("edges", [])}
    nodes = {}
    for name, address in graph["nodes"].items():
        row = node_rows.get(name)
        if row is None:
            health = "unknown"
        elif not row.get("reachable") or row.get("problems") or row.get("degraded"):
            health = "problem"
        else:
            health = "healthy"
        nodes[name] = {"address": address, "health": health}
    edges = []
    for edge in graph["edges"]:
        row = edge_rows.get((edge["a"], edge["b"]))
        ends_up = all((node_rows.get(end) or {}).get("reachable") for end in (edge["a"], edge["b"]))
        if row is None or not ends_up or row.get("result") == "unknown":
            health = "unknown"  # an end did not answer: what the edge does now is not known
        elif not row.get("healthy"):
            health = "problem"
        else:
            health = "conflict" if row.get("conflicts") else "healthy"
        edges.append({**edge, "health": health})
    return {"nodes": nodes, "edges": edges}


def as_lines(graph: Mapping[str, Any]) -> list[str]:
    nodes, edges = graph["nodes"], graph["edges"]
    lines = [f"{len(nodes)} nodes, {len(edges)} edges"]
    lines += [f"node {name} {info['address']} {info['health']}" for name, info in nodes.items()]
    lines += [f"edge {e['a']} <-> {e['b']} {e['health']}" for e in edges]
    return lines


def draw(graph: Mapping[str, Any], out: Path) -> Path:
    """Render the picture with Graphviz; each edge has an arrow at both ends: both ends pull."""
    import graphviz  # imported here: only this command needs it

    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise BadInputError(f"{out}: unknown picture format; use one of .{', .'.join(FORMATS)}")
    if fmt != "dot" and shutil.which("dot") is None:
        raise PlaybookError("Graphviz is not installed (no `dot` on PATH): apt-get install graphviz")
    engine = "circo" if len(graph["nodes"]) <= 40 else "sfdp"
    dot = graphviz.Digraph("mesh", engine=engine, format=fmt)
    legend = "green: healthy · orange: conflicts · red: needs attention · grey dashed: an end is down"
    dot.attr(label=legend, fontname="Helvetica")
    dot.attr("node", shape="box", style="rounded,filled", fillcolor="white", fontname="Helvetica")
    dot.attr("edge", arrowsize="0.5", penwidth="2", dir="both")
    for name, info in graph["nodes"].items():
        colour = COLOURS[info["health"]]
        dot.node(name, f"{name}\n{info['address']}", color=colour, fontcolor=colour)
    for edge in graph["edges"]:
        style = "dashed" if edge["health"] == "unknown" else "solid"
        dot.edge(edge["a"], edge["b"], color=COLOURS[edge["health"]], style=style, tooltip=edge["health"])
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        out.write_text(dot.source)
        return out
    return Path(dot.render(outfile=str(out), cleanup=True))


def run(
    inventory: Path,
    out: Path | None,
    health: bool,
    status: Callable[[Path], Mapping[str, Any]],
    echo: Callable[[str], Any],
) -> int:
    """`meshctl topology`: print the mesh (and draw it when --out is given); exit as `meshctl status` does
    (1 when it is unhealthy, 3 when no node answered)."""
    graph = mesh_graph(inventory)
    report = status(inventory) if health else None
    coloured = with_health(graph, report)
    for line in as_lines(coloured):
        echo(line)
    if out is not None:
        echo(f"picture: {draw(coloured, out)}")
    return 0 if report is None or report.get("healthy") else int(report.get("exit_code", UNHEALTHY))
