"""Where watch mode keeps its state on a node, and whether the watcher is alive.

Standard library only: the runner (metrics), the watcher and its supervisor (on the node) and the
mesh_health module all read it. The mesh_sync role creates ``{state_dir}/watch`` on watch-mode nodes
and removes it when a node goes back to cron mode, so the directory says whether a watcher is expected.
"""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HEARTBEAT_S = 30.0  # the watcher rewrites its record at least this often
RECORD = "watcher.json"
PROCESS_NAME = b"replimesh-watch"
PID_MAX = 1 << 22


def watch_dir(state_dir: str) -> Path:
    return Path(state_dir) / "watch"


def read_record(state_dir: str) -> dict[str, Any] | None:
    raw = read_small(watch_dir(state_dir) / RECORD, 1 << 20)  # the mesh user writes it; root may read it
    try:
        data = json.loads(raw.decode("utf-8")) if raw is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def process_alive(pid: object) -> bool:
    """A live process that is a watcher (a recycled pid of something else does not count)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return PROCESS_NAME in cmdline


def _age(value: object, now: float) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return now - datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def watcher_state(state_dir: str, now: float | None = None) -> dict[str, Any] | None:
    """None when this node is not in watch mode; else whether its watcher is alive, and what it did last."""
    if not watch_dir(state_dir).is_dir():
        return None
    record = read_record(state_dir) or {}
    age = _age(record.get("heartbeat"), time.time() if now is None else now)
    alive = process_alive(record.get("pid")) and age is not None and age < 3 * HEARTBEAT_S
    keys = ("pid", "started", "heartbeat", "last_event", "last_sync", "last_result", "syncs", "forward")
    return {"alive": alive, **{key: record.get(key) for key in keys}}


def watcher_up(state_dir: str) -> bool | None:
    """For the metrics textfile: None when no watcher is expected."""
    state = watcher_state(state_dir)
    return None if state is None else bool(state["alive"])


def read_small(path: str | Path, limit: int = 4096) -> bytes | None:
    """At most ``limit`` bytes of a regular file, opened without following a link and without blocking
    (a FIFO put there returns at once): for root reading a file the mesh user can replace."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def pid_of(path: Path) -> int | None:
    """The pid in a pid file: a number within Linux's pid range (pid_max is at most 2**22)."""
    data = read_small(path, 32)
    try:
        pid = int(data.decode("ascii").strip()) if data else None
    except (UnicodeDecodeError, ValueError):
        return None
    return pid if pid is not None and 0 < pid <= PID_MAX else None


def process_matches(pid: int, uid: int, *argv_words: bytes, proc: str = "/proc") -> bool:
    """Whether ``pid`` is a live process of ``uid`` whose command line holds every one of ``argv_words``:
    what root checks before it signals a pid read from a file the mesh user can write."""
    if pid <= 0:
        return False
    try:
        owner = os.stat(f"{proc}/{pid}").st_uid
        argv = Path(f"{proc}/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return owner == uid and all(any(word in arg for arg in argv) for word in argv_words)


def signal_pid(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
