"""Plain ansible-playbook without -i: the operator's one mesh file in inventory/, never the example; no
mesh, or two, stops the run before any host is touched. No test here connects to any host."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT, run_tool, tool
from tests.integration.test_bad_mesh_file import GOOD


def plain(config_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A tool run as an operator runs it: the project's ansible.cfg (copied to `config_dir`), no -i."""
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_INVENTORY"}
    env |= {"ANSIBLE_CONFIG": str(config_dir / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"}
    return subprocess.run(
        [tool(args[0]), *args[1:]], cwd=config_dir, env=env, capture_output=True, text=True, timeout=120
    )


def checkout(tmp_path: Path, *mesh_files: str) -> Path:
    """The project's ansible.cfg, plugins and inventory/ as shipped, plus the given mesh files there."""
    shutil.copy(ROOT / "ansible.cfg", tmp_path / "ansible.cfg")
    for name in ("mesh_plugins", "roles", "playbooks", "collections"):
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "inventory", tmp_path / "inventory")
    for name in mesh_files:  # no test here connects to these addresses (the lab's guarded range)
        text = GOOD.replace("  node", f"  {name}-node")
        (tmp_path / "inventory" / f"{name}.mesh.yml").write_text(text)
    return tmp_path


def test_the_one_mesh_file_in_inventory_is_the_default_and_the_example_is_not(tmp_path: Path) -> None:
    config_dir = checkout(tmp_path, "prod")
    # The key store bootstrap.yml keeps beside the mesh file: JSON, which Ansible's yaml plugin would read.
    (config_dir / "inventory/prod.keys").mkdir()
    (config_dir / "inventory/prod.keys/prod-node1.json").write_text('{"host_key": "x", "public_key": "y"}\n')
    proc = plain(config_dir, "ansible-inventory", "--graph", "mesh")
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr
    hosts = sorted(line.strip(" |-") for line in proc.stdout.splitlines() if "--" in line and "@" not in line)
    assert hosts == ["prod-node1", "prod-node2"], proc.stdout  # no store-a1: the example is read when named


def test_without_a_mesh_file_every_playbook_stops_before_any_host(tmp_path: Path) -> None:
    config_dir = checkout(tmp_path)
    for playbook in ("bootstrap.yml", "sync.yml", "status.yml"):
        proc = plain(config_dir, "ansible-playbook", str(ROOT / playbook))
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, output
        assert "The inventory holds no mesh node, so nothing was changed" in output, output
        recap = output[output.index("PLAY RECAP") :]
        assert recap.split()[3] == "localhost" and "failed=1" in recap, recap  # localhost only


def test_two_mesh_files_are_refused_before_any_play(tmp_path: Path) -> None:
    proc = plain(checkout(tmp_path, "alpha", "beta"), "ansible-playbook", str(ROOT / "bootstrap.yml"))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "beta.mesh.yml: a second mesh file in one inventory" in output, output
    assert "alpha.mesh.yml" in output and "PLAY [" not in output, output


def test_the_example_is_read_when_named() -> None:
    proc = run_tool("ansible-inventory", "-i", "inventory/example.mesh.yml", "--graph", "mesh", check=True)
    assert "store-a1" in proc.stdout
