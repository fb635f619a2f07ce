"""Key rotation on a node: the state a node is in, the key store records of each phase, the edge locks held
while switching, and the mesh_key module through AnsibleModule with real ssh-keygen keys under tmp_path."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import pwd
import socket
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.unit.module_harness import Failed, load_module, run_module

core, mesh_key = load_module("mesh_key")
USER = "daemon"  # stands in for the mesh user (files are chowned to it: these module tests need root)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chowns key files to the mesh user")


def key(seed: int) -> str:
    blob = len(b"ssh-ed25519").to_bytes(4, "big") + b"ssh-ed25519" + bytes([seed]) * 32
    return f"ssh-ed25519 {base64.b64encode(blob).decode()}"


OLD, NEW, OTHER = key(1), key(2), key(3)


@pytest.mark.parametrize(
    ("current", "next_key", "stored", "stored_next", "state"),
    [
        (OLD, None, OLD, None, core.IDLE),
        (OLD + " replimesh@node1", None, OLD, None, core.IDLE),  # comments never matter
        (OLD, NEW, OLD, None, core.IDLE),  # made, not recorded yet (interrupted): reused
        (OLD, NEW, OLD, NEW, core.PREPARED),
        (OLD, OTHER, OLD, NEW, core.IDLE),  # the recorded next key is not the one on the node
        (NEW, None, OLD, NEW, core.SWITCHED),
        (OTHER, None, OLD, NEW, core.UNKNOWN),
        (OTHER, None, OLD, None, core.UNKNOWN),  # reinstalled node
        (OLD, None, None, None, core.IDLE),  # nothing stored yet
    ],
)
def test_rotation_state(current: str, next_key: str | None, stored: str | None, stored_next: str | None,
                        state: str) -> None:  # fmt: skip
    assert core.rotation_state(current, next_key, stored, stored_next) == state


def test_records_of_the_phases() -> None:
    record = {"public_key": OLD + " replimesh@node1", "host_key": "ssh-ed25519 HOST"}
    begun = core.begin_record(record, OLD, NEW + " replimesh@node1")
    assert begun == {"public_key": OLD, "host_key": "ssh-ed25519 HOST", "next_public_key": NEW}
    # Re-run after the switch: the record keeps trusting the old key and the next one (now in use).
    assert core.begin_record(begun, NEW, NEW) == begun
    assert core.finish_record(begun, NEW) == {"public_key": NEW, "host_key": "ssh-ed25519 HOST"}
    assert core.begin_record({}, OLD, NEW) == {"public_key": OLD, "next_public_key": NEW}


def test_lock_paths_cover_every_peer_and_every_lock_file_found() -> None:
    paths = core.lock_paths("/s/locks", ["node3", "node2"], ["node4.lock", ".tmp", "node2.lock"])
    assert paths == ["/s/locks/node2.lock", "/s/locks/node3.lock", "/s/locks/node4.lock"]


def test_hold_locks_keeps_the_runner_out_and_releases(tmp_path: Path) -> None:
    paths = [str(tmp_path / f"{n}.lock") for n in ("a", "b")]
    for path in paths:
        Path(path).touch()
    with core.hold_locks(paths, timeout=1):
        fd = os.open(paths[1], os.O_RDWR)
        with pytest.raises(BlockingIOError):  # what the runner sees: the edge is busy
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    fd = os.open(paths[1], os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    os.close(fd)


def test_hold_locks_waits_for_a_running_edge_then_gives_up_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "node2.lock"
    path.touch()
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    release = threading.Timer(0.2, os.close, [fd])
    release.start()
    with core.hold_locks([str(path)], timeout=5):  # a short run ends: the switch goes on
        pass
    release.join()
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ticks = iter([0.0, 0.5, 2.0])
    try:
        with (
            pytest.raises(core.KeyRotationError, match=r"node2\.lock stayed held for 1 s"),
            core.hold_locks([str(path)], timeout=1, clock=lambda: next(ticks)),
        ):
            pytest.fail("the body must not run without the lock")
    finally:
        os.close(fd)


# The module, on real key files.


def run(args: dict[str, Any], check: bool = False) -> dict[str, Any]:
    return run_module(mesh_key, args, check=check)


def fail(args: dict[str, Any]) -> str:
    with pytest.raises(Failed) as failed:
        run(args)
    return failed.value.args[0]["msg"]


def public(path: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True)
    return " ".join(out.stdout.split()[:2])


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Any]:
    ssh = tmp_path / "ssh"
    ssh.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "id_ed25519")], check=True)
    (tmp_path / "locks").mkdir()
    (tmp_path / "mesh.json").write_text(json.dumps({"peers": [{"name": "node2"}, {"name": "node3"}]}))
    stored = {"public_key": public(ssh / "id_ed25519"), "host_key": key(9)}
    return {
        "key": str(ssh / "id_ed25519"),
        "user": USER,
        "comment": "replimesh@node1",
        "stored": stored,
        "config_file": str(tmp_path / "mesh.json"),
        "locks_dir": str(tmp_path / "locks"),
        "lock_timeout": 5,
    }


def test_query_reports_the_key_in_use_and_changes_nothing(node: dict[str, Any]) -> None:
    result = run(node)
    assert (result["changed"], result["state"], result["next_public_key"]) == (False, "idle", None)
    assert result["public_key"] == node["stored"]["public_key"]
    assert result["fingerprint"].startswith("SHA256:")
    assert sorted(os.listdir(Path(node["key"]).parent)) == ["id_ed25519", "id_ed25519.pub"]


@as_root
def test_a_whole_rotation_on_the_node_then_nothing_to_do(node: dict[str, Any]) -> None:
    keyfile, old = Path(node["key"]), node["stored"]["public_key"]
    prepared = run({**node, "state": "next"})
    new = prepared["next_public_key"]
    assert prepared["changed"] and prepared["state"] == "idle" and new not in (None, old)
    assert prepared["record"] == {**node["stored"], "next_public_key": new}
    nxt = Path(f"{keyfile}.next")
    assert public(nxt) == new and public(keyfile) == old
    assert (nxt.stat().st_mode & 0o777, nxt.stat().st_uid) == (0o600, 1)
    # Interrupted and run again: the same next key, not a third one.
    again = run({**node, "stored": prepared["record"], "state": "next"})
    assert (again["changed"], again["state"], again["next_public_key"]) == (False, "prepared", new)

    switched = run({**node, "stored": prepared["record"], "state": "current", "expect": new})
    assert switched["changed"] and switched["switched"] and switched["public_key"] == new
    assert switched["record"] == {**node["stored"], "public_key": new}
    assert public(keyfile) == new and Path(f"{keyfile}.pub").read_text().split()[:2] == new.split()
    assert sorted(os.listdir(keyfile.parent)) == ["id_ed25519", "id_ed25519.pub"]
    # The edge locks exist for the runner, owned by the mesh user.
    assert sorted(os.listdir(node["locks_dir"])) == ["node2.lock", "node3.lock"]
    assert Path(node["locks_dir"], "node2.lock").stat().st_uid == 1

    # Re-run after the switch, before the record was finished: no new key, the record keeps both.
    resumed = run({**node, "stored": prepared["record"], "state": "next"})
    assert (resumed["changed"], resumed["state"], resumed["record"]) == (
        False,
        "switched",
        prepared["record"],
    )
    done = run({**node, "stored": switched["record"], "state": "current", "expect": new})
    assert not done["changed"] and done["state"] == "idle"


@as_root
def test_a_switch_interrupted_between_its_renames_is_healed(node: dict[str, Any]) -> None:
    prepared = run({**node, "state": "next"})
    keyfile = Path(node["key"])
    os.replace(f"{keyfile}.next", keyfile)  # the private half switched, the .pub files not
    healed = run(
        {**node, "stored": prepared["record"], "state": "current", "expect": prepared["next_public_key"]}
    )
    assert healed["changed"] and not healed["switched"]
    assert Path(f"{keyfile}.pub").read_text().split()[:2] == prepared["next_public_key"].split()
    assert not Path(f"{keyfile}.next.pub").exists()


@as_root
def test_the_switch_waits_for_a_running_edge(node: dict[str, Any]) -> None:
    prepared = run({**node, "state": "next"})
    lock = Path(node["locks_dir"], "node3.lock")
    lock.touch()
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        args = {**node, "stored": prepared["record"], "state": "current", "lock_timeout": 1}
        msg = fail({**args, "expect": prepared["next_public_key"]})
    finally:
        os.close(fd)
    assert "node3.lock stayed held for 1 s" in msg and "nothing was switched" in msg
    assert public(Path(node["key"])) == node["stored"]["public_key"]


def test_a_key_neither_stored_one_is_refused_before_any_change(node: dict[str, Any]) -> None:
    stored = {**node["stored"], "public_key": OTHER}
    msg = fail({**node, "stored": stored, "state": "next"})
    assert "neither the one the key store trusts nor its next one" in msg and "add-node.yml" in msg
    assert not Path(f"{node['key']}.next").exists()
    assert run({**node, "stored": stored})["state"] == "unknown"  # query reports it, no failure


def test_switching_to_a_key_nobody_prepared_is_refused(node: dict[str, Any]) -> None:
    msg = fail({**node, "state": "current", "expect": OTHER})
    assert "neither the key in use nor the prepared next key" in msg


def test_check_mode_makes_no_key(node: dict[str, Any]) -> None:
    result = run({**node, "state": "next"}, check=True)
    assert result["changed"] and not Path(f"{node['key']}.next").exists()


@as_root
def test_the_switch_ends_the_shared_connections_opened_with_the_old_key(node: dict[str, Any]) -> None:
    prepared = run({**node, "state": "next"})
    keydir = Path(node["key"]).parent
    stale = socket.socket(socket.AF_UNIX)  # a master's socket that no longer answers
    stale.bind(str(keydir / "mux-4f2a"))
    (keydir / "mux-notes").write_text("not a socket: left alone")
    try:
        run({**node, "stored": prepared["record"], "state": "current", "expect": prepared["next_public_key"]})
    finally:
        stale.close()
    assert sorted(os.listdir(keydir)) == ["id_ed25519", "id_ed25519.pub", "mux-notes"]


def keys_task_argv() -> list[str]:
    """The argv of mesh_ssh's keys.yml task that makes the node's key when it has none and reads the node."""
    import yaml

    root = Path(__file__).resolve().parents[2]
    tasks = yaml.safe_load((root / "roles/mesh_ssh/tasks/keys.yml").read_text())
    task = next(t for t in tasks if t["name"].startswith("Keys | Generate this node's key if it has none"))
    return task["ansible.builtin.command"]["argv"][:4]  # sh -c SCRIPT sh; the rest are templated arguments


def test_the_role_makes_a_key_once_reads_both_keys_and_makes_nothing_in_check_mode(tmp_path: Path) -> None:
    script = keys_task_argv()
    # The key's directory does not exist yet: the script makes it (0700), then the key.
    private, host = tmp_path / "home" / ".ssh" / "id_ed25519", tmp_path / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host)], check=True)
    # sshd -T's stand-in: the settings for the connection it is asked about.
    sshd = tmp_path / "sshd"
    sshd.write_text(
        '#!/bin/sh\n[ "$1 $2" = "-T -C" ] || exit 2\necho "chrootdirectory /jail"\necho "for $3"\n'
    )
    sshd.chmod(0o755)
    me = pwd.getpwuid(os.getuid()).pw_name

    def run(mode: str, sshd: Path = sshd) -> list[str]:
        argv = [
            *script,
            str(private),
            "replimesh@node1",
            f"{host}.pub",
            mode,
            me,
            "no-such-group-x",
            "user=x",
        ]
        done = subprocess.run([*argv, str(sshd)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    def tagged(lines: list[str], tag: str) -> list[str]:
        return [line.split(" ", 1)[1] for line in lines if line.startswith(tag + " ")]

    checked = run("check")  # check mode: said, not done
    assert checked[0] == "generated" and not private.exists() and not tagged(checked, "key")
    made = run("apply")
    assert made[0] == "generated" and private.exists()
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    (key,) = tagged(made, "key")
    assert key.split()[:2] == private.with_suffix(".pub").read_text().split()[:2]
    assert key.split()[2] == "replimesh@node1"
    assert tagged(made, "hostkey")[0].split()[:2] == Path(f"{host}.pub").read_text().split()[:2]
    (account,) = tagged(made, "passwd")
    assert account.split(":")[0] == me and "group" not in made  # the account read; no such group
    assert tagged(made, "sshd") == ["chrootdirectory /jail", "for user=x"]
    again = run("apply")  # a key is never made twice
    assert again == made[1:]
    assert run("check") == made[1:]


def test_the_role_s_node_reading_fails_when_sshd_cannot_tell_its_settings(tmp_path: Path) -> None:
    host = tmp_path / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host)], check=True)
    broken = tmp_path / "sshd"
    broken.write_text("#!/bin/sh\necho 'line 3: Bad configuration option' >&2\nexit 255\n")
    broken.chmod(0o755)
    argv = [
        *keys_task_argv(),
        str(tmp_path / "h" / "id"),
        "c",
        f"{host}.pub",
        "apply",
        "root",
        "root",
        "user=x",
    ]
    done = subprocess.run([*argv, str(broken)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "Bad configuration option" in done.stderr
