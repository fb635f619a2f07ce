"""Conflict copies on a node, and resolving one file's conflict (meshctl conflicts).

When two nodes change a file between rounds, Unison's copyonconflict keeps both: the newer as the file,
the other beside it as ``NAME (conflict_on_DATE).EXT``, a file like any other that every node syncs.
``find_conflicts`` lists every such copy of a node's folders. ``resolve`` ends one file's conflict on a
node: on the node that keeps the chosen version, that version becomes the file (what the file held is kept
first, as a restore keeps it); on every node, the file's conflict copies leave the folder for the node's
kept versions (BACKUP_DIR/FOLDER/PATH/.restore.TIME.NAME, listed by meshctl versions). Since every node
removes its own copies, a round has no deletion to carry and the chosen version reaches every node; no
version is lost anywhere.

Standard library only: it runs on the node, as root, through the mesh_conflicts module.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import time
from collections.abc import Iterable
from typing import Any

from .mesh_digest import DEFAULT_MARKER, IgnoreRules, file_sha256, original_name
from .mesh_versions import VersionsError, copy_file, make_backup_dirs, restore

CURRENT = "current"  # keep the file as it is; only its conflict copies go


def _entry(folder: str, rel: str, copy: str, kind: str, st: os.stat_result, path: str) -> dict[str, Any]:
    digest = file_sha256(path, st) if kind == "file" else None
    return {"folder": folder, "path": rel, "copy": copy, "kind": kind, "size": st.st_size,
            "mtime": st.st_mtime, "sha256": digest}  # fmt: skip


def find_conflicts(
    name: str, root: str, ignore: Iterable[str] = (), marker: str = DEFAULT_MARKER
) -> list[dict[str, Any]]:
    """Every conflict copy in the folder `name` at `root` (files, and directories Unison copied whole),
    with the path of the file it was kept of: the folder as Unison sees it (marker and ignores left out),
    links never followed."""
    rules = IgnoreRules.build(ignore, marker)
    found: list[dict[str, Any]] = []
    for top, dirs, files in os.walk(root):
        rel_top = os.path.relpath(top, root)
        rel_top = "" if rel_top == "." else rel_top
        for entry in sorted([*dirs, *files]):
            rel = posixpath.join(rel_top, entry)
            if rules.ignored(rel, entry):
                if entry in dirs:
                    dirs.remove(entry)
                continue
            original = original_name(entry)
            if original is None:
                continue
            path = os.path.join(top, entry)
            st = os.lstat(path)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else None
            if entry in dirs:
                dirs.remove(entry)  # a copied directory is one copy: nothing below it is listed apart
            if kind:
                found.append(_entry(name, posixpath.join(rel_top, original), rel, kind, st, path))
    return sorted(found, key=lambda item: (item["path"], item["copy"]))


def copies_of(root: str, rel: str) -> list[str]:
    """The conflict copies of `rel` (paths inside the folder), beside it."""
    directory, name = posixpath.split(rel)
    try:
        entries = sorted(os.listdir(posixpath.join(root, directory)))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [posixpath.join(directory, entry) for entry in entries if original_name(entry) == name]


def _keep_aside(root: str, backup_folder: str, copy: str, rel: str, uid: int, gid: int) -> str:
    """Move a conflict copy out of the folder into the node's kept versions of `rel`; where it went."""
    source = posixpath.join(root, copy)
    directory, name = posixpath.split(rel)
    make_backup_dirs(backup_folder, directory, uid, gid)
    stamp = int(time.time())
    while os.path.lexists(target := posixpath.join(backup_folder, directory, f".restore.{stamp}.{name}")):
        stamp += 1
    st = os.lstat(source)
    if stat.S_ISDIR(st.st_mode):
        shutil.move(source, target)  # a rename on one file system, else a copy (links kept as links)
    elif stat.S_ISREG(st.st_mode):
        copy_file(source, target, uid, gid)
        os.utime(target, (st.st_atime, st.st_mtime))
        os.unlink(source)
    else:  # plan() refused it before anything moved
        raise VersionsError(f"{source} is neither a file nor a directory: move it away by hand")
    return target


def plan(root: str, rel: str, keep: str, keeper: bool) -> tuple[str | None, list[str]]:
    """(the copy whose content becomes the file on this node, or None; the copies to move aside), checked
    before anything changes. The folder's content comes from peers too: a directory on the way that is a
    link, or a copy that is neither a file nor a directory, stops it (it runs as root)."""
    path = root
    for part in [p for p in posixpath.dirname(rel).split("/") if p]:
        path = posixpath.join(path, part)
        if os.path.islink(path) or not os.path.isdir(path):
            raise VersionsError(f"{path} is not a directory (a link?): end this conflict by hand")
    copies = copies_of(root, rel)
    odd = [c for c in copies if not stat.S_ISREG(mode := os.lstat(posixpath.join(root, c)).st_mode)
           and not stat.S_ISDIR(mode)]  # fmt: skip
    if odd:
        raise VersionsError(
            f"{odd[0]} is neither a file nor a directory (a link?): end this conflict by hand"
        )
    chosen = None
    if keeper and keep != CURRENT:
        chosen = posixpath.join(posixpath.dirname(rel), keep)
        if chosen not in copies:
            held = ", ".join(posixpath.basename(c) for c in copies) or "none"
            raise VersionsError(f"{keep!r} is not a conflict copy of {rel} here (this node has: {held})")
        if os.path.islink(posixpath.join(root, chosen)) or not os.path.isfile(posixpath.join(root, chosen)):
            raise VersionsError(f"{chosen} is not a regular file: keep it by hand")
    elif keeper and not os.path.isfile(posixpath.join(root, rel)):
        raise VersionsError(f"{rel} is not a file here: keep one of its conflict copies instead")
    return chosen, copies


def resolve(
    root: str, backup_folder: str, rel: str, keep: str, keeper: bool, uid: int, gid: int
) -> dict[str, Any]:
    """End `rel`'s conflict on this node: see the module's docstring. Returns {written, kept, moved}."""
    chosen, copies = plan(root, rel, keep, keeper)
    kept = None
    if chosen is not None:
        source = posixpath.join(root, chosen)
        kept = restore(root, backup_folder, rel, {"path": source}, uid, gid)
    moved = {copy: _keep_aside(root, backup_folder, copy, rel, uid, gid) for copy in copies}
    return {"written": chosen, "kept": kept, "moved": moved}
