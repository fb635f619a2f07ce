#!/usr/bin/python
"""Ansible module: a node's mesh key through a rotation (query, prepare the next key, switch to it)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_key
short_description: Prepare and switch a replimesh node's mesh key during a key rotation
description:
  - Used by C(rotate-keys.yml). The private keys never leave the node; the module returns public keys.
  - C(state=query) reports the key in use and the prepared next key, and changes nothing.
  - C(state=next) makes a new key beside the one in use (C(KEY.next)), unless one is already prepared or
    the node already switched to the stored next key (a rotation interrupted after its switch).
  - C(state=current) makes C(expect) the key in use. When it is the prepared next key, C(KEY.next) is
    renamed over C(KEY) while every edge lock of the node is held, so no sync run of the node reads
    half-switched key files; C(KEY.pub) is rewritten from the private key, and the node's shared ssh
    connections (opened with the old key) are ended.
  - Refuses (before changing anything) a node whose key in use is neither of the stored ones.
  - Supports check mode.
options:
  state:
    description: What to do.
    type: str
    choices: [query, next, current]
    default: query
  key:
    description: The node's mesh key (private; C(.pub) beside it).
    type: path
    default: /var/lib/replimesh/.ssh/id_ed25519
  user:
    description: The mesh user, owner of the key files and of the edge locks.
    type: str
    default: replimesh
  comment:
    description: Comment of a new key.
    type: str
    default: replimesh
  stored:
    description:
      - The control node's key store record of this node (C(public_key), C(host_key), and
        C(next_public_key) while a rotation is under way). Returned updated as C(record).
    type: dict
    default: {}
  expect:
    description: With C(state=current), the public key that must end up in use.
    type: str
  config_file:
    description: The runner's config, naming the node's peers (one edge lock each).
    type: path
    default: /etc/replimesh/mesh.json
  locks_dir:
    description: The runner's per-edge lock files.
    type: path
    default: /var/lib/replimesh/state/locks
  lock_timeout:
    description: Seconds to wait for the node's edges to be free of sync runs before switching.
    type: int
    default: 600
author: replimesh developers (@replimesh)
"""

EXAMPLES = r"""
- name: Make a next key beside the one in use
  mesh_key:
    state: next
    comment: replimesh@node1
    stored: "{{ lookup('ansible.builtin.file', mesh_keystore ~ '/node1.json') | from_json }}"
  register: keys

- name: Record both keys; let every peer accept both (mesh_member)
  ansible.builtin.copy:
    content: "{{ keys.record | to_nice_json }}"
    dest: "{{ mesh_keystore }}/node1.json"
    mode: "0644"
  delegate_to: localhost

- name: Switch to it (every peer accepts it by now)
  mesh_key:
    state: current
    expect: "{{ keys.next_public_key }}"
"""

RETURN = r"""
state:
  description: Where the node was in a rotation (idle, prepared, switched, unknown) before this call.
  returned: always
  type: str
public_key:
  description: The key in use after this call (C(TYPE BASE64)).
  returned: always
  type: str
next_public_key:
  description: The prepared next key after this call, or null.
  returned: always
  type: str
fingerprint:
  description: SHA256 fingerprint of the key in use.
  returned: always
  type: str
switched:
  description: Whether this call switched the node to its next key.
  returned: always
  type: bool
record:
  description:
    - The key store record to keep after this call. C(state=next) keeps the trusted key and adds the
      next one as C(next_public_key); C(state=current) keeps the key in use alone.
  returned: always
  type: dict
"""

import contextlib
import json
import os
import pwd
import shutil
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_key import (
    SWITCHED,
    UNKNOWN,
    KeyPaths,
    KeyRotationError,
    begin_record,
    finish_record,
    hold_locks,
    key_id,
    lock_paths,
    rotation_state,
)

ARGUMENT_SPEC = {
    "state": {"type": "str", "choices": ["query", "next", "current"], "default": "query"},
    "key": {"type": "path", "default": "/var/lib/replimesh/.ssh/id_ed25519", "no_log": False},
    "user": {"type": "str", "default": "replimesh"},
    "comment": {"type": "str", "default": "replimesh"},
    "stored": {"type": "dict", "default": {}},
    "expect": {"type": "str"},
    "config_file": {"type": "path", "default": "/etc/replimesh/mesh.json"},
    "locks_dir": {"type": "path", "default": "/var/lib/replimesh/state/locks"},
    "lock_timeout": {"type": "int", "default": 600},
}


class Node:
    """The node's key files, read and changed through ssh-keygen and atomic renames."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.paths = KeyPaths(module.params["key"])
        self.keygen = module.get_bin_path("ssh-keygen", required=True)

    def public_of(self, private: str) -> str | None:
        """The public key of a private key file (never trusting a .pub beside it); None when absent."""
        if not os.path.exists(private):
            return None
        rc, out, err = self.module.run_command([self.keygen, "-y", "-f", private])
        if rc != 0:
            self.module.fail_json(msg=f"cannot read the mesh key {private}: {err.strip() or out.strip()}")
        return key_id(out)

    def fingerprint(self) -> str:
        rc, out, _err = self.module.run_command([self.keygen, "-l", "-f", self.paths.key])
        return out.split()[1] if rc == 0 and len(out.split()) > 1 else ""

    def owner(self) -> tuple[int, int]:
        try:
            entry = pwd.getpwnam(self.module.params["user"])
        except KeyError:
            self.module.fail_json(msg=f"the mesh user {self.module.params['user']!r} does not exist")
        return entry.pw_uid, entry.pw_gid

    def write_public(self, path: str, line: str) -> bool:
        """Write a .pub file atomically (owned by the mesh user); False when it already held the key."""
        try:
            with open(path, encoding="utf-8") as handle:
                if key_id(handle.read()) == key_id(line):
                    return False
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(prefix=".pub.", dir=os.path.dirname(path))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"{line} {self.module.params['comment']}\n")
        os.chown(tmp, *self.owner())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return True

    def generate_next(self) -> None:
        """A new key made in a private temporary directory, then renamed into place as KEY.next."""
        workdir = tempfile.mkdtemp(prefix=".next.", dir=os.path.dirname(self.paths.key))
        try:
            made = os.path.join(workdir, "key")
            argv = [self.keygen, "-q", "-t", "ed25519", "-N", "", "-C", self.module.params["comment"]]
            rc, out, err = self.module.run_command([*argv, "-f", made])
            if rc != 0:
                self.module.fail_json(msg=f"ssh-keygen failed: {err.strip() or out.strip()}")
            for path, mode in ((made, 0o600), (f"{made}.pub", 0o644)):
                os.chown(path, *self.owner())
                os.chmod(path, mode)
            # The private key last: its presence is what marks a node as prepared.
            os.replace(f"{made}.pub", self.paths.next_public)
            os.replace(made, self.paths.next)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def edge_locks(self) -> list[str]:
        params = self.module.params
        try:
            with open(params["config_file"], encoding="utf-8") as handle:
                peers = [peer["name"] for peer in json.load(handle).get("peers", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            peers = []
        try:
            existing = os.listdir(params["locks_dir"])
        except OSError:
            existing = []
        paths = lock_paths(params["locks_dir"], peers, existing)
        for path in paths:  # a lock the runner has not made yet: made here as it would make it
            if os.path.isdir(params["locks_dir"]) and not os.path.exists(path):
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
                os.fchown(fd, *self.owner())
                os.close(fd)
        return [path for path in paths if os.path.exists(path)]

    def switch(self, expect: str) -> None:
        """KEY.next becomes KEY, with no sync run of this node between the two halves' renames."""
        with hold_locks(self.edge_locks(), self.module.params["lock_timeout"]):
            os.replace(self.paths.next, self.paths.key)
            self.write_public(self.paths.public, expect)
            self.end_shared_connections()
        self.drop_next_public()

    def end_shared_connections(self) -> None:
        """End the node's shared ssh connections (``mux-*`` sockets beside the key, opened with the old
        key): its next pull and notice log in with the new key, so a key the peers refuse shows at once."""
        directory = os.path.dirname(self.paths.key)
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            try:
                if not name.startswith("mux-") or not stat.S_ISSOCK(os.lstat(path).st_mode):
                    continue
            except FileNotFoundError:
                continue  # its master exited meanwhile
            self.module.run_command(["timeout", "10", "ssh", "-F", "none", "-S", path, "-O", "exit", "peer"])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a master that did not answer: no new session can find it

    def drop_next_public(self) -> bool:
        """Remove KEY.next.pub when no KEY.next is left beside it; True when there was one."""
        if os.path.exists(self.paths.next) or not os.path.lexists(self.paths.next_public):
            return False
        os.unlink(self.paths.next_public)
        return True


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[("state", "current", ["expect"])],
        supports_check_mode=True,
    )
    params = module.params
    node = Node(module)
    current = node.public_of(node.paths.key)
    if current is None:
        module.fail_json(msg=f"{node.paths.key} does not exist: bootstrap.yml or add-node.yml makes the key")
    next_key = node.public_of(node.paths.next)
    stored = params["stored"]
    state = rotation_state(current, next_key, stored.get("public_key"), stored.get("next_public_key"))
    result = {"changed": False, "state": state, "switched": False, "record": stored}
    if state == UNKNOWN and params["state"] != "query":
        module.fail_json(
            msg=(
                f"the mesh key in use ({current[:40]}...) is neither the one the key store trusts nor its "
                "next one (reinstalled node, or a key replaced by hand?): nothing was changed. Accept the "
                "node's keys with add-node.yml -e node=NAME first."
            ),
            **result,
        )
    try:
        if params["state"] == "next" and state != SWITCHED and next_key is None:
            result["changed"] = True
            if not module.check_mode:
                node.generate_next()
                next_key = node.public_of(node.paths.next)
        elif params["state"] == "current":
            expect = key_id(params["expect"])
            if current == expect:
                # A switch interrupted between its renames, or a .pub edited by hand: heal it.
                if not module.check_mode:
                    healed = node.write_public(node.paths.public, current)
                    result["changed"] = node.drop_next_public() or healed
            elif next_key is not None and next_key == expect:
                result.update(changed=True, switched=True)
                if not module.check_mode:
                    node.switch(expect)
                    current, next_key = expect, None
            else:
                module.fail_json(
                    msg=f"neither the key in use nor the prepared next key is {str(expect)[:40]}...: "
                    "nothing was switched; run rotate-keys.yml again from the start",
                    **result,
                )
    except (OSError, KeyRotationError) as exc:
        module.fail_json(msg=f"key rotation on this node failed: {exc}", **result)
    if params["state"] == "next":
        # Already switched: the key in use is the next one the peers must go on accepting.
        upcoming = current if state == SWITCHED else next_key or current
        result["record"] = begin_record(stored, current, upcoming)
    elif params["state"] == "current":
        result["record"] = finish_record(stored, key_id(params["expect"]) or current)
    module.exit_json(**result, public_key=current, next_public_key=next_key, fingerprint=node.fingerprint())


if __name__ == "__main__":
    main()
