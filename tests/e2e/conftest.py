"""A bootstrapped 5-node mesh on the session's lab, shared by the e2e tests (folders reset per test)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SessionLab, run_tool

FOLDER = "/srv/replimesh/shared"
MARKER = ".replimesh-folder"
MESH_USER = "replimesh"
MESH_KEY = "/var/lib/replimesh/.ssh/id_ed25519"  # a node's mesh key
BACKUPS = "/var/lib/replimesh/backups"  # mesh_sync_backup_dir: old versions, BACKUPS/FOLDER/PATH
# One jail per peer (JAILS/replimesh-PEER): in each, that edge's Unison directory (the same path as on
# the host, inside the jail), the folders read-only, and a notice directory.
JAILS = "/var/lib/replimesh/jails"
ARCHIVES = "/var/lib/replimesh/unison"
# Every backup directory of a node: its own pulls' (no jail holds versions).
ALL_BACKUPS = BACKUPS
NODES = 5


@dataclass
class Mesh:
    lab: SessionLab
    inventory: Path
    nodes: list[str]
    bootstrap_output: str
    # A test that re-shapes the mesh (membership) sets this; the next test gets it bootstrapped again.
    dirty: bool = False

    def playbook(self, name: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run_tool("ansible-playbook", "-i", str(self.inventory), name, *args, timeout=timeout)

    def write(self, node: str, rel: str, data: bytes) -> None:
        """Write a file into the node's folder as the mesh user, as an application would."""
        b64 = base64.b64encode(data).decode()
        path = shlex.quote(f"{FOLDER}/{rel}")
        script = f'mkdir -p "$(dirname {path})" && printf %s {b64} | base64 -d > {path}'
        self.lab.sh(node, f"runuser -u {MESH_USER} -- sh -c {shlex.quote(script)}")

    def digest(self, node: str) -> dict[str, str]:
        """path -> sha256 of every file in the node's folder: the replica as Unison sees it (the marker
        and Unison's own temporary files, which it never syncs, left out)."""
        out = self.lab.sh(
            node,
            f"cd {FOLDER} && find . -name '.unison.*.unison.tmp' -prune -o -type f ! -name {MARKER}"
            " -print0 | sort -z | xargs -0 -r sha256sum",
        )
        return {line[66:]: line[:64] for line in out.splitlines()}

    def verify(self, inventory: Path | None = None) -> dict:
        """`meshctl verify --json`, the project's own oracle: every replica identical, every node reached."""
        proc = run_tool("meshctl", "verify", "-i", str(inventory or self.inventory), "--json", timeout=300)
        report = json.loads(proc.stdout)
        assert proc.returncode == 0 and report["identical"], proc.stdout[-3000:] + proc.stderr[-2000:]
        return report

    def rounds_on(self, node: str) -> bool:
        """Whether the node's scheduled rounds are on: with systemd its timer is enabled and waiting, else
        its cron file holds the job."""
        if self.lab.lab.init_of(node) == "systemd":
            state = self.lab.sh(node, "systemctl is-enabled replimesh-sync.timer; systemctl is-active "
                                "replimesh-sync.timer; true")  # fmt: skip
            return state.split() == ["enabled", "active"]
        return "replimesh-sync" in self.lab.sh(node, "cat /etc/cron.d/replimesh 2>/dev/null || true")

    def converged(self, nodes: list[str] | None = None) -> bool:
        digests = [self.digest(n) for n in nodes or self.nodes]
        return all(d == digests[0] for d in digests)

    def reset(self) -> None:
        """Empty every replica and its backups, and forget the archives: the next round starts as a first
        sync, so a file name reused by the next test is new everywhere, not a modify-versus-delete
        conflict."""
        for node in self.nodes:
            self.lab.sh(
                node,
                f"find {FOLDER} -mindepth 1 ! -name {MARKER} -delete;"
                f" find {JAILS}/*{ARCHIVES}/ -mindepth 2 -maxdepth 2"
                " -name '[afl][rpk][0-9a-f]*' -delete;"
                f" for d in {ALL_BACKUPS}; do rm -rf $d/*/* $d/*/.[!.]*; done",
            )


def recap(output: str) -> dict[str, dict[str, int]]:
    """host -> counts (ok, changed, failed, unreachable, ...) from ansible-playbook's PLAY RECAP."""
    found = {}
    for host, fields in re.findall(r"^(\S+)\s+: (ok=.*)$", output, re.MULTILINE):
        found[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
    return found


def changed_tasks(output: str) -> list[str]:
    """'TASK name: host' for every task ansible-playbook reported changed (why a run was not idempotent)."""
    found, task = [], ""
    for line in output.splitlines():
        if match := re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\]", line):
            task = match.group(1)
        elif match := re.match(r"^changed: \[([^\]]+)\]", line):
            found.append(f"{task}: {match.group(1)}")
    return found


def mesh_login(mesh: Mesh, src: str, dst: str, key: str = MESH_KEY) -> subprocess.CompletedProcess[bytes]:
    """ssh from src to dst as src's login there, with src's mesh key (or a copy of it at `key`), from src's
    own address (a key is accepted only from its node's): the jailed Unison server's banner on stdout,
    or ssh's refusal on stderr (exit 255)."""
    address = mesh.lab.lab.resolve(dst).address
    ssh = (
        f"ssh -F none -i {key} -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=10"
        f" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null {MESH_USER}-{src}@{address} true"
    )
    return mesh.lab.lab.exec(src, ["sh", "-c", f"{ssh} </dev/null"])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def mesh_session(lab: SessionLab) -> Mesh:
    hosts = lab.ensure(NODES)
    inventory = lab.lab.inventory_path
    proc = run_tool("ansible-playbook", "-i", str(inventory), "bootstrap.yml", timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return Mesh(lab, inventory, [h.name for h in hosts], proc.stdout)


@pytest.fixture
def mesh(mesh_session: Mesh) -> Mesh:
    if mesh_session.dirty:
        # The membership test gave some nodes new keys (a returning node is re-keyed): the lab's own
        # key store still has the old ones, and this reset, unlike an operator, may accept them.
        proc = mesh_session.playbook("bootstrap.yml", "-e", "mesh_ssh_accept_new_keys=true")
        assert proc.returncode == 0, proc.stdout[-6000:]
        mesh_session.dirty = False
    mesh_session.reset()
    return mesh_session
