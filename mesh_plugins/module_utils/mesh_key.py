"""A node's mesh key through a rotation, without a moment where an edge has no key its peer accepts.

Standard library only and self-contained, so the ``mesh_key`` module ships it alone. The rotation
(``rotate-keys.yml``) goes in three phases; the control node's key store record of the node
(``X.keys/NODE.json``) and the node's key files say at every moment which phase a node is in:

==========  =======================================  ==============================================
state       key store record                          node
==========  =======================================  ==============================================
idle        ``public_key`` = current                  ``id_ed25519`` (no ``id_ed25519.next``)
prepared    ``public_key`` = current, ``next`` = new  ``id_ed25519`` and ``id_ed25519.next`` (new)
switched    ``public_key`` = old, ``next`` = current  ``id_ed25519`` is the new key
==========  =======================================  ==============================================

Peers accept both keys of a record with ``next_public_key`` (mesh_member renders two lines), so the
switch (``id_ed25519.next`` renamed over ``id_ed25519``) can happen at any moment of phase 2; it is done
holding every edge lock of the node, so no Unison run of the node reads the key files half-switched
(ssh reads the public half and the private half separately). Phase 3 records the new key alone and
the peers drop the old one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

IDLE = "idle"
PREPARED = "prepared"
SWITCHED = "switched"
UNKNOWN = "unknown"
LOCK_POLL_S = 0.05


class KeyRotationError(Exception):
    """The node's keys are not what the rotation expects, or its edges stay busy too long."""


@dataclass(frozen=True)
class KeyPaths:
    """The node's key files: the key in use and, during a rotation, the next one beside it."""

    key: str

    @property
    def public(self) -> str:
        return f"{self.key}.pub"

    @property
    def next(self) -> str:
        return f"{self.key}.next"

    @property
    def next_public(self) -> str:
        return f"{self.key}.next.pub"


def key_id(line: str | None) -> str | None:
    """``TYPE BASE64`` of a public key line (its comment dropped); None for none."""
    if not line:
        return None
    fields = line.split()
    return " ".join(fields[:2]) if len(fields) >= 2 else None


def rotation_state(current: str, next_key: str | None, stored: str | None, stored_next: str | None) -> str:
    """Where a node is in a rotation, from its keys (current, next) and its key store record.

    ``unknown``: the key in use is neither of the stored ones (a reinstalled node, or a key replaced by
    hand): the rotation refuses it; add-node.yml accepts new keys.
    """
    current, next_key, stored, stored_next = map(key_id, (current, next_key, stored, stored_next))
    if stored is None or current == stored:
        return PREPARED if next_key is not None and next_key == stored_next else IDLE
    if current == stored_next:
        return SWITCHED
    return UNKNOWN


def begin_record(record: Mapping[str, str], current: str, next_key: str) -> dict[str, str]:
    """The key store record for phase 1: peers keep the key they trust and learn the next one."""
    trusted = key_id(record.get("public_key")) or current
    return {**record, "public_key": trusted, "next_public_key": key_id(next_key) or next_key}


def finish_record(record: Mapping[str, str], current: str) -> dict[str, str]:
    """The key store record for phase 3: the new key alone."""
    done = {k: v for k, v in record.items() if k != "next_public_key"}
    return {**done, "public_key": key_id(current) or current}


@contextlib.contextmanager
def hold_locks(
    paths: Sequence[str], timeout: float, clock: Callable[[], float] = time.monotonic
) -> Iterator[None]:
    """Hold the flock of every path (the runner's per-edge locks) for the body; poll, never block.

    The runner takes an edge's lock without waiting (LOCK_NB) and reports "busy" when it is held, so
    holding several here never deadlocks with it. Raises KeyRotationError naming the edges still busy
    when `timeout` seconds pass; nothing is held afterwards either way.
    """
    deadline = clock() + timeout
    fds: list[int] = []
    try:
        for path in sorted(set(paths)):
            fd = os.open(path, os.O_RDWR)
            fds.append(fd)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if clock() >= deadline:
                        raise KeyRotationError(
                            f"edge lock {path} stayed held for {timeout:g} s (a long sync is running): "
                            "nothing was switched; run again when it is done, or raise the lock timeout"
                        ) from None
                    time.sleep(LOCK_POLL_S)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # releases its lock


def lock_paths(locks_dir: str, peers: Sequence[str], existing: Sequence[str]) -> list[str]:
    """The edge locks to hold while switching: one per peer, and any other lock file found there."""
    names = {f"{peer}.lock" for peer in peers} | {name for name in existing if name.endswith(".lock")}
    return [os.path.join(locks_dir, name) for name in sorted(names)]
