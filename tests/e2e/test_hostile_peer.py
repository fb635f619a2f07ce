"""A node taken over: node2's real mesh key, used from node2, against node1 (and then the whole mesh).

Every node only pulls, with its own root-owned profile; a peer's login sees the folders read-only and
writes nothing but its own edge's archive. Each attack below is made with a real Unison client or ssh
from node2 as the mesh user (what a thief of node2 holds), then node1's own runner and sync.yml run, and
the outcome is asserted on node1: its folder unchanged by the attack, nothing the attacker chose run,
no setuid file, its versions intact.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shlex

import pytest

from tests.e2e.conftest import ARCHIVES, BACKUPS, FOLDER, JAILS, MARKER, MESH_USER, Mesh
from tests.e2e.faults import sync_node
from tests.e2e.test_security import as_mesh_user, ssh_argv
from tests.reliability import record

pytestmark = pytest.mark.lab

ATTACKER, TARGET = "node2", "node1"
LOGIN = f"{MESH_USER}-{ATTACKER}"  # the attacker's login on node1
EDGE_DIR = f"{ARCHIVES}/{ATTACKER}"  # as the jail shows it (and the host's link points into the jail)
HOST_EDGE_DIR = f"{JAILS}/{LOGIN}{ARCHIVES}/{ATTACKER}"

TREE = r"""
import hashlib, json, os, stat, sys
found = {}
for top in sys.argv[1:]:
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            digest = ""
            if stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
            found[path] = [oct(info.st_mode), info.st_uid, digest]
print(json.dumps(found, sort_keys=True))
"""


def tree(mesh: Mesh, node: str, *tops: str) -> dict[str, list]:
    """path -> [mode, uid, sha256] of everything below the given directories."""
    return json.loads(mesh.lab.sh(node, f"python3 -c {shlex.quote(TREE)} {' '.join(tops)}"))


def attack(mesh: Mesh, work: str, root: str, *options: str) -> str:
    """node2's mesh user runs its own Unison against node1 with `root` (a path as the jail shows it),
    pushing everything in `work` (forced to win); returns Unison's output."""
    address = mesh.lab.lab.resolve(TARGET).address
    sshargs = shlex.join(ssh_argv(mesh, TARGET, user=LOGIN)[1:-1])
    script = (
        f"UNISON={work}/.unison unison {work}/replica ssh://{LOGIN}@{address}/{root} -batch -auto -ui text "
        f"-times -sshargs {shlex.quote(sshargs)} -force {work}/replica -confirmbigdel=false "
        f"-ignore 'Name .unison' {' '.join(options)}"
    )
    proc = as_mesh_user(mesh, ATTACKER, script, timeout=90)
    return (proc.stdout + proc.stderr).decode(errors="replace")


def test_a_taken_over_peer_cannot_write_delete_plant_or_run_anything_on_its_peer(mesh: Mesh) -> None:
    token = secrets.token_hex(4)
    pwned = f"/tmp/pwned-{token}"
    for index in range(5):
        mesh.write(TARGET, f"keep/{index}.txt", f"node1's own file {index}\n".encode())
    assert mesh.playbook("sync.yml", timeout=300).returncode == 0
    assert "./keep/0.txt" in mesh.digest(ATTACKER)
    watched = (FOLDER, f"{BACKUPS}/shared")
    before = tree(mesh, TARGET, *watched)
    guards = {p: v for p, v in tree(mesh, TARGET, HOST_EDGE_DIR).items() if v[1] == 0}
    assert {p.rsplit("/", 1)[1] for p in guards} >= {"node2--shared", "node2--shared.prf", "default"}

    work = f"/tmp/attack-{token}"
    replica = f"{work}/replica"
    script = "\n".join(
        [
            f"set -e; mkdir -p {replica}/keep {work}/.unison; touch {replica}/{MARKER}",
            f"echo 'overwritten by the thief' > {replica}/keep/0.txt",
            f"echo 'planted by the thief' > {replica}/planted.txt",
            f"printf '#!/bin/sh\\ntouch {pwned}\\n' > {replica}/pwn.sh; chmod 4755 {replica}/pwn.sh",
            f"echo 'world writable' > {replica}/loose.txt; chmod 666 {replica}/loose.txt",
        ]
    )
    as_mesh_user(mesh, ATTACKER, script)
    outputs = {}
    # 1. Write, set a setuid and a world-writable mode, and delete keep/1..4 (absent from the replica):
    #    with the thief's own preferences (every mode bit, no backups).
    outputs["write, setuid, delete"] = attack(mesh, work, f"/{FOLDER}", "-perms 4095", "-backup 'Name none'")
    # 2. Plant settings in the edge's Unison directory (the one place the login writes): every name
    #    node1's client reads as a profile, with sshcmd naming the thief's script, plus links and a
    #    directory for node1's client to follow.
    plant = "\n".join(
        [
            f"set -e; rm -rf {replica}; mkdir -p {replica}/evil-dir",
            *[
                f"printf 'sshcmd = {EDGE_DIR}/pwn.sh\\nroot = {FOLDER}\\n' > {replica}/{name}"
                for name in ("node2--shared", "node2--shared.prf", "default", "default.prf", "extra.prf")
            ],
            f"printf '#!/bin/sh\\ntouch {pwned}\\n' > {replica}/pwn.sh; chmod 755 {replica}/pwn.sh",
            f"ln -s /var/lib/replimesh/.ssh/id_ed25519 {replica}/key-link",
            f"ln -s {FOLDER}/keep/0.txt {replica}/tm00000000000000000000000000000000",
        ]
    )
    as_mesh_user(mesh, ATTACKER, plant)
    outputs["plant settings"] = attack(mesh, work, f"/{EDGE_DIR}", "-perms 4095")
    # 3. A notice naming paths outside the folders, and far too long.
    notice = '["shared", "../../../etc/shadow"]\\n["shared", "/etc"]\\n'
    ssh = shlex.join([*ssh_argv(mesh, TARGET, user=LOGIN), "replimesh-notify"])
    flood = "head -c 200000 /dev/zero | tr '\\0' x"
    as_mesh_user(mesh, ATTACKER, f"(printf '{notice}'; {flood}) | {ssh}", timeout=60)

    # The attack itself changed nothing in node1's folder or versions, and the guards are root's still.
    assert tree(mesh, TARGET, *watched) == before, outputs
    now = tree(mesh, TARGET, HOST_EDGE_DIR)
    assert {p: v for p, v in now.items() if p in guards} == guards, outputs
    notices = mesh.lab.sh(TARGET, f"find {JAILS}/{LOGIN}/notify -type f -size +64k")
    assert notices == "", notices

    # node1's own runner and a full round: nothing the thief chose runs, nothing it planted is followed.
    report = sync_node(mesh, TARGET, "--peer", ATTACKER)
    assert report["edges"][0]["result"] == "ok", report
    proc = mesh.playbook("sync.yml", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert mesh.lab.sh(TARGET, f"test -e {pwned} && echo RAN || true") == ""
    assert mesh.lab.sh(ATTACKER, f"test -e {pwned} && echo RAN || true") == ""
    assert tree(mesh, TARGET, *watched) == before
    assert mesh.lab.sh(TARGET, f"find {FOLDER} {BACKUPS} -perm /6000") == ""
    left = tree(mesh, TARGET, HOST_EDGE_DIR)
    followable = [p for p, (mode, uid, _) in left.items() if uid != 0 and not mode.startswith("0o100")]
    assert followable == [], followable  # the runner removed the planted links and directory
    assert mesh.lab.sh(TARGET, "cat /var/lib/replimesh/.ssh/id_ed25519.pub") != ""
    mesh.lab.sh(ATTACKER, f"rm -rf {work}")
    record(
        "security",
        "taken-over peer: write, delete, setuid, planted settings and notices change nothing on its peer",
        checks_tried=len(outputs) + 1,
    )


def test_a_taken_over_node_that_deletes_everything_loses_nothing_elsewhere(mesh: Mesh) -> None:
    ledger = {}
    for index in range(40):
        data = f"file {index}, written on node3\n".encode() * (index + 1)
        mesh.write("node3", f"ledger/{index:02}.txt", data)
        ledger[f"ledger/{index:02}.txt"] = hashlib.sha256(data).hexdigest()
    assert mesh.playbook("sync.yml", timeout=300).returncode == 0
    for node in mesh.nodes:
        assert mesh.digest(node) == {f"./{p}": d for p, d in ledger.items()}, node
    # A second round, as the next cron round would: every edge's archive now knows every file (a pull
    # records a file only once both ends have it), so a deletion anywhere is a deletion for every edge.
    assert mesh.playbook("sync.yml", timeout=300).returncode == 0

    # The thief deletes 36 of the 40 files on node2 (a few left: not Unison's "replica emptied" case).
    doomed = " ".join(f"{FOLDER}/ledger/{glob}.txt" for glob in ("0*", "[12]*", "3[0-5]"))
    mesh.lab.sh(ATTACKER, f"runuser -u {MESH_USER} -- sh -c 'rm -f {doomed}'")
    assert len(mesh.digest(ATTACKER)) == 4
    proc = mesh.playbook("sync.yml", timeout=300)
    assert proc.returncode != 0, "a round whose pulls hit the brake must not report success"
    braked = [line for line in proc.stdout.splitlines() if f"<- {ATTACKER}: brake" in line]
    assert len(braked) == len(mesh.nodes) - 1, proc.stdout[-4000:]
    for node in mesh.nodes:
        if node != ATTACKER:
            assert mesh.digest(node) == {f"./{p}": d for p, d in ledger.items()}, node
    status = json.loads(mesh.lab.sh(TARGET, "cat /var/lib/replimesh/state/status/node2.json"))
    assert status["result"] == "brake" and "--allow-deletions node1" in status["error"], status

    # An operator who wants the deletion on node4 allows it once: node4 applies it and keeps a version
    # of every file it deleted, in its own backups (in no jail: no peer reaches them).
    proc = mesh.playbook("sync.yml", "-e", "allow_deletions=node4", timeout=300)
    assert len(mesh.digest("node4")) == 4, proc.stdout[-3000:]
    kept = mesh.lab.sh("node4", f"cd {BACKUPS}/shared && find ledger -type f | sort | xargs sha256sum")
    versions = {line[66:]: line[:64] for line in kept.splitlines()}
    gone = {p: d for p, d in ledger.items() if f"./{p}" not in mesh.digest("node4")}
    assert len(gone) == 36 and all(versions.get(p) == d for p, d in gone.items()), versions
    for node in ("node1", "node3", "node5"):
        assert len(mesh.digest(node)) == 40, node  # still braked there
    record("versioning", "taken-over node deletes 36 of 40 files: braked on every node", nodes=5, lost=0)
