"""The versions a node keeps of a file, and putting one back (meshctl versions / restore).

Every overwrite and deletion a node's pull makes is kept on that node by Unison (``backup = Name *``,
``backuplocation = central``): the newest as BACKUP_DIR/FOLDER/PATH, older ones as ``.bak.N.NAME`` beside
it. A restore writes a kept version back into the folder, as the mesh user, as a new change (so the next
round carries it to every node); what it overwrites there is kept first, as ``.restore.TIME.NAME`` beside
the other versions, so a restore never loses a version either.
"""

from __future__ import annotations

import os
import posixpath
import re
import time
from collections.abc import Sequence
from typing import Any

from .mesh_digest import file_sha256

# Unison's temporary-file form: Unison never syncs a file so named, so a restore half written is never
# pulled by a peer.
TMP_FORM = ".unison.{name}.replimesh-restore.unison.tmp"


class VersionsError(ValueError):
    """A path or version that cannot be listed or restored; nothing was changed."""


def check_path(path: str, marker: str) -> str:
    """A path inside a folder, relative and normalized: no absolute path, no '..', not the marker."""
    if not isinstance(path, str) or not path.strip() or "\x00" in path or "\n" in path:
        raise VersionsError(f"path {path!r}: give a file's path inside the folder, e.g. docs/notes.txt")
    rel = posixpath.normpath(path.strip())
    if path.startswith("/") or rel in (".", "..") or rel.startswith("../"):
        raise VersionsError(f"path {path!r}: give it relative to the folder, inside it (no leading / or ..)")
    if posixpath.basename(rel) == marker or rel.startswith((".unison", ".replimesh")):
        raise VersionsError(f"path {path!r}: that is replimesh's or Unison's own file, not a synced one")
    return rel


def _version_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.(?:bak|restore)\.[0-9]+\.{re.escape(name)}")


def _describe(path: str) -> dict[str, Any]:
    st = os.stat(path)
    return {"path": path, "size": st.st_size, "mtime": st.st_mtime, "sha256": file_sha256(path, st)}


def current(folder_path: str, rel: str) -> dict[str, Any] | None:
    """The file as the folder holds it now, or None (missing, or not a regular file)."""
    path = posixpath.join(folder_path, rel)
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    return _describe(path)


def kept_versions(backup_folder: str, rel: str) -> list[dict[str, Any]]:
    """The kept versions of ``rel``, newest content first (by modification time), numbered from 1."""
    directory, name = posixpath.split(posixpath.join(backup_folder, rel))
    try:
        entries = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    pattern = _version_re(name)
    found = []
    for entry in entries:
        path = posixpath.join(directory, entry)
        if (entry == name or pattern.fullmatch(entry)) and os.path.isfile(path) and not os.path.islink(path):
            found.append(_describe(path))
    found.sort(key=lambda v: (-v["mtime"], v["path"]))
    return [{"version": i, **v} for i, v in enumerate(found, 1)]


def pick(versions: Sequence[dict[str, Any]], number: int, rel: str, node: str) -> dict[str, Any]:
    if not 1 <= number <= len(versions):
        held = f"it keeps {len(versions)}" if versions else "it keeps none"
        raise VersionsError(f"{node} has no version {number} of {rel} ({held}): see meshctl versions {rel}")
    return versions[number - 1]


def copy_file(source: str, target: str, uid: int, gid: int) -> None:
    """A new file `target` with `source`'s bytes, owned by uid:gid, mode 0644."""
    with open(source, "rb") as src, open(target, "xb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            dst.write(chunk)
    os.chown(target, uid, gid)
    os.chmod(target, 0o644)


def make_dirs(folder_path: str, rel_dir: str, uid: int, gid: int) -> None:
    """The directories of `rel_dir` under `folder_path`, made as uid:gid where missing; never a link."""
    path = folder_path
    for part in [p for p in rel_dir.split("/") if p]:
        path = posixpath.join(path, part)
        if os.path.islink(path):
            raise VersionsError(f"{path} is a symbolic link: replimesh restores into real directories only")
        if not os.path.isdir(path):
            os.mkdir(path, 0o755)
            os.chown(path, uid, gid)


def make_backup_dirs(backup_folder: str, rel_dir: str, uid: int, gid: int) -> None:
    """BACKUP_DIR/FOLDER and its `rel_dir`, made as uid:gid where missing (BACKUP_DIR exists: the role's)."""
    if not os.path.isdir(backup_folder):
        make_dirs(posixpath.dirname(backup_folder), posixpath.basename(backup_folder), uid, gid)
    make_dirs(backup_folder, rel_dir, uid, gid)


def restore(
    folder_path: str, backup_folder: str, rel: str, version: dict[str, Any], uid: int, gid: int
) -> str | None:
    """Write ``version`` at ``rel`` in the folder, as a new change owned by the mesh user. What the folder
    held there is kept first beside the versions. Returns where that went, or None (nothing was there)."""
    target = posixpath.join(folder_path, rel)
    directory, name = posixpath.split(rel)
    make_dirs(folder_path, directory, uid, gid)
    kept = None
    if os.path.lexists(target):
        if os.path.islink(target) or not os.path.isfile(target):
            raise VersionsError(f"{target} is not a regular file: move it away first")
        kept = posixpath.join(backup_folder, directory, f".restore.{int(time.time())}.{name}")
        make_backup_dirs(backup_folder, directory, uid, gid)
        copy_file(target, kept, uid, gid)
        os.utime(kept, (os.stat(target).st_atime, os.stat(target).st_mtime))
    tmp = posixpath.join(folder_path, directory, TMP_FORM.format(name=name))
    if os.path.lexists(tmp):
        os.unlink(tmp)
    copy_file(version["path"], tmp, uid, gid)
    os.replace(tmp, target)
    return kept
