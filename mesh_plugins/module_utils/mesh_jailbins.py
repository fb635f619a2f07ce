"""The programs in the peers' jails follow the node's packages (replimesh-jail-refresh).

The jail template holds copies of the node's shell, Unison and their libraries (sshd's chroot can reach
nothing else), and every peer's jail hard-links them. Copies go stale when a package changes them: an apt
upgrade, unattended-upgrades. ``refresh`` copies what differs into the template, then links the new files
into every jail; the mesh_ssh role runs it (replimesh-jail-refresh, the role's mesh_jailrefresh) at each
bootstrap, and a dpkg hook after every package change.

Standard library only: it runs on the node (``replimesh_node``), as root.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence

LIB_RE = re.compile(r"^\s+(?:\S+ => )?(/\S+) \(0x", re.MULTILINE)
MODE = 0o755


def parents(path: str) -> list[str]:
    """``/a/b/c`` -> ``["/a", "/a/b"]``: the directories above a path, top first."""
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def mirror_template(template: str, jail: str, files: Sequence[str], dry_run: bool = False) -> list[str]:
    """Hard-link the template's files into the jail (root-owned, same inode); returns what changed (or,
    with ``dry_run``, what would)."""
    changed = []
    for rel in files:
        src, dst = template + rel, jail + rel
        for directory in parents(rel):
            if not os.path.isdir(jail + directory):
                if not dry_run:
                    os.mkdir(jail + directory, 0o755)
                changed.append(jail + directory)
        src_st = os.stat(src)
        try:
            dst_st = os.lstat(dst)
            if (dst_st.st_ino, dst_st.st_dev) == (src_st.st_ino, src_st.st_dev):
                continue
        except FileNotFoundError:
            pass
        if dry_run:
            changed.append(dst)
            continue
        tmp = f"{dst}.replimesh-new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:  # another file system: a copy, owned and moded like the template's
            shutil.copy2(src, tmp)
            os.chown(tmp, src_st.st_uid, src_st.st_gid)
        os.replace(tmp, dst)
        changed.append(dst)
    return changed


def ldd_libraries(output: str) -> list[str]:
    """The libraries in ldd's output, by the paths the loader opens (the vDSO has none), each once."""
    return list(dict.fromkeys(LIB_RE.findall(output)))


def jail_sources(programs: Sequence[str], ldd: Callable[[str], str]) -> dict[str, str]:
    """Path in the jail -> file on the host: each program under its own name (its real file's content:
    /usr/bin/unison is an alternatives link), and each library the programs need under its ldd path."""
    sources = {program: os.path.realpath(program) for program in programs}
    for program in programs:
        for library in ldd_libraries(ldd(sources[program])):
            sources.setdefault(library, os.path.realpath(library))
    return sources


def _current(source: str, target: str) -> bool:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return False
    return (
        os.path.isfile(target)
        and not os.path.islink(target)
        and (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, MODE)
        and filecmp.cmp(source, target, shallow=False)
    )


def refresh_template(template: str, sources: Mapping[str, str], dry_run: bool = False) -> list[str]:
    """Copy each source whose content differs into the template, as a new file (a new inode, so that the
    jails' hard links can tell); returns the template paths that changed (or would)."""
    changed = []
    for rel, source in sorted(sources.items()):
        target = template + rel
        if _current(source, target):
            continue
        changed.append(target)
        if dry_run:
            continue
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        tmp = f"{target}.replimesh-new"
        shutil.copyfile(source, tmp)
        os.chown(tmp, 0, 0)
        os.chmod(tmp, MODE)
        os.replace(tmp, target)
    return changed


def refresh_jails(template: str, jails_dir: str, files: Sequence[str], dry_run: bool = False) -> list[str]:
    """Link these template files into every peer's jail where the jail holds another file (the rest of a
    jail is the mesh_member module's)."""
    if not os.path.isdir(jails_dir):
        return []
    changed = []
    for login in sorted(os.listdir(jails_dir)):
        jail = os.path.join(jails_dir, login)
        if os.path.isdir(jail) and not os.path.islink(jail):
            changed += mirror_template(template, jail, files, dry_run)
    return changed
