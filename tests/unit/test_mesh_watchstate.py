"""Root reading and signalling what the mesh user can write: watch mode's pid file, record, lock."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_watchstate import (
    pid_of,
    process_matches,
    read_record,
    read_small,
    watch_dir,
)
from replimesh_node import mesh_supervise
from tests.conftest import wait_until


def test_read_small_reads_a_regular_file_up_to_its_limit_and_nothing_else(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"0123456789")
    assert read_small(plain) == b"0123456789" and read_small(str(plain), 4) == b"0123"
    link = tmp_path / "link"
    link.symlink_to(plain)
    assert read_small(link) is None  # a link the mesh user put there is not followed
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert read_small(fifo) is None and time.monotonic() - started < 1  # no writer: no wait
    assert read_small(tmp_path) is None and read_small(tmp_path / "absent") is None


def test_pid_of_wants_a_small_number_in_a_regular_file(tmp_path: Path) -> None:
    pid = tmp_path / "pid"
    pid.write_text("1234\n")
    assert pid_of(pid) == 1234
    for bad in ("", "12 34", "x", "0", "-5", "9" * 40, str(1 << 23)):
        pid.write_text(bad)
        assert pid_of(pid) is None, bad
    (tmp_path / "to-pid").symlink_to(pid)
    pid.write_text("1234\n")
    assert pid_of(tmp_path / "to-pid") is None


def test_process_matches_wants_the_owner_and_every_word_of_the_command_line() -> None:
    me, uid = os.getpid(), os.getuid()
    assert process_matches(me, uid, b"python")
    assert not process_matches(me, uid, b"python", b"--supervise")
    assert not process_matches(me, uid + 1, b"python")
    assert not process_matches(0, uid) and not process_matches(-1, uid)


def test_the_watcher_record_is_read_without_following_a_link(tmp_path: Path) -> None:
    state = tmp_path / "state"
    watch_dir(str(state)).mkdir(parents=True)
    record = watch_dir(str(state)) / "watcher.json"
    record.write_text('{"pid": 1}')
    assert read_record(str(state)) == {"pid": 1}
    record.unlink()
    record.symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text('{"pid": 2}')
    assert read_record(str(state)) is None


def test_stop_signals_no_process_a_planted_pid_file_names(tmp_path: Path) -> None:
    """The supervisor lock is held (a supervisor seems to run), but the pid file names another process of
    the same user: root's --stop must leave it alone."""
    state = str(tmp_path / "state")
    watch_dir(state).mkdir(parents=True)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    lock = os.open(watch_dir(state) / "supervisor.lock", os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (watch_dir(state) / "supervisor.pid").write_text(f"{victim.pid}\n")
        assert mesh_supervise.running(state)
        assert mesh_supervise.stop(state) == "not running"
        assert victim.poll() is None
    finally:
        os.close(lock)
        victim.kill()
        victim.wait(10)


def test_a_planted_lock_link_is_not_followed(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    watch_dir(state).mkdir(parents=True)
    target = tmp_path / "root-file"
    target.write_text("root's")
    (watch_dir(state) / "supervisor.lock").symlink_to(target)
    with pytest.raises(OSError):  # ELOOP: nothing is opened through the link
        mesh_supervise.running(state)
    assert target.read_text() == "root's"


def test_stop_waits_for_the_watcher_itself_and_for_nothing_else(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    watch_dir(state).mkdir(parents=True)
    record = watch_dir(state) / "watcher.json"
    watcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "replimesh-watch"])
    try:
        record.write_text(json.dumps({"pid": watcher.pid}))
        cmdline = Path(f"/proc/{watcher.pid}/cmdline")
        assert wait_until(lambda: b"replimesh-watch" in cmdline.read_bytes(), 10)  # exec'd, not a fork yet
        assert not mesh_supervise.wait_for_watcher(state, wait_s=0.3)  # still finishing
        threading.Timer(0.3, watcher.kill).start()
        assert mesh_supervise.wait_for_watcher(state, wait_s=10)
    finally:
        watcher.kill()
        watcher.wait(10)
    record.write_text(json.dumps({"pid": 1}))  # a record naming another process: no wait at all
    started = time.monotonic()
    assert mesh_supervise.wait_for_watcher(state, wait_s=10) and time.monotonic() - started < 1
