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
) -> PlaybookResult:
    """Run one operator playbook; raise PlaybookError with a short reason when it failed."""
    result = run_playbook(playbook, mesh_file(inventory), extravars=extravars, limit=limit)
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


def show_sync(rows: list[dict[str, Any]], echo: Callable[[str], Any]) -> None:
    """The edges of a round: a table on a terminal, one line per edge otherwise."""
    console = Console()
    bad = [row for row in rows if row.get("result") not in GOOD_EDGE_RESULTS]
    files = sum(int(row.get("files_changed") or 0) for row in rows)
    conflicts = sum(len(row.get("conflicts") or []) for row in rows)
    synced = f"edges synced: {len(rows) - len(bad)} of {len(rows)}"
    headline = f"{synced}; files moved: {files}; conflicts: {conflicts}"
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
