"""Faults on the real 5-node lab, each counted in bytes on the nodes: versions kept, a node killed mid
transfer, stale and live locks, a partition, three concurrent edits, a missing marker, a full disk."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import run_tool, wait_until
from tests.e2e.conftest import FOLDER, JAILS, MARKER, MESH_USER, Mesh, sha
from tests.e2e.faults import (
    RUNNER,
    InnerDisk,
    Timer,
    as_user,
    backup_hashes,
    conflict_copies,
    converge,
    edge_results,
    hashes_kept,
    partition,
    replace_file,
    restore_marker,
    sync_node,
    sync_round,
)
from tests.reliability import record

pytestmark = pytest.mark.lab
UNISON_DIR = "/var/lib/replimesh/unison"
STATE = "/var/lib/replimesh/state"
BIG = 256 << 20


def test_overwritten_and_deleted_files_are_kept_and_deletions_reach_every_node(mesh: Mesh) -> None:
    timer = Timer()
    old, gone, nested = b"version 1\n" * 100, b"deleted later\n", os.urandom(60_000)
    mesh.write("node1", "notes.txt", old)
    mesh.write("node1", "gone.txt", gone)
    mesh.write("node1", "dir/nested.bin", nested)
    converge(mesh)
    # One more round, so every edge's archive knows the files: an edit is then an update, not a
    # conflict with a copy that reached the other end over another edge.
    sync_round(mesh)
    new = b"version 2, longer\n" * 100
    replace_file(mesh, "node3", "notes.txt", new)
    mesh.lab.sh("node4", as_user(f"rm -r {FOLDER}/gone.txt {FOLDER}/dir"))
    rounds = converge(mesh)
    for node in mesh.nodes:
        assert mesh.digest(node) == {"./notes.txt": sha(new)}, node
    # Every node whose copy a sync replaced or deleted keeps the old bytes, outside the folder.
    for node in mesh.nodes:
        kept = backup_hashes(mesh, node)
        if node != "node3":
            assert sha(old) in kept, node
        if node != "node4":
            assert {sha(gone), sha(nested)} <= kept, node
    print(f"versions kept and deletions spread in {rounds} rounds, {timer.seconds} s")
    record(
        "versioning",
        "overwritten and deleted files kept in backups on every node",
        nodes=5,
        files=3,
        rounds=rounds,
        files_lost=0,
    )
    record("fault", "deletions propagate to every node", nodes=5, files_deleted=2, files_lost=0)


def test_a_node_killed_mid_transfer_never_shows_a_partial_file(mesh: Mesh) -> None:
    timer = Timer()
    mesh.lab.sh("node1", as_user(f"head -c {BIG} /dev/urandom > {FOLDER}/big.bin"))
    want = mesh.lab.sh("node1", f"sha256sum {FOLDER}/big.bin")[:64]
    # node2 pulls the file from node1 (every node only pulls), and node2 is the node killed.
    container = mesh.lab.lab.resolve("node2").container
    run = subprocess.Popen(
        ["docker", "exec", container, "runuser", "-u", MESH_USER, "--", RUNNER, "--json", "--peer", "node1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # The size under the final name (or -) and the bytes in Unison's temporary files.
    probe = (
        f"stat -c %s {FOLDER}/big.bin 2>/dev/null || echo -;"
        f" stat -c %s {FOLDER}/.unison.*.unison.tmp 2>/dev/null | awk '{{s+=$1}} END {{print s+0}}'"
    )
    seen: list[str] = []
    killed = False
    try:

        def moving() -> bool:
            final, temporary = mesh.lab.sh("node2", probe, check=False).split()
            seen.append(f"{final} {temporary}")
            # The final name may only ever hold the whole file.
            assert final in ("-", str(BIG)), f"partial big.bin on node2: {final} bytes"
            return int(temporary) >= 32 << 20

        if not wait_until(moving, timeout=120, interval=0.2):
            run.kill()
            out, err = run.communicate(timeout=30)
            log = mesh.lab.sh("node2", "tail -n 20 /var/log/replimesh/sync.log", check=False)
            raise AssertionError(
                f"no transfer seen: {seen[-3:]}; runner: {out[-1500:]!r} {err[-500:]!r}; {log}"
            )
        mesh.lab.lab.fault("kill", "node2")
        killed = True
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
        if killed:
            mesh.lab.lab.fault("start", "node2")
    assert b'"result": "ok"' not in out  # the pull died with its node: it never reported a success
    assert wait_until(lambda: mesh.lab.lab.exec("node2", ["true"]).returncode == 0, timeout=60)
    # After the crash: the old state or nothing under the final name, never a part.
    assert "./big.bin" not in mesh.digest("node2")
    assert wait_until(
        lambda: sync_node(mesh, "node2", "--peer", "node1")["edges"][0]["result"] == "ok",
        timeout=180,
        interval=2,
    )
    assert mesh.digest("node2")["./big.bin"] == want
    print(f"killed node2 mid 256 MiB transfer, {len(seen)} polls, resynced: {timer.seconds} s")
    record(
        "fault",
        "node killed mid 256 MiB transfer: no partial file, next sync completes",
        nodes=2,
        bytes=BIG,
        polls=len(seen),
        partial_files_seen=0,
        files_lost=0,
    )


def _lock_names(mesh: Mesh, node: str, peer: str) -> list[str]:
    return mesh.lab.sh(node, f"cd {UNISON_DIR}/{peer} && ls | grep '^lk' || true").split()


def _plant_lock(mesh: Mesh, node: str, peer: str, age_s: int = 0) -> str:
    """A lock file named as Unison names the pair's archive lock (what a run killed while committing its
    archives leaves): lk + the hash of the edge's archive, made `age_s` seconds ago."""
    archive = mesh.lab.sh(node, f"cd {UNISON_DIR}/{peer} && ls ar* | head -1").strip()
    assert archive.startswith("ar"), f"{node}: no archive for {peer}"
    lock = f"{UNISON_DIR}/{peer}/lk{archive[2:]}"
    mesh.lab.sh(node, as_user(f"echo 4242 > {lock} && touch -d @$(($(date +%s) - {age_s})) {lock}"))
    return lock


def test_locks_of_a_killed_run_are_recovered_and_a_live_run_is_respected(mesh: Mesh) -> None:
    timer = Timer()
    mesh.write("node1", "seed.txt", b"seed\n")
    converge(mesh)
    # A run killed mid transfer (the runner and its Unison, SIGKILL), then locks as a kill during the
    # archive commit leaves them on both ends of the edge.
    mesh.lab.sh("node1", as_user(f"head -c {64 << 20} /dev/urandom > {FOLDER}/mid.bin"))
    # node2 pulls it (every node only pulls); that pull is the run killed.
    puller = mesh.lab.lab.resolve("node2").container
    run = subprocess.Popen(
        ["docker", "exec", puller, "runuser", "-u", MESH_USER, "--", RUNNER, "--peer", "node1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(
            lambda: (
                mesh.lab.sh("node2", f"ls -a {FOLDER} | grep -c unison.tmp", check=False).strip()
                not in ("", "0")
            ),
            timeout=60,
            interval=0.2,
        )
        pids = mesh.lab.sh(
            "node2", "ps -eo pid=,args= | awk '/replimesh-sync|unison node1--shared/ {print $1}'"
        )
        mesh.lab.sh("node2", f"kill -9 {' '.join(pids.split())} 2>/dev/null; true")
    finally:
        run.wait(timeout=60)
    # The locks as that run left them, found by the rounds that follow minutes later. A peer pulling at the
    # moment a node checks (Unison servers of the edge are alive then) started after the lock was made, so
    # cannot be its holder: the lock goes all the same.
    planted = [_plant_lock(mesh, "node1", "node2", 600), _plant_lock(mesh, "node2", "node1", 600)]
    assert _lock_names(mesh, "node1", "node2") and _lock_names(mesh, "node2", "node1")

    rounds = converge(mesh, rounds=3)
    left = {n: _lock_names(mesh, n, p) for n, p in (("node1", "node2"), ("node2", "node1"))}
    assert not any(left.values()), f"{left}: {mesh.lab.sh('node1', 'tail -n 30 /var/log/replimesh/sync.log')}"
    logs = mesh.lab.sh("node1", "cat /var/log/replimesh/sync.log") + mesh.lab.sh(
        "node2", "cat /var/log/replimesh/sync.log"
    )
    assert "removed stale Unison archive locks" in logs
    assert mesh.digest("node2")["./mid.bin"] == mesh.digest("node1")["./mid.bin"]

    # A live Unison of the edge (here a stand-in process named unison, working in the edge's directory)
    # holding the lock it made after it started: the lock stays, the edge reports busy, the others sync.
    container = mesh.lab.lab.resolve("node1").container
    mesh.lab.sh("node1", "cp /bin/sleep /tmp/unison")
    holder = f"env UNISON={UNISON_DIR}/node2 /tmp/unison 60"
    live = subprocess.Popen(
        ["docker", "exec", container, "runuser", "-u", MESH_USER, "--", "sh", "-c", holder]
    )
    try:
        assert wait_until(lambda: "/tmp/unison 60" in mesh.lab.sh("node1", "ps -eo args"), timeout=10)
        lock = _plant_lock(mesh, "node1", "node2")
        report = sync_node(mesh, "node1", "--all-peers")
    finally:
        live.kill()
        mesh.lab.sh("node1", "kill $(pgrep -f '^/tmp/unison 60') 2>/dev/null; true")
        live.wait(timeout=10)
    results = {e["peer"]: e["result"] for e in report["edges"]}
    assert results.pop("node2") == "busy" and set(results.values()) == {"ok"}, report
    assert mesh.lab.sh("node1", f"cat {lock}").strip() == "4242"
    mesh.lab.sh("node1", f"rm -f {lock} /tmp/unison")
    print(f"stale locks recovered within {rounds} rounds; live lock respected: {timer.seconds} s")
    record(
        "fault",
        "stale runner and Unison archive locks of a killed run recovered",
        nodes=5,
        locks_planted=len(planted),
        rounds=rounds,
        files_lost=0,
    )
    record("fault", "archive lock of a live Unison run respected (edge busy)", nodes=5, files_lost=0)


def test_a_partition_heals_with_every_version_kept_and_the_conflict_reported(mesh: Mesh) -> None:
    timer = Timer()
    base = b"before the partition\n"
    mesh.write("node1", "shared.txt", base)
    converge(mesh)
    side_a, side_b = ["node1", "node2"], ["node3", "node4", "node5"]
    mine, theirs = b"edited on side A\n", b"edited on side B, later and longer\n"
    with partition(mesh, side_a, side_b):
        replace_file(mesh, "node1", "shared.txt", mine)
        # Side B's edit is the newer one (prefer = newer), by more than Unison's time tolerance.
        mesh.lab.sh("node1", f"touch -m -d '1 minute ago' {FOLDER}/shared.txt")
        mesh.write("node2", "only-a.txt", b"side A only\n")
        mesh.write("node5", "only-b.txt", b"side B only\n")
        replace_file(mesh, "node4", "shared.txt", theirs)
        cut = edge_results(sync_round(mesh))
        assert cut["node1<->node3"][0] == "unreachable" and cut["node1<->node2"][0] == "ok", cut
    reports = sync_round(mesh)
    code_and_report = run_tool("meshctl", "status", "-i", str(mesh.inventory), "--json", timeout=300)
    status = json.loads(code_and_report.stdout)
    rounds = 1 + converge(mesh)
    conflicts = [e for r in reports.values() for e in r["edges"] if e["result"] == "conflict"]
    assert conflicts, reports
    assert status["conflicts"] >= 1 and any(
        "shared/shared.txt" in row["conflicts"] for row in status["edges"]
    )
    for node in mesh.nodes:
        digest = mesh.digest(node)
        assert digest["./shared.txt"] == sha(theirs) and digest["./only-a.txt"] and digest["./only-b.txt"]
        assert sha(mine) in conflict_copies(digest, "shared.txt").values(), (node, digest)
    assert {sha(base), sha(mine), sha(theirs)} <= hashes_kept(mesh)
    print(f"partition 2|3, healed in {rounds} rounds: {timer.seconds} s")
    record(
        "fault",
        "partition node1+node2 | node3-5, same file edited on both sides, healed",
        nodes=5,
        files=3,
        versions_kept=3,
        conflicts_reported=len(conflicts),
        files_lost=0,
    )


def test_one_file_edited_on_three_nodes_at_once_keeps_all_three(mesh: Mesh) -> None:
    timer = Timer()
    mesh.write("node1", "same.txt", b"original\n")
    converge(mesh)
    edits = {
        n: f"edited on {n}: {os.urandom(8).hex()}\n".encode() * (i + 1)
        for i, n in enumerate(("node1", "node3", "node5"))
    }
    for age, (node, data) in enumerate(edits.items()):
        replace_file(mesh, node, "same.txt", data)
        # Distinct modification times, so `prefer = newer` always has a winner.
        mesh.lab.sh(node, f"touch -m -d '{3 - age} minutes ago' {FOLDER}/same.txt")
    rounds = converge(mesh, rounds=5)
    for node in mesh.nodes:
        assert {sha(d) for d in edits.values()} <= set(mesh.digest(node).values()), node
    print(f"three concurrent edits kept in {rounds} rounds: {timer.seconds} s")
    record(
        "fault",
        "one file edited on three nodes at once: all three kept",
        nodes=5,
        versions_kept=3,
        rounds=rounds,
        files_lost=0,
    )


def test_a_folder_without_its_marker_refuses_to_sync_and_deletes_nothing_elsewhere(mesh: Mesh) -> None:
    timer = Timer()
    files = {f"./doc{i}.txt": os.urandom(1000) for i in range(5)}
    for rel, data in files.items():
        mesh.write("node1", rel[2:], data)
    converge(mesh)
    want = {rel: sha(data) for rel, data in files.items()}
    # An unmounted disk: the mount point is empty but for a file an application wrote there since.
    mesh.lab.sh("node3", f"find {FOLDER} -mindepth 1 -delete")
    mesh.write("node3", "stray.log", b"written into the bare mount point\n")
    try:
        results = edge_results(sync_round(mesh))
        results |= edge_results(sync_round(mesh))
    finally:
        restore_marker(mesh, "node3")
    mine = {edge: r for edge, r in results.items() if "node3" in edge.split("<->")}
    assert mine and all(kind == "marker" for kind, _ in mine.values()), mine
    assert any(error and MARKER in error for _, error in mine.values()), mine
    assert "refusing to sync" in mesh.lab.sh("node3", "cat /var/log/replimesh/sync.log")
    for node in mesh.nodes:
        if node != "node3":
            assert mesh.digest(node) == want, node
    print(f"missing marker refused on node3, nothing deleted elsewhere: {timer.seconds} s")
    record(
        "fault",
        "folder emptied/unmounted (marker missing): refused, no deletion spread",
        nodes=5,
        files=len(files),
        files_lost=0,
    )


def test_a_full_disk_is_a_clear_error_on_its_edges_and_harms_no_other_node(mesh: Mesh) -> None:
    timer = Timer()
    small = "/mnt/rm-small"
    jails = " ".join(f"{JAILS}/{MESH_USER}-{peer}{FOLDER}" for peer in mesh.nodes if peer != "node4")
    # A 4 MiB file system in place of node4's folder, for its runs and each peer's jailed server alike.
    mesh.lab.sh(
        "node4",
        f"mkdir -p {small} && mount -t tmpfs -o size=4m,mode=0775 tmpfs {small} && cp -a {FOLDER}/. {small}/"
        f" && chown {MESH_USER}:{MESH_USER} {small}"
        f" && mount --bind {small} {FOLDER} && for j in {jails}; do mount --bind {small} $j; done",
    )
    try:
        mesh.lab.sh("node1", as_user(f"head -c {8 << 20} /dev/urandom > {FOLDER}/too-big.bin"))
        big = mesh.digest("node1")["./too-big.bin"]
        mesh.write("node1", "small.txt", b"fits\n")
        results = edge_results(sync_round(mesh)) | edge_results(sync_round(mesh))
        others = [n for n in mesh.nodes if n != "node4"]
        for node in others:
            assert mesh.digest(node) == {"./too-big.bin": big, "./small.txt": sha(b"fits\n")}, node
        assert "./too-big.bin" not in mesh.digest("node4")
        full = {e: r for e, r in results.items() if "node4" in e.split("<->") and r[0] != "ok"}
        assert full and any(err and "No space left on device" in err for _, err in full.values()), results
        assert all(kind == "diskfull" for kind, _ in full.values()), full
        assert all(r[0] in ("ok", "conflict") for e, r in results.items() if "node4" not in e.split("<->")), (
            results
        )
        metrics = f"cat {STATE}/metrics/replimesh.prom"
        assert 'replimesh_edge_disk_full{peer="node1"} 1' in mesh.lab.sh("node4", metrics)
        # Room again: the next round brings the file, and says so.
        mesh.lab.sh("node4", f"mount -o remount,size=64m {small}")
        sync_node(mesh, "node4")
        assert mesh.digest("node4") == mesh.digest("node1")
        assert 'replimesh_edge_disk_full{peer="node1"} 0' in mesh.lab.sh("node4", metrics)
    finally:
        mesh.lab.sh(
            "node4",
            f"for j in {jails}; do umount $j; done; umount {FOLDER}; umount {small}; rmdir {small}",
            check=False,
        )
    print(f"full disk on node4: clear error, others synced: {timer.seconds} s")
    record(
        "fault",
        "full disk on one node: diskfull on its edges, others unaffected, resumed once room is back",
        nodes=5,
        bytes=8 << 20,
        files_lost=0,
    )


def test_a_disk_inside_a_folder_that_goes_away_deletes_nothing_anywhere(mesh: Mesh) -> None:
    """node1 has a disk of its own at FOLDER/photos. Unguarded, node1 refuses the folder; bootstrap.yml
    guards it (its own marker, listed in the folder's); then the disk is unmounted, on the host and in the
    jails: node1 refuses its own runs, its jails serve no pull, and no node loses a file. Back, node1 syncs
    again."""
    timer = Timer()
    with InnerDisk(mesh, "node1") as disk:
        unguarded = sync_node(mesh, "node1")
        errors = [f.get("error") or "" for edge in unguarded["edges"] for f in edge["folders"]]
        assert errors and all("without a guard" in error for error in errors), unguarded
        disk.guard()
        files = {f"photos/p{i}.jpg": os.urandom(3000) for i in range(6)}
        files["top.txt"] = b"on the folder's own disk\n"
        for rel, data in files.items():
            mesh.write("node1", rel, data)
        want = {f"./{rel}": sha(data) for rel, data in files.items()}
        converge(mesh)
        sync_round(mesh)  # every edge's archive knows the files
        assert all(mesh.digest(node) == want for node in mesh.nodes)

        disk.unmount()
        results = edge_results(sync_round(mesh)) | edge_results(sync_round(mesh))
        for node in mesh.nodes[1:]:
            assert mesh.digest(node) == want, node  # nothing deleted anywhere
        assert mesh.digest("node1") == {"./top.txt": sha(files["top.txt"])}  # the disk is away, not deleted
        mine = {edge: r for edge, r in results.items() if "node1" in edge.split("<->")}
        assert mine and all(kind in ("marker", "failed") for kind, _ in mine.values()), mine
        assert "is not mounted" in mesh.lab.sh("node1", "cat /var/log/replimesh/sync.log")
        assert "serving no pull" in mesh.lab.sh("node2", "cat /var/log/replimesh/sync.log")

        disk.mount()  # back (the jails get it again from the next bootstrap.yml, or a reboot)
        later = b"written while the disk was back\n"
        mesh.write("node2", "photos/later.txt", later)
        sync_node(mesh, "node1")
        assert mesh.digest("node1") == want | {"./photos/later.txt": sha(later)}
    print(f"a disk inside a folder went away; nothing deleted anywhere: {timer.seconds} s")
    record(
        "fault",
        "a disk mounted inside a folder unmounted (host and jails), cron mode: refused, no deletion",
        nodes=5,
        files=len(files),
        files_lost=0,
    )
