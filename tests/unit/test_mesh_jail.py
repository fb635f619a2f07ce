"""mesh_jail: edge logins, mountinfo and fstab, planning, hard links and removal (files under tmp_path)."""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

import pytest

from ansible_collections.replimesh.mesh.plugins.module_utils import mesh_jail
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_jail import (
    RETIRED,
    JailError,
    JailLayout,
    Jails,
    edge_user,
    end_processes,
    fstab_binds,
    jailed_pids,
    mount_points,
    plan_jails,
    remove_jail,
    retired_path,
    session_pids,
    template_files,
    writable_points,
)
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_jail import render_fstab as render
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_jailbins import mirror_template, parents
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_names import LOGIN_RE

J = "/var/lib/replimesh/jails"
LAYOUT = JailLayout(J, "/var/lib/replimesh/jail", "/var/lib/replimesh/unison", "/var/lib/replimesh/backups")
MESH_UID = 1  # daemon: a user that is not root, standing in for the mesh user
# The options of every jail line in /etc/fstab: recursive, read-only, nosuid, nodev, a slave of the host.
RO_BIND = "rbind,ro,nosuid,nodev,rslave"


def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("files owned by another user need root to make")


# --- names ----------------------------------------------------------------------------------------------


def test_edge_user_is_user_dash_node_while_it_fits() -> None:
    assert edge_user("replimesh", "node2") == "replimesh-node2"
    name = edge_user("replimesh", "n" * 22)  # 9 + 1 + 22 = 32: still fits
    assert name == "replimesh-" + "n" * 22 and LOGIN_RE.fullmatch(name)


@pytest.mark.parametrize(
    ("user", "node"), [("replimesh", "n" * 23), ("u" * 32, "node2"), ("mesh", "a-" * 31)]
)
def test_a_long_edge_user_is_hashed_stable_and_a_valid_login(user: str, node: str) -> None:
    name = edge_user(user, node)
    assert len(name) <= 32 and LOGIN_RE.fullmatch(name)
    assert name == edge_user(user, node)  # the same on every run and every node
    assert name.startswith(user[:21] + "-")
    assert edge_user(user, node + "x") != name  # another node, another login


def test_parents_top_first() -> None:
    assert parents("/a/b/c") == ["/a", "/a/b"]
    assert parents("/a") == [] and parents("/a/") == []
    assert parents("/var/lib/replimesh/unison/x") == [
        "/var",
        "/var/lib",
        "/var/lib/replimesh",
        "/var/lib/replimesh/unison",
    ]


# --- mountinfo and fstab --------------------------------------------------------------------------------


MOUNTINFO = f"""\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 8:1 /srv/shared {J}/replimesh-node2/srv/shared rw,relatime shared:1 - ext4 /dev/sda1 rw
41 22 8:1 /srv/my\\040photos {J}/replimesh-node2/srv/my\\040photos rw shared:1 - ext4 /dev/sda1 rw
42 22 8:2 / /mnt/tab\\011and\\134back rw - ext4 /dev/sdb1 rw

short line
"""


def test_mount_points_are_read_with_their_octal_escapes_undone() -> None:
    assert mount_points(MOUNTINFO) == {
        "/",
        f"{J}/replimesh-node2/srv/shared",
        f"{J}/replimesh-node2/srv/my photos",
        "/mnt/tab\tand\\back",
    }
    assert mount_points("") == set()


WRITABLE_INFO = f"""\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 8:1 /srv/a {J}/replimesh-node2/srv/a ro,nosuid,nodev,relatime master:1 - ext4 /dev/sda1 rw
41 40 8:2 / {J}/replimesh-node2/srv/a/disk rw,nosuid,nodev,relatime master:2 - ext4 /dev/sdb1 rw
42 22 8:1 /srv/b {J}/replimesh-node2/srv/b ro,nodev,relatime master:1 - ext4 /dev/sda1 rw
43 22 8:1 /srv/my\\040c {J}/replimesh-node3/srv/my\\040c rw,relatime shared:1 - ext4 /dev/sda1 rw
44 22 8:1 /srv/d {J}/replimesh-node3/srv/d nodev,ro,nosuid master:1 - ext4 /dev/sda1 rw
45 22 8:1 /srv/e {J}-other/x/srv/e rw shared:1 - ext4 /dev/sda1 rw
46 22 8:1 /srv/f /srv/f rw shared:1 - ext4 /dev/sda1 rw
short line
"""


def test_writable_points_are_mounts_under_the_prefix_lacking_ro_nosuid_or_nodev() -> None:
    assert writable_points(WRITABLE_INFO, J + "/") == {
        f"{J}/replimesh-node2/srv/a/disk",  # rw: a disk mounted inside a folder
        f"{J}/replimesh-node2/srv/b",  # ro, nodev, but suid allowed
        f"{J}/replimesh-node3/srv/my c",  # rw, read with its escape undone
    }
    # The flags are read from the per-mount options (field 6), not the super block's (the last field).
    assert f"{J}/replimesh-node2/srv/a" not in writable_points(WRITABLE_INFO, J + "/")
    assert writable_points(WRITABLE_INFO, "/nowhere/") == set()
    assert writable_points("", J + "/") == set()


FSTAB = f"""\
# /etc/fstab: static file system information.
UUID=abcd / ext4 errors=remount-ro 0 1
/dev/sdb1 /srv ext4 defaults 0 2
/srv/old {J}/replimesh-node9/srv/old none bind 0 0
# {J}/replimesh-node2/srv/x is a comment: kept
/srv/shared /var/lib/replimesh/jails-other/x none bind 0 0

"""


def test_render_fstab_keeps_other_lines_and_puts_exactly_the_jails_binds_last() -> None:
    binds = [("/srv/shared", f"{J}/replimesh-node2/srv/shared"), ("/srv/a", f"{J}/replimesh-node3/srv/a")]
    text = render(FSTAB, binds, J)
    assert text.splitlines() == [
        "# /etc/fstab: static file system information.",
        "UUID=abcd / ext4 errors=remount-ro 0 1",
        "/dev/sdb1 /srv ext4 defaults 0 2",
        f"# {J}/replimesh-node2/srv/x is a comment: kept",
        "/srv/shared /var/lib/replimesh/jails-other/x none bind 0 0",  # not in JAILS_DIR: not ours
        f"/srv/shared {J}/replimesh-node2/srv/shared none {RO_BIND} 0 0",
        f"/srv/a {J}/replimesh-node3/srv/a none {RO_BIND} 0 0",
    ]
    assert render(text, binds, J) == text  # idempotent
    assert render(text, binds[1:], J) == render(FSTAB, binds[1:], J)  # replaced, never appended twice
    assert render(text, [], J).splitlines() == text.splitlines()[:5]
    assert render(text, binds, J + "/") == text


def test_render_fstab_escapes_spaces_tabs_and_backslashes_and_reads_its_own_lines_back() -> None:
    binds = [("/srv/my photos", f"{J}/replimesh-node2/srv/my photos"), ("/srv/a\tb\\c", f"{J}/x/srv/a\tb\\c")]
    text = render("", binds, J)
    assert text == (
        f"/srv/my\\040photos {J}/replimesh-node2/srv/my\\040photos none {RO_BIND} 0 0\n"
        f"/srv/a\\011b\\134c {J}/x/srv/a\\011b\\134c none {RO_BIND} 0 0\n"
    )
    assert render(text, binds, J) == text
    assert render(text, [], J) == "\n"
    assert fstab_binds(text, J) == [dst for _, dst in binds]
    jails_with_space = "/var/lib/my jails"
    spaced = render(
        "/dev/sda1 / ext4 defaults 0 1\n", [("/srv/a", f"{jails_with_space}/u-n/srv/a")], jails_with_space
    )
    assert render(spaced, [], jails_with_space) == "/dev/sda1 / ext4 defaults 0 1\n"


# --- planning -------------------------------------------------------------------------------------------


def test_plan_jails_adds_logins_binds_folders_and_writes_fstab() -> None:
    logins = ["replimesh-node3", "replimesh-node2"]
    todo = plan_jails(logins, ["/srv/a", "/srv/b"], LAYOUT, [], [], set(), "")
    assert todo.changed and todo.users_add == ("replimesh-node2", "replimesh-node3")
    assert todo.users_remove == todo.jails_remove == ()
    assert todo.binds == tuple(
        (f, f"{J}/replimesh-{n}{f}") for n in ("node2", "node3") for f in ("/srv/a", "/srv/b")
    )
    assert todo.mount == todo.binds
    assert todo.fstab == render("", todo.binds, J)


def test_plan_jails_on_a_settled_node_is_empty() -> None:
    logins, folders = ["replimesh-node2"], ["/srv/a"]
    first = plan_jails(logins, folders, LAYOUT, [], [], set(), "UUID=x / ext4 defaults 0 1\n")
    mounted = {dst for _, dst in first.binds} | {"/"}
    assert first.fstab is not None
    again = plan_jails(logins, folders, LAYOUT, logins, logins, mounted, first.fstab)
    assert not again.changed and again.mount == () and again.fstab is None
    assert again.binds == first.binds


def test_plan_jails_removes_gone_logins_and_jails_named_like_logins_only() -> None:
    todo = plan_jails(
        ["replimesh-node2"],
        ["/srv/a"],
        LAYOUT,
        users=["replimesh-node2", "replimesh-node4"],
        jails=["replimesh-node2", "replimesh-node4", "replimesh-node5", "lost+found", "Upper", ".cache"],
        mounted={f"{J}/replimesh-node2/srv/a"},
        fstab="".join(f"/srv/a {J}/replimesh-{n}/srv/a none bind 0 0\n" for n in ("node2", "node4")),
    )
    assert todo.users_add == () and todo.users_remove == ("replimesh-node4",)
    assert todo.jails_remove == ("replimesh-node4", "replimesh-node5")
    assert todo.mount == () and todo.fstab == f"/srv/a {J}/replimesh-node2/srv/a none {RO_BIND} 0 0\n"
    assert todo.unmount == ()  # node4's jail goes whole (remove_jail unmounts it)
    assert todo.changed


def test_plan_jails_unbinds_a_dropped_folder_from_kept_jails_only_where_replimesh_bound_it() -> None:
    mounted = {f"{J}/replimesh-node2/srv/a", f"{J}/replimesh-node2/srv/b", f"{J}/replimesh-node2/srv/a/disk"}
    fstab = "".join(f"/srv/{f} {J}/replimesh-node2/srv/{f} none bind 0 0\n" for f in ("a", "b"))
    todo = plan_jails(
        ["replimesh-node2"], ["/srv/a"], LAYOUT, ["replimesh-node2"], ["replimesh-node2"], mounted, fstab
    )
    # /srv/b is no longer synced: its bind goes; a mount that only propagated under /srv/a is left alone.
    assert todo.unmount == (f"{J}/replimesh-node2/srv/b",) and todo.mount == ()
    assert todo.fstab == f"/srv/a {J}/replimesh-node2/srv/a none {RO_BIND} 0 0\n" and todo.changed


def test_plan_jails_remounts_writable_binds_and_mounts_below_them_in_wanted_binds_only() -> None:
    logins, folders = ["replimesh-node2"], ["/srv/a", "/srv/b"]
    settled = plan_jails(logins, folders, LAYOUT, [], [], set(), "")
    assert settled.fstab is not None
    mounted = {dst for _, dst in settled.binds} | {f"{J}/replimesh-node2/srv/a/disk"}
    writable = {
        f"{J}/replimesh-node2/srv/a/disk",  # below a wanted bind
        f"{J}/replimesh-node2/srv/b",  # a wanted bind, mounted writable by the earlier layout
        f"{J}/replimesh-node2/srv/bb",  # a prefix of a bind's name only: not ours
        f"{J}/replimesh-node3/srv/a",  # a jail that is not wanted: remove_jail unmounts it
        f"{J}/replimesh-node2/srv",  # above the binds
    }
    todo = plan_jails(logins, folders, LAYOUT, logins, logins, mounted, settled.fstab, writable)
    assert todo.remount == (f"{J}/replimesh-node2/srv/a/disk", f"{J}/replimesh-node2/srv/b")
    assert todo.mount == () and todo.fstab is None and todo.retire == () and todo.changed
    clean = plan_jails(logins, folders, LAYOUT, logins, logins, mounted, settled.fstab, set())
    assert clean.remount == () and not clean.changed


def test_plan_jails_retires_the_versions_of_kept_logins_only() -> None:
    logins = ["replimesh-node2", "replimesh-node3"]
    settled = plan_jails(logins, ["/srv/a"], LAYOUT, [], [], set(), "")
    assert settled.fstab is not None
    mounted = {dst for _, dst in settled.binds}
    with_backups = ["replimesh-node3", "replimesh-node4", "replimesh-node2"]
    todo = plan_jails(logins, ["/srv/a"], LAYOUT, logins, logins, mounted, settled.fstab, set(), with_backups)
    # node4 is no peer: its whole jail goes (remove_jail keeps its versions), it is not retired here.
    assert todo.retire == ("replimesh-node2", "replimesh-node3") and todo.changed
    assert todo.remount == () and todo.mount == () and todo.fstab is None


def test_plan_jails_without_peers_drops_every_bind() -> None:
    todo = plan_jails([], ["/srv/a"], LAYOUT, [], [], set(), f"/srv/a {J}/u-n/srv/a none bind 0 0\n")
    assert todo.binds == todo.mount == () and todo.fstab == "\n"


def test_retired_path_is_under_backup_dir_and_names_the_login_and_time() -> None:
    assert retired_path("/b", "replimesh-node2", now=0) == f"/b/{RETIRED}/replimesh-node2-19700101T000000Z"


# --- the template and its hard links --------------------------------------------------------------------


def make_template(root: Path) -> Path:
    template = root / "template"
    for rel in ("bin/sh", "usr/bin/unison", "lib/x86_64/libc.so.6", "etc/passwd"):
        (template / rel).parent.mkdir(parents=True, exist_ok=True)
        (template / rel).write_text(rel)
    # State an old shared jail left: never copied into a new jail.
    for rel in (
        "var/lib/replimesh/unison/node2/ar00",
        "var/lib/replimesh/backups/shared/f",
        "srv/shared/doc",
    ):
        (template / rel).parent.mkdir(parents=True, exist_ok=True)
        (template / rel).write_text("state")
    (template / "mnt/disk").mkdir(parents=True)
    (template / "mnt/disk/file").write_text("on a mounted disk")
    return template


def test_template_files_are_the_regular_files_without_state_or_mounts(tmp_path: Path) -> None:
    template = make_template(tmp_path)
    skip = ["/var/lib/replimesh/unison", "/var/lib/replimesh/backups", "/srv/shared"]
    found = template_files(str(template), skip, {str(template / "mnt/disk")}.__contains__)
    assert found == ["/bin/sh", "/etc/passwd", "/lib/x86_64/libc.so.6", "/usr/bin/unison"]
    everything = template_files(str(template), [], lambda path: False)
    assert "/var/lib/replimesh/unison/node2/ar00" in everything and "/mnt/disk/file" in everything


def mirror_setup(tmp_path: Path) -> tuple[str, str, list[str]]:
    template = make_template(tmp_path)
    jail = tmp_path / "jails/replimesh-node2"
    jail.mkdir(parents=True)
    files = template_files(str(template), ["/var", "/srv", "/mnt"], lambda path: False)
    return str(template), str(jail), files


def test_mirror_template_hard_links_every_file_then_has_nothing_to_do(tmp_path: Path) -> None:
    template, jail, files = mirror_setup(tmp_path)
    changed = mirror_template(template, jail, files)
    assert changed == [
        f"{jail}/bin",
        f"{jail}/bin/sh",
        f"{jail}/etc",
        f"{jail}/etc/passwd",
        f"{jail}/lib",
        f"{jail}/lib/x86_64",
        f"{jail}/lib/x86_64/libc.so.6",
        f"{jail}/usr",
        f"{jail}/usr/bin",
        f"{jail}/usr/bin/unison",
    ]
    for rel in files:
        src, dst = os.stat(template + rel), os.lstat(jail + rel)
        assert (dst.st_ino, dst.st_dev) == (src.st_ino, src.st_dev), rel  # the same file, not a copy
    assert os.stat(f"{jail}/usr/bin").st_mode & 0o7777 == 0o755 & ~current_umask()
    assert mirror_template(template, jail, files) == []
    assert mirror_template(template, jail, files, dry_run=True) == []
    assert not list(Path(jail).rglob("*.replimesh-new"))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_mirror_template_dry_run_changes_nothing_but_names_the_changes(tmp_path: Path) -> None:
    template, jail, files = mirror_setup(tmp_path)
    would = mirror_template(template, jail, files, dry_run=True)
    assert list(Path(jail).iterdir()) == []
    assert set(would) == set(mirror_template(template, jail, files))


def test_mirror_template_replaces_a_different_file_and_a_symlink(tmp_path: Path) -> None:
    template, jail, files = mirror_setup(tmp_path)
    mirror_template(template, jail, files)
    os.unlink(f"{jail}/bin/sh")
    Path(f"{jail}/bin/sh").write_text("an old copy")
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    os.unlink(f"{jail}/usr/bin/unison")
    os.symlink(victim, f"{jail}/usr/bin/unison")
    assert mirror_template(template, jail, files, dry_run=True) == [
        f"{jail}/bin/sh",
        f"{jail}/usr/bin/unison",
    ]
    assert Path(f"{jail}/bin/sh").read_text() == "an old copy"
    assert mirror_template(template, jail, files) == [f"{jail}/bin/sh", f"{jail}/usr/bin/unison"]
    for rel in ("/bin/sh", "/usr/bin/unison"):
        assert os.lstat(jail + rel).st_ino == os.stat(template + rel).st_ino
    assert victim.read_text() == "untouched"
    # A new version of the template (a package upgrade replaces the file) is linked again.
    os.unlink(f"{template}/bin/sh")
    Path(f"{template}/bin/sh").write_text("new shell")
    assert mirror_template(template, jail, files) == [f"{jail}/bin/sh"]
    assert Path(f"{jail}/bin/sh").read_text() == "new shell"


# --- removal --------------------------------------------------------------------------------------------


class FakeMounts:
    """Mount points a test says are mounted; ``umount`` removes one (or, when stuck, leaves it)."""

    def __init__(self, points: Iterable[str], stuck: Iterable[str] = ()) -> None:
        self.points, self.stuck = set(points), set(stuck)
        self.unmounted: list[str] = []

    def __call__(self) -> set[str]:
        return set(self.points)

    def umount(self, point: str) -> None:
        self.unmounted.append(point)
        if point not in self.stuck:
            self.points.discard(point)


def make_jail(tmp_path: Path, mesh_uid: int | None = None) -> tuple[Path, str, Path]:
    """A jail as the module leaves it: (jail, archives prefix, its backups)."""
    jail = tmp_path / "jails/replimesh-node2"
    archive = jail / "var/lib/replimesh/unison/node2"
    backups = jail / "var/lib/replimesh/backups"
    for directory in (jail / "bin", archive, backups / "shared", jail / "srv/shared", jail / "srv/photos"):
        directory.mkdir(parents=True, exist_ok=True)
    (jail / "bin/sh").write_text("shell")
    (archive / "node2--shared.prf").write_text("profile")
    (archive / ("ar" + "0" * 32)).write_text("archive")
    (archive / "lk-link").symlink_to("/etc/passwd")
    (backups / "shared/.bak.0.doc").write_text("old version")
    if mesh_uid is not None:  # what the mesh user writes: archives and kept versions
        for path in (archive / ("ar" + "0" * 32), backups / "shared", backups / "shared/.bak.0.doc"):
            os.chown(path, mesh_uid, mesh_uid)
    return jail, str(jail / "var/lib/replimesh/unison") + "/", backups


def test_jailed_pids_are_the_processes_whose_root_is_the_jail_or_inside_it(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    roots = {
        "101": f"{J}/replimesh-node2",  # sshd's session process of node2's connection
        "102": f"{J}/replimesh-node2/bin",  # a root deeper in the jail
        "103": f"{J}/replimesh-node2 (deleted)",  # the jail went while the connection stayed
        "104": f"{J}/replimesh-node22",  # another peer's jail, whose name starts the same
        "105": "/",  # the host's processes
        "self": f"{J}/replimesh-node2",  # not a process number
    }
    for pid, root in roots.items():
        (proc / pid).mkdir(parents=True)
        (proc / pid / "root").symlink_to(root)
    (proc / "106").mkdir()  # gone (or not ours to read): no root link
    assert jailed_pids(f"{J}/replimesh-node2/", str(proc)) == [101, 102, 103]
    assert jailed_pids(f"{J}/replimesh-node3", str(proc)) == []
    assert jailed_pids(J, str(tmp_path / "no-proc")) == []


def test_session_pids_are_sshds_processes_of_that_login_by_their_titles(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    titles = {
        "201": b"sshd: replimesh-node2 [priv]\0\0\0",  # the monitor (root)
        "202": b"sshd: replimesh-node2@notty\0",  # the session's network process
        "203": b"sshd-session: replimesh-node2 [priv]\0",  # OpenSSH 9.8 and later (Debian 13)
        "204": b"sshd: replimesh-node22@notty\0",  # another login that starts the same
        "205": b"sshd: replimesh-node2 [net]\0",  # not authenticated: no connection of the login yet
        "206": b"/usr/bin/unison\0-server\0",
        "207": b"sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups\0",
    }
    for pid, cmdline in titles.items():
        (proc / pid).mkdir(parents=True)
        (proc / pid / "cmdline").write_bytes(cmdline)
    (proc / "208").mkdir()  # gone meanwhile: no cmdline
    assert session_pids("replimesh-node2", str(proc)) == [201, 202, 203]
    assert session_pids("replimesh-node3", str(proc)) == []


def test_end_processes_terms_then_kills_what_ignores_it_within_the_grace() -> None:
    polite = subprocess.Popen(["sleep", "30"])
    ignores_term = "trap '' TERM; echo ready; exec sleep 30"
    stubborn = subprocess.Popen(["sh", "-c", ignores_term], stdout=subprocess.PIPE)
    assert stubborn.stdout and stubborn.stdout.readline() == b"ready\n"  # its trap is set
    children = [polite, stubborn]
    started = time.monotonic()
    end_processes(lambda: [c.pid for c in children if c.poll() is None], grace_s=1.0)
    assert polite.wait(timeout=5) == -signal.SIGTERM
    assert stubborn.wait(timeout=5) == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_remove_jail_unmounts_deepest_first_keeps_the_backups_and_removes_the_rest(tmp_path: Path) -> None:
    as_root()
    jail, archives, backups = make_jail(tmp_path, MESH_UID)
    mounts = FakeMounts({str(jail / "srv/shared"), str(jail / "srv"), "/", str(tmp_path / "jails/other/srv")})
    keep_to = tmp_path / "backups" / RETIRED / "replimesh-node2-19700101T000000Z"
    remove_jail(str(jail), archives, mounts, mounts.umount, (str(backups), str(keep_to)))
    assert mounts.unmounted == [str(jail / "srv/shared"), str(jail / "srv")]
    assert mounts.points == {"/", str(tmp_path / "jails/other/srv")}  # only the jail's own mounts
    assert not jail.exists() and (tmp_path / "jails").is_dir()
    assert (keep_to / "shared/.bak.0.doc").read_text() == "old version"
    assert (keep_to / "shared").stat().st_uid == MESH_UID
    assert (tmp_path / "backups" / RETIRED).stat().st_mode & 0o777 == 0o750 & ~current_umask()


def test_remove_jail_with_no_backups_to_keep_removes_everything(tmp_path: Path) -> None:
    jail, archives, _ = make_jail(tmp_path)
    mounts = FakeMounts(set())
    remove_jail(str(jail), archives, mounts, mounts.umount, (str(tmp_path / "none"), str(tmp_path / "kept")))
    assert not jail.exists() and not (tmp_path / "kept").exists() and mounts.unmounted == []
    assert Path("/etc/passwd").exists()  # the archive dir's symlink was removed, not followed


def test_remove_jail_refuses_while_something_is_still_mounted(tmp_path: Path) -> None:
    jail, archives, backups = make_jail(tmp_path)
    stuck = str(jail / "srv/shared")
    mounts = FakeMounts({stuck, str(jail / "srv/photos")}, stuck={stuck})
    keep_to = tmp_path / "retired"
    with pytest.raises(JailError, match=re.escape(f"still mounted in {jail}: {stuck}; not removing it")):
        remove_jail(str(jail), archives, mounts, mounts.umount, (str(backups), str(keep_to)))
    assert sorted(mounts.unmounted) == [str(jail / "srv/photos"), stuck]
    # Nothing deleted through the mount, the backups not moved.
    assert (jail / "bin/sh").exists() and (backups / "shared/.bak.0.doc").exists() and not keep_to.exists()


def test_remove_jail_refuses_when_the_jail_itself_is_a_mount_point(tmp_path: Path) -> None:
    jail, archives, _ = make_jail(tmp_path)
    mounts = FakeMounts({str(jail)})
    with pytest.raises(JailError, match="still mounted"):
        remove_jail(str(jail), archives, mounts, mounts.umount)
    assert mounts.unmounted == [] and (jail / "bin/sh").exists()


@pytest.mark.parametrize(
    "where", ["srv/shared/document", "bin/planted", "var/lib/replimesh/backups/shared/x"]
)
def test_remove_jail_refuses_a_file_no_jail_is_made_of_and_leaves_the_jail(
    tmp_path: Path, where: str
) -> None:
    as_root()
    jail, archives, _ = make_jail(tmp_path)
    foreign = jail / where
    foreign.write_text("someone's data")
    os.chown(foreign, MESH_UID, MESH_UID)
    before = sorted(str(p) for p in jail.rglob("*"))
    message = f"{foreign} is not part of a jail (owned by uid {MESH_UID}): not removing {jail}"
    with pytest.raises(JailError, match=re.escape(message)):
        remove_jail(str(jail), archives, lambda: set(), lambda point: None)  # no keep: backups stay
    assert foreign.read_text() == "someone's data"
    assert sorted(str(p) for p in jail.rglob("*")) == before  # nothing else removed either


def test_remove_jail_removes_the_mesh_users_files_in_the_archives(tmp_path: Path) -> None:
    as_root()
    jail, archives, backups = make_jail(tmp_path, MESH_UID)
    remove_jail(str(jail), archives, lambda: set(), lambda point: None, (str(backups), str(tmp_path / "k")))
    assert not jail.exists()


def test_remove_jail_removes_the_change_notices_the_peers_login_left(tmp_path: Path) -> None:
    as_root()
    jail, archives, _ = make_jail(tmp_path)
    notice = jail / "notify/4242"
    notice.parent.mkdir()
    notice.write_text("shared\tdocs/report.txt\n")
    os.chown(notice, MESH_UID, MESH_UID)
    message = f"{notice} is not part of a jail (owned by uid {MESH_UID}): not removing {jail}"
    with pytest.raises(JailError, match=re.escape(message)):  # only where the login writes
        remove_jail(str(jail), archives, lambda: set(), never)
    remove_jail(str(jail), (archives, f"{jail}/notify/"), lambda: set(), never)
    assert not jail.exists()


def never(point: str) -> None:
    raise AssertionError(f"umount {point} was not expected")


def test_an_unmounted_jail_is_never_unmounted(tmp_path: Path) -> None:
    jail, archives, _ = make_jail(tmp_path)
    remove_jail(str(jail), archives, lambda: {"/", str(jail) + "-other/x"}, never)
    assert not jail.exists()


# --- commands: mounts and retired versions --------------------------------------------------------------


class Recorder:
    """Stands in for the module's run_command: records each argv, always succeeds."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.argvs.append(argv)
        return 0, "", ""


def test_jails_mount_rbinds_as_a_slave_then_remounts_every_mount_of_the_tree_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = JailLayout(str(tmp_path / "jails"), str(tmp_path / "t"), "/u", "/b")
    dst = f"{layout.root('replimesh-node2')}/srv/a"
    os.makedirs(os.path.dirname(dst))
    run = Recorder()
    jails = Jails(run, "replimesh", "replimesh-peers", {"replimesh-node2": "node2"}, ["/srv/a"], layout)
    # What the kernel shows after the rbind: the bind, a disk mounted inside the folder, a neighbour.
    monkeypatch.setattr(Jails, "mounts", lambda self: {dst, f"{dst}/disk", f"{dst}x", "/"})
    jails.mount([("/srv/a", dst)])
    assert os.path.isdir(dst)
    assert run.argvs == [
        ["mount", "--rbind", "--make-rslave", "/srv/a", dst],
        ["mount", "-o", "remount,bind,ro,nosuid,nodev", dst],
        ["mount", "-o", "remount,bind,ro,nosuid,nodev", f"{dst}/disk"],
    ]
    run.argvs.clear()
    jails.remount([f"{dst}/disk"])
    assert run.argvs == [["mount", "-o", "remount,bind,ro,nosuid,nodev", f"{dst}/disk"]]


def test_jails_retire_moves_a_jails_versions_to_the_retired_backups(tmp_path: Path) -> None:
    backup_dir = str(tmp_path / "backups")
    layout = JailLayout(str(tmp_path / "jails"), str(tmp_path / "t"), "/u", backup_dir)
    versions = Path(layout.backup_root("replimesh-node2"))
    (versions / "shared").mkdir(parents=True)
    (versions / "shared/.bak.0.doc").write_text("old version")
    run = Recorder()
    jails = Jails(
        run, "daemon", "replimesh-peers", {"replimesh-node2": "node2"}, [], layout
    )  # daemon: the mesh user
    jails.retire(["replimesh-node2"])
    assert not versions.exists() and run.argvs == []
    # The mesh user's runner prunes them (mesh_prune), as the folders' versions.
    assert (tmp_path / "backups" / RETIRED).stat().st_uid == pwd.getpwnam("daemon").pw_uid
    [kept] = (tmp_path / "backups" / RETIRED).iterdir()
    assert re.fullmatch(r"replimesh-node2-[0-9]{8}T[0-9]{6}Z", kept.name)
    assert (kept / "shared/.bak.0.doc").read_text() == "old version"


# --- the mesh user --------------------------------------------------------------------------------------
def jails_of(user: str, ran: list[list[str]]) -> Jails:
    def run(argv: list[str]) -> tuple[int, str, str]:
        ran.append(argv)
        return 0, "", ""

    return Jails(run, user, "root", {f"{user}-node2": "node2"}, ["/srv/replimesh/shared"], LAYOUT)


def test_a_mesh_user_with_roots_uid_gets_no_login_and_counts_none() -> None:
    ran: list[list[str]] = []
    with pytest.raises(JailError, match="mesh user root has uid 0 and gid 0: it must be an unprivileged"):
        jails_of("root", ran).add_users(["root-node2"])
    # Nor may root's other names pass for the peers' logins: the logins no peer wants are userdel'd.
    with pytest.raises(JailError, match="uid 0"):
        jails_of("root", ran).existing_users()
    assert ran == []


def test_a_mesh_user_in_roots_group_gets_no_login(monkeypatch: pytest.MonkeyPatch) -> None:
    real = pwd.getpwnam
    monkeypatch.setattr(
        mesh_jail.pwd,
        "getpwnam",
        lambda name: SimpleNamespace(pw_uid=1000, pw_gid=0) if name == "m" else real(name),
    )
    ran: list[list[str]] = []
    with pytest.raises(JailError, match="mesh user m has uid 1000 and gid 0"):
        jails_of("m", ran).add_users(["m-node2"])
    assert ran == []


def test_logins_are_made_with_the_mesh_users_ids() -> None:
    daemon = pwd.getpwnam("daemon")
    ran: list[list[str]] = []
    jails_of("daemon", ran).add_users(["no-such-login-x"])
    assert ran[0][:7] == ["useradd", "-o", "-u", str(daemon.pw_uid), "-g", str(daemon.pw_gid), "-G"]


def test_plan_jails_binds_in_a_disk_mounted_inside_a_folder_read_only_on_top() -> None:
    logins, folders = ["replimesh-node2", "replimesh-node3"], ["/srv/a"]
    settled = plan_jails(logins, folders, LAYOUT, [], [], set(), "")
    jails = [f"{J}/{login}/srv/a" for login in logins]
    host = {*jails, "/srv/a/photos", "/srv/a/photos/2020", "/srv/a/music", "/srv/ab/x"}
    todo = plan_jails(logins, folders, LAYOUT, logins, logins, host, settled.fstab)
    # Bound into each jail made before the disks were mounted (photos/2020 comes with photos: rbind);
    # /srv/ab is another directory.
    assert todo.mount == tuple(
        (f"/srv/a/{rel}", f"{jail}/{rel}") for jail in jails for rel in ("music", "photos")
    )
    # Each disk has a jail line of its own after its folder's: read-only on top, also after a reboot.
    rels = ("", "/music", "/photos", "/photos/2020")
    assert todo.fstab == "".join(
        f"/srv/a{rel} {jail}{rel} none {RO_BIND} 0 0\n" for jail in jails for rel in rels
    )
    everywhere = host | {f"{jail}{rel}" for jail in jails for rel in rels}
    seen = plan_jails(logins, folders, LAYOUT, logins, logins, everywhere, todo.fstab)
    assert seen.mount == () and seen.unmount == () and not seen.changed
    # A jail bind still to be made brings the disks inside the folder with it.
    fresh = plan_jails(logins, folders, LAYOUT, logins, logins, host - {jails[0]}, todo.fstab)
    assert fresh.mount == (
        ("/srv/a", jails[0]),
        *((f"/srv/a/{rel}", f"{jails[1]}/{rel}") for rel in ("music", "photos")),
    )
