"""meshctl: the operator's command line. Thin: every command hands over to the package or to Ansible."""

from __future__ import annotations

import importlib.metadata
import json
import os
import tomllib
from pathlib import Path
from typing import Annotated

import typer

from replimesh.cli_common import Check, Diff, ExtraVars, Inventory, LabDir, Limit
from replimesh.cli_common import exit_with as _exit_with
from replimesh.cli_common import fail as _fail
from replimesh.cli_common import log as _log
from replimesh.cli_files import add_file_commands
from replimesh.cli_lab import lab_app
from replimesh.lab.errors import LabError
from replimesh.lab.lab import Lab

EXIT_CODES = (
    "Exit codes: 0 success (healthy); 1 unhealthy (status or verify found a problem, a playbook failed on a"
    " node); 2 usage or bad input (the mesh file, -e, an option), nothing was run; 3 could not check"
    " (ansible-playbook could not run, or no node answered)."
)
app = typer.Typer(help="Operate a replimesh mesh.", epilog=EXIT_CODES, no_args_is_help=True,
                  pretty_exceptions_enable=False)  # fmt: skip
app.add_typer(lab_app, name="lab")


def package_version() -> str:
    """The installed package's version; in a checkout that was never installed, pyproject.toml's."""
    try:
        return importlib.metadata.version("replimesh")
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        with pyproject.open("rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"meshctl {package_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Operate a replimesh mesh."""


@app.command("soak")
def soak(
    minutes: Annotated[float, typer.Option("--minutes", min=0.1, help="How long the chaos runs.")] = 5.0,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Replay a run (default: a new seed, printed).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    lab_dir: LabDir = Path(".lab"),
) -> None:
    """A chaos soak on the lab's mesh (meshctl lab up 5 && meshctl up first): random writes, edits, renames,
    deletions and concurrent edits under paused, cut-off, killed, full and rebooted nodes; exit 0 only when
    every replica ends identical, meshctl verify agrees, and no content ever written is lost."""
    import random as _random

    from replimesh.soak import render
    from replimesh.soak import soak as run_soak

    chosen = seed if seed is not None else _random.SystemRandom().randrange(1_000_000)
    _log(f"soak: seed {chosen} (replay with --seed {chosen})")
    try:
        result = run_soak(Lab(lab_dir, log=_log), minutes, chosen, _log)
    except (LabError, RuntimeError) as exc:
        _fail(str(exc), 3)
    typer.echo(json.dumps(result, indent=2) if as_json else render(result))
    raise typer.Exit(0 if result["ok"] else 1)


@app.command("demo")
def demo(
    lab_dir: LabDir = Path(".lab"),
    nodes: Annotated[int, typer.Option(help="Lab hosts in the demo mesh.")] = 5,
    keep: Annotated[bool, typer.Option(help="Leave the lab up afterwards.")] = False,
) -> None:
    """Bring up a lab mesh, write a file on node1, show it byte-identical on every node."""
    from replimesh.demo import run_demo

    try:
        ok = run_demo(lab_dir, nodes, typer.echo, keep)
    except LabError as exc:
        _fail(str(exc))
    raise typer.Exit(0 if ok else 1)


def _step(
    playbook: str,
    inventory: Path | None,
    extravars: dict[str, str],
    limit: str | None = None,
    check: bool = False,
    diff: bool = False,
) -> None:
    from replimesh.operate import run_step
    from replimesh.playbooks import PlaybookError

    try:
        result = run_step(playbook, inventory, extravars, limit, check=check, diff=diff)
    except PlaybookError as exc:
        _fail(str(exc), exc.exit_code)
    typer.echo(f"{playbook}: {'checked, nothing changed' if check else 'done'}; full log: {result.log}")


def _extravars(pairs: list[str] | None, **fixed: str) -> dict[str, str]:
    from replimesh.operate import parse_extravars
    from replimesh.playbooks import PlaybookError

    try:
        return {**parse_extravars(pairs or []), **fixed}
    except PlaybookError as exc:
        _fail(str(exc), exc.exit_code)


@app.command("up")
def up(
    inventory: Inventory = None,
    extra_vars: ExtraVars = None,
    limit: Limit = None,
    check: Check = False,
    diff: Diff = False,
) -> None:
    """Bootstrap (or re-converge) every node of the mesh: bootstrap.yml. Safe to re-run."""
    _step("bootstrap.yml", inventory, _extravars(extra_vars), limit, check, diff)


@app.command("add")
def add(
    node: Annotated[str, typer.Argument(help="The node to join, as already written in the mesh file.")],
    inventory: Inventory = None,
    extra_vars: ExtraVars = None,
    check: Check = False,
    diff: Diff = False,
) -> None:
    """Join one node without disturbing the others: add-node.yml."""
    _step("add-node.yml", inventory, _extravars(extra_vars, node=node), check=check, diff=diff)


@app.command("remove")
def remove(
    node: Annotated[str, typer.Argument(help="The member to remove (its key is revoked everywhere).")],
    inventory: Inventory = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    ungraceful: Annotated[
        bool, typer.Option("--ungraceful", help="The node is dead or gone: remove it without reaching it.")
    ] = False,
    extra_vars: ExtraVars = None,
    check: Check = False,
    diff: Diff = False,
) -> None:
    """Cut one node off everywhere at once: remove-node.yml (its data stays unless -e wipe_data=true)."""
    if not yes and not check:
        typer.confirm(f"Remove {node} from the mesh, revoking its key on every other node?", abort=True)
    fixed = {"node": node, "skip_confirmation": "true"}
    if ungraceful:
        fixed["allow_ungraceful_removal"] = "true"
    _step("remove-node.yml", inventory, _extravars(extra_vars, **fixed), check=check, diff=diff)


@app.command("uninstall")
def uninstall(
    inventory: Inventory = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    remove_versions: Annotated[
        bool, typer.Option("--remove-versions", help="Also remove the versions each node kept.")
    ] = False,
    data_owner: Annotated[
        str | None,
        typer.Option("--data-owner", help="Hand the mesh user's files in the folders to this account."),
    ] = None,
    limit: Limit = None,
    extra_vars: ExtraVars = None,
    check: Check = False,
    diff: Diff = False,
) -> None:
    """Take replimesh off the nodes, leaving the synced folders (and the kept versions): uninstall.yml."""
    if not yes and not check:
        typer.confirm("Remove replimesh from the mesh's nodes? The synced folders stay.", abort=True)
    fixed = {"skip_confirmation": "true", "remove_versions": str(remove_versions).lower()}
    if data_owner:
        fixed["data_owner"] = data_owner
    _step("uninstall.yml", inventory, _extravars(extra_vars, **fixed), limit, check, diff)


@app.command("rotate-keys")
def rotate_keys(
    nodes: Annotated[
        list[str] | None, typer.Argument(help="The nodes to give new mesh keys (default: every node).")
    ] = None,
    inventory: Inventory = None,
    allow_unreachable: Annotated[
        bool, typer.Option("--allow-unreachable", help="Rotate the others when a node does not answer.")
    ] = False,
    extra_vars: ExtraVars = None,
) -> None:
    """New mesh keys without a moment where syncing breaks: rotate-keys.yml (two-phase: peers accept the
    old and the new key while a node switches, then drop the old one)."""
    fixed = {"rotate_nodes": ",".join(nodes)} if nodes else {}
    if allow_unreachable:
        fixed["rotate_allow_unreachable"] = "true"
    _step("rotate-keys.yml", inventory, _extravars(extra_vars, **fixed))


@app.command("sync")
def sync(
    inventory: Inventory = None,
    limit: Annotated[str | None, typer.Option("--limit", "-l", help="Only these nodes' edges.")] = None,
    allow_deletions: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-deletions",
            metavar="NODE",
            help="This node applies, this once, the deletions its mass-deletion brake stopped (repeat).",
        ),
    ] = None,
    extra_vars: ExtraVars = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the round as JSON, every pull in it.")
    ] = False,
) -> None:
    """A full-mesh round now (sync.yml): every node pulls from its peers; shows every edge's result. Exit 1
    when an edge did not sync (a brake included), 3 when no node reported a pull."""
    from replimesh.operate import show_sync, sync_edges, sync_summary
    from replimesh.playbooks import NOT_CHECKED, UNHEALTHY, PlaybookError, mesh_file, run_playbook

    fixed = {"allow_deletions": ",".join(allow_deletions)} if allow_deletions else {}
    try:
        result = run_playbook("sync.yml", mesh_file(inventory),
                              extravars=_extravars(extra_vars, **fixed), limit=limit)  # fmt: skip
    except PlaybookError as exc:
        _fail(str(exc), exc.exit_code)
    edges = sync_edges(result)
    if as_json:
        typer.echo(json.dumps(sync_summary(edges), indent=2))
    else:
        show_sync(edges, typer.echo)
    if not result.ok:
        _fail(result.failure("sync.yml"), UNHEALTHY if edges else NOT_CHECKED)


@app.command("topology")
def topology(
    inventory: Inventory = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Draw it: mesh.svg, .png, .pdf or .dot.")
    ] = None,
    health: Annotated[
        bool, typer.Option("--health/--no-health", help="Colour by health (runs status.yml).")
    ] = True,
) -> None:
    """The mesh's nodes and edges (who starts each), coloured by health; --out draws the picture."""
    from replimesh.playbooks import mesh_file
    from replimesh.status import status as status_report
    from replimesh.topology import run as run_topology

    _exit_with(lambda: run_topology(mesh_file(inventory), out, health, status_report, typer.echo))


@app.command("verify")
def verify(
    inventory: Inventory = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    allow_unreachable: Annotated[
        bool, typer.Option("--allow-unreachable", help="An unreachable node alone does not fail the check.")
    ] = False,
) -> None:
    """Are all replicas identical? Exit 0 only when every reachable replica is and every node answered,
    3 when no node's digest came back."""
    from replimesh.verify import VerifyError, run

    try:
        code = run(inventory, as_json, allow_unreachable, typer.echo)
    except VerifyError as exc:
        _fail(str(exc), exc.exit_code)
    raise typer.Exit(code)


@app.command("status")
def status(
    inventory: Inventory = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    max_lag: Annotated[
        int, typer.Option("--max-lag", help="Seconds an edge's last success may be old and still healthy.")
    ] = 86400,
) -> None:
    """Is the whole mesh healthy? Nodes (reachable, Unison, markers, cron) and edges (last success, lag,
    files, conflicts, last error); exit 0 only when everything is, 3 when no node answered."""
    from replimesh.status import StatusError, run

    try:
        code = run(inventory, as_json, max_lag, typer.echo)
    except StatusError as exc:
        _fail(str(exc), exc.exit_code)
    raise typer.Exit(code)


# versions, restore, conflicts: replimesh/cli_files.py
add_file_commands(app)


@app.command("simulate")
def simulate(
    nodes: Annotated[int, typer.Option("--nodes", help="How many (made-up) nodes.")],
    degree: Annotated[int | None, typer.Option(help="Overlay k; default max(2, ceil(log2 N)).")] = None,
    kind: Annotated[str, typer.Option(help="overlay | full")] = "overlay",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Build a topology for N nodes and measure it: degrees, diameter, connectivity, churn per join/leave."""
    from replimesh.simulate import SimulateError, as_text
    from replimesh.simulate import as_json as report_json
    from replimesh.simulate import simulate as run_simulation

    try:
        report = run_simulation(nodes, degree, kind)
    except SimulateError as exc:
        _fail(str(exc))
    typer.echo(report_json(report) if as_json else as_text(report))


@app.command("bench")
def bench(
    nodes: Annotated[int, typer.Option(help="Lab hosts (the issue's figures are for 8).")] = 8,
    repeat: Annotated[
        int | None, typer.Option(help="Trials per small-file series (default 5, quick 2).")
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="Smaller sizes and counts: a smoke run of every phase.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Where results.json and RESULTS.md go.")] = Path("bench"),
    name: Annotated[str, typer.Option(help="Docker name prefix of the bench's own lab.")] = "rmbench",
    subnet: Annotated[
        str, typer.Option(help="The bench lab's /24, inside 172.31.0.0/16.")
    ] = "172.31.160.0/24",
    link_mbit: Annotated[
        int | None,
        typer.Option(help="Also run the large-file trials with every host's egress capped at this rate."),
    ] = None,
    fleet: Annotated[
        int, typer.Option(help="Hosts of the provisioning phase (bootstrap.yml run twice); 0: none.")
    ] = 16,
) -> None:
    """replimesh vs Syncthing on its own lab (made and removed here): results.json and RESULTS.md."""
    from replimesh.bench.run import run_bench

    try:
        code = run_bench(out, nodes, repeat, quick, name, subnet, _log, link_mbit, fleet)
    except ValueError as exc:
        _fail(str(exc), code=2)
    except LabError as exc:
        _fail(str(exc))
    raise typer.Exit(code)


def main() -> None:
    """meshctl's console entry (and `python -m replimesh`): the app, with a missing collection said in one
    line and exit 3 (could not check) rather than a traceback."""
    from replimesh.collection import CollectionError

    os.environ.setdefault("ANSIBLE_FORCE_COLOR", "0")
    try:
        app()
    except CollectionError as exc:
        typer.echo(f"meshctl: error: {exc}", err=True)
        raise SystemExit(3) from None
