"""A mesh's names and folders, defined once for the control node's core, the modules and the node-side
program (which gets this file beside its own, as ``replimesh_node.mesh_names``).

Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A node's or a folder's name: it becomes a login (replimesh-NAME), a file name and a profile name.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# A node's own ignore patterns for a folder, kept at the folder's top (as Syncthing's .stignore): every
# profile ignores a file of this name, so it never leaves its node and no peer's copy of it is ever taken.
LOCAL_IGNORE_FILE = ".replimeshignore"
# A login in /etc/passwd (32 characters at most).
LOGIN_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# The mesh user: 21 characters at most, since each peer logs in as USER-PEER (or USER-HASH for a long PEER).
MESH_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,20}")


@dataclass(frozen=True)
class Folder:
    """A synced folder: its mesh-wide name, its absolute path (the same on every node), and its Unison
    ignore patterns (relative to the folder)."""

    name: str
    path: str
    ignore: tuple[str, ...] = ()
