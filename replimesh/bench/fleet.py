"""Provisioning at fleet size: `bootstrap.yml` on FLEET fresh lab hosts, its first run and a re-run that
finds nothing to change, each timed on the control node (this machine) from start to end.

It runs after the bench's own lab is down, on a lab of its own (the same name and subnet, another state
directory), so nothing else competes for the two cores while Ansible works.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from replimesh.bench import mesh as rm
from replimesh.lab.lab import Lab, LabConfig

Log = Callable[[str], None]


def provision(work: Path, config: LabConfig, count: int, raw: dict[str, Any], log: Log) -> list[str]:
    """bootstrap.yml twice on `count` new hosts; the series go into `raw`, the commands come back."""
    lab = Lab(work / f"lab-{config.name}-fleet", config, log=log)
    mesh_file = work / "fleet.mesh.yml"
    shutil.rmtree(work / "fleet.keys", ignore_errors=True)  # new hosts, new keys
    raw["fleet_hosts"] = count
    try:
        hosts = lab.up(count)
        rm.write_mesh_file(lab.inventory_path, mesh_file, [h.name for h in hosts], {"kind": "full"}, "watch")
        for series, label in (("bootstrap_first_s", "first run"), ("bootstrap_rerun_s", "no-change re-run")):
            seconds, playbook_log, changed, ran = rm.bootstrap(mesh_file)
            log(
                f"   bootstrap.yml on {count} hosts, {label}: {seconds:.1f} s, {changed} changed, {ran} tasks"
            )
            log(f"   its log: {playbook_log}")
            raw.setdefault(series, []).append(seconds)
            raw.setdefault(f"{series.removesuffix('_s')}_changed", []).append(changed)
            raw.setdefault(f"{series.removesuffix('_s')}_tasks", []).append(ran)
    finally:
        log("== fleet lab down")
        lab.down()
    return [
        f"control# meshctl lab up {count}; ansible-playbook -i fleet.mesh.yml bootstrap.yml   "
        f"(timed, then again: the re-run; full mesh, watch mode)"
    ]
