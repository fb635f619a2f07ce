"""A node's sync folders made ready in one pass: looked at, refused when empty without marker, created,
marked, freed from an earlier layout's shared jail (the node's versions too), and their inner disks
guarded.

The mesh_folders module runs it (one module run per node where the role ran about ten tasks, most of them
loops over the folders). Every folder is looked at before anything changes: an empty folder without a
marker (an unmounted disk looks just like it) fails the run with nothing done.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from .mesh_disks import inner_disks, mount_points, mounts_inside, read_marker, read_mountinfo
from .mesh_layout import fix_owner_mode, write_atomic

FOLDER_MARKER = (
    "This folder is a replimesh replica. Do not delete this file: without it the node refuses to\n"
    "sync the folder, so that an unmounted or emptied disk never deletes files on other nodes.\n"
)
LISTED_MARKER = FOLDER_MARKER + (
    'Each "inner disk:" line names a disk mounted inside the folder: while its own marker is missing,\n'
    "the node neither syncs the folder nor serves it to a peer. Delete a line to retire that disk.\n"
)
DISK_MARKER = (
    "This directory holds a disk mounted inside the replimesh folder {folder}. Do not delete\n"
    "this file: without it the node refuses to sync the folder, so that an unmounted disk never\n"
    "deletes files on other nodes.\n"
)


class FoldersError(ValueError):
    """The folders cannot be made ready; nothing was changed."""


@dataclass(frozen=True)
class Settings:
    uid: int
    gid: int
    mode: int
    marker: str
    adopt_empty: bool
    jail_dir: str  # the shared jail of an earlier layout, which had the folders bound in
    fstab: str = "/etc/fstab"
    backup_dir: str = ""  # a link into that jail in the earlier layout, where the versions lay


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    marked: list[str] = field(default_factory=list)
    unbound: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    inner: dict[str, list[str]] = field(default_factory=dict)  # folder: its guarded disks
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.fixed or self.marked or self.unbound or self.moved)


def look(path: str, marker: str) -> str:
    """absent, empty, data (no marker) or marked."""
    if os.path.lexists(os.path.join(path, marker)):
        return "marked"
    if not os.path.lexists(path):
        return "absent"
    if not os.path.isdir(path):
        raise FoldersError(f"{path} exists and is not a directory")
    return "empty" if not os.listdir(path) else "data"


def check(paths: list[str], settings: Settings) -> dict[str, str]:
    """Each folder's state; FoldersError, before any change, for an empty folder without marker."""
    states = {path: look(path, settings.marker) for path in paths}
    empty = [path for path, state in states.items() if state == "empty"]
    if empty and not settings.adopt_empty:
        one = len(empty) == 1
        raise FoldersError(
            f"{', '.join(empty)} {'is' if one else 'are'} empty and {'has' if one else 'have'} no"
            f" {settings.marker}: if a disk belongs there, mount it; if it is meant to start empty, run with"
            " -e mesh_sync_adopt_empty_folders=true."
        )
    return states


def _write_new(path: str, text: str, apply: bool) -> None:
    """A root-owned marker, replaced as a whole (a reader sees the old one or the new one)."""
    if apply:
        write_atomic(path, text.encode("utf-8"), 0o644, 0, 0)


def _folder(path: str, state: str, settings: Settings, report: Report, apply: bool) -> None:
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):  # as root, default modes, leaving existing parents untouched
        report.created.append(parent)
        if apply:
            os.makedirs(parent, mode=0o755)
    if state == "absent":
        report.created.append(path)
    else:
        st = os.stat(path)
        if stat.S_IMODE(st.st_mode) != settings.mode or (st.st_uid, st.st_gid) != (
            settings.uid,
            settings.gid,
        ):
            report.fixed.append(path)
    if apply and (state == "absent" or path in report.fixed):
        if state == "absent":
            os.mkdir(path, settings.mode)
        # A folder that is a link to a directory (a disk mounted elsewhere) gets its target's owner and
        # mode set, as ansible.builtin.file did; the umask may have taken bits off a new one.
        fix_owner_mode(os.path.realpath(path), settings.uid, settings.gid, settings.mode)
    if state != "marked":
        report.marked.append(os.path.join(path, settings.marker))
        _write_new(os.path.join(path, settings.marker), FOLDER_MARKER, apply)


def _unbind(paths: list[str], points: set[str], settings: Settings, report: Report, apply: bool) -> None:
    """An earlier layout bound every folder into one jail shared by all peers, at boot from /etc/fstab:
    those lines go (the file read and written once), then the binds still mounted."""
    jailed = [settings.jail_dir.rstrip("/") + path for path in paths]
    try:
        with open(settings.fstab, encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read().splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    kept = list(lines)
    for point in jailed:
        line = re.compile(rf"^\S+\s+{re.escape(point)}\s")
        if any(line.match(text) for text in kept):
            report.unbound.append(f"{settings.fstab}: {point}")
            kept = [text for text in kept if not line.match(text)]
    if apply and len(kept) != len(lines):
        st = os.stat(settings.fstab)
        data = "".join(kept).encode("utf-8", "surrogateescape")
        write_atomic(settings.fstab, data, stat.S_IMODE(st.st_mode))
    for point in jailed:
        if point in points:  # from mountinfo, as mountpoint(1) reads it (a bind mount keeps its st_dev)
            report.unbound.append(point)
            if apply:
                done = subprocess.run(["umount", point], check=False, capture_output=True, text=True)
                if done.returncode != 0:
                    raise OSError(f"umount {point}: {done.stderr.strip() or done.returncode}")


def _free_backups(settings: Settings, report: Report, apply: bool) -> None:
    """An earlier layout kept the node's versions in the shared jail, BACKUP_DIR a link to them: the link
    goes and the versions move to BACKUP_DIR, out of every peer's reach."""
    link = settings.backup_dir
    if not link or not os.path.islink(link):
        return
    jailed = settings.jail_dir.rstrip("/") + link
    keep = os.path.isdir(jailed) and not os.path.islink(jailed)
    report.moved.append(f"{jailed} -> {link}" if keep else f"{link} (a link into the shared jail) removed")
    if apply:
        os.unlink(link)
        if keep:
            shutil.move(jailed, link)


def _guard_inner_disks(path: str, points: set[str], settings: Settings, report: Report, apply: bool) -> None:
    """Mark the top of each disk mounted inside the folder and list it in the folder's marker; say which
    listed disk is not mounted (a warning: the node's runs already hold the folder)."""
    found = mounts_inside(path, points)
    listed = inner_disks(read_marker(path, settings.marker)) if os.path.isdir(path) else []
    for rel in found:
        top = os.path.join(path, rel, settings.marker)
        if not os.path.lexists(top):
            report.marked.append(top)
            _write_new(top, DISK_MARKER.format(folder=path), apply)
    guarded = sorted(set(listed) | set(found))
    report.inner[path] = guarded
    if guarded != listed:
        folder_marker = os.path.join(path, settings.marker)
        report.marked.append(folder_marker)
        _write_new(folder_marker, LISTED_MARKER + "".join(f"inner disk: {rel}\n" for rel in guarded), apply)
    for rel in guarded:
        if rel not in found and not os.path.lexists(os.path.join(path, rel, settings.marker)):
            report.warnings.append(
                f"{path}/{rel} is listed in the folder's marker as a disk of its own but has no "
                f"{settings.marker} (not mounted?): the node neither syncs nor serves {path} until it is "
                f'back. Mount it, or, to retire it, delete the line "inner disk: {rel}" from '
                f"{path}/{settings.marker}."
            )


def prepare(
    paths: list[str], settings: Settings, apply: bool = True, mountinfo: Callable[[], str] = read_mountinfo
) -> Report:
    """Make every folder ready (or, with apply=False, only say what would change)."""
    states = check(paths, settings)
    report = Report()
    points = mount_points(mountinfo())
    for path in paths:
        _folder(path, states[path], settings, report, apply)
    _unbind(paths, points, settings, report, apply)
    _free_backups(settings, report, apply)
    if report.unbound and apply:
        points = mount_points(mountinfo())
    for path in paths:
        _guard_inner_disks(path, points, settings, report, apply)
    return report
