"""Inventory plugin: a replimesh mesh file (*.mesh.yml) -> hosts, groups and per-node peer lists.

All validation and topology logic lives in the collection's module_utils; this file only maps it onto Ansible.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: replimesh_mesh
author: replimesh developers (@replimesh)
short_description: Hosts and sync peers of a replimesh mesh
description:
  - Reads a mesh file whose name ends in C(.mesh.yml) or C(.mesh.yaml).
  - Puts every node in group C(mesh) and in the groups listed under its C(groups).
  - Group and node names C(localhost) and C(mesh_*) are replimesh's own (the plays' run-time groups) and are
    refused, also as constructed C(groups) and C(keyed_groups).
  - Gives each node its connection facts and its peer list (C(mesh_peers)), including which end of each
    pair starts the sync, so roles need no topology logic of their own.
  - The file is validated as a whole; an invalid file fails with the file name and the offending key.
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: Marks the file as a mesh file for this plugin.
    type: str
    required: true
    choices: [replimesh.mesh.replimesh_mesh, replimesh_mesh]
  user:
    description:
      - Name of the unprivileged mesh user on every node.
      - Must match C(^[a-z_][a-z0-9_-]{0,31}$). Defaults to C(replimesh).
    type: raw
  folders:
    description:
      - Required. The synced folders, each C({name, path, ignore}).
      - C(path) is absolute and normalized, outside system directories, and not nested in another folder.
      - C(ignore) is a list of Unison name patterns relative to the folder.
    type: raw
  nodes:
    description:
      - Required. Mapping of node name to C({address, port, groups, vars}); at least 2 nodes.
      - Node names match C(^[a-z0-9][a-z0-9_-]{0,62}$); addresses are IP literals or DNS names, unique.
    type: raw
  topology:
    description: >-
      Mapping C({kind, degree}): C(full), every pair of nodes syncs; or C(overlay), each node syncs
      with C(degree) peers (degree defaults to max(2, ceil(log2 N))).
    type: raw
  sync:
    description:
      - Mapping C({mode, schedule, concurrency, timeout, connect_timeout, backups, backups_max_age_days,
        backups_max_percent, max_deletions}).
      - C(mode) is C(cron) (default) or C(watch); C(schedule) is a 5-field cron expression
        (default C(*/15 * * * *)); C(concurrency) 1..64 (4); C(timeout) 10..86400 seconds (3600);
        C(connect_timeout) 1..120 seconds (10); C(backups) 0..1000 old versions kept of each overwritten
        or deleted file (5; 0 turns versioning off); C(backups_max_age_days) 0..36500, versions kept
        longer are removed (90; 0 is no age bound); C(backups_max_percent) 0..100, a folder's versions are
        kept within this share of their disk, oldest removed first (10; 0 is no size bound);
        C(max_deletions) the brake, files one pull may delete, a count or a percentage of the folder
        such as C(50%) (the default; a percentage lets 10 through).
    type: raw
  vars:
    description:
      - Extra host variables for every node (for example C(ansible_user)); a node's own C(vars) override them.
      - replimesh's own variables (C(mesh_*), C(unison_*)) are refused, here and in C(compose); pass them
        with C(-e) on the control node.
    type: raw
"""

EXAMPLES = r"""
# inventory/lab.mesh.yml -- ansible-inventory -i inventory/lab.mesh.yml --graph
plugin: replimesh.mesh.replimesh_mesh
folders:
  - {name: shared, path: /srv/replimesh/shared, ignore: ["*.tmp"]}
nodes:
  node1: {address: 172.31.77.11}
  node2: {address: 172.31.77.12, groups: [site_a]}
sync: {mode: cron, schedule: "17 * * * *"}
vars:
  ansible_user: root
# constructed options work as in ansible.builtin.constructed
keyed_groups:
  - {key: mesh_sync_mode, prefix: sync}
"""

import re
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_config import (
    Mesh,
    MeshConfigError,
    Node,
    check_group_name,
    check_var_name,
    parse_mesh,
)
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_topology import host_topology


def syntax_error_at(path: str) -> str:
    """Where a YAML syntax error in the file is ("line L, column C (what)"), which ansible-core's own
    message leaves out; empty when the file is not broken YAML."""
    try:
        with open(path, encoding="utf-8") as handle:
            yaml.safe_load(handle)
    except (yaml.scanner.ScannerError, yaml.parser.ParserError) as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        return f"{where} ({exc.problem or exc.context})"
    except (OSError, yaml.YAMLError, RecursionError, ValueError):
        return ""  # not a syntax error, or one too deep or too big to place: ansible-core's message alone
    return ""


FQCN = "replimesh.mesh.replimesh_mesh"


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "replimesh_mesh"

    def verify_file(self, path: str) -> bool:
        return path.endswith((".mesh.yml", ".mesh.yaml")) and super().verify_file(path)

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        config = self._read_mesh_file(path)
        try:
            mesh = parse_mesh(config, extra_keys=tuple(self._options))
            # The constructed options set host vars and groups too: by the same rules as `vars` and `groups`.
            for name in self.get_option("compose") or {}:
                check_var_name(f"compose.{name}", name)
            for group in self.get_option("groups") or {}:
                check_group_name(f"groups.{group}", group)
            self._populate(mesh, path)
        except MeshConfigError as err:
            raise AnsibleParserError(f"{path}: {err}") from err

    def _read_mesh_file(self, path: str) -> dict[str, Any]:
        # ansible-core takes the file as ours when its `plugin` is a name this plugin was loaded by; mesh
        # files written before the collection existed say `plugin: replimesh_mesh`, and stay ours.
        loaded_as = getattr(self, "_redirected_names", None) or [FQCN]
        self._redirected_names = [*loaded_as, *(name for name in (FQCN, self.NAME) if name not in loaded_as)]
        try:
            return self._read_config_data(path)
        except AnsibleParserError as err:
            message = str(err.message)
            if where := syntax_error_at(path):
                message = f"{where}: {message}"  # ending as ansible-core's own message does
            raise AnsibleParserError(message if path in message else f"{path}: {message}") from err
        except AttributeError:
            # ansible-core calls config.get() before it checks that the file holds a mapping.
            raise AnsibleParserError(
                f"{path}: the mesh file must be a mapping (plugin, folders, nodes, ...)"
            ) from None
        except AnsibleError as err:
            # An option ansible-core validates itself has the wrong type (e.g. `compose: []`).
            raise AnsibleParserError(f"{path}: {err.message}") from err

    def _populate(self, mesh: Mesh, path: str) -> None:
        peers = host_topology(mesh)
        # The nodes' public keys and host keys, as the control node collected them: next to the mesh
        # file, one store per mesh (prod.mesh.yml -> prod.keys/).
        keystore = re.sub(r"\.mesh\.ya?ml$", ".keys", str(Path(path).resolve()))
        self._refuse_a_second_mesh(path, keystore)
        self.inventory.add_group("mesh")
        for node in mesh.nodes:
            self.inventory.add_host(node.name, group="mesh")
            for group in node.groups:
                self.inventory.add_group(group)
                self.inventory.add_child(group, node.name)
            for key, value in self._host_vars(mesh, node, peers[node.name], keystore).items():
                self.inventory.set_variable(node.name, key, value)
            host = self.inventory.get_host(node.name)
            before = {group.name for group in host.get_groups()}
            try:
                self._construct(node.name)
            except AnsibleError as err:
                # Only with `strict: true`: a compose/groups/keyed_groups expression failed.
                raise AnsibleParserError(f"{path}: {err.message}") from err
            # Keyed groups are named by values (prefix_value): checked once made, before any play runs.
            for group in sorted({group.name for group in host.get_groups()} - before):
                check_group_name(f"keyed_groups ({node.name} joins {group})", group)

    def _refuse_a_second_mesh(self, path: str, keystore: str) -> None:
        """One inventory, one mesh: a second mesh file (a directory of them, or -i twice) would merge two
        meshes into one, or overwrite one's nodes with the other's."""
        group = self.inventory.groups.get("mesh")
        others = sorted(
            {
                str(host.vars.get("mesh_keystore"))
                for host in (group.get_hosts() if group else [])
                if host.vars.get("mesh_keystore") != keystore
            }
        )
        if others:
            first = re.sub(r"\.keys$", ".mesh.yml", others[0])
            raise AnsibleParserError(
                f"{path}: a second mesh file in one inventory (the first: {first}); pass one mesh file "
                "with -i, or keep one *.mesh.yml in the inventory directory"
            )

    @staticmethod
    def _host_vars(mesh: Mesh, node: Node, peers: list[dict[str, Any]], keystore: str) -> dict[str, Any]:
        host_vars: dict[str, Any] = {
            "ansible_host": node.address,
            "ansible_port": node.port,
            "mesh_node_name": node.name,
            "mesh_address": node.address,
            "mesh_port": node.port,
            "mesh_user": mesh.user,
            "mesh_folders": [
                {"name": f.name, "path": f.path, "ignore": list(f.ignore)} for f in mesh.folders
            ],
            "mesh_peers": peers,
            "mesh_topology_kind": mesh.topology_kind,
            "mesh_sync_mode": mesh.sync.mode,
            "mesh_sync_schedule": mesh.sync.schedule,
            "mesh_sync_concurrency": mesh.sync.concurrency,
            "mesh_sync_timeout": mesh.sync.timeout,
            "mesh_sync_connect_timeout": mesh.sync.connect_timeout,
            "mesh_sync_backups": mesh.sync.backups,
            "mesh_sync_backups_max_age_days": mesh.sync.backups_max_age_days,
            "mesh_sync_backups_max_percent": mesh.sync.backups_max_percent,
            "mesh_sync_max_deletions": mesh.sync.max_deletions,
            "mesh_keystore": keystore,
        }
        return host_vars | mesh.vars | node.vars

    def _construct(self, host: str) -> None:
        strict = self.get_option("strict")
        self._set_composite_vars(self.get_option("compose"), self._vars_of(host), host, strict=strict)
        # Re-read so that conditional and keyed groups can use the composed variables.
        variables = self._vars_of(host)
        self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)

    def _vars_of(self, host: str) -> dict[str, Any]:
        return self.inventory.get_host(host).get_vars()
