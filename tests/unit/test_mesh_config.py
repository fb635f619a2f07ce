"""Mesh file validation: valid files parse to the expected dataclasses, every bad input names its key."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_config import (
    COMPUTED_VARS,
    DEFAULT_SCHEDULE,
    PLAYBOOK_INPUTS,
    TOP_KEYS,
    Folder,
    Mesh,
    MeshConfigError,
    Node,
    SyncSettings,
    parse_mesh,
)

DELETE = object()
ROOT = Path(__file__).resolve().parents[2]


def base() -> dict[str, Any]:
    return {
        "plugin": "replimesh_mesh",
        "folders": [{"name": "shared", "path": "/srv/replimesh/shared", "ignore": ["*.tmp"]}],
        "nodes": {
            "node2": {"address": "172.31.77.12", "port": 22, "groups": ["site_a"], "vars": {"foo": 1}},
            "node1": {"address": "172.31.77.11"},
        },
    }


def with_value(path: str, value: object, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `data` (default: base()) with the value at `path` ("nodes.node1.port", "folders[0]") set."""
    data = copy.deepcopy(base() if data is None else data)
    tokens = [int(index) if index else name for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)]
    target: Any = data
    for token in tokens[:-1]:
        target = target[token]
    if value is DELETE:
        del target[tokens[-1]]
    else:
        target[tokens[-1]] = value
    return data


def error_of(data: object) -> MeshConfigError:
    with pytest.raises(MeshConfigError) as info:
        parse_mesh(data)
    return info.value


def test_minimal_file_gets_defaults() -> None:
    mesh = parse_mesh(base())
    assert mesh.user == "replimesh"
    assert mesh.topology_kind == "full"
    assert mesh.sync == SyncSettings("cron", DEFAULT_SCHEDULE, 4, 3600, 10)
    assert mesh.vars == {}
    assert mesh.folders == (Folder("shared", "/srv/replimesh/shared", ("*.tmp",)),)


def test_nodes_are_sorted_by_name_with_defaults_filled() -> None:
    mesh = parse_mesh(base())
    assert mesh.node_names == ("node1", "node2")
    assert mesh.nodes[0] == Node("node1", "172.31.77.11", 22, (), {})
    assert mesh.node("node2") == Node("node2", "172.31.77.12", 22, ("site_a",), {"foo": 1})
    with pytest.raises(KeyError):
        mesh.node("node3")


def test_full_file_round_trips_every_setting() -> None:
    data = base() | {
        "user": "sync_user",
        "topology": {"kind": "full"},
        "sync": {"mode": "watch", "schedule": "17 * * * *", "concurrency": 64, "timeout": 10},
        "vars": {"ansible_user": "admin"},
    }
    data["sync"]["connect_timeout"] = 9
    data["sync"]["backups"] = 0
    data["nodes"]["node3"] = {"address": "2001:DB8::1", "port": 2222}
    mesh = parse_mesh(data)
    assert mesh.user == "sync_user"
    assert mesh.sync == SyncSettings("watch", "17 * * * *", 64, 10, 9, 0)
    assert mesh.vars == {"ansible_user": "admin"}
    assert mesh.node("node3") == Node("node3", "2001:db8::1", 2222, (), {})


def test_mesh_is_immutable() -> None:
    mesh = parse_mesh(base())
    with pytest.raises(dataclasses.FrozenInstanceError):
        mesh.user = "other"  # type: ignore[misc]
    assert isinstance(mesh.nodes, tuple)
    assert isinstance(mesh.folders[0].ignore, tuple)


@pytest.mark.parametrize("key", ["user", "topology", "sync", "vars", "folders[0].ignore", "nodes.node2.vars"])
def test_null_optional_key_means_default(key: str) -> None:
    assert isinstance(parse_mesh(with_value(key, None)), Mesh)


def test_extra_keys_are_tolerated_only_when_declared() -> None:
    data = base() | {"compose": {"x": "1"}}
    assert error_of(data).key == "compose"
    assert isinstance(parse_mesh(data, extra_keys=("compose",)), Mesh)


def test_error_str_includes_key_and_actionable_message() -> None:
    err = error_of(with_value("nodes.node2.port", 70000))
    assert err.key == "nodes.node2.port"
    assert str(err) == "nodes.node2.port: must be between 1 and 65535, got 70000"


@pytest.mark.parametrize("data", [None, [], "plugin: replimesh_mesh", 3, True, [base()]])
def test_top_level_must_be_a_mapping(data: object) -> None:
    err = error_of(data)
    assert err.key == ""
    assert "must be a mapping" in str(err)


@pytest.mark.parametrize(
    ("path", "value", "key", "fragment"),
    [
        # unknown keys, at every level, with the allowed ones listed
        ("node", {}, "node", "did you mean 'nodes'"),
        ("colour", 1, "colour", "allowed keys: folders, nodes, plugin, sync, topology, user, vars"),
        ("folders[0].ignores", [], "folders[0].ignores", "did you mean 'ignore'"),
        ("nodes.node1.adress", "x", "nodes.node1.adress", "did you mean 'address'"),
        ("topology", {"kind": "full", "seed": 1}, "topology.seed", "allowed keys: kind"),
        ("sync", {"interval": 5}, "sync.interval", "allowed keys: backups, backups_max_age_days,"),
        # plugin and user
        ("plugin", ["replimesh_mesh"], "plugin", "must be a string, got a list"),
        ("user", "Root", "user", "invalid name"),
        ("user", "1user", "user", "invalid name"),
        ("user", "u" * 33, "user", "invalid name"),
        ("user", "u" * 22, "user", "21 characters at most"),
        ("user", "user\n", "user", "invalid name"),
        ("user", 5, "user", "must be a string, got an integer"),
        ("user", "root", "user", "unprivileged"),
        # folders
        ("folders", DELETE, "folders", "required"),
        ("folders", [], "folders", "at least one folder"),
        ("folders", {"name": "shared"}, "folders", "must be a list, got a mapping"),
        ("folders[0]", "/srv/x", "folders[0]", "must be a mapping"),
        ("folders[0].name", DELETE, "folders[0].name", "required"),
        ("folders[0].path", DELETE, "folders[0].path", "required"),
        ("folders[0].name", "Shared", "folders[0].name", "invalid name"),
        ("folders[0].name", "-x", "folders[0].name", "invalid name"),
        ("folders[0].name", "a" * 64, "folders[0].name", "invalid name"),
        ("folders[0].name", "a/b", "folders[0].name", "invalid name"),
        ("folders[0].name", 7, "folders[0].name", "must be a string, got an integer"),
        ("folders[0].path", 7, "folders[0].path", "must be a string"),
        ("folders[0].path", "srv/x", "folders[0].path", "absolute"),
        ("folders[0].path", "", "folders[0].path", "absolute"),
        ("folders[0].path", "/", "folders[0].path", "must not be /"),
        ("folders[0].path", "/srv/x/", "folders[0].path", "must not end with /"),
        ("folders[0].path", "/srv//x", "folders[0].path", "//"),
        ("folders[0].path", "/srv/my files", "folders[0].path", "white space"),
        ("folders[0].path", "/srv/./x", "folders[0].path", "normalized"),
        ("folders[0].path", "/srv/../etc", "folders[0].path", "normalized"),
        ("folders[0].path", "/srv/x/..", "folders[0].path", "normalized"),
        ("folders[0].path", "/srv/a\nb", "folders[0].path", "control characters"),
        ("folders[0].path", "/etc", "folders[0].path", "system directory /etc"),
        ("folders[0].path", "/etc/replimesh", "folders[0].path", "system directory /etc"),
        ("folders[0].path", "/usr/local/share/x", "folders[0].path", "system directory /usr"),
        ("folders[0].path", "/var/lib/dpkg/info", "folders[0].path", "/var/lib/dpkg"),
        ("folders[0].path", "/root/data", "folders[0].path", "/root"),
        ("folders[0].path", "/proc/1", "folders[0].path", "/proc"),
        ("folders[0].path", "/srv", "folders[0].path", "subdirectory"),
        ("folders[0].path", "/var/lib/replimesh", "folders[0].path", "replimesh's own directory"),
        ("folders[0].path", "/var/lib/replimesh/jail/srv", "folders[0].path", "replimesh's own directory"),
        ("folders[0].path", "/var/spool/cron", "folders[0].path", "system directory /var/spool"),
        ("folders[0].path", "/var/tmp", "folders[0].path", "subdirectory"),
        ("folders[0].path", "/srv/a,b", "folders[0].path", "must not contain ,"),
        ("folders[0].path", "/srv/a=b", "folders[0].path", "must not contain ="),
        ("folders[0].path", "/srv/'a\"", "folders[0].path", "must not contain \" '"),
        ("folders[0].path", "/srv/" + "n" * 256, "folders[0].path", "too long"),
        ("folders[0].path", "/srv" * 1024, "folders[0].path", "too long"),
        ("folders[0].path", "/home", "folders[0].path", "subdirectory"),
        ("folders[0].path", "/var", "folders[0].path", "subdirectory"),
        ("folders[0].ignore", "*.tmp", "folders[0].ignore", "must be a list, got a string"),
        ("folders[0].ignore", [""], "folders[0].ignore[0]", "must not be empty"),
        ("folders[0].ignore", ["ok", "  "], "folders[0].ignore[1]", "must not be empty"),
        ("folders[0].ignore", ["a\nb"], "folders[0].ignore[0]", "control characters"),
        ("folders[0].ignore", ["/abs"], "folders[0].ignore[0]", "relative"),
        ("folders[0].ignore", ["../up"], "folders[0].ignore[0]", ".."),
        ("folders[0].ignore", ["a/../b"], "folders[0].ignore[0]", ".."),
        ("folders[0].ignore", [3], "folders[0].ignore[0]", "must be a string"),
        ("folders[0].ignore", ["a/.."], "folders[0].ignore[0]", ".."),
        ("folders[0].ignore", [".."], "folders[0].ignore[0]", ".."),
        ("folders[0].ignore", ["/etc/shadow"], "folders[0].ignore[0]", "relative"),
        ("folders[0].ignore", ["x" * 5000], "folders[0].ignore[0]", "too long"),
        # nodes
        ("nodes", DELETE, "nodes", "required"),
        ("nodes", [{"address": "10.0.0.1"}], "nodes", "must be a mapping"),
        ("nodes", {}, "nodes", "a mesh needs at least 2 nodes"),
        ("nodes", {"node1": {"address": "10.0.0.1"}}, "nodes", "a mesh needs at least 2 nodes, got 1"),
        ("nodes.Node3", {"address": "10.0.0.3"}, "nodes.Node3", "invalid name"),
        ("nodes.n@3", {"address": "10.0.0.3"}, "nodes.n@3", "invalid name"),
        ("nodes.mesh", {"address": "10.0.0.3"}, "nodes.mesh", "reserved"),
        ("nodes.all", {"address": "10.0.0.3"}, "nodes.all", "reserved"),
        ("nodes.localhost", {"address": "10.0.0.3"}, "nodes.localhost", "reserved"),
        ("nodes.mesh_rotating", {"address": "10.0.0.3"}, "nodes.mesh_rotating", "replimesh's groups"),
        ("nodes.node1", "172.31.77.11", "nodes.node1", "must be a mapping {address: ...}, got a string"),
        ("nodes.node1", None, "nodes.node1", "got null"),
        ("nodes.node1", {}, "nodes.node1.address", "required"),
        ("nodes.node1.address", 1234, "nodes.node1.address", "must be a string, got an integer"),
        ("nodes.node1.address", "", "nodes.node1.address", "neither"),
        ("nodes.node1.address", "1.2.3.999", "nodes.node1.address", "neither"),
        ("nodes.node1.address", "256.1.1.1", "nodes.node1.address", "neither"),
        ("nodes.node1.address", "10.0.0.1/24", "nodes.node1.address", "neither"),
        ("nodes.node1.address", "host_name.example", "nodes.node1.address", "neither"),
        ("nodes.node1.address", "-host.example", "nodes.node1.address", "neither"),
        ("nodes.node1.address", "a..b", "nodes.node1.address", "neither"),
        ("nodes.node1.address", "a" * 64 + ".example", "nodes.node1.address", "neither"),
        ("nodes.node1.address", " 10.0.0.1", "nodes.node1.address", "neither"),
        ("nodes.node1.address", "ssh://10.0.0.1", "nodes.node1.address", "neither"),
        ("nodes.node1.address", "172.31.77.12", "nodes.node2.address", "already used by node node1"),
        ("nodes.node1.address", "127.0.0.1", "nodes.node1.address", "peers can reach"),
        ("nodes.node1.address", "::1", "nodes.node1.address", "peers can reach"),
        ("nodes.node1.address", "0.0.0.0", "nodes.node1.address", "peers can reach"),
        ("nodes.node1.address", "224.0.0.1", "nodes.node1.address", "peers can reach"),
        ("nodes.node1.address", "fe80::1%eth0", "nodes.node1.address", "peers can reach"),
        ("nodes.node1.address", "fe80::1%a b\n", "nodes.node1.address", "peers can reach"),
        ("nodes.node1.address", "LocalHost", "nodes.node1.address", "peers can reach"),
        ("nodes.node1.port", 0, "nodes.node1.port", "between 1 and 65535"),
        ("nodes.node1.port", 65536, "nodes.node1.port", "between 1 and 65535"),
        ("nodes.node1.port", "22", "nodes.node1.port", "must be an integer, got a string"),
        ("nodes.node1.port", True, "nodes.node1.port", "must be an integer, got a boolean"),
        ("nodes.node1.port", 22.0, "nodes.node1.port", "must be an integer, got a number"),
        ("nodes.node1.groups", "site_a", "nodes.node1.groups", "must be a list"),
        ("nodes.node1.groups", ["1site"], "nodes.node1.groups[0]", "invalid name"),
        ("nodes.node1.groups", ["site-a"], "nodes.node1.groups[0]", "invalid name"),
        ("nodes.node1.groups", ["ok", 3], "nodes.node1.groups[1]", "must be a string"),
        ("nodes.node1.groups", ["all"], "nodes.node1.groups[0]", "reserved"),
        ("nodes.node1.groups", ["mesh"], "nodes.node1.groups[0]", "reserved"),
        ("nodes.node1.groups", ["localhost"], "nodes.node1.groups[0]", "the control node"),
        ("nodes.node1.groups", ["mesh_leaving"], "nodes.node1.groups[0]", "replimesh's own groups"),
        ("nodes.node1.groups", ["site", "mesh_targets"], "nodes.node1.groups[1]", "replimesh's own groups"),
        ("nodes.node1.groups", ["node2"], "nodes.node1.groups[0]", "same name as a node"),
        ("nodes.node1.vars", ["a"], "nodes.node1.vars", "must be a mapping"),
        ("nodes.node1.vars", {"1x": 1}, "nodes.node1.vars.1x", "invalid name"),
        ("nodes.node1.vars", {"a-b": 1}, "nodes.node1.vars.a-b", "invalid name"),
        ("nodes.node1.vars", {"class": 1}, "nodes.node1.vars.class", "keyword"),
        ("nodes.node1.vars", {"mesh_peers": []}, "nodes.node1.vars.mesh_peers", "computed by the plugin"),
        # topology, sync, vars
        ("topology", "full", "topology", "must be a mapping"),
        ("topology", {"kind": "ring"}, "topology.kind", "known: full, overlay"),
        ("topology", {"kind": "overlay", "seed": 1}, "topology.seed", "allowed keys: degree, kind"),
        ("topology", {"kind": "overlay", "degree": 1}, "topology.degree", "between 2 and 1024"),
        ("topology", {"kind": "overlay", "degree": 1025}, "topology.degree", "between 2 and 1024"),
        ("topology", {"kind": "overlay", "degree": "3"}, "topology.degree", "must be an integer"),
        ("topology", {"kind": "overlay", "degree": 2.5}, "topology.degree", "must be an integer"),
        ("topology", {"kind": "overlay", "degree": True}, "topology.degree", "must be an integer"),
        ("topology", {"kind": "full", "degree": 3}, "topology.degree", "applies only to kind overlay"),
        ("topology", {"degree": 3}, "topology.degree", "applies only to kind overlay"),
        ("topology", {"kind": 1}, "topology.kind", "must be a string"),
        ("sync", ["cron"], "sync", "must be a mapping"),
        ("sync", {"mode": "inotify"}, "sync.mode", "known: cron, watch"),
        ("sync", {"concurrency": 0}, "sync.concurrency", "between 1 and 64"),
        ("sync", {"concurrency": 65}, "sync.concurrency", "between 1 and 64"),
        ("sync", {"concurrency": "4"}, "sync.concurrency", "must be an integer"),
        ("sync", {"timeout": 9}, "sync.timeout", "between 10 and 86400"),
        ("sync", {"timeout": 86401}, "sync.timeout", "between 10 and 86400"),
        ("sync", {"connect_timeout": 0}, "sync.connect_timeout", "between 1 and 120"),
        ("sync", {"backups": -1}, "sync.backups", "between 0 and 1000"),
        ("sync", {"max_deletions": "101%"}, "sync.max_deletions", "a percentage of the folder"),
        ("sync", {"max_deletions": -1}, "sync.max_deletions", "a count of files"),
        ("sync", {"max_deletions": "half"}, "sync.max_deletions", "a count of files"),
        ("sync", {"max_deletions": True}, "sync.max_deletions", "a count of files"),
        ("sync", {"connect_timeout": 121}, "sync.connect_timeout", "between 1 and 120"),
        ("sync", {"timeout": 10, "connect_timeout": 10}, "sync.connect_timeout", "shorter than sync.timeout"),
        ("vars", "ansible_user=root", "vars", "must be a mapping"),
        ("vars", {"mesh_sync_mode": "watch"}, "vars.mesh_sync_mode", "computed by the plugin"),
        ("vars", {"": 1}, "vars.", "invalid name"),
        ("vars", {"mesh_member_user": "root"}, "vars.mesh_member_user", "replimesh's own roles"),
        ("vars", {"mesh_ssh_peers_group": "sudo"}, "vars.mesh_ssh_peers_group", "cannot set it"),
        ("vars", {"unison_packages": ["x"]}, "vars.unison_packages", "replimesh's own roles"),
        ("vars", {"mesh_anything_new": 1}, "vars.mesh_anything_new", "replimesh's own roles"),
        ("vars", {"__mesh_joining": True}, "vars.__mesh_joining", "replimesh's own roles"),
        ("vars", {"wipe_data": True}, "vars.wipe_data", "pass -e wipe_data=... on the control node"),
        ("nodes.node1.vars", {"skip_confirmation": True}, "nodes.node1.vars.skip_confirmation", "run by run"),
        ("nodes.node1.vars", {"mesh_sync_watch_delay": 1}, "nodes.node1.vars.mesh_sync_watch_delay", "-e"),
        (
            "nodes.node1.vars",
            {"unison_min_version": "2.51"},
            "nodes.node1.vars.unison_min_version",
            "own roles",
        ),
    ],
)
def test_bad_value_names_its_key(path: str, value: object, key: str, fragment: str) -> None:
    err = error_of(with_value(path, value))
    assert err.key == key
    assert fragment in str(err)
    assert str(err).startswith(f"{key}: ")


@pytest.mark.parametrize(("value", "expected"), [(None, "50%"), (0, "0"), (250, "250"), ("10%", "10%")])
def test_the_deletion_brake_takes_a_count_or_a_share(value: object, expected: str) -> None:
    assert parse_mesh(with_value("sync", {"max_deletions": value})).sync.max_deletions == expected


@pytest.mark.parametrize(
    ("topology", "kind", "degree"),
    [
        ({"kind": "overlay"}, "overlay", None),
        ({"kind": "overlay", "degree": None}, "overlay", None),
        ({"kind": "overlay", "degree": 2}, "overlay", 2),
        ({"kind": "overlay", "degree": 1024}, "overlay", 1024),
        ({"kind": "full", "degree": None}, "full", None),
        ({}, "full", None),
    ],
)
def test_topology_kind_and_overlay_degree(topology: dict[str, Any], kind: str, degree: int | None) -> None:
    mesh = parse_mesh(with_value("topology", topology))
    assert (mesh.topology_kind, mesh.topology_degree) == (kind, degree)


@pytest.mark.parametrize("key", [1, None, True, ("a",)])
def test_non_string_node_name_is_reported(key: object) -> None:
    data = base()
    data["nodes"][key] = {"address": "10.0.0.3"}
    err = error_of(data)
    assert err.key == f"nodes.{key}"
    assert "keys must be strings" in err.message


def test_non_string_top_level_key_is_reported() -> None:
    err = error_of(base() | {1: "x"})  # type: ignore[dict-item]
    assert err.key == "1"


@pytest.mark.parametrize(
    "address", ["node1.example.org", "node-1", "a-b.c", "10.0.0.1", "2001:db8::7", "fe80::1", "NODE.example"]
)
def test_valid_addresses(address: str) -> None:
    assert parse_mesh(with_value("nodes.node1.address", address)).node("node1").address == address


@pytest.mark.parametrize(
    ("first", "second"),
    [("2001:db8::1", "2001:DB8:0::1"), ("Host.Example.org", "host.example.org"), ("10.0.0.1", "10.0.0.1")],
)
def test_duplicate_address_is_found_in_any_spelling(first: str, second: str) -> None:
    data = with_value("nodes.node2.address", second, with_value("nodes.node1.address", first))
    err = error_of(data)
    assert err.key == "nodes.node2.address"
    assert "node1" in err.message


def test_duplicate_address_is_rejected_even_on_another_port() -> None:
    data = with_value("nodes.node2", {"address": "172.31.77.11", "port": 2222})
    assert error_of(data).key == "nodes.node2.address"


@pytest.mark.parametrize(
    "path",
    [
        "/srv/replimesh/x",
        "/home/alice/sync",
        "/var/lib/replimesh-data",
        "/etcetera/x",
        "/data",
        "/srv/données",
        "/srv/" + "n" * 255,
    ],
)
def test_valid_folder_paths(path: str) -> None:
    assert parse_mesh(with_value("folders[0].path", path)).folders[0].path == path


@pytest.mark.parametrize(
    ("first", "second", "fragment"),
    [
        ("/srv/a", "/srv/a", "already used by folders[0]"),
        ("/srv/a", "/srv/a/b", "nested with"),
        ("/srv/a/b", "/srv/a", "nested with"),
    ],
)
def test_overlapping_folders_are_rejected(first: str, second: str, fragment: str) -> None:
    data = with_value("folders", [{"name": "one", "path": first}, {"name": "two", "path": second}])
    err = error_of(data)
    assert err.key == "folders[1].path"
    assert fragment in err.message


def test_sibling_folders_with_common_prefix_are_fine() -> None:
    data = with_value("folders", [{"name": "one", "path": "/srv/a"}, {"name": "two", "path": "/srv/ab"}])
    assert [f.path for f in parse_mesh(data).folders] == ["/srv/a", "/srv/ab"]


def test_duplicate_folder_name_is_rejected() -> None:
    data = with_value("folders", [{"name": "one", "path": "/srv/a"}, {"name": "one", "path": "/srv/b"}])
    err = error_of(data)
    assert err.key == "folders[1].name"
    assert "duplicate folder name 'one' (also folders[0])" in err.message


@pytest.mark.parametrize("pattern", ["*.tmp", "Name *.swp", "Path a/b", "..foo", "a/..b"])
def test_valid_ignore_patterns(pattern: str) -> None:
    assert parse_mesh(with_value("folders[0].ignore", [pattern])).folders[0].ignore == (pattern,)


@pytest.mark.parametrize(
    ("schedule", "normalized"),
    [
        ("17 * * * *", "17 * * * *"),
        ("*/5 1-5 * jan-jun mon-fri", "*/5 1-5 * jan-jun mon-fri"),
        ("0 0 1,15 * 0", "0 0 1,15 * 0"),
        ("0 0 * * 7", "0 0 * * 7"),
        ("0,30 */2 * * *", "0,30 */2 * * *"),
        ("0-59/10 * * DEC SUN", "0-59/10 * * DEC SUN"),
        ("  17  *\t* * * ", "17 * * * *"),
    ],
)
def test_valid_schedules_are_normalized(schedule: str, normalized: str) -> None:
    assert parse_mesh(with_value("sync", {"schedule": schedule})).sync.schedule == normalized


@pytest.mark.parametrize(
    "schedule",
    [
        "* * * *",
        "* * * * * *",
        "@hourly",
        "",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * 32 * *",
        "* * * 13 *",
        "* * * * 8",
        "*/0 * * * *",
        "5-1 * * * *",
        "5/10 * * * *",
        "a * * * *",
        "* * * foo *",
        "1,,2 * * * *",
        "99999 * * * *",
        "-1 * * * *",
        "* * * * mon-",
    ],
)
def test_invalid_schedules_are_rejected(schedule: str) -> None:
    assert error_of(with_value("sync", {"schedule": schedule})).key == "sync.schedule"


def test_schedule_of_wrong_type_is_rejected() -> None:
    assert "must be a string" in error_of(with_value("sync", {"schedule": 15})).message


def test_computed_vars_cover_every_sync_setting() -> None:
    assert {f"mesh_sync_{f.name}" for f in dataclasses.fields(SyncSettings)} <= COMPUTED_VARS


def role_variables() -> list[str]:
    specs = sorted((ROOT / "roles").glob("*/meta/argument_specs.yml"))
    assert len(specs) >= 4
    return sorted(
        name
        for spec in specs
        for entry in yaml.safe_load(spec.read_text())["argument_specs"].values()
        for name in entry.get("options", {})
    )


@pytest.mark.parametrize("where", ["vars", "nodes.node2.vars"])
def test_no_role_variable_can_be_set_through_the_mesh_file(where: str) -> None:
    for name in role_variables():
        err = error_of(with_value(where, {name: "x"}))
        assert err.key == f"{where}.{name}"
        assert "computed by the plugin" in str(err) or "replimesh's own roles" in str(err)


def test_every_group_the_playbooks_act_on_is_one_the_mesh_file_cannot_name() -> None:
    plays = [
        play
        for playbook in sorted(ROOT.glob("*.yml")) + sorted((ROOT / "playbooks").glob("*.yml"))
        for play in yaml.safe_load(playbook.read_text()) or []
        if isinstance(play, dict) and "hosts" in play
    ]
    # A host pattern is groups joined by ":" and each may carry "!" (but not) or "&" (and).
    patterns = {pattern.lstrip("!&") for play in plays for pattern in play["hosts"].split(":")}
    assert {"localhost", "mesh", "mesh_leaving", "mesh_rotating"} <= patterns
    for pattern in patterns:
        as_node = error_of(with_value(f"nodes.{pattern}", {"address": "10.0.0.3"}))
        as_group = error_of(with_value("nodes.node1.groups", [pattern]))
        for err in (as_node, as_group):
            assert "reserved" in str(err) or "replimesh's" in str(err), pattern


def test_every_input_the_playbooks_ask_for_with_e_is_refused_as_a_var() -> None:
    texts = [path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "playbooks").glob("*.yml"))]]
    asked = {name for text in texts for name in re.findall(r"-e ([a-z_]+)=", text)}
    assert {"wipe_data", "skip_confirmation", "rotate_nodes"} <= asked
    for name in asked:
        assert error_of(with_value("vars", {name: "x"})).key == f"vars.{name}"
    assert asked - {name for name in asked if name.startswith("mesh_")} <= PLAYBOOK_INPUTS


@pytest.mark.parametrize(
    "name", ["ansible_user", "ansible_host", "ansible_become", "ansible_become_user", "my_mesh"]
)
def test_other_variables_stay_allowed(name: str) -> None:
    assert parse_mesh(with_value("vars", {name: "x"})).vars == {name: "x"}


# Fuzzing: whatever YAML can hold, parse_mesh returns a Mesh or raises MeshConfigError, nothing else.
KNOWN_KEYS = sorted({*TOP_KEYS, "name", "path", "ignore", "address", "port", "groups", "kind", "node1"})
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
KEYS = st.sampled_from(KNOWN_KEYS) | st.text(max_size=8) | st.integers(-3, 3)
YAML_LIKE = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=20,
)


@st.composite
def mutated_mesh(draw: st.DrawFn) -> dict[str, Any]:
    """A valid mesh with one value somewhere replaced, removed, or given a junk sibling."""
    data = base() | {"sync": {"mode": "cron", "timeout": 60}, "topology": {"kind": "full"}, "vars": {"a": 1}}
    slots: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in list(children):
            slots.append((node, key))
            if isinstance(child, dict | list):
                walk(child)

    walk(data)
    container, key = draw(st.sampled_from(slots))
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        container[key] = draw(YAML_LIKE)
    elif action == "delete":
        del container[key]
    elif isinstance(container, dict):
        container[draw(KEYS)] = draw(YAML_LIKE)
    else:
        container.append(draw(YAML_LIKE))
    return data


def _parses_or_reports(data: object) -> None:
    try:
        mesh = parse_mesh(data)
    except MeshConfigError as err:
        assert isinstance(err.key, str)
        assert str(err).startswith(f"{err.key}: ") or not err.key
    else:
        assert isinstance(mesh, Mesh)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(YAML_LIKE | st.dictionaries(KEYS, YAML_LIKE, max_size=8))
def test_fuzz_random_data_never_crashes(data: object) -> None:
    _parses_or_reports(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_mesh())
def test_fuzz_mutated_mesh_never_crashes(data: dict[str, Any]) -> None:
    _parses_or_reports(data)
