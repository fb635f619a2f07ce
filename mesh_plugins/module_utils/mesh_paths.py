"""Is a synced folder's path, or an ignore pattern, safe? Checked on the controller, before any node changes.

Standard library only. `check_folder_path` and `check_ignore_pattern` return the value unchanged or raise
`UnsafePathError` with a message that says what to write instead; mesh_config adds the offending key.
"""

from __future__ import annotations

import re

CONTROL_CHAR_RE = re.compile(r"[\x00-\x1f\x7f]")
# The path goes unquoted into Unison profiles (`root = ...`, where `,` and `=` are syntax), into ssh://
# roots and into /etc/fstab (space-delimited): mesh_member refuses these on the node, so refuse them here,
# before the roles have changed anything.
UNSAFE_PATH_CHARS = "\"'\\,="
# The mesh's own directory: the mesh key, Unison's archives and profiles, the SSH jail. Syncing it would
# hand the node's private key and the jail to its peers.
MESH_HOME = "/var/lib/replimesh"

# A synced folder may be neither one of these nor inside one: syncing them would damage the node.
# fmt: off
SYSTEM_DIRS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/run", "/sbin",
    "/sys", "/usr", "/var/cache/apt", "/var/lib/apt", "/var/lib/dpkg", "/var/lib/rpm", "/var/lib/systemd",
    "/var/log", "/var/run", "/var/spool", MESH_HOME,
)
# fmt: on
PATH_MAX = 4095  # bytes, Linux's PATH_MAX less the final NUL
NAME_MAX = 255  # bytes in one path component
# Shared parents: a subdirectory is fine, the directory itself is not.
SHARED_PARENT_DIRS = ("/home", "/media", "/mnt", "/opt", "/srv", "/tmp", "/var", "/var/lib", "/var/tmp")


class UnsafePathError(ValueError):
    """A folder path or ignore pattern that would escape the folder or damage the node."""


def check_folder_path(path: str) -> str:
    if len(path.encode(errors="replace")) > PATH_MAX or any(
        len(part.encode(errors="replace")) > NAME_MAX for part in path.split("/")
    ):
        raise UnsafePathError(
            f"{path[:40]!r}... is too long: at most {PATH_MAX} bytes, {NAME_MAX} bytes per component"
        )
    if not path.startswith("/"):
        raise UnsafePathError(f"{path!r} must be an absolute path (start with /)")
    if path == "/":
        raise UnsafePathError("must not be / (the whole file system)")
    if CONTROL_CHAR_RE.search(path):
        raise UnsafePathError(f"{path!r} must not contain control characters such as newlines")
    if any(ch.isspace() for ch in path):
        # The path goes into /etc/fstab (the jail's bind mount) and ssh:// roots, both space-delimited.
        raise UnsafePathError(f"{path!r} must not contain spaces or other white space")
    unsafe = sorted({ch for ch in path if ch in UNSAFE_PATH_CHARS})
    if unsafe:
        raise UnsafePathError(f"{path!r} must not contain {' '.join(unsafe)} (Unison profiles and fstab)")
    if path.endswith("/"):
        raise UnsafePathError(f"{path!r} must not end with /; write {path.rstrip('/') or '/'!r}")
    if "//" in path:
        raise UnsafePathError(f"{path!r} must not contain //")
    if any(part in (".", "..") for part in path.split("/")):
        raise UnsafePathError(f"{path!r} must be normalized (no . or .. components)")
    for system_dir in SYSTEM_DIRS:
        if path == system_dir or path.startswith(system_dir + "/"):
            what = "replimesh's own directory" if system_dir == MESH_HOME else "the system directory"
            raise UnsafePathError(f"{path} is inside {what} {system_dir}; try /srv/...")
    if path in SHARED_PARENT_DIRS:
        raise UnsafePathError(f"{path} is shared with other software; use a subdirectory of it")
    return path


def check_ignore_pattern(pattern: str) -> str:
    if len(pattern.encode(errors="replace")) > PATH_MAX:
        raise UnsafePathError(f"{pattern[:40]!r}... is too long: at most {PATH_MAX} bytes")
    if not pattern.strip():
        raise UnsafePathError("ignore patterns must not be empty")
    if CONTROL_CHAR_RE.search(pattern):
        raise UnsafePathError(f"{pattern!r} must not contain control characters such as newlines")
    if pattern.startswith("/"):
        raise UnsafePathError(f"{pattern!r} must be relative to the folder (not start with /)")
    if ".." in pattern.split("/"):
        raise UnsafePathError(f"{pattern!r} must not contain .. components")
    return pattern
