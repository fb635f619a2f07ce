"""One SSH chroot jail per edge: what a peer's key reaches on this node, and nothing more.

Every peer logs in as its own user (``edge_user``): the mesh user's uid and gid under another name, so
files keep one owner, but sshd chroots each name into its own jail (``ChrootDirectory JAILS_DIR/%u``). A
jail holds the shell, Unison and the forced command (hard links of the template jail the mesh_ssh role
builds), the sync folders (recursive bind mounts at the same paths, read-only, nosuid, nodev: a peer's
login never writes them; a disk mounted inside a folder shows the same in the jail as on the host), the
edge's own Unison directory (its archive, the one place the login writes) and a notice directory. No
other edge's archives, no versions at all: a node's versions are kept by its own pulls, on the host.

Standard library only. ``plan_jails`` and the text helpers are pure; ``Jails`` (logins, hard links,
mounts), ``remove_jail`` and ``apply_jails`` change the node, for the mesh_member module.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import hashlib
import os
import pwd
import re
import signal
import stat
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .mesh_disks import mount_points, mounts_inside, unescape_mountinfo
from .mesh_jailbins import mirror_template
from .mesh_layout import write_atomic
from .mesh_names import LOGIN_RE
from .mesh_prune import RETIRED  # BACKUP_DIR/.retired/EDGE_USER-TIME: what a removed edge's server end kept


class JailError(RuntimeError):
    """A jail cannot be made or removed safely; nothing further was changed."""


def edge_user(user: str, node: str) -> str:
    """The name ``node`` logs in as on its peers: ``USER-NODE``, or ``USER-HASH`` when that is too long."""
    name = f"{user}-{node}"
    if len(name) <= 32:
        return name
    return f"{user[:21]}-{hashlib.sha256(node.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class JailLayout:
    jails_dir: str
    template: str
    unison_dir: str
    backup_dir: str

    def root(self, login: str) -> str:
        return f"{self.jails_dir}/{login}"

    def archive_dir(self, login: str, peer: str) -> str:
        """The edge's Unison directory inside the peer's jail (the host's UNISON_DIR/PEER links to it)."""
        return f"{self.root(login)}{self.unison_dir}/{peer}"

    def backup_root(self, login: str) -> str:
        return f"{self.root(login)}{self.backup_dir}"


# What every mount in a jail must carry: a peer reads the folders, never writes or runs anything there.
JAIL_MOUNT_FLAGS = ("ro", "nosuid", "nodev")
# A jail's notice directory: the peer's login leaves its change notices there (watch mode).
NOTIFY_DIR = "/notify"


def writable_points(mountinfo: str, prefix: str) -> set[str]:
    """Mount points under ``prefix`` that lack one of JAIL_MOUNT_FLAGS (per-mount options, field 6)."""
    found = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 5:
            point = unescape_mountinfo(fields[4])
            if point.startswith(prefix) and not set(JAIL_MOUNT_FLAGS) <= set(fields[5].split(",")):
                found.add(point)
    return found


def escape_fstab(path: str) -> str:
    return path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")


def _jails_line(line: str, jails_dir: str) -> str | None:
    """The mount point of an fstab line that binds into JAILS_DIR (a jail's line), else None."""
    fields = line.split()
    prefix = escape_fstab(jails_dir.rstrip("/") + "/")
    if len(fields) > 1 and not fields[0].startswith("#") and fields[1].startswith(prefix):
        return unescape_mountinfo(fields[1])
    return None


def fstab_binds(current: str, jails_dir: str) -> list[str]:
    """Mount points of the jails' lines in an fstab."""
    return [point for line in current.splitlines() if (point := _jails_line(line, jails_dir)) is not None]


def render_fstab(current: str, binds: Sequence[tuple[str, str]], jails_dir: str) -> str:
    """/etc/fstab with exactly ``binds`` (source, mount point) for the jails: other lines kept as they are.

    Lines whose mount point lies in JAILS_DIR are the jails'; they come last, after the lines that may
    mount the folders' own disks, so a booting host binds the mounted disk and not what lies beneath it.
    """
    kept = [line for line in current.splitlines() if _jails_line(line, jails_dir) is None]
    while kept and not kept[-1].strip():
        kept.pop()
    # rbind: a disk mounted inside a folder shows in the jail too; rslave: mounts made later under a folder
    # follow, nothing done in a jail comes back; ro,nosuid,nodev: the peer only reads.
    options = ",".join(("rbind", *JAIL_MOUNT_FLAGS, "rslave"))
    lines = kept + [f"{escape_fstab(src)} {escape_fstab(dst)} none {options} 0 0" for src, dst in binds]
    if lines == current.splitlines():
        return current
    return "\n".join(lines) + "\n"


def template_files(template: str, skip: Iterable[str], is_mount: Callable[[str], bool]) -> list[str]:
    """Paths (relative to the template, with a leading /) of its regular files: the shell, Unison and
    their libraries. State left in an old shared jail (archives, backups, folders) is skipped."""
    skipped = {template + path for path in skip}
    found = []
    for top, dirs, files in os.walk(template):
        dirs[:] = sorted(d for d in dirs if f"{top}/{d}" not in skipped and not is_mount(f"{top}/{d}"))
        found += [f"{top}/{f}"[len(template) :] for f in sorted(files) if os.path.isfile(f"{top}/{f}")]
    return found


def remove_jail(
    jail: str,
    archives: str | tuple[str, ...],
    mounts: Callable[[], set[str]],
    umount: Callable[[str], None],
    keep: tuple[str, str] | None = None,
) -> None:
    """Unmount what is bound into a jail, keep its backups (``keep``: moved from, to), then remove it.

    Never deletes through a mount: whatever is still mounted in the jail after unmounting stops the
    removal (JailError), and so does a file that no jail is made of (one not owned by root outside
    ``archives``, the prefixes of what the peer's login writes: the jail's Unison directories and its
    notice directory).
    """
    prefix = jail.rstrip("/") + "/"
    for point in sorted((m for m in mounts() if m.startswith(prefix)), key=len, reverse=True):
        umount(point)
    if left := sorted(m for m in mounts() if m.startswith(prefix) or m == jail):
        raise JailError(f"still mounted in {jail}: {', '.join(left)}; not removing it")
    if keep is not None and os.path.isdir(keep[0]):
        os.makedirs(os.path.dirname(keep[1]), mode=0o750, exist_ok=True)
        os.rename(keep[0], keep[1])
    # Every file is checked before the first is removed, so a refused jail is left whole.
    for top, _dirs, files in os.walk(jail):
        for name in files:
            path = f"{top}/{name}"
            st = os.lstat(path)
            if not (stat.S_ISLNK(st.st_mode) or st.st_uid == 0 or path.startswith(archives)):
                raise JailError(
                    f"{path} is not part of a jail (owned by uid {st.st_uid}): not removing {jail}"
                )
    for top, dirs, files in os.walk(jail, topdown=False):
        for name in files:
            os.unlink(f"{top}/{name}")
        for name in dirs:
            path = f"{top}/{name}"
            if os.path.islink(path):
                os.unlink(path)
            else:
                os.rmdir(path)
    os.rmdir(jail)


def _pids(proc: str, *tests: Callable[[str], bool]) -> list[int]:
    """The processes under ``proc`` for which any test (given ``/proc/PID``) holds; one that is gone
    meanwhile, or not ours to read (the test raises OSError), does not count."""
    found = []
    with contextlib.suppress(OSError), os.scandir(proc) as entries:
        for entry in entries:
            if entry.name.isdigit() and any(_holds(test, entry.path) for test in tests):
                found.append(int(entry.name))
    return sorted(found)


def _holds(test: Callable[[str], bool], path: str) -> bool:
    try:
        return test(path)
    except OSError:
        return False


def _in_jail(jail: str) -> Callable[[str], bool]:
    """Whether a process is chrooted into the jail (its root needs the ptrace right to read)."""
    jail = jail.rstrip("/")

    def test(path: str) -> bool:
        root = os.readlink(f"{path}/root").removesuffix(" (deleted)")
        return root == jail or root.startswith(jail + "/")

    return test


def _sshd_of(login: str) -> Callable[[str], bool]:
    """Whether a process is sshd's for a connection of the login, by the title sshd gives it (``sshd:
    LOGIN [priv]`` and ``sshd: LOGIN@notty``; ``sshd-session:`` since OpenSSH 9.8). A command line is
    readable without the ptrace right a process's root needs (root in a container may lack
    CAP_SYS_PTRACE)."""
    title = re.compile(rf"sshd(?:-session)?: {re.escape(login)}(?: \[priv\]|@notty)")

    def test(path: str) -> bool:
        with open(f"{path}/cmdline", "rb") as handle:
            argv0 = handle.read(4096).split(b"\0", 1)[0]
        return bool(title.fullmatch(argv0.decode("utf-8", "replace").strip()))

    return test


def jailed_pids(jail: str, proc: str = "/proc") -> list[int]:
    """The processes chrooted into a jail: the removed peer's live ssh connections (sshd's session
    process and what it runs), which an unmounted jail alone would leave open."""
    return _pids(proc, _in_jail(jail))


def session_pids(login: str, proc: str = "/proc") -> list[int]:
    """sshd's processes of a login's open connections, found by their titles."""
    return _pids(proc, _sshd_of(login))


def connection_pids(jail: str, login: str, proc: str = "/proc") -> list[int]:
    """A login's open connections: sshd's processes of it and whatever runs chrooted into its jail (one
    pass over ``proc``)."""
    return _pids(proc, _in_jail(jail), _sshd_of(login))


def end_processes(pids: Callable[[], list[int]], grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL to what is still there after ``grace_s`` (polled, bounded)."""
    for pid in pids():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (left := pids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def retired_path(backup_dir: str, login: str, now: float | None = None) -> str:
    """Where a removed edge's backups go: BACKUP_DIR/.retired/LOGIN-TIME (never a folder's name)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{backup_dir}/{RETIRED}/{login}-{stamp}"


@dataclass(frozen=True)
class JailPlan:
    """What the node's logins, jails and mounts need; see ``plan_jails``."""

    users_add: tuple[str, ...] = ()
    users_remove: tuple[str, ...] = ()
    jails_remove: tuple[str, ...] = ()
    binds: tuple[tuple[str, str], ...] = ()  # every (folder, mount point in a jail) wanted
    mount: tuple[tuple[str, str], ...] = ()  # those not mounted now, and disks inside folders a jail lacks
    remount: tuple[str, ...] = ()  # mounted binds (or mounts below them) not yet read-only, nosuid, nodev
    retire: tuple[str, ...] = ()  # kept logins whose jail still holds versions (earlier layout)
    unmount: tuple[str, ...] = ()  # mount points in kept jails that no wanted bind has (a dropped folder)
    fstab: str | None = None  # the new /etc/fstab, when it changes

    @property
    def changed(self) -> bool:
        return bool(
            self.users_add
            or self.users_remove
            or self.jails_remove
            or self.mount
            or self.remount
            or self.retire
            or self.unmount
            or self.fstab
        )


def plan_jails(
    logins: Sequence[str],
    folders: Sequence[str],
    layout: JailLayout,
    users: Iterable[str],
    jails: Iterable[str],
    mounted: set[str],
    fstab: str,
    writable: set[str] = frozenset(),  # type: ignore[assignment]
    with_backups: Iterable[str] = (),
) -> JailPlan:
    """Compare the wanted logins (one per peer) and their folder mounts with what the node has.

    ``users``: the edge logins that exist (members of the peers' group); ``jails``: names in JAILS_DIR;
    ``writable``: mount points in JAILS_DIR not read-only, nosuid, nodev; ``with_backups``: logins whose
    jail still has the versions directory of the earlier layout (its server end kept versions).
    """
    wanted, have, jail_names = set(logins), set(users), set(jails)
    binds = tuple((path, layout.root(login) + path) for login in sorted(wanted) for path in folders)
    # Disks mounted inside the folders get a jail line each, after their folder's: a bind of its own,
    # read-only on top (mount(8) makes only a recursive bind's top read-only; at boot, systemd mounts a
    # bind's source first). A mount still to be made brings them; one made already lacks those mounted
    # since (a host whose mounts do not propagate): bound in too, so a peer reads what this node reads.
    inner = {
        dst: [(f"{src}/{rel}", f"{dst}/{rel}") for rel in mounts_inside(src, mounted)] for src, dst in binds
    }
    lines = [line for bind in binds for line in (bind, *inner[bind[1]])]
    new_fstab = render_fstab(fstab, lines, layout.jails_dir)
    points = {dst for _src, dst in lines}
    kept = tuple(layout.root(login) + "/" for login in sorted(wanted))
    # Only binds replimesh made (its fstab lines) of folders no longer synced, in jails that stay.
    unmount = [
        dst for dst in fstab_binds(fstab, layout.jails_dir) if dst.startswith(kept) and dst not in points
    ]
    unmount = [dst for dst in unmount if dst in mounted]
    missing = []
    for dst, points_in in inner.items():
        gone = [point for point in points_in if dst in mounted and point[1] not in mounted]
        # A disk inside another missing one comes with it (rbind).
        missing += [p for p in gone if not any(p[1].startswith(f"{other[1]}/") for other in gone)]
    return JailPlan(
        users_add=tuple(sorted(wanted - have)),
        users_remove=tuple(sorted(have - wanted)),
        jails_remove=tuple(sorted(name for name in jail_names - wanted if LOGIN_RE.fullmatch(name))),
        binds=binds,
        mount=tuple(bind for bind in binds if bind[1] not in mounted) + tuple(missing),
        remount=tuple(
            sorted(p for p in writable if p in points or any(p.startswith(f"{d}/") for d in points))
        ),
        retire=tuple(sorted(set(with_backups) & wanted)),
        unmount=tuple(unmount),
        fstab=new_fstab if new_fstab != fstab else None,
    )


class Jails:
    """The peers' logins, their jails' binaries and the folders' bind mounts: what needs commands.

    ``run`` runs a command (argv) and returns (rc, stdout, stderr); ``peers`` maps each login to its peer.
    """

    def __init__(
        self,
        run: Callable[[list[str]], tuple[int, str, str]],
        user: str,
        group: str,
        peers: Mapping[str, str],
        folders: Sequence[str],
        layout: JailLayout,
        fstab: str = "/etc/fstab",
    ) -> None:
        self.run, self.user, self.group = run, user, group
        self.peers, self.folders, self.layout, self.fstab = dict(peers), list(folders), layout, fstab
        self.logins = sorted(self.peers)

    def _run(self, argv: list[str]) -> str:
        rc, out, err = self.run(argv)
        if rc != 0:
            raise JailError(f"{' '.join(argv)} failed ({rc}): {(err or out).strip()}")
        return out

    def mountinfo(self) -> str:
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            return handle.read()

    def mounts(self) -> set[str]:
        return mount_points(self.mountinfo())

    def mesh_user(self) -> pwd.struct_passwd:
        """The mesh user's passwd entry (KeyError if there is none); never root's ids."""
        user = pwd.getpwnam(self.user)
        if user.pw_uid == 0 or user.pw_gid == 0:
            # Every peer's login would be root (or in root's group), and root's other names would count
            # as the peers' logins: removed when no peer wants them.
            raise JailError(
                f"the mesh user {self.user} has uid {user.pw_uid} and gid {user.pw_gid}: it must be an "
                "unprivileged user, as every peer logs in with its ids; nothing was changed"
            )
        return user

    def existing_users(self) -> list[str]:
        """Logins in the peers' group that are the mesh user under another name."""
        try:
            uid = self.mesh_user().pw_uid
            members = grp.getgrnam(self.group).gr_mem
        except KeyError:
            return []
        return [name for name in members if name != self.user and _uid(name) == uid]

    def plan(self) -> JailPlan:
        try:
            with open(self.fstab, encoding="utf-8") as handle:
                fstab = handle.read()
        except FileNotFoundError:
            fstab = ""
        try:
            with os.scandir(self.layout.jails_dir) as it:
                jails = [e.name for e in it if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            jails = []
        info = self.mountinfo()
        old_backups = [login for login in self.logins if os.path.isdir(self.layout.backup_root(login))]
        return plan_jails(
            self.logins,
            self.folders,
            self.layout,
            self.existing_users(),
            jails,
            mount_points(info),
            fstab,
            writable_points(info, self.layout.jails_dir.rstrip("/") + "/"),
            old_backups,
        )

    def template_files(self) -> list[str]:
        skip = [self.layout.unison_dir, self.layout.backup_dir, *self.folders]
        return template_files(self.layout.template, skip, self.mounts().__contains__)

    def mirror(self, dry_run: bool) -> list[str]:
        files = self.template_files()
        changed = []
        for login in self.logins:
            if os.path.isdir(self.layout.root(login)) or not dry_run:
                changed += mirror_template(self.layout.template, self.layout.root(login), files, dry_run)
        return changed

    def add_users(self, names: Sequence[str]) -> None:
        user = self.mesh_user()
        for name in names:
            try:
                found: pwd.struct_passwd | None = pwd.getpwnam(name)
            except KeyError:
                found = None
            if found is not None and found.pw_uid != user.pw_uid:
                raise JailError(
                    f"user {name} exists and is not the mesh user's: rename it, a peer logs in as it"
                )
            if found is None:
                self._run(["useradd", "-o", "-u", str(user.pw_uid), "-g", str(user.pw_gid), "-G", self.group,
                           "-M", "-N", "-d", "/", "-s", "/bin/sh", "-p", "*",
                           "-c", f"replimesh peer {self.peers.get(name, name)}", name])  # fmt: skip
            else:
                self._run(["usermod", "-a", "-G", self.group, name])

    def mount(self, binds: Sequence[tuple[str, str]]) -> None:
        for src, dst in binds:
            if not os.path.isdir(dst):
                os.mkdir(dst, 0o755)
            # Recursive, and a slave of the folder's mounts: unmounting in a jail never unmounts anything
            # on the host. Then read-only, nosuid, nodev, each mount of the tree (a bind's flags are set by
            # a remount, one mount at a time).
            self._run(["mount", "--rbind", "--make-rslave", src, dst])
            self.remount(sorted(p for p in self.mounts() if p == dst or p.startswith(f"{dst}/")))

    def remount(self, points: Sequence[str]) -> None:
        for point in points:
            self._run(["mount", "-o", "remount,bind," + ",".join(JAIL_MOUNT_FLAGS), point])

    def retire(self, logins: Sequence[str]) -> None:
        """Versions an earlier layout let a peer's server end keep in its jail go to BACKUP_DIR/.retired."""
        for login in logins:
            target = retired_path(self.layout.backup_dir, login)
            os.makedirs(os.path.dirname(target), mode=0o750, exist_ok=True)
            user = self.mesh_user()  # the runner prunes it (mesh_prune), as the folders' versions
            os.chown(os.path.dirname(target), user.pw_uid, user.pw_gid)
            os.rename(self.layout.backup_root(login), target)

    def unmount(self, points: Sequence[str]) -> None:
        """Folders no longer synced leave the jails they were bound into (the empty mount point goes too)."""
        for point in points:
            self._run(["umount", "--recursive", point])
            if point not in self.mounts():
                with contextlib.suppress(OSError):
                    os.rmdir(point)

    def remove(self, names: Sequence[str]) -> None:
        for name in names:
            jail = self.layout.root(name)
            # The removed peer's open connections end first: a connection it kept (ssh's ControlPersist)
            # would otherwise outlive its key and its jail, and a running session would keep mounts busy.
            end_processes(functools.partial(connection_pids, jail, name))
            keep = (self.layout.backup_root(name), retired_path(self.layout.backup_dir, name))
            archives = (jail + self.layout.unison_dir + "/", jail + NOTIFY_DIR + "/")
            remove_jail(jail, archives, self.mounts, lambda point: self._run(["umount", point]), keep)

    def remove_users(self, names: Sequence[str]) -> None:
        for name in names:
            # -f: the mesh user's own processes share the uid; without -r nothing but the entry goes.
            self._run(["userdel", "-f", name])


def _uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def apply_jails(jails: Jails, todo: JailPlan) -> None:
    """Logins first (a jail must not wait for its user), then binaries, mounts, fstab; stale ones last."""
    jails.add_users(todo.users_add)
    jails.mirror(dry_run=False)
    jails.unmount(todo.unmount)
    jails.mount(todo.mount)
    jails.remount(todo.remount)
    jails.retire(todo.retire)
    if todo.fstab is not None:
        write_atomic(jails.fstab, todo.fstab.encode(), 0o644)
    jails.remove(todo.jails_remove)
    jails.remove_users(todo.users_remove)
