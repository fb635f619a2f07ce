"""meshctl conflicts: every conflict copy on every node (conflicts.yml), and ending one file's conflict by
keeping one version everywhere (resolve.yml: the node that holds it makes it the file, every node moves
the copies aside among its kept versions, then a round carries it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_versions import VersionsError, check_path
from replimesh.operate import show_sync, sync_edges
from replimesh.playbooks import UNHEALTHY, BadInputError, NotCheckedError, run_playbook

CURRENT = "current"
SHORT = 12  # hex digits of a sha256 shown to a person


def conflicts(inventory: Path) -> dict[str, Any]:
    """{files: [{folder, path, now: {node: sha256|None}, copies: [{copy, kind, sha256, size, nodes}]}],
    nodes, failed}: what every node that answered holds."""
    result = run_playbook("conflicts.yml", inventory)
    found = result.task_results("mesh_conflicts")
    if not found:
        raise result.error("conflicts.yml") if not result.ok else NotCheckedError("no node answered")
    files: dict[tuple[str, str], dict[str, Any]] = {}
    for node, res in sorted(found.items()):
        for item in res.get("conflicts", []):
            entry = files.setdefault((item["folder"], item["path"]), {"copies": {}, "now": {}})
            key = (item["copy"], item["sha256"])
            copy = entry["copies"].setdefault(key, {k: item[k] for k in ("copy", "kind", "sha256", "size")})
            copy.setdefault("nodes", []).append(node)
    for (folder, path), entry in files.items():
        for node, res in sorted(found.items()):
            now = (res.get("current") or {}).get(f"{folder}/{path}", "absent")
            if now != "absent":
                entry["now"][node] = now["sha256"] if now else None
    listed = [
        {"folder": folder, "path": path, "now": entry["now"], "copies": list(entry["copies"].values())}
        for (folder, path), entry in sorted(files.items())
    ]
    return {"files": listed, "nodes": sorted(found), "failed": list(result.failed_hosts)}


def lines(report: dict[str, Any]) -> list[str]:
    copies = sum(len(item["copies"]) for item in report["files"])
    out = [
        f"conflicts: {len(report['files'])} files, {copies} conflict copies on {len(report['nodes'])} nodes"
    ]
    for item in report["files"]:
        out.append(f"{item['folder']}/{item['path']}")
        nows: dict[str | None, list[str]] = {}
        for node, sha in item["now"].items():
            nows.setdefault(sha, []).append(node)
        for sha, nodes in nows.items():
            out.append(f"  {'current':<48} {(sha or 'missing')[:SHORT]:<12} {' '.join(nodes)}")
        for copy in item["copies"]:
            name = copy["copy"].rsplit("/", 1)[-1]
            out.append(
                f"  {name:<48} {(copy['sha256'] or copy['kind'])[:SHORT]:<12} {' '.join(copy['nodes'])}"
            )
    out += [f"failed: {line}" for line in report["failed"]]
    return out


def run_conflicts(inventory: Path, folder: str | None, as_json: bool, echo: Callable[[str], Any]) -> int:
    """`meshctl conflicts [--folder NAME]`: 0 when no node holds a conflict copy (in that folder) and every
    node answered, else 1."""
    report = conflicts(inventory)
    if folder is not None:
        report["files"] = [item for item in report["files"] if item["folder"] == folder]
    if as_json:
        echo(json.dumps(report, indent=2))
    else:
        for line in lines(report):
            echo(line)
    return UNHEALTHY if report["files"] or report["failed"] else 0


def keeper(report: dict[str, Any], folder: str | None, path: str, keep: str) -> str:
    """The node that holds the version to keep, when the operator named none: one of the nodes that hold
    it, all with the same content (else the operator must choose with --from)."""
    items = [i for i in report["files"] if i["path"] == path and (folder is None or i["folder"] == folder)]
    if not items:
        raise BadInputError(f"no node holds a conflict copy of {path}: see meshctl conflicts")
    if len(items) > 1:
        raise BadInputError(f"{path} has conflict copies in several folders: name one with --folder")
    (item,) = items
    if keep == CURRENT:
        held = {node: sha for node, sha in item["now"].items() if sha}
    else:
        held = {
            n: c["sha256"] for c in item["copies"] if c["copy"].rsplit("/", 1)[-1] == keep for n in c["nodes"]
        }
    if not held:
        names = ", ".join(sorted({c["copy"].rsplit("/", 1)[-1] for c in item["copies"]}))
        raise BadInputError(f"no node holds {keep!r} of {path} (its conflict copies: {names}, or current)")
    if len(set(held.values())) > 1:
        raise BadInputError(
            f"the nodes hold different contents as {keep!r} of {path}: choose one with --from"
        )
    return sorted(held)[0]


def run_resolve(
    inventory: Path,
    path: str,
    keep: str,
    folder: str | None,
    source: str | None,
    echo: Callable[[str], Any],
) -> int:
    """`meshctl conflicts PATH --keep VERSION`: keep one version of PATH everywhere, then a round; 0 when
    every edge synced."""
    try:
        check_path(path, ".replimesh-folder")
    except VersionsError as exc:
        raise BadInputError(str(exc)) from None
    if keep != CURRENT and ("/" in keep or not keep.strip()):
        raise BadInputError(f"--keep {keep!r}: give `current` or a conflict copy's file name, as listed")
    if source is None:
        source = keeper(conflicts(inventory), folder, path, keep)
    extravars = {"versions_path": path, "node": source, "conflicts_keep": keep,
                 **({"versions_folder": folder} if folder else {})}  # fmt: skip
    result = run_playbook("resolve.yml", inventory, extravars=extravars)
    if not result.ok and not result.task_results("mesh_sync"):
        raise result.error("resolve.yml")
    echo(f"{source}: kept {keep} of {path}; every node moved its conflict copies aside; the round:")
    show_sync(sync_edges(result), echo)
    if not result.ok:
        raise result.error("resolve.yml")
    return 0
