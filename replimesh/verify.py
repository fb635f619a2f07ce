"""meshctl verify: are all replicas identical right now? verify.yml digests every node's folders; this
compares the digests with the core (mesh_plugins.module_utils.mesh_digest) and reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_digest import (
    cells,
    compare,
    exit_code,
    headline,
    render_lines,
)
from replimesh.playbooks import NOT_CHECKED, PlaybookError, mesh_file, print_report, run_report_playbook

TABLE_ROWS = 200  # diverging paths shown; --json has them all

VerifyError = PlaybookError


def gather(inventory: Path, allow_unreachable: bool) -> dict[str, Any]:
    """Run verify.yml (quiet) and return the digests it wrote: {digests, unreachable, failed}."""
    extravars = {"verify_allow_unreachable": allow_unreachable}
    return run_report_playbook("verify.yml", inventory, "verify_output", extravars)


def verify(inventory: Path, allow_unreachable: bool = False) -> dict[str, Any]:
    """The report over every node's digest, with `exit_code` and `seconds` (the whole run)."""
    started = time.monotonic()
    data = gather(inventory, allow_unreachable)
    report = compare(data.get("digests", {}), data.get("unreachable", {}), data.get("failed", {}))
    report["allow_unreachable"] = allow_unreachable
    report["exit_code"] = exit_code(report, allow_unreachable)
    if not report["nodes"]:
        report["exit_code"] = NOT_CHECKED  # no node's digest came back: nothing was compared
    report["seconds"] = round(time.monotonic() - started, 2)
    return report


def render_table(report: dict[str, Any], console: Console) -> None:
    """The report for a terminal: the headline, then a table of diverging paths and lists of the rest."""
    style = "green" if report["identical"] else "bold red"
    console.print(headline(report), style=style, markup=False, highlight=False)
    rows = [(name, item) for name, folder in report["folders"].items() for item in folder["diverging"]]
    if rows:
        table = Table("path", *report["nodes"], title="diverging paths (short sha256, or missing)")
        for name, item in rows[:TABLE_ROWS]:
            held = cells(item)
            table.add_row(f"{name}:{item['path']}", *(held.get(node, "") for node in report["nodes"]))
        console.print(table)
        if len(rows) > TABLE_ROWS:
            console.print(f"... and {len(rows) - TABLE_ROWS} more diverging paths (--json lists them all)")
    for line in render_lines(report, paths=False)[1:]:
        console.print(line, markup=False, highlight=False)


def run(inventory: Path | None, as_json: bool, allow_unreachable: bool, echo: Callable[[str], Any]) -> int:
    """`meshctl verify`: print the report (a table, plain lines when not on a terminal, or JSON); the exit
    code is 0 only when every reachable replica is identical and no node is unreachable (unless allowed),
    3 when no node's digest came back."""
    report = verify(mesh_file(inventory), allow_unreachable)
    return print_report(report, as_json, echo, render_table, lambda rep: render_lines(rep, limit=TABLE_ROWS))
