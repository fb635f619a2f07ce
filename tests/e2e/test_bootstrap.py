"""bootstrap.yml and sync.yml on a real 5-node lab: convergence, idempotence, a dead node, locks, cron.

What a peer's key can and cannot do (confinement) is in test_security.py.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time

import pytest

from tests.conftest import run_tool, wait_until
from tests.e2e.conftest import FOLDER, MESH_USER, Mesh, sha
from tests.reliability import record

pytestmark = pytest.mark.lab


def test_file_from_one_node_reaches_all_after_one_sync(mesh: Mesh) -> None:
    data = b"hello from node1\n" * 100
    mesh.write("node1", "greeting.txt", data)
    proc = mesh.playbook("sync.yml")
    assert proc.returncode == 0, proc.stdout[-4000:]
    for node in mesh.nodes:
        assert mesh.digest(node) == {"./greeting.txt": sha(data)}, node
    # Every node pulled from each of its 4 peers: both directions of each of the 10 edges, 20 pulls.
    assert "edges synced: 20 of 20" in proc.stdout
    mesh.verify()


def test_files_written_everywhere_at_once_converge_after_one_sync(mesh: Mesh) -> None:
    expected = {}
    for node in mesh.nodes:
        data = f"written on {node}\n".encode() * 50
        mesh.write(node, f"from-{node}/data.bin", data)
        expected[f"./from-{node}/data.bin"] = sha(data)
    proc = mesh.playbook("sync.yml")
    assert proc.returncode == 0, proc.stdout[-4000:]
    for node in mesh.nodes:
        assert mesh.digest(node) == expected, node
    mesh.verify()
    owners = mesh.lab.sh("node3", f"stat -c '%U %a' {FOLDER}/from-node1/data.bin").split()
    assert owners == [MESH_USER, "644"]


def test_paused_node_blocks_nobody(mesh: Mesh) -> None:
    data = b"while node3 sleeps\n"
    mesh.write("node1", "during-pause.txt", data)
    mesh.lab.lab.fault("pause", "node3")
    try:
        started = time.monotonic()
        proc = mesh.playbook("sync.yml", timeout=120)
        elapsed = time.monotonic() - started
    finally:
        mesh.lab.lab.fault("unpause", "node3")
    print(f"sync.yml with node3 paused: {elapsed:.1f} s")
    assert elapsed < 60, f"sync.yml took {elapsed:.0f}s with node3 paused"
    assert proc.returncode != 0, "a round with an unreachable node must not report success"
    assert re.search(r"unreachable node3", proc.stdout), proc.stdout[-3000:]
    # Every other node pulls from node3 too: each of those pulls failed fast as unreachable, unless the
    # node's scheduled round happened to be pulling from node3 then (the edge is busy: not pulled twice).
    for peer in ("node1", "node2", "node4", "node5"):
        pattern = rf"(failed\s+{peer} <- node3: unreachable|busy\s+{peer} <- node3 )"
        assert re.search(pattern, proc.stdout), peer
    healthy = ["node1", "node2", "node4", "node5"]
    for node in healthy:
        assert mesh.digest(node) == {"./during-pause.txt": sha(data)}, node


def test_runner_never_runs_one_edge_twice_at_once(mesh: Mesh) -> None:
    peers = [p["name"] for p in json.loads(mesh.lab.sh("node1", "cat /etc/replimesh/mesh.json"))["peers"]]
    held = peers[0]
    # Hold one edge's lock as a live run would, then start a run: that edge is busy, the others sync.
    holder = subprocess.Popen(
        ["docker", "exec", mesh.lab.lab.resolve("node1").container, "runuser", "-u", MESH_USER, "--",
         "flock", f"/var/lib/replimesh/state/locks/{held}.lock", "sleep", "30"],
    )  # fmt: skip
    try:
        assert wait_until(lambda: "sleep 30" in mesh.lab.sh("node1", "ps -eo args"), timeout=10)
        out = mesh.lab.sh("node1", f"runuser -u {MESH_USER} -- replimesh-sync --json --all-peers")
    finally:
        holder.kill()
        holder.wait(timeout=10)
    results = {e["peer"]: e["result"] for e in json.loads(out)["edges"]}
    assert results[held] == "busy"
    assert all(r == "ok" for p, r in results.items() if p != held), results
    # Two runs started together: every edge ran in at most one of them.
    mesh.lab.sh("node1", f"runuser -u {MESH_USER} -- sh -c 'head -c 64M /dev/urandom > {FOLDER}/big.bin'")
    mesh.lab.sh(
        "node1",
        f"for i in 1 2; do runuser -u {MESH_USER} -- replimesh-sync --json --all-peers >/tmp/run$i.json &"
        " done; wait",
        check=False,
    )
    first, second = (json.loads(mesh.lab.sh("node1", f"cat /tmp/run{i}.json")) for i in (1, 2))
    for edge1, edge2 in zip(first["edges"], second["edges"], strict=True):
        assert "busy" in (edge1["result"], edge2["result"]) or (
            edge1["last_finish"] <= edge2["last_start"] or edge2["last_finish"] <= edge1["last_start"]
        ), (edge1, edge2)


SCHEDULED = "/var/lib/replimesh/state/scheduled.json"


def test_cron_schedule_converges_without_any_ad_hoc_run(mesh: Mesh) -> None:
    # Every minute, with at most 5 s of splay; only the cron tasks are re-applied.
    every_minute = ["-e", "mesh_sync_schedule='* * * * *'", "-e", "mesh_sync_splay_max=5"]
    proc = mesh.playbook("bootstrap.yml", "--tags", "mesh_sync_cron", *every_minute)
    assert proc.returncode == 0, proc.stdout[-3000:]
    try:
        assert "* * * * *" in mesh.lab.sh("node4", "cat /etc/cron.d/replimesh")
        data = b"scheduled, not pushed\n"
        mesh.write("node4", "by-cron.txt", data)
        want = {"./by-cron.txt": sha(data)}
        assert wait_until(lambda: all(mesh.digest(n) == want for n in mesh.nodes), timeout=150, interval=3)

        # Each node's rounds record that the scheduler ran them, with its schedule's longest wait. A round
        # the old schedule started just before the change (at a quarter hour) may be the latest for up to
        # a minute: the next one is the new schedule's.
        def last_round(node: str) -> tuple[str, int]:
            ran = json.loads(mesh.lab.sh(node, f"cat {SCHEDULED}"))
            return ran["schedule"], ran["period_s"]

        every = ("* * * * *", 60)
        assert wait_until(lambda: all(last_round(n) == every for n in mesh.nodes), timeout=90, interval=3), {
            node: last_round(node) for node in mesh.nodes
        }
        # node4's cron stops running jobs, node5's timer (systemd) stops; 40 minutes on (their records made
        # that much older), status says so, by the mesh file's schedule (every 15 min: the longer of the
        # two waits is allowed).
        mesh.lab.sh("node4", "/etc/init.d/cron stop >/dev/null")
        mesh.lab.sh("node5", "systemctl stop replimesh-sync.timer")
        backdate = f"import json,time; p='{SCHEDULED}'; r=json.load(open(p)); r['at']=time.strftime("
        backdate += "'%Y-%m-%dT%H:%M:%SZ', time.gmtime(time.time() - 2400)); json.dump(r, open(p, 'w'))"
        for node in ("node4", "node5"):
            mesh.lab.sh(node, f"runuser -u {MESH_USER} -- python3 -c {shlex.quote(backdate)}")
        proc = run_tool("meshctl", "status", "-i", str(mesh.inventory), "--json", timeout=300)
        report = json.loads(proc.stdout)
        rows = {row["node"]: row for row in report["nodes"]}
        assert proc.returncode == 1 and not report["healthy"], proc.stdout[-3000:]
        others = [r for r in report["degraded"] if not r.startswith(("node4: ", "node5: "))]
        assert others == [], report["degraded"]
        questions = {"node4": "is cron running jobs?", "node5": "is its systemd timer running?"}
        for node, question in questions.items():
            (reason,) = rows[node]["degraded"]
            assert reason.startswith("no scheduled round for 40 min (its schedule allows 15 min"), reason
            assert reason.endswith(question), reason
        assert (rows["node4"]["scheduler"], rows["node5"]["scheduler"]) == ("cron", "timer")
        record("fault", "a node whose cron or timer runs no round: degraded, with the reason", nodes=5)
    finally:
        # The backdated records go (the next round writes a true one): later tests see no stale alarm.
        mesh.lab.sh("node4", f"rm -f {SCHEDULED}; /etc/init.d/cron start >/dev/null")
        mesh.lab.sh("node5", f"rm -f {SCHEDULED}")
        restore = mesh.playbook("bootstrap.yml", "--tags", "mesh_sync_cron")
        assert restore.returncode == 0, restore.stdout[-3000:]
