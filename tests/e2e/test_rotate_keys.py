"""rotate-keys.yml on the 5-node lab while files are written and synced the whole time: every file arrives on
every node, no sync run during the rotation meets a refused key, every node's key changed, and an old key
is refused afterwards. Then the refusals that come before any change (unknown node, --limit, a down peer)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_edgerecord import HARMLESS_KINDS, iso_utc
from tests.conftest import wait_until
from tests.e2e.conftest import MESH_USER, Mesh, recap, sha

pytestmark = pytest.mark.lab

HOME = "/var/lib/replimesh"
KEY = f"{HOME}/.ssh/id_ed25519"
LOG = "/var/log/replimesh/sync.log"
WRITER_MAX_S = 300.0  # the writer stops with the rotation, and in any case after this
AUTH_ERROR = re.compile(r"permission denied|publickey|host key verification failed", re.IGNORECASE)


def fingerprint(mesh: Mesh, node: str) -> str:
    return mesh.lab.sh(node, f"ssh-keygen -l -f {KEY}").split()[1]


def public_key(mesh: Mesh, node: str) -> str:
    return " ".join(mesh.lab.sh(node, f"ssh-keygen -y -f {KEY}").split()[:2])


def stored(mesh: Mesh, node: str) -> dict[str, str]:
    keystore = mesh.inventory.parent / mesh.inventory.name.replace(".mesh.yml", ".keys")
    return json.loads((keystore / f"{node}.json").read_text())


def login(mesh: Mesh, node: str, peer: str, key: str) -> str:
    """ssh from node to peer with `key` as node's login there, as the sync profiles do; output printable."""
    address = mesh.lab.lab.resolve(peer).address
    script = (
        f"runuser -u {MESH_USER} -- timeout 20 ssh -F none -i {key} -o IdentitiesOnly=yes -o BatchMode=yes"
        f" -o HostKeyAlias={peer} -o UserKnownHostsFile=/etc/replimesh/known_hosts"
        f" -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o ConnectTimeout=10"
        f" {MESH_USER}-{node}@{address} true </dev/null 2>&1 | LC_ALL=C tr -c '[:print:]\\n' '?'"
    )
    return mesh.lab.sh(node, script)


@dataclass
class Writer:
    """Writes a new file on one node after another and syncs that node's every edge at once, until told to
    stop: each round's runner report is kept."""

    mesh: Mesh
    stop: threading.Event = field(default_factory=threading.Event)
    files: dict[str, bytes] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        deadline = time.monotonic() + WRITER_MAX_S
        i = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            node = self.mesh.nodes[i % len(self.mesh.nodes)]
            rel = f"rotation/{i:04d}-{node}.bin"
            data = os.urandom(512 + 97 * i)
            try:
                self.mesh.write(node, rel, data)
                self.files[rel] = data
                out = self.mesh.lab.sh(
                    node,
                    f"runuser -u {MESH_USER} -- /usr/local/sbin/replimesh-sync --all-peers --json",
                    check=False,
                )
                self.rounds.append({"node": node, "at": time.monotonic(), **json.loads(out)})
            except (AssertionError, ValueError) as exc:  # reported by the test, never lost in the thread
                self.errors.append(f"round {i} on {node}: {exc}")
            i += 1


def test_key_rotation_keeps_every_edge_syncing(mesh: Mesh) -> None:
    before = {node: fingerprint(mesh, node) for node in mesh.nodes}
    old_public = public_key(mesh, "node1")
    # A copy of node1's old key, kept to show afterwards that its peers refuse it.
    mesh.lab.sh("node1", f"install -o {MESH_USER} -m 0600 {KEY} {HOME}/.ssh/old-key-copy")
    started_iso = iso_utc(time.time() - 1)

    writer = Writer(mesh)
    thread = threading.Thread(target=writer.run, daemon=True)
    began = time.monotonic()
    thread.start()
    try:
        wait_until(lambda: len(writer.rounds) >= 2, timeout=60)  # syncing already before the rotation
        rotation_start = time.monotonic()
        proc = mesh.playbook("rotate-keys.yml", timeout=600)
        rotation_s = time.monotonic() - rotation_start
        wait_until(lambda: any(r["at"] > rotation_start + rotation_s for r in writer.rounds), timeout=60)
    finally:
        writer.stop.set()
        thread.join(timeout=WRITER_MAX_S)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    during = [r for r in writer.rounds if rotation_start <= r["at"] <= rotation_start + rotation_s]
    print(
        f"\nrotation of {len(mesh.nodes)} nodes: {rotation_s:.1f} s; {len(writer.files)} files written, "
        f"{len(writer.rounds)} sync rounds ({len(during)} during the rotation)"
    )
    assert not writer.errors, writer.errors
    assert len(during) >= 3, f"only {len(during)} sync rounds ran during the rotation"

    # No round, before, during or after the switch, met a refused key or a failed edge.
    bad = [
        (r["node"], e["peer"], e["result"], e.get("error"))
        for r in writer.rounds
        for e in r["edges"]
        if e["result"] not in HARMLESS_KINDS or AUTH_ERROR.search(str(e.get("error") or ""))
    ]
    assert not bad, bad
    ok_during = sum(e["result"] == "ok" for r in during for e in r["edges"])
    assert ok_during >= 4 * len(during) // 2, f"{ok_during} edges ok in {len(during)} rounds during rotation"
    # Nor did any other run (cron) on any node: the runner's log since the writer started.
    for node in mesh.nodes:
        log = mesh.lab.sh(node, f"cat {LOG}")
        records = [line for line in log.splitlines() if line[:20] >= started_iso and " peer=" in line]
        failed = [line for line in records if not re.search(r" kind=(ok|conflict|busy|skipped) ", line)]
        assert not failed, f"{node}: {failed}"
        assert not AUTH_ERROR.search("\n".join(records)), node

    # Every file written during the rotation is on every node, byte for byte (one more round for the
    # files of the last rounds that another edge was busy with).
    expected = {f"./{rel}": sha(data) for rel, data in writer.files.items()}

    def arrived() -> bool:
        digests = {node: mesh.digest(node) for node in mesh.nodes}
        if all(d == expected for d in digests.values()):
            return True
        assert mesh.playbook("sync.yml").returncode == 0
        return False

    assert wait_until(arrived, timeout=120, interval=0), "files missing after the rotation"

    # New keys everywhere, recorded alone in the key store, each peer trusting exactly the new ones.
    after = {node: fingerprint(mesh, node) for node in mesh.nodes}
    assert all(after[n] != before[n] for n in mesh.nodes) and len(set(after.values())) == len(mesh.nodes)
    for node in mesh.nodes:
        record = stored(mesh, node)
        assert record["public_key"] == public_key(mesh, node) and "next_public_key" not in record, record
        keys = mesh.lab.sh(node, "cat /etc/ssh/authorized_keys/replimesh-* | grep -v '^#'")
        assert len(keys.splitlines()) == len(mesh.nodes) - 1 and old_public not in keys
        # (mux-*: the node's shared connections, opened since the switch, with its new key)
        assert mesh.lab.sh(node, f"ls -A {HOME}/.ssh | grep -v '^mux-' || true").split() in (
            ["id_ed25519", "id_ed25519.pub"],
            ["id_ed25519", "id_ed25519.pub", "old-key-copy"],
        )

    # node1's old key is refused by its peers; its new key gets the Unison server.
    refused = login(mesh, "node1", "node2", f"{HOME}/.ssh/old-key-copy")
    assert "Permission denied (publickey)" in refused, refused
    assert login(mesh, "node1", "node2", KEY).startswith("Unison"), "the new key should reach Unison"
    mesh.lab.sh("node1", f"rm -f {HOME}/.ssh/old-key-copy")
    print(f"rotation test: {time.monotonic() - began:.1f} s")


def test_rotation_refuses_before_any_change(mesh: Mesh) -> None:
    began = time.monotonic()
    keys = {node: fingerprint(mesh, node) for node in mesh.nodes}
    records = {node: stored(mesh, node) for node in mesh.nodes}

    unknown = mesh.playbook("rotate-keys.yml", "-e", "rotate_nodes=node2,node9")
    assert unknown.returncode != 0 and "Not in the mesh: node9" in unknown.stdout, unknown.stdout[-3000:]
    limited = mesh.playbook("rotate-keys.yml", "--limit", "node2")
    assert limited.returncode != 0 and "-e rotate_nodes=node2 instead of --limit" in limited.stdout

    # node3 is a peer of node1 and is down: nothing happens unless asked to go on without it.
    paused = "node3"
    mesh.lab.lab.fault("pause", paused)
    try:
        args = ("-e", "rotate_nodes=node1", "-e", "mesh_validate_timeout=5")
        down = mesh.playbook("rotate-keys.yml", *args)
        assert (
            down.returncode != 0 and f"{paused} did not answer over SSH; nothing was changed" in down.stdout
        )
        up = [node for node in mesh.nodes if node != paused]
        assert {node: fingerprint(mesh, node) for node in up} == {node: keys[node] for node in up}
        assert {node: stored(mesh, node) for node in mesh.nodes} == records
        assert "id_ed25519.next" not in mesh.lab.sh("node1", f"ls -A {HOME}/.ssh")

        anyway = mesh.playbook("rotate-keys.yml", *args, "-e", "rotate_allow_unreachable=true")
        assert anyway.returncode == 0, anyway.stdout[-5000:]
        assert f"Down, left out: {paused}." in anyway.stdout
        assert recap(anyway.stdout)["node1"]["changed"] > 0
    finally:
        mesh.lab.lab.fault("unpause", paused)
    assert fingerprint(mesh, "node1") != keys["node1"]
    # The node that was down still trusts node1's old key only: node1 is refused by it...
    assert "Permission denied (publickey)" in login(mesh, "node1", paused, KEY)
    # ...until bootstrap.yml, run on it once it is back, converges it; then the mesh syncs again.
    proc = mesh.playbook("bootstrap.yml", "--limit", paused)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert login(mesh, "node1", paused, KEY).startswith("Unison")
    mesh.write("node1", "after-rotation.txt", b"node1 after its rotation\n")
    assert mesh.playbook("sync.yml").returncode == 0
    assert wait_until(mesh.converged, timeout=30)
    print(f"\nrefusals and a down peer: {time.monotonic() - began:.1f} s")
