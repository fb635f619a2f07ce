"""meshctl up, add, remove, sync: the operator's playbooks, run through ansible-runner with live progress.

Each is exactly what `ansible-playbook -i MESH_FILE <playbook>.yml -e ...` does; meshctl adds the
per-host view, keeps the full log in a file and turns a failure into one short reason and a non-zero exit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from replimesh.playbooks import BadInputError, PlaybookResult, mesh_file, run_playbook

GOOD_EDGE_RESULTS = ("ok", "conflict", "busy", "skipped")


def parse_extravars(pairs: Sequence[str]) -> dict[str, str]:
    """`-e KEY=VALUE` options, as ansible-playbook takes them (values stay strings)."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not key.strip().isidentifier():
            raise BadInputError(f"-e {pair!r}: expected KEY=VALUE with KEY a variable name")
        found[key.strip()] = value
    return found


def run_step(
    playbook: str,
    inventory: Path | None,
    extravars: dict[str, Any],
    limit: str | None = None,
    check: bool = False,
    diff: bool = False,
) -> PlaybookResult:
    """Run one operator playbook; raise PlaybookError with a short reason when it failed."""
    result = run_playbook(
        playbook, mesh_file(inventory), extravars=extravars, limit=limit, check=check, diff=diff
    )
    if not result.ok:
        raise result.error(playbook)
    return result


def sync_edges(result: PlaybookResult) -> list[dict[str, Any]]:
    """One row per edge of a sync.yml run (from each node's mesh_sync result), unreachable nodes too."""
    rows: list[dict[str, Any]] = []
    for node, res in sorted(result.task_results("mesh_sync").items()):
        for edge in res.get("edges", []):
            rows.append({"node": node, **edge})
    return rows


def sync_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The round in numbers, and every pull: what `meshctl sync --json` prints."""
    return {
        "edges": rows,
        "edges_synced": sum(1 for row in rows if row.get("result") in GOOD_EDGE_RESULTS),
        "edges_total": len(rows),
        "files_moved": sum(int(row.get("files_changed") or 0) for row in rows),
        "conflicts": sum(len(row.get("conflicts") or []) for row in rows),
    }


def show_sync(rows: list[dict[str, Any]], echo: Callable[[str], Any]) -> None:
    """The edges of a round: a table on a terminal, one line per edge otherwise."""
    console = Console()
    summary = sync_summary(rows)
    bad = summary["edges_total"] - summary["edges_synced"]
    synced = f"edges synced: {summary['edges_synced']} of {summary['edges_total']}"
    headline = f"{synced}; files moved: {summary['files_moved']}; conflicts: {summary['conflicts']}"
    if not console.is_terminal:
        echo(headline)
        for row in rows:
            error = f" ({row['error']})" if row.get("error") else ""
            moved = row.get("files_changed", 0)
            echo(f"{row['node']} <- {row['peer']}: {row['result']}, {moved} files{error}")
        return
    table = Table("pull", "result", "files", "conflicts", "error", title="sync round")
    for row in rows:
        good = row.get("result") in GOOD_EDGE_RESULTS
        table.add_row(
            escape(f"{row['node']} <- {row['peer']}"),
            f"[green]{escape(row['result'])}[/]" if good else f"[bold red]{escape(row['result'])}[/]",
            str(row.get("files_changed", 0)),
            escape("\n".join(row.get("conflicts") or [])) or "0",
            escape(row.get("error") or "-"),
        )
    console.print(table)
    console.print(headline, style="green" if not bad else "bold red", markup=False, highlight=False)
