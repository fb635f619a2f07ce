"""meshctl status: is the whole mesh healthy, and if not, where? status.yml reads every node's status and
judges it with the core (mesh_plugins.module_utils.mesh_health); this shows the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_health import (
    DEFAULT_MAX_LAG,
    headline,
    render_lines,
)
from replimesh.playbooks import (
    NOT_CHECKED,
    UNHEALTHY,
    BadInputError,
    PlaybookError,
    mesh_file,
    print_report,
    run_report_playbook,
)

CONFLICTS_SHOWN = 5  # per edge in the table; --json has them all


StatusError = PlaybookError


def status(inventory: Path, max_lag: int = DEFAULT_MAX_LAG) -> dict[str, Any]:
    """Run status.yml (quiet) and return the report it wrote, with `exit_code` and `seconds`."""
    if max_lag <= 0:
        raise BadInputError(f"--max-lag must be a positive number of seconds (got {max_lag})")
    started = time.monotonic()
    report = run_report_playbook("status.yml", inventory, "status_output", {"status_max_lag": max_lag})
    report["exit_code"] = 0 if report["healthy"] else UNHEALTHY
    if not any(row["reachable"] for row in report["nodes"]):
        report["exit_code"] = NOT_CHECKED  # nothing was checked: no node answered
    report["seconds"] = round(time.monotonic() - started, 2)
    return report


def _mark(ok: bool, text: str) -> str:
    return f"[green]{escape(text)}[/]" if ok else f"[bold red]{escape(text)}[/]"


def _lag(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _rounds_cell(row: dict[str, Any]) -> str:
    """What schedules the rounds (cron or a systemd timer), and whether it runs them: the time of the last
    round, or NO ROUNDS."""
    if not row["cron"]:
        return _mark(row["mode"] != "cron", "MISSING")
    scheduler = "timer" if row.get("scheduler") == "timer" else "cron"
    if row.get("degraded"):
        return f"[yellow]{scheduler}, NO ROUNDS[/]"
    last = row.get("scheduled_round")
    return scheduler + (f", last round {escape(str(last)).replace('T', ' ')}" if last else "")


def render_table(report: dict[str, Any], console: Console) -> None:
    """Nodes, then edges, with what needs attention in red, then the problems."""
    style = "green" if report["healthy"] else "bold red" if report["problems"] else "bold yellow"
    console.print(headline(report), style=style, markup=False, highlight=False)
    nodes = Table("node", "reachable", "unison", "folder markers", "rounds", "watcher", title="nodes")
    for row in report["nodes"]:
        if not row["reachable"]:
            nodes.add_row(escape(row["node"]), _mark(False, "no"), "-", "-", "-", "-")
            continue
        markers = ", ".join(
            _mark(ok, f"{name} {'ok' if ok else 'MISSING'}") for name, ok in row["folders"].items()
        )
        nodes.add_row(
            escape(row["node"]),
            _mark(True, "yes"),
            _mark(bool(row["unison"]), row["unison"] or "missing"),
            markers or "-",
            _rounds_cell(row),
            _mark(row.get("watcher") != "down", row.get("watcher") or "-"),
        )
    console.print(nodes)
    edges = Table(title="edges")
    for column in ("edge", "result", "last success", "lag", "files"):
        edges.add_column(column, no_wrap=True)
    edges.add_column("conflicts", min_width=16, overflow="fold")
    edges.add_column("last error", min_width=12, overflow="fold")
    for row in report["edges"]:
        lag_ok = row["lag_s"] is not None and row["lag_s"] <= report["max_lag"]
        paths = row["conflicts"][:CONFLICTS_SHOWN]
        more = len(row["conflicts"]) - len(paths)
        conflicts = escape("\n".join(paths + ([f"... {more} more"] if more > 0 else []))) or "0"
        edges.add_row(
            escape(row["edge"]),
            _mark(row["result"] in ("ok", "conflict"), row["result"]),
            (row["last_success"] or "never").replace("T", " "),
            _mark(lag_ok, _lag(row["lag_s"])),
            str(row["files_changed"]),
            f"[yellow]{conflicts}[/]" if row["conflicts"] else conflicts,
            _mark(False, row["error"]) if row["error"] else "-",
        )
    console.print(edges)
    for problem in report["problems"]:
        console.print(f"problem: {problem}", style="red", markup=False, highlight=False)
    for reason in report.get("degraded") or ():
        console.print(f"degraded: {reason}", style="yellow", markup=False, highlight=False)


def run(inventory: Path | None, as_json: bool, max_lag: int, echo: Callable[[str], Any]) -> int:
    """`meshctl status`: print the report (a table, plain lines when not on a terminal, or JSON); the exit
    code is 0 only when the whole mesh is healthy, 3 when no node answered."""
    report = status(mesh_file(inventory), max_lag)
    return print_report(report, as_json, echo, render_table, render_lines)
