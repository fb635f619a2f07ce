"""What the fault and soak tests share: direct sync rounds, atomic writes, partitions, bytes kept anywhere."""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_edgerecord import worst_kind
from tests.e2e.conftest import BACKUPS, FOLDER, JAILS, MARKER, MESH_USER, Mesh

# The folder's versions on a node: what its own pulls overwrote or deleted (in no jail).
FOLDER_BACKUPS = f"{BACKUPS}/shared"
RUNNER = "/usr/local/sbin/replimesh-sync"


def as_user(script: str) -> str:
    return f"runuser -u {MESH_USER} -- sh -c {shlex.quote(script)}"


def replace_file(mesh: Mesh, node: str, rel: str, data: bytes) -> None:
    """Save a file as editors and most applications do: a temporary file (``*.tmp``, which the lab's mesh
    ignores) renamed over the old one. Unlike an in-place rewrite, the new inode is always seen by
    Unison's fast check, even for an edit of the same size within a second of the last sync."""
    tmp = f"{rel}.rmw.tmp"
    mesh.write(node, tmp, data)
    mesh.lab.sh(node, as_user(f"mv -f {shlex.quote(f'{FOLDER}/{tmp}')} {shlex.quote(f'{FOLDER}/{rel}')}"))


def sync_node(mesh: Mesh, node: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """One run of the node's runner (the edges it starts, or those named), as cron would start it."""
    proc = mesh.lab.lab.exec(node, ["runuser", "-u", MESH_USER, "--", RUNNER, "--json", *args], timeout)
    try:
        return json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(
            f"{node}: runner exited {proc.returncode}: {proc.stdout!r} {proc.stderr!r}"
        ) from exc


def sync_round(mesh: Mesh, nodes: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every node runs its edges at once (what sync.yml does, without Ansible's start-up cost)."""
    nodes = list(nodes or mesh.nodes)
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        return dict(zip(nodes, pool.map(lambda n: sync_node(mesh, n), nodes), strict=True))


def converge(mesh: Mesh, nodes: Sequence[str] | None = None, rounds: int = 4) -> int:
    """Sync rounds until every replica is identical; returns how many it took (at most `rounds`)."""
    for done in range(1, rounds + 1):
        sync_round(mesh, nodes)
        if mesh.converged(list(nodes) if nodes else None):
            return done
    raise AssertionError(
        f"replicas still differ after {rounds} rounds: {[mesh.digest(n) for n in nodes or mesh.nodes]}"
    )


def edge_results(reports: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    """'a<->b' -> (result, error) over a round's reports: both ends pull, the worse of the two pulls."""
    found: dict[str, tuple[str, str | None]] = {}
    for node, report in reports.items():
        for edge in report["edges"]:
            errors = [f["error"] for f in edge.get("folders", []) if f.get("error")]
            name = "<->".join(sorted((node, edge["peer"])))
            mine = (edge["result"], errors[0] if errors else None)
            if name not in found or worst_kind([found[name][0], mine[0]]) == mine[0]:
                found[name] = mine
    return found


def backup_hashes(mesh: Mesh, node: str) -> set[str]:
    """sha256 of every version the node keeps in its backups of the folder."""
    out = mesh.lab.sh(node, f"find {FOLDER_BACKUPS} -type f -print0 | xargs -0 -r sha256sum")
    return {line[:64] for line in out.splitlines()}


def hashes_kept(mesh: Mesh) -> set[str]:
    """Every content the mesh still holds anywhere: current files, conflict copies and backups."""
    kept: set[str] = set()
    for node in mesh.nodes:
        kept |= set(mesh.digest(node).values()) | backup_hashes(mesh, node)
    return kept


def conflict_copies(digest: dict[str, str], rel: str) -> dict[str, str]:
    """Unison 2.52's copies of `rel`: ``NAME (conflict_on_DATE[_was_deleted]).EXT``."""
    stem, dot, ext = rel.rpartition(".") if "." in rel else (rel, "", "")
    prefix = f"./{stem} (conflict_on_"
    return {p: h for p, h in digest.items() if p.startswith(prefix) and p.endswith(f"){dot}{ext}")}


def container_pid(mesh: Mesh, node: str) -> int:
    container = mesh.lab.lab.resolve(node).container
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", container], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def _iptables(pid: int, *rule: str) -> None:
    # The host's iptables in the container's network namespace: only that lab host's traffic changes.
    subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", *rule], check=True, capture_output=True)


@contextlib.contextmanager
def partition(mesh: Mesh, side_a: Sequence[str], side_b: Sequence[str]) -> Iterator[None]:
    """Cut every link between the two sides (REJECT, so ssh fails at once); the control node still
    reaches every host. Healed on exit, whatever happened."""
    address = {n: mesh.lab.lab.resolve(n).address for n in [*side_a, *side_b]}
    rules = []
    for mine, theirs in ((side_a, side_b), (side_b, side_a)):
        for node in mine:
            pid = container_pid(mesh, node)
            for other in theirs:
                for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
                    rule = (
                        chain,
                        flag,
                        address[other],
                        "-j",
                        "REJECT",
                        "-m",
                        "comment",
                        "--comment",
                        "rmfault",
                    )
                    rules.append((pid, rule))
    try:
        for pid, rule in rules:
            _iptables(pid, "-I", *rule)
        yield
    finally:
        for pid, rule in rules:
            with contextlib.suppress(subprocess.CalledProcessError):
                _iptables(pid, "-D", *rule)


def restore_marker(mesh: Mesh, node: str) -> None:
    """Put the folder marker back as the mesh_sync role writes it (root-owned, 0644)."""
    text = mesh.lab.sh(mesh.nodes[0] if mesh.nodes[0] != node else mesh.nodes[1], f"cat {FOLDER}/{MARKER}")
    path = f"{FOLDER}/{MARKER}"
    mesh.lab.sh(
        node, f"printf %s {shlex.quote(text)} > {path} && chown root:root {path} && chmod 0644 {path}"
    )


class Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self.start, 1)


class InnerDisk:
    """A disk of its own inside a node's folder, FOLDER/photos: a tmpfs outside the folder, bound in (an
    unmount keeps its files, as a real disk does), guarded by bootstrap.yml on that node alone."""

    def __init__(self, mesh: Mesh, node: str, *bootstrap_args: str) -> None:
        self.mesh, self.node, self.args = mesh, node, bootstrap_args
        self.disk, self.path = "/mnt/rm-photos", f"{FOLDER}/photos"
        self.jailed = f"{JAILS}/*{self.path}"  # the same disk as each peer's jail on the node shows it

    def __enter__(self) -> InnerDisk:
        self.mesh.lab.sh(
            self.node,
            f"mkdir -p {self.disk} {self.path} && mount -t tmpfs -o size=16m,mode=0775 tmpfs {self.disk}"
            f" && chown {MESH_USER}:{MESH_USER} {self.disk} && {self.mount_command}",
        )
        return self

    @property
    def mount_command(self) -> str:
        return f"mount --bind {self.disk} {self.path}"

    def guard(self) -> None:
        proc = self.mesh.playbook("bootstrap.yml", "--limit", self.node, *self.args, timeout=600)
        assert proc.returncode == 0, proc.stdout[-6000:]
        assert "inner disk: photos" in self.mesh.lab.sh(self.node, f"cat {FOLDER}/{MARKER}")

    def unmount(self) -> None:
        """Gone from the host and from every jail, as on a host whose mounts propagate (systemd's)."""
        self.mesh.lab.sh(
            self.node,
            f"umount {self.path} && for m in {self.jailed}; do ! mountpoint -q $m || umount $m; done",
        )

    def mount(self) -> None:
        self.mesh.lab.sh(self.node, self.mount_command)

    def __exit__(self, *_exc: object) -> None:
        self.mesh.lab.sh(
            self.node,
            f"for m in {self.jailed} {self.path}; do while mountpoint -q $m; do umount $m; done; done;"
            f" umount {self.disk}; rmdir {self.disk} {self.path} || true;"
            f" sed -i '\\|^{self.path} |d' /etc/fstab",  # the disk's jail lines bootstrap.yml wrote
        )
        restore_marker(self.mesh, self.node)
