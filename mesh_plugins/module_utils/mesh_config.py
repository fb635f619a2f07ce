"""Parse and validate a replimesh mesh file into frozen dataclasses.

Standard library only: the inventory plugin and meshctl use this on the controller, and it is shipped to
nodes as module_utils, where ansible's controller code is not importable.

`parse_mesh` takes the mapping already loaded from YAML and either returns a `Mesh` or raises
`MeshConfigError` naming the offending key as a dotted path (``nodes.node2.address``, ``folders[1].path``).
An optional key set to null (an empty YAML block) means "use the default".
"""

from __future__ import annotations

import difflib
import ipaddress
import keyword
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .mesh_names import MESH_USER_RE, NAME_RE, Folder
from .mesh_paths import UnsafePathError, check_folder_path, check_ignore_pattern
from .mesh_schedule import CRON_FIELDS as _CRON_FIELDS
from .mesh_schedule import CRON_ITEM_RE as _CRON_ITEM_RE
from .mesh_schedule import cron_value as _cron_value

DEFAULT_USER = "replimesh"
DEFAULT_PORT = 22
DEFAULT_SCHEDULE = "*/15 * * * *"
SYNC_MODES = ("cron", "watch")
# Kept in step with mesh_topology.TOPOLOGY_BUILDERS (a unit test checks it); not imported from there because
# mesh_topology depends on this module.
TOPOLOGY_KINDS = ("full", "overlay")
# `degree` (the overlay's k) exists for the overlay only; with kind full it is rejected, not ignored, so a
# file that asks for a sparse mesh never silently gets the full one.
MIN_OVERLAY_DEGREE = 2
MAX_OVERLAY_DEGREE = 1024
MIN_NODES = 2

TOP_KEYS = ("plugin", "user", "folders", "nodes", "topology", "sync", "vars")
FOLDER_KEYS = ("name", "path", "ignore")
NODE_KEYS = ("address", "port", "groups", "vars")
TOPOLOGY_KEYS = ("kind",)
OVERLAY_KEYS = ("kind", "degree")
SYNC_KEYS = (
    "mode", "schedule", "concurrency", "timeout", "connect_timeout", "backups", "backups_max_age_days",
    "backups_max_percent", "max_deletions",
)  # fmt: skip

# Node and folder names end up in file names (keys, Unison profiles, status files), hence the narrow alphabet.
IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_DELETIONS_RE = re.compile(r"[0-9]{1,9}|(?:100|[0-9]{1,2})%")
HOST_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")

# Names Ansible (or this plugin) already uses for groups: a node or group of that name would collide.
# localhost too: the plays that run on the control node (checks, confirmations, the key store) say
# `hosts: localhost`, and a node or group of that name would take them over to a node.
RESERVED_NAMES = frozenset({"all", "ungrouped", "mesh", "localhost"})
# The playbooks put nodes in groups of their own at run time (mesh_leaving, mesh_rotating, ...) and then
# act on those groups: a node or group of the mesh file by such a name would join them.
RESERVED_PREFIX = "mesh_"
# Host vars the inventory plugin computes from the mesh file; `vars` must not override them, or a node's view
# of the mesh would disagree with its peers'. ansible_host/ansible_port may be overridden (e.g. to reach a
# node through NAT while peers use its mesh address).
COMPUTED_VARS = frozenset(
    [
        f"mesh_{name}"
        for name in ("node_name", "address", "port", "user", "folders", "peers", "topology_kind", "keystore")
    ]
    + [f"mesh_sync_{name}" for name in SYNC_KEYS]
)
# Every variable of replimesh's own roles (mesh_member, mesh_ssh, mesh_sync, unison) and plays starts with
# one of these. The mesh file sets none of them: its own keys (user, sync, ...) say what a node needs, and
# a role variable there (a jails directory, a peers group, a package source) could undo a node's safety.
# Leading underscores are skipped: the plays' internal names (__mesh_joining) are replimesh's too.
ROLE_VAR_PREFIXES = ("mesh_", "unison_")
# What the playbooks ask of the operator with -e, run by run (remove this node, wipe its data, skip the
# question): as host vars in the mesh file they would answer for every later run without being asked.
PLAYBOOK_INPUTS = frozenset(
    {
        "node",
        "wipe_data",
        "skip_confirmation",
        "allow_ungraceful_removal",
        "allow_deletions",
        "rotate_nodes",
        "rotate_allow_unreachable",
        "rotate_lock_timeout",
        "status_max_lag",
        "status_output",
        "conflicts_keep",
        "verify_allow_unreachable",
        "verify_output",
        "remove_versions",
        "data_owner",
        "versions_path",
        "versions_folder",
        "restore_version",
    }
)


class MeshConfigError(Exception):
    """A mesh file is invalid. `key` is the dotted path of the offending value ("" for the whole file)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    address: str
    port: int = DEFAULT_PORT
    groups: tuple[str, ...] = ()
    vars: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class SyncSettings:
    mode: str = "cron"
    schedule: str = DEFAULT_SCHEDULE
    concurrency: int = 4
    timeout: int = 3600
    connect_timeout: int = 10
    backups: int = 5  # versions kept of each overwritten or deleted file
    backups_max_age_days: int = 90  # a version kept longer goes (0: no age bound)
    backups_max_percent: int = 10  # a folder's versions fit in this share of their disk (0: no size bound)
    # The mass-deletion brake: files one pull may delete, a count ("100") or a share of the folder ("50%").
    max_deletions: str = "50%"


@dataclass(frozen=True, slots=True)
class Mesh:
    user: str
    folders: tuple[Folder, ...]
    nodes: tuple[Node, ...]  # sorted by name
    topology_kind: str = "full"
    # The overlay's k; None means mesh_topology.default_degree(len(nodes)). Always None for kind full.
    topology_degree: int | None = None
    sync: SyncSettings = field(default_factory=SyncSettings)
    vars: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def parse_mesh(data: object, *, extra_keys: Collection[str] = ()) -> Mesh:
    """Validate a loaded mesh file into a `Mesh`.

    `extra_keys` are further top-level keys the caller owns and validates (the plugin's constructed options).
    """
    top = _mapping("", data, "a mapping (the mesh file)")
    _check_keys("", top, (*TOP_KEYS, *extra_keys))
    if top.get("plugin") is not None:
        _string("plugin", top["plugin"])
    topology_kind, topology_degree = _parse_topology(_optional(top, "topology", {}))
    return Mesh(
        user=_parse_user(_optional(top, "user", DEFAULT_USER)),
        folders=_parse_folders(top.get("folders")),
        nodes=_parse_nodes(top.get("nodes")),
        topology_kind=topology_kind,
        topology_degree=topology_degree,
        sync=_parse_sync(_optional(top, "sync", {})),
        vars=_parse_vars("vars", _optional(top, "vars", {})),
    )


def _parse_user(value: object) -> str:
    user = _named("user", value, MESH_USER_RE, "a POSIX user name like 'replimesh', 21 characters at most")
    if user == "root":
        # The mesh user runs Unison and owns the folders; root would bypass the SSH jails.
        raise MeshConfigError("user", "must be an unprivileged user, not root")
    return user


def _parse_folders(value: object) -> tuple[Folder, ...]:
    if value is None:
        raise MeshConfigError("folders", "required: list the synced folders, e.g. [{name: a, path: /srv/a}]")
    items = _list("folders", value)
    if not items:
        raise MeshConfigError("folders", "must list at least one folder")
    folders: list[Folder] = []
    for index, item in enumerate(items):
        key = f"folders[{index}]"
        raw = _mapping(key, item, "a mapping {name: ..., path: ...}")
        _check_keys(key, raw, FOLDER_KEYS, required=("name", "path"))
        name = _named(f"{key}.name", raw["name"], NAME_RE, _NAME_HINT)
        path = _check_path(f"{key}.path", _string(f"{key}.path", raw["path"]))
        _check_unique_folder(key, name, path, folders)
        ignore = _list(f"{key}.ignore", _optional(raw, "ignore", []))
        patterns = tuple(_check_ignore(f"{key}.ignore[{i}]", p) for i, p in enumerate(ignore))
        folders.append(Folder(name=name, path=path, ignore=patterns))
    return tuple(folders)


def _check_unique_folder(key: str, name: str, path: str, earlier: list[Folder]) -> None:
    for index, other in enumerate(earlier):
        other_key = f"folders[{index}]"
        if other.name == name:
            raise MeshConfigError(f"{key}.name", f"duplicate folder name {name!r} (also {other_key})")
        if other.path == path:
            raise MeshConfigError(f"{key}.path", f"path {path} is already used by {other_key}")
        if path.startswith(other.path + "/") or other.path.startswith(path + "/"):
            raise MeshConfigError(f"{key}.path", f"{path} is nested with {other_key} ({other.path})")


def _parse_nodes(value: object) -> tuple[Node, ...]:
    if value is None:
        raise MeshConfigError("nodes", "required: map each node name to {address: ...}")
    raw_nodes = _mapping("nodes", value, "a mapping of node name -> {address: ...}")
    if len(raw_nodes) < MIN_NODES:
        raise MeshConfigError("nodes", f"a mesh needs at least {MIN_NODES} nodes, got {len(raw_nodes)}")
    names = [_named(f"nodes.{name}", name, NAME_RE, _NAME_HINT) for name in raw_nodes]
    for name in names:
        if name in RESERVED_NAMES:
            raise MeshConfigError(
                f"nodes.{name}", f"{name!r} is reserved (a group, or the control node); rename the node"
            )
        if name.startswith(RESERVED_PREFIX):
            raise MeshConfigError(
                f"nodes.{name}",
                f"names starting with {RESERVED_PREFIX} are replimesh's groups; rename the node",
            )
    nodes: list[Node] = []
    seen_addresses: dict[str, str] = {}
    for name in sorted(names):
        key = f"nodes.{name}"
        raw = _mapping(key, raw_nodes[name], "a mapping {address: ...}")
        _check_keys(key, raw, NODE_KEYS, required=("address",))
        address, identity = _check_address(f"{key}.address", raw["address"])
        if identity in seen_addresses:
            raise MeshConfigError(
                f"{key}.address", f"{address} is already used by node {seen_addresses[identity]}"
            )
        seen_addresses[identity] = name
        groups = _list(f"{key}.groups", _optional(raw, "groups", []))
        nodes.append(
            Node(
                name=name,
                address=address,
                port=_integer(f"{key}.port", _optional(raw, "port", DEFAULT_PORT), 1, 65535),
                groups=tuple(_check_group(f"{key}.groups[{i}]", g, names) for i, g in enumerate(groups)),
                vars=_parse_vars(f"{key}.vars", _optional(raw, "vars", {})),
            )
        )
    return tuple(nodes)


def _parse_topology(value: object) -> tuple[str, int | None]:
    """(kind, overlay degree or None). `degree` is an overlay key: with kind full it is an error."""
    raw = _mapping("topology", value, "a mapping such as {kind: full}")
    if raw.get("kind") != "overlay":
        _check_keys("topology", {name: v for name, v in raw.items() if name != "degree"}, TOPOLOGY_KEYS)
    kind = _choice(
        "topology.kind", _optional(raw, "kind", TOPOLOGY_KINDS[0]), TOPOLOGY_KINDS, "topology kind"
    )
    if kind != "overlay":
        if raw.get("degree") is not None:
            raise MeshConfigError(
                "topology.degree", f"applies only to kind overlay, not {kind}; remove it or set kind: overlay"
            )
        return kind, None
    _check_keys("topology", raw, OVERLAY_KEYS)
    degree = raw.get("degree")
    if degree is None:
        return kind, None
    return kind, _integer("topology.degree", degree, MIN_OVERLAY_DEGREE, MAX_OVERLAY_DEGREE)


def _parse_sync(value: object) -> SyncSettings:
    raw = _mapping("sync", value, "a mapping such as {mode: cron}")
    _check_keys("sync", raw, SYNC_KEYS)
    defaults = SyncSettings()
    timeout = _integer("sync.timeout", _optional(raw, "timeout", defaults.timeout), 10, 86400)
    connect_timeout = _integer(
        "sync.connect_timeout", _optional(raw, "connect_timeout", defaults.connect_timeout), 1, 120
    )
    if connect_timeout >= timeout:
        raise MeshConfigError("sync.connect_timeout", f"must be shorter than sync.timeout ({timeout})")
    max_age = _optional(raw, "backups_max_age_days", defaults.backups_max_age_days)
    max_percent = _optional(raw, "backups_max_percent", defaults.backups_max_percent)
    return SyncSettings(
        mode=_choice("sync.mode", _optional(raw, "mode", defaults.mode), SYNC_MODES, "sync mode"),
        schedule=_check_cron("sync.schedule", _optional(raw, "schedule", DEFAULT_SCHEDULE)),
        concurrency=_integer("sync.concurrency", _optional(raw, "concurrency", defaults.concurrency), 1, 64),
        timeout=timeout,
        connect_timeout=connect_timeout,
        backups=_integer("sync.backups", _optional(raw, "backups", defaults.backups), 0, 1000),
        backups_max_age_days=_integer("sync.backups_max_age_days", max_age, 0, 36500),
        backups_max_percent=_integer("sync.backups_max_percent", max_percent, 0, 100),
        max_deletions=_check_max_deletions(_optional(raw, "max_deletions", defaults.max_deletions)),
    )


def _check_max_deletions(value: object) -> str:
    """A count (an integer, or its digits as a string) or a percentage 0-100 written "N%"."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 999_999_999:
        return str(value)
    if isinstance(value, str) and MAX_DELETIONS_RE.fullmatch(value):
        return value
    raise MeshConfigError(
        "sync.max_deletions",
        f"must be a count of files (e.g. 100) or a percentage of the folder (e.g. '50%'), got {value!r}",
    )


def _parse_vars(key: str, value: object) -> dict[str, Any]:
    raw = _mapping(key, value, "a mapping of variable name -> value")
    for name in raw:
        check_var_name(f"{key}.{name}", name)
    # Values stay as loaded: Ansible's loader marks them as trusted templates, as inventory vars need.
    return dict(raw)


def check_var_name(key: str, name: object) -> str:
    """A host variable the mesh file may set: under `vars`, or through the plugin's `compose`."""
    name = _named(key, name, IDENTIFIER_RE, "a valid Ansible variable name (letters, digits, _)")
    if keyword.iskeyword(name):
        raise MeshConfigError(key, f"{name!r} is a Python keyword, not a variable name")
    if name in COMPUTED_VARS:
        raise MeshConfigError(key, f"{name} is computed by the plugin; remove it")
    if name in PLAYBOOK_INPUTS:
        raise MeshConfigError(
            key,
            f"{name} is asked of the operator run by run; the mesh file cannot set it (pass -e {name}=... "
            "on the control node)",
        )
    if name.lstrip("_").startswith(ROLE_VAR_PREFIXES):
        raise MeshConfigError(
            key,
            f"{name} is a variable of replimesh's own roles; the mesh file cannot set it (set the mesh "
            "file's own keys such as user/sync, or pass -e on the control node)",
        )
    return name


def _check_address(key: str, value: object) -> tuple[str, str]:
    """Return (address as written for hosts, identity used to detect duplicates)."""
    text = _string(key, value)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        # Peers dial this address: one that means "this machine" or needs a local zone (%eth0) cannot work.
        if ip.is_loopback or ip.is_unspecified or ip.is_multicast or "%" in text:
            raise MeshConfigError(key, f"{text} is not an address peers can reach; use a unicast address")
        return str(ip), str(ip)
    if text.lower() == "localhost":
        raise MeshConfigError(key, "localhost is not an address peers can reach; use the node's own name")
    labels = text.split(".")
    valid = len(text) <= 253 and all(HOST_LABEL_RE.fullmatch(label) for label in labels)
    # An all-numeric last label means a mistyped IP address (1.2.3.999), not a host name.
    if not valid or labels[-1].isdigit():
        raise MeshConfigError(key, f"{text!r} is neither an IPv4/IPv6 address nor a DNS host name")
    return text, text.lower()


def _check_group(key: str, value: object, node_names: Collection[str]) -> str:
    group = _named(
        key, value, IDENTIFIER_RE, "a group name made of letters, digits and _ (not starting with a digit)"
    )
    check_group_name(key, group)
    if group in node_names:
        raise MeshConfigError(key, f"group {group!r} has the same name as a node; rename one of them")
    return group


def check_group_name(key: str, group: str) -> None:
    """A group the mesh file may put nodes in: under a node's `groups`, or through the plugin's
    constructed groups."""
    if group in RESERVED_NAMES:
        raise MeshConfigError(
            key, f"{group!r} is reserved (every node is in 'all' and 'mesh'; localhost is the control node)"
        )
    if group.startswith(RESERVED_PREFIX):
        raise MeshConfigError(
            key, f"{group!r}: names starting with {RESERVED_PREFIX} are replimesh's own groups; rename it"
        )


def _check_path(key: str, path: str) -> str:
    try:
        return check_folder_path(path)
    except UnsafePathError as err:
        raise MeshConfigError(key, str(err)) from None


def _check_ignore(key: str, value: object) -> str:
    try:
        return check_ignore_pattern(_string(key, value))
    except UnsafePathError as err:
        raise MeshConfigError(key, str(err)) from None


def _check_cron(key: str, raw: object) -> str:
    value = _string(key, raw)
    fields = value.split()
    if len(fields) != len(_CRON_FIELDS):
        raise MeshConfigError(
            key,
            f"{value!r} must be a 5-field cron expression (minute hour day-of-month month day-of-week), "
            f"e.g. {DEFAULT_SCHEDULE!r}; got {len(fields)} fields",
        )
    for text, (label, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        if not all(_cron_item_ok(item, low, high, names) for item in text.split(",")):
            raise MeshConfigError(
                key,
                f"invalid {label} field {text!r}: use *, N or N-M (optionally /STEP), or a comma list "
                f"of them, with N in {low}..{high}",
            )
    # Rejoined with single spaces so the schedule is safe to write into a crontab line.
    return " ".join(fields)


def _cron_item_ok(item: str, low: int, high: int, names: tuple[str, ...]) -> bool:
    match = _CRON_ITEM_RE.fullmatch(item)
    if match is None:
        return False
    bounds = [_cron_value(text, low, names) for text in match.group("a", "b") if text is not None]
    step = match.group("step")
    if step is not None and (int(step) < 1 or len(bounds) == 1):
        return False
    return all(low <= value <= high for value in bounds) and bounds == sorted(bounds)


_NAME_HINT = "lowercase letters, digits, _ and -, starting with a letter or digit, at most 63 characters"


def _optional(mapping: Mapping[str, Any], key: str, default: Any) -> Any:
    value = mapping.get(key)
    return default if value is None else value


def _mapping(key: str, value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MeshConfigError(key, f"must be {what}, got {_type_name(value)}")
    for name in value:
        if not isinstance(name, str):
            raise MeshConfigError(
                _join(key, str(name)),
                f"keys must be strings, got {_type_name(name)} {name!r} (quote it in YAML)",
            )
    return value


def _check_keys(
    key: str, mapping: Mapping[str, Any], allowed: Collection[str], required: Collection[str] = ()
) -> None:
    for name in mapping:
        if name not in allowed:
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            known = ", ".join(sorted(set(allowed)))
            raise MeshConfigError(_join(key, name), f"unknown key {name!r}; {hint}allowed keys: {known}")
    for name in required:
        if mapping.get(name) is None:
            raise MeshConfigError(_join(key, name), "required, but missing or empty")


def _string(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise MeshConfigError(key, f"must be a string, got {_type_name(value)}")
    return str(value)


def _integer(key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MeshConfigError(key, f"must be an integer, got {_type_name(value)}")
    if not low <= value <= high:
        raise MeshConfigError(key, f"must be between {low} and {high}, got {value}")
    return int(value)


def _list(key: str, value: object) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise MeshConfigError(key, f"must be a list, got {_type_name(value)}")
    return list(value)


def _choice(key: str, value: object, choices: tuple[str, ...], what: str) -> str:
    text = _string(key, value)
    if text not in choices:
        raise MeshConfigError(key, f"unknown {what} {text!r}; known: {', '.join(choices)}")
    return text


def _named(key: str, value: object, pattern: re.Pattern[str], hint: str) -> str:
    text = _string(key, value)
    if not pattern.fullmatch(text):
        raise MeshConfigError(key, f"invalid name {text!r}: use {hint}")
    return text


def _type_name(value: object) -> str:
    names: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (type(None), "null"),
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (Mapping, "a mapping"),
        ((list, tuple), "a list"),
    )
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child
