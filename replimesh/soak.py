"""meshctl soak: a bounded chaos run on a lab mesh, with a ledger of every content ever written.

For M minutes (the seed replays a run): random creates, edits (saved as editors do: a temporary file renamed
over the old one), deletions, renames, and concurrent edits of one path on two nodes, on every node. Each
round runs under one fault: a paused node, a node cut off from the others, a node whose pull is killed
mid-transfer, a node whose folder's disk is full, a node that crashes during its own run and boots again
after the others' round, or none; the nodes that can sync do, then the fault is healed and every node
syncs. At the end: rounds until every replica is identical (bounded), `meshctl
verify` as the judge, and the ledger: every content ever written must still be somewhere, a current file,
a conflict copy or a version a node kept.

Lab only: every command goes to the lab's own containers (docker exec, and iptables inside a lab host's
network namespace). A reboot is the container killed and started again: its init does what a booting
host does with replimesh's state (mounts /etc/fstab, the jails' read-only binds among it; starts cron and
sshd), and the soak checks that every jail's folder is read-only again before the node takes part.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import json
import os
import random
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from replimesh.lab.lab import Lab

FOLDER = "/srv/replimesh/shared"  # the lab mesh's folder (inventory/lab template)
USER = "replimesh"
BACKUPS = "/var/lib/replimesh/backups/shared"
JAILS = "/var/lib/replimesh/jails"
RUNNER = "/usr/local/sbin/replimesh-sync"
FAULT_KINDS = ("none", "pause", "partition", "kill", "full", "reboot")
BOOT_TIMEOUT_S = 90
OPS_PER_ROUND = 10
# A node keeps 5 versions of a path (sync.backups): a path is edited at most this often, so the soak
# measures loss, not the retention an operator chose.
MAX_EDITS_PER_PATH = 4
BIG = 8 << 20  # the file a killed pull was moving
FINAL_ROUNDS = 8


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LabMesh:
    """The lab's nodes as the soak uses them: shell, files in the folder, runner rounds, faults."""

    def __init__(self, lab: Lab, nodes: Sequence[str]) -> None:
        self.lab, self.nodes = lab, list(nodes)

    def sh(self, node: str, script: str, check: bool = True, timeout: float = 300) -> str:
        proc = self.lab.exec(node, ["sh", "-c", script], timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{node}: {script[:200]!r} exited {proc.returncode}: {proc.stderr.decode()[-500:]}"
            )
        return proc.stdout.decode()

    @staticmethod
    def as_user(script: str) -> str:
        return f"runuser -u {USER} -- sh -c {shlex.quote(script)}"

    def write(self, node: str, rel: str, data: bytes) -> None:
        """Write a file as an application would (as the mesh user), its directory made first."""
        path = shlex.quote(f"{FOLDER}/{rel}")
        encoded = base64.b64encode(data).decode()
        self.sh(
            node, self.as_user(f'mkdir -p "$(dirname {path})" && printf %s {encoded} | base64 -d > {path}')
        )

    def save(self, node: str, rel: str, data: bytes) -> None:
        """An editor's save: a temporary file (*.tmp, which the lab mesh ignores) renamed over the old one."""
        self.write(node, f"{rel}.soak.tmp", data)
        self.sh(
            node,
            self.as_user(f"mv -f {shlex.quote(f'{FOLDER}/{rel}.soak.tmp')} {shlex.quote(f'{FOLDER}/{rel}')}"),
        )

    def digest(self, node: str) -> dict[str, str]:
        """path -> sha256 of every file in the folder (the marker and Unison's temporary files aside)."""
        out = self.sh(
            node,
            f"cd {FOLDER} && find . -name '.unison.*.unison.tmp' -prune -o -type f ! -name .replimesh-folder"
            " -print0 | sort -z | xargs -0 -r sha256sum",
        )
        return {line[66:]: line[:64] for line in out.splitlines()}

    def kept(self, node: str) -> set[str]:
        out = self.sh(node, f"find {BACKUPS} -type f -print0 2>/dev/null | xargs -0 -r sha256sum")
        return {line[:64] for line in out.splitlines()}

    def sync(self, node: str, *args: str) -> dict[str, Any]:
        """One run of the node's runner, as cron starts it; {} when it gave no report (a killed run)."""
        proc = self.lab.exec(node, ["runuser", "-u", USER, "--", RUNNER, "--json", *args], timeout=900)
        try:
            return dict(json.loads(proc.stdout))
        except ValueError:
            return {}

    def sync_round(self, nodes: Sequence[str]) -> None:
        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            list(pool.map(self.sync, nodes))

    def identical(self) -> bool:
        digests = [self.digest(node) for node in self.nodes]
        return all(d == digests[0] for d in digests)

    def _container_pid(self, node: str) -> int:
        out = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Pid}}", self.lab.resolve(node).container],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return int(out.stdout.strip())

    @contextlib.contextmanager
    def cut_off(self, node: str) -> Iterator[None]:
        """Every link between `node` and the others refused (iptables in its own network namespace)."""
        pid = self._container_pid(node)
        rules = [
            (chain, flag, self.lab.resolve(other).address, "-j", "REJECT")
            for other in self.nodes if other != node for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d"))
        ]  # fmt: skip
        nsenter = ["nsenter", "-t", str(pid), "-n", "iptables"]
        try:
            for rule in rules:
                subprocess.run([*nsenter, "-I", *rule], check=True, capture_output=True)
            yield
        finally:
            for rule in rules:
                subprocess.run([*nsenter, "-D", *rule], check=False, capture_output=True)

    @contextlib.contextmanager
    def paused(self, node: str) -> Iterator[None]:
        self.lab.fault("pause", node)
        try:
            yield
        finally:
            self.lab.fault("unpause", node)

    @contextlib.contextmanager
    def full(self, node: str) -> Iterator[None]:
        """The folder on a disk with 256 KiB to spare, for the node's runs and its jails alike; afterwards
        the folder holds what the full disk held (what the node's pulls managed to write). A setup that
        fails half-way is undone before the error goes on."""
        small, jailed = "/mnt/soak-full", f"{JAILS}/*{FOLDER}"
        # Allocated, not apparent, size: the copy takes whole pages on tmpfs as it takes blocks here; the
        # temporary file of a pull under way may grow meanwhile, hence the second margin.
        size = int(self.sh(node, f"du -sB1 {FOLDER} | cut -f1")) + (256 << 10) + (1 << 20)
        try:
            self.sh(
                node,
                f"mkdir -p {small} && mount -t tmpfs -o size={size},mode=0775 tmpfs {small}"
                f" && cp -a {FOLDER}/. {small}/ && chown {USER}:{USER} {small}"
                f" && mount --bind {small} {FOLDER}"
                f" && for j in {jailed}; do mount --bind {small} $j"
                " && mount -o remount,bind,ro,nosuid,nodev $j; done",
            )
            yield
        finally:
            # Only what this fault mounted (tmpfs on top) is unmounted: never a jail's own bind.
            self.sh(
                node,
                'top() { findmnt -n -o FSTYPE --mountpoint "$1" | tail -n 1; }; '
                f'for j in {jailed}; do [ "$(top $j)" != tmpfs ] || umount $j || exit 1; done; '
                f'if [ "$(top {FOLDER})" = tmpfs ]; then umount {FOLDER} && find {FOLDER} -mindepth 1 -delete'
                f" && cp -a {small}/. {FOLDER}/ || exit 1; fi; "
                f'if [ "$(top {small})" = tmpfs ]; then umount {small}; fi; rmdir {small} 2>/dev/null; true',
            )

    @contextlib.contextmanager
    def rebooted(self, node: str, after_s: float) -> Iterator[None]:
        """`node` crashes `after_s` seconds into a run of its own runner (power lost: SIGKILL to every
        process), stays down for the block, then boots; the block ends once it accepts SSH again and every
        jail's folder is read-only, as its /etc/fstab says."""
        run = threading.Thread(target=self.sync, args=(node,), daemon=True)
        run.start()
        time.sleep(after_s)  # the crash's moment within the run, drawn by the caller
        self.lab.fault("kill", node)
        run.join(60)
        try:
            yield
        finally:
            self.lab.fault("start", node)
            self.wait_booted(node)

    def wait_booted(self, node: str) -> None:
        address = self.lab.resolve(node).address
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError), socket.create_connection((address, 22), timeout=2) as conn:
                if conn.recv(4).startswith(b"SSH-"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node}: no SSH {BOOT_TIMEOUT_S} s after its reboot")
            time.sleep(0.2)
        mounts = self.sh(node, f"findmnt -rn -o TARGET,OPTIONS | grep '^{JAILS}/.*{FOLDER} ' || true")
        jailed = [line.split() for line in mounts.splitlines()]
        writable = [target for target, options in jailed if "ro" not in options.split(",")]
        if len(jailed) < len(self.nodes) - 1 or writable:
            raise RuntimeError(
                f"{node} after its reboot: jail binds of the folder {mounts!r}, writable {writable}"
            )

    def kill_mid_transfer(self, source: str, target: str, rel: str) -> tuple[str, bool]:
        """A large file written on `source`; `target`'s pull of it killed (SIGKILL) while Unison moves it.
        Returns the file's sha256, and whether a Unison of `target` was running to be killed."""
        path = shlex.quote(f"{FOLDER}/{rel}")
        self.sh(source, self.as_user(f'mkdir -p "$(dirname {path})" && head -c {BIG} /dev/urandom > {path}'))
        digest = self.sh(source, f"sha256sum {path}")[:64]
        pull = threading.Thread(target=self.sync, args=(target, "--peer", source), daemon=True)
        pull.start()
        deadline, killed = time.monotonic() + 20, False
        while pull.is_alive() and time.monotonic() < deadline and not killed:
            pids = self.sh(target, f"pgrep -u {USER} -x unison || true").split()
            if pids:
                killed = bool(self.sh(target, f"kill -9 {' '.join(pids)} && echo killed || true").strip())
            else:
                time.sleep(0.05)
        pull.join(900)
        return digest, killed


@dataclass
class Soak:
    mesh: LabMesh
    rng: random.Random
    ledger: dict[str, str] = field(default_factory=dict)  # sha256 -> where it was first written
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    edits: collections.Counter[str] = field(default_factory=collections.Counter)
    bytes_written: int = 0
    rounds: int = 0
    killed: int = 0  # kill rounds that caught a Unison run of the victim (not one already done)

    def content(self, label: str) -> bytes:
        size = self.rng.choice((0, 1, 100, 4096, 30_000, self.rng.randrange(1, 60_000)))
        return f"{label}\n".encode() + self.rng.randbytes(size)

    def remember(self, digest: str, size: int, where: str) -> None:
        self.ledger.setdefault(digest, where)
        self.bytes_written += size

    def edit(self, node: str, rel: str, where: str) -> None:
        data = self.content(where)
        self.mesh.save(node, rel, data)
        self.remember(sha(data), len(data), where)
        self.edits[rel] += 1

    def operations(self, number: int, nodes: list[str]) -> None:
        # Only a file whose content another node holds too is edited, deleted or renamed, each path once per
        # node per round: a content that never left its node and that its user destroys is the user's own
        # doing, which no mesh can undo.
        digests = {node: self.mesh.digest(node) for node in nodes}
        files = {
            node: sorted(
                p[2:] for p, h in digest.items() if any(digests[o].get(p) == h for o in nodes if o != node)
            )
            for node, digest in digests.items()
        }
        for i in range(OPS_PER_ROUND):
            node = self.rng.choice(nodes)
            kind = self.rng.choice(("create", "create", "edit", "edit", "delete", "rename", "concurrent"))
            candidates = [p for p in files[node] if self.edits[p] < MAX_EDITS_PER_PATH - 1]
            where = f"round {number} op {i} on {node}"
            if kind != "create" and not candidates:
                kind = "create"
            if kind == "create":
                data = self.content(where)
                self.mesh.write(node, f"d{self.rng.randrange(3)}/r{number}-{i}-{node}.bin", data)
                self.remember(sha(data), len(data), where)
            else:
                rel = self.rng.choice(candidates)
                files[node].remove(rel)
                path = shlex.quote(f"{FOLDER}/{rel}")
                if kind == "edit":
                    self.edit(node, rel, where)
                elif kind == "concurrent":  # the same path on a second node, before any sync
                    self.edit(node, rel, where)
                    other = [n for n in nodes if n != node and rel in files[n]]
                    if other:
                        second = self.rng.choice(other)
                        files[second].remove(rel)
                        self.edit(second, rel, f"{where}, concurrently on {second}")
                elif kind == "delete":
                    self.mesh.sh(node, self.mesh.as_user(f"rm -f {path}"))
                else:
                    target = shlex.quote(f"{FOLDER}/d{self.rng.randrange(3)}/mv{number}-{i}.bin")
                    self.mesh.sh(
                        node, self.mesh.as_user(f"mkdir -p $(dirname {target}) && mv {path} {target}")
                    )
            self.ops[kind] += 1

    def round(self, number: int) -> None:
        kind = FAULT_KINDS[number % len(FAULT_KINDS)]
        victim = self.rng.choice(self.mesh.nodes)
        others = [n for n in self.mesh.nodes if n != victim]
        if kind == "kill":
            source = self.rng.choice(others)
            where = f"round {number}: {victim}'s pull from {source} killed mid-transfer"
            digest, killed = self.mesh.kill_mid_transfer(source, victim, f"big/r{number}.bin")
            self.remember(digest, BIG, where)
            self.killed += killed
            self.operations(number, list(self.mesh.nodes))
            self.mesh.sync_round(self.mesh.nodes)
        else:
            fault: contextlib.AbstractContextManager[None] = {
                "pause": self.mesh.paused, "partition": self.mesh.cut_off, "full": self.mesh.full,
                "reboot": lambda node: self.mesh.rebooted(node, self.rng.uniform(0, 0.5)),
            }.get(kind, lambda _node: contextlib.nullcontext())(victim)  # fmt: skip
            with fault:
                writable = self.mesh.nodes if kind in ("none", "partition") else others
                self.operations(number, list(writable))
                self.mesh.sync_round(self.mesh.nodes if kind in ("none", "full", "partition") else others)
        self.faults[kind] += 1
        self.mesh.sync_round(self.mesh.nodes)  # healed: every node
        self.rounds += 1


def soak(lab: Lab, minutes: float, seed: int, echo: Callable[[str], Any]) -> dict[str, Any]:
    """Run the soak on the lab's bootstrapped mesh; the report's `ok`: identical, verified, nothing lost."""
    from replimesh.verify import verify

    started, load = time.monotonic(), os.getloadavg()[0]
    begun = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    mesh = LabMesh(lab, [host.name for host in lab.hosts()])
    if len(mesh.nodes) < 3:
        raise RuntimeError("meshctl soak needs a lab mesh of 3 nodes or more: meshctl lab up 5 && meshctl up")
    run = Soak(mesh, random.Random(seed))
    deadline = started + minutes * 60
    while time.monotonic() < deadline:
        run.round(run.rounds)
        elapsed = time.monotonic() - started
        echo(f"soak: round {run.rounds} done, {len(run.ledger)} contents written, {elapsed:.0f} s")
    final_rounds = 0
    while final_rounds < FINAL_ROUNDS and not mesh.identical():
        mesh.sync_round(mesh.nodes)
        final_rounds += 1
    report = verify(lab.inventory_path)
    kept: set[str] = set()
    for node in mesh.nodes:
        kept |= set(mesh.digest(node).values()) | mesh.kept(node)
    lost = {digest: where for digest, where in run.ledger.items() if digest not in kept}
    final = mesh.digest(mesh.nodes[0])
    result = {
        "seed": seed, "minutes": minutes, "nodes": len(mesh.nodes), "rounds": run.rounds,
        "started": begun, "load_at_start": round(load, 2), "commit": _commit(),
        "operations": dict(run.ops), "faults": dict(run.faults), "unison_killed": run.killed,
        "contents_written": len(run.ledger),
        "bytes_written": run.bytes_written, "files": len(final),
        "conflict_copies": sum("(conflict_on_" in path for path in final), "final_rounds": final_rounds,
        "identical": bool(report.get("identical")), "verify_exit": report.get("exit_code"),
        "lost": lost, "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    result["ok"] = result["identical"] and result["verify_exit"] == 0 and not lost
    return result


def _commit() -> str:
    """The checkout's commit the run measured ('' outside a git checkout, e.g. an installed wheel)."""
    git = ["git", "-C", os.path.dirname(__file__), "rev-parse", "--short", "HEAD"]
    proc = subprocess.run(git, capture_output=True, text=True, check=False)
    return proc.stdout.strip()


def render(result: dict[str, Any]) -> str:
    return (
        f"soak (seed {result['seed']}, {result['minutes']} min, {result['nodes']} nodes):"
        f" {result['rounds']} rounds; operations {result['operations']}; faults {result['faults']}"
        f" ({result['unison_killed']} Unison runs killed mid-pull);"
        f" {result['contents_written']} contents"
        f" written ({result['bytes_written']} bytes); at the end {result['files']} files"
        f" ({result['conflict_copies']} conflict copies), identical: {result['identical']}"
        f" (meshctl verify exit {result['verify_exit']}, {result['final_rounds']} final rounds);"
        f" lost: {len(result['lost'])}; {result['seconds']} s"
    )
