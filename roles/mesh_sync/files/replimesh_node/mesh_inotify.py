"""Linux inotify through ctypes: recursive watches on a folder tree, events as (path, flags).

Standard library only (the node's python3 has ctypes), so watch mode needs no package and no helper
process. Debian's Unison 2.52 has no ``unison-fsmonitor``; this is the watcher's own event source.

Watches are per directory: a new directory (created or moved in) gets watches for its whole subtree, a
directory moved away loses them (its old paths would be stale), and a queue overflow is reported so the
caller can fall back to syncing the whole folder.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000  # the filesystem holding a watched directory was unmounted (always reported)
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000

# What changes a replica: content written and closed, entries created, deleted, renamed, chmod/chown/touch.
# IN_MODIFY is left out on purpose: a file still being written is synced when it is closed.
WATCH_MASK = (
    IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
    | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK
)  # fmt: skip
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
_READ_SIZE = 64 * 1024


class InotifyError(OSError):
    """inotify could not be set up (no support, or the watch limit is reached)."""


@dataclass(frozen=True)
class Event:
    path: str  # absolute, the directory's path joined with the entry's name ("" for overflow)
    mask: int
    cookie: int = 0

    @property
    def is_dir(self) -> bool:
        return bool(self.mask & IN_ISDIR)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class Inotify:
    """One inotify instance watching whole trees. `skip(path)` names directories never to watch."""

    def __init__(self, skip: Callable[[str], bool] = lambda _path: False) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
        if fd < 0:
            err = ctypes.get_errno()
            raise InotifyError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd
        self.skip = skip
        self._paths: dict[int, str] = {}  # wd -> directory path
        self._roots: dict[str, int] = {}  # top of each tree -> its wd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def watches(self) -> int:
        return len(self._paths)

    def watching(self, path: str) -> bool:
        return path in self._roots

    def add_tree(self, top: str) -> None:
        """Watch `top` and every directory below it (symlinks are not followed)."""
        wd = self._add(top)
        if wd is not None and not any(top.startswith(root.rstrip("/") + "/") for root in self._roots):
            self._roots[top] = wd
        for root, dirs, _files in os.walk(top):
            dirs[:] = [d for d in dirs if not self.skip(os.path.join(root, d))]
            for name in dirs:
                self._add(os.path.join(root, name))

    def _add(self, path: str) -> int | None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), WATCH_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR):
                return None  # gone again already: its parent's event covers it
            if err == errno.ENOSPC:
                raise InotifyError(err, f"{path}: inotify watch limit reached (fs.inotify.max_user_watches)")
            raise InotifyError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self._paths[wd] = path
        return wd

    def _drop_tree(self, top: str) -> None:
        prefix = top.rstrip("/") + "/"
        for wd, path in list(self._paths.items()):
            if path == top or path.startswith(prefix):
                self._libc.inotify_rm_watch(self.fd, wd)
                del self._paths[wd]

    def read(self, timeout: float | None) -> list[Event]:
        """The events available within `timeout` seconds (None: wait for one); keeps the watches current."""
        ready, _writable, _errors = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return []
        return list(self._events(data))

    def _events(self, data: bytes) -> Iterator[Event]:
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
            raw = data[offset + _HEADER.size : offset + _HEADER.size + length].rstrip(b"\0")
            offset += _HEADER.size + length
            if mask & IN_Q_OVERFLOW:
                yield Event("", mask)
                continue
            if mask & IN_IGNORED:
                self._paths.pop(wd, None)
                self._roots = {root: w for root, w in self._roots.items() if w != wd}
                continue
            if mask & IN_MOVE_SELF and wd in self._roots.values():
                # A watched tree's top was moved away: its paths are stale; the caller sees it unwatched.
                self._roots = {root: w for root, w in self._roots.items() if w != wd}
            directory = self._paths.get(wd)
            if directory is None or mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                continue  # the parent's IN_DELETE / IN_MOVED_* names the entry
            path = os.path.join(directory, os.fsdecode(raw)) if raw else directory
            if mask & IN_ISDIR and mask & IN_MOVED_FROM:
                self._drop_tree(path)
            if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO) and not self.skip(path):
                self.add_tree(path)
            yield Event(path, mask, cookie)
