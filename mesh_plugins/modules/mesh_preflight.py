#!/usr/bin/python
"""Ansible module: check that a node can become a replimesh node, before anything is changed on it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_preflight
short_description: Check a node before replimesh changes anything on it
description:
  - Runs on a node, as root, before the roles, and reports each thing that would make replimesh fail or
    silently not work there, as one sentence that says what to do. It changes nothing (C(changed=false),
    works in check mode); the bind-mount check mounts an empty directory of its own and unmounts it.
  - Checks that root may make the read-only bind mounts the peers' jails are built of; that
    C(/etc/ssh/sshd_config) includes C(sshd_config.d/*.conf) before any C(Match) block; that cron would run
    the mesh user's job on a host without systemd (a cron with a login uid it may not change refuses every
    job, silently; with systemd a timer runs the rounds); that each
    file system of the folders and of the state has O(min_free_mib) free; and that each peer's host name
    resolves on this node.
  - The clock is judged by the caller, who knows its own time; this module returns the node's (RV(node_time)).
options:
  folders:
    description: The synced folders' paths (they need not exist yet).
    type: list
    elements: path
    default: []
  state_dirs:
    description: Where replimesh keeps its own state, archives and kept versions.
    type: list
    elements: path
    default: [/var/lib/replimesh]
  min_free_mib:
    description: MiB that must be free, for root, on each file system of O(folders) and O(state_dirs).
    type: int
    default: 200
  peers:
    description: The node's peers (name, address); each address must resolve on this node.
    type: list
    elements: dict
    default: []
  job_user:
    description: The user the sync job runs as (it need not exist yet).
    type: str
    default: replimesh
  control_time:
    description:
      - The caller's clock (Unix time) just before the module ran; with it the module returns
        RV(ahead_at_most), how far the node's clock can at most be ahead of the caller's.
    type: float
  watch_state_dir:
    description: The mesh_sync state directory, where a watch-mode node's watcher keeps its record.
    type: path
    default: /var/lib/replimesh/state
  skip:
    description: Checks not to run.
    type: list
    elements: str
    choices: [bind_mount, sshd_include, cron, free_space, resolve]
    default: []
author: replimesh developers (@replimesh)
"""

EXAMPLES = r"""
- name: Check the node before any change
  mesh_preflight:
    folders: [/srv/replimesh/shared]
    peers: [{name: node2, address: 10.0.0.12}]
    control_time: "{{ now().timestamp() }}"
  register: preflight

- name: Stop on what is wrong
  ansible.builtin.assert:
    that: preflight.problems | length == 0
    fail_msg: "{{ preflight.problems | join('; ') }}"
"""

RETURN = r"""
problems:
  description: One sentence per problem found, each saying what to do; empty when the node is ready.
  returned: always
  type: list
  elements: str
node_time:
  description: The node's clock (Unix time) when the module ran, for the caller to compare with its own.
  returned: always
  type: float
ahead_at_most:
  description:
    - RV(node_time) minus O(control_time) - the node's clock is at most this far ahead of the caller's (behind
      when negative); null without O(control_time). The caller's clock after the module returned bounds it
      from the other side.
  returned: always
  type: float
systemd:
  description: Whether systemd is the node's init (a systemd timer runs the rounds there, not cron).
  returned: always
  type: bool
cron_running:
  description: How many cron daemons run on the node.
  returned: always
  type: int
cron_daemons:
  description:
    - The names of the cron daemons running on the node (V(cron) is Debian's), sorted, once each.
    - The mesh_sync role installs and starts Debian's cron only where it does not run.
  returned: always
  type: list
  elements: str
watcher_alive:
  description:
    - Whether a watch-mode watcher is alive on the node (its record in O(watch_state_dir) is fresh and its
      process runs); false where none is expected.
    - The mesh_sync role starts the supervisor only where it is not.
  returned: always
  type: bool
"""

import os
import pwd
import time
from collections.abc import Mapping
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_member import resolve_address
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_preflight import (
    CRON_NAMES,
    SSHD_CONFIG,
    bind_mount_problem,
    cron_masters,
    cron_problem,
    free_space_problems,
    sshd_include_problem,
    unresolved_peers,
)
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_watchstate import watcher_state

ARGUMENT_SPEC: dict[str, Any] = {
    "folders": {"type": "list", "elements": "path", "default": []},
    "state_dirs": {"type": "list", "elements": "path", "default": ["/var/lib/replimesh"]},
    "min_free_mib": {"type": "int", "default": 200},
    "peers": {"type": "list", "elements": "dict", "default": []},
    "job_user": {"type": "str", "default": "replimesh"},
    "control_time": {"type": "float"},
    "watch_state_dir": {"type": "path", "default": "/var/lib/replimesh/state"},
    "skip": {
        "type": "list",
        "elements": "str",
        "default": [],
        "choices": ["bind_mount", "sshd_include", "cron", "free_space", "resolve"],
    },
}


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _process(pid: str) -> dict[str, str]:
    return {
        "loginuid": _read(f"/proc/{pid}/loginuid").strip(),
        "status": _read(f"/proc/{pid}/status"),
        "name": _read(f"/proc/{pid}/comm").strip(),
    }


def _cron_daemons() -> list[Mapping[str, str]]:
    pids = [p for p in os.listdir("/proc") if p.isdigit() and _read(f"/proc/{p}/comm").strip() in CRON_NAMES]
    return cron_masters({pid: _process(pid) for pid in pids})


def _uid(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return -2  # not created yet: no login uid equals it


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params, skip = module.params, set(module.params["skip"])
    node_time = time.time()
    problems: list[str] = []

    def run(argv: Any) -> tuple[int, str, str]:
        return module.run_command(list(argv))

    if "bind_mount" not in skip and (problem := bind_mount_problem(run)):
        problems.append(problem)
    if "sshd_include" not in skip and (problem := sshd_include_problem(_read(SSHD_CONFIG))):
        problems.append(problem)
    systemd = _read("/proc/1/comm").strip() == "systemd"
    daemons = _cron_daemons()
    # With systemd as PID 1 a timer runs the rounds (mesh_sync_scheduler), not cron.
    if "cron" not in skip and not systemd:
        starter = _process("self")
        problem = cron_problem(daemons, starter, _read("/etc/pam.d/cron"), _uid(params["job_user"]))
        if problem:
            problems.append(problem)
    if "free_space" not in skip:
        paths = list(params["folders"]) + list(params["state_dirs"])
        problems += free_space_problems(paths, params["min_free_mib"] * 2**20)
    if "resolve" not in skip:
        problems += unresolved_peers(params["peers"], resolve_address)
    control = params["control_time"]
    module.exit_json(
        changed=False,
        problems=problems,
        node_time=node_time,
        ahead_at_most=None if control is None else node_time - control,
        systemd=systemd,
        cron_running=len(daemons),
        cron_daemons=sorted({daemon["name"] for daemon in daemons}),
        watcher_alive=bool((watcher_state(params["watch_state_dir"]) or {}).get("alive")),
    )


if __name__ == "__main__":
    main()
