#!/usr/bin/python
"""Ansible module: digest a node's synced folders, or compare every node's digests on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_digest
short_description: Digest a replimesh node's synced folders, or compare the digests of the whole mesh
description:
  - With O(folders), runs on a node (as root) and computes, per synced folder, the size, mode (octal) and
    sha256 of every file, plus one root hash over them (sha256 of the sorted C(path\0size\0mode\0sha) lines).
  - It sees a folder as Unison does. It leaves out the folder marker, Unison's temporary files
    (C(.unison.*.tmp)) and the folder's ignore patterns, matched the way the mesh's Unison profiles
    use them - a pattern without C(/) is a C(Name) (the last path component), one with C(/) is a
    C(Path) (the whole relative path), C(*) and C(?) never match C(/) nor a name's leading dot, C({a,b})
    gives alternatives, and an ignored directory hides everything below it.
  - It also leaves out what the node ignores on its own (the patterns of its C(FOLDER/.replimeshignore),
    and that file), and reports those patterns; with O(compare), a node is not counted as lacking or
    differing on a path it ignores.
  - Conflict copies (named V(NAME (conflict_on_DATE\).EXT)) are digested like any other file and also
    listed apart.
    A symlink is digested with mode C(link) and the hash of its target.
  - Each folder's previous digest is cached on the node (O(cache_dir)), so only files whose size, mtime,
    ctime or inode changed are hashed again. The module only reads the folders, so it reports
    C(changed=false); the cache is bookkeeping, written atomically, and not written in check mode.
  - With O(compare), runs on the controller and compares the registered results of the digest task of
    every node, with the same core that C(meshctl verify) uses.
options:
  folders:
    description: The folders to digest, as the inventory plugin gives them in C(mesh_folders).
    type: list
    elements: dict
    suboptions:
      name:
        description: The folder's mesh name (names the cache file).
        type: str
        required: true
      path:
        description: The folder's absolute path on the node.
        type: path
        required: true
      ignore:
        description: The folder's ignore patterns, as in the mesh file.
        type: list
        elements: str
        default: []
  files:
    description:
      - With O(folders), return each folder's file list (C(files) in RV(folders)), not only its root and
        counts.
      - C(verify.yml) asks first without it, and for the lists only when the roots differ.
    type: bool
    default: true
  marker:
    description: The folder marker file, never digested.
    type: str
    default: .replimesh-folder
  cache_dir:
    description: Where the per-folder digest caches are kept on the node (C(NAME.json), root only).
    type: path
    default: /var/lib/replimesh/state/digest
  compare:
    description:
      - Node name -> the registered result of this module's O(folders) run on that node (an unreachable
        or failed node's result too; an empty one means the node was not reached).
      - Mutually exclusive with O(folders).
    type: dict
  details:
    description:
      - With O(compare), node name -> the registered result of a later run with the file lists
        (O(files=true)); it replaces that node's entry of O(compare). Skipped results are passed over.
    type: dict
    default: {}
  allow_unreachable:
    description: With O(compare), an unreachable node does not make RV(exit_code) non-zero.
    type: bool
    default: false
  limit:
    description: With O(compare), how many diverging paths RV(lines) lists at most.
    type: int
    default: 50
  output:
    description:
      - With O(compare), also write every node's digest to this file on the controller, mode 0600, as the
        JSON object of C(digests) (node -> folders and hashed), C(unreachable) and C(failed) (node -> reason)
        that C(meshctl verify) reads.
    type: path
author: replimesh developers (@replimesh)
"""

EXAMPLES = r"""
- name: Digest this node's synced folders
  mesh_digest:
    folders: "{{ mesh_folders }}"
  register: mesh_digest_result
  ignore_unreachable: true

- name: Compare the digests of every node (on the controller)
  mesh_digest:
    compare: "{{ dict(groups['mesh'] | zip(groups['mesh'] | map('extract', hostvars)
                 | map(attribute='mesh_digest_result', default={}))) }}"
  register: verify_report
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
folders:
  description: Per folder name, its digest on this node (with O(folders)).
  returned: with folders
  type: dict
  sample:
    shared:
      root: 5f2b0c...
      files: {"docs/a.txt": [12, "0644", "e3b0c4..."]}  # with files=true
      conflict_copies: ["notes (conflict_on_2026-11-25).md"]
      local_ignore: ["*.log"]  # this node's own patterns (FOLDER/.replimeshignore), left out of its digest
      count: 2
      bytes: 40
      marker: true
      error: null
hashed:
  description: How many files were hashed this time (the others came from the cache).
  returned: with folders
  type: int
report:
  description: The comparison (identical, per folder the diverging paths with which nodes hold which
    version and which lack the file, conflict copies, unreachable and failed nodes, hashed per node).
  returned: with compare
  type: dict
identical:
  description: Whether every reachable replica of every folder is identical.
  returned: with compare
  type: bool
exit_code:
  description: 0 only when every reachable replica is identical and no node is unreachable (unless
    O(allow_unreachable)); 1 otherwise.
  returned: with compare
  type: int
output_changed:
  description: Whether O(output) was written with new content (the report file is not a change to the mesh).
  returned: with compare and output
  type: bool
lines:
  description: The report as text lines, for a person.
  returned: with compare
  type: list
  elements: str
"""

import json
import os
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_digest import (
    CacheError,
    DigestError,
    classify,
    compare,
    digest_folder,
    exit_code,
    load_cache,
    render_lines,
    save_cache,
)
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_localignore import (
    LocalIgnoreError,
    local_patterns,
    node_patterns,
)
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_names import NAME_RE


def _write_output(module: AnsibleModule, path: str, content: bytes) -> bool:
    """Write the report file atomically, mode 0600; False when it already held exactly that."""
    try:
        with open(path, "rb") as handle:
            if handle.read() == content:
                return False
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=".mesh-digest-", dir=os.path.dirname(path) or ".")
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    module.atomic_move(tmp, path)
    os.chmod(path, 0o600)  # atomic_move gives a new file the umask's mode; the digests name every file
    return True


def digest(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    folders: dict[str, Any] = {}
    hashed = 0
    for folder in params["folders"]:
        name, path = folder["name"], folder["path"]
        if not NAME_RE.fullmatch(name) or not os.path.isabs(path):
            module.fail_json(msg=f"folder {name!r} needs a name of a-z, 0-9, '_', '-' and an absolute path")
        try:
            cache = load_cache(params["cache_dir"], name, path)
        except CacheError as exc:
            module.warn(str(exc))
            cache = None
        try:
            local = local_patterns(path)
        except LocalIgnoreError as exc:
            folders[name] = {"error": str(exc), "marker": True}
            continue
        patterns = node_patterns(folder["ignore"] or [], local)
        try:
            result = digest_folder(path, patterns, marker=params["marker"], cache=cache)
        except DigestError as exc:
            where = "this node's .replimeshignore" if local else "the mesh file"
            module.fail_json(msg=f"folder {name}: {exc}; fix the pattern in {where}")
        folders[name] = {**result.result(files=params["files"]), "local_ignore": local}
        hashed += result.hashed
        if module.check_mode or cache is None or result.error or result.cache == cache:
            continue
        # Not module.atomic_move: the cache directory's parent belongs to the mesh user, so the core writes
        # through a descriptor of the directory it checked (see save_cache).
        try:
            save_cache(params["cache_dir"], name, path, result.cache)
        except (OSError, CacheError) as exc:
            module.warn(f"the digest cache of {name} was not written ({exc}); the next digest hashes it all")
    return {"changed": False, "folders": folders, "hashed": hashed}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "folders": {
                "type": "list",
                "elements": "dict",
                "options": {
                    "name": {"type": "str", "required": True},
                    "path": {"type": "path", "required": True},
                    "ignore": {"type": "list", "elements": "str", "default": []},
                },
            },
            "files": {"type": "bool", "default": True},
            "marker": {"type": "str", "default": ".replimesh-folder"},
            "cache_dir": {"type": "path", "default": "/var/lib/replimesh/state/digest"},
            "compare": {"type": "dict"},
            "details": {"type": "dict", "default": {}},
            "allow_unreachable": {"type": "bool", "default": False},
            "limit": {"type": "int", "default": 50},
            "output": {"type": "path"},
        },
        mutually_exclusive=[("folders", "compare")],
        required_one_of=[("folders", "compare")],
        supports_check_mode=True,
    )
    params = module.params
    if params["folders"] is not None:
        module.exit_json(**digest(module))
    inputs = classify(params["compare"], params["details"])
    report = compare(**inputs)
    extra: dict[str, Any] = {}
    if params["output"]:
        content = json.dumps(inputs, separators=(",", ":")).encode()
        try:
            extra["output_changed"] = _write_output(module, params["output"], content)
        except OSError as exc:
            module.fail_json(msg=f"could not write {params['output']}: {exc}")
    # The digests are not echoed back as the invocation: megabytes for a large mesh, read by nobody.
    args = {key: value for key, value in params.items() if key not in ("compare", "details")}
    module.exit_json(
        changed=False,
        invocation={"module_args": args},
        **extra,
        report=report,
        identical=report["identical"],
        exit_code=exit_code(report, params["allow_unreachable"]),
        lines=render_lines(report, params["limit"]),
    )


if __name__ == "__main__":
    main()
