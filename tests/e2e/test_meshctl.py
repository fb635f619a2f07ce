"""meshctl's playbook commands on the shared lab: they run the real playbooks through ansible-runner, show
per-host progress, keep the full log in a file, and fail with a short reason."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_tool
from tests.e2e.conftest import Mesh, recap, sha

pytestmark = pytest.mark.lab


def meshctl(mesh: Mesh, logs: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return run_tool("meshctl", *args, "-i", str(mesh.inventory), timeout=timeout,
                    env={"REPLIMESH_LOG_DIR": str(logs)})  # fmt: skip


def test_up_is_bootstrap_with_progress_a_log_and_nothing_to_change(mesh: Mesh, tmp_path: Path) -> None:
    """bootstrap.yml is idempotent: the session's bootstrap set everything up, `meshctl up` (the same
    playbook through ansible-runner) finds nothing to change."""
    first = recap(mesh.bootstrap_output)
    assert all(first[n]["failed"] == 0 and first[n]["unreachable"] == 0 for n in mesh.nodes), first
    proc = meshctl(mesh, tmp_path, "up")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Off a terminal the progress is one line per changed/failed task, then a recap per host.
    second = re.findall(r"(node\d) ok=(\d+) changed=(\d+) failed=(\d+) unreachable=(\d+)", proc.stderr)
    assert sorted(r[0] for r in second) == mesh.nodes, proc.stderr[-3000:]
    assert all(r[2:] == ("0", "0", "0") for r in second), second  # a second bootstrap changes nothing
    logs = list(tmp_path.glob("*-bootstrap.log"))
    assert len(logs) == 1 and "PLAY RECAP" in logs[0].read_text()
    assert f"full log: {logs[0]}" in proc.stdout
    # Check mode on one node, with diffs: the same playbook runs to the end and changes nothing.
    checked = meshctl(mesh, tmp_path / "check", "up", "--check", "--diff", "--limit", mesh.nodes[0])
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    assert "bootstrap.yml: checked, nothing changed" in checked.stdout
    rows = re.findall(r"(node\d) ok=(\d+) changed=(\d+) failed=(\d+) unreachable=(\d+)", checked.stderr)
    assert [r[0] for r in rows] == [mesh.nodes[0]] and rows[0][2:] == ("0", "0", "0"), checked.stderr[-3000:]


def test_sync_moves_a_file_and_shows_every_edge(mesh: Mesh, tmp_path: Path) -> None:
    payload = b"written on node2, carried by meshctl sync\n"
    mesh.write("node2", "from-meshctl.txt", payload)
    proc = meshctl(mesh, tmp_path, "sync")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    edges = len(mesh.nodes) * (len(mesh.nodes) - 1)  # every node pulls from each peer
    assert f"edges synced: {edges} of {edges}" in proc.stdout
    # An edge may add a note: two edges delivering the same new file to one node at once, Unison's loser
    # reports "Destination updated during synchronization" for it (the winner brought it; checked below).
    lines = re.findall(r"^node\d <- node\d: ok, \d+ files( \(.*\))?$", proc.stdout, re.MULTILINE)
    assert len(lines) == edges, proc.stdout
    assert all("Destination updated during synchronization" in note for note in lines if note), proc.stdout
    for node in mesh.nodes:
        assert mesh.digest(node).get("./from-meshctl.txt") == sha(payload), node


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (("add", "node9"), r"add-node.yml failed: localhost: failed \(Name the node to add"),
        (("remove", "node9", "-y"), r"remove-node.yml failed: localhost: failed \(Name the node to remove"),
        (("rotate-keys", "node2", "node9"), r"rotate-keys.yml failed: localhost: failed \(Not in the mesh"),
    ],
)
def test_a_bad_request_fails_with_a_short_reason_and_changes_nothing(
    mesh: Mesh, tmp_path: Path, command: tuple[str, ...], reason: str
) -> None:
    keys = "sha256sum /etc/ssh/authorized_keys/replimesh-*"
    before = {node: mesh.lab.sh(node, keys) for node in mesh.nodes}
    proc = meshctl(mesh, tmp_path, *command)
    assert proc.returncode == 1
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("meshctl: error: ") and re.search(reason, message), proc.stderr[-2000:]
    log = Path(message.rsplit("Full log: ", 1)[1])
    assert log.parent == tmp_path and "Nothing was changed" in log.read_text()
    assert before == {node: mesh.lab.sh(node, keys) for node in mesh.nodes}


def test_topology_picture_is_drawn_and_coloured_by_health(mesh: Mesh, tmp_path: Path) -> None:
    assert mesh.playbook("sync.yml").returncode == 0
    picture = tmp_path / "mesh.svg"
    proc = meshctl(mesh, tmp_path, "topology", "--out", str(picture))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    edges = len(mesh.nodes) * (len(mesh.nodes) - 1) // 2
    assert f"{len(mesh.nodes)} nodes, {edges} edges" in proc.stdout
    healthy = re.findall(r"^edge node\d <-> node\d healthy$", proc.stdout, re.M)
    assert len(healthy) == edges
    svg = picture.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert all(f">{node}<" in svg for node in mesh.nodes)
    # Graphviz writes one path per edge, in the edge's colour: every edge healthy here.
    assert svg.count('stroke="forestgreen"') >= edges and "red3" not in svg
