"""A node's own .replimeshignore on the 5-node lab: node1 ignores *.log and build/; its pulls take none of
them from its peers and leave its own alone, the file itself stays on node1, every other node syncs all of
it, and verify counts none of it as a difference. A bad pattern stops node1's pulls, naming the line."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_tool
from tests.e2e.conftest import FOLDER, MESH_USER, Mesh

pytestmark = pytest.mark.lab


def sync(mesh: Mesh) -> dict:
    proc = run_tool("meshctl", "sync", "-i", str(mesh.inventory), "--json", timeout=600)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def files(mesh: Mesh, node: str) -> set[str]:
    return set(mesh.digest(node))


def test_a_nodes_own_ignore_file_keeps_its_patterns_out_of_its_pulls_only(mesh: Mesh) -> None:
    mesh.write("node1", ".replimeshignore", b"# node1 builds here\n*.log\nbuild\n")
    mesh.write("node1", "mine.log", b"node1's own log\n")
    mesh.write("node2", "app.log", b"node2's log\n")
    mesh.write("node2", "build/out.o", b"\x7fELF object\n")
    mesh.write("node2", "keep.txt", b"for everyone\n")

    report = sync(mesh)
    assert report["edges_synced"] == report["edges_total"], report
    assert files(mesh, "node1") == {"./.replimeshignore", "./mine.log", "./keep.txt"}
    everything = {"./mine.log", "./app.log", "./build/out.o", "./keep.txt"}
    for node in ("node2", "node3", "node4", "node5"):  # a full mesh: each pulled from node1 and node2
        assert files(mesh, node) == everything, node
    assert mesh.lab.sh("node1", f"cat {FOLDER}/mine.log") == "node1's own log\n"
    assert mesh.verify()["identical"]  # node1 lacking app.log and build/ is what it asked for

    mesh.write("node1", ".replimeshignore", b"*.log\n../../etc\n")
    mesh.write("node2", "later.txt", b"written after the bad pattern\n")
    report = sync(mesh)
    node1 = [edge for edge in report["edges"] if edge["node"] == "node1"]
    assert node1 and all(edge["result"] == "failed" for edge in node1), node1
    assert all(".replimeshignore: line 2:" in edge["error"] for edge in node1), node1
    assert "./later.txt" not in files(mesh, "node1")
    assert "./later.txt" in files(mesh, "node3")

    mesh.lab.sh("node1", f"runuser -u {MESH_USER} -- sed -i 2d {FOLDER}/.replimeshignore")
    report = sync(mesh)
    assert all(edge["result"] in ("ok", "conflict") for edge in report["edges"] if edge["node"] == "node1")
    assert "./later.txt" in files(mesh, "node1") and "./app.log" not in files(mesh, "node1")
