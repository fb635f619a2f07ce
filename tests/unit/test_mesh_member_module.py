"""The mesh_member module through AnsibleModule: real files under tmp_path, check mode and diff mode.

The module imports its core by its collection name, as on a node. The files are chowned to root and to the
mesh user, so these tests run as root (as ``make test`` does); ``daemon`` stands in for the mesh user.

The host itself is never touched: every path is under tmp_path, and ``FakeSystem`` stands in for the
commands (useradd, usermod, userdel, mount, umount), the mount table (``/proc/self/mountinfo`` as
mesh_jail reads it, with each mount's flags) and the peers' group, keeping their state between runs so that
a second run sees what the first one made.
"""

from __future__ import annotations

import base64
import builtins
import io
import json
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.module_utils import basic

from tests.unit.module_harness import load_module, patch_module_args

core, mesh_member = load_module("mesh_member")
mesh_jail = sys.modules["ansible_collections.replimesh.mesh.plugins.module_utils.mesh_jail"]
hardware_aes = sys.modules["ansible_collections.replimesh.mesh.plugins.module_utils.mesh_cipher"].hardware_aes
preferred = sys.modules["ansible_collections.replimesh.mesh.plugins.module_utils.mesh_cipher"].preferred


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chowns files to root and the mesh user")
USER = "daemon"
GID = 1
FSTAB = "# /etc/fstab\nUUID=1234 / ext4 errors=remount-ro 0 1\n/dev/sdb1 /srv ext4 defaults 0 2\n"
# The options of every jail line in /etc/fstab: recursive, read-only, nosuid, nodev, a slave of the host.
RO_BIND = "rbind,ro,nosuid,nodev,rslave"
RO_REMOUNT = ["mount", "-o", "remount,bind,ro,nosuid,nodev"]


@dataclass
class FakeSystem:
    """The node's logins and mounts, changed only by the commands the module runs."""

    users: set[str] = field(default_factory=set)
    mounts: set[str] = field(default_factory=set)
    # Mounts remounted read-only, nosuid, nodev (a new bind is read-write until then).
    readonly: set[str] = field(default_factory=set)
    commands: list[list[str]] = field(default_factory=list)
    # For each umount: whether the mount point was still there (a jail is unmounted before it goes).
    umounted_present: list[bool] = field(default_factory=list)

    def run_command(self, module: basic.AnsibleModule, args: list[str], **kw: Any) -> tuple[int, str, str]:
        argv = [str(arg) for arg in args]
        self.commands.append(argv)
        name = argv[-1]
        if argv[0] in ("useradd", "usermod"):
            self.users.add(name)
        elif argv[0] == "userdel":
            self.users.discard(name)
        elif argv[:3] == ["mount", "--rbind", "--make-rslave"] and len(argv) == 5:
            self.mounts.add(name)
        elif argv[:-1] == RO_REMOUNT and name in self.mounts:
            self.readonly.add(name)
        elif argv[0] == "umount":
            self.umounted_present.append(os.path.isdir(name))
            self.mounts.discard(name)
            self.readonly.discard(name)
        else:
            return 1, "", f"{argv[0]}: not expected in a test"
        return 0, "", ""

    @staticmethod
    def command_of(fake: FakeSystem) -> Any:
        """``fake.run_command`` as a method of AnsibleModule (the module instance comes first)."""

        def run_command(module: basic.AnsibleModule, args: list[str], **kw: Any) -> tuple[int, str, str]:
            return fake.run_command(module, args, **kw)

        return run_command

    def ran(self, command: str) -> list[list[str]]:
        return [argv for argv in self.commands if argv[0] == command]

    def mountinfo(self) -> str:
        """/proc/self/mountinfo of the fake: field 5 the (escaped) mount point, field 6 its flags."""
        lines = ["22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw"]
        for i, point in enumerate(sorted(self.mounts)):
            flags = "ro,nosuid,nodev,relatime" if point in self.readonly else "rw,relatime"
            escaped = point.replace("\\", "\\134").replace(" ", "\\040")
            lines.append(f"{100 + i} 22 8:1 /x {escaped} {flags} master:1 - ext4 /dev/sda1 rw")
        return "\n".join(lines) + "\n"


@pytest.fixture(autouse=True)
def system(tmp_path: Path) -> Any:
    """Every test runs against the fake: no user is made, nothing mounted, no file outside tmp_path."""
    fake = FakeSystem()
    write_atomic = mesh_jail.write_atomic

    def fake_open(path: Any, *args: Any, **kw: Any) -> Any:
        if path == "/proc/self/mountinfo":
            return io.StringIO(fake.mountinfo())
        return builtins.open(path, *args, **kw)

    def guarded_write_fstab(path: str, data: bytes, mode: int, *args: Any) -> None:
        assert path.startswith(f"{tmp_path}/"), f"a test would write {path}"
        write_atomic(path, data, mode, *args)

    with (
        mock.patch.object(basic.AnsibleModule, "run_command", FakeSystem.command_of(fake)),
        mock.patch.object(mesh_member.Jails, "existing_users", lambda self: sorted(fake.users)),
        mock.patch.object(mesh_jail, "write_atomic", guarded_write_fstab),
        # mesh_jail reads the mount table (points and flags) from /proc/self/mountinfo: the fake's.
        mock.patch.object(mesh_jail, "open", fake_open, create=True),
        # The folders (/srv/...) are the host's paths in every spec here: taken as made by mesh_sync.
        mock.patch.object(mesh_member, "_missing_folders", lambda spec: []),
    ):
        yield fake


class Exited(Exception):
    pass


class Failed(Exception):
    pass


def key(kind: str = "ssh-ed25519", seed: int = 1) -> str:
    blob = len(kind).to_bytes(4, "big") + kind.encode() + bytes([seed]) * 32
    return f"{kind} {base64.b64encode(blob).decode()}"


def peer(name: str, **kw: Any) -> dict[str, Any]:
    n = int(name[-1])
    return {"name": name, "address": f"10.0.0.1{n}", "initiator": n % 2 == 0, "public_key": key(seed=n),
            "host_key": key("ssh-rsa", n), **kw}  # fmt: skip


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Any]:
    for sub in (
        "etc/replimesh",
        "etc/ssh/authorized_keys",
        "lib/unison",
        "lib/state/status",
        "lib/state/locks",
        "lib/jails",
        "lib/jail/bin",
        "lib/jail/usr/bin",
    ):
        (tmp_path / sub).mkdir(parents=True)
    # The template jail the mesh_ssh role builds: root-owned binaries, hard-linked into every jail.
    (tmp_path / "lib/jail/bin/sh").write_text("a shell")
    (tmp_path / "lib/jail/usr/bin/unison").write_text("unison")
    (tmp_path / "etc/fstab").write_text(FSTAB)
    return {
        "node": "node1",
        "user": USER,
        "folders": [{"name": "shared", "path": "/srv/replimesh/shared", "ignore": ["*.tmp"]}],
        "peers": [peer("node2"), peer("node3")],
        "config_file": str(tmp_path / "etc/replimesh/mesh.json"),
        "authorized_keys_dir": str(tmp_path / "etc/ssh/authorized_keys"),
        "known_hosts": str(tmp_path / "etc/replimesh/known_hosts"),
        "profiles_dir": str(tmp_path / "etc/replimesh/profiles"),
        "unison_dir": str(tmp_path / "lib/unison"),
        "state_dir": str(tmp_path / "lib/state"),
        "backup_dir": str(tmp_path / "lib/backups"),
        "jails_dir": str(tmp_path / "lib/jails"),
        "jail_template": str(tmp_path / "lib/jail"),
        "fstab": str(tmp_path / "etc/fstab"),
    }


def run(args: dict[str, Any], check: bool = False, diff: bool = False) -> dict[str, Any]:
    def exit_json(self: basic.AnsibleModule, **result: Any) -> None:
        raise Exited(result)

    def fail_json(self: basic.AnsibleModule, msg: str, **result: Any) -> None:
        raise Failed({"msg": msg, **result})

    full = {**args, "_ansible_check_mode": check, "_ansible_diff": diff}
    with (
        patch_module_args(full),
        mock.patch.object(basic.AnsibleModule, "exit_json", exit_json),
        mock.patch.object(basic.AnsibleModule, "fail_json", fail_json),
        pytest.raises(Exited) as exited,
    ):
        mesh_member.main()
    return exited.value.args[0]


def fail(args: dict[str, Any], check: bool = False) -> str:
    with pytest.raises(Failed) as failed:
        run(args, check=check)
    return failed.value.args[0]["msg"]


def snapshot(root: Path) -> dict[str, tuple[int, int, int, int, bytes | str | None]]:
    """Every path under root with mode, uid, gid, inode and (for files) bytes, (for links) the target."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content: bytes | str | None = None
        if stat.S_ISREG(st.st_mode):
            content = path.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(path)
        found[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_ino, content)
    return found


def spec_of(args: dict[str, Any]) -> core.MemberSpec:
    """The spec the module builds: with no ciphers configured, those it chose from this machine's CPU."""
    chosen = args.get("ssh_ciphers") or list(preferred(hardware_aes(Path("/proc/cpuinfo").read_text())))
    return core.spec_from_params({**args, "ssh_ciphers": chosen})


def login(name: str) -> str:
    return f"{USER}-{name}"


def jail(args: dict[str, Any], name: str) -> Path:
    return Path(args["jails_dir"]) / login(name)


def keys_file(args: dict[str, Any], name: str) -> Path:
    return Path(args["authorized_keys_dir"]) / login(name)


def owner_mode(path: Path | str) -> tuple[int, int, int]:
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def guard_names(name: str, folders: tuple[str, ...] = ("shared",)) -> list[str]:
    """What an edge's Unison directory holds once set up: root's links on every name Unison reads."""
    return sorted(["default", "default.prf", *(f"{name}--{f}{ext}" for f in folders for ext in ("", ".prf"))])


def test_a_fresh_node_gets_its_files_then_a_second_run_changes_nothing(
    node: dict[str, Any], tmp_path: Path, system: FakeSystem
) -> None:
    result = run(node)
    unison, folder = Path(node["unison_dir"]), "/srv/replimesh/shared"
    profiles = Path(node["profiles_dir"])
    assert result["changed"] and result["peers_added"] == ["node2", "node3"]
    assert result["logins_added"] == [login("node2"), login("node3")] and result["logins_removed"] == []
    assert result["mounted"] == [str(jail(node, p)) + folder for p in ("node2", "node3")]
    assert result["remounted"] == result["retired"] == []  # new binds are made read-only as they mount
    assert str(profiles) in result["created"]
    assert {str(jail(node, p)) for p in ("node2", "node3")} <= set(result["created"])
    assert {str(jail(node, p)) + f"{unison}/{p}" for p in ("node2", "node3")} <= set(result["created"])
    assert {f"{jail(node, p)}/notify" for p in ("node2", "node3")} <= set(result["created"])
    archives = {p: f"{jail(node, p)}{unison}/{p}" for p in ("node2", "node3")}
    assert sorted(result["written"]) == sorted(
        [node["config_file"], node["known_hosts"]]
        + [str(keys_file(node, p)) for p in ("node2", "node3")]
        + [str(unison / p) for p in ("node2", "node3")]
        + [str(profiles / f"{p}--shared.prf") for p in ("node2", "node3")]
        + [f"{archives[p]}/{name}" for p in ("node2", "node3") for name in guard_names(p)]
    )
    spec = spec_of(node)
    assert result["ssh_ciphers"] == list(spec.settings.ssh_ciphers) != []
    assert Path(node["config_file"]).read_text() == core.render_config(spec)
    config = json.loads(Path(node["config_file"]).read_text())
    assert config["login"] == login("node1") and config["max_deletions"] == "50%"
    assert [p["notify_dir"] for p in config["peers"]] == [
        f"{jail(node, p)}/notify" for p in ("node2", "node3")
    ]
    for p in spec.peers:
        assert keys_file(node, p.name).read_text() == core.render_authorized_keys(spec, p)
    assert "exec /bin/replimesh-serve" in keys_file(node, "node2").read_text()
    assert not (Path(node["authorized_keys_dir"]) / USER).exists()
    assert Path(node["known_hosts"]).read_text() == core.render_known_hosts(spec)
    profile = profiles / "node2--shared.prf"
    assert profile.read_text() == core.render_profile(spec, spec.peers[0], spec.folders[0])
    remote = f"ssh://{login('node1')}@10.0.0.12:22//srv/replimesh/shared"
    for pref in ("root", "noupdate", "nodeletion", "nocreation"):
        assert f"{pref} = {remote}\n" in profile.read_text()
    assert sorted(p.name for p in profiles.iterdir()) == ["node2--shared.prf", "node3--shared.prf"]
    assert owner_mode(profiles) == (0o755, 0, 0)
    for path in (node["config_file"], keys_file(node, "node2"), node["known_hosts"], profile):
        assert os.path.isfile(path) and not os.path.islink(path) and owner_mode(path) == (0o644, 0, 0), path

    # Each peer's jail: root-owned directories, its own Unison directory (the host's links to it) holding
    # only root's guard links, a notice directory, the template's binaries as hard links, its folders'
    # mount points; no versions.
    for name in ("node2", "node3"):
        root = jail(node, name)
        archive = Path(archives[name])
        assert os.readlink(unison / name) == str(archive)
        assert archive.is_dir() and owner_mode(archive) == (0o1770, 0, GID)
        assert sorted(p.name for p in archive.iterdir()) == guard_names(name)
        for guard in (f"{name}--shared", f"{name}--shared.prf"):
            assert os.readlink(archive / guard) == str(profiles / f"{name}--shared.prf")
        for guard in ("default", "default.prf"):
            assert os.readlink(archive / guard) == "/dev/null"
        for guard in guard_names(name):
            assert (archive / guard).is_symlink() and os.lstat(archive / guard).st_uid == 0, guard
        assert owner_mode(root / "notify") == (0o1770, 0, GID)
        for directory in (
            root,
            root / "srv",
            Path(f"{root}{unison}"),
            Path(f"{root}{node['unison_dir']}").parent,
        ):
            assert owner_mode(directory) == (0o755, 0, 0), directory
        assert not os.path.lexists(f"{root}{node['backup_dir']}")
        for rel in ("bin/sh", "usr/bin/unison"):
            assert (root / rel).stat().st_ino == (tmp_path / "lib/jail" / rel).stat().st_ino
        assert Path(f"{root}{folder}").is_dir() and not any(Path(f"{root}{folder}").iterdir())
    assert not os.path.lexists(f"{jail(node, 'node2')}{unison}/node3")  # no other edge's archives

    assert system.ran("useradd") == [
        ["useradd", "-o", "-u", "1", "-g", "1", "-G", "replimesh-peers", "-M", "-N", "-d", "/", "-s",
         "/bin/sh", "-p", "*", "-c", f"replimesh peer {name}", login(name)]
        for name in ("node2", "node3")
    ]  # fmt: skip
    # Each bind: recursive and a slave, then made read-only, nosuid, nodev.
    assert system.ran("mount") == [
        argv
        for p in ("node2", "node3")
        for argv in (
            ["mount", "--rbind", "--make-rslave", folder, f"{jail(node, p)}{folder}"],
            [*RO_REMOUNT, f"{jail(node, p)}{folder}"],
        )
    ]
    assert system.readonly == system.mounts == {f"{jail(node, p)}{folder}" for p in ("node2", "node3")}
    assert Path(node["fstab"]).read_text() == FSTAB + "".join(
        f"{folder} {jail(node, p)}{folder} none {RO_BIND} 0 0\n" for p in ("node2", "node3")
    )
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temp file left behind

    before, commands = snapshot(tmp_path), len(system.commands)
    again = run(node)
    assert not again["changed"] and again["written"] == again["created"] == again["removed"] == []
    assert again["peers_kept"] == ["node2", "node3"] and again["peers_added"] == []
    assert again["logins_added"] == again["logins_removed"] == again["mounted"] == []
    assert again["remounted"] == again["retired"] == []
    assert snapshot(tmp_path) == before and len(system.commands) == commands


def test_check_mode_reports_the_plan_and_changes_nothing(
    node: dict[str, Any], tmp_path: Path, system: FakeSystem
) -> None:
    before = snapshot(tmp_path)
    result = run(node, check=True, diff=True)
    assert result["changed"] and result["peers_added"] == ["node2", "node3"]
    assert result["logins_added"] == [login("node2"), login("node3")] and len(result["mounted"]) == 2
    assert snapshot(tmp_path) == before and system.commands == []
    diffs = {d["after_header"]: d for d in result["diff"]}
    assert diffs[node["known_hosts"]]["before"] == ""
    assert diffs[node["known_hosts"]]["after"] == core.render_known_hosts(spec_of(node))


def test_check_mode_removing_a_peer_runs_no_command(
    node: dict[str, Any], tmp_path: Path, system: FakeSystem
) -> None:
    run(node)
    system.commands.clear()
    node["peers"] = [peer("node2")]
    before = snapshot(tmp_path)
    result = run(node, check=True)
    assert result["changed"] and result["logins_removed"] == [login("node3")]
    assert system.commands == [] and snapshot(tmp_path) == before
    assert system.users == {login("node2"), login("node3")}


def test_a_new_template_binary_is_linked_into_every_jail(node: dict[str, Any], tmp_path: Path) -> None:
    run(node)
    shell = tmp_path / "lib/jail/bin/sh"
    shell.unlink()
    shell.write_text("an upgraded shell")
    assert run(node, check=True)["changed"]
    assert (jail(node, "node2") / "bin/sh").read_text() == "a shell"
    assert run(node)["changed"]
    for name in ("node2", "node3"):
        assert (jail(node, name) / "bin/sh").stat().st_ino == shell.stat().st_ino
    assert not run(node)["changed"]


def test_max_deletions_goes_to_the_runners_config(node: dict[str, Any]) -> None:
    run({**node, "max_deletions": "200"})
    config = json.loads(Path(node["config_file"]).read_text())
    assert config["max_deletions"] == "200"
    result = run({**node, "max_deletions": "10%"})
    assert result["written"] == [node["config_file"]]
    assert json.loads(Path(node["config_file"]).read_text())["max_deletions"] == "10%"


def test_diff_mode_shows_the_previous_content(node: dict[str, Any]) -> None:
    run(node)
    node["peers"] = [peer("node2", address="10.0.9.2")]
    result = run(node, diff=True)
    diffs = {d["before_header"]: d for d in result["diff"]}
    node2_keys = str(keys_file(node, "node2"))
    assert set(diffs) == {node["config_file"], node2_keys, node["known_hosts"],
                          f"{node['profiles_dir']}/node2--shared.prf"}  # fmt: skip
    assert 'from="10.0.0.12"' in diffs[node2_keys]["before"]
    assert 'from="10.0.9.2"' in diffs[node2_keys]["after"]
    assert "diff" not in run(node)


def test_a_removed_peer_loses_its_archives_status_and_lock(node: dict[str, Any]) -> None:
    run(node)
    unison, state = Path(node["unison_dir"]), Path(node["state_dir"])
    for name in ("node2", "node3"):
        (unison / name / ("ar" + "0" * 32)).write_text("archive")
        (state / "status" / f"{name}.json").write_text("{}")
        (state / "locks" / f"{name}.lock").write_text("")
    (state / "status" / "notes.txt").write_text("keep")
    node["peers"] = [peer("node2")]
    result = run(node)
    assert result["changed"] and result["peers_removed"] == ["node3"] and result["peers_kept"] == ["node2"]
    assert not os.path.lexists(unison / "node3") and not jail(node, "node3").exists()
    assert not (state / "status/node3.json").exists() and not (state / "locks/node3.lock").exists()
    assert (unison / "node2" / ("ar" + "0" * 32)).exists() and (state / "status/node2.json").exists()
    assert (state / "status/notes.txt").exists() and (state / "locks/node2.lock").exists()
    assert not keys_file(node, "node3").exists() and keys_file(node, "node2").exists()
    assert [p["name"] for p in json.loads(Path(node["config_file"]).read_text())["peers"]] == ["node2"]
    assert not run(node)["changed"]


def old_versions(args: dict[str, Any], name: str) -> Path:
    """Versions the server end kept in a peer's jail under the earlier layout, as the mesh user."""
    backups = Path(f"{jail(args, name)}{args['backup_dir']}")
    for directory in (backups, backups / "shared"):
        directory.mkdir(exist_ok=True)
        os.chown(directory, 1, GID)
    version = backups / "shared/.bak.0.report.txt"
    version.write_text(f"an old version {name} kept")
    os.chown(version, 1, GID)
    return backups


def test_a_removed_peers_jail_is_unmounted_then_removed_its_backups_retired_its_login_deleted(
    node: dict[str, Any], system: FakeSystem
) -> None:
    node["folders"].append({"name": "photos", "path": "/srv/photos"})
    run(node)
    old = jail(node, "node3")
    old_versions(node, "node3")
    archive = Path(f"{old}{node['unison_dir']}/node3") / ("ar" + "3" * 32)
    archive.write_text("archive")
    os.chown(archive, 1, GID)
    system.commands.clear()
    node["peers"] = [peer("node2")]
    result = run(node)
    assert result["logins_removed"] == [login("node3")] and result["mounted"] == []
    assert result["retired"] == []  # the jail goes whole: remove_jail keeps its versions
    assert f"{node['profiles_dir']}/node3--shared.prf" in result["removed"]
    mounts = [f"{old}/srv/photos", f"{old}/srv/replimesh/shared"]
    assert sorted(argv[1] for argv in system.ran("umount")) == mounts
    assert system.umounted_present == [True, True]  # unmounted while the jail was still there
    assert system.commands[-1] == ["userdel", "-f", login("node3")]
    assert [argv[0] for argv in system.commands] == ["umount", "umount", "userdel"]
    assert system.users == {login("node2")}
    assert system.mounts == {f"{jail(node, 'node2')}{p}" for p in ("/srv/replimesh/shared", "/srv/photos")}
    assert not old.exists() and jail(node, "node2").is_dir()
    assert sorted(p.name for p in Path(node["profiles_dir"]).iterdir()) == [
        "node2--photos.prf",
        "node2--shared.prf",
    ]
    [retired] = (Path(node["backup_dir"]) / ".retired").iterdir()
    assert retired.name.startswith(f"{login('node3')}-")
    assert (retired / "shared/.bak.0.report.txt").read_text() == "an old version node3 kept"
    assert not run(node)["changed"]


def test_a_removed_peers_jail_goes_with_the_change_notices_its_login_left(
    node: dict[str, Any], system: FakeSystem
) -> None:
    run(node)
    notices = jail(node, "node3") / "notify"
    notice = notices / "4242"  # what replimesh-serve writes for "replimesh-notify", as the peer's login
    notice.write_text("shared\tdocs/report.txt\n")
    os.chown(notice, 1, GID)
    node["peers"] = [peer("node2")]
    result = run(node)
    assert result["logins_removed"] == [login("node3")] and not jail(node, "node3").exists()
    assert system.users == {login("node2")} and not run(node)["changed"]


def test_a_kept_peers_old_versions_are_retired_out_of_its_jail(
    node: dict[str, Any], system: FakeSystem
) -> None:
    run(node)
    versions = old_versions(node, "node2")
    system.commands.clear()
    assert run(node, check=True)["retired"] == [login("node2")]
    assert versions.is_dir() and system.commands == []
    result = run(node)
    assert result["changed"] and result["retired"] == [login("node2")] and result["logins_removed"] == []
    assert not os.path.lexists(versions) and system.commands == []
    [retired] = (Path(node["backup_dir"]) / ".retired").iterdir()
    assert re.fullmatch(rf"{login('node2')}-[0-9]{{8}}T[0-9]{{6}}Z", retired.name)
    assert (retired / "shared/.bak.0.report.txt").read_text() == "an old version node2 kept"
    assert (retired / "shared").stat().st_uid == 1
    again = run(node)
    assert not again["changed"] and again["retired"] == []


def test_binds_an_earlier_layout_left_writable_are_remounted_read_only(
    node: dict[str, Any], tmp_path: Path, system: FakeSystem
) -> None:
    folder = "/srv/replimesh/shared"
    binds = {p: f"{jail(node, p)}{folder}" for p in ("node2", "node3")}
    run(node)
    # As the earlier layout left a node: the folders bound read-write, fstab lines "bind,slave".
    system.readonly.clear()
    disk = f"{binds['node2']}/disk"  # a disk mounted inside the folder, propagated into the jail
    system.mounts.add(disk)
    Path(node["fstab"]).write_text(
        FSTAB + "".join(f"{folder} {dst} none bind,slave 0 0\n" for dst in binds.values())
    )
    system.commands.clear()
    check = run(node, check=True)
    assert check["remounted"] == sorted([*binds.values(), disk]) and system.commands == []
    result = run(node)
    assert result["changed"] and result["remounted"] == sorted([*binds.values(), disk])
    assert result["mounted"] == [] and result["written"] == []
    assert system.commands == [[*RO_REMOUNT, point] for point in sorted([*binds.values(), disk])]
    assert system.readonly == {*binds.values(), disk}
    assert Path(node["fstab"]).read_text() == FSTAB + "".join(
        f"{folder} {dst} none {RO_BIND} 0 0\n" for dst in binds.values()
    )
    again = run(node)
    assert not again["changed"] and again["remounted"] == []


def test_fstab_holds_one_bind_per_peer_and_folder_after_the_other_lines(
    node: dict[str, Any], system: FakeSystem
) -> None:
    stale = f"/srv/replimesh/shared {node['jails_dir']}/{login('node9')}/srv/replimesh/shared none bind 0 0\n"
    Path(node["fstab"]).write_text(FSTAB + stale + "\n\n")
    node["folders"].append({"name": "photos", "path": "/srv/photos"})
    run(node)
    binds = [
        f"{src} {jail(node, name)}{src} none {RO_BIND} 0 0"
        for name in ("node2", "node3")
        for src in ("/srv/replimesh/shared", "/srv/photos")
    ]
    assert Path(node["fstab"]).read_text().splitlines() == FSTAB.splitlines() + binds
    assert owner_mode(node["fstab"]) == (0o644, 0, 0)
    assert [argv[:3] for argv in system.ran("mount")] == [
        ["mount", "--rbind", "--make-rslave"],
        RO_REMOUNT,
    ] * 4
    node["peers"] = [peer("node3")]
    run(node)
    assert Path(node["fstab"]).read_text().splitlines() == FSTAB.splitlines() + binds[2:]
    node["peers"] = []
    run(node)
    assert Path(node["fstab"]).read_text() == FSTAB


def test_a_login_that_exists_outside_the_group_is_added_to_it(
    node: dict[str, Any], system: FakeSystem
) -> None:
    def getpwnam(name: str) -> Any:
        if name == login("node2"):  # made by hand, the mesh user's uid, not in the peers' group
            return mock.Mock(pw_uid=1, pw_gid=GID)
        return real(name)

    real = mesh_member.pwd.getpwnam
    with mock.patch.object(mesh_member.pwd, "getpwnam", getpwnam):
        run(node)
    assert system.ran("usermod") == [["usermod", "-a", "-G", "replimesh-peers", login("node2")]]
    assert [argv[-1] for argv in system.ran("useradd")] == [login("node3")]


def test_a_login_taken_by_another_user_fails_the_run(node: dict[str, Any], system: FakeSystem) -> None:
    real = mesh_member.pwd.getpwnam
    with mock.patch.object(
        mesh_member.pwd,
        "getpwnam",
        lambda name: mock.Mock(pw_uid=4242) if name == login("node2") else real(name),
    ):
        assert f"user {login('node2')} exists and is not the mesh user's" in fail(node)
    assert system.ran("useradd") == [] and system.ran("usermod") == []


def test_a_failing_command_fails_the_run_with_its_message(node: dict[str, Any], system: FakeSystem) -> None:
    with mock.patch.object(
        basic.AnsibleModule, "run_command", lambda self, argv, **kw: (12, "", "no such user")
    ):
        msg = fail(node)
    assert "useradd" in msg and "failed (12): no such user" in msg


def test_an_inactive_peer_is_trusted_and_written(node: dict[str, Any]) -> None:
    node["peers"] = [peer("node2"), peer("node4", active=False)]
    result = run(node)
    peers = json.loads(Path(node["config_file"]).read_text())["peers"]
    assert [(p["name"], p["active"]) for p in peers] == [("node2", True), ("node4", False)]
    lines = keys_file(node, "node4").read_text().splitlines()
    assert len(lines) == 2 and lines[1].endswith(f"{USER}@node4") and 'from="10.0.0.14"' in lines[1]
    assert (Path(node["unison_dir"]) / "node4/node4--shared.prf").exists()
    assert login("node4") in result["logins_added"] and jail(node, "node4").is_dir()


def test_the_shared_keys_file_of_the_single_jail_layout_is_removed(node: dict[str, Any]) -> None:
    keys = Path(node["authorized_keys_dir"])
    (keys / USER).write_text("old shared keys")
    (keys / login("node9")).write_text("a gone peer's keys")
    (keys / "root").write_text("someone else's keys")
    result = run(node)
    assert sorted(result["removed"]) == [str(keys / USER), str(keys / login("node9"))]
    assert sorted(p.name for p in keys.iterdir()) == [login("node2"), login("node3"), "root"]


def test_the_shared_jails_edge_directory_is_replaced_by_a_link(node: dict[str, Any]) -> None:
    unison = Path(node["unison_dir"])
    (unison / "node2").mkdir(mode=0o1770)
    (unison / "node2" / ("ar" + "2" * 32)).write_text("archive of the shared jail")
    result = run(node)
    assert str(unison / "node2") in result["removed"] and result["peers_kept"] == ["node2"]
    assert (unison / "node2").is_symlink()
    # The archives of the shared jail are gone; the new directory holds root's guard links only.
    assert sorted(p.name for p in (unison / "node2").iterdir()) == guard_names("node2")


def test_a_dropped_folder_loses_its_profiles_only(node: dict[str, Any], system: FakeSystem) -> None:
    node["folders"].append({"name": "photos", "path": "/srv/photos"})
    run(node)
    system.commands.clear()
    archive = Path(node["unison_dir"]) / "node2" / ("ar" + "1" * 32)
    archive.write_text("archive")
    node["folders"].pop()
    result = run(node)
    assert sorted(result["removed"]) == sorted(
        [f"{node['profiles_dir']}/{p}--photos.prf" for p in ("node2", "node3")]
        + [f"{node['unison_dir']}/{p}/{p}--photos{ext}" for p in ("node2", "node3") for ext in ("", ".prf")]
    )
    assert sorted(p.name for p in Path(node["profiles_dir"]).iterdir()) == [
        "node2--shared.prf",
        "node3--shared.prf",
    ]
    assert sorted(p.name for p in archive.parent.iterdir()) == sorted([archive.name, *guard_names("node2")])
    assert "/srv/photos" not in Path(node["fstab"]).read_text()
    # ... and leaves the kept peers' jails: no peer reaches a folder that is no longer synced.
    assert system.ran("umount") == [
        ["umount", "--recursive", f"{jail(node, p)}/srv/photos"] for p in ("node2", "node3")
    ]
    assert system.mounts == {f"{jail(node, p)}/srv/replimesh/shared" for p in ("node2", "node3")}


def test_wrong_mode_and_owner_are_fixed_in_place(node: dict[str, Any]) -> None:
    run(node)
    profile = Path(node["profiles_dir"]) / "node3--shared.prf"
    os.chmod(profile, 0o666)
    os.chown(profile, 1, 1)
    archive = f"{jail(node, 'node2')}{node['unison_dir']}/node2"
    os.chmod(archive, 0o777)
    os.chmod(jail(node, "node2"), 0o775)
    inode = profile.stat().st_ino
    result = run(node)
    assert sorted(result["fixed"]) == sorted([archive, str(jail(node, "node2")), str(profile)])
    assert not result["written"]
    st = profile.stat()
    assert (st.st_ino, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (inode, 0o644, 0, 0)
    assert owner_mode(archive) == (0o1770, 0, GID) and owner_mode(jail(node, "node2")) == (0o755, 0, 0)


def test_symlinks_planted_by_the_mesh_user_are_replaced_not_followed(
    node: dict[str, Any], tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("untouched")
    unison = Path(node["unison_dir"])
    (unison / "node2").symlink_to(outside)
    run(node)
    assert os.readlink(unison / "node2") == f"{jail(node, 'node2')}{unison}/node2"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"] and victim.read_text() == "untouched"
    profile = Path(node["profiles_dir"]) / "node3--shared.prf"
    profile.unlink()
    profile.symlink_to(victim)
    assert run(node)["written"] == [str(profile)]
    assert not profile.is_symlink() and victim.read_text() == "untouched"


def test_a_guard_the_peers_login_planted_becomes_roots_link_again(
    node: dict[str, Any], tmp_path: Path
) -> None:
    run(node)
    archive = Path(f"{jail(node, 'node2')}{node['unison_dir']}/node2")
    evil = archive / "evil.prf"
    evil.write_text("root = /\n")
    os.chown(evil, 1, GID)
    # Where root's guard was missing, the peer's login (the mesh user) put a profile of its own ...
    (archive / "node2--shared.prf").unlink()
    (archive / "node2--shared.prf").symlink_to(evil)
    os.lchown(archive / "node2--shared.prf", 1, GID)
    (archive / "default").unlink()
    (archive / "default").write_text("root = /etc\n")
    os.chown(archive / "default", 1, GID)
    result = run(node)
    assert sorted(result["written"]) == [str(archive / "default"), str(archive / "node2--shared.prf")]
    assert sorted(result["removed"]) == [str(archive / "default"), str(archive / "node2--shared.prf")]
    assert os.readlink(archive / "node2--shared.prf") == f"{node['profiles_dir']}/node2--shared.prf"
    assert os.readlink(archive / "default") == "/dev/null"
    for name in ("default", "node2--shared.prf"):
        assert os.lstat(archive / name).st_uid == 0
    assert evil.read_text() == "root = /\n"  # the peer's own file in its archive directory stays
    assert not run(node)["changed"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"node": "node2"}, "a node cannot be its own peer"),
        ({"peers": [peer("node2", public_key="ssh-dss AAAA")]}, "public_key must be an OpenSSH public key"),
        ({"peers": [peer("node2", address="10.0.0.2 10.0.0.3")]}, "address"),
        ({"peers": [peer("node2"), peer("node2")]}, "repeated: node2"),
        ({"folders": [{"name": "x", "path": "relative"}]}, "absolute path"),
        ({"user": "Bad User"}, "not a valid user name"),
        ({"unison_dir": "/var"}, "system directory"),
        ({"jails_dir": "/var/lib"}, "jails_dir /var/lib is a system directory"),
        ({"max_deletions": "lots"}, "max_deletions must be a count (e.g. 100) or a percentage 0-100"),
        ({"profiles_dir": "/etc"}, "profiles_dir /etc is a system directory"),
    ],
)
def test_bad_input_fails_before_any_change(
    node: dict[str, Any], tmp_path: Path, system: FakeSystem, change: dict[str, Any], message: str
) -> None:
    before = snapshot(tmp_path)
    assert message in fail({**node, **change})
    assert snapshot(tmp_path) == before and system.commands == []


def test_a_folder_inside_the_jails_is_refused(node: dict[str, Any], system: FakeSystem) -> None:
    node["folders"] = [{"name": "x", "path": f"{node['jails_dir']}/x"}]
    assert "jails_dir" in fail(node) and system.commands == []


def test_a_missing_mesh_user_fails_but_check_mode_only_warns(
    node: dict[str, Any], tmp_path: Path, system: FakeSystem
) -> None:
    node["user"] = "no-such-mesh-user"
    assert "'no-such-mesh-user'" in fail(node) and "must exist" in fail(node)
    assert not any(Path(node["unison_dir"]).iterdir())
    with mock.patch.object(basic.AnsibleModule, "warn") as warn:
        result = run(node, check=True)
    assert result["changed"] and "must exist" in warn.call_args.args[0]
    assert system.commands == []


@pytest.mark.parametrize("check", [False, True])
def test_root_as_the_mesh_user_fails_before_any_change_in_check_mode_too(
    node: dict[str, Any], tmp_path: Path, system: FakeSystem, check: bool
) -> None:
    before = snapshot(tmp_path)
    node["user"] = "root"
    msg = fail(node, check=check)
    assert "the mesh user 'root' has uid 0 and gid 0" in msg and "unprivileged" in msg
    assert snapshot(tmp_path) == before and system.commands == []


@pytest.mark.parametrize(("uid", "gid"), [(0, GID), (1, 0)])
def test_a_mesh_user_with_roots_uid_or_gid_under_another_name_fails(
    node: dict[str, Any], tmp_path: Path, system: FakeSystem, uid: int, gid: int
) -> None:
    before = snapshot(tmp_path)
    real = mesh_member.pwd.getpwnam
    with mock.patch.object(
        mesh_member.pwd,
        "getpwnam",
        lambda name: mock.Mock(pw_uid=uid, pw_gid=gid) if name == USER else real(name),
    ):
        msg = fail(node)
    assert f"the mesh user '{USER}' has uid {uid} and gid {gid}" in msg
    assert snapshot(tmp_path) == before and system.commands == []


@pytest.mark.parametrize("param", ["jails_dir", "jail_template", "authorized_keys_dir"])
def test_missing_directories_fail_with_the_role_to_run(
    node: dict[str, Any], tmp_path: Path, system: FakeSystem, param: str
) -> None:
    node[param] = str(tmp_path / "nowhere" / Path(node[param]).name)
    msg = fail(node)
    assert node[param] in msg and "roles create them" in msg
    assert not Path(node["config_file"]).exists() and system.commands == []


def test_the_directory_of_the_config_and_pinned_host_keys_is_made_when_missing(
    node: dict[str, Any], tmp_path: Path
) -> None:
    config_dir = tmp_path / "etc-new" / "replimesh"
    node["config_file"], node["known_hosts"] = str(config_dir / "mesh.json"), str(config_dir / "known_hosts")
    checked = run(node, check=True)
    assert checked["changed"] and str(config_dir) in checked["created"] and not config_dir.exists()
    result = run(node)
    assert result["created"][0] == str(config_dir) and stat.S_IMODE(config_dir.stat().st_mode) == 0o755
    assert Path(node["config_file"]).is_file() and Path(node["known_hosts"]).is_file()
    assert str(config_dir) not in run(node)["created"]


def test_no_peers_leaves_headers_only(node: dict[str, Any], system: FakeSystem) -> None:
    run(node)
    node["peers"] = []
    result = run(node)
    assert result["peers_removed"] == ["node2", "node3"] and not any(Path(node["unison_dir"]).iterdir())
    assert result["logins_removed"] == [login("node2"), login("node3")]
    assert not any(Path(node["authorized_keys_dir"]).iterdir()) and not any(Path(node["jails_dir"]).iterdir())
    assert Path(node["known_hosts"]).read_text() == core.HEADER + "\n"
    assert system.users == system.mounts == set() and Path(node["fstab"]).read_text() == FSTAB
    assert not run(node)["changed"]


def test_a_folder_mesh_sync_did_not_make_yet_fails_before_any_change(
    node: dict[str, Any], system: FakeSystem
) -> None:
    with mock.patch.object(mesh_member, "_missing_folders", lambda spec: ["/srv/replimesh/shared"]):
        msg = fail(node)
    assert "missing directories /srv/replimesh/shared" in msg and "before mesh_member" in msg
    assert system.commands == [] and not Path(node["config_file"]).exists()
