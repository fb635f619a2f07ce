"""add-node.yml and remove-node.yml on a lab of its own (it makes its own meshes, so it runs beside the
shared lab's tests): a mesh of 4 grows to 5, then loses a paused node. The mesh is mixed, as users run
theirs: a Debian 13 node (Unison 2.53) among Debian 12 ones (2.52), and the node that joins, and at the
end leaves, boots systemd (a timer runs its rounds)."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from replimesh.lab import system
from replimesh.lab.lab import Lab
from tests.conftest import SYSTEMD_NODES, SessionLab, run_tool, slot_lab_config
from tests.e2e.conftest import FOLDER, MESH_USER, Mesh, mesh_login, recap, sha

pytestmark = pytest.mark.lab

MEMBERSHIP_LAB = slot_lab_config("mbr", 7)
# A mixed mesh, as during a rolling upgrade: node4 runs Debian 13 (Unison 2.53), the others Debian 12
# (2.52); node5 boots systemd.
TRIXIE_NODES = ("node4",)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """Five fresh lab hosts, not bootstrapped: the test makes its meshes itself."""
    lab = Lab(tmp_path_factory.mktemp("membership"), MEMBERSHIP_LAB, log=lambda m: print(f"[lab] {m}"))
    try:
        hosts = lab.up(5, systemd=SYSTEMD_NODES, trixie=TRIXIE_NODES)
        yield Mesh(SessionLab(lab), lab.inventory_path, [h.name for h in hosts], "")
    finally:
        lab.down()


def _write_mesh_file(mesh: Mesh, path: Path, nodes: list[str]) -> None:
    """The lab's mesh file, cut down to `nodes` (what an operator edits by hand)."""
    data = yaml.safe_load(mesh.inventory.read_text())
    data["nodes"] = {name: spec for name, spec in data["nodes"].items() if name in nodes}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _run(mesh_file: Path, playbook: str, *args: str) -> str:
    proc = run_tool("ansible-playbook", "-i", str(mesh_file), playbook, *args, timeout=900)
    assert proc.returncode == 0, f"{playbook} {args} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def _conflict_copies(mesh: Mesh, nodes: list[str]) -> dict[str, list[str]]:
    found = {}
    for node in nodes:
        names = [p for p in mesh.digest(node) if "(conflict" in p]
        if names:
            found[node] = names
    return found


def test_grow_to_five_then_remove_a_paused_node(mesh: Mesh, tmp_path: Path) -> None:
    # node5 comes as a freshly installed host (systemd as PID 1): new container, new keys, nothing of the
    # old mesh.
    system.docker("rm", "-f", mesh.lab.lab.resolve("node5").container)
    mesh.lab.lab.up(5, systemd=SYSTEMD_NODES, trixie=TRIXIE_NODES)
    mesh_file = tmp_path / "members.mesh.yml"
    four = ["node1", "node2", "node3", "node4"]
    _write_mesh_file(mesh, mesh_file, four)
    _run(mesh_file, "bootstrap.yml")
    versions = {n: mesh.lab.sh(n, "unison -version").split()[2] for n in four}  # unison version X (ocaml Y)
    assert versions["node4"].startswith("2.53.") and versions["node1"].startswith("2.52."), versions

    # 200 files written across the four nodes, one round: the mesh of four agrees.
    for i, node in enumerate(four):
        script = " && ".join(f"head -c {1000 + n} /dev/urandom > {FOLDER}/f{i}-{n}.bin" for n in range(50))
        mesh.lab.sh(node, f"runuser -u {MESH_USER} -- sh -c {shlex.quote(script)}")
    _run(mesh_file, "sync.yml")
    reference = mesh.digest("node1")
    assert len(reference) == 200
    assert all(mesh.digest(n) == reference for n in four)

    # node5 joins: seeded, then synced; byte-identical, no conflict copy anywhere.
    five = [*four, "node5"]
    _write_mesh_file(mesh, mesh_file, five)
    _run(mesh_file, "add-node.yml", "-e", "node=node5")
    assert mesh.digest("node5") == reference
    # Seeded, its scheduled rounds are on: a systemd timer on this host, cron on the others.
    assert mesh.lab.lab.init_of("node5") == "systemd" and all(mesh.rounds_on(n) for n in five)
    assert "replimesh-sync" not in mesh.lab.sh("node5", "cat /etc/cron.d/replimesh 2>/dev/null || true")
    mesh.verify(mesh_file)
    mesh.write("node5", "from-node5.txt", b"the newcomer writes\n")
    _run(mesh_file, "sync.yml")
    after = mesh.digest("node1")
    assert after["./from-node5.txt"] == sha(b"the newcomer writes\n")
    assert all(mesh.digest(n) == after for n in five)
    assert _conflict_copies(mesh, five) == {}

    # A second add-node changes nothing anywhere.
    again = recap(_run(mesh_file, "add-node.yml", "-e", "node=node5"))
    assert {n: again[n]["changed"] for n in five} == dict.fromkeys(five, 0)

    # Without confirmation, or without a node, remove-node stops before any change.
    keys_before = mesh.lab.sh("node1", "cat /etc/ssh/authorized_keys/replimesh-*")
    for args, message in (
        (["-e", "node=node2"], "was not confirmed"),
        (["-e", "skip_confirmation=true"], "Name the node to remove"),
    ):
        proc = run_tool("ansible-playbook", "-i", str(mesh_file), "remove-node.yml", *args, timeout=300)
        assert proc.returncode != 0 and message in proc.stdout, proc.stdout[-3000:]
    assert mesh.lab.sh("node1", "cat /etc/ssh/authorized_keys/replimesh-*") == keys_before

    # node2 freezes; it is removed anyway, and the survivors keep syncing without it.
    remove = ["remove-node.yml", "-e", "node=node2", "-e", "skip_confirmation=true"]
    remove += ["-e", "allow_ungraceful_removal=true"]
    mesh.lab.lab.fault("pause", "node2")
    try:
        # A survivor frozen too cannot revoke node2's key: the removal says so, fails, keeps node2's
        # stored keys; run again once node5 answers, it completes.
        mesh.lab.lab.fault("pause", "node5")
        try:
            proc = run_tool("ansible-playbook", "-i", str(mesh_file), *remove, timeout=900)
        finally:
            mesh.lab.lab.fault("unpause", "node5")
        assert proc.returncode != 0, proc.stdout[-3000:]
        assert "node2's key is NOT revoked on node5" in proc.stdout, proc.stdout[-3000:]
        assert "is out of the mesh" not in proc.stdout
        assert (tmp_path / "members.keys" / "node2.json").exists()
        _run(mesh_file, *remove)
        assert not (tmp_path / "members.keys" / "node2.json").exists()
        survivors = ["node1", "node3", "node4", "node5"]
        _write_mesh_file(mesh, mesh_file, survivors)
        mesh.write("node3", "after-removal.txt", b"survivors only\n")
        _run(mesh_file, "sync.yml")
        for node in survivors:
            assert mesh.digest(node)["./after-removal.txt"] == sha(b"survivors only\n"), node
    finally:
        mesh.lab.lab.fault("unpause", "node2")

    # node2 is back: every survivor refuses its mesh key, and nothing it writes reaches anyone.
    for node in survivors:
        login = mesh_login(mesh, "node2", node)
        answer = login.stdout + login.stderr
        assert b"Permission denied" in answer and not answer.startswith(b"Unison"), (node, answer)
    mesh.write("node2", "from-the-removed.txt", b"nobody should get this\n")
    mesh.lab.lab.exec("node2", ["runuser", "-u", MESH_USER, "--", "replimesh-sync", "--all-peers"])
    # ...and it reads nothing: not even over the connections it had opened before it froze.
    assert "./after-removal.txt" not in mesh.digest("node2")
    _run(mesh_file, "sync.yml")
    for node in survivors:
        assert "./from-the-removed.txt" not in mesh.digest(node), node

    # node2 comes back under the same name: a new key, no stale archive, no conflict copy.
    old_key = mesh.lab.sh("node2", "cat /var/lib/replimesh/.ssh/id_ed25519.pub").split()[1]
    _write_mesh_file(mesh, mesh_file, five)
    _run(mesh_file, "add-node.yml", "-e", "node=node2")
    new_key = mesh.lab.sh("node2", "cat /var/lib/replimesh/.ssh/id_ed25519.pub").split()[1]
    assert new_key != old_key
    _run(mesh_file, "sync.yml")
    final = mesh.digest("node1")
    assert "./from-the-removed.txt" in final  # what it wrote while out now joins, as a new file
    assert all(mesh.digest(n) == final for n in five)
    assert _conflict_copies(mesh, five) == {}
    report = mesh.verify(mesh_file)
    assert all(folder["conflict_copies"] == {} for folder in report["folders"].values())

    # node5, the systemd host, leaves while it answers: its timer, its round at boot and its runs stop,
    # and the others refuse its key.
    # A copy of its key outlives the removal: what a thief who took it would hold.
    mesh.lab.sh("node5", "install -m 0600 /var/lib/replimesh/.ssh/id_ed25519 /root/node5-key")
    _run(mesh_file, "remove-node.yml", "-e", "node=node5", "-e", "skip_confirmation=true")
    units = mesh.lab.sh("node5", "systemctl list-unit-files 'replimesh-*' --no-legend; true").strip()
    assert units == "" and not mesh.rounds_on("node5"), units
    assert mesh.lab.sh("node5", "pgrep -u replimesh -a || true").strip() == ""
    for node in ["node1", "node2", "node3", "node4"]:
        login = mesh_login(mesh, "node5", node, key="/root/node5-key")
        assert b"Permission denied" in login.stdout + login.stderr, (node, login.stderr)
