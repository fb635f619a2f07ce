"""Removing labs by name, or every lab on this machine, leftovers of interrupted runs included."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from replimesh.lab import system
from replimesh.lab.lab import GUARD, LABEL, Lab, LabConfig
from replimesh.lab.system import Log, docker


def down_named(names: Sequence[str], log: Log) -> None:
    """Remove the named labs (hosts, network, rules, apt server), leftovers of interrupted runs too."""
    system.require_root()
    if system.docker_ready():
        subnets = {}
        for net in docker("network", "ls", "--filter", f"label={LABEL}", "--format", "{{.Name}}").split():
            subnets[net] = json.loads(docker("network", "inspect", net))[0]["IPAM"]["Config"][0]["Subnet"]
        for name in names:
            if name in subnets:
                state = Path(f"/run/replimesh/state-{name}")
                Lab(state, LabConfig(name=name, subnet=subnets[name]), log=log).down()
            if not system.docker_ready():  # that was the last lab: its down() stopped the engine
                break
            ids = docker("ps", "-aq", "--filter", f"label={LABEL}={name}").split()
            if ids:
                docker("rm", "-f", *ids)
                log(f"removed {len(ids)} leftover hosts of {name}")
    for name in names:
        system.stop_pidfile(system.RUN_DIR / f"apt-{name}.pid")
    system.stop_shared_if_unused(LABEL, GUARD, log)


def down_all(log: Log) -> None:
    """Remove every replimesh lab on this machine, including leftovers of interrupted runs."""
    system.require_root()
    names: set[str] = {p.stem.removeprefix("apt-") for p in system.RUN_DIR.glob("apt-*.pid")}
    if system.docker_ready():
        names |= set(docker("network", "ls", "--filter", f"label={LABEL}", "--format", "{{.Name}}").split())
        for labels in docker("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Labels}}").split():
            names |= {kv.split("=", 1)[1] for kv in labels.split(",") if kv.startswith(f"{LABEL}=")}
    down_named(sorted(names), log)
