"""Run the project's playbooks through ansible-runner, the way meshctl and the demo do."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ansible_runner
import yaml
from rich.console import Console

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_config import MeshConfigError, parse_mesh
from replimesh.collection import CollectionError, collections_root, playbook_path
from replimesh.progress import Progress

LAB_INVENTORY = Path(".lab/lab.mesh.yml")  # the lab's mesh file: there while a lab is up here
SITE_INVENTORY = Path("inventory")  # where an operator keeps the mesh file
EXAMPLE_MESH = "example.mesh.yml"  # the documented example in inventory/, never a default
LOGS_KEPT = 50


# meshctl's exit codes: 0 success (healthy), then these.
UNHEALTHY = 1  # status/verify found a problem, or a playbook failed on a node
BAD_INPUT = 2  # usage or bad input (the mesh file, -e, an option): nothing was run
NOT_CHECKED = 3  # could not check: ansible-playbook could not run, or no node answered


def ansible_env() -> dict[str, str]:
    """The settings every Ansible command meshctl starts runs with: the project's ansible.cfg (shipped in
    this package) and the collection, wherever it is."""
    return {
        "ANSIBLE_CONFIG": str(Path(__file__).resolve().parent / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(collections_root()),
    }


class PlaybookError(Exception):
    """A playbook could not produce its report; the message says why and where its log is."""

    exit_code = UNHEALTHY


class BadInputError(PlaybookError):
    """The operator's input is wrong (the mesh file, -e, an option); found before any playbook runs."""

    exit_code = BAD_INPUT


class NotCheckedError(PlaybookError):
    """The mesh could not be checked or reached: ansible-playbook did not run to the end."""

    exit_code = NOT_CHECKED


def resolve_inventory(inventory: Path | None) -> Path:
    """The mesh file given with -i; else the lab's while a lab is up here; else the one mesh file in
    inventory/ (the example aside). Anything ambiguous is an error that says what to pass."""
    if inventory is not None:
        if not inventory.exists():
            raise BadInputError(f"{inventory}: no such mesh file")
        return inventory
    if LAB_INVENTORY.is_file():
        return LAB_INVENTORY
    found = sorted(p for p in SITE_INVENTORY.glob("*.mesh.yml") if p.name != EXAMPLE_MESH)
    if len(found) == 1:
        return found[0]
    if not found:
        raise BadInputError(
            f"no mesh file: no lab is up here ({LAB_INVENTORY}) and {SITE_INVENTORY}/ has no *.mesh.yml"
            f" besides {EXAMPLE_MESH}; pass -i MESH_FILE"
        )
    names = ", ".join(map(str, found))
    raise BadInputError(f"several mesh files in {SITE_INVENTORY}/ ({names}): pick one with -i")


class _MeshFileLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice (as ansible.cfg makes Ansible do) and reads a tagged value
    (!unsafe, !vault) as its plain value: the inventory plugin, not this check, interprets tags."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_MeshFileLoader.add_multi_constructor("!", _tagged)


def _constructed_options() -> tuple[str, ...]:
    """The top-level keys the plugin takes from ansible.builtin.constructed (compose, keyed_groups, ...)."""
    from ansible.plugins.doc_fragments.constructed import ModuleDocFragment

    return tuple(yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"])


def check_mesh_file(path: Path) -> Path:
    """Refuse, before any playbook runs, a mesh file that is empty, is not YAML, or that the inventory
    plugin would refuse (its own message): Ansible would run an empty one on no hosts and succeed."""
    try:
        with path.open(encoding="utf-8") as handle:  # a stream, so that YAML errors name the file
            data = yaml.load(handle, Loader=_MeshFileLoader)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read the mesh file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise BadInputError(f"{path}: not a valid mesh file: {exc}") from None
    if data is None:
        raise BadInputError(
            f"{path}: the mesh file is empty: it needs plugin: replimesh.mesh.replimesh_mesh, folders and"
            f" nodes (start from {SITE_INVENTORY / EXAMPLE_MESH})"
        )
    try:
        parse_mesh(data, extra_keys=_constructed_options())
    except MeshConfigError as exc:
        raise BadInputError(f"{path}: {exc}") from None
    return path


def mesh_file(inventory: Path | None) -> Path:
    """The mesh file to run on (see resolve_inventory), checked (see check_mesh_file)."""
    return check_mesh_file(resolve_inventory(inventory))


def log_root() -> Path:
    """Where meshctl keeps the full Ansible log of each run ($REPLIMESH_LOG_DIR, else ~/.cache)."""
    configured = os.environ.get("REPLIMESH_LOG_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "replimesh" / "logs"


def _new_log(playbook: str) -> Path:
    """A fresh log file name for this run; only the newest LOGS_KEPT logs are kept."""
    root = log_root()
    root.mkdir(parents=True, exist_ok=True)
    for old in sorted(root.glob("*.log"))[:-LOGS_KEPT]:
        old.unlink(missing_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return root / f"{stamp}-{os.getpid()}-{Path(playbook).stem}.log"


def run_report_playbook(
    playbook: str, inventory: Path, output_var: str, extravars: dict[str, Any]
) -> dict[str, Any]:
    """Run a playbook that writes a JSON report to the path in `output_var`, and return the report.

    Such playbooks fail on purpose when the mesh is not as it should be, but only after writing the
    report: the report, not the exit code, is what counts here.
    """
    with tempfile.TemporaryDirectory(prefix=f"meshctl-{Path(playbook).stem}-") as work:
        output = Path(work) / "report.json"
        result = run_playbook(playbook, inventory, extravars={**extravars, output_var: str(output)})
        try:
            return json.loads(output.read_text())
        except (OSError, ValueError):
            raise NotCheckedError(
                f"{playbook} ended ({result.status}, exit {result.rc}) without a report; see {result.log}"
            ) from None


@dataclass(frozen=True)
class PlaybookResult:
    status: str
    rc: int
    stats: dict[str, Any]
    log: Path
    events: tuple[dict[str, Any], ...]
    failed_hosts: tuple[str, ...] = ()

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

    def failure(self, playbook: str) -> str:
        """A short reason for a failed run: the hosts that failed and why, and where the log is."""
        hosts = "; ".join(self.failed_hosts) or f"ansible-playbook {self.status} (exit {self.rc})"
        return f"{playbook} failed: {hosts}. Full log: {self.log}"

    def error(self, playbook: str) -> PlaybookError:
        """The failure as meshctl exits with it: nodes failed (1), or ansible-playbook did not run to
        the end with no node to blame (3)."""
        kind = PlaybookError if self.failed_hosts else NotCheckedError
        return kind(self.failure(playbook))


def run_playbook(
    playbook: str,
    inventory: Path,
    *,
    extravars: dict[str, Any] | None = None,
    limit: str | None = None,
    progress: bool = True,
    check: bool = False,
    diff: bool = False,
) -> PlaybookResult:
    """Run `playbook` (an operator's entry point: bootstrap.yml, add-node.yml, ...; the collection's
    playbook of that name) through ansible-runner and return its result; `check`
    and `diff` are ansible-playbook's --check and --diff.

    A live per-host view goes to stderr while it runs (see replimesh.progress); the full Ansible output
    is kept in a log file under log_root(), named in every failure message.
    """
    try:
        path = playbook_path(playbook)
    except CollectionError as err:
        raise NotCheckedError(str(err)) from err
    log = _new_log(playbook)
    view = Progress(f"{playbook} on {inventory}") if progress else None
    with tempfile.TemporaryDirectory(prefix="meshctl-runner-") as private:
        runner = ansible_runner.run(
            private_data_dir=private,
            project_dir=str(path.parent),
            playbook=str(path),
            inventory=str(inventory.resolve()),
            extravars=extravars or {},
            limit=limit,
            cmdline=" ".join(flag for flag, on in (("--check", check), ("--diff", diff)) if on) or None,
            quiet=True,
            event_handler=view,
            envvars={
                **ansible_env(),
                "ANSIBLE_FORCE_COLOR": "0",
                # ansible-runner starts `ansible-playbook` from PATH: this venv's, even when meshctl was
                # started by its path with the venv not on PATH.
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            },
        )
        log.write_text(runner.stdout.read() if runner.stdout else "")
        events = tuple(runner.events)
        stats = runner.stats or {}
    failed = tuple(view.failures()) if view else ()
    if view is not None:
        view.close(runner.status)
    return PlaybookResult(runner.status, runner.rc, stats, log, events, failed)


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
