"""What a peer's mesh key can do on another node, tried for real on the shared 5-node lab: nothing but sync.

The key under test is node1's real mesh key, used from inside node1 as the mesh user (what an attacker who
took over node1's sync account holds). Each check asserts the outcome on the target node, not only an error.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import run_tool
from tests.e2e.conftest import ARCHIVES, BACKUPS, FOLDER, JAILS, MESH_USER, Mesh
from tests.reliability import record

pytestmark = pytest.mark.lab

KEY = "/var/lib/replimesh/.ssh/id_ed25519"
LOGIN = f"{MESH_USER}-node1"  # node1's login on its peers
JAIL = f"{JAILS}/{LOGIN}"  # node1's jail on each peer


def ssh_argv(mesh: Mesh, dst: str, *, key: str = KEY, user: str = LOGIN) -> list[str]:
    """ssh as the mesh does it (pinned host key, batch mode), without the command."""
    address = mesh.lab.lab.resolve(dst).address
    return [
        "ssh", "-F", "none", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=5", "-o", f"HostKeyAlias={dst}",
        "-o", "UserKnownHostsFile=/etc/replimesh/known_hosts", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", f"{user}@{address}",
    ]  # fmt: skip


def as_mesh_user(
    mesh: Mesh, node: str, script: str, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    argv = ["runuser", "-u", MESH_USER, "--", "timeout", str(int(timeout)), "sh", "-c", script]
    return mesh.lab.lab.exec(node, argv, timeout=timeout + 30)


@pytest.fixture
def timed(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"{request.node.name}: {time.monotonic() - started:.1f} s")


def test_peer_key_gets_only_the_unison_server(mesh: Mesh, timed: None) -> None:
    ssh = shlex.join(ssh_argv(mesh, "node2"))
    token = secrets.token_hex(4)
    attempts = {
        "no command": "",
        "a command": "id",
        "read shadow": "cat /etc/shadow",
        "a shell": f"sh -c 'echo escaped-{token}'",
        "a tty shell": f"-tt sh -c 'echo escaped-{token}'",
        "sftp subsystem": "-s sftp",
        "env injection": f"-o SetEnv=UNISON=/tmp sh -c 'echo escaped-{token}'",
    }
    for name, args in attempts.items():
        proc = as_mesh_user(mesh, "node1", f"{ssh} {args} </dev/null", timeout=30)
        out = proc.stdout + proc.stderr
        assert b"uid=" not in out and b"root:" not in out and f"escaped-{token}".encode() not in out, (
            name,
            out,
        )
        # What answers (if anything does) is the Unison server and nothing else.
        assert proc.stdout == b"" or proc.stdout.startswith(b"Unison"), (name, proc.stdout[:80])
    # scp of /etc/shadow: nothing arrives.
    scp = shlex.join(["scp", *ssh_argv(mesh, "node2")[1:-1]])
    target = mesh.lab.lab.resolve("node2").address
    as_mesh_user(mesh, "node1", f"{scp} {LOGIN}@{target}:/etc/shadow /tmp/shadow-{token} </dev/null", 30)
    assert mesh.lab.lab.exec("node1", ["test", "-e", f"/tmp/shadow-{token}"]).returncode != 0
    record(
        "security", "peer key: shell, commands, tty, sftp, scp, env refused", checks_tried=len(attempts) + 1
    )


# Run inside node1 as the mesh user: each kind of forwarding through node2, aimed at node2's own sshd
# (127.0.0.1:22 there). A working forward would show its "SSH-2.0" banner.
FORWARD_PROBE = r"""
import json, socket, subprocess, sys, time
ssh, dest = sys.argv[1:-1], sys.argv[-1]
def read(port, socks):
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                return "no listener"
            time.sleep(0.1)
    with conn:
        conn.settimeout(5)
        try:
            if socks:
                conn.sendall(b"\x05\x01\x00")
                conn.recv(2)
                conn.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x16")
                reply = conn.recv(10)
                if len(reply) < 2 or reply[1] != 0:
                    return "socks refused"
            return conn.recv(64).decode(errors="replace")
        except OSError as err:
            return f"error: {err}"
out = {}
for name, opts, port, socks in (("L", ["-L", "127.0.0.1:47001:127.0.0.1:22"], 47001, False),
                                ("D", ["-D", "127.0.0.1:47002"], 47002, True)):
    proc = subprocess.Popen([*ssh, "-N", *opts, dest], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    got = read(port, socks)
    time.sleep(0.5)
    proc.kill()
    out[name] = {"got": got, "stderr": proc.communicate(timeout=10)[1].decode(errors="replace")}
for name, opts in (("R", ["-N", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:47003:127.0.0.1:22"]),
                   ("W", ["-W", "127.0.0.1:22"])):
    proc = subprocess.run([*ssh, *opts, dest], stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    out[name] = {"rc": proc.returncode, "got": proc.stdout[:64].decode(errors="replace"),
                 "stderr": proc.stderr.decode(errors="replace")}
print(json.dumps(out))
"""


def test_peer_key_cannot_forward_ports(mesh: Mesh, timed: None) -> None:
    argv = ssh_argv(mesh, "node2")
    script = f"python3 -c {shlex.quote(FORWARD_PROBE)} {shlex.join(argv)}"
    proc = as_mesh_user(mesh, "node1", script, timeout=90)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    results = json.loads(proc.stdout)
    print(json.dumps(results, indent=1))
    for name in ("L", "D", "W"):
        assert "SSH-" not in results[name]["got"], (name, results[name])
    assert "prohibited" in results["L"]["stderr"] or "open failed" in results["L"]["stderr"], results["L"]
    assert results["R"]["rc"] != 0 and "forwarding failed" in results["R"]["stderr"], results["R"]
    assert results["W"]["rc"] != 0, results["W"]
    listening = mesh.lab.sh("node2", "ss -Hltn")
    assert ":47003" not in listening, listening
    record("security", "peer key: -L, -R, -D and -W forwarding refused", checks_tried=4)


# Roots a peer might name instead of the folder: system directories (absent from the jail), a path that
# climbs out with .., and the jail's own root-owned directories above the folder and the archives.
ABSENT_ROOTS = ["//etc", "//root", f"/{FOLDER}/../../../etc"]
JAIL_ROOTS = ["//var/lib/replimesh", "//srv/replimesh"]
SECRETS = [
    "shadow",
    "passwd",
    "id_ed25519",
    "ssh_host_ed25519_key",
    "authorized_keys",
    "known_hosts",
    "mesh.json",
]


def _jail_listing(mesh: Mesh, node: str) -> str:
    """Every path in the jail but the archives (the server writes those) and the folder, with its mode."""
    return mesh.lab.sh(
        node,
        f"find {JAIL} -path {JAIL}{ARCHIVES} -prune -o -path {JAIL}{FOLDER} -prune -o -printf '%p %m %s\\n'"
        " | sort",
    )


def test_peer_cannot_read_or_write_outside_the_folders(mesh: Mesh, timed: None) -> None:
    token = secrets.token_hex(4)
    mesh.write("node2", "inside.txt", b"the only thing a peer may see\n")
    before = (_jail_listing(mesh, "node2"), mesh.digest("node2"))
    address = mesh.lab.lab.resolve("node2").address
    sshargs = shlex.join(ssh_argv(mesh, "node2")[1:-1])
    work = f"/tmp/probe-{token}"
    mesh.lab.sh("node1", f"install -d -o {MESH_USER} {work} {work}/unison")
    for index, root in enumerate(ABSENT_ROOTS + JAIL_ROOTS):
        local = f"{work}/{index}"
        script = (
            f"mkdir -p {local} && echo planted > {local}/planted-{token} && "
            f"UNISON={work}/unison unison {local} ssh://{LOGIN}@{address}/{root} -batch -auto -ui text "
            f"-sshargs {shlex.quote(sshargs)} -ignore 'Name planted-never'"
        )
        proc = as_mesh_user(mesh, "node1", script, timeout=60)
        assert proc.returncode != 0, (root, proc.stdout.decode()[-1500:])
        fetched = mesh.lab.sh("node1", f"cd {local} && find . -mindepth 1").split()
        if root in ABSENT_ROOTS:
            assert fetched == [f"./planted-{token}"], (root, fetched)
        # Inside the jail a peer sees the jail (Unison's archives, the folder) and nothing of the host.
        assert not [p for p in fetched if p.rsplit("/", 1)[-1] in SECRETS], (root, fetched)
    planted = mesh.lab.sh("node2", f"find / -xdev -name 'planted-{token}' 2>/dev/null", check=False)
    assert planted == "", planted
    assert (_jail_listing(mesh, "node2"), mesh.digest("node2")) == before
    mesh.lab.sh("node1", f"rm -rf {work}")
    record(
        "security",
        "peer key: Unison roots outside the folder refused",
        checks_tried=len(ABSENT_ROOTS + JAIL_ROOTS),
    )


# Another edge's state on node2, as node1's key might name it: node3's archives and the versions kept
# by node2's own runs and by node3's server end (each path as the host has it, and from inside a jail).
# (BACKUPS inside node1's jail is its own edge's: the versions node1's pushes replaced there.)
OTHER_EDGES = [
    f"/{ARCHIVES}/node3",
    f"/{JAILS}/{MESH_USER}-node3{ARCHIVES}/node3",
    f"/{JAILS}/{MESH_USER}-node3{BACKUPS}/shared",
    f"/{ARCHIVES}/../jails/{MESH_USER}-node3{ARCHIVES}/node3",
    f"/{ARCHIVES}/../../../../{BACKUPS}/shared/../../jails",
]


def test_peer_cannot_reach_another_edges_archives_or_versions(mesh: Mesh, timed: None) -> None:
    token = secrets.token_hex(4)
    address = mesh.lab.lab.resolve("node2").address
    sshargs = shlex.join(ssh_argv(mesh, "node2")[1:-1])
    work = f"/tmp/probe-{token}"
    mesh.write("node3", "edge.txt", b"synced over node2<->node3\n")
    assert mesh.playbook("sync.yml", timeout=300).returncode == 0
    # node2 holds that edge's archives (what a peer would want to tamper with) in node3's jail.
    assert mesh.lab.sh("node2", f"ls {JAILS}/{MESH_USER}-node3{ARCHIVES}/node3 | grep -c '^ar'") != "0"
    mesh.lab.sh("node1", f"install -d -o {MESH_USER} {work} {work}/unison")
    for index, root in enumerate(OTHER_EDGES):
        local = f"{work}/{index}"
        script = (
            f"mkdir -p {local} && echo planted > {local}/planted-{token} && UNISON={work}/unison unison "
            f"{local} ssh://{LOGIN}@{address}/{root} -batch -auto -ui text -sshargs {shlex.quote(sshargs)}"
        )
        proc = as_mesh_user(mesh, "node1", script, timeout=60)
        assert proc.returncode != 0, (root, proc.stdout.decode()[-1500:])
        fetched = mesh.lab.sh("node1", f"cd {local} && find . -mindepth 1").split()
        assert fetched == [f"./planted-{token}"], (root, fetched)
    mesh.lab.sh("node1", f"rm -rf {work}")
    planted = mesh.lab.sh("node2", f"find / -xdev -name 'planted-{token}' 2>/dev/null", check=False)
    assert planted == "", planted
    record(
        "security", "peer key: other edges' archives and versions out of reach", checks_tried=len(OTHER_EDGES)
    )


def test_mesh_user_cannot_sudo_or_become_root(mesh: Mesh, timed: None) -> None:
    shadow = mesh.lab.sh("node1", f"getent shadow {MESH_USER}").split(":")
    assert shadow[1] in ("*", "!", "!*"), "the mesh user must have no usable password"
    listed = mesh.lab.lab.exec("node1", ["sudo", "-l", "-U", MESH_USER])
    assert b"is not allowed to run sudo" in listed.stdout + listed.stderr
    attempts = ["sudo -n id -u", "sudo -n -s id -u", "su -c 'id -u' root", "su - root -c 'id -u'"]
    for script in attempts:
        proc = as_mesh_user(mesh, "node1", f"{script} </dev/null", timeout=20)
        assert proc.returncode != 0 and proc.stdout.strip() != b"0", (script, proc.stdout, proc.stderr)
    record("security", "mesh user: sudo and su refused", checks_tried=len(attempts) + 1)


STOP = (  # what `replimesh-watch --stop` runs, as root (a cron-mode node has no such command installed)
    "import sys; sys.path.insert(0, '/usr/local/lib/replimesh');"
    " from replimesh_node.mesh_supervise import main; sys.exit(main(['--stop']))"
)


def test_root_trusts_no_file_the_mesh_user_writes(mesh: Mesh, timed: None) -> None:
    """A thief with node1's mesh user plants a supervisor pid file naming root's sshd (holding the
    supervisor's lock, as a live supervisor does), a FIFO in place of an edge's status record and a link
    to /etc/shadow in place of another: root's stop of the watcher signals nothing, and `meshctl status`
    answers without hanging or reading the link."""
    state = "/var/lib/replimesh/state"
    sshd = mesh.lab.sh("node1", "pgrep -o -x sshd").strip()
    plant = (
        f"mkdir -p {state}/watch && echo {sshd} > {state}/watch/supervisor.pid"
        f" && mkfifo {state}/status/node9.json && ln -s /etc/shadow {state}/status/node8.json"
        f" && (timeout 120 flock {state}/watch/supervisor.lock sleep 120 </dev/null >/dev/null 2>&1 &"
        f" echo $! > {state}/holder.pid)"
    )
    assert as_mesh_user(mesh, "node1", plant, timeout=20).returncode == 0
    try:
        stopped = mesh.lab.lab.exec("node1", ["timeout", "20", "python3", "-IS", "-c", STOP], timeout=60)
        assert stopped.returncode == 0 and b"not running" in stopped.stdout + stopped.stderr, stopped
        assert mesh.lab.sh("node1", "pgrep -o -x sshd").strip() == sshd  # root's sshd was not signalled
        started = time.monotonic()
        proc = run_tool("meshctl", "status", "-i", str(mesh.inventory), "--json", timeout=300)
        report = json.loads(proc.stdout)
        assert "root:" not in proc.stdout + proc.stderr  # nothing of /etc/shadow
        assert {row["node"] for row in report["nodes"]} == set(mesh.nodes)
    finally:
        mesh.lab.sh(
            "node1",
            f"kill $(cat {state}/holder.pid) 2>/dev/null; rm -rf {state}/holder.pid {state}/watch"
            f" {state}/status/node9.json {state}/status/node8.json",
        )
    print(f"planted files refused, status in {time.monotonic() - started:.1f} s")
    record("security", "mesh user's planted pid file, FIFO and link: root signals and reads none", files=3)


def _answer(mesh: Mesh, node: str, argv: list[str]) -> bytes:
    proc = mesh.lab.lab.exec(node, ["timeout", "30", *argv, "true"], timeout=60)
    return proc.stdout + proc.stderr


def test_strangers_cannot_connect(mesh: Mesh, timed: None) -> None:
    token = secrets.token_hex(4)
    node2 = f"{MESH_USER}-node2"  # node2's login on its peers
    stranger = f"/tmp/stranger-{token}"
    # A key no node authorized, from a mesh node's own address.
    mesh.lab.sh("node1", f"ssh-keygen -q -t ed25519 -N '' -f {stranger}")
    # node2's real mesh key, but from node3's address (its from= names node2 only).
    stolen = f"/tmp/stolen-{token}"
    private = mesh.lab.sh("node2", f"cat {KEY}")
    mesh.lab.sh("node3", f"umask 077 && printf %s {shlex.quote(private)} > {stolen}")
    try:
        tries = {
            "unknown key": _answer(mesh, "node1", ssh_argv(mesh, "node2", key=stranger)),
            "stolen key, wrong address": _answer(
                mesh, "node3", ssh_argv(mesh, "node1", key=stolen, user=node2)
            ),
            "mesh key as another peer": _answer(
                mesh, "node1", ssh_argv(mesh, "node2", user=f"{MESH_USER}-node3")
            ),
            "mesh key as the mesh user": _answer(mesh, "node1", ssh_argv(mesh, "node2", user=MESH_USER)),
            "mesh key as root": _answer(mesh, "node1", ssh_argv(mesh, "node2", user="root")),
            "mesh key as the lab's admin": _answer(mesh, "node1", ssh_argv(mesh, "node2", user="lab")),
        }
    finally:
        mesh.lab.sh("node3", f"rm -f {stolen}")
        mesh.lab.sh("node1", f"rm -f {stranger} {stranger}.pub")
    for name, answer in tries.items():
        assert b"Permission denied" in answer and not answer.startswith(b"Unison"), (name, answer)
    # The same stolen key from its own node still works: the refusal above is the from= address.
    assert _answer(mesh, "node2", ssh_argv(mesh, "node1", user=node2)).startswith(b"Unison")
    record(
        "security",
        "strangers refused (unknown key, stolen key elsewhere, other users)",
        checks_tried=len(tries),
    )


def _edge_results(mesh: Mesh) -> dict[str, dict]:
    proc = run_tool("meshctl", "status", "-i", str(mesh.inventory), "--json", timeout=300)
    return {edge["edge"]: edge for edge in json.loads(proc.stdout)["edges"]}


def test_node_with_new_host_key_is_refused_until_add_node(mesh: Mesh, timed: None) -> None:
    """node3 is reinstalled (new SSH host keys): its peers refuse it, status says so, add-node heals."""
    lab = mesh.lab.lab
    old = mesh.lab.sh("node3", "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1]
    # From the re-keying on, until add-node has run, the next test gets the mesh re-bootstrapped.
    mesh.dirty = True
    # A reinstalled host has none of the old one's connections: every sshd session ends (the peers' shared
    # connections to node3 with them), and the listener starts again with the new host keys.
    mesh.lab.sh(
        "node3",
        "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && listener=$(pgrep -o -x sshd)"
        " && for pid in $(pgrep -x 'sshd|sshd-session'); do"
        " [ $pid = $listener ] || kill $pid 2>/dev/null || true; done"  # a session may end by itself first
        " && kill -HUP $listener",
    )
    lab.up(len(mesh.nodes))  # the lab's own known_hosts (Ansible's way in) learns the new key out of band
    assert mesh.lab.sh("node3", "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1] != old
    mesh.write("node1", "while-node3-is-suspect.txt", b"for every trusted node\n")

    proc = mesh.playbook("sync.yml", timeout=300)
    assert proc.returncode != 0, "a round with a refused node must not report success"
    refused = [line for line in proc.stdout.splitlines() if "<- node3: hostkey" in line]
    assert refused, proc.stdout[-3000:]
    edges = _edge_results(mesh)
    suspect = {name: e for name, e in edges.items() if "node3" in e["pair"] and e["result"] == "hostkey"}
    assert suspect and all(not e["healthy"] and "Host key" in e["error"] for e in suspect.values()), edges
    assert all(e["healthy"] for name, e in edges.items() if "node3" not in e["pair"]), edges

    started = time.monotonic()
    proc = mesh.playbook("add-node.yml", "-e", "node=node3", timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:]
    print(f"add-node.yml for the re-keyed node3: {time.monotonic() - started:.1f} s")
    mesh.dirty = False
    # add-node synced every edge of node3 (that play fails otherwise): the mesh agrees again.
    assert mesh.converged()
    assert "./while-node3-is-suspect.txt" in mesh.digest("node3")
    edges = _edge_results(mesh)
    assert all(e["healthy"] and e["result"] != "hostkey" for e in edges.values() if "node3" in e["pair"]), (
        edges
    )
    record(
        "security",
        "re-keyed node refused and shown in status until add-node",
        nodes=5,
        edges_refused=len(suspect),
    )


# Names a careless script or a hostile peer might write; each must arrive byte-identical everywhere.
HOSTILE_NAMES = [
    "with space.txt", " leading space", "trailing space ", "new\nline", "tab\there", "-leading-dash",
    "--help", "*", "?", "[a]", "'", '"', "$(touch pwned)", "`id`", "a;b|c&d", "back\\slash", "ünïcødé-ñ.txt",
    "日本語.txt", "emoji-\U0001f600", "e\u0301-combining", "." + "x" * 254, "x" * 255, "\u00e9" * 127,
]  # fmt: skip
MODES = {"private.txt": 0o640, "run.sh": 0o755, "secret": 0o600, "shared.txt": 0o644}


LISTING = r"""
import hashlib, json, os, re, stat, sys
root, found = os.fsencode(sys.argv[1]), {}
for top, dirs, files in os.walk(root):
    # Unison's own temporary files (a copy that lost a race to a concurrent edge), never synced.
    dirs[:] = [d for d in dirs if not re.fullmatch(rb"(?s)\.unison\..*\.unison\.tmp", d)]
    files = [f for f in files if not re.fullmatch(rb"(?s)\.unison\..*\.unison\.tmp", f)]
    for name in dirs + files:
        path = os.path.join(top, name)
        info = os.lstat(path)
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest() if stat.S_ISREG(info.st_mode) else ""
        found[os.path.relpath(path, root).hex()] = [stat.filemode(info.st_mode), digest]
found.pop(b".replimesh-folder".hex(), None)
print(json.dumps(found))
"""


def _listing(mesh: Mesh, node: str) -> dict[str, list[str]]:
    """Every entry of the folder, whatever its name: hex of the name -> [mode string, sha256] (as
    Mesh.digest, without the marker and Unison's temporary files)."""
    return json.loads(mesh.lab.sh(node, f"python3 -c {shlex.quote(LISTING)} {FOLDER}"))


def test_hostile_names_and_modes_arrive_identical_everywhere(mesh: Mesh, timed: None) -> None:
    for index, name in enumerate(HOSTILE_NAMES):
        mesh.write("node1", f"names/{name}", f"file {index}: {name!r}\n".encode())
    for name, mode in {**MODES, "loose": 0o666}.items():
        mesh.write("node1", f"modes/{name}", f"mode {mode:o}\n".encode())
        mesh.lab.sh("node1", f"chmod {mode:o} {shlex.quote(f'{FOLDER}/modes/{name}')}")
    mesh.lab.sh("node1", f"chmod 750 {FOLDER}/modes")
    want = _listing(mesh, "node1")
    assert len(want) == len(HOSTILE_NAMES) + len(MODES) + 3, sorted(want)
    # A file left writable by everyone on node1 arrives writable by its owner and group only.
    loose = b"modes/loose".hex()
    assert want[loose][0] == "-rw-rw-rw-"
    want[loose][0] = "-rw-rw-r--"

    proc = mesh.playbook("sync.yml", timeout=300)
    assert proc.returncode == 0 and "edges synced: 20 of 20" in proc.stdout, proc.stdout[-3000:]
    for node in mesh.nodes[1:]:
        assert _listing(mesh, node) == want, node
    # Nothing in a folder or in the jail became writable by everyone, on any node (but node1's own file).
    for node in mesh.nodes:
        found = mesh.lab.sh(node, f"find {FOLDER} {JAILS} -xdev ! -type l -perm -0002 -print").split("\n")
        # (the folder shows once in place and once bind-mounted in each peer's jail)
        leftover = [p for p in found if p and not (node == "node1" and p.endswith(f"{FOLDER}/modes/loose"))]
        assert leftover == [], (node, found)
    assert mesh.lab.sh("node4", f"stat -c %a {FOLDER}/modes/run.sh {FOLDER}/modes/private.txt").split() == [
        "755",
        "640",
    ]
    record("security", "hostile file names synced byte-identical", nodes=5, files=len(HOSTILE_NAMES))
    record(
        "security", "file modes kept, nothing world-writable", nodes=5, files=len(MODES) + 1, checks_tried=5
    )
