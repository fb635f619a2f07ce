"""Watch mode on the session's 5-node mesh: a file written on one node is on every node within seconds
with no cron round and no ad-hoc run (the cron job is removed for the test); a watcher killed by PID is
back within seconds and still delivers; status and the metrics textfile show the watchers alive. The
module puts the mesh back in cron mode, without watchers, for the other tests."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import run_tool, wait_until
from tests.e2e.conftest import FOLDER, MARKER, Mesh, sha
from tests.e2e.faults import InnerDisk, as_user, backup_hashes

pytestmark = pytest.mark.lab

STATE = "/var/lib/replimesh/state"
RECORD = f"{STATE}/watch/watcher.json"
SYNC_LOG = "/var/log/replimesh/sync.log"
# Only the watcher's and the cron job's tasks of the role: the rest of the mesh stays as bootstrapped.
ROLE_TAGS = ("--tags", "mesh_sync_watch,mesh_sync_cron")
DELIVERY_TIMEOUT_S = 30.0
RESTART_TIMEOUT_S = 15.0


def log(message: str) -> None:
    print(f"[watch] {message}", file=sys.stderr)


def switch(mesh: Mesh, *extra: str) -> None:
    started = time.monotonic()
    proc = mesh.playbook("bootstrap.yml", *ROLE_TAGS, *extra, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    log(f"bootstrap.yml {' '.join(extra) or '(cron mode)'}: {time.monotonic() - started:.1f} s")


@pytest.fixture(scope="module")
def watch_mode(mesh_session: Mesh) -> Iterator[dict[str, bool]]:
    switched = {"on": False}
    yield switched
    if switched["on"]:
        switch(mesh_session)  # cron mode again: watchers stopped and removed, the cron job back
        for node in mesh_session.nodes:
            assert not watcher_pids(mesh_session, node), f"{node}: a watcher still runs"
            assert mesh_session.rounds_on(node), f"{node}: its scheduled rounds are not back"


@pytest.fixture
def watching(mesh: Mesh, watch_mode: dict[str, bool]) -> Mesh:
    """The mesh, reset, in watch mode, with the cron job removed so that only the watchers can sync."""
    if not watch_mode["on"]:
        watch_mode["on"] = True
        switch(mesh, "-e", "mesh_sync_mode=watch", "-e", "mesh_sync_cron_enabled=false")
    return mesh


def watcher_pids(mesh: Mesh, node: str) -> list[int]:
    out = mesh.lab.sh(node, "ps -eo pid=,args= | grep '[r]eplimesh-watch' | grep -v -- --supervise || true")
    return [int(line.split()[0]) for line in out.splitlines() if line.strip()]


def record(mesh: Mesh, node: str) -> dict:
    return json.loads(mesh.lab.sh(node, f"cat {RECORD} 2>/dev/null || echo '{{}}'"))


def write_and_time(mesh: Mesh, node: str, rel: str, data: bytes) -> float:
    """Write on `node`; seconds until the file is byte-identical on every node, from the nodes' own clock
    (one kernel): the file's change time on each node minus the time just before the write."""
    written = float(mesh.lab.sh(node, "date +%s.%N"))
    mesh.write(node, rel, data)
    want = sha(data)
    assert wait_until(
        lambda: all(mesh.digest(n).get(f"./{rel}") == want for n in mesh.nodes), DELIVERY_TIMEOUT_S
    ), {n: mesh.digest(n) for n in mesh.nodes}
    arrived = [float(mesh.lab.sh(n, f"stat -c %.9Z {FOLDER}/{rel}")) for n in mesh.nodes]
    return max(arrived) - written


def test_watch_mode_delivers_without_rounds_and_a_killed_watcher_comes_back(watching: Mesh) -> None:
    mesh = watching
    for node in mesh.nodes:
        assert not mesh.rounds_on(node), f"{node}: scheduled rounds are on"
        assert len(watcher_pids(mesh, node)) == 1, f"{node}: not exactly one watcher"
    # Where systemd runs, the watcher is its unit (elsewhere a supervisor that cron keeps alive).
    for node in mesh.nodes:
        if mesh.lab.lab.init_of(node) == "systemd":
            assert mesh.lab.sh(node, "systemctl is-active replimesh-watch").strip() == "active", node

    first = write_and_time(mesh, "node1", "watched/first.txt", b"written on node1\n" * 64)
    log(f"a 1 KiB file written on node1 was on all {len(mesh.nodes)} nodes after {first:.2f} s")

    # Kill node3's watcher by PID: its supervisor starts a new one within seconds.
    (old,) = watcher_pids(mesh, "node3")
    killed = time.monotonic()
    mesh.lab.sh("node3", f"kill -9 {old}")

    def restarted() -> bool:
        pids = watcher_pids(mesh, "node3")
        return len(pids) == 1 and pids[0] != old and record(mesh, "node3").get("pid") == pids[0]

    assert wait_until(restarted, RESTART_TIMEOUT_S, interval=0.2), watcher_pids(mesh, "node3")
    log(f"node3's watcher was killed and back after {time.monotonic() - killed:.1f} s")
    # The same on the systemd host, where the unit's Restart=always brings it back.
    (old5,) = watcher_pids(mesh, "node5")
    mesh.lab.sh("node5", f"kill -9 {old5}")
    assert wait_until(
        lambda: (pids := watcher_pids(mesh, "node5")) and pids[0] != old5 and len(pids) == 1,
        RESTART_TIMEOUT_S,
        interval=0.2,
    ), watcher_pids(mesh, "node5")
    second = write_and_time(mesh, "node3", "watched/second.bin", bytes(range(256)) * 16)
    log(f"after the restart a file written on node3 was on all nodes after {second:.2f} s")
    assert first < DELIVERY_TIMEOUT_S and second < DELIVERY_TIMEOUT_S

    # What delivered the files: the watchers (their records: node1 told every peer, each pulled), never a
    # cron job (none is installed).
    assert record(mesh, "node1")["notices_sent"] >= len(mesh.nodes) - 1
    # (node3's watcher is a new one since its restart, and node3 wrote the second file itself.)
    assert all(record(mesh, node)["syncs"] >= 1 for node in mesh.nodes if node != "node3")
    metrics = mesh.lab.sh("node3", f"cat {STATE}/metrics/replimesh.prom")
    assert "\nreplimesh_watcher_up 1\n" in metrics

    proc = run_tool("meshctl", "status", "-i", str(mesh.inventory), "--json", timeout=600)
    report = json.loads(proc.stdout)
    assert {row["node"]: row.get("watcher") for row in report["nodes"]} == dict.fromkeys(mesh.nodes, "alive")


def test_a_file_edited_right_after_it_arrived_is_an_update_everywhere_not_a_conflict(watching: Mesh) -> None:
    """A file made on one node and edited on another as soon as it is there: the pair of nodes that had
    only ever received it (say node3 and node5) recorded it in their archive when it arrived (settling),
    so the edit replaces it on every node; without that, the others kept a needless conflict copy of
    the first version (seen on every try on a 4-node lab)."""
    mesh = watching
    for maker, editor in (("node1", "node2"), ("node4", "node3")):
        rel = f"edited/by-{editor}.txt"
        first, second = f"made on {maker}\n".encode(), f"then edited on {editor}\n".encode()
        write_and_time(mesh, maker, rel, first)
        took = write_and_time(mesh, editor, rel, second)
        log(
            f"a file made on {maker}, edited on {editor} as soon as it arrived: everywhere after {took:.2f} s"
        )
        copies = {
            n: [p for p in mesh.digest(n) if p.startswith("./edited/") and "conflict" in p]
            for n in mesh.nodes
        }
        assert not any(copies.values()), copies
    # Nor was it a conflict to any pull (the edges' records, as meshctl status reads them).
    proc = run_tool("meshctl", "status", "-i", str(mesh.inventory), "--json", timeout=600)
    edges = json.loads(proc.stdout)["edges"]
    assert edges and not [e for e in edges if any("edited/" in path for path in e["conflicts"])], edges


def test_a_large_file_spreads_as_a_swarm_each_node_pulling_from_one_that_has_it(watching: Mesh) -> None:
    """34 MiB (above mesh_sync_watch_swarm_min_mib) written on node2: node2 tells one peer at a time, the
    first of them tells the next, and every node ends with the same bytes."""
    mesh = watching
    script = f"head -c 34M /dev/urandom > {FOLDER}/big.iso.tmp && mv {FOLDER}/big.iso.tmp {FOLDER}/big.iso"
    mesh.lab.sh("node2", as_user(script))
    want = mesh.lab.sh("node2", f"sha256sum {FOLDER}/big.iso").split()[0]
    started = time.monotonic()
    assert wait_until(
        lambda: all(mesh.digest(n).get("./big.iso") == want for n in mesh.nodes), 4 * DELIVERY_TIMEOUT_S
    ), {n: mesh.digest(n).get("./big.iso") for n in mesh.nodes}
    took = time.monotonic() - started
    log(f"34 MiB written on node2 was on all {len(mesh.nodes)} nodes after {took:.1f} s")
    # The binomial split of node2's peers (node1, node3, node4, node5): node1 with node3, then node4, node5.
    # Each watcher records its relay once every node it told has answered.
    assert wait_until(
        lambda: "last_relay" in record(mesh, "node2") and "last_relay" in record(mesh, "node1"), 30
    )
    origin = record(mesh, "node2")["last_relay"]
    assert origin["origin"] == "node2" and origin["told"] == ["node1", "node4", "node5"], origin
    relayed = record(mesh, "node1")["last_relay"]
    assert relayed["id"] == origin["id"] and relayed["told"] == ["node3"], relayed


def test_deleting_the_last_files_of_a_folder_reaches_every_node_and_keeps_them(watching: Mesh) -> None:
    """A user who empties a folder (only the marker left) on one node: the watcher's runs delete the files
    on every node, and every node that lost a copy keeps it in its backups."""
    mesh = watching
    files = {"report.txt": b"the last report\n" * 32, "old/data.bin": bytes(range(256)) * 8}
    for rel, data in files.items():
        mesh.write("node2", rel, data)
    want = {f"./{rel}": sha(data) for rel, data in files.items()}
    assert wait_until(lambda: all(mesh.digest(n) == want for n in mesh.nodes), DELIVERY_TIMEOUT_S), {
        n: mesh.digest(n) for n in mesh.nodes
    }

    logged = {node: int(mesh.lab.sh(node, f"wc -l < {SYNC_LOG}")) for node in mesh.nodes}
    started = time.monotonic()
    mesh.lab.sh("node2", as_user(f"rm -r {FOLDER}/report.txt {FOLDER}/old"))
    left = f"find {FOLDER} -mindepth 1 ! -name {MARKER}"

    def since(node: str) -> str:
        return mesh.lab.sh(node, f"tail -n +{logged[node] + 1} {SYNC_LOG}")

    gone = wait_until(lambda: not any(mesh.lab.sh(n, left).strip() for n in mesh.nodes), DELIVERY_TIMEOUT_S)
    assert gone, ({n: mesh.lab.sh(n, left) for n in mesh.nodes}, since("node2"))
    log(f"the last files deleted on node2 were gone from all nodes after {time.monotonic() - started:.1f} s")
    for node in mesh.nodes:
        assert mesh.lab.sh(node, f"test -f {FOLDER}/{MARKER} && echo yes").strip() == "yes", node
        if node != "node2":  # node2's copies were deleted by its user, not by a sync
            assert set(want.values()) <= backup_hashes(mesh, node), node

    # The peers' watchers pulled it (their pulls from node2 say so), and none of those pulls was refused
    # (Unison's big-deletion check, or the brake: two deletions are far below it).
    peers = [n for n in mesh.nodes if n != "node2"]

    def pulled() -> bool:
        return all(
            json.loads(mesh.lab.sh(p, f"cat {STATE}/status/node2.json"))["result"] == "ok" for p in peers
        )

    assert wait_until(pulled, RESTART_TIMEOUT_S), {
        p: mesh.lab.sh(p, f"cat {STATE}/status/node2.json") for p in peers
    }
    for peer in peers:
        runs = since(peer)
        assert "peer=node2" in runs and "kind=failed" not in runs and "emptied" not in runs, (peer, runs)
        assert "kind=brake" not in runs, (peer, runs)


def test_a_disk_inside_a_folder_unmounted_in_watch_mode_deletes_nothing(watching: Mesh) -> None:
    """The unmount raises IN_UNMOUNT on node1's watcher: no change to announce; node1 refuses the folder
    and serves no pull while the disk is away, the others keep every file and go on syncing."""
    mesh = watching
    with InnerDisk(mesh, "node1", "-e", "mesh_sync_mode=watch", "-e", "mesh_sync_cron_enabled=false") as disk:
        disk.guard()
        files = {f"photos/p{i}.jpg": bytes([i]) * 3000 for i in range(4)}
        for rel, data in files.items():
            mesh.write("node1", rel, data)
        want = {f"./{rel}": sha(data) for rel, data in files.items()}
        assert wait_until(lambda: all(mesh.digest(n) == want for n in mesh.nodes), DELIVERY_TIMEOUT_S), {
            n: mesh.digest(n) for n in mesh.nodes
        }

        disk.unmount()
        assert wait_until(lambda: "disks inside it now none" in mesh.lab.sh("node1", f"cat {SYNC_LOG}"), 20)
        # Activity elsewhere: node2's change reaches every other node, and takes nothing with it.
        after = b"written on node2 while node1's disk is away\n"
        mesh.write("node2", "after.txt", after)
        others = [n for n in mesh.nodes if n != "node1"]
        with_after = want | {"./after.txt": sha(after)}
        assert wait_until(lambda: all(mesh.digest(n) == with_after for n in others), DELIVERY_TIMEOUT_S), {
            n: mesh.digest(n) for n in others
        }
        assert "./after.txt" not in mesh.digest("node1")  # node1 holds the folder until its disk is back
        assert "is not mounted" in mesh.lab.sh("node1", f"cat {SYNC_LOG}")

        disk.mount()  # back: node1's watcher sees the mount and announces the folder whole
        assert wait_until(
            lambda: "disks inside it now ['photos']" in mesh.lab.sh("node1", f"cat {SYNC_LOG}"), 20
        )
        for node in others:
            assert mesh.digest(node) == with_after, node
    log("a disk inside a folder unmounted in watch mode: nothing deleted on any node")
