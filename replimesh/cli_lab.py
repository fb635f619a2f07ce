"""meshctl lab: the lab of real SSH hosts (Docker containers) the tests, the demo and the bench use."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from replimesh.cli_common import LabDir
from replimesh.cli_common import fail as _fail
from replimesh.cli_common import log as _log
from replimesh.lab.cleanup import down_all, down_named
from replimesh.lab.errors import LabError
from replimesh.lab.kinds import HostKind
from replimesh.lab.lab import FAULTS, MAX_NODES, Lab, LabConfig

lab_app = typer.Typer(help="A lab of real SSH hosts on this machine (Docker), for tests and the demo.",
                      no_args_is_help=True)  # fmt: skip


@lab_app.command("up")
def lab_up(
    count: Annotated[int, typer.Argument(help=f"How many hosts (1..{MAX_NODES}); an up lab only grows.")],
    lab_dir: LabDir = Path(".lab"),
    name: Annotated[str | None, typer.Option(help="Docker name prefix of this lab.")] = None,
    subnet: Annotated[str | None, typer.Option(help="The lab's /24, inside 172.31.0.0/16.")] = None,
    init: Annotated[
        str, typer.Option(help="The new hosts' init: none (a bare container) or systemd (PID 1, as a VM).")
    ] = "none",
    release: Annotated[
        str, typer.Option(help="The new hosts' Debian: bookworm (12) or trixie (13).")
    ] = "bookworm",
) -> None:
    """Start (or grow) the lab and write LAB_DIR/lab.mesh.yml. A host keeps the kind it was started as."""
    try:
        config = None
        if name or subnet:
            defaults = LabConfig()
            config = LabConfig(name=name or defaults.name, subnet=subnet or defaults.subnet)
        lab = Lab(lab_dir, config, log=_log)
        hosts = lab.up(count, default=HostKind(init, release))
    except LabError as exc:
        _fail(str(exc))
    for host in hosts:
        typer.echo(f"{host.name}\t{host.address}")
    typer.echo(f"inventory: {lab.inventory_path}")


@lab_app.command("down")
def lab_down(
    lab_dir: LabDir = Path(".lab"),
    all_labs: Annotated[bool, typer.Option("--all", help="Every replimesh lab here, leftovers too.")] = False,
    names: Annotated[list[str] | None, typer.Option("--name", help="A lab by name (repeatable).")] = None,
) -> None:
    """Remove every host and network of the lab, and the dockerd it started."""
    try:
        if all_labs:
            down_all(_log)
        elif names:
            down_named(names, _log)
        else:
            Lab(lab_dir, log=_log).down()
    except LabError as exc:
        _fail(str(exc))


@lab_app.command("exec", context_settings={"allow_interspersed_args": False})
def lab_exec(
    node: Annotated[str, typer.Argument(help="node1, node2, ...")],
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    lab_dir: LabDir = Path(".lab"),
) -> None:
    """Run a command on a lab host; exits with its exit code, prints its output."""
    if command[:1] == ["--"]:
        command = command[1:]
    try:
        proc = Lab(lab_dir, log=_log).exec(node, command)
    except LabError as exc:
        _fail(str(exc))
    sys.stdout.buffer.write(proc.stdout)
    sys.stderr.buffer.write(proc.stderr)
    raise typer.Exit(proc.returncode)


@lab_app.command("fault")
def lab_fault(
    action: Annotated[str, typer.Argument(help=" | ".join(FAULTS))],
    node: Annotated[str, typer.Argument(help="node1, node2, ...")],
    lab_dir: LabDir = Path(".lab"),
) -> None:
    """Inject a fault: pause/unpause (freeze), kill/start (crash), partition/heal (network cut)."""
    try:
        Lab(lab_dir, log=_log).fault(action, node)
    except LabError as exc:
        _fail(str(exc))


@lab_app.command("ls")
def lab_ls(lab_dir: LabDir = Path(".lab")) -> None:
    """List the lab's hosts: name, address, container, Debian release, init."""
    try:
        lab = Lab(lab_dir, log=_log)
        for host in lab.hosts():
            kind = lab.kind_of(host.name)
            typer.echo(
                f"{host.name}\t{host.address}\t{host.container}\t{lab.release_of(host.name)}\t{kind.init}"
            )
    except LabError as exc:
        _fail(str(exc))
