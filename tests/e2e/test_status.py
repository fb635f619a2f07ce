"""meshctl status and status.yml on the 5-node lab: healthy after a round (and every node's metrics textfile
parses, with a sample per edge it ran), a paused node makes the mesh unhealthy, and a conflict is listed
with its path on its edge."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_tool
from tests.e2e.conftest import MESH_USER, Mesh

pytestmark = pytest.mark.lab

STATE = "/var/lib/replimesh/state"
METRICS = f"{STATE}/metrics/replimesh.prom"


def status(mesh: Mesh, *args: str) -> tuple[int, dict[str, Any]]:
    proc = run_tool("meshctl", "status", "-i", str(mesh.inventory), "--json", *args, timeout=600)
    assert proc.returncode in (0, 1), (
        f"meshctl status exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.returncode, json.loads(proc.stdout)


def edges(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["edge"]: row for row in report["edges"]}


def metrics(mesh: Mesh, node: str) -> dict[str, dict[str, float]]:
    """family sample name -> peer or folder label -> value, parsed by prometheus_client."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(mesh.lab.sh(node, f"cat {METRICS}")):
        for sample in family.samples:
            label = sample.labels.get("peer") or sample.labels.get("folder", "")
            found.setdefault(sample.name, {})[label] = sample.value
    return found


def test_status_is_healthy_after_a_round_and_the_metrics_parse(mesh: Mesh) -> None:
    mesh.write("node1", "hello.txt", b"status check\n")
    proc = mesh.playbook("sync.yml")
    assert proc.returncode == 0, proc.stdout[-4000:]
    code, report = status(mesh)
    assert (code, report["healthy"], report["problems"]) == (0, True, []), report["problems"]
    assert [row["node"] for row in report["nodes"]] == mesh.nodes
    assert all(row["reachable"] and row["unison"] and row["cron"] for row in report["nodes"])
    assert report["edges"] and all(row["result"] == "ok" for row in report["edges"]), report["edges"]
    assert all(row["lag_s"] is not None and row["lag_s"] < 600 for row in report["edges"])

    # Each node's textfile has a sample per edge record it holds; together they cover every edge.
    covered = set()
    for node in mesh.nodes:
        peers = set(mesh.lab.sh(node, f"cd {STATE}/status && ls *.json | sed 's/[.]json$//'").split())
        found = metrics(mesh, node)
        assert set(found["replimesh_edge_last_success_timestamp_seconds"]) == peers
        # The edges whose freshest record is this node's were just synced: their success is recent.
        mine = [row["pair"] for row in report["edges"] if row["reported_by"] == node]
        successes = found["replimesh_edge_last_success_timestamp_seconds"]
        assert all(successes[next(n for n in pair if n != node)] > 0 for pair in mine), successes
        assert found["replimesh_folder_marker_ok"] == {"shared": 1.0}
        assert mesh.lab.sh(node, f"stat -c %a {METRICS}").strip() == "644"
        covered |= {"<->".join(sorted((node, peer))) for peer in peers}
    assert set(edges(report)) <= covered

    # The table for a person: plain lines when not on a terminal, the same exit code.
    plain = run_tool("meshctl", "status", "-i", str(mesh.inventory))
    assert plain.returncode == 0 and plain.stdout.startswith(
        f"healthy: {len(mesh.nodes)}/{len(mesh.nodes)} nodes reachable"
    ), plain.stdout


def test_a_paused_node_makes_the_mesh_unhealthy(mesh: Mesh) -> None:
    proc = mesh.playbook("sync.yml")
    assert proc.returncode == 0, proc.stdout[-4000:]
    paused = mesh.nodes[-1]
    mesh.lab.lab.fault("pause", paused)
    try:
        code, report = status(mesh)
        reachable = {row["node"]: row["reachable"] for row in report["nodes"]}
        assert code == 1 and not report["healthy"]
        assert reachable == {**dict.fromkeys(mesh.nodes, True), paused: False}
        assert any(problem.startswith(f"{paused}: unreachable") for problem in report["problems"])
        alone = mesh.playbook("status.yml")
        assert alone.returncode != 0 and f"node {paused}: UNREACHABLE" in alone.stdout, alone.stdout[-3000:]
    finally:
        mesh.lab.lab.fault("unpause", paused)


def away_from_cron_rounds() -> None:
    """The lab's cron rounds start every quarter-hour and wait up to 45 s (the splay): one that pulls
    between the two writes carries a version across first, and there is no conflict left to see (it
    happened in CI). Wait, bounded, until the next one is more than a few seconds away."""
    for _ in range(90):
        if 60 < time.time() % 900 < 890:
            return
        time.sleep(1)


def test_a_conflict_is_listed_with_its_path_on_its_edge(mesh: Mesh) -> None:
    proc = mesh.playbook("sync.yml")
    assert proc.returncode == 0, proc.stdout[-4000:]
    _, before = status(mesh)
    a, b = before["edges"][0]["pair"]
    away_from_cron_rounds()
    mesh.write(a, "clash.txt", f"written on {a}\n".encode())
    mesh.write(b, "clash.txt", f"written on {b}, longer\n".encode())
    # Sync that one edge alone, so no other edge carries either version across first.
    mesh.lab.sh(a, f"runuser -u {MESH_USER} -- /usr/local/sbin/replimesh-sync --peer {b}")
    code, report = status(mesh)
    row = edges(report)[f"{a}<->{b}"]
    assert (row["result"], row["conflicts"], row["reported_by"]) == ("conflict", ["shared/clash.txt"], a), row
    assert code == 0 and report["healthy"] and report["conflicts"] >= 1, report["problems"]
    assert metrics(mesh, a)["replimesh_edge_conflicts"][b] == 1.0

    # A round spreads the winner and its conflict copy: the mesh stays healthy.
    proc = mesh.playbook("sync.yml")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert status(mesh)[0] == 0
