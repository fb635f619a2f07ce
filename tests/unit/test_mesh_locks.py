"""mesh_locks: a killed run's Unison archive lock is removed only when no Unison of the edge is alive."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from replimesh_node.mesh_locks import (
    LOCK_AGE_MARGIN_S,
    locked_error,
    process_age_s,
    recover_stale_locks,
    stale_lock_files,
    unison_pids,
)

HASH = "0123456789abcdef0123456789abcdef"
LOCKED = (
    "Fatal error: Warning: the archives are locked.  \n"
    "If no other instance of unison is running, the locks should be removed.\n"
    f"The file /var/lib/replimesh/unison/node1/lk{HASH} on host node2 should be deleted\n"
    "Please delete lock files as appropriate and try again.\n"
)


def edge(tmp_path: Path) -> Path:
    directory = tmp_path / "node2"
    directory.mkdir()
    for name in (f"ar{HASH}", f"lk{HASH}", "node2--shared.prf", "lkNOTHEX"):
        (directory / name).write_text("x")
    return directory


def test_a_stale_lock_is_removed_and_nothing_else(tmp_path: Path) -> None:
    directory = edge(tmp_path)
    assert [p.name for p in stale_lock_files(str(directory))] == [f"lk{HASH}"]
    assert recover_stale_locks(str(directory), alive=lambda _: []) == ([f"lk{HASH}"], [])
    assert sorted(os.listdir(directory)) == [f"ar{HASH}", "lkNOTHEX", "node2--shared.prf"]
    # none left to remove
    assert recover_stale_locks(str(directory), alive=lambda _: [1], age=lambda _: None) == ([], [])


def test_a_lock_of_a_live_unison_is_kept(tmp_path: Path) -> None:
    directory = edge(tmp_path)
    alive = {str(directory): [42]}
    assert recover_stale_locks(str(directory), alive=lambda d: alive.get(d, []), age=lambda _: 3600.0) == (
        [],
        [42],
    )
    assert (directory / f"lk{HASH}").exists()


def aged_lock(tmp_path: Path, lock_age_s: float) -> Path:
    directory = edge(tmp_path)
    then = time.time() - lock_age_s
    os.utime(directory / f"lk{HASH}", (then, then))
    return directory


@pytest.mark.parametrize(
    ("process_age", "kept"),
    [
        (5.0, False),  # a peer's pull that started long after the lock was made: not its holder
        (600.0 - LOCK_AGE_MARGIN_S + 1, True),  # started within the margin of the lock: may be its holder
        (900.0, True),  # started before the lock: may be its holder
        (None, True),  # start time unreadable: when in doubt, the lock stays
    ],
)
def test_only_a_unison_older_than_the_lock_keeps_it(
    tmp_path: Path, process_age: float | None, kept: bool
) -> None:
    directory = aged_lock(tmp_path, 600.0)
    result = recover_stale_locks(str(directory), alive=lambda _: [7, 8], age=lambda pid: process_age)
    assert result == (([], [7, 8]) if kept else ([f"lk{HASH}"], []))
    assert (directory / f"lk{HASH}").exists() is kept


def test_one_old_process_among_young_ones_keeps_the_lock(tmp_path: Path) -> None:
    directory = aged_lock(tmp_path, 600.0)
    ages = {7: 2.0, 8: 4000.0, 9: 1.0}
    assert recover_stale_locks(str(directory), alive=lambda _: [7, 8, 9], age=ages.get) == ([], [8])


def test_process_age_comes_from_the_boot_time_clock(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "77").mkdir(parents=True)
    hz = os.sysconf("SC_CLK_TCK")
    fields = ["S"] + ["0"] * 18 + [str(900 * hz)] + ["0"] * 10  # field 22: started 900 s after boot
    (proc / "77" / "stat").write_text(f"77 (unison (x) y) {' '.join(fields)}\n")
    (proc / "uptime").write_text("1000.50 3000.00\n")
    assert process_age_s(77, proc=str(proc)) == pytest.approx(100.5)
    assert process_age_s(78, proc=str(proc)) is None  # gone: unreadable
    assert 0 <= process_age_s(os.getpid()) < 3600 * 24 * 365  # type: ignore[operator]


def fake_proc(tmp_path: Path, processes: dict[int, tuple[str, bytes | None]]) -> Path:
    proc = tmp_path / "proc"
    for pid, (comm, environ) in processes.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(comm + "\n")
        if environ is None:
            (proc / str(pid) / "environ").mkdir()  # reading it fails: unreadable
        else:
            (proc / str(pid) / "environ").write_bytes(environ)
    (proc / "self").mkdir()
    return proc


def test_unison_processes_are_found_by_their_unison_dir(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        {
            10: ("unison", b"HOME=/\0UNISON=/u/node2\0UNISONLOCALHOSTNAME=node1\0"),  # a client
            11: ("unison-2.52", b"UNISON=/u/node2\0"),  # a server, another build name
            12: ("unison", b"UNISON=/u/node22\0"),  # another edge
            13: ("python3", b"UNISON=/u/node2\0"),  # not Unison
        },
    )
    assert unison_pids("/u/node2", proc=str(proc)) == [10, 11]
    assert unison_pids("/u/node3", proc=str(proc)) == []


def test_an_unreadable_unison_counts_as_alive(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {20: ("unison", None)})
    assert unison_pids("/u/node2", proc=str(proc)) == [20]


def test_locked_runs_say_where_the_lock_is(tmp_path: Path) -> None:
    assert locked_error("Synchronization complete", str(tmp_path)) is None
    kind, error = locked_error(LOCKED, str(tmp_path / "no-such-edge"))  # type: ignore[misc]
    assert kind == "failed" and error.startswith("archives locked on node2: ")
