"""Run the project's playbooks through ansible-runner, the way meshctl and the demo do."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ansible_runner
from rich.console import Console

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INVENTORY = Path(".lab/lab.mesh.yml")  # the lab's mesh file, when a lab is up here


class PlaybookError(Exception):
    """A playbook could not produce its report; the message says why and where its log is."""


def resolve_inventory(inventory: Path | None) -> Path:
    """The mesh file given with -i, else the lab's; a clear error when there is neither."""
    if inventory is None:
        if not DEFAULT_INVENTORY.is_file():
            raise PlaybookError(f"no mesh file given and no {DEFAULT_INVENTORY} here: pass -i MESH_FILE")
        return DEFAULT_INVENTORY
    if not inventory.is_file():
        raise PlaybookError(f"{inventory}: no such mesh file")
    return inventory


def run_report_playbook(
    playbook: str, inventory: Path, output_var: str, extravars: dict[str, Any]
) -> dict[str, Any]:
    """Run a playbook that writes a JSON report to the path in `output_var`, and return the report.

    Such playbooks fail on purpose when the mesh is not as it should be, but only after writing the
    report: the report, not the exit code, is what counts here.
    """
    work = Path(tempfile.mkdtemp(prefix=f"meshctl-{Path(playbook).stem}-"))
    output = work / "report.json"
    result = run_playbook(
        playbook, inventory, extravars={**extravars, output_var: str(output)}, quiet=True, log_dir=work
    )
    try:
        report = json.loads(output.read_text())
    except (OSError, ValueError):
        raise PlaybookError(
            f"{playbook} ended ({result.status}, exit {result.rc}) without a report; see {result.log}"
        ) from None
    shutil.rmtree(work, ignore_errors=True)
    return report


@dataclass(frozen=True)
class PlaybookResult:
    status: str
    rc: int
    stats: dict[str, Any]
    log: Path

    events: tuple[dict[str, Any], ...]

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def task_results(self, module: str) -> dict[str, dict[str, Any]]:
        """host -> the result of the last task that ran `module` on it."""
        results: dict[str, dict[str, Any]] = {}
        for event in self.events:
            data = event.get("event_data", {})
            if event.get("event") == "runner_on_ok" and data.get("task_action", "").endswith(module):
                results[data["host"]] = data.get("res", {})
        return results


def run_playbook(
    playbook: str,
    inventory: Path,
    *,
    extravars: dict[str, Any] | None = None,
    quiet: bool = False,
    log_dir: Path | None = None,
) -> PlaybookResult:
    """Run `playbook` (a root-level entry point) and return its result with the runner's events.

    The full Ansible output is kept in a file under `log_dir` (a temp dir by default) so a short
    failure message can point at it.
    """
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="meshctl-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    runner = ansible_runner.run(
        private_data_dir=str(log_dir),
        project_dir=str(PROJECT_ROOT),
        playbook=str(PROJECT_ROOT / playbook),
        inventory=str(inventory.resolve()),
        extravars=extravars or {},
        quiet=quiet,
        envvars={
            "ANSIBLE_CONFIG": str(PROJECT_ROOT / "ansible.cfg"),
            "ANSIBLE_FORCE_COLOR": "0",
            # ansible-runner starts `ansible-playbook` from PATH: this venv's, even when meshctl was
            # started by its path with the venv not on PATH.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        },
    )
    stdout = log_dir / "ansible.log"
    stdout.write_text(runner.stdout.read() if runner.stdout else "")
    return PlaybookResult(runner.status, runner.rc, runner.stats or {}, stdout, tuple(runner.events))


def print_report(
    report: dict[str, Any],
    as_json: bool,
    echo: Callable[[str], Any],
    table: Callable[[dict[str, Any], Console], None],
    lines: Callable[[dict[str, Any]], Iterable[str]],
) -> int:
    """Show a meshctl report as JSON, as a table on a terminal, or as plain lines; return its exit code."""
    if as_json:
        echo(json.dumps(report, indent=2))
    else:
        console = Console()
        if console.is_terminal:
            table(report, console)
        else:
            for line in lines(report):
                echo(line)
    return int(report["exit_code"])
