"""Removing what interrupted Unison runs leave in a replica: stale temporary files and directories.

Unison writes a new file or directory under a temporary name (``.unison.NAME.HASH.unison.tmp``) and
renames it into place. When the rename is refused (another edge delivered the same file first:
"Destination updated during synchronization") or the run is killed, the temporary entry stays; Unison
never syncs it, and never deletes it either. A node cleans its own folders: only entries older than
the longest a run may live (the runner's timeout), so a live run's temporary file is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

TEMP_RE = re.compile(r"^\.unison\..+\.unison\.tmp$")


def clean_stale_temps(root: str, older_than_s: float, now: float | None = None) -> list[str]:
    """Delete Unison temporary entries under `root` last modified more than `older_than_s` ago.

    Returns the removed paths, relative to `root`. Symlinks are never followed.
    """
    cutoff = (time.time() if now is None else now) - older_than_s
    removed: list[str] = []
    for current, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            if not TEMP_RE.match(name):
                continue
            path = os.path.join(current, name)
            try:
                stat = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.st_mtime >= cutoff:
                continue
            if name in dirs and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                Path(path).unlink(missing_ok=True)
            removed.append(os.path.relpath(path, root))
        # Never walk into a temporary directory, removed or still in use.
        dirs[:] = [d for d in dirs if not TEMP_RE.match(d)]
    return removed


def due(stamp: Path, every_s: float, now: float | None = None) -> bool:
    """True when `stamp` is missing or older than `every_s`; then touches it (a cheap rate limit)."""
    now = time.time() if now is None else now
    try:
        if now - stamp.stat().st_mtime < every_s:
            return False
    except FileNotFoundError:
        stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    os.utime(stamp, (now, now))
    return True
