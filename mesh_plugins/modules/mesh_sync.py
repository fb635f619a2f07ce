#!/usr/bin/python
"""Ansible module: run this node's mesh edges now and report a result per edge."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_sync
short_description: Sync a replimesh node's edges now, with a result per edge
description:
  - Runs the node's sync runner (C(replimesh-sync), laid by the C(mesh_sync) role) as the mesh user.
  - Every node only pulls. By default the node pulls from every active peer (running the module on every
    node syncs every edge both ways). The runner's per-edge lock keeps two runs of one edge apart on a
    node; an edge already being pulled is reported C(busy), not run twice.
  - A pull that would delete more files than the node's C(max_deletions) deletes nothing and reports
    C(brake) until it is allowed once with O(allow_deletions).
  - In check mode it reports which edges and folders would be synced, and changes nothing.
options:
  peers:
    description: Sync only the edges to these peers (either end of an edge may sync it).
    type: list
    elements: str
    default: []
  all_peers:
    description: Pull from every active peer (the default; kept for playbooks that name it).
    type: bool
    default: false
  allow_deletions:
    description: Apply, this once, the deletions the mass-deletion brake stopped on this node.
    type: bool
    default: false
  seed:
    description:
      - With exactly one peer in O(peers), take that peer's version of every file and delete nothing
        on this node. Used once when a node joins, so that an empty or stale folder neither deletes nor
        conflicts anything.
    type: bool
    default: false
  user:
    description: The mesh user that runs Unison.
    type: str
    default: replimesh
  runner:
    description: Path of the runner on the node.
    type: path
    default: /usr/local/sbin/replimesh-sync
  config:
    description: The node's peer list and settings, as written by the control node.
    type: path
    default: /etc/replimesh/mesh.json
author: replimesh developers (@replimesh)
"""

EXAMPLES = r"""
- name: Sync every edge of the mesh once (each node runs the edges it starts)
  mesh_sync:
  register: sync

- name: Sync node1's edge to node3 now
  mesh_sync:
    peers: [node3]

- name: Apply the deletions node2's brake stopped (an operator checked them)
  mesh_sync:
    allow_deletions: true
  when: inventory_hostname == 'node2'
"""

RETURN = r"""
edges:
  description: One entry per edge that was considered.
  returned: always
  type: list
  elements: dict
  sample:
    - peer: node2
      result: ok
      files_changed: 3
      conflicts: []
      error: null
      last_success: "2026-11-25T16:40:00Z"
summary:
  description: Counts over the edges (ok, conflict, busy, failed, unreachable, files_changed, conflicts).
  returned: always
  type: dict
node:
  description: This node's mesh name.
  returned: always
  type: str
"""

import json

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "peers": {"type": "list", "elements": "str", "default": []},
            "all_peers": {"type": "bool", "default": False},
            "seed": {"type": "bool", "default": False},
            "allow_deletions": {"type": "bool", "default": False},
            "user": {"type": "str", "default": "replimesh"},
            "runner": {"type": "path", "default": "/usr/local/sbin/replimesh-sync"},
            "config": {"type": "path", "default": "/etc/replimesh/mesh.json"},
        },
        mutually_exclusive=[("peers", "all_peers")],
        supports_check_mode=True,
    )
    params = module.params
    argv = [params["runner"], "--json", "--config", params["config"]]
    for peer in params["peers"]:
        argv += ["--peer", peer]
    if params["all_peers"]:
        argv.append("--all-peers")
    if params["allow_deletions"]:
        argv.append("--allow-deletions")
    if params["seed"]:
        if len(params["peers"]) != 1:
            module.fail_json(msg="seed needs exactly one peer to seed from, in peers")
        argv.append("--seed")
    if module.check_mode:
        argv.append("--dry-run")
    runuser = module.get_bin_path("runuser", required=True)
    rc, out, err = module.run_command([runuser, "-u", params["user"], "--", *argv])
    try:
        report = json.loads(out)
    except ValueError:
        module.fail_json(
            msg=f"the sync runner failed before reporting (exit {rc}): {err.strip() or out.strip()}",
            rc=rc,
        )
    summary = report.get("summary", {})
    result = {
        "changed": bool(summary.get("files_changed")) and not module.check_mode,
        "node": report.get("node"),
        "edges": report.get("edges", []),
        "summary": summary,
        "runner_rc": rc,
    }
    if rc not in (0, 1):
        module.fail_json(msg=f"the sync runner failed (exit {rc}): {err.strip()}", **result)
    # A failed edge is a fact about a peer, not a failure of this node: report it, do not fail the task,
    # so that one dead peer never hides the results of the healthy edges.
    module.exit_json(**result)


if __name__ == "__main__":
    main()
