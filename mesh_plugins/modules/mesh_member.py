#!/usr/bin/python
"""Ansible module: make a node's view of the mesh (peers, keys, profiles) what the control node decided."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_member
short_description: Write a replimesh node's peer list, trusted keys and per-edge Unison profiles
description:
  - Makes the node's view of the mesh exactly what the control node decided, and removes what belongs to
    edges that no longer exist. Only the control node ever decides it; nodes never learn peers elsewhere.
  - Writes the runner's config (C(config_file)) and the peers' pinned host keys (C(known_hosts)), and
    creates their directory (root's, mode 0755) when it is missing.
  - Gives each peer its own login C(USER-PEER) (the mesh user's uid and gid under another name, in
    C(peers_group)), its key in C(authorized_keys_dir/USER-PEER), and its own chroot jail
    C(jails_dir/USER-PEER) holding the template jail's shell, Unison and forced command (hard links), the
    folders (recursive bind mounts, read-only, nosuid, nodev; also written to /etc/fstab), the edge's
    Unison directory (root:USER 01770; C(unison_dir/PEER) links to it) and a notice directory. A peer's
    key reads the folders and writes its own edge's archive, nothing of the host, nothing of another edge.
  - Every run pulls, with the node's own profile (C(profiles_dir/PEER--FOLDER.prf), root-owned, out of
    every jail); the peer's root is C(noupdate), C(nodeletion), C(nocreation). In the edge's Unison
    directory every name Unison reads as a setting is a root-owned link the peer cannot replace.
  - Everything of a peer that is gone is removed (login, keys, jail after unmounting it, the link under
    C(unison_dir), status and lock files, profiles). Versions an earlier layout kept inside a jail move to
    C(backup_dir/.retired/USER-PEER-TIME). Profiles of folders no longer configured are removed.
  - Every input is checked before anything changes. Files are written atomically.
  - Supports check mode and diff mode.
options:
  node:
    description: This node's mesh name.
    type: str
    required: true
  user:
    description:
      - The mesh user; its group owns the per-edge directories.
      - It must exist, and neither it nor its group may have id 0 (every peer logs in with its ids).
    type: str
    default: replimesh
  folders:
    description: The synced folders.
    type: list
    required: true
    elements: dict
    suboptions:
      name: {description: Folder name (a-z 0-9 _ -)., type: str, required: true}
      path: {description: Absolute path; the same on every node., type: str, required: true}
      ignore:
        description: Unison ignore patterns (C(Path) when the pattern holds a slash; C(Name) otherwise).
        type: list
        elements: str
        default: []
  peers:
    description: This node's peers (may be empty).
    type: list
    required: true
    elements: dict
    suboptions:
      name: {description: The peer's mesh name., type: str, required: true}
      address:
        description:
          - Host name or IP address the peer is reached at and connects from.
          - A host name is resolved on the node, and its addresses go into the peer's C(from=) (sshd matches
            it against the client's IP address); one that does not resolve there fails the module.
        type: str
        required: true
      port: {description: The peer's ssh port., type: int, default: 22}
      initiator: {description: Whether this node starts the edge., type: bool, required: true}
      active:
        description: C(false) while the edge is being set up (trusted and written; not synced by default).
        type: bool
        default: true
      public_key: {description: The peer's mesh key (C(ssh-ed25519 AAAA...))., type: str, required: true}
      next_public_key:
        description: The peer's new mesh key while it rotates keys, accepted beside C(public_key).
        type: str
      host_key: {description: The peer's ssh host key (C(TYPE BASE64))., type: str, required: true}
  concurrency:
    description: Unison runs the runner has at once (edges, and the folders of an edge, together).
    type: int
    default: 4
  timeout:
    description: Seconds an edge may take.
    type: int
    default: 3600
  connect_timeout:
    description: Seconds ssh waits for a peer.
    type: int
    default: 10
  server_alive_interval:
    description: ssh ServerAliveInterval in the profiles.
    type: int
    default: 5
  ssh_control_persist:
    description:
      - Seconds one ssh connection to a peer stays open after its last use, shared by every pull from
        and every change notice to that peer (ssh's ControlMaster and ControlPersist).
      - V(0) opens a connection for each pull and notice.
    type: int
    default: 60
  ssh_ciphers:
    description:
      - The ciphers this node's ssh prefers for its pulls and notices, put at the head of OpenSSH's own
        list (C(Ciphers=^...)), so a peer whose sshd allows none of them still gets one of the defaults.
      - Empty chooses from the node's CPU (C(/proc/cpuinfo)); with AES instructions AES-GCM first, else
        ChaCha20-Poly1305 first (both AEAD ciphers, each with its own MAC).
    type: list
    elements: str
    default: []
  marker:
    description: The folder marker file (Unison's mountpoint).
    type: str
    default: .replimesh-folder
  unison_extra_prefs:
    description:
      - Extra profile lines, each C(name = value).
      - Preferences replimesh sets itself or that guard the node (roots, ssh, perms, backups, deletions,
        ignores, links, includes, anything ending in C(UNSAFE), ...) are refused.
    type: list
    default: []
    elements: str
  backups:
    description:
      - Old versions Unison keeps of each overwritten or deleted file, in C(backup_dir/FOLDER); 0 keeps none.
    type: int
    default: 0
  backups_max_age_days:
    description: Days a version is kept at most; the runner removes older ones hourly. 0 is no age bound.
    type: int
    default: 0
  backups_max_percent:
    description:
      - Share (percent) of their disk a folder's versions may take; the runner removes the oldest past it
        hourly. 0 is no size bound.
    type: int
    default: 0
  max_deletions:
    description:
      - The mass-deletion brake, C(N) files or C(N%) of a folder at most deleted by one pull; more stops the
        edge, deletes nothing, until an operator allows it once.
    type: str
    default: 50%
  profiles_dir:
    description: Root-owned directory of the edges' Unison profiles.
    type: path
    default: /etc/replimesh/profiles
  backup_dir:
    description: Parent of the per-folder backup directories (outside every folder and every jail).
    type: path
    default: /var/lib/replimesh/backups
  jails_dir:
    description: Parent of the per-peer chroot jails (sshd's C(ChrootDirectory jails_dir/%u)).
    type: path
    default: /var/lib/replimesh/jails
  jail_template:
    description: The jail the mesh_ssh role builds (shell, Unison, libraries), hard-linked into each jail.
    type: path
    default: /var/lib/replimesh/jail
  peers_group:
    description: The group of the peers' logins (sshd's C(Match Group)); it must exist.
    type: str
    default: replimesh-peers
  fstab:
    description: The file system table the jails' bind mounts are written to, so they come back at boot.
    type: path
    default: /etc/fstab
  config_file:
    description: The runner's config.
    type: path
    default: /etc/replimesh/mesh.json
  authorized_keys_dir:
    description: Root-owned directory of the keys files sshd reads (C(AuthorizedKeysFile DIR/%u)).
    type: path
    default: /etc/ssh/authorized_keys
  known_hosts:
    description: The peers' pinned host keys.
    type: path
    default: /etc/replimesh/known_hosts
  unison_dir:
    description: Parent of the per-edge Unison directories.
    type: path
    default: /var/lib/replimesh/unison
  state_dir:
    description: The runner's state (status and lock files).
    type: path
    default: /var/lib/replimesh/state
  log_file:
    description: The runner's log.
    type: path
    default: /var/log/replimesh/sync.log
  key:
    description: This node's mesh key.
    type: path
    default: /var/lib/replimesh/.ssh/id_ed25519
  unison_binary:
    description: Unison on the node.
    type: path
    default: /usr/bin/unison
author: replimesh developers (@replimesh)
"""

EXAMPLES = r"""
- name: Make node1's view of the mesh
  mesh_member:
    node: node1
    folders: [{name: shared, path: /srv/replimesh/shared, ignore: ["*.tmp"]}]
    peers:
      - name: node2
        address: 10.0.0.12
        initiator: true
        public_key: "{{ hostvars['node2'].mesh_ssh_public_key }}"
        host_key: "{{ hostvars['node2'].mesh_ssh_host_key }}"
"""

RETURN = r"""
ssh_ciphers:
  description: The ciphers this node's ssh prefers, in order (configured, or chosen from its CPU).
  returned: always
  type: list
  elements: str
  sample: [aes128-gcm@openssh.com, aes256-gcm@openssh.com, chacha20-poly1305@openssh.com]
peers_added:
  description: Peers that had no edge directory before.
  returned: always
  type: list
  elements: str
peers_removed:
  description: Former peers whose edge directory was removed.
  returned: always
  type: list
  elements: str
peers_kept:
  description: Peers that had an edge directory and keep it.
  returned: always
  type: list
  elements: str
written:
  description: Files written (new or changed content).
  returned: always
  type: list
  elements: str
created:
  description: Directories created.
  returned: always
  type: list
  elements: str
fixed:
  description: Paths whose mode or owner was corrected.
  returned: always
  type: list
  elements: str
removed:
  description: Paths removed (directories with their contents).
  returned: always
  type: list
  elements: str
logins_added:
  description: Peers' logins created.
  returned: always
  type: list
  elements: str
logins_removed:
  description: Logins of former peers removed (with their jails).
  returned: always
  type: list
  elements: str
mounted:
  description: Folders bind-mounted into jails (mount points).
  returned: always
  type: list
  elements: str
remounted:
  description: Mounts in jails made read-only, nosuid, nodev (an earlier layout bound folders writable).
  returned: always
  type: list
  elements: str
retired:
  description: Logins whose jail's versions (an earlier layout) moved to C(backup_dir/.retired).
  returned: always
  type: list
  elements: str
"""

import grp
import os
import pwd
import shutil
import stat

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_cipher import hardware_aes, preferred
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_jail import JailError, Jails, apply_jails
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_layout import fix_owner_mode, write_atomic
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_member import (
    Entry,
    Existing,
    MemberError,
    MemberSpec,
    Plan,
    Stat,
    desired_entries,
    plan,
    spec_from_params,
    with_sources,
)

FOLDER = {"name": {"type": "str", "required": True}, "path": {"type": "str", "required": True},
          "ignore": {"type": "list", "elements": "str", "default": []}}  # fmt: skip
PEER = {
    "name": {"type": "str", "required": True},
    "address": {"type": "str", "required": True},
    "port": {"type": "int", "default": 22},
    "initiator": {"type": "bool", "required": True},
    "active": {"type": "bool", "default": True},
    "public_key": {"type": "str", "required": True, "no_log": False},
    "next_public_key": {"type": "str", "no_log": False},
    "host_key": {"type": "str", "required": True, "no_log": False},
}
ARGUMENT_SPEC = {
    "node": {"type": "str", "required": True},
    "user": {"type": "str", "default": "replimesh"},
    "folders": {"type": "list", "elements": "dict", "required": True, "options": FOLDER},
    "peers": {"type": "list", "elements": "dict", "required": True, "options": PEER},
    "concurrency": {"type": "int", "default": 4},
    "timeout": {"type": "int", "default": 3600},
    "connect_timeout": {"type": "int", "default": 10},
    "server_alive_interval": {"type": "int", "default": 5},
    "ssh_control_persist": {"type": "int", "default": 60},
    "ssh_ciphers": {"type": "list", "elements": "str", "default": []},
    "marker": {"type": "str", "default": ".replimesh-folder"},
    "unison_extra_prefs": {"type": "list", "elements": "str", "default": []},
    "backups": {"type": "int", "default": 0},
    "backups_max_age_days": {"type": "int", "default": 0},
    "backups_max_percent": {"type": "int", "default": 0},
    "max_deletions": {"type": "str", "default": "50%"},
    "profiles_dir": {"type": "path", "default": "/etc/replimesh/profiles"},
    "backup_dir": {"type": "path", "default": "/var/lib/replimesh/backups"},
    "config_file": {"type": "path", "default": "/etc/replimesh/mesh.json"},
    "authorized_keys_dir": {"type": "path", "default": "/etc/ssh/authorized_keys", "no_log": False},
    "jails_dir": {"type": "path", "default": "/var/lib/replimesh/jails"},
    "jail_template": {"type": "path", "default": "/var/lib/replimesh/jail"},
    "peers_group": {"type": "str", "default": "replimesh-peers"},
    "fstab": {"type": "path", "default": "/etc/fstab"},
    "known_hosts": {"type": "path", "default": "/etc/replimesh/known_hosts"},
    "unison_dir": {"type": "path", "default": "/var/lib/replimesh/unison"},
    "state_dir": {"type": "path", "default": "/var/lib/replimesh/state"},
    "log_file": {"type": "path", "default": "/var/log/replimesh/sync.log"},
    "key": {"type": "path", "default": "/var/lib/replimesh/.ssh/id_ed25519", "no_log": False},
    "unison_binary": {"type": "path", "default": "/usr/bin/unison"},
}


def _name_of(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def _stat(path: str) -> Stat | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    owner, group = _name_of(pwd.getpwuid, st.st_uid), _name_of(grp.getgrgid, st.st_gid)
    kind = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "link"}.get(
        stat.S_IFMT(st.st_mode), "other"
    )
    content = os.readlink(path) if kind == "link" else None
    if kind == "file":
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            content = handle.read().decode("utf-8", errors="replace")
    return Stat(kind, stat.S_IMODE(st.st_mode), owner, group, content)


def _names(directory: str, dirs: bool, links: bool | None = None) -> tuple[str, ...]:
    """Names of the directories and links (dirs=True) or of the other entries in `directory`; with
    ``links`` given, links count as directories (True) or as other entries (False)."""
    try:
        with os.scandir(directory) as it:
            return tuple(
                sorted(
                    e.name
                    for e in it
                    if (e.is_dir(follow_symlinks=False) or (e.is_symlink() and links is not False)) == dirs
                )
            )
    except (FileNotFoundError, NotADirectoryError):
        return ()


def read_existing(spec: MemberSpec, entries: list[Entry]) -> Existing:
    layout = spec.layout
    stats = {entry.path: found for entry in entries if (found := _stat(entry.path)) is not None}
    peer_files = {peer.name: _names(layout.peer_dir(peer.name), False, links=False) for peer in spec.peers}
    return Existing(
        stats=stats,
        unison_dirs=_names(layout.unison_dir, dirs=True),
        key_files=_names(layout.authorized_keys_dir, dirs=False),
        peer_files={name: files for name, files in peer_files.items() if files},
        status=_names(os.path.join(layout.state_dir, "status"), dirs=False),
        locks=_names(os.path.join(layout.state_dir, "locks"), dirs=False),
        profile_files=_names(layout.profiles_dir, dirs=False),
    )


def _owner(entry: Entry, ids: dict[str, tuple[int, int]]) -> tuple[int, int]:
    return ids[entry.owner][0], ids[entry.group][1]


def _write(entry: Entry, ids: dict[str, tuple[int, int]]) -> None:
    if entry.kind != "link":
        write_atomic(entry.path, (entry.content or "").encode(), entry.mode, *_owner(entry, ids))
        return
    directory, name = os.path.split(entry.path)
    tmp = os.path.join(directory, f".{name}.link.tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(entry.content or "", tmp)
    os.replace(tmp, entry.path)


def _fix(entry: Entry, ids: dict[str, tuple[int, int]]) -> None:
    # Through a descriptor opened with O_NOFOLLOW: never the mode or owner of what a link points at.
    fix_owner_mode(entry.path, *_owner(entry, ids), entry.mode)


def apply(result: Plan, ids: dict[str, tuple[int, int]]) -> None:
    for removal in result.removes:
        if os.path.isdir(removal.path) and not os.path.islink(removal.path):
            shutil.rmtree(removal.path)
        elif os.path.lexists(removal.path):
            os.unlink(removal.path)
    for entry in result.mkdirs:
        os.mkdir(entry.path, 0o700)
        _fix(entry, ids)
    for entry in result.writes:
        _write(entry, ids)
    for entry in result.fixes:
        _fix(entry, ids)


def _ids(module: AnsibleModule, user: str) -> dict[str, tuple[int, int]]:
    """uid/gid of root and of the mesh user; an empty mapping (after a warning) in check mode.

    A mesh user with root's uid or gid fails the run, in check mode too: every peer logs in with its ids.
    """
    try:
        entry, gid = pwd.getpwnam(user), grp.getgrnam(user).gr_gid
    except KeyError:
        message = (
            f"the mesh user {user!r} (and its group) must exist on the node: run the mesh_ssh role first"
        )
        if not module.check_mode:
            module.fail_json(msg=message)
        module.warn(message)
        return {}
    if 0 in (entry.pw_uid, entry.pw_gid, gid):
        module.fail_json(
            msg=f"the mesh user {user!r} has uid {entry.pw_uid} and gid {entry.pw_gid} (its group {user!r}: "
            f"gid {gid}): it must be an unprivileged user, as every peer logs in with its ids; name another "
            "user in the mesh file (user:)"
        )
    return {"root": (0, 0), user: (entry.pw_uid, gid)}


def _missing_dirs(spec: MemberSpec) -> list[str]:
    layout = spec.layout
    needed = [layout.authorized_keys_dir, layout.unison_dir, layout.jails_dir, layout.jail_template]
    return sorted({d for d in needed if not os.path.isdir(d)} | set(_missing_folders(spec)))


def _config_dirs(spec: MemberSpec) -> list[str]:
    """The directories of the config and the pinned host keys this module writes, when missing: made
    here (root's, 0755, as its files), where the role spent a module run of its own on them."""
    wanted = {os.path.dirname(p) for p in (spec.layout.config_file, spec.layout.known_hosts)}
    return sorted(d for d in wanted if not os.path.isdir(d))


def _missing_folders(spec: MemberSpec) -> list[str]:
    """Folders not there yet: they are bound into every peer's jail, so mesh_sync must make them first."""
    return [folder.path for folder in spec.folders if not os.path.isdir(folder.path)]


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:  # no /proc: ssh's own order (hardware_aes of nothing is False: ChaCha20 first)
        return ""


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = dict(module.params)
    if not params["ssh_ciphers"]:
        params["ssh_ciphers"] = list(preferred(hardware_aes(_cpuinfo())))
    try:
        spec = with_sources(spec_from_params(params))
    except MemberError as exc:
        module.fail_json(msg=str(exc))
    ids = _ids(module, spec.user)
    missing = _missing_dirs(spec)
    if missing:
        message = (
            f"missing directories {', '.join(missing)}: the mesh_ssh and mesh_sync roles create them "
            "(run them before mesh_member)"
        )
        if not module.check_mode:
            module.fail_json(msg=message)
        module.warn(message)
    jails = Jails(
        run=module.run_command,
        user=spec.user,
        group=module.params["peers_group"],
        peers={spec.login(peer.name): peer.name for peer in spec.peers},
        folders=[folder.path for folder in spec.folders],
        layout=spec.layout.jails(),
        fstab=module.params["fstab"],
    )
    try:
        todo = plan(spec, read_existing(spec, desired_entries(spec)))
        jail_todo = jails.plan()
        mirrored = jails.mirror(dry_run=True) if not missing else []
    except (MemberError, JailError, OSError) as exc:
        module.fail_json(msg=f"cannot plan the node's mesh files: {exc}")
    config_dirs = _config_dirs(spec)
    result = {
        "changed": todo.changed or jail_todo.changed or bool(mirrored) or bool(config_dirs),
        "ssh_ciphers": list(spec.settings.ssh_ciphers),
        "peers_added": list(todo.peers_added),
        "peers_removed": list(todo.peers_removed),
        "peers_kept": list(todo.peers_kept),
        "written": [entry.path for entry in todo.writes],
        "created": config_dirs + [entry.path for entry in todo.mkdirs],
        "fixed": [entry.path for entry in todo.fixes],
        "removed": [removal.path for removal in todo.removes],
        "logins_added": list(jail_todo.users_add),
        "logins_removed": list(jail_todo.users_remove),
        "mounted": [dst for _src, dst in jail_todo.mount],
        "remounted": list(jail_todo.remount),
        "retired": list(jail_todo.retire),
    }
    if module._diff:
        result["diff"] = todo.diffs()
    if result["changed"] and not module.check_mode:
        try:
            for directory in config_dirs:
                os.makedirs(directory, 0o755, exist_ok=True)
                os.chmod(directory, 0o755)  # whatever the umask
            apply(todo, ids)
            apply_jails(jails, jail_todo)
        except (OSError, JailError) as exc:
            module.fail_json(msg=f"could not update the node's mesh files: {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
