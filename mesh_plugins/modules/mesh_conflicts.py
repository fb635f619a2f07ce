#!/usr/bin/python
"""Ansible module: list a node's conflict copies, or end one file's conflict on the node."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_conflicts
short_description: List a replimesh node's conflict copies, or end one file's conflict there
description:
  - When two nodes change a file between rounds, Unison keeps both versions - the newer as the file, the
    other beside it as V(NAME (conflict_on_DATE\).EXT), synced to every node like any file.
  - Without O(path), lists every conflict copy in the node's folders (as Unison sees them - the marker,
    ignore patterns and the node's own C(.replimeshignore) left out), with the file each was kept of, its
    size, modification time and sha256. Nothing changes.
  - With O(path), ends that file's conflict on this node. Where O(keeper) is true and O(keep) names a
    conflict copy, that copy's content becomes the file (what the file held is kept first, as
    C(.restore.TIME.NAME) among the node's kept versions). On every node the file's conflict copies leave
    the folder for the node's kept versions, so meshctl versions lists them and nothing is lost. A round
    then carries the chosen version to every node. Supports check mode.
options:
  folders:
    description: The folders to list (name, path, ignore) as the inventory plugin gives them.
    type: list
    elements: dict
    default: []
  folder:
    description: The folder (name, path) of O(path).
    type: dict
  path:
    description: The file whose conflict to end (its path inside O(folder)).
    type: str
  keep:
    description: The version to keep - C(current) (the file as it is) or the name of one of its conflict
      copies.
    type: str
    default: current
  keeper:
    description: Whether this node writes the kept version (one node does; the others only move their
      copies aside and take it in the next round).
    type: bool
    default: false
  backup_dir:
    description: Where the node keeps versions (BACKUP_DIR/FOLDER/PATH).
    type: path
    default: /var/lib/replimesh/backups
  marker:
    description: The folder's marker file.
    type: str
    default: .replimesh-folder
  user:
    description: The mesh user, who owns what is written.
    type: str
    default: replimesh
author: replimesh developers (@replimesh)
"""

EXAMPLES = r"""
- name: List the conflict copies of every folder
  replimesh.mesh.mesh_conflicts:
    folders: "{{ mesh_folders }}"
  register: conflicts

- name: Keep node2's copy of docs/notes.md everywhere (run on every node; node2 writes it)
  replimesh.mesh.mesh_conflicts:
    folder: {name: shared, path: /srv/replimesh/shared}
    path: docs/notes.md
    keep: notes (conflict_on_2026-11-25).md
    keeper: "{{ inventory_hostname == 'node2' }}"
"""

RETURN = r"""
conflicts:
  description: Each conflict copy (folder, path of the file it was kept of, copy, kind file or dir, size,
    mtime, sha256 of a file), sorted by path.
  returned: without path
  type: list
  elements: dict
current:
  description: Per C(FOLDER/PATH) of a file with conflict copies, the file as the folder holds it now (size,
    mtime, sha256), or null.
  returned: without path
  type: dict
written:
  description: The conflict copy whose content became the file on this node, or null.
  returned: with path
  type: str
kept:
  description: Where what the file held went among the kept versions, or null.
  returned: with path
  type: str
moved:
  description: Each conflict copy moved aside, and where it went among the node's kept versions.
  returned: with path
  type: dict
"""

import pwd
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_conflicts import (
    find_conflicts,
    plan,
    resolve,
)
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_localignore import (
    LocalIgnoreError,
    local_patterns,
    node_patterns,
)
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_versions import (
    VersionsError,
    check_path,
    current,
)

ARGUMENT_SPEC: dict[str, Any] = {
    "folders": {"type": "list", "elements": "dict", "default": []},
    "folder": {"type": "dict"},
    "path": {"type": "str"},
    "keep": {"type": "str", "default": "current"},
    "keeper": {"type": "bool", "default": False},
    "backup_dir": {"type": "path", "default": "/var/lib/replimesh/backups"},
    "marker": {"type": "str", "default": ".replimesh-folder"},
    "user": {"type": "str", "default": "replimesh"},
}


def listing(params: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = []
    for folder in params["folders"]:
        patterns = node_patterns(folder.get("ignore") or [], local_patterns(folder["path"]))
        found += find_conflicts(folder["name"], folder["path"], patterns, params["marker"])
    paths = {(item["folder"], item["path"]) for item in found}
    roots = {folder["name"]: folder["path"] for folder in params["folders"]}
    now = {f"{name}/{rel}": current(roots[name], rel) for name, rel in sorted(paths)}
    return {"changed": False, "conflicts": found, "current": now}


def ending(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    folder = params["folder"]
    rel = check_path(params["path"], params["marker"])
    backups = f"{params['backup_dir']}/{folder['name']}"
    chosen, copies = plan(folder["path"], rel, params["keep"], params["keeper"])
    result: dict[str, Any] = {"changed": bool(chosen or copies), "path": rel, "written": chosen, "kept": None,
                              "moved": dict.fromkeys(copies)}  # fmt: skip
    if result["changed"] and not module.check_mode:
        ids = pwd.getpwnam(params["user"])
        done = resolve(folder["path"], backups, rel, params["keep"], params["keeper"], ids.pw_uid, ids.pw_gid)
        result.update(done)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_together=[("folder", "path")],
        supports_check_mode=True,
    )
    try:
        result = ending(module) if module.params["path"] else listing(module.params)
    except (VersionsError, LocalIgnoreError, KeyError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
