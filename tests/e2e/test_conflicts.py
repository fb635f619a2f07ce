"""meshctl conflicts on the shared lab: a file changed on node1 and node2 between rounds leaves conflict
copies, which the list shows on every node; keeping one copy's version ends the conflict everywhere, and
every other version stays among the nodes' kept versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Mesh, sha
from tests.e2e.test_meshctl import meshctl

pytestmark = pytest.mark.lab

BASE, ONE, TWO = b"the shared draft\n", b"node1's edit\n", b"node2's edit, made at the same time\n"


def listed(mesh: Mesh, tmp_path: Path) -> tuple[int, dict]:
    proc = meshctl(mesh, tmp_path, "conflicts", "--json")
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc.returncode, json.loads(proc.stdout)


def test_a_conflict_is_listed_on_every_node_and_resolved_everywhere(mesh: Mesh, tmp_path: Path) -> None:
    mesh.write("node1", "draft.md", BASE)
    assert meshctl(mesh, tmp_path, "sync").returncode == 0
    code, report = listed(mesh, tmp_path)
    assert (code, report["files"]) == (0, []), report

    mesh.write("node1", "draft.md", ONE)
    mesh.write("node2", "draft.md", TWO)
    for _round in range(2):  # the conflict, then its copies reach the nodes that did not see it
        assert meshctl(mesh, tmp_path, "sync").returncode == 0
    code, report = listed(mesh, tmp_path)
    assert code == 1 and [item["path"] for item in report["files"]] == ["draft.md"], json.dumps(
        report, indent=1
    )
    (item,) = report["files"]
    holders = {node for copy in item["copies"] for node in copy["nodes"]}
    assert holders == set(mesh.nodes), item  # listed on every node
    versions = {copy["sha256"] for copy in item["copies"]} | set(item["now"].values())
    assert {sha(ONE), sha(TWO)} <= versions, item

    # Keep the version the file is not now, by the name of its copy. Nodes may hold different versions
    # under one copy's name (each kept its own loser): then the operator names the node, with --from.
    chosen = next(copy for copy in item["copies"] if copy["sha256"] not in item["now"].values())
    name = chosen["copy"].rsplit("/", 1)[-1]
    shared = [copy for copy in item["copies"] if copy["copy"] == chosen["copy"]]
    source = [] if len(shared) == 1 else ["--from", chosen["nodes"][0]]
    proc = meshctl(mesh, tmp_path, "conflicts", "draft.md", "--keep", name, *source)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for node in mesh.nodes:
        files = mesh.digest(node)
        assert files.get("./draft.md") == chosen["sha256"], (node, files)
        assert [path for path in files if "conflict_on_" in path] == [], (node, files)
    code, report = listed(mesh, tmp_path)
    assert (code, report["files"]) == (0, []), report

    # Nothing was lost: the version given up is among the kept versions of the file.
    proc = meshctl(mesh, tmp_path, "versions", "draft.md", "--json")
    kept = {v["sha256"] for node in json.loads(proc.stdout)["nodes"].values() for v in node["versions"]}
    assert versions - {chosen["sha256"]} <= kept, kept


def test_a_file_edited_right_after_the_round_that_spread_it_is_an_update_everywhere(
    mesh: Mesh, tmp_path: Path
) -> None:
    """One round carries a new file from node1 to every node, and node3 edits it at once: the next round
    replaces it everywhere. Each node's round ended by pulling what it got once more from every peer
    (settling), so the edge node3-node5, say, knew the file before node3 changed it; otherwise node5 met a
    file "new on both sides" with two contents and kept a needless copy of node1's version."""
    mesh.write("node1", "plan.md", BASE)
    assert meshctl(mesh, tmp_path, "sync").returncode == 0
    mesh.write("node3", "plan.md", ONE)
    assert meshctl(mesh, tmp_path, "sync").returncode == 0
    for node in mesh.nodes:
        files = mesh.digest(node)
        assert files == {"./plan.md": sha(ONE)}, (node, files)
    code, report = listed(mesh, tmp_path)
    assert (code, report["files"]) == (0, []), report
