"""What meshctl's command modules share: the common options and how a command fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer

Inventory = Annotated[
    Path | None,
    typer.Option(
        "-i",
        "--inventory",
        envvar="REPLIMESH_INVENTORY",
        help="The mesh file. Default: .lab/lab.mesh.yml while a lab is up here, else the one"
        " *.mesh.yml in inventory/ (example.mesh.yml aside).",
    ),
]
ExtraVars = Annotated[
    list[str] | None,
    typer.Option("-e", "--extra-vars", help="KEY=VALUE handed to the playbook, as with ansible-playbook."),
]
Limit = Annotated[str | None, typer.Option("--limit", "-l", help="Only these nodes (Ansible's --limit).")]
Check = Annotated[
    bool, typer.Option("--check", help="Change nothing; report what would change (Ansible's check mode).")
]
Diff = Annotated[bool, typer.Option("--diff", help="Show the changes to files, as ansible-playbook --diff.")]
LabDir = Annotated[
    Path,
    typer.Option("--lab-dir", envvar="REPLIMESH_LAB_DIR", help="Where the lab keeps its key and inventory."),
]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"meshctl: error: {message}", err=True)
    raise typer.Exit(code)


def log(message: str) -> None:
    typer.echo(message, err=True)


def exit_with(command: Callable[[], int]) -> NoReturn:
    """Run a reporting command: exit with its code, or with a playbook failure's one-line reason."""
    from replimesh.playbooks import PlaybookError

    try:
        code = command()
    except PlaybookError as exc:
        fail(str(exc), exc.exit_code)
    raise typer.Exit(code)
