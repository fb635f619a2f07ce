"""A node's file layout made to match a list of entries in one pass: directories, files with given
bytes, paths that must be gone, and the owner and mode of files made by other means.

Used by the mesh_layout module (one module run where a role would run file/template/copy once per path:
on a fleet each run is most of a provisioning run's cost) and, for its atomic writes, by mesh_files.
Every entry is checked before anything changes: a bad entry, an unknown owner or a path of the wrong
kind fails the whole run with nothing done.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

STATES = ("directory", "file", "absent", "attributes")


class LayoutError(ValueError):
    """An entry that cannot be applied; nothing was changed."""


@dataclass(frozen=True)
class Entry:
    path: str
    state: str
    content: bytes | None = None
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None
    validate: tuple[str, ...] = ()  # argv with %s for the new file, run before it replaces the old one


@dataclass
class Changes:
    created: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.written or self.fixed or self.removed)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "created": self.created,
            "written": self.written,
            "fixed": self.fixed,
            "removed": self.removed,
        }


def octal_mode(value: object, what: str) -> int:
    """An octal mode given as a string ("0644"), or LayoutError."""
    try:
        mode = int(str(value), 8)
        if not 0 <= mode <= 0o7777:
            raise ValueError(value)
    except (TypeError, ValueError):
        raise LayoutError(f"{what} must be an octal mode such as 0644 (got {value!r})") from None
    return mode


def plain_name(name: object) -> bool:
    """A file name with no directory in it ("", ".", ".." and NUL refused)."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\x00" not in name


def name_id(name: object, kind: str, path: str) -> int | None:
    """The uid or gid of a user or group name; None when it does not exist (yet)."""
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise LayoutError(f"{path}: {kind} must be a name (got {name!r})")
    try:
        return pwd.getpwnam(name).pw_uid if kind == "owner" else grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def parse(raw: list[Any], check_mode: bool = False, kinds: bool = True) -> list[Entry]:
    """The entries, every one checked; an owner or group that does not exist is an error, except in check
    mode (where the task that creates it has not run): the entry then counts as a change. With
    kinds=False the caller runs check_kinds itself, on these entries and its own."""
    entries: list[Entry] = []
    for item in raw:
        if not isinstance(item, dict):
            raise LayoutError(f"each entry is a mapping with path and state (got {item!r})")
        path, state = item.get("path"), item.get("state", "file")
        unknown = set(item) - {"path", "state", "content", "owner", "group", "mode", "validate"}
        if unknown:
            raise LayoutError(f"{path}: unknown keys {sorted(unknown)}")
        if not isinstance(path, str) or not path.startswith("/") or path == "/" or "\x00" in path:
            raise LayoutError(f"path must be an absolute path below / (got {path!r})")
        if os.path.normpath(path) != path.rstrip("/") or "//" in path:
            raise LayoutError(f"{path}: not a normal path (no '..', '.' or doubled '/')")
        path = path.rstrip("/")
        if state not in STATES:
            raise LayoutError(f"{path}: state must be one of {', '.join(STATES)} (got {state!r})")
        content = item.get("content")
        if (content is not None) != (state == "file"):
            raise LayoutError(f"{path}: content is given with state file, and only then")
        if content is not None and not isinstance(content, str):
            raise LayoutError(f"{path}: content must be text")
        validate = item.get("validate")
        if validate is not None and (
            state != "file" or not isinstance(validate, str) or "%s" not in validate
        ):
            raise LayoutError(f"{path}: validate is a command with %s (the new file), for a file only")
        mode = item.get("mode")
        if state in ("directory", "file") and mode is None:
            raise LayoutError(f"{path}: a {state} needs a mode")
        if state == "absent" and any(item.get(k) is not None for k in ("owner", "group", "mode")):
            raise LayoutError(f"{path}: an absent path has no owner, group or mode")
        uid, gid = name_id(item.get("owner"), "owner", path), name_id(item.get("group"), "group", path)
        for kind, name, value in (("owner", item.get("owner"), uid), ("group", item.get("group"), gid)):
            if name is not None and value is None and not check_mode:
                raise LayoutError(
                    f"{path}: no {'user' if kind == 'owner' else 'group'} {name!r} on this node"
                )
        entries.append(
            Entry(
                path=path,
                state=state,
                content=content.encode("utf-8") if content is not None else None,
                uid=-2 if item.get("owner") is not None and uid is None else uid,
                gid=-2 if item.get("group") is not None and gid is None else gid,
                mode=octal_mode(mode, path) if mode is not None else None,
                validate=tuple(shlex.split(validate)) if validate else (),
            )
        )
    if kinds:
        check_kinds(entries)
    return entries


def check_kinds(entries: list[Entry]) -> None:
    """A path of the wrong kind (a file where a directory goes, a missing parent) fails before any change."""
    made: set[str] = set()  # directories the entries before this one create
    gone: set[str] = set()
    for entry in entries:
        exists = os.path.lexists(entry.path) and entry.path not in gone
        st = os.lstat(entry.path) if exists else None
        parent = os.path.dirname(entry.path)
        if entry.state == "absent":
            gone.add(entry.path)
            made.discard(entry.path)
            continue
        if entry.state == "directory":
            if st is not None and not stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode):
                raise LayoutError(f"{entry.path} exists and is not a directory")
            _check_parents(entry.path, made)
            node = entry.path
            while node != "/":
                made.add(node)
                node = os.path.dirname(node)
            continue
        if entry.state == "file":
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise LayoutError(f"{entry.path} is a directory, not a file")
            if parent not in made and not os.path.isdir(parent):
                raise LayoutError(f"{entry.path}: its directory {parent} does not exist")
            continue
        if st is None and entry.path not in made:  # attributes
            raise LayoutError(f"{entry.path} does not exist (its owner and mode cannot be set)")
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise LayoutError(f"{entry.path} is a symbolic link (its owner and mode are not set through it)")


def _check_parents(path: str, made: set[str]) -> None:
    """The nearest existing parent of a directory to create must be a directory."""
    node = os.path.dirname(path)
    while node not in made and not os.path.isdir(node):
        if os.path.lexists(node):
            raise LayoutError(f"{path}: {node} is in the way (not a directory)")
        node = os.path.dirname(node)


def same_bytes(path: str, data: bytes) -> bool:
    with open(path, "rb") as handle:
        return handle.read() == data


def write_atomic(
    path: str, data: bytes, mode: int, uid: int = -1, gid: int = -1, validate: tuple[str, ...] = ()
) -> None:
    """Write `data` to a temporary file beside `path`, set its owner and mode, and rename it into place:
    a reader sees the old file or the new one, never half of one (a link at `path` is replaced).
    With `validate` (an argv with %s), that command must accept the temporary file first, or LayoutError
    is raised and `path` is left as it was."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            # Through the open file, not its name: in a directory another user can write (a folder's
            # marker, an inner disk's), the name could meanwhile be a link to a file of root's.
            if uid != -1 or gid != -1:
                os.fchown(handle.fileno(), uid, gid)
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        if validate:
            check = subprocess.run(
                [arg.replace("%s", tmp) for arg in validate], capture_output=True, text=True, check=False
            )
            if check.returncode != 0:
                said = (check.stderr or check.stdout).strip()
                raise LayoutError(
                    f"{path}: {' '.join(validate)} refused the new file (exit {check.returncode}): {said}"
                )
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _differs(st: os.stat_result, entry: Entry) -> bool:
    return (
        (entry.mode is not None and stat.S_IMODE(st.st_mode) != entry.mode)
        or (entry.uid is not None and st.st_uid != entry.uid)
        or (entry.gid is not None and st.st_gid != entry.gid)
    )


def fix_owner_mode(path: str, uid: int | None, gid: int | None, mode: int | None) -> None:
    """Set a path's owner and mode through a descriptor opened without following a link (O_NOFOLLOW;
    O_NONBLOCK: a FIFO put there does not hang the run): a name swapped for a link meanwhile, in a
    directory another user can write (the mesh user's key directory), fails rather than handing root's
    file over."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        if mode is not None:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _fix(path: str, entry: Entry) -> None:
    fix_owner_mode(path, entry.uid, entry.gid, entry.mode)


def _directory(entry: Entry, changes: Changes, apply: bool) -> None:
    if os.path.isdir(entry.path):
        # A link to a directory (an operator's /var/log/replimesh on another disk) is followed, as
        # ansible.builtin.file does: its target gets the owner and mode.
        target = os.path.realpath(entry.path)
        if _differs(os.stat(target), entry):
            changes.fixed.append(entry.path)
            if apply:
                _fix(target, entry)
        return
    # A dangling link at the entry's own path (an earlier layout's, to what an entry before removed) is
    # replaced by the directory. Its parents are followed as the system has them (/var/run -> /run).
    missing = [entry.path]
    node = os.path.dirname(entry.path)
    while not os.path.isdir(node):
        missing.append(node)
        node = os.path.dirname(node)
    for path in reversed(missing):  # as the file module does: each missing parent gets the same attributes
        changes.created.append(path)
        if apply:
            if os.path.islink(path):
                os.unlink(path)
            os.mkdir(path, entry.mode if entry.mode is not None else 0o755)
            _fix(path, entry)


def _file(entry: Entry, changes: Changes, apply: bool) -> None:
    if entry.content is None or entry.mode is None:  # parse() gives every file both
        raise LayoutError(f"{entry.path}: a file needs its content and a mode")
    st = os.lstat(entry.path) if os.path.lexists(entry.path) else None
    if st is None or not stat.S_ISREG(st.st_mode) or not same_bytes(entry.path, entry.content):
        changes.written.append(entry.path)
        if apply:
            uid = -1 if entry.uid is None else entry.uid
            gid = -1 if entry.gid is None else entry.gid
            write_atomic(entry.path, entry.content, entry.mode, uid, gid, entry.validate)
    elif _differs(st, entry):
        changes.fixed.append(entry.path)
        if apply:
            _fix(entry.path, entry)


def converge(entries: list[Entry], apply: bool = True) -> Changes:
    """Apply the entries in order (or, with apply=False, only say what would change)."""
    changes = Changes()
    for entry in entries:
        if entry.state == "directory":
            _directory(entry, changes, apply)
        elif entry.state == "file":
            _file(entry, changes, apply)
        elif entry.state == "absent":
            if os.path.lexists(entry.path):
                changes.removed.append(entry.path)
                if apply:
                    if os.path.isdir(entry.path) and not os.path.islink(entry.path):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
        elif os.path.lexists(entry.path) and _differs(os.lstat(entry.path), entry):
            changes.fixed.append(entry.path)
            if apply:
                _fix(entry.path, entry)
    return changes
