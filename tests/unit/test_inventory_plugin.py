"""The replimesh_mesh inventory plugin, run for real: through InventoryManager and ansible-inventory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleError, AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader
from ansible.template import Templar
from ansible.vars.manager import VariableManager
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_config import COMPUTED_VARS

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / "collections"
PLUGIN = "replimesh.mesh.replimesh_mesh"
EXAMPLE = ROOT / "inventory" / "example.mesh.yml"
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"


def mesh_data(**extra: Any) -> dict[str, Any]:
    return {
        "plugin": "replimesh_mesh",
        "folders": [{"name": "shared", "path": "/srv/replimesh/shared", "ignore": ["*.tmp"]}],
        "nodes": {
            "node1": {"address": "172.31.77.11"},
            "node2": {"address": "172.31.77.12", "port": 2222, "groups": ["site_a"], "vars": {"foo": 1}},
            "node3": {"address": "172.31.77.13"},
        },
        **extra,
    }


def write(directory: Path, data: object, name: str = "lab.mesh.yml") -> Path:
    path = directory / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def parse_direct(path: Path) -> InventoryData:
    """Run the plugin alone, so its errors surface instead of becoming InventoryManager warnings."""
    plugin = inventory_loader.get(PLUGIN)
    assert plugin is not None
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), str(path), cache=False)
    return inventory


def manager(path: Path) -> InventoryManager:
    return InventoryManager(loader=DataLoader(), sources=[str(path)])


def host_vars(inventory: InventoryManager, host: str) -> dict[str, Any]:
    return inventory.get_host(host).get_vars()


def test_verify_file_accepts_only_mesh_files(tmp_path: Path) -> None:
    plugin = inventory_loader.get(PLUGIN)
    for name, wanted in [("a.mesh.yml", True), ("a.mesh.yaml", True), ("a.yml", False), ("mesh.yml", False)]:
        assert plugin.verify_file(str(write(tmp_path, mesh_data(), name))) is wanted, name
    assert plugin.verify_file(str(tmp_path / "missing.mesh.yml")) is False


def test_groups(tmp_path: Path) -> None:
    inventory = manager(write(tmp_path, mesh_data()))
    assert sorted(h.name for h in inventory.get_hosts("mesh")) == ["node1", "node2", "node3"]
    assert [h.name for h in inventory.get_hosts("site_a")] == ["node2"]


def test_host_vars(tmp_path: Path) -> None:
    inventory = manager(write(tmp_path, mesh_data(vars={"ansible_user": "admin", "foo": 0})))
    hv = host_vars(inventory, "node2")
    expected = {
        "ansible_host": "172.31.77.12",
        "ansible_port": 2222,
        "ansible_user": "admin",
        "foo": 1,  # node vars win over mesh-wide vars
        "mesh_node_name": "node2",
        "mesh_address": "172.31.77.12",
        "mesh_port": 2222,
        "mesh_user": "replimesh",
        "mesh_folders": [{"name": "shared", "path": "/srv/replimesh/shared", "ignore": ["*.tmp"]}],
        "mesh_topology_kind": "full",
        "mesh_sync_mode": "cron",
        "mesh_sync_schedule": "*/15 * * * *",
        "mesh_sync_concurrency": 4,
        "mesh_sync_timeout": 3600,
        "mesh_sync_connect_timeout": 10,
        "mesh_sync_backups": 5,
    }
    assert {key: hv[key] for key in expected} == expected
    assert host_vars(inventory, "node1")["foo"] == 0


def test_peers_say_who_starts_each_pair(tmp_path: Path) -> None:
    inventory = manager(write(tmp_path, mesh_data()))
    peers = {name: host_vars(inventory, name)["mesh_peers"] for name in ("node1", "node2", "node3")}
    assert peers["node1"] == [
        {"name": "node2", "address": "172.31.77.12", "port": 2222, "initiator": False},
        {"name": "node3", "address": "172.31.77.13", "port": 22, "initiator": True},
    ]
    for here, mine in peers.items():
        for peer in mine:
            back = next(p for p in peers[peer["name"]] if p["name"] == here)
            assert peer["initiator"] != back["initiator"]


def test_plugin_sets_exactly_the_computed_vars(tmp_path: Path) -> None:
    hv = host_vars(manager(write(tmp_path, mesh_data())), "node1")
    assert {key for key in hv if key.startswith("mesh_")} == COMPUTED_VARS


def test_node_vars_may_redirect_ansible_host(tmp_path: Path) -> None:
    data = mesh_data()
    data["nodes"]["node1"]["vars"] = {"ansible_host": "198.51.100.7"}
    hv = host_vars(manager(write(tmp_path, data)), "node1")
    assert (hv["ansible_host"], hv["mesh_address"]) == ("198.51.100.7", "172.31.77.11")


def test_templates_in_vars_stay_templates(tmp_path: Path) -> None:
    loader = DataLoader()
    path = write(tmp_path, mesh_data(vars={"x": "{{ 40 + 2 }}"}))
    inventory = InventoryManager(loader=loader, sources=[str(path)])
    variables = VariableManager(loader=loader, inventory=inventory).get_vars(host=inventory.get_host("node1"))
    assert Templar(loader=loader, variables=variables).template(variables["x"]) == 42


def test_constructed_options(tmp_path: Path) -> None:
    data = mesh_data(
        compose={"sync_port": "mesh_port + 1"},
        groups={"high_port": "sync_port > 100"},
        keyed_groups=[{"key": "mesh_sync_mode", "prefix": "sync"}],
    )
    inventory = manager(write(tmp_path, data))
    assert host_vars(inventory, "node2")["sync_port"] == 2223
    assert [h.name for h in inventory.get_hosts("high_port")] == ["node2"]
    assert len(inventory.get_hosts("sync_cron")) == 3


def test_strict_compose_error_fails_with_the_file_named(tmp_path: Path) -> None:
    path = write(tmp_path, mesh_data(strict=True, compose={"x": "undefined_thing + 1"}))
    with pytest.raises(AnsibleParserError, match="undefined_thing") as info:
        parse_direct(path)
    assert str(path) in info.value.message


def test_lax_compose_error_is_skipped(tmp_path: Path) -> None:
    inventory = parse_direct(write(tmp_path, mesh_data(compose={"x": "undefined_thing + 1"})))
    assert "x" not in inventory.get_host("node1").vars


def test_example_inventory_parses() -> None:
    inventory = manager(EXAMPLE)
    assert sorted(h.name for h in inventory.get_hosts("mesh")) == ["store-a1", "store-a2", "store-b1"]
    hv = host_vars(inventory, "store-b1")
    assert (hv["ansible_host"], hv["mesh_address"], hv["mesh_port"]) == (
        "198.51.100.7",
        "198.51.100.21",
        2222,
    )
    assert all(len(host_vars(inventory, h)["mesh_peers"]) == 2 for h in ("store-a1", "store-a2", "store-b1"))


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (mesh_data(folders=[{"name": "etc", "path": "/etc/app"}]), "folders[0].path: "),
        (mesh_data(topology={"kind": "ring"}), "topology.kind: "),
        (mesh_data(vars={"mesh_user": "x"}), "vars.mesh_user: "),
        (mesh_data(nodes={"node1": {"address": "10.0.0.1"}}), "nodes: a mesh needs at least 2 nodes"),
        (mesh_data(nodez={}), "nodez: unknown key"),
        (mesh_data(compose=[]), "compose"),
        (mesh_data(compose={"mesh_peers": "[]"}), "compose.mesh_peers: mesh_peers is computed by the plugin"),
        (mesh_data(compose={"mesh_ssh_peers_group": "'sudo'"}), "compose.mesh_ssh_peers_group: "),
        (mesh_data(compose={"unison_packages": "[]"}), "replimesh's own roles"),
        (mesh_data(groups={"localhost": "true"}), "groups.localhost: 'localhost' is reserved"),
        (mesh_data(groups={"mesh_leaving": "true"}), "groups.mesh_leaving: "),
        (mesh_data(keyed_groups=[{"key": "'leaving'", "prefix": "mesh"}]), "node1 joins mesh_leaving"),
        (mesh_data(keyed_groups=[{"key": "'localhost'", "separator": ""}]), "node1 joins localhost"),
        (mesh_data(plugin="other"), "Incorrect plugin name"),
        (["plugin", "replimesh_mesh"], "must be a mapping"),
        ("plugin: replimesh_mesh\nnodes: [\n", "YAML"),
        ("", "empty"),
    ],
)
def test_bad_file_raises_parser_error_with_file_and_key(tmp_path: Path, data: object, fragment: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(AnsibleParserError) as info:
        parse_direct(path)
    assert str(path) in info.value.message
    assert fragment in info.value.message


def test_an_unknown_key_lists_each_allowed_key_once(tmp_path: Path) -> None:
    with pytest.raises(AnsibleParserError) as info:
        parse_direct(write(tmp_path, mesh_data(colour="blue")))
    allowed = info.value.message.split("allowed keys: ")[1].split(", ")
    assert allowed == sorted(set(allowed)) and {"folders", "nodes", "compose", "keyed_groups"} <= set(allowed)


def test_bad_file_stops_the_manager(tmp_path: Path) -> None:
    # The project's ansible.cfg sets unparsed_is_failed: a bad mesh file is fatal, never an empty mesh.
    with pytest.raises(AnsibleError, match="Completely failed to parse inventory source"):
        manager(write(tmp_path, mesh_data(topology={"kind": "ring"})))


# ansible-inventory as a user runs it, with the plugin found through the environment only.
def run_ansible_inventory(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    if not ANSIBLE_INVENTORY.exists():
        pytest.skip("ansible-inventory is not installed next to this Python")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    environ |= {
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_INVENTORY_ENABLED": PLUGIN,
        "ANSIBLE_HOME": str(tmp_path / ".ansible"),
        "ANSIBLE_FORCE_COLOR": "0",
        **env,
    }
    # cwd=tmp_path keeps the project's ansible.cfg out of it.
    return subprocess.run(
        [str(ANSIBLE_INVENTORY), *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def plain(value: Any) -> Any:
    """Drop ansible-inventory's {"__ansible_unsafe": ...} wrappers (values not to be templated)."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def test_ansible_inventory_list(tmp_path: Path) -> None:
    path = write(tmp_path, mesh_data(vars={"ansible_user": "admin"}))
    proc = run_ansible_inventory(tmp_path, "-i", str(path), "--list")
    assert proc.returncode == 0, proc.stderr
    listing = plain(json.loads(proc.stdout))
    assert sorted(listing["mesh"]["hosts"]) == ["node1", "node2", "node3"]
    assert listing["site_a"]["hosts"] == ["node2"]
    hv = listing["_meta"]["hostvars"]["node3"]
    assert (hv["ansible_host"], hv["ansible_port"], hv["ansible_user"]) == ("172.31.77.13", 22, "admin")
    assert [p["name"] for p in hv["mesh_peers"]] == ["node1", "node2"]
    assert hv["mesh_folders"] == [{"name": "shared", "path": "/srv/replimesh/shared", "ignore": ["*.tmp"]}]


def test_ansible_inventory_reports_bad_file(tmp_path: Path) -> None:
    data = mesh_data()
    data["nodes"]["node3"]["address"] = "172.31.77.11"
    path = write(tmp_path, data)
    proc = run_ansible_inventory(tmp_path, "-i", str(path), "--list", ANSIBLE_INVENTORY_UNPARSED_FAILED="1")
    assert proc.returncode != 0
    assert f"{path}: nodes.node3.address: 172.31.77.11 is already used by node node1" in proc.stderr


# Fuzzing through the plugin: any YAML content ends in hosts or in AnsibleParserError, nothing else.
TOP = st.sampled_from(["plugin", "user", "folders", "nodes", "topology", "sync", "vars"])
SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=12)
KEYS = TOP | st.text(max_size=6)
JUNK = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4)
)


@st.composite
def mesh_files(draw: st.DrawFn) -> object:
    data: Any = mesh_data()
    choice = draw(st.sampled_from(["junk", "replace", "node", "folder"]))
    if choice == "junk":
        return draw(JUNK)
    if choice == "replace":
        data[draw(TOP)] = draw(JUNK)
    elif choice == "node":
        data["nodes"][draw(st.sampled_from(["node1", "node2", "new"]))] = draw(JUNK)
    else:
        data["folders"][0][draw(st.sampled_from(["name", "path", "ignore", "extra"]))] = draw(JUNK)
    return data


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Module-scoped: hypothesis reruns the test body many times within one function-scoped fixture.
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mesh_files())
def test_fuzz_plugin_raises_only_parser_errors(fuzz_dir: Path, data: object) -> None:
    path = write(fuzz_dir, data)
    try:
        inventory = parse_direct(path)
    except AnsibleParserError as err:
        assert str(path) in err.message
    else:
        assert "mesh" in inventory.groups
