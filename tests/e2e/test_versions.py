"""meshctl versions and restore on the shared lab: the versions the nodes kept of a file that was
overwritten, then deleted everywhere, and each put back to every node from the node that keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import BACKUPS, FOLDER, Mesh, sha
from tests.e2e.test_meshctl import meshctl

pytestmark = pytest.mark.lab

V1, V2 = b"first version\n", b"second version, longer\n"


def everywhere(mesh: Mesh, data: bytes | None) -> bool:
    """Whether every node's folder holds notes.txt with ``data`` (None: no node holds it)."""
    want = None if data is None else sha(data)
    return all(mesh.digest(node).get("./notes.txt") == want for node in mesh.nodes)


def reaches_everyone(mesh: Mesh, tmp_path: Path, data: bytes) -> bool:
    """Whether every node holds notes.txt with ``data`` after the restore's round, or after at most two
    more: a pull the round found busy (a scheduled round of that node was pulling the same edge, from
    before the restore) takes it in the next."""
    for _round in range(3):
        if everywhere(mesh, data):
            return True
        assert meshctl(mesh, tmp_path, "sync").returncode == 0
    return everywhere(mesh, data)


def test_a_deleted_file_is_restored_everywhere_from_the_versions_a_node_kept(
    mesh: Mesh, tmp_path: Path
) -> None:
    for data in (V1, V2, None):  # written, overwritten, deleted on node1; each carried by a round
        if data is None:
            mesh.lab.sh("node1", f"rm {FOLDER}/notes.txt")
        else:
            mesh.write("node1", "notes.txt", data)
        assert meshctl(mesh, tmp_path, "sync").returncode == 0
        assert everywhere(mesh, data)

    proc = meshctl(mesh, tmp_path, "versions", "notes.txt", "--json")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    # node1 made the changes (nothing of it was overwritten by a pull); each other node kept both.
    assert report["nodes"]["node1"] == {"current": None, "versions": []}
    for node in mesh.nodes[1:]:
        held = report["nodes"][node]
        assert held["current"] is None
        assert [v["sha256"] for v in held["versions"]] == [sha(V2), sha(V1)], (node, held)

    # The newest kept version, from whichever node keeps the newest: back on every node.
    proc = meshctl(mesh, tmp_path, "restore", "notes.txt")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert reaches_everyone(mesh, tmp_path, V2), proc.stdout[-3000:]

    # An older one, from a chosen node: what node3's folder held (V2) is kept there first.
    proc = meshctl(mesh, tmp_path, "restore", "notes.txt", "--version", "2", "--from", "node3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert reaches_everyone(mesh, tmp_path, V1), proc.stdout[-3000:]
    kept = mesh.lab.sh("node3", f"cat {BACKUPS}/shared/.restore.*.notes.txt")
    assert kept.encode() == V2
    node3 = json.loads(meshctl(mesh, tmp_path, "versions", "notes.txt", "--json").stdout)["nodes"]["node3"]
    assert sha(V2) in [v["sha256"] for v in node3["versions"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("restore", "../outside.txt"), "inside it"),
        (("restore", "/etc/passwd"), "inside it"),
        (("restore", ".replimesh-folder"), "replimesh's or Unison's own file"),
        (
            ("restore", "never-written.txt", "--version", "3"),
            "no node keeps a version 3 of never-written.txt",
        ),
        (("versions", "notes.txt", "--folder", "nosuch"), "versions_folder"),
    ],
)
def test_a_bad_request_is_refused_with_a_clear_reason(
    mesh: Mesh, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    mesh.write("node2", "keep.txt", b"untouched\n")
    before = {node: mesh.digest(node) for node in mesh.nodes}
    proc = meshctl(mesh, tmp_path, *args)
    assert proc.returncode in (1, 2), proc.stdout[-2000:]
    assert message in proc.stderr + proc.stdout, proc.stderr[-2000:]
    assert {node: mesh.digest(node) for node in mesh.nodes} == before
