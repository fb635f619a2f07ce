"""Bounds on the versions a node keeps: an age and a total size per folder, oldest first.

Unison keeps the versions (``backup``, ``maxbackups``: a count per file) in BACKUP_DIR/FOLDER; nothing in
Unison bounds their age or their total size, so the runner prunes them at most hourly: every version
kept longer than ``max_age_days`` goes, then the oldest until the folder's versions fit in
``max_percent`` of the file system that holds them. BACKUP_DIR/.retired (what removed edges' server ends
kept, in an earlier layout) is pruned by the same rules. A version's age is the time it was kept (its
ctime: Unison moves or copies it there), not its own mtime. Links are never followed.

Standard library only: the runner (as the mesh user) uses it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

DAY_S = 86400
clock = time.time  # "now" for the age bound (tests move it)
RETIRED = ".retired"  # BACKUP_DIR/.retired: versions removed edges' server ends kept (mesh_jail)


@dataclass(frozen=True)
class Kept:
    path: str
    size: int
    kept_at: float


@dataclass(frozen=True)
class Pruned:
    files: int = 0
    bytes: int = 0


def kept_files(root: str) -> Iterator[Kept]:
    """Every file (or link) below ``root``, without following links."""
    for directory, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            path = os.path.join(directory, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            yield Kept(path, info.st_blocks * 512 if info.st_blocks else info.st_size, info.st_ctime)


def size_bound(root: str, max_percent: int) -> int | None:
    """The bytes ``max_percent`` of the file system holding ``root`` amounts to (None: no bound)."""
    if max_percent <= 0:
        return None
    try:
        stats = os.statvfs(root)
    except OSError:
        return None
    return stats.f_blocks * stats.f_frsize * max_percent // 100


def to_prune(files: list[Kept], now: float, max_age_days: int, max_bytes: int | None) -> list[Kept]:
    """The versions to remove: those older than the age bound, then the oldest over the size bound."""
    oldest_first = sorted(files, key=lambda kept: (kept.kept_at, kept.path))
    cutoff = now - max_age_days * DAY_S if max_age_days > 0 else None
    doomed = [kept for kept in oldest_first if cutoff is not None and kept.kept_at < cutoff]
    left = [kept for kept in oldest_first if cutoff is None or kept.kept_at >= cutoff]
    if max_bytes is not None:
        total = sum(kept.size for kept in left)
        for kept in left:
            if total <= max_bytes:
                break
            doomed.append(kept)
            total -= kept.size
    return doomed


def prune(root: str, max_age_days: int, max_percent: int, now: float | None = None) -> Pruned:
    """Remove what ``to_prune`` names below ``root``, then the directories that became empty."""
    if not os.path.isdir(root) or os.path.islink(root):
        return Pruned()
    doomed = to_prune(list(kept_files(root)), clock() if now is None else now, max_age_days,
                      size_bound(root, max_percent))  # fmt: skip
    files = size = 0
    for kept in doomed:
        try:
            os.unlink(kept.path)
        except OSError:
            continue
        files, size = files + 1, size + kept.size
    if files:
        for directory, _dirs, _files in os.walk(root, topdown=False):
            if directory != root:
                with contextlib.suppress(OSError):
                    os.rmdir(directory)  # only an empty one goes
    return Pruned(files, size)
