"""A node's own ignore patterns for a folder: FOLDER/.replimeshignore, as Syncthing's .stignore.

One pattern a line (blank lines and lines starting with # are skipped), written as the mesh file's
`ignore` patterns are: a pattern with a / is a path from the folder's top (Unison's `Path`), one without
is a name anywhere (`Name`); *, ?, [...] and {a,b} as Unison reads them. The node's own pulls leave what
they match alone: such a file is never taken from a peer, and never changed or deleted here by a pull.
Every node only pulls, so the patterns cannot hide this node's own such files from a peer's pull: a peer
takes them unless it ignores them too (the mesh file's `ignore` is for what no node should sync).

The file never leaves its node: every profile ignores it (mesh_member), so a peer can neither send one nor
read this one, and no setting of this node's clients comes from a peer. A pattern the mesh file would
refuse stops the folder's pulls with the file's name and line, rather than syncing what it meant to keep
out.

Standard library only: the runner (``replimesh_node``) and mesh_digest read it on the node.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from .mesh_names import LOCAL_IGNORE_FILE
from .mesh_paths import UnsafePathError, check_ignore_pattern

MAX_BYTES = 64 * 1024


class LocalIgnoreError(Exception):
    """The folder's .replimeshignore cannot be used; the message names the file and the line."""


def local_patterns(folder_path: str) -> list[str]:
    """The patterns of FOLDER/.replimeshignore, checked; none when there is no such file."""
    path = os.path.join(folder_path, LOCAL_IGNORE_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LocalIgnoreError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise LocalIgnoreError(f"{path}: not a regular file")
        if info.st_size > MAX_BYTES:
            raise LocalIgnoreError(f"{path}: {info.st_size} bytes, more than {MAX_BYTES}")
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LocalIgnoreError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    patterns: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        try:
            patterns.append(check_ignore_pattern(pattern))
        except UnsafePathError as exc:
            raise LocalIgnoreError(f"{path}: line {number}: {exc}") from exc
    return patterns


def node_patterns(folder_ignore: Iterable[str], local: Iterable[str]) -> list[str]:
    """What a node's pulls leave alone in a folder: the mesh file's patterns, the node's own, this file."""
    return [*folder_ignore, *local, LOCAL_IGNORE_FILE]


def unison_ignore(pattern: str) -> str:
    """A pattern as Unison's `ignore` preference takes it (the rule the mesh file's patterns follow)."""
    return f"{'Path' if '/' in pattern else 'Name'} {pattern}"


def ignore_args(folder_path: str) -> list[str]:
    """Unison's command-line arguments for the folder's local patterns (they add to the profile's)."""
    return [arg for pattern in local_patterns(folder_path) for arg in ("-ignore", unison_ignore(pattern))]
