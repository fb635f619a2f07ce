"""Read Unison's batch-mode output into a result, and keep the per-edge status record.

Standard library only and pure: the node's sync runner ships this file beside itself (as
``replimesh_node.mesh_edgerecord``), and the controller reads the same records.

Every pattern here was checked against real Unison 2.52.1 / OpenSSH 9.2 output; the captures are in
``tests/unit/fixtures/unison``. Facts the parser relies on:

- Unison writes its messages to stderr and progress to stdout; the runner merges both. Progress and
  spinner lines are overwritten in place with ``\\r``, so only the text after a line's last ``\\r`` counts.
- Unison prints no line about conflict copies. A conflict shows in the reconciliation listing as an
  arrow drawn with ``=`` (resolved against Unison's default, e.g. by ``prefer newer``; with
  ``copyonconflict`` the losing side's version is kept as ``NAME (conflict_on_YYYY-MM-DD).EXT``, or
  ``NAME (conflict_on_YYYY-MM-DD_was_deleted).EXT`` against a deletion) or with ``?`` (unresolved: skipped).
- The summary line is ``Synchronization complete|incomplete at HH:MM:SS  (N item(s) transferred,
  [P partially transferred, ]S skipped, F failed)``; with no changes only ``Nothing to do: ...``.
- Exit codes: 0 all done, 1 something skipped, 2 non-fatal failures, 3 fatal error. But a missing profile
  also exits 1 (after its usage text), so a run counts as a success only if it reached the summary line.
- Every run pulls: the peer's root carries ``noupdate``/``nodeletion``/``nocreation``. A change made here
  that the run would carry to the peer is skipped with ``skipped: PATH (would create|update|delete a file
  with noupdate or noupdatepartial set)`` and exit 1: it waits for the peer's own pull, which is not a
  problem of this run (``waiting``). Its reconciliation line shows ``<=?=>`` with one side's state blank;
  a real conflict has both sides changed.
- The mass-deletion brake runs first with ``nodeletion`` on the local root: each deletion it held back is
  ``skipped: PATH (would delete a file with nodeletion or nodeletionpartial set)`` (``held``). The peer's
  root has ``noupdate`` too, which Unison checks first, so that message names a local deletion only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Worst last: an edge's result is the worst kind over its folders. The specific, actionable kinds rank
# above the generic ones (a changed host key needs a person; an unreachable peer explains any failure).
# "brake": a pull would have deleted more files than the node allows (sync.max_deletions); nothing was
# deleted and the edge waits for an operator. "diskfull": a disk had no room left (this node's, or the
# peer's for the edge's archive); the run kept what it had, and the next one resumes once there is room.
KINDS = (
    "ok", "conflict", "skipped", "busy", "failed", "timeout", "unreachable", "diskfull", "marker", "brake",
    "hostkey",
)  # fmt: skip
# The edge was synced (a skipped path stays as it was and is retried on the next run).
SUCCESS_KINDS = frozenset({"ok", "conflict", "skipped"})
# Not a failure of this run: "busy" means another live run is syncing the edge right now.
HARMLESS_KINDS = SUCCESS_KINDS | {"busy"}

FIRST_SYNC_TEXT = "No archive files were found for these roots"
# One end's archive of the edge is gone (a run killed while writing it, or a peer's login that deleted it
# from its own edge's directory): Unison stops until it runs once with -ignorearchives.
ARCHIVE_MISSING_TEXT = "The archive file is missing on some hosts"
LOST_TEXT = "Lost connection with the server"  # Unison's words when ssh ended before or during a run
CONNECTED_PREFIX = "Connected ["
FATAL_PREFIX = "Fatal error:"
NOTHING_PREFIX = "Nothing to do: "

SUMMARY_RE = re.compile(
    r"^Synchronization (?:in)?complete\b.*\((\d+) items? transferred, (?:\d+ partially transferred, )?"
    r"(\d+) skipped, (\d+) failed\)"
)
# "changed  <==== changed    report.txt  ": 8-column state, arrow, 8-column state, then the path.
RECON_RE = re.compile(r"^(.{8}) ([<=?M>-]{5}) (.{8}) {2,}(.+?) *$")
# A path the pull held back: a change here waiting for the peer's pull, or a deletion the brake held.
ONE_WAY_RE = re.compile(
    r"^skipped: (.+) \(would (?:create|update|delete) a file with (no\w+?)(?:partial)? or "
)
# fmt: off
RECON_ARROWS = frozenset({
    "---->", "<----", "====>", "<====", "<-?->", "<=?=>",
    "<-?--", "<=?==", "--?->", "==?=>", "<-M->", "<=M=>",
})
# fmt: on

HOSTKEY_RES = (
    # Most specific first: it names the host.
    re.compile(r"Host key for .* has changed and you have requested strict checking"),
    re.compile(r"No \S+ host key is known for .* and you have requested strict checking"),
    re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED"),
    re.compile(r"^Host key verification failed"),
)
UNREACHABLE_RES = (
    re.compile(
        r"^ssh: connect to host .*: (Connection refused|Connection timed out|No route to host|"
        r"Network is unreachable|Operation timed out)"
    ),
    re.compile(r"^ssh: Could not resolve hostname"),
    re.compile(r"^Connection timed out during banner exchange"),
    re.compile(r"^Connection to \S+ port \d+ timed out"),
    re.compile(r"^Connection (closed|reset) by "),
    re.compile(r"^kex_exchange_identification: "),
    re.compile(r"^Timeout, server .* not responding"),
)
SSH_OTHER_RES = (re.compile(r"Permission denied \((publickey|password|keyboard-interactive)"),)
MARKER_RE = re.compile(r"is designated as a mountpoint, but points to nothing")
DISK_FULL_RE = re.compile(r"No space left on device|Disk quota exceeded")
EMPTIED_RE = re.compile(
    r"^The (root of one of the replicas|following paths) ha(s|ve) been completely emptied"
)
# Lines that report a per-path problem; the last one is the run's error when nothing was fatal. The closing
# "  failed: PATH" list is left out: the "Failed [PATH]: reason" line before it says why.
PATH_ERROR_RE = re.compile(
    r"^(Failed \[|\[ERROR\] |\[CONFLICT\] Skipping |skipped: |Error: |Error in |Uncaught exception)"
)


@dataclass(frozen=True)
class UnisonRun:
    """One Unison run (one edge, one folder). `folder` is set by the runner, not by the parser."""

    kind: str
    ok: bool
    exit_code: int | None
    transferred: int = 0
    skipped: int = 0
    failed: int = 0
    conflicts: tuple[str, ...] = ()
    first_sync: bool = False
    error: str | None = None
    folder: str = ""
    # Local changes that wait for the peer's own pull, and deletions the brake held back (paths).
    waiting: int = 0
    held: tuple[str, ...] = ()
    # Paths the run brought here from the peer (or was to: a superset), for the round's settling runs.
    pulled: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "kind": self.kind,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "transferred": self.transferred,
            "skipped": self.skipped,
            "failed": self.failed,
            "conflicts": list(self.conflicts),
            "first_sync": self.first_sync,
            "error": self.error,
            "waiting": self.waiting,
            "held": len(self.held),
        }


def not_run(kind: str, error: str | None, folder: str = "") -> UnisonRun:
    """A run the runner decided not to start (edge busy, marker missing)."""
    return UnisonRun(kind=kind, ok=False, exit_code=None, error=error, folder=folder)


def output_lines(output: str) -> list[str]:
    """The lines as a terminal would show them: text overwritten with \\r is gone, trailing blanks too."""
    lines = []
    for raw in output.split("\n"):
        # ssh ends its lines with \r\n: strip that \r before looking for in-place overwrites.
        lines.append(raw.rstrip("\r").rsplit("\r", 1)[-1].rstrip())
    return lines


def _joined(lines: Sequence[str], index: int) -> str:
    """A message that Unison wraps over lines ("...locked.txt:" / "...: Permission denied)") as one line."""
    text = lines[index].strip()
    for follow in lines[index + 1 : index + 3]:
        if not (text.endswith(":") or text.count("(") > text.count(")")) or not follow.strip():
            break
        text = f"{text} {follow.strip()}"
    return text


def _first_match(lines: Sequence[str], patterns: Sequence[re.Pattern[str]]) -> str | None:
    for pattern in patterns:
        for line in lines:
            if pattern.search(line):
                return line.strip(" @")
    return None


def _conflicts(lines: Sequence[str]) -> tuple[str, ...]:
    found: dict[str, None] = {}  # ordered set: a path is listed once per run, but stay safe
    for line in lines:
        match = RECON_RE.match(line)
        if not match or match.group(2) not in RECON_ARROWS or not match.group(1).strip():
            continue
        # Both sides changed: a conflict. A "?" with one side blank is a one-way skip, not a conflict.
        if match.group(3).strip() and ("=" in match.group(2) or "?" in match.group(2)):
            found[match.group(4)] = None
    return tuple(found)


def _pulled(lines: Sequence[str]) -> tuple[str, ...]:
    """The paths the reconciliation carries to this side (``<----``, or ``<====`` a conflict resolved
    for the peer's version): new, changed or deleted here by this pull."""
    found: dict[str, None] = {}
    for line in lines:
        match = RECON_RE.match(line)
        if match and match.group(2) in ("<----", "<===="):
            found[match.group(4)] = None
    return tuple(found)


def _one_way_line(line: str, paths: set[str]) -> bool:
    """A line about a path the pull held back on purpose: not an error."""
    if ONE_WAY_RE.match(line):
        return True
    return line.startswith("[CONFLICT] Skipping ") and line[len("[CONFLICT] Skipping ") :] in paths


def parse_unison_output(output: str, exit_code: int) -> UnisonRun:
    """Classify one Unison run from its merged stdout+stderr and exit code."""
    lines = output_lines(output)
    fatal = next((line.strip() for line in lines if line.startswith(FATAL_PREFIX)), None)
    transferred = skipped = failed = 0
    finished = False  # Unison got to the end of a sync (not e.g. a usage error, which exits 1 too)
    for line in lines:
        if match := SUMMARY_RE.match(line):
            transferred, skipped, failed = (int(group) for group in match.groups())
            finished = True
        finished = finished or line.startswith(NOTHING_PREFIX)
    conflicts = _conflicts(lines)
    waiting, held, one_way_paths = 0, [], set()
    for line in lines:
        if one_way := ONE_WAY_RE.match(line.strip()):
            one_way_paths.add(one_way.group(1))
            if one_way.group(2) == "nodeletion":
                held.append(one_way.group(1))
            else:
                waiting += 1
    first_sync = any(FIRST_SYNC_TEXT in line for line in lines)
    connected = any(line.startswith(CONNECTED_PREFIX) for line in lines)

    hostkey = _first_match(lines, HOSTKEY_RES)
    unreachable = None if connected else _first_match(lines, UNREACHABLE_RES)
    ssh_error = hostkey or unreachable or _first_match(lines, SSH_OTHER_RES)
    ok = exit_code in (0, 1) and fatal is None and finished
    if ok:
        # Skips that are all one-way (waiting for the peer's pull, or held by the brake) are this run's
        # normal outcome; any other skip is a real one.
        other_skips = exit_code == 1 and skipped > waiting + len(held)
        kind = "skipped" if other_skips else "conflict" if conflicts else "ok"
    elif hostkey:
        kind = "hostkey"
    elif fatal and MARKER_RE.search(fatal):
        kind = "marker"
    elif unreachable:
        kind = "unreachable"
    else:
        kind = "failed"
    disk_full = _first_match(lines, (DISK_FULL_RE,))
    if disk_full and kind not in ("hostkey", "marker", "unreachable"):
        kind = "diskfull"  # also when Unison finished: the paths it could not write wait for room

    error: str | None
    if ssh_error:
        # ssh says why; Unison only says "Lost connection with the server".
        error = f"{ssh_error} ({fatal})" if fatal else ssh_error
    elif fatal:
        error = fatal
    else:
        emptied = next((line for line in lines if EMPTIED_RE.match(line)), None)
        path_errors = [
            _joined(lines, i)
            for i, line in enumerate(lines)
            if PATH_ERROR_RE.match(line.strip()) and not _one_way_line(line.strip(), one_way_paths)
        ]
        error = emptied or (path_errors[-1] if path_errors else None)
        if error is None and not ok:
            error = next((line.strip() for line in reversed(lines) if line.strip()), None)
            error = error or f"unison exited with code {exit_code}"
    if kind == "diskfull":
        # Unison names the file it could not write on the line before the system's error.
        errors = [_joined(lines, i) for i, line in enumerate(lines) if PATH_ERROR_RE.match(line.strip())]
        error = "disk full: " + next((e for e in reversed(errors) if DISK_FULL_RE.search(e)), disk_full or "")
    return UnisonRun(
        kind=kind,
        ok=ok,
        exit_code=exit_code,
        transferred=transferred,
        skipped=skipped,
        failed=failed,
        conflicts=conflicts,
        first_sync=first_sync,
        error=error,
        waiting=waiting,
        held=tuple(held),
        pulled=_pulled(lines),
    )


def worst_kind(kinds: Sequence[str]) -> str:
    """The most severe of `kinds` (see KINDS); unknown kinds count as "failed"."""
    ranked = [kind if kind in KINDS else "failed" for kind in kinds]
    return max(ranked, key=KINDS.index) if ranked else "ok"


def iso_utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def timestamp(value: object) -> float | None:
    """Unix time of an ISO 8601 UTC time as the status records write it ("...Z"); None if not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo else None


@dataclass(frozen=True)
class EdgeStatus:
    """What a node knows about one of its edges after its latest run; the status file holds `as_dict()`."""

    peer: str
    last_start: str
    last_finish: str
    last_success: str | None
    result: str
    files_changed: int
    conflicts: tuple[str, ...] = field(default=())
    error: str | None = None
    duration_s: float = 0.0
    first_sync: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "last_start": self.last_start,
            "last_finish": self.last_finish,
            "last_success": self.last_success,
            "result": self.result,
            "files_changed": self.files_changed,
            "conflicts": list(self.conflicts),
            "error": self.error,
            "duration_s": self.duration_s,
            "first_sync": self.first_sync,
        }


def merge_status(
    previous: Mapping[str, Any] | None, peer: str, started: float, finished: float, runs: Sequence[UnisonRun]
) -> dict[str, Any]:
    """The edge's new status record from this run's folder results and the previous record (if any).

    `last_success` moves only when every folder synced; otherwise the previous one is kept, so a status
    reader can tell how stale the edge is. Conflicts are named `folder/path` when the runs carry folders.
    """
    if not runs:
        raise ValueError(f"edge {peer}: no folder results to record")
    succeeded = all(run.ok for run in runs)
    kept = previous.get("last_success") if isinstance(previous, Mapping) else None
    conflicts = tuple(
        f"{run.folder}/{path}" if run.folder else path for run in runs for path in run.conflicts
    )
    status = EdgeStatus(
        peer=peer,
        last_start=iso_utc(started),
        last_finish=iso_utc(finished),
        last_success=iso_utc(finished) if succeeded else kept if isinstance(kept, str) else None,
        result=worst_kind([run.kind for run in runs]),
        files_changed=sum(run.transferred for run in runs),
        conflicts=conflicts,
        error=next((run.error for run in runs if run.error), None),
        duration_s=round(max(finished - started, 0.0), 3),
        first_sync=any(run.first_sync for run in runs),
    )
    return status.as_dict()


def summarize(edges: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Counts over edge records: edges, one per kind, files_changed, conflicts."""
    summary = {"edges": len(edges), **dict.fromkeys(KINDS, 0), "files_changed": 0, "conflicts": 0}
    for edge in edges:
        summary[edge["result"]] = summary.get(edge["result"], 0) + 1
        summary["files_changed"] += edge["files_changed"]
        summary["conflicts"] += len(edge["conflicts"])
    return summary


def render_table(node: str, edges: Sequence[Mapping[str, Any]], summary: Mapping[str, int]) -> str:
    """A short human table of edge records and their summary."""
    row = "{:<16} {:<11} {:>5} {:>9} {:>8}  {}"
    lines = [row.format("PEER", "RESULT", "FILES", "CONFLICTS", "SECONDS", "ERROR")]
    for edge in edges:
        counts = (edge["files_changed"], len(edge["conflicts"]), f"{edge['duration_s']:.1f}")
        lines.append(row.format(edge["peer"], edge["result"], *counts, edge["error"] or "-"))
    kinds = ", ".join(f"{summary[kind]} {kind}" for kind in KINDS if summary.get(kind))
    lines.append(
        f"{node}: {summary['edges']} edges ({kinds or 'none run'}), "
        f"{summary['files_changed']} files changed, {summary['conflicts']} conflicts"
    )
    return "\n".join(lines)
