"""Recovering the Unison archive locks that a killed run leaves behind, safely: never a blanket ignorelocks.

Unison 2.52 locks a pair's archives with a file ``lkHASH`` in the edge's Unison directory (the client's,
and the server's on the peer: on a node both are ``UNISON_DIR/PEER``) while it reads or commits them. A
run killed at that moment leaves the file, and every later run of the edge stops with "the archives are
locked". A node removes such a file only when both hold:

- it holds the runner's own flock of that edge (no other run on this node is syncing it), and
- no Unison process on the node that works in that edge's directory could hold it: neither a client a
  runner started nor a server a peer's ssh started (both run with ``UNISON=UNISON_DIR/PEER`` in their
  environment) is alive, or every one of them started more than ``LOCK_AGE_MARGIN_S`` after the lock file
  was made. A process only ever holds a lock it made itself, after it started; so a peer pulling at the
  moment of the check (a watch-mode node pulls often) does not keep a killed run's lock forever.

A process whose environment or start time cannot be read counts as a holder: when in doubt, the lock
stays. A lock's age comes from its mtime and the wall clock, a process's from the kernel's boot-time
clock; the margin absorbs their small differences. Only a wall-clock step forward larger than the margin,
while a live run holds its lock, could make that lock look older than its holder; even then the runners'
flocks on both ends still keep two runs of one pair apart.
Standard library only: the runner ships this file beside itself.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

LOCK_RE = re.compile(r"^lk[0-9a-f]{32}$")
LOCKED_TEXT = "the archives are locked"
LOCK_HOST_RE = re.compile(r"^The file \S+ on host (\S+) should be deleted", re.MULTILINE)
# A live Unison that started this long after a lock file was made cannot be its holder.
LOCK_AGE_MARGIN_S = 10.0
STAT_STARTTIME = 19  # /proc/PID/stat field 22 (starttime), counted from field 3 (state)


def unison_pids(edge_dir: str, proc: str = "/proc") -> list[int]:
    """PIDs of live Unison processes whose UNISON directory is `edge_dir` (unreadable ones included)."""
    wanted = f"UNISON={edge_dir}".encode()
    found = []
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            comm = Path(entry.path, "comm").read_text(encoding="utf-8", errors="replace").strip()
            if not comm.startswith("unison"):
                continue
            environ = Path(entry.path, "environ").read_bytes()
        except FileNotFoundError:
            continue  # the process ended while we looked
        except OSError:
            found.append(int(entry.name))  # a Unison we cannot look into: assume it is this edge's
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


def stale_lock_files(edge_dir: str) -> list[Path]:
    try:
        return sorted(p for p in Path(edge_dir).iterdir() if LOCK_RE.match(p.name) and p.is_file())
    except OSError:
        return []


def process_age_s(pid: int, proc: str = "/proc") -> float | None:
    """Seconds since the process started (the kernel's boot-time clock); None when unreadable."""
    try:
        stat = Path(proc, str(pid), "stat").read_text(encoding="utf-8", errors="replace")
        uptime = float(Path(proc, "uptime").read_text(encoding="utf-8").split()[0])
        ticks = int(stat.rsplit(")", 1)[1].split()[STAT_STARTTIME])  # comm, in (), may hold anything
    except (OSError, ValueError, IndexError):
        return None
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def could_hold(lock_age_s: float, process_age_s: float | None) -> bool:
    """Whether a process of that age may have made (and so hold) a lock of that age."""
    return process_age_s is None or process_age_s + LOCK_AGE_MARGIN_S >= lock_age_s


def recover_stale_locks(
    edge_dir: str,
    alive: Callable[[str], list[int]] = unison_pids,
    age: Callable[[int], float | None] = process_age_s,
) -> tuple[list[str], list[int]]:
    """Remove the edge's Unison lock files that no live Unison process of the edge can hold.

    The caller holds the edge's runner flock. Returns (names removed, PIDs of live Unison processes that
    may hold a lock kept).
    """
    locks = stale_lock_files(edge_dir)
    if not locks:
        return [], []
    pids = alive(edge_dir)
    ages = {pid: age(pid) for pid in pids}
    now = time.time()
    removed, holders = [], set()
    for lock in locks:
        try:
            lock_age = now - lock.lstat().st_mtime
        except FileNotFoundError:
            continue
        if held_by := [pid for pid in pids if could_hold(lock_age, ages[pid])]:
            holders.update(held_by)
            continue
        try:
            lock.unlink()
        except FileNotFoundError:
            continue
        removed.append(lock.name)
    return removed, sorted(holders)


def locked_error(output: str, edge_dir: str) -> tuple[str, str] | None:
    """(kind, error) for a run Unison refused because the edge's archives are locked; None otherwise.

    A lock a live Unison of this edge holds here is respected: the edge is busy. Otherwise the lock is a
    peer's (a live run there, or a stale lock that node's next run removes) or one this node's next run
    removes: the edge failed this time, and says where the lock is.
    """
    if LOCKED_TEXT not in output:
        return None
    if pids := unison_pids(edge_dir):
        return "busy", f"a live Unison run of this edge holds its archive lock (pid {pids[0]})"
    hosts = sorted(set(LOCK_HOST_RE.findall(output))) or ["?"]
    return "failed", (
        f"archives locked on {', '.join(hosts)}: a run there is alive, or it was killed and that node's "
        "next run removes its stale lock"
    )
