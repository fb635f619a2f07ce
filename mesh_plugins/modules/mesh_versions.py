#!/usr/bin/python
"""Ansible module: list the versions a node keeps of a file, or restore one into the folder."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_versions
short_description: List the versions a replimesh node keeps of a file, or put one back
description:
  - Lists the file as the node's folder holds it now and every version the node kept of it (what its
    pulls overwrote or deleted, newest content first, numbered from 1), with size, modification time and
    sha256.
  - With O(restore), writes version O(restore) back into the folder, as the mesh user, as a new change,
    which the next round carries to every node. What the folder held at that path is kept first, beside
    the versions (C(.restore.TIME.NAME)). Nothing changes when the folder already holds that content.
    Supports check mode.
options:
  folder:
    description: The folder (name, path) as the inventory plugin gives it.
    type: dict
    required: true
  path:
    description: The file's path inside the folder.
    type: str
    required: true
  backup_dir:
    description: Where the node keeps versions (BACKUP_DIR/FOLDER/PATH).
    type: path
    default: /var/lib/replimesh/backups
  marker:
    description: The folder's marker file, never listed or restored.
    type: str
    default: .replimesh-folder
  user:
    description: The mesh user, who owns what a restore writes.
    type: str
    default: replimesh
  restore:
    description: The version to put back (1 is the newest kept); without it, only list.
    type: int
author: replimesh developers (@replimesh)
"""

EXAMPLES = r"""
- name: List the versions of a file
  mesh_versions:
    folder: {name: shared, path: /srv/replimesh/shared}
    path: docs/notes.txt
  register: versions

- name: Put the newest kept version back
  mesh_versions:
    folder: {name: shared, path: /srv/replimesh/shared}
    path: docs/notes.txt
    restore: 1
"""

RETURN = r"""
path:
  description: The file's path inside the folder, normalized.
  returned: always
  type: str
current:
  description: The file as the folder holds it now (size, mtime, sha256), or null when it is not there.
  returned: always
  type: dict
versions:
  description: The versions kept of the file (version, path, size, mtime, sha256), newest first.
  returned: always
  type: list
  elements: dict
kept:
  description: Where a restore kept what the folder held at the path, or null.
  returned: with restore
  type: str
"""

import pwd
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_versions import (
    VersionsError,
    check_path,
    current,
    kept_versions,
    pick,
    restore,
)

ARGUMENT_SPEC: dict[str, Any] = {
    "folder": {"type": "dict", "required": True},
    "path": {"type": "str", "required": True},
    "backup_dir": {"type": "path", "default": "/var/lib/replimesh/backups"},
    "marker": {"type": "str", "default": ".replimesh-folder"},
    "user": {"type": "str", "default": "replimesh"},
    "restore": {"type": "int"},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    folder = params["folder"]
    try:
        rel = check_path(params["path"], params["marker"])
        backups = f"{params['backup_dir']}/{folder['name']}"
        now, versions = current(folder["path"], rel), kept_versions(backups, rel)
        result: dict[str, Any] = {"changed": False, "path": rel, "current": now, "versions": versions}
        if params["restore"] is not None:
            chosen = pick(versions, params["restore"], rel, "this node")
            result["kept"] = None
            if now is None or now["sha256"] != chosen["sha256"]:
                result["changed"] = True
                if not module.check_mode:
                    ids = pwd.getpwnam(params["user"])
                    result["kept"] = restore(folder["path"], backups, rel, chosen, ids.pw_uid, ids.pw_gid)
                    result["current"] = current(folder["path"], rel)
    except (VersionsError, KeyError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
