#!/usr/bin/python
"""Ansible module: install a role's set of program files into one directory in a single round trip."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_files
short_description: Install a set of small files from a role into one directory, in one round trip
description:
  - Makes O(dest) hold each file named in O(files) with exactly the bytes of the role's file of that
    name under O(src), mode O(mode), owned by the user the task runs as (root, with become). Files it
    does not name are left alone; those in O(absent) are removed.
  - One module run per host whatever the number of files. M(ansible.builtin.copy) with a loop (or with
    a directory) runs a module per file, which on a fleet is most of a provisioning run's time
    (bench/RESULTS.md measures both).
  - Each file is written to a temporary file beside it and renamed into place, so a program that starts
    meanwhile reads the old file or the new one, never half of one.
  - Supports check mode (the files that would change are returned, nothing is written).
  - The action plugin of the same name reads the files on the control node; the module receives their
    contents.
options:
  src:
    description:
      - A directory of the role's C(files/) (or a path the control node finds as
        M(ansible.builtin.copy) finds its source).
      - Read by the action plugin on the control node.
    type: str
    required: true
  files:
    description:
      - The names of the files under O(src) to install (plain names, no directory).
      - The module itself receives a mapping of each name to its content, base64-encoded.
    type: raw
    required: true
  dest:
    description: The directory that receives them; created (mode O(dir_mode)) when missing.
    type: path
    required: true
  mode:
    description: The mode of every file (octal, as a string).
    type: str
    default: "0644"
  dir_mode:
    description: The mode of O(dest) (octal, as a string).
    type: str
    default: "0755"
  absent:
    description: Names of files in O(dest) to remove (files that an earlier version installed).
    type: list
    elements: str
    default: []
  paths:
    description:
      - More paths laid out in the same run, after the files, each as an entry of
        M(replimesh.mesh.mesh_layout)'s C(paths) (a command, its directories).
      - Every entry is checked before anything changes.
    type: list
    elements: dict
    default: []
  compile_for:
    description:
      - The Python that runs the installed code (e.g. V(/usr/bin/python3)). After the files are in place,
        their C(.py) files are byte-compiled for it where the cached bytecode is missing or stale, as
        the user the task runs as. A program run by another user cannot write its C(__pycache__), and
        would compile its code again at every start.
      - The files written in this run are compiled whatever their bytecode says (a file written again
        within a second keeps its modification time).
      - When it is the interpreter running this module the files are compiled in this run; another one
        runs C(compileall).
      - Check mode compiles nothing.
    type: path
attributes:
  check_mode:
    description: Reports the files that would change and writes nothing.
    support: full
  diff_mode:
    description: No diff is returned (the files are program code, named in RV(written)).
    support: none
author: replimesh developers (@replimesh)
"""

EXAMPLES = r"""
- name: Install the runner's code
  replimesh.mesh.mesh_files:
    src: replimesh_node
    files: [__init__.py, mesh_runner.py]
    dest: /usr/local/lib/replimesh/replimesh_node
    absent: [mesh_status.py]
"""

RETURN = r"""
written:
  description: The files written (new, or different bytes), and the directories created.
  returned: always
  type: list
  elements: str
fixed:
  description: The files (and O(dest), and O(paths)) whose mode or owner was corrected, bytes unchanged.
  returned: always
  type: list
  elements: str
removed:
  description: The files of O(absent) that were there and were removed.
  returned: always
  type: list
  elements: str
compiled:
  description: The files byte-compiled for O(compile_for) (their bytecode was missing or stale).
  returned: always
  type: list
  elements: str
"""

import base64
import binascii
import os
import py_compile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_bytecode import compile_stale
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_layout import (
    Entry,
    LayoutError,
    check_kinds,
    converge,
    octal_mode,
    parse,
    plain_name,
)

ARGUMENT_SPEC = {
    "src": {"type": "str", "required": True},
    "files": {"type": "raw", "required": True},
    "dest": {"type": "path", "required": True},
    "mode": {"type": "str", "default": "0644"},
    "dir_mode": {"type": "str", "default": "0755"},
    "absent": {"type": "list", "elements": "str", "default": []},
    "paths": {"type": "list", "elements": "dict", "default": []},
    "compile_for": {"type": "path"},
}


def _mode(module: AnsibleModule, name: str) -> int:
    try:
        value = octal_mode(module.params[name], name)
    except LayoutError as exc:
        module.fail_json(msg=str(exc))
    return value


def _wanted(module: AnsibleModule) -> dict[str, bytes]:
    """Every file's bytes, or a failure before anything changes."""
    wanted: dict[str, bytes] = {}
    files = module.params["files"]
    if not isinstance(files, dict):
        module.fail_json(
            msg="files: the module takes a mapping of names to contents (run it through its action)"
        )
    for name, encoded in files.items():
        if not plain_name(name):
            module.fail_json(msg=f"files: {name!r} is not a plain file name")
        try:
            wanted[name] = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            module.fail_json(msg=f"files: {name}: its content is not base64 (use the action plugin)")
    for name in module.params["absent"]:
        if not plain_name(name) or name in wanted:
            module.fail_json(msg=f"absent: {name!r} is not a plain file name, or it is also to be installed")
    return wanted


def _entries(module: AnsibleModule, wanted: dict[str, bytes]) -> list[Entry]:
    """The directory, its files and the absent names, as mesh_layout entries owned by the task's user."""
    dest, uid, gid = module.params["dest"], os.geteuid(), os.getegid()
    mode, dir_mode = _mode(module, "mode"), _mode(module, "dir_mode")
    return [
        Entry(path=dest, state="directory", uid=uid, gid=gid, mode=dir_mode),
        *(
            Entry(path=os.path.join(dest, name), state="file", content=data, uid=uid, gid=gid, mode=mode)
            for name, data in sorted(wanted.items())
        ),
        *(Entry(path=os.path.join(dest, name), state="absent") for name in module.params["absent"]),
    ]


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    wanted = _wanted(module)
    entries = _entries(module, wanted)
    try:
        entries += parse(module.params["paths"], check_mode=module.check_mode, kinds=False)
        check_kinds(entries)
    except LayoutError as exc:
        module.fail_json(msg=str(exc))
    try:
        changes = converge(entries, apply=not module.check_mode)
    except (LayoutError, OSError) as exc:
        module.fail_json(msg=f"could not install the files into {module.params['dest']}: {exc}")
    compiled: list[str] = []
    python = module.params["compile_for"]
    if python and not module.check_mode:
        sources = [
            os.path.join(module.params["dest"], name) for name in sorted(wanted) if name.endswith(".py")
        ]
        try:
            compiled = compile_stale(sources, python, written=frozenset(changes.written))
        except (OSError, SyntaxError, py_compile.PyCompileError) as exc:
            module.fail_json(
                msg=f"could not compile the files in {module.params['dest']} for {python}: {exc}"
            )
    # A directory created counts as written, as before `paths` (a mesh_layout list) was taken too.
    module.exit_json(
        changed=changes.changed or bool(compiled),
        compiled=compiled,
        written=changes.created + changes.written,
        fixed=changes.fixed,
        removed=changes.removed,
    )


if __name__ == "__main__":
    main()
