"""mesh_layout: a list of directories, files and absent paths made to match in one module run."""

from __future__ import annotations

import grp
import importlib
import os
import pwd
import stat
from pathlib import Path

import pytest

from tests.unit.module_harness import PLUGINS, Failed, run_module

mesh_layout = importlib.import_module(f"{PLUGINS}.modules.mesh_layout")

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def d(path: Path, m: str = "0755", **extra: str) -> dict[str, str]:
    return {"path": str(path), "state": "directory", "mode": m, **extra}


def f(path: Path, content: str, m: str = "0644", **extra: str) -> dict[str, str]:
    return {"path": str(path), "state": "file", "content": content, "mode": m, **extra}


def test_a_fresh_layout_is_made_then_a_second_run_changes_nothing(tmp_path: Path) -> None:
    base = tmp_path / "srv"
    paths = [
        d(base / "a" / "b", "0750", owner=ME, group=MY_GROUP),
        f(base / "a" / "b" / "cmd", "#!/bin/sh\necho hi\n", "0755", owner=ME),
        d(base / "state"),
    ]
    result = run_module(mesh_layout, {"paths": paths})
    assert result["changed"]
    # The missing parents get the entry's mode, as the file module gives them.
    assert result["created"] == [str(base), str(base / "a"), str(base / "a" / "b"), str(base / "state")]
    assert result["written"] == [str(base / "a" / "b" / "cmd")]
    assert mode(base) == mode(base / "a") == mode(base / "a" / "b") == 0o750
    assert (base / "a" / "b" / "cmd").read_text() == "#!/bin/sh\necho hi\n"
    assert mode(base / "a" / "b" / "cmd") == 0o755 and mode(base / "state") == 0o755
    again = run_module(mesh_layout, {"paths": paths})
    assert not again["changed"]
    assert again["created"] == again["written"] == again["fixed"] == again["removed"] == []


def test_only_what_differs_changes_a_mode_is_fixed_in_place_and_absent_paths_go(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("same\n")
    os.chmod(tmp_path / "keep", 0o600)
    inode = (tmp_path / "keep").stat().st_ino
    (tmp_path / "old.timer").write_text("[Timer]\n")
    (tmp_path / "oldtree" / "sub").mkdir(parents=True)
    (tmp_path / "oldtree" / "sub" / "archive").write_text("x")
    (tmp_path / "key").write_text("secret\n")
    os.chmod(tmp_path / "key", 0o644)
    paths = [
        f(tmp_path / "keep", "same\n"),
        {"path": str(tmp_path / "old.timer"), "state": "absent"},
        {"path": str(tmp_path / "oldtree"), "state": "absent"},
        {"path": str(tmp_path / "never-there"), "state": "absent"},
        {"path": str(tmp_path / "key"), "state": "attributes", "mode": "0600", "owner": ME},
    ]
    result = run_module(mesh_layout, {"paths": paths})
    assert result["fixed"] == [str(tmp_path / "keep"), str(tmp_path / "key")]
    assert result["removed"] == [str(tmp_path / "old.timer"), str(tmp_path / "oldtree")]
    assert result["written"] == [] and (tmp_path / "keep").stat().st_ino == inode
    assert mode(tmp_path / "keep") == 0o644 and mode(tmp_path / "key") == 0o600
    assert (tmp_path / "key").read_text() == "secret\n"
    assert not (tmp_path / "old.timer").exists() and not (tmp_path / "oldtree").exists()


def test_links_a_file_link_is_replaced_a_directory_link_followed_a_dangling_one_replaced(
    tmp_path: Path,
) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.chmod(target, 0o700)
    (target / "archive").write_text("theirs\n")
    (tmp_path / "logs").symlink_to(target)  # an operator's directory on another disk: followed
    (tmp_path / "unison").symlink_to(tmp_path / "removed")  # an earlier layout's, now dangling: replaced
    (tmp_path / "real").mkdir()
    (tmp_path / "run").symlink_to(tmp_path / "real")  # a parent, as /var/run -> /run: followed
    (tmp_path / "cmd").symlink_to(target / "archive")  # a file's: replaced, not written through
    paths = [
        d(tmp_path / "logs", "0750"),
        d(tmp_path / "unison"),
        d(tmp_path / "run" / "replimesh"),
        f(tmp_path / "cmd", "mine\n"),
    ]
    result = run_module(mesh_layout, {"paths": paths})
    assert (tmp_path / "logs").is_symlink() and mode(target) == 0o750
    assert (tmp_path / "unison").is_dir() and not (tmp_path / "unison").is_symlink()
    assert (target / "archive").read_text() == "theirs\n"
    assert (tmp_path / "run").is_symlink() and (tmp_path / "real" / "replimesh").is_dir()
    assert not (tmp_path / "cmd").is_symlink() and (tmp_path / "cmd").read_text() == "mine\n"
    assert result["fixed"] == [str(tmp_path / "logs")]
    assert result["created"] == [str(tmp_path / "unison"), str(tmp_path / "run" / "replimesh")]
    assert not run_module(mesh_layout, {"paths": paths})["changed"]


def test_check_mode_says_what_would_change_and_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "gone").write_text("x")
    paths = [
        d(tmp_path / "new", owner="replimesh-no-such-user"),  # made by a task that check mode skipped
        f(tmp_path / "new" / "cmd", "x\n"),
        {"path": str(tmp_path / "gone"), "state": "absent"},
    ]
    result = run_module(mesh_layout, {"paths": paths}, check=True)
    assert result["changed"] and result["created"] == [str(tmp_path / "new")]
    assert result["written"] == [str(tmp_path / "new" / "cmd")]
    assert result["removed"] == [str(tmp_path / "gone")]
    assert not (tmp_path / "new").exists() and (tmp_path / "gone").exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"path": "relative/x", "state": "directory", "mode": "0755"}, "absolute"),
        ({"path": "/srv/../etc", "state": "directory", "mode": "0755"}, "not a normal path"),
        ({"path": "/srv/x", "state": "link", "mode": "0755"}, "state must be one of"),
        ({"path": "/srv/x", "state": "directory"}, "needs a mode"),
        ({"path": "/srv/x", "state": "directory", "mode": "0999"}, "octal"),
        ({"path": "/srv/x", "state": "directory", "mode": "0755", "content": "x"}, "content"),
        ({"path": "/srv/x", "state": "file", "mode": "0644"}, "content"),
        ({"path": "/srv/x", "state": "absent", "mode": "0644"}, "no owner, group or mode"),
        ({"path": "/srv/x", "state": "directory", "mode": "0755", "recurse": True}, "unknown keys"),
        ({"path": "/srv/x", "state": "directory", "mode": "0755", "owner": "replimesh-no-such"}, "no user"),
        ({"path": "/srv/x", "state": "directory", "mode": "0755", "group": "replimesh-no-such"}, "no group"),
    ],
)
def test_a_bad_entry_fails_the_run_before_any_change(
    tmp_path: Path, bad: dict[str, object], message: str
) -> None:
    first = d(tmp_path / "first")
    with pytest.raises(Failed) as failed:
        run_module(mesh_layout, {"paths": [first, bad]})
    assert message in failed.value.args[0]["msg"]
    assert not (tmp_path / "first").exists()


def test_a_path_of_the_wrong_kind_fails_the_run_before_any_change(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file\n")
    (tmp_path / "adir").mkdir()
    cases = [
        d(tmp_path / "plain"),  # a file where a directory goes
        d(tmp_path / "plain" / "below"),  # a file among the parents
        f(tmp_path / "adir", "x\n"),  # a directory where a file goes
        f(tmp_path / "missing" / "cmd", "x\n"),  # a file whose directory nothing makes
        {"path": str(tmp_path / "nokey"), "state": "attributes", "mode": "0600"},
    ]
    for bad in cases:
        with pytest.raises(Failed):
            run_module(mesh_layout, {"paths": [d(tmp_path / "first"), bad]})
        assert not (tmp_path / "first").exists(), bad
    assert (tmp_path / "plain").read_text() == "a file\n"


def test_a_file_its_validate_command_refuses_is_not_installed(tmp_path: Path) -> None:
    conf = tmp_path / "replimesh.conf"
    conf.write_text("ok: the old file\n")
    refused = f(conf, "bad\n", validate="grep -q ok %s")
    with pytest.raises(Failed) as failed:
        run_module(mesh_layout, {"paths": [refused]})
    assert "refused the new file" in failed.value.args[0]["msg"]
    assert conf.read_text() == "ok: the old file\n"
    assert [p.name for p in tmp_path.iterdir()] == ["replimesh.conf"]  # no temporary file left
    accepted = run_module(mesh_layout, {"paths": [f(conf, "ok: new\n", validate="grep -q ok %s")]})
    assert accepted["written"] == [str(conf)] and conf.read_text() == "ok: new\n"
    with pytest.raises(Failed, match="validate"):
        run_module(mesh_layout, {"paths": [f(conf, "ok\n", validate="true")]})  # no %s: refused up front


def test_owner_and_mode_are_never_set_through_a_link_swapped_in(tmp_path: Path) -> None:
    """The name of an existing file is put in a directory another user can write: a link there (to a file
    of root's) fails the fix rather than handing the link's target over."""
    core = importlib.import_module(f"{PLUGINS}.module_utils.mesh_layout")
    target = tmp_path / "shadow"
    target.write_text("root's\n")
    os.chmod(target, 0o600)
    (tmp_path / "id_ed25519").symlink_to(target)
    with pytest.raises(OSError):
        core.fix_owner_mode(str(tmp_path / "id_ed25519"), None, None, 0o644)
    assert mode(target) == 0o600
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    core.fix_owner_mode(str(fifo), None, None, 0o600)  # a FIFO does not hang the run
    assert mode(fifo) == 0o600
