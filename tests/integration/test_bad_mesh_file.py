"""A bad mesh file stops bootstrap.yml with one clear error naming the file and key, before any host."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_tool

GOOD = """\
plugin: replimesh_mesh
folders:
  - {name: shared, path: /srv/replimesh/shared}
nodes:
  node1: {address: 172.31.78.11}
  node2: {address: 172.31.78.12}
"""

CASES = {
    "duplicate name": (
        GOOD.replace("  node2: {address: 172.31.78.12}", "  node1: {address: 172.31.78.12}"),
        "node1",
    ),
    "duplicate address": (GOOD.replace("172.31.78.12", "172.31.78.11"), "nodes.node2.address"),
    "missing folder path": (GOOD.replace(", path: /srv/replimesh/shared", ""), "folders[0].path"),
    "relative path": (GOOD.replace("/srv/replimesh/shared", "srv/shared"), "folders[0].path"),
    "unknown key": (GOOD + "colour: blue\n", "colour"),
    "one node": (GOOD.replace("  node2: {address: 172.31.78.12}\n", ""), "nodes"),
    "escaping path": (GOOD.replace("/srv/replimesh/shared", "/srv/../etc"), "folders[0].path"),
    # The mesh's own home holds the node's private key and the jail: never a synced folder.
    "mesh home": (GOOD.replace("/srv/replimesh/shared", "/var/lib/replimesh"), "folders[0].path"),
    "newline in path": (GOOD.replace("/srv/replimesh/shared", '"/srv/a\\nb"'), "folders[0].path"),
    "escaping ignore": (GOOD.replace("shared}", "shared, ignore: [../x]}"), "folders[0].ignore[0]"),
    # The mesh file cannot weaken a node: no role variable, no run-by-run input, no group of the plays.
    "role variable": (GOOD + "vars: {mesh_ssh_peers_group: sudo}\n", "vars.mesh_ssh_peers_group"),
    "playbook input": (GOOD + "vars: {wipe_data: true}\n", "vars.wipe_data"),
    # Broken YAML: where it is (ansible-core's own message says only what), and no other plugin's noise.
    "yaml syntax": (GOOD.replace("shared}", "shared"), "line 4, column 6 (expected ',' or '}', but got ':')"),
    "keyed localhost": (
        GOOD + "keyed_groups: [{key: \"'localhost'\", separator: ''}]\n",
        "node1 joins localhost",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_mesh_file_fails_before_any_host(tmp_path: Path, case: str) -> None:
    text, key = CASES[case]
    mesh_file = tmp_path / "bad.mesh.yml"
    mesh_file.write_text(text)
    proc = run_tool("ansible-playbook", "-i", str(mesh_file), "bootstrap.yml", timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert str(mesh_file) in output, output
    assert key in output, output
    assert "TASK [" not in output and "PLAY [" not in output, "no play may start on a bad mesh file"
    noise = [name for name in ("yaml", "ini", "auto") if f"with '{name}' plugin" in output]
    assert noise == [], f"only the mesh plugin's message, not {noise}'s: {output}"


def test_good_mesh_file_parses(tmp_path: Path) -> None:
    mesh_file = tmp_path / "good.mesh.yml"
    mesh_file.write_text(GOOD)
    proc = run_tool("ansible-inventory", "-i", str(mesh_file), "--graph", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "@mesh:" in proc.stdout and "node2" in proc.stdout
