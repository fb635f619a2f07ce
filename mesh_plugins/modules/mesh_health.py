#!/usr/bin/python
"""Ansible module: read a node's sync status, or judge the whole mesh's health on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_health
short_description: Read a replimesh node's sync status, or judge the health of the whole mesh
description:
  - Without O(nodes), runs on a node (as root) and reads what its sync runner recorded - every edge's
    status file (C(STATE_DIR/status/PEER.json)), the node's peer list and folders (O(config)), the Unison
    version, whether each folder's marker file is present, and whether the scheduled rounds are installed
    (the cron job, or the enabled systemd timer).
    It only reads, so it reports C(changed=false) and works in check mode.
  - With O(nodes), runs on the controller and judges the mesh from the registered results of every node
    (an unreachable node's result too), with the same core that C(meshctl status) uses. Healthy means every
    node reachable, every folder marker present, the scheduled rounds installed, and every edge's freshest
    record (from either end) an C(ok) or C(conflict) run with a last success within O(max_lag) seconds. A
    node whose scheduler (cron or the timer) has started no round within twice its schedule's longest wait
    is degraded (the mesh is then not healthy either), with the reason.
options:
  config:
    description: The node's peer list and settings, as written by the control node.
    type: path
    default: /etc/replimesh/mesh.json
  state_dir:
    description: The runner's state directory (its C(status/) holds a record per edge).
    type: path
    default: /var/lib/replimesh/state
  unison:
    description: The Unison binary whose version is reported.
    type: path
    default: /usr/bin/unison
  cron_file:
    description: The cron file that holds the node's sync job (nodes without systemd).
    type: path
    default: /etc/cron.d/replimesh
  timer_link:
    description: The link that enables the node's round timer (nodes with systemd).
    type: path
    default: /etc/systemd/system/timers.target.wants/replimesh-sync.timer
  mode:
    description: How the node syncs; with V(cron) missing scheduled rounds make the node unhealthy.
    type: str
    default: cron
  schedule:
    description:
      - The node's sync schedule (5 cron fields, C(mesh_sync_schedule)), whose longest wait between rounds
        judges a node whose scheduler has never started a round since the rounds were installed.
    type: str
  nodes:
    description:
      - Node name -> the registered result of this module's node run on that node (an empty one or an
        unreachable one means the node was not reached). Mutually exclusive with the node options' use.
    type: dict
  max_lag:
    description: With O(nodes), how many seconds an edge's last success may be old and still healthy.
    type: int
    default: 86400
  output:
    description: With O(nodes), also write the report as JSON to this file on the controller (mode 0600).
    type: path
author: replimesh developers (@replimesh)
"""

EXAMPLES = r"""
- name: Read this node's sync status
  mesh_health:
  register: mesh_node_status_result
  ignore_unreachable: true

- name: Judge the mesh (on the controller)
  mesh_health:
    nodes: "{{ dict(groups['mesh'] | zip(groups['mesh'] | map('extract', hostvars)
               | map(attribute='mesh_node_status_result', default={}))) }}"
    max_lag: 3600
  register: status_report
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
node:
  description: The node's mesh name (from O(config)).
  returned: without nodes
  type: str
peers:
  description: The node's peers from O(config) (name, initiator, active).
  returned: without nodes
  type: list
  elements: dict
edges:
  description: The node's edge status records, as the runner wrote them (peer, last_start, last_finish,
    last_success, result, files_changed, conflicts, error, duration_s, first_sync).
  returned: without nodes
  type: list
  elements: dict
folders:
  description: The node's folders with whether their marker file is present.
  returned: without nodes
  type: list
  elements: dict
  sample: [{"name": "shared", "path": "/srv/replimesh/shared", "marker": true}]
unison_version:
  description: The version Unison reports (e.g. C(2.52.1)), or null when it cannot be run.
  returned: without nodes
  type: str
cron:
  description: Whether the scheduled rounds are installed (a job in the cron file, or the timer enabled).
  returned: without nodes
  type: bool
scheduler:
  description: What runs the scheduled rounds, V(timer) (systemd) or V(cron); null when neither does.
  returned: without nodes
  type: str
cron_since:
  description: When the rounds were installed (the cron file's or the timer link's change, Unix time, the
    node's clock), or null without them.
  returned: without nodes
  type: float
scheduled:
  description: >-
    The last round the scheduler started (at, schedule, period_s: the schedule's longest wait between
    rounds), as the runner recorded it; null before the first.
  returned: without nodes
  type: dict
schedule_period_s:
  description: The longest wait between two rounds of O(schedule) in seconds, or null without it.
  returned: without nodes
  type: int
watcher:
  description: >-
    On a watch-mode node, whether its watcher is alive (a live process with a fresh heartbeat) and what it
    did last (pid, started, heartbeat, last_event, last_sync, last_result, syncs, forward); null elsewhere.
  returned: without nodes
  type: dict
report:
  description: The mesh's health (healthy, nodes, edges, conflicts, problems, degraded, max_lag).
  returned: with nodes
  type: dict
healthy:
  description: Whether the whole mesh is healthy.
  returned: with nodes
  type: bool
lines:
  description: The report as text lines, for a person.
  returned: with nodes
  type: list
  elements: str
"""

import glob
import json
import os
import re
import tempfile
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_health import mesh_health, render_lines
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_schedule import ScheduleError, longest_gap_s
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_watchstate import read_small, watcher_state

VERSION_RE = re.compile(r"version\s+(\S+)")
CRON_JOB = "replimesh-sync"
STATE_FILE_LIMIT = 1 << 20


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _read_state(path: str) -> Any:
    """A status file the mesh user wrote, as root: no link followed, no FIFO waited on, 1 MiB at most."""
    data = read_small(path, STATE_FILE_LIMIT)
    if data is None:
        raise OSError("not a regular file (or unreadable)")
    return json.loads(data.decode("utf-8"))


def _cron_present(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return False
    return any(CRON_JOB in line and not line.lstrip().startswith("#") for line in lines)


def _mtime(path: str) -> float | None:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return None


def node_status(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    try:
        config = _read_json(params["config"])
    except (OSError, ValueError) as exc:
        module.fail_json(msg=f"cannot read {params['config']} ({exc}); is the node bootstrapped?")
    if not isinstance(config, dict):
        module.fail_json(msg=f"{params['config']} is not a JSON object; run bootstrap.yml again")
    marker = config.get("marker", ".replimesh-folder")
    folders = [
        {
            "name": folder.get("name"),
            "path": folder.get("path"),
            "marker": os.path.exists(os.path.join(str(folder.get("path")), marker)),
        }
        for folder in config.get("folders") or []
        if isinstance(folder, dict)
    ]
    peers = [
        {"name": p.get("name"), "initiator": bool(p.get("initiator")), "active": p.get("active", True)}
        for p in config.get("peers") or []
        if isinstance(p, dict)
    ]
    edges = []
    for path in sorted(glob.glob(os.path.join(params["state_dir"], "status", "*.json"))):
        try:
            record = _read_state(path)
        except (OSError, ValueError) as exc:
            module.warn(f"{path} is not readable JSON ({exc}); it is left out")
            continue
        if isinstance(record, dict):
            edges.append(record)
    scheduled, record = None, os.path.join(params["state_dir"], "scheduled.json")
    if os.path.lexists(record):  # none yet: the scheduler has not started a round since bootstrap
        try:
            scheduled = _read_state(record)
        except (OSError, ValueError) as exc:
            module.warn(f"{record} is not readable JSON ({exc}); it is left out")
    try:
        period = longest_gap_s(params["schedule"]) if params["schedule"] else None
    except ScheduleError as exc:
        module.warn(f"schedule: {exc}")
        period = None
    # An enabled timer runs the rounds where systemd does (a link in timers.target.wants), cron elsewhere.
    timer = os.path.lexists(params["timer_link"])
    scheduler = "timer" if timer else "cron" if _cron_present(params["cron_file"]) else None
    version = None
    if os.access(params["unison"], os.X_OK):
        rc, out, err = module.run_command([params["unison"], "-version"])
        match = VERSION_RE.search(out + err)
        version = match.group(1) if rc == 0 and match else None
    return {
        "changed": False,
        "node": config.get("node"),
        "peers": peers,
        "edges": edges,
        "folders": folders,
        "unison_version": version,
        "mode": params["mode"],
        "cron": scheduler is not None,
        "scheduler": scheduler,
        "cron_since": _mtime(params["timer_link"] if scheduler == "timer" else params["cron_file"]),
        "scheduled": scheduled if isinstance(scheduled, dict) else None,
        "schedule_period_s": period,
        "watcher": watcher_state(params["state_dir"]),
        "now": time.time(),
    }


def _write_output(module: AnsibleModule, path: str, report: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".mesh-status-", dir=os.path.dirname(path) or ".")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    module.atomic_move(tmp, path)
    os.chmod(path, 0o600)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "path", "default": "/etc/replimesh/mesh.json"},
            "state_dir": {"type": "path", "default": "/var/lib/replimesh/state"},
            "unison": {"type": "path", "default": "/usr/bin/unison"},
            "cron_file": {"type": "path", "default": "/etc/cron.d/replimesh"},
            "timer_link": {
                "type": "path",
                "default": "/etc/systemd/system/timers.target.wants/replimesh-sync.timer",
            },
            "mode": {"type": "str", "default": "cron"},
            "schedule": {"type": "str"},
            "nodes": {"type": "dict"},
            "max_lag": {"type": "int", "default": 86400},
            "output": {"type": "path"},
        },
        supports_check_mode=True,
    )
    params = module.params
    if params["nodes"] is None:
        module.exit_json(**node_status(module))
    if params["max_lag"] <= 0:
        module.fail_json(msg=f"max_lag must be a positive number of seconds (got {params['max_lag']})")
    report = mesh_health(params["nodes"], time.time(), params["max_lag"])
    if params["output"]:
        try:
            _write_output(module, params["output"], report)
        except OSError as exc:
            module.fail_json(msg=f"could not write {params['output']}: {exc}")
    args = {key: value for key, value in params.items() if key != "nodes"}
    module.exit_json(
        changed=False,
        invocation={"module_args": args},
        report=report,
        healthy=report["healthy"],
        lines=render_lines(report),
    )


if __name__ == "__main__":
    main()
