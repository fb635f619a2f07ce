"""The jails follow the packages: a Unison package upgrade on a node reaches every peer's jail at once.

The peers' pulls run the Unison inside the node's jails (copies: a chroot reaches nothing else). A dpkg
hook runs replimesh-jail-refresh after every package change, so an upgrade, as unattended-upgrades makes
it, is what the next pull serves. The upgrade here is Debian's unison-2.52 package rebuilt with a new
version and a changed binary (the same program with bytes appended, as a rebuild differs), installed
with apt on node2; then the original is installed back, a downgrade, which must reach the jails too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from replimesh.lab import image
from tests.e2e.conftest import FOLDER, JAILS, Mesh, sha

pytestmark = pytest.mark.lab

BINARY = "/usr/bin/unison-2.52"  # what /usr/bin/unison points to (alternatives) in the package


def rebuilt_package(tmp_path: Path) -> tuple[Path, str, str]:
    """Debian's unison-2.52 .deb from the lab's repository, rebuilt as version +rmtest1 with a changed
    binary: (the .deb, the original version, the new binary's sha256)."""
    original = sorted(image.ensure_apt_repo(print).glob("unison-2.52_*.deb"))[-1]
    tree = tmp_path / "pkg"
    subprocess.run(["dpkg-deb", "-R", str(original), str(tree)], check=True, timeout=120)
    control = tree / "DEBIAN/control"
    lines = control.read_text().splitlines()
    version = next(line.split(": ", 1)[1] for line in lines if line.startswith("Version: "))
    control.write_text("\n".join(f"Version: {version}+rmtest1" if line.startswith("Version: ") else line
                                 for line in lines) + "\n")  # fmt: skip
    binary = tree / BINARY.lstrip("/")
    binary.write_bytes(binary.read_bytes() + b"\0replimesh rebuild\0")
    (tree / "DEBIAN/md5sums").unlink(missing_ok=True)
    deb = tmp_path / "unison-2.52_rmtest1.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)], check=True, timeout=120)
    return deb, version, sha(binary.read_bytes())


def jail_binaries(mesh: Mesh, node: str) -> dict[str, str]:
    """sha256 of the Unison of the node's template jail and of each peer's jail, and the host's own."""
    out = mesh.lab.sh(
        node, f"sha256sum {BINARY} /var/lib/replimesh/jail/usr/bin/unison {JAILS}/*/usr/bin/unison"
    )
    return {path: digest for digest, path in (line.split() for line in out.splitlines())}


def test_a_unison_upgrade_reaches_every_jail_and_the_peers_pulls_use_it(mesh: Mesh, tmp_path: Path) -> None:
    deb, version, new = rebuilt_package(tmp_path)
    before = jail_binaries(mesh, "node2")
    assert len(set(before.values())) == 1 and len(before) == 2 + len(mesh.nodes) - 1, before
    lab_node2 = mesh.lab.lab.resolve("node2").container
    subprocess.run(["docker", "cp", str(deb), f"{lab_node2}:/tmp/{deb.name}"], check=True, timeout=60)
    try:
        mesh.lab.sh("node2", f"apt-get install -y -q /tmp/{deb.name} >/dev/null 2>&1")
        # No playbook ran: dpkg's hook did it, before apt returned.
        after = jail_binaries(mesh, "node2")
        assert set(after.values()) == {new} and set(after) == set(before), after

        # A peer's pull from node2 now runs the new build inside its jail there, and syncs.
        mesh.write("node2", "after-upgrade.txt", b"served by the upgraded jail\n")
        mesh.lab.sh("node1", "runuser -u replimesh -- /usr/local/sbin/replimesh-sync --peer node2")
        assert mesh.lab.sh("node1", f"cat {FOLDER}/after-upgrade.txt") == "served by the upgraded jail\n"
    finally:
        # Back to Debian's build: a downgrade is a package change too.
        downgrade = f"apt-get install -y -q --allow-downgrades unison-2.52={version} >/dev/null 2>&1"
        mesh.lab.sh("node2", f"{downgrade}; rm -f /tmp/{deb.name}")
    assert jail_binaries(mesh, "node2") == before
