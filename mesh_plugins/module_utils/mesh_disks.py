"""Disks mounted inside a sync folder, and the guard that keeps an unmounted one from spreading as deletions.

A folder's marker (``FOLDER/.replimesh-folder``, root-owned, never synced) proves its own disk is there. A
disk mounted *inside* a folder (``FOLDER/photos`` on a disk of its own) gets the same: bootstrap.yml marks
its top (``FOLDER/photos/.replimesh-folder``) and lists it in the folder's marker as ``inner disk: photos``.
While a listed disk's marker is missing (unmounted), this node's runs of the folder stop, and its jails
serve no pull (``replimesh-serve`` checks the same lines), so no node ever sees the empty mount point.
A disk mounted inside a folder after bootstrap.yml, not listed yet, stops this node's runs of the folder
until bootstrap.yml lists it. To retire a disk for good, delete its line from the folder's marker.

Standard library only: the runner and the watcher (as the mesh user) and the mesh_jail code use it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from .mesh_watchstate import read_small

INNER_PREFIX = "inner disk: "
MARKER_LIMIT = 64 * 1024  # a marker is a short text; more is not read


def unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points(mountinfo: str) -> set[str]:
    """Every mount point in /proc/self/mountinfo."""
    return {unescape_mountinfo(line.split()[4]) for line in mountinfo.splitlines() if len(line.split()) > 4}


def read_mountinfo(path: str = "/proc/self/mountinfo") -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except OSError:
        return ""


def mounts_inside(folder: str, points: Iterable[str]) -> list[str]:
    """The mount points strictly inside ``folder``, relative to it, sorted."""
    prefix = folder.rstrip("/") + "/"
    return sorted(point[len(prefix) :] for point in points if point.startswith(prefix) and point != prefix)


def inner_disks(marker_text: str) -> list[str]:
    """The ``inner disk: REL`` lines of a folder's marker (relative paths, no ``..``), sorted."""
    found = set()
    for line in marker_text.splitlines():
        if line.startswith(INNER_PREFIX):
            rel = line[len(INNER_PREFIX) :].strip().strip("/")
            if rel and ".." not in rel.split("/"):
                found.add(rel)
    return sorted(found)


def read_marker(folder: str, marker: str) -> str:
    """The folder's marker text: a regular file, read without following a link or waiting on a FIFO."""
    data = read_small(os.path.join(folder, marker), MARKER_LIMIT)
    return data.decode("utf-8", "replace") if data else ""


def disk_problem(folder: str, marker: str, mountinfo: str) -> str | None:
    """Why the folder must not be synced now because of a disk inside it, or None.

    A listed inner disk without its marker is not mounted (or was emptied); a disk mounted inside the
    folder but not listed has no guard yet (its unmount would look like its files were deleted)."""
    listed = inner_disks(read_marker(folder, marker))
    missing = [rel for rel in listed if not os.path.lexists(os.path.join(folder, rel, marker))]
    if missing:
        paths = ", ".join(os.path.join(folder, rel) for rel in missing)
        return (
            f"the disk inside folder {folder} at {paths} is not mounted (no {marker} there): refusing to "
            "sync the folder until it is back (to retire it, delete its line from the folder's marker)"
        )
    unguarded = [rel for rel in mounts_inside(folder, mount_points(mountinfo)) if rel not in listed]
    if unguarded:
        paths = ", ".join(os.path.join(folder, rel) for rel in unguarded)
        return (
            f"a disk is mounted inside folder {folder} at {paths} without a guard: refusing to sync the "
            "folder until bootstrap.yml marks it (an unmount would look like its files were deleted)"
        )
    return None
