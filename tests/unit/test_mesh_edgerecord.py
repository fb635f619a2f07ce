"""Unison output parsing against real captures, and the per-edge status record.

The fixtures in fixtures/unison/NAME.exitCODE.txt are real stdout+stderr (merged, as the runner reads them)
of Unison 2.52.1 (Debian 12) with `-batch -prefer newer -copyonconflict -times -log=false`, captured between
two local temp dirs, as user nobody for the permission cases (root ignores permissions), and against
loopback-only stand-ins for the ssh cases: port 1 (refused), a paramiko server presenting an unknown or a
changed host key or refusing the key, a listener that never sends a banner, and an "ssh" that runs
`unison -server` locally (optionally killed 1.5 s in) to show the remote protocol.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_edgerecord import (
    KINDS,
    UnisonRun,
    merge_status,
    not_run,
    output_lines,
    parse_unison_output,
    summarize,
    worst_kind,
)

FIXTURES = Path(__file__).parent / "fixtures" / "unison"
FATAL_LOST = "Fatal error: Lost connection with the server"
LOST = f"({FATAL_LOST})"
STRICT = "and you have requested strict checking."
WORK = "/tmp/capture/work"
PROFILES = f"{WORK}/prof/u"


def fixture(name: str) -> tuple[str, int]:
    (path,) = FIXTURES.glob(f"{name}.exit*.txt")
    return path.read_text(encoding="utf-8"), int(path.name.split(".exit")[1].split(".")[0])


MOUNT = "is designated as a mountpoint, but points to nothing on host vm"
TMPFILE = ".unison.new.txt.42c4071cc06001e6993a2c912b334bc9.unison.tmp"

# name: (exit code, kind, ok, transferred, skipped, failed, conflicts, first_sync, error)
# fmt: off
EXPECTED: dict[str, tuple[int, str, bool, int, int, int, tuple[str, ...], bool, str | None]] = {
    # First sync: the no-archive warning; both.txt differs on both sides and prefer=newer resolves it.
    "first_sync": (0, "conflict", True, 4, 0, 0, ("both.txt",), True, None),
    "conflict_copy_propagates": (0, "ok", True, 1, 0, 0, (), False, None),
    "nothing": (0, "ok", True, 0, 0, 0, (), False, None),
    "copies": (0, "ok", True, 3, 0, 0, (), False, None),
    "deletion": (0, "ok", True, 2, 0, 0, (), False, None),
    "conflict": (0, "conflict", True, 2, 0, 0, ("docs/notes.md", "report.txt"), False, None),
    "conflict_copies_propagate": (0, "ok", True, 2, 0, 0, (), False, None),
    # Equal mtimes: prefer=newer still picks a side (the second root), it does not skip.
    "conflict_undecided": (0, "conflict", True, 1, 0, 0, ("same_time.txt",), False, None),
    "conflict_delete_vs_modify": (0, "conflict", True, 2, 0, 0, ("from_b.txt",), False, None),
    "conflict_was_deleted_propagates": (0, "ok", True, 2, 0, 0, (), False, None),
    # Without prefer (not our profile), a conflict is skipped: exit 1.
    "conflict_skipped_no_prefer": (1, "skipped", True, 0, 1, 0, ("skipme.txt",), False,
                                   "skipped: skipme.txt (contents changed on both sides)"),
    "marker_missing": (3, "marker", False, 0, 0, 0, (), False,
                       f"Fatal error: Path {WORK}/b/.replimesh-folder {MOUNT}"),
    "ssh_refused": (3, "unreachable", False, 0, 0, 0, (), False,
                    f"ssh: connect to host 127.0.0.1 port 1: Connection refused {LOST}"),
    "ssh_banner_timeout": (3, "unreachable", False, 0, 0, 0, (), False,
                           f"Connection timed out during banner exchange {LOST}"),
    "ssh_hostkey_unknown": (3, "hostkey", False, 0, 0, 0, (), False,
                            f"No ED25519 host key is known for zzz {STRICT} {LOST}"),
    "ssh_hostkey_changed": (3, "hostkey", False, 0, 0, 0, (), False,
                            f"Host key for [127.0.0.1]:22022 has changed {STRICT} {LOST}"),
    # Reachable but our key is refused: not "unreachable", the peer answered.
    "ssh_auth_refused": (3, "failed", False, 0, 0, 0, (), False,
                         f"root@127.0.0.1: Permission denied (publickey). {LOST}"),
    "remote_first_sync": (0, "ok", True, 1, 0, 0, (), True, None),
    # The peer died after "Connected [...]": a failed run, not an unreachable peer.
    "remote_lost_mid_sync": (3, "failed", False, 0, 0, 0, (), True, FATAL_LOST),
    # An unreadable file is skipped (exit 1), the rest is synced.
    "permission_denied": (1, "skipped", True, 1, 1, 0, (), True,
                          f"skipped: locked.txt (Error in digesting {WORK}/perm/a/locked.txt: "
                          f"{WORK}/perm/a/locked.txt: Permission denied)"),
    # An unwritable target dir: "Synchronization incomplete", exit 2.
    "write_denied": (2, "failed", False, 1, 0, 1, (), False,
                     f"Failed [sub/new.txt]: Error in copying locally: Permission denied "
                     f"[open({WORK}/wperm/b/sub/{TMPFILE})]"),
    # A missing profile exits 1, like a skip: it must not count as one.
    "profile_missing": (1, "failed", False, 0, 0, 0, (), False,
                        f"Profile 'node9--shared' does not exist "
                        f"(looking for file {PROFILES}/node9--shared.prf)"),
    "profile_bad_pref": (3, "failed", False, 0, 0, 0, (), False,
                         f'Fatal error: Profile "node2--typo" (file "{PROFILES}/node2--typo.prf"), line 3: '
                         "`prefre' is not a valid option"),
    # Pulls (the peer's root is noupdate/nodeletion/nocreation): changes made here wait for the peer's
    # own pull (exit 1, one-way skips, not conflicts); a conflict has both sides changed.
    "pull_local_changes_wait": (1, "ok", True, 0, 3, 0, (), False, None),
    "pull_conflict_local_newer": (1, "conflict", True, 1, 2, 0, ("f3",), False, None),
    # The brake's first pass (nodeletion on the local root): the deletion is held, the rest applied.
    "pull_deletion_held": (1, "ok", True, 2, 2, 0, (), False, None),
    # The receiving disk is full: both files failed (Unison's temporary copies hold what was written).
    "disk_full": (2, "diskfull", False, 0, 0, 2, (), True,
                  "disk full: Failed [small.txt]: Error in copying locally: No space left on device"),
    # One end's archive is gone: the runner runs the pull again with -ignorearchives (mesh_runner).
    "archive_missing": (3, "failed", False, 0, 0, 0, (), False, "Fatal error: Warning: inconsistent state."),
    # Unison's own confirmbigdel guard: exit 3 but no "Fatal error" line.
    "root_emptied": (3, "failed", False, 0, 0, 0, (), False,
                     "The root of one of the replicas has been completely emptied."),
}
# fmt: on


def test_every_fixture_has_an_expectation() -> None:
    names = {path.name.split(".exit")[0] for path in FIXTURES.glob("*.txt")}
    assert names == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parse_real_output(name: str) -> None:
    text, code = fixture(name)
    run = parse_unison_output(text, code)
    got = (
        code,
        run.kind,
        run.ok,
        run.transferred,
        run.skipped,
        run.failed,
        run.conflicts,
        run.first_sync,
        run.error,
    )
    assert got == EXPECTED[name]
    assert run.exit_code == code


@pytest.mark.parametrize(
    ("name", "waiting", "held"),
    [
        ("pull_local_changes_wait", 3, ()),
        ("pull_conflict_local_newer", 2, ()),
        ("pull_deletion_held", 1, ("f2",)),
    ],
)
def test_one_way_skips_are_counted_apart(name: str, waiting: int, held: tuple[str, ...]) -> None:
    run = parse_unison_output(*fixture(name))
    assert (run.waiting, run.held) == (waiting, held)
    assert run.as_dict()["held"] == len(held)


def test_conflict_copy_names() -> None:
    """The copy keeps the losing version as `NAME (conflict_on_YYYY-MM-DD).EXT`, made only on the losing side;
    the next run carries it to the other side as a new file."""
    text, _ = fixture("conflict_copies_propagate")
    copies = re.findall(r"\[BGN\] Copying (.+?) from ", text)
    assert copies == ["docs/notes (conflict_on_2026-11-25).md", "report (conflict_on_2026-11-25).txt"]
    # A modify/delete conflict: the copy is named `..._was_deleted`, and the next run deletes the original
    # name on the other side, so the content survives only under the copy's name.
    text, _ = fixture("conflict_was_deleted_propagates")
    assert "[BGN] Copying from_b (conflict_on_2026-11-25_was_deleted).txt from" in text
    assert "[BGN] Deleting from_b.txt from" in text


def test_output_lines_drop_overwritten_progress() -> None:
    assert output_lines(" 28%  00:00 ETA\r               \r[END] Copying one.txt\nssh: refused\r\n") == [
        "[END] Copying one.txt",
        "ssh: refused",
        "",
    ]


NOT_RESPONDING = "Timeout, server 10.0.0.2 not responding."
UNRESOLVED = "ssh: Could not resolve hostname nope: Name or service not known"


# fmt: off
EDGE_CASES = [
    ("Nothing to do: replicas have been changed only in identical ways since last sync.\n", 0, "ok", None),
    ("", 2, "failed", "unison exited with code 2"),
    ("", 0, "failed", "unison exited with code 0"),  # exit 0 but no summary: not a sync
    # Killed (e.g. by the runner's timeout) before any summary: the last line it printed.
    ("Unison 2.52.1 (ocaml 4.13.1): Contacting server...\nLooking for changes\n", -15, "failed",
     "Looking for changes"),
    (f"Contacting server...\n{UNRESOLVED}\r\n", 255, "unreachable", UNRESOLVED),
    # ServerAliveInterval gave up: before "Connected" the peer is unreachable, after it the run failed.
    (f"Contacting server...\n{NOT_RESPONDING}\r\n", 3, "unreachable", NOT_RESPONDING),
    (f"Connected [//a//x -> //b//x]\n{NOT_RESPONDING}\r\nFatal error: Lost connection with the server\n", 3,
     "failed", FATAL_LOST),
]
# fmt: on


@pytest.mark.parametrize(("text", "code", "kind", "error"), EDGE_CASES)
def test_parse_edge_cases(text: str, code: int, kind: str, error: str | None) -> None:
    run = parse_unison_output(text, code)
    assert (run.kind, run.error) == (kind, error)


def test_partially_transferred_summary_counts() -> None:
    counts = "(5 items transferred, 2 partially transferred, 1 skipped, 3 failed)"
    line = f"Synchronization incomplete at 10:00:00  {counts}"
    run = parse_unison_output(line, 2)
    assert (run.transferred, run.skipped, run.failed) == (5, 1, 3)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400), st.integers(-20, 255))
def test_parser_never_raises_and_classifies(text: str, code: int) -> None:
    run = parse_unison_output(text, code)
    assert run.kind in KINDS
    if run.ok:  # only a finished run with a good exit code and no fatal error
        assert code in (0, 1) and not any(line.startswith("Fatal error:") for line in output_lines(text))
        assert any(line.startswith(("Synchronization", "Nothing to do")) for line in output_lines(text))
    assert run.ok or run.error


def runs(*kinds: str, transferred: int = 1) -> list[UnisonRun]:
    return [
        UnisonRun(kind=kind, ok=kind in ("ok", "conflict", "skipped"), exit_code=0, transferred=transferred,
                  error=None if kind == "ok" else f"{kind} error", folder=f"f{i}")
        for i, kind in enumerate(kinds)
    ]  # fmt: skip


T0 = 1_764_088_800.0  # 2025-11-25T16:40:00Z


def test_merge_status_success_sets_last_success() -> None:
    status = merge_status(None, "node2", T0, T0 + 2.5, runs("ok", "ok"))
    assert status == {
        "peer": "node2",
        "last_start": "2025-11-25T16:40:00Z",
        "last_finish": "2025-11-25T16:40:02Z",
        "last_success": "2025-11-25T16:40:02Z",
        "result": "ok",
        "files_changed": 2,
        "conflicts": [],
        "error": None,
        "duration_s": 2.5,
        "first_sync": False,
    }


def test_merge_status_failure_keeps_previous_success() -> None:
    first = merge_status(None, "node2", T0, T0 + 1, runs("ok"))
    later = merge_status(first, "node2", T0 + 900, T0 + 901, runs("ok", "unreachable", transferred=0))
    assert later["last_success"] == first["last_success"] == "2025-11-25T16:40:01Z"
    assert (later["result"], later["error"], later["last_start"]) == (
        "unreachable",
        "unreachable error",
        "2025-11-25T16:55:00Z",
    )
    again = merge_status(later, "node2", T0 + 1800, T0 + 1801, runs("conflict"))
    assert again["last_success"] == "2025-11-25T17:10:01Z"


@pytest.mark.parametrize("previous", [None, {}, {"last_success": 5}, {"other": "x"}])
def test_merge_status_failure_without_a_usable_previous(previous: dict[str, object] | None) -> None:
    assert merge_status(previous, "node2", T0, T0, [not_run("marker", "no marker")])["last_success"] is None


def test_merge_status_names_conflicts_by_folder_and_sums() -> None:
    a = UnisonRun(kind="conflict", ok=True, exit_code=0, transferred=2, conflicts=("x.txt",), folder="shared")
    b = UnisonRun(kind="ok", ok=True, exit_code=0, transferred=3, first_sync=True, folder="media")
    status = merge_status(None, "node3", T0, T0 + 0.1234, [a, b])
    assert (status["result"], status["files_changed"], status["conflicts"]) == (
        "conflict",
        5,
        ["shared/x.txt"],
    )
    assert (status["first_sync"], status["duration_s"]) == (True, 0.123)


def test_merge_status_needs_runs() -> None:
    with pytest.raises(ValueError, match="node2"):
        merge_status(None, "node2", T0, T0, [])


def test_worst_kind_order() -> None:
    assert worst_kind(["ok", "conflict"]) == "conflict"
    assert worst_kind(["skipped", "busy", "ok"]) == "busy"
    assert worst_kind(["failed", "unreachable", "timeout"]) == "unreachable"
    assert worst_kind(["marker", "hostkey"]) == "hostkey"
    assert worst_kind(["ok", "something-new"]) == "failed"


def test_summarize_counts_every_kind() -> None:
    edges = [merge_status(None, f"n{i}", T0, T0, runs(kind)) for i, kind in enumerate(["ok", "ok", "failed"])]
    edges[0]["conflicts"] = ["shared/a"]
    summary = summarize(edges)
    assert summary == {
        **dict.fromkeys(KINDS, 0),
        "edges": 3,
        "ok": 2,
        "failed": 1,
        "files_changed": 3,
        "conflicts": 1,
    }
