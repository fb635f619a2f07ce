"""Large changes spread like a swarm: a node that has pulled them becomes a source for them.

In a full mesh every node pulls a change from the node where it was made, so a large file leaves the writer
once per peer, and the writer's uplink is the limit. For a batch of at least ``swarm_min_bytes`` the writer
(the *origin*) tells one peer at a time instead, each with a list of peers it is responsible for. A peer
that has pulled the batch says so (an *ack* notice), then does the same for its list while the origin goes
on with the next peer: after k rounds 2**k nodes hold the file (a binomial tree), and every node uploads
about one copy per round.

- Nothing changes in who writes what: each node still pulls, with its own client and profile, from a peer
  that told it (its parent). A parent only ever serves what it has: it tells its children after its own
  pull succeeded, and Unison moves only whole, verified files.
- A child that cannot be told (down, unreachable) is skipped and its list taken back by its parent. A child
  whose pull fails pulls from the origin itself (its peer in a full mesh); if that fails too its ack says
  so and the parent takes its list back. So does a parent whose child does not ack in time (slow, down
  since, or an older node that passes nothing on): a node told twice pulls twice, the second time a
  no-op, where a node never told would wait for the scheduled round.
- A notice's header line carries this (mesh_notify): ``{"relay": {"id", "origin", "bytes", "to"}}`` to a
  child, ``{"ack": {"id", "ok"}}`` to a parent. Older nodes drop a line that is not a pair: to them it is
  a plain notice (and they serve their own pull only), so a mixed mesh loses nothing.

Installed beside the runner; standard library only.
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_IDS = 256  # acks remembered per watcher (older ones are dropped)
RATE_FLOOR = 1 << 20  # bytes/s below which an estimate of the link is not believed
ACK_WAIT_FLOOR_S = 5.0
ACK_WAIT_MAX_S = 600.0
MAX_SIZED_ENTRIES = 10_000  # a batch's size is summed over at most this many files (a large tree: "large")


@dataclass(frozen=True)
class Relay:
    """What a relay notice asks of its receiver: pull the paths, ack, then pass them on to ``to``."""

    id: str
    origin: str
    bytes: int
    to: tuple[str, ...]

    def header(self) -> dict[str, Any]:
        return {"relay": {"id": self.id, "origin": self.origin, "bytes": self.bytes, "to": list(self.to)}}


def new_id() -> str:
    return secrets.token_hex(8)


def batch_bytes(folders: Sequence[Any], plan: Mapping[str, list[str] | None]) -> int:
    """The bytes of the files a batch names (``plan``: folder name -> paths; None, a whole folder, counts
    for nothing: the swarm is for files the watcher saw change). Links are not followed; a directory
    counts the files below it, up to MAX_SIZED_ENTRIES files in all (then it is taken as large)."""
    where = {folder.name: folder.path for folder in folders}
    total, seen = 0, 0
    for name, paths in plan.items():
        for rel in paths or []:
            stack = [os.path.join(where.get(name, "/nonexistent"), rel)]
            while stack:
                path = stack.pop()
                seen += 1
                if seen > MAX_SIZED_ENTRIES:
                    return max(total, 1 << 40)
                try:
                    mode = os.lstat(path)
                    if stat.S_ISDIR(mode.st_mode):
                        stack += [entry.path for entry in os.scandir(path)]
                    elif stat.S_ISREG(mode.st_mode):
                        total += mode.st_size
                except OSError:
                    continue
    return total


def split(to: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """The children a holder tells, in order, each with the nodes it is then responsible for: the first
    takes the larger half, so that the subtrees that start earlier are the larger ones (binomial tree)."""
    rest, out = list(to), []
    while rest:
        keep = len(rest) // 2  # what the holder keeps for its later children
        child, theirs = rest[0], rest[1 : len(rest) - keep]
        out.append((child, tuple(theirs)))
        rest = rest[len(rest) - keep :]
    return out


def parse_relay(item: object, peers: Sequence[str], me: str) -> Relay | None:
    """A relay header from a peer, or None if it is not one we act on. The list is cut to this node's own
    active peers (a notice never makes a node talk to anyone else), each named once, never the origin or
    this node."""
    if not isinstance(item, dict) or not isinstance(item.get("relay"), dict):
        return None
    body = item["relay"]
    rid, origin, size, to = body.get("id"), body.get("origin"), body.get("bytes"), body.get("to")
    if not (isinstance(rid, str) and 0 < len(rid) <= 64 and rid.isalnum()):
        return None
    if not isinstance(origin, str) or isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return None
    if not isinstance(to, list):
        return None
    known = set(peers) - {origin, me}
    names = [n for n in dict.fromkeys(to) if isinstance(n, str) and n in known]
    return Relay(rid, origin, size, tuple(names))


def parse_ack(item: object) -> tuple[str, bool] | None:
    if not isinstance(item, dict) or not isinstance(item.get("ack"), dict):
        return None
    rid, ok = item["ack"].get("id"), item["ack"].get("ok")
    if not (isinstance(rid, str) and 0 < len(rid) <= 64) or not isinstance(ok, bool):
        return None
    return rid, ok


def ack_header(rid: str, ok: bool) -> dict[str, Any]:
    return {"ack": {"id": rid, "ok": ok}}


@dataclass
class Acks:
    """Acks received, by (peer, relay id); a relay waits on them."""

    _cond: threading.Condition = field(default_factory=threading.Condition)
    _got: dict[tuple[str, str], bool] = field(default_factory=dict)

    def put(self, peer: str, rid: str, ok: bool) -> None:
        with self._cond:
            self._got[(peer, rid)] = ok
            while len(self._got) > MAX_IDS:
                self._got.pop(next(iter(self._got)))
            self._cond.notify_all()

    def wait(self, peer: str, rid: str, timeout: float) -> bool | None:
        """The child's ack (True: it holds the batch; False: it could not pull it), None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (peer, rid) not in self._got:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._got.pop((peer, rid))


@dataclass
class Rate:
    """The speed of a pull as this node's acks measured it (bytes/s); how long to wait for the next ack."""

    bytes_per_s: float = 25e6  # about a 200 Mbit/s link until measured
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, size: int, seconds: float) -> None:
        if size >= RATE_FLOOR and seconds > 0:
            with self._lock:
                self.bytes_per_s = 0.5 * self.bytes_per_s + 0.5 * max(size / seconds, RATE_FLOOR)

    def wait_s(self, size: int) -> float:
        """Twice the expected pull, at least ACK_WAIT_FLOOR_S, at most ACK_WAIT_MAX_S."""
        with self._lock:
            expected = size / self.bytes_per_s
        return min(max(ACK_WAIT_FLOOR_S, 2 * expected + ACK_WAIT_FLOOR_S), ACK_WAIT_MAX_S)


Send = Callable[[str, Mapping[str, "list[str] | None"], dict[str, Any]], bool]


def relay(
    relay_to: Relay,
    paths: Mapping[str, list[str] | None],
    send: Send,
    acks: Acks,
    rate: Rate,
    note: Callable[[str], None] = lambda _message: None,
) -> list[str]:
    """Tell the children one at a time (each with its share of ``relay_to.to``), waiting for each one's ack
    up to the expected time of its pull; the children told, in order. ``send(peer, paths, header)`` sends
    a notice and says whether it was delivered."""
    told: list[str] = []
    rest = list(relay_to.to)
    while rest:
        child, theirs = split(rest)[0]
        rest = rest[1 + len(theirs) :]
        header = Relay(relay_to.id, relay_to.origin, relay_to.bytes, theirs).header()
        started = time.monotonic()
        if not send(child, paths, header):
            note(f"relay {relay_to.id}: {child} not told; its {len(theirs)} node(s) are taken back")
            rest = list(theirs) + rest
            continue
        told.append(child)
        ok = acks.wait(child, relay_to.id, rate.wait_s(relay_to.bytes))
        if ok:
            rate.seen(relay_to.bytes, time.monotonic() - started)
        elif ok is False:
            note(f"relay {relay_to.id}: {child} could not pull; its {len(theirs)} node(s) are taken back")
            rest = list(theirs) + rest
        else:  # slow, down since, or an older node that passes nothing on: its list is told from here too
            note(f"relay {relay_to.id}: no ack from {child} in time; its {len(theirs)} node(s) taken back")
            rest = list(theirs) + rest
    return told
