"""A node with systemd as PID 1 (the shared mesh's node5), powered off cleanly and booted again, comes back
syncing with no operator action: systemd mounts the jails' folders from fstab, starts sshd and the round
timer, and a round at boot pulls what the node missed while it was off."""

from __future__ import annotations

import sys
import time

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import Mesh, sha
from tests.reliability import record

pytestmark = pytest.mark.lab

NODE = "node5"
JAILS = "/var/lib/replimesh/jails"
# mesh_sync_boot_delay (20 s) after boot, then one pull per peer.
BOOT_ROUND_TIMEOUT_S = 120.0


def log(message: str) -> None:
    print(f"[reboot] {message}", file=sys.stderr)


def jail_mounts(mesh: Mesh) -> list[str]:
    """The read-only bind mounts of the folders into the node's per-peer jails."""
    out = mesh.lab.sh(NODE, f"findmnt -rn -o TARGET,OPTIONS | grep '^{JAILS}/' || true")
    return sorted(line for line in out.splitlines() if line.strip())


def test_a_rebooted_systemd_node_comes_back_syncing(mesh: Mesh) -> None:
    assert mesh.lab.lab.init_of(NODE) == "systemd"
    mounts = jail_mounts(mesh)
    assert len(mounts) == len(mesh.nodes) - 1 and all(",ro," in f",{m.split()[1]}," for m in mounts), mounts
    assert mesh.rounds_on(NODE)

    missed = b"written while node5 was off\n"
    mesh.lab.lab.fault("shutdown", NODE)
    try:
        mesh.write("node1", "while-off.txt", missed)
    finally:
        mesh.lab.lab.fault("start", NODE)
    booted = time.monotonic()

    # Nobody logs in or runs anything: the boot round pulls the file.
    want = sha(missed)
    assert wait_until(lambda: mesh.digest(NODE).get("./while-off.txt") == want, BOOT_ROUND_TIMEOUT_S, 2), (
        mesh.digest(NODE)
    )
    log(f"the file written while {NODE} was off was there {time.monotonic() - booted:.1f} s after boot")

    # The boot round is a oneshot of multi-user.target: the boot is complete once it has ended (it may
    # still be settling its other edges when the file is there).
    def booted_state() -> str:
        return mesh.lab.sh(NODE, "systemctl is-system-running; true").strip()

    assert wait_until(lambda: booted_state() != "starting", BOOT_ROUND_TIMEOUT_S, 1), booted_state()
    failed = mesh.lab.sh(NODE, "systemctl --failed --no-legend --plain; true").strip()
    assert booted_state() == "running" and failed == "", (booted_state(), failed)
    assert jail_mounts(mesh) == mounts and mesh.rounds_on(NODE)

    # It serves its peers again, through its jails: a file it writes reaches every node.
    back = b"node5 writes after its reboot\n"
    mesh.write(NODE, "after-reboot.txt", back)
    proc = mesh.playbook("sync.yml")
    assert proc.returncode == 0, proc.stdout[-3000:]
    for node in mesh.nodes:
        assert mesh.digest(node).get("./after-reboot.txt") == sha(back), node
    record("fault", "a systemd node powered off and booted: back syncing with no operator action", nodes=5)
