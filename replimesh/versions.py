"""meshctl versions / restore: the versions the nodes keep of a file (versions.yml), and putting one back
(restore.yml: the node that keeps it writes it into its folder, then a round carries it everywhere)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_versions import VersionsError, check_path
from replimesh.operate import show_sync, sync_edges
from replimesh.playbooks import BadInputError, NotCheckedError, run_playbook


def _request(path: str, folder: str | None) -> dict[str, str]:
    """The playbooks' variables, once the path is one inside a folder (checked before any node is asked)."""
    try:
        check_path(path, ".replimesh-folder")
    except VersionsError as exc:
        raise BadInputError(str(exc)) from None
    return {"versions_path": path, **({"versions_folder": folder} if folder else {})}


def versions(inventory: Path, path: str, folder: str | None) -> dict[str, Any]:
    """{path, nodes: {node: {current, versions}}, failed}: what every node that answered keeps."""
    result = run_playbook("versions.yml", inventory, extravars=_request(path, folder))
    found = result.task_results("mesh_versions")
    if not found:
        raise result.error("versions.yml") if not result.ok else NotCheckedError("no node answered")
    nodes = {
        node: {"current": res.get("current"), "versions": res.get("versions", [])}
        for node, res in found.items()
    }
    return {"path": next(iter(found.values())).get("path", path), "nodes": dict(sorted(nodes.items())),
            "failed": list(result.failed_hosts)}  # fmt: skip


def newest_holder(report: dict[str, Any], number: int) -> str | None:
    """The node whose version ``number`` is the newest content among the nodes that keep one."""
    held = [
        (node["versions"][number - 1]["mtime"], name)
        for name, node in report["nodes"].items()
        if len(node["versions"]) >= number
    ]
    return max(held)[1] if held else None


def _when(mtime: float) -> str:
    return datetime.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M:%S")


def _row(entry: dict[str, Any]) -> str:
    return f"{entry['sha256'][:12]} {entry['size']:>10} {_when(entry['mtime'])}"


def lines(report: dict[str, Any]) -> list[str]:
    """The report for a person: per node, the file now, then each kept version (newest first)."""
    out = [f"versions of {report['path']} (sha256, bytes, modified):"]
    for name, node in report["nodes"].items():
        out.append(f"{name}: now {_row(node['current']) if node['current'] else 'missing'}")
        out += [f"{name}: {kept['version']:>3} {_row(kept)}" for kept in node["versions"]]
    out += [f"failed: {line}" for line in report["failed"]]
    return out


def run_versions(
    inventory: Path, path: str, folder: str | None, as_json: bool, echo: Callable[[str], Any]
) -> int:
    """`meshctl versions`: 0 when every node answered, 1 when one failed."""
    report = versions(inventory, path, folder)
    if as_json:
        echo(json.dumps(report, indent=2))
    else:
        for line in lines(report):
            echo(line)
    return 1 if report["failed"] else 0


def run_restore(
    inventory: Path,
    path: str,
    folder: str | None,
    number: int,
    source: str | None,
    echo: Callable[[str], Any],
) -> int:
    """`meshctl restore`: put version ``number`` back from ``source`` (default: the node whose version
    ``number`` is the newest), then a round; 0 when every edge synced."""
    if source is None:
        source = newest_holder(versions(inventory, path, folder), number)
        if source is None:
            raise BadInputError(f"no node keeps a version {number} of {path}: see meshctl versions {path}")
    extravars = {**_request(path, folder), "node": source, "restore_version": str(number)}
    result = run_playbook("restore.yml", inventory, extravars=extravars)
    if not result.ok and not result.task_results("mesh_sync"):
        raise result.error("restore.yml")
    echo(f"{source}: version {number} of {path} written back; the round:")
    edges = sync_edges(result)
    show_sync(edges, echo)
    if not result.ok:
        raise result.error("restore.yml")
    return 0
