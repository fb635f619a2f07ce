"""Soak: rounds of random creates, edits, deletes and renames on 5 nodes, with a paused node or a partition
in some rounds; a ledger of every content ever written. At the end every replica is identical and every
ledger entry still exists somewhere: a current file, a conflict copy or a backup.

Bounded: 6 rounds by default (CI); ``--soak-rounds N`` or REPLIMESH_SOAK_ROUNDS=N for a longer run, and
REPLIMESH_SOAK_SEED=S to replay one (the seed is printed).
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import shlex
import time
from collections.abc import Iterator

import pytest

from replimesh.lab.errors import LabError
from tests.e2e.conftest import FOLDER, Mesh, sha
from tests.e2e.faults import Timer, as_user, backup_hashes, converge, partition, replace_file, sync_round
from tests.reliability import record

pytestmark = pytest.mark.lab
DEFAULT_ROUNDS = 6
OPS_PER_ROUND = 10
# Each node keeps mesh_sync_backups (5) old versions per path: a path is edited at most this often, so
# the soak measures loss, not the retention limit an operator chose.
MAX_EDITS_PER_PATH = 4


@pytest.fixture
def soak_rounds(request: pytest.FixtureRequest) -> int:
    option = request.config.getoption("soak_rounds")
    return int(option or os.environ.get("REPLIMESH_SOAK_ROUNDS") or DEFAULT_ROUNDS)


def pause(mesh: Mesh, node: str, attempts: int = 3) -> None:
    """docker pause; on a loaded machine the cgroup freezer sometimes fails ("unable to freeze"): retry."""
    for attempt in range(1, attempts + 1):
        try:
            mesh.lab.lab.fault("pause", node)
            return
        except LabError:
            if attempt == attempts:
                raise
            time.sleep(attempt)


@contextlib.contextmanager
def fault(mesh: Mesh, kind: str, rng: random.Random) -> Iterator[list[str]]:
    """Inject the round's fault; yields the nodes that can be written to and synced meanwhile."""
    if kind == "pause":
        paused = rng.choice(mesh.nodes)
        pause(mesh, paused)
        try:
            yield [n for n in mesh.nodes if n != paused]
        finally:
            mesh.lab.lab.fault("unpause", paused)
    elif kind == "partition":
        nodes = list(mesh.nodes)
        rng.shuffle(nodes)
        with partition(mesh, nodes[:2], nodes[2:]):
            yield list(mesh.nodes)
    else:
        yield list(mesh.nodes)


class Soak:
    def __init__(self, mesh: Mesh, rng: random.Random) -> None:
        self.mesh, self.rng = mesh, rng
        self.ledger: dict[str, str] = {}  # sha256 -> where it was first written
        self.ops: collections.Counter[str] = collections.Counter()
        self.edits: collections.Counter[str] = collections.Counter()
        self.bytes_written = 0

    def content(self, label: str) -> bytes:
        size = self.rng.choice((0, 1, 100, 4096, 30_000, self.rng.randrange(1, 60_000)))
        return f"{label}\n".encode() + self.rng.randbytes(size)

    def remember(self, data: bytes, where: str) -> None:
        self.ledger.setdefault(sha(data), where)
        self.bytes_written += len(data)

    def round(self, number: int, nodes: list[str]) -> None:
        # Only files that existed at the last sync are edited, deleted or renamed, each path once per node
        # per round: what a node overwrites before any sync saw it is the user's own doing, not the mesh's.
        files = {n: sorted(p[2:] for p in self.mesh.digest(n)) for n in nodes}
        for i in range(OPS_PER_ROUND):
            node = self.rng.choice(nodes)
            kind = self.rng.choice(("create", "create", "edit", "edit", "delete", "rename"))
            candidates = [p for p in files[node] if self.edits[p] < MAX_EDITS_PER_PATH]
            if kind != "create" and not candidates:
                kind = "create"
            where = f"round {number} op {i} on {node}"
            if kind == "create":
                rel = f"d{self.rng.randrange(3)}/r{number}-{i}-{node}.bin"
                data = self.content(where)
                self.mesh.write(node, rel, data)
                self.remember(data, where)
            else:
                rel = self.rng.choice(candidates)
                files[node].remove(rel)
                path = shlex.quote(f"{FOLDER}/{rel}")
                if kind == "edit":
                    data = self.content(where)
                    replace_file(self.mesh, node, rel, data)
                    self.remember(data, where)
                    self.edits[rel] += 1
                elif kind == "delete":
                    self.mesh.lab.sh(node, as_user(f"rm -f {path}"))
                else:
                    target = shlex.quote(f"{FOLDER}/d{self.rng.randrange(3)}/mv{number}-{i}.bin")
                    self.mesh.lab.sh(node, as_user(f"mkdir -p $(dirname {target}) && mv {path} {target}"))
            self.ops[kind] += 1


def test_soak(mesh: Mesh, soak_rounds: int) -> None:
    timer = Timer()
    seed = int(os.environ.get("REPLIMESH_SOAK_SEED") or time.time_ns() % 1_000_000)
    print(f"\nsoak: seed {seed} (replay: REPLIMESH_SOAK_SEED={seed}), {soak_rounds} rounds, 5 nodes")
    rng = random.Random(seed)
    soak = Soak(mesh, rng)
    faults: collections.Counter[str] = collections.Counter()
    for number in range(soak_rounds):
        kind = ("none", "pause", "partition")[number % 3]
        with fault(mesh, kind, rng) as nodes:
            soak.round(number, nodes)
            sync_round(mesh, nodes)
        faults[kind] += 1
        sync_round(mesh)
    rounds = converge(mesh, rounds=6)

    final = mesh.digest(mesh.nodes[0])
    kept = set()
    backups = 0
    for node in mesh.nodes:
        kept |= set(mesh.digest(node).values())
        node_backups = backup_hashes(mesh, node)
        backups += len(node_backups)
        kept |= node_backups
    lost = {h: where for h, where in soak.ledger.items() if h not in kept}
    conflicts = sum("(conflict_on_" in p for p in final)
    print(
        f"soak: seed {seed}: {soak_rounds} rounds, ops {dict(soak.ops)}, faults {dict(faults)}; "
        f"{len(soak.ledger)} contents written ({soak.bytes_written} bytes); at the end {len(final)} files "
        f"({conflicts} conflict copies) identical on 5 nodes after {rounds} more rounds, {backups} backups; "
        f"lost {len(lost)}; {timer.seconds} s"
    )
    assert not lost, f"seed {seed}: contents found nowhere: {lost}"
    record(
        "load",
        "soak: random creates, edits, deletes, renames; paused node and partition rounds",
        seed=seed,
        rounds=soak_rounds,
        nodes=5,
        operations=sum(soak.ops.values()),
        faults=faults["pause"] + faults["partition"],
        files=len(final),
        contents_written=len(soak.ledger),
        bytes=soak.bytes_written,
        conflict_copies=conflicts,
        files_lost=len(lost),
    )
