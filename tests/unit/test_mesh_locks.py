"""mesh_locks: a killed run's Unison archive lock is removed only when no Unison of the edge is alive."""

from __future__ import annotations

import os
from pathlib import Path

from mesh_plugins.module_utils.mesh_locks import (
    locked_error,
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
    assert recover_stale_locks(str(directory), alive=lambda _: [1]) == ([], [])  # nothing left to do


def test_a_lock_of_a_live_unison_is_kept(tmp_path: Path) -> None:
    directory = edge(tmp_path)
    assert recover_stale_locks(str(directory), alive=lambda d: [42] if d == str(directory) else []) == (
        [],
        [42],
    )
    assert (directory / f"lk{HASH}").exists()


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
