"""meshctl versions, restore and conflicts: what the nodes keep of a file, putting a version back, and
the conflict copies Unison kept (listed, and one file's ended by keeping one version everywhere)."""

from __future__ import annotations

from typing import Annotated

import typer

from replimesh.cli_common import Inventory, exit_with

Folder = Annotated[str | None, typer.Option("--folder", help="The folder (when the mesh has several).")]
FilePath = Annotated[str, typer.Argument(help="The file's path inside the folder, e.g. docs/notes.txt.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
KEEP_HELP = (
    "End PATH's conflict keeping this version everywhere: `current` (the file as it is) or one of its"
    " conflict copies' file names, as listed."
)


def versions(
    path: FilePath, folder: Folder = None, inventory: Inventory = None, as_json: AsJson = False
) -> None:
    """The versions every node keeps of a file (what its pulls overwrote or deleted), newest first."""
    from replimesh.playbooks import mesh_file
    from replimesh.versions import run_versions

    exit_with(lambda: run_versions(mesh_file(inventory), path, folder, as_json, typer.echo))


def restore(
    path: FilePath,
    version: Annotated[int, typer.Option("--version", min=1, help="Which kept version (1: the newest).")] = 1,
    source: Annotated[
        str | None, typer.Option("--from", help="The node whose kept version (default: the newest one's).")
    ] = None,
    folder: Folder = None,
    inventory: Inventory = None,
) -> None:
    """Put a kept version of a file back (what the folder holds there is kept too); a round carries it to
    every node."""
    from replimesh.playbooks import mesh_file
    from replimesh.versions import run_restore

    exit_with(lambda: run_restore(mesh_file(inventory), path, folder, version, source, typer.echo))


def conflicts(
    path: Annotated[
        str | None, typer.Argument(help="With --keep: the file whose conflict to end, inside the folder.")
    ] = None,
    keep: Annotated[str | None, typer.Option("--keep", help=KEEP_HELP)] = None,
    source: Annotated[
        str | None, typer.Option("--from", help="The node that holds the version (default: one that does).")
    ] = None,
    folder: Folder = None,
    inventory: Inventory = None,
    as_json: AsJson = False,
) -> None:
    """The conflict copies Unison kept on every node (exit 1 while there are any); with PATH --keep VERSION,
    keep one version of PATH everywhere: the other versions go among each node's kept versions."""
    from replimesh.conflicts import run_conflicts, run_resolve
    from replimesh.playbooks import mesh_file

    if (path is None) != (keep is None):
        exit_with(lambda: _usage("give both PATH and --keep VERSION to end a conflict, or neither to list"))
    if path is not None and keep is not None:
        exit_with(lambda: run_resolve(mesh_file(inventory), path, keep, folder, source, typer.echo))
    if source is not None:
        exit_with(lambda: _usage("--from goes with PATH --keep VERSION"))
    exit_with(lambda: run_conflicts(mesh_file(inventory), folder, as_json, typer.echo))


def _usage(message: str) -> int:
    from replimesh.playbooks import BadInputError

    raise BadInputError(message)


def add_file_commands(app: typer.Typer) -> None:
    app.command("versions")(versions)
    app.command("restore")(restore)
    app.command("conflicts")(conflicts)
