#!/usr/bin/python
"""Ansible module: make a node's sync folders ready (created, marked, inner disks guarded) in one run."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_folders
short_description: Make a node's sync folders ready, in one round trip
description:
  - Looks at every folder in O(paths) first. An empty folder without its O(marker) fails the run with
    nothing changed, since an unmounted disk looks just like it (O(adopt_empty) takes it).
  - Then, for each folder, creates missing parent directories (as root, leaving existing ones
    untouched), creates the folder or corrects its owner and mode, and writes its marker when it has
    none (an existing marker is kept).
  - Removes what an earlier layout left, which bound every folder into one jail shared by all peers
    (O(jail_dir)). Its lines in C(/etc/fstab) go, and a bind still mounted is unmounted; the folders
    themselves are untouched. When O(backup_dir) is a link (that layout kept the node's versions in the
    jail), the link goes and the versions move to O(backup_dir), out of every peer's reach.
  - Guards the disks mounted inside a folder. The top of each gets a marker of its own, and the
    folder's marker lists it (C(inner disk) lines). A listed disk that is not mounted is reported as a
    warning, not a failure, because the node's runs already hold that folder and one node's disk must
    not stop the others' provisioning.
  - One module run per host. The role ran about ten tasks here, most of them loops over the folders,
    and on a fleet each run is a Python start on every node.
  - Supports check mode (what would change is returned, nothing is written).
options:
  paths:
    description: The folders (absolute paths).
    type: list
    elements: path
    required: true
  owner:
    description:
      - The user that owns each folder (the mesh user); the group of the same name owns it too.
      - In check mode a user that does not exist yet (its task did not run) counts as a change.
    type: str
    required: true
  mode:
    description: The mode of each folder (octal, as a string).
    type: str
    required: true
  marker:
    description: The marker's file name, in each folder and at the top of each inner disk.
    type: str
    default: .replimesh-folder
  adopt_empty:
    description: Take an empty folder without marker as a new replica (write its marker).
    type: bool
    default: false
  jail_dir:
    description: The shared jail of the earlier layout, whose binds of the folders go.
    type: path
    required: true
  backup_dir:
    description:
      - The node's backup directory. In the earlier layout it was a link to the same path in O(jail_dir);
        such a link is replaced by what it pointed to (moved). A directory is left alone.
    type: path
attributes:
  check_mode:
    description: Reports what would change and changes nothing.
    support: full
  diff_mode:
    description: No diff is returned (the paths that changed are named in the results).
    support: none
author: replimesh developers (@replimesh)
"""

EXAMPLES = r"""
- name: Make the folders ready
  replimesh.mesh.mesh_folders:
    paths: [/srv/replimesh/shared]
    owner: replimesh
    mode: "0775"
    jail_dir: /var/lib/replimesh/jail
"""

RETURN = r"""
created:
  description: The folders and missing parent directories created.
  returned: always
  type: list
  elements: str
fixed:
  description: The folders whose owner or mode was corrected.
  returned: always
  type: list
  elements: str
marked:
  description: The markers written (a folder's, or the top of an inner disk).
  returned: always
  type: list
  elements: str
unbound:
  description: The earlier layout's binds removed (an /etc/fstab line, or a mount).
  returned: always
  type: list
  elements: str
moved:
  description: The earlier layout's versions moved out of its jail (or its dangling link removed).
  returned: always
  type: list
  elements: str
inner:
  description: For each folder, the disks mounted inside it that its marker lists (relative paths).
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_folders import (
    FoldersError,
    Settings,
    prepare,
)
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_layout import (
    LayoutError,
    name_id,
    octal_mode,
    plain_name,
)

ARGUMENT_SPEC = {
    "paths": {"type": "list", "elements": "path", "required": True},
    "owner": {"type": "str", "required": True},
    "mode": {"type": "str", "required": True},
    "marker": {"type": "str", "default": ".replimesh-folder"},
    "adopt_empty": {"type": "bool", "default": False},
    "jail_dir": {"type": "path", "required": True},
    "backup_dir": {"type": "path"},
}


def _ids(module: AnsibleModule) -> tuple[int, int]:
    owner = module.params["owner"]
    uid, gid = name_id(owner, "owner", "owner"), name_id(owner, "group", "owner")
    if uid is None or gid is None:
        if not module.check_mode:
            module.fail_json(msg=f"no user and group {owner!r} on this node")
        return -1, -1  # made by a task that check mode did not run: every folder counts as a change
    return uid, gid


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    paths = module.params["paths"]
    marker = module.params["marker"]
    if not plain_name(marker):
        module.fail_json(msg=f"marker must be a plain file name (got {marker!r})")
    backup_dir = module.params["backup_dir"]
    for name, path in [
        *(("paths", path) for path in paths),
        *([("backup_dir", backup_dir)] if backup_dir else []),
    ]:
        if not path.startswith("/") or os.path.normpath(path) != path or path == "/":
            module.fail_json(msg=f"{name}: {path!r} is not a normal absolute path below /")
    try:
        mode = octal_mode(module.params["mode"], "mode")
    except LayoutError as exc:
        module.fail_json(msg=str(exc))
    uid, gid = _ids(module)
    settings = Settings(
        uid=uid,
        gid=gid,
        mode=mode,
        marker=marker,
        adopt_empty=module.params["adopt_empty"],
        jail_dir=module.params["jail_dir"],
        backup_dir=backup_dir or "",
    )
    try:
        report = prepare(paths, settings, apply=not module.check_mode)
    except FoldersError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"could not make the folders ready: {exc}")
    for warning in report.warnings:
        module.warn(warning)
    module.exit_json(
        changed=report.changed,
        created=report.created,
        fixed=report.fixed,
        marked=report.marked,
        unbound=report.unbound,
        moved=report.moved,
        inner=report.inner,
    )


if __name__ == "__main__":
    main()
