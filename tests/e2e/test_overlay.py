"""An 8-node overlay (degree 2) in watch mode, on its own lab: a file written on one node reaches every
node although most are not its peers (each node forwards what arrives to its other peers), and with one
of the writer's peers frozen (docker pause) the seven others still converge. No cron job is installed,
so only the watchers can have carried the files. One bootstrap; the lab is removed at the end."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_config import parse_mesh
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_topology import host_topology
from replimesh.lab.lab import Lab
from tests.conftest import SessionLab, run_tool, slot_lab_config, wait_until
from tests.e2e.conftest import Mesh, sha

pytestmark = pytest.mark.lab

NODES = 8
DEGREE = 2
OVERLAY_LAB = slot_lab_config("ovl", 4)
DELIVERY_TIMEOUT_S = 60.0


def log(message: str) -> None:
    print(f"[overlay] {message}", file=sys.stderr)


def peers_of(inventory: Path) -> dict[str, list[str]]:
    """Each node's peers, as the inventory plugin computes them (the same core code)."""
    mesh = parse_mesh(yaml.safe_load(inventory.read_text()))
    return {node: [peer["name"] for peer in peers] for node, peers in host_topology(mesh).items()}


@pytest.fixture(scope="module")
def overlay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    started = time.monotonic()
    lab = Lab(
        tmp_path_factory.mktemp("overlay"), OVERLAY_LAB, log=lambda m: print(f"[lab] {m}", file=sys.stderr)
    )
    try:
        hosts = lab.up(NODES)
        spec = yaml.safe_load(lab.inventory_path.read_text())
        spec["topology"] = {"kind": "overlay", "degree": DEGREE}
        spec["sync"] = {**spec.get("sync", {}), "mode": "watch"}
        inventory = lab.inventory_path.with_name("overlay.mesh.yml")
        inventory.write_text(yaml.safe_dump(spec, sort_keys=False))
        # Only the watchers may deliver: no cron job (a role variable, so -e, not the mesh file's vars).
        no_cron = ("-e", '{"mesh_sync_cron_enabled": false}')
        proc = run_tool("ansible-playbook", "-i", str(inventory), "bootstrap.yml", *no_cron, timeout=1200)
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        log(f"{NODES}-node overlay lab up and bootstrapped in {time.monotonic() - started:.1f} s")
        yield Mesh(SessionLab(lab), inventory, [h.name for h in hosts], proc.stdout)
    finally:
        lab.down()
        log(f"overlay module took {time.monotonic() - started:.1f} s in all")


def converge(mesh: Mesh, nodes: list[str], rel: str, data: bytes) -> float:
    """Seconds from just before the write on nodes[0] until the file is byte-identical on all `nodes`."""
    written = float(mesh.lab.sh(nodes[0], "date +%s.%N"))
    mesh.write(nodes[0], rel, data)
    want = sha(data)

    def everywhere() -> bool:
        return all(mesh.digest(n).get(f"./{rel}") == want for n in nodes)

    assert wait_until(everywhere, DELIVERY_TIMEOUT_S), {n: mesh.digest(n).get(f"./{rel}") for n in nodes}
    arrived = [float(mesh.lab.sh(n, f"stat -c %.9Z /srv/replimesh/shared/{rel}")) for n in nodes]
    return max(arrived) - written


def test_a_file_reaches_every_node_of_a_sparse_overlay(overlay: Mesh) -> None:
    peers = peers_of(overlay.inventory)
    assert all(len(p) < NODES - 1 for p in peers.values()), peers  # really sparse
    for node in overlay.nodes:
        assert "replimesh-sync" not in overlay.lab.sh(node, "cat /etc/cron.d/replimesh 2>/dev/null || true")
    seconds = converge(overlay, overlay.nodes, "hops.txt", b"over several hops\n" * 60)
    log(f"a 1 KiB file from node1 was on all {NODES} overlay nodes after {seconds:.2f} s")


def test_a_paused_node_does_not_stop_the_others(overlay: Mesh) -> None:
    frozen = peers_of(overlay.inventory)["node1"][0]  # one of the writer's own peers
    others = [n for n in overlay.nodes if n != frozen]
    overlay.lab.lab.fault("pause", frozen)
    try:
        seconds = converge(overlay, others, "around.bin", bytes(range(256)) * 4)
        log(f"with {frozen} paused, a file from node1 was on the {len(others)} others after {seconds:.2f} s")
    finally:
        overlay.lab.lab.fault("unpause", frozen)
