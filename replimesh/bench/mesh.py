"""replimesh on the bench's lab hosts: mesh files per phase, bootstrap, the runner and bare Unison."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from replimesh.bench.probe import ProbeError, dexec, timed
from replimesh.collection import collection_dir
from replimesh.lab.lab import Host
from replimesh.playbooks import run_playbook

USER = "replimesh"
FOLDER = "/srv/replimesh/shared"
STAGING = "/srv/replimesh/bench-staging"  # same filesystem as FOLDER, outside it
UNISON_DIR = "/var/lib/replimesh/unison"
RUNNER = "/usr/local/sbin/replimesh-sync"
FOLDERS = ({"name": "shared", "path": FOLDER},)
# The pair phase's second folder: the big tree, beside the small one, so both are measured side by side.
TREE_FOLDER = {"name": "tree", "path": "/srv/replimesh/tree"}
# The full round is a safety net in watch mode: daily, so that it never fires inside a run.
SCHEDULE = "0 3 * * *"


class MeshError(Exception):
    """A playbook of the bench's mesh failed; the message points at its log."""


class Cancelled(Exception):
    """ansible-runner took a SIGTERM or Ctrl-C meant for the bench (it handles them while it runs)."""


def watch_supported() -> bool:
    """Does this checkout's mesh_sync role accept `mode: watch`? (Watch mode lands separately.)"""
    specs = yaml.safe_load((collection_dir() / "roles/mesh_sync/meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    return "watch" in (options.get("mesh_sync_mode", {}).get("choices") or [])


def write_mesh_file(
    lab_mesh: Path,
    target: Path,
    nodes: Sequence[str],
    topology: dict[str, Any],
    mode: str,
    folders: Sequence[dict[str, str]] = FOLDERS,
) -> Path:
    """The lab's mesh file with the bench's nodes, topology and sync mode. One file (one key store) for
    every phase, so the nodes keep their keys from phase to phase."""
    mesh = yaml.safe_load(lab_mesh.read_text())
    mesh["nodes"] = {name: spec for name, spec in mesh["nodes"].items() if name in nodes}
    mesh["topology"] = topology
    mesh["folders"] = [dict(f) for f in folders]
    mesh["sync"] = {"mode": mode, "schedule": SCHEDULE}
    target.write_text(
        "# Written by `meshctl bench` for one of its phases.\n" + yaml.safe_dump(mesh, sort_keys=False)
    )
    return target


def bootstrap(mesh_file: Path) -> tuple[float, Path, int, int]:
    """bootstrap.yml on the mesh file; the seconds it took, its log, how many tasks changed something
    (summed over the hosts) and how many ran on the busiest host (skipped ones not counted)."""
    import time

    start = time.monotonic()
    result = run_playbook("bootstrap.yml", mesh_file, progress=False)
    if result.status == "canceled":
        raise Cancelled("bootstrap.yml was cancelled")
    if not result.ok:
        raise MeshError(result.failure("bootstrap.yml"))
    changed = sum((result.stats.get("changed") or {}).values())
    ran = max((n for host, n in (result.stats.get("ok") or {}).items() if host != "localhost"), default=0)
    return round(time.monotonic() - start, 1), result.log, changed, ran


def _home(host: Host) -> str:
    return dexec(host, ["getent", "passwd", USER]).split(":")[5]


def runner_round(host: Host, peer: str, attempts: int = 20) -> float:
    """Seconds of one `replimesh-sync --peer PEER` run; retried (bounded) while a watcher holds the edge."""
    import time

    for _ in range(attempts):
        seconds, out = timed(host, [RUNNER, "--peer", peer, "--json"], user=USER)
        report = json.loads(out.strip().splitlines()[-1])
        results = {edge["result"] for edge in report["edges"]}
        if results <= {"ok", "conflict"}:
            return seconds
        if results != {"busy"}:
            raise ProbeError(f"{host.name}: replimesh-sync --peer {peer}: {sorted(results)}: {out[-600:]}")
        time.sleep(1)
    raise ProbeError(f"{host.name}: the edge to {peer} stayed busy for {attempts} attempts")


def bare_unison_argv(host: Host, peer: str, folder: str = "shared") -> list[str]:
    """What the runner runs for the edge, with nothing around it: the same profile, UNISON dir and env."""
    return [
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "LANG=C.UTF-8",
        f"HOME={_home(host)}",
        f"UNISONLOCALHOSTNAME={host.name}",
        f"UNISON={UNISON_DIR}/{peer}",
        "/usr/bin/unison",
        f"{peer}--{folder}",
    ]


def bare_unison(host: Host, argv: list[str]) -> float:
    seconds, _ = timed(host, argv, user=USER)
    return seconds


# Runs on a node as the mesh user: COUNT small files under ROOT in directories of 1000; prints the last.
TREE_MAKER = r"""
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
path = ""
for i in range(count):
    d = os.path.join(root, "d%03d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "f%06d.txt" % i)
    with open(path, "w") as f:
        f.write("file %d of the bench tree\n" % i)
print(path)
"""


def unison_version(host: Host) -> str:
    return dexec(host, ["unison", "-version"]).strip()
