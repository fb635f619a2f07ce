#!/usr/bin/python
"""Ansible module: make a list of a node's paths (directories, files, absent paths) match, in one run."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_layout
short_description: Make a list of directories, files and absent paths match, in one round trip
description:
  - Applies O(paths) in order, each like M(ansible.builtin.file) (C(directory), C(absent)) or
    M(ansible.builtin.copy) with C(content) (C(file)); C(attributes) sets the owner, group and mode of an
    existing file made by other means (a key written by ssh-keygen).
  - One module run per host whatever the number of paths. A role that runs M(ansible.builtin.file) or
    M(ansible.builtin.template) once per path pays a round trip, and on a fleet a Python start on every
    node, for each, and that is most of a no-change provisioning run's time (bench/RESULTS.md measures it).
  - Every entry is checked before anything changes (its keys, its mode, that its owner and group
    exist, that no path of another kind is in the way), so a bad entry changes nothing.
  - A C(file) is written to a temporary file beside it, owned and moded, then renamed into place, so a
    program that starts meanwhile reads the old file or the new one. A symbolic link at a C(file) path
    is replaced, not written through (as M(ansible.builtin.copy) does). A link to a directory at a
    C(directory) path is followed (as M(ansible.builtin.file) does), a dangling one is replaced; links
    among the parents are followed.
  - A missing parent of a C(directory) is created with the same owner, group and mode, as
    M(ansible.builtin.file) does. C(absent) removes a file, a link, or a directory with its contents.
  - Supports check mode (the paths that would change are returned, nothing is written). An owner or
    group that does not exist yet (the task creating it did not run in check mode) then counts as a
    change rather than an error.
options:
  paths:
    description:
      - The entries, applied in this order.
      - Each is a mapping with C(path) (absolute), C(state) (C(directory), C(file) (the default),
        C(absent) or C(attributes)), C(content) (text, for C(file) only; a template's text through the
        M(ansible.builtin.template) lookup), C(owner) and C(group) (names; left as they are when
        omitted), C(mode) (octal, as a string; required for C(directory) and C(file)) and C(validate) (for
        C(file), a command with C(%s) that must accept the new file before it replaces the old one, as
        M(ansible.builtin.template)'s C(validate)).
    type: list
    elements: dict
    required: true
attributes:
  check_mode:
    description: Reports the paths that would change and changes nothing.
    support: full
  diff_mode:
    description: No diff is returned (the paths that changed are named in the results).
    support: none
author: replimesh developers (@replimesh)
"""

EXAMPLES = r"""
- name: Install the runner command and its directories
  replimesh.mesh.mesh_layout:
    paths:
      - path: /usr/local/sbin/replimesh-sync
        content: "{{ lookup('ansible.builtin.template', 'replimesh-sync.j2') }}"
        owner: root
        group: root
        mode: "0755"
      - {path: /var/lib/replimesh/status, state: directory, owner: replimesh, group: replimesh, mode: "0750"}
      - {path: /etc/systemd/system/replimesh-sync.timer, state: absent}
"""

RETURN = r"""
created:
  description: The directories created (a missing parent included).
  returned: always
  type: list
  elements: str
written:
  description: The files written (new, or different bytes).
  returned: always
  type: list
  elements: str
fixed:
  description: The paths whose owner, group or mode was corrected, contents unchanged.
  returned: always
  type: list
  elements: str
removed:
  description: The paths that were there and were removed.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_layout import LayoutError, converge, parse


def main() -> None:
    module = AnsibleModule(
        argument_spec={"paths": {"type": "list", "elements": "dict", "required": True}},
        supports_check_mode=True,
    )
    try:
        entries = parse(module.params["paths"], check_mode=module.check_mode)
    except LayoutError as exc:
        module.fail_json(msg=str(exc))
    try:
        changes = converge(entries, apply=not module.check_mode)
    except LayoutError as exc:  # a validate command refused a file: it and the paths after it are unchanged
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"could not lay out {getattr(exc, 'filename', None) or 'a path'}: {exc}")
    module.exit_json(changed=changes.changed, **changes.as_dict())


if __name__ == "__main__":
    main()
