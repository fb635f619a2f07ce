"""The lab itself: real SSH hosts that Ansible reaches, idempotent up, faults, clean teardown, bad input."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from replimesh.lab import system
from replimesh.lab.lab import Lab
from tests.conftest import ROOT, TEST_LAB, SessionLab, run_tool, slot_lab_config, tool, wait_until

pytestmark = pytest.mark.lab

DOWN_LAB = slot_lab_config("down", 1)
NOBODY_LAB = slot_lab_config("nobody", 2)


def _remote_users(inventory: str) -> dict[str, str]:
    """Map host -> the user Ansible logs in as, from `ansible -m command -a whoami` over SSH."""
    proc = run_tool("ansible", "all", "-i", inventory, "-m", "command", "-a", "whoami")
    lines = proc.stdout.splitlines()
    return {
        line.split(" | ")[0]: lines[i + 1].strip()
        for i, line in enumerate(lines[:-1])
        if line.endswith(" | CHANGED | rc=0 >>")
    }


def test_three_hosts_answer_ansible_ping_as_lab_user(lab: SessionLab) -> None:
    hosts = lab.ensure(3)
    inventory = str(lab.lab.inventory_path)
    proc = run_tool("ansible", "all", "-i", inventory, "-m", "ping", "--limit", "node1,node2,node3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in hosts:
        assert f"{host.name} | SUCCESS => {{" in proc.stdout
    assert proc.stdout.count('"ping": "pong"') == 3
    users = _remote_users(inventory)
    assert {users[h.name] for h in hosts} == {"lab"}


def test_host_keys_are_per_host_and_pinned(lab: SessionLab) -> None:
    hosts = lab.ensure(3)
    keys = [lab.sh(h.name, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1] for h in hosts]
    assert len(set(keys)) == len(keys), "hosts must not share SSH host keys"
    pinned = lab.lab.known_hosts.read_text()
    for host, key in zip(hosts, keys, strict=True):
        assert f"{host.address} ssh-ed25519 {key}" in pinned


def test_second_up_changes_nothing(lab: SessionLab) -> None:
    lab.ensure(3)
    count = len(lab.lab.hosts())
    before = system.docker("ps", "-q", "--filter", f"label=replimesh.lab={TEST_LAB.name}").split()
    files = {p: p.stat().st_mtime_ns for p in (lab.lab.inventory_path, lab.lab.known_hosts)}
    started = time.monotonic()
    lab.lab.up(count)
    elapsed = time.monotonic() - started
    after = system.docker("ps", "-q", "--filter", f"label=replimesh.lab={TEST_LAB.name}").split()
    assert sorted(after) == sorted(before)
    assert {p: p.stat().st_mtime_ns for p in files} == files
    assert elapsed < 10, f"second up took {elapsed:.1f}s"


def test_exec_returns_exit_code_and_output(lab: SessionLab) -> None:
    lab.ensure(1)
    env = {"REPLIMESH_LAB_DIR": str(lab.lab.state_dir)}
    proc = run_tool("meshctl", "lab", "exec", "node1", "--", "sh", "-c", "echo out; echo err >&2; exit 7",
                    env=env)  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "out\n", "err\n")


def _ssh_ok(lab: Lab, node: str, timeout: float = 15) -> bool:
    host = lab.resolve(node)
    try:
        return (
            subprocess.run([*lab.ssh_args(host), "true"], capture_output=True, timeout=timeout).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


@pytest.mark.parametrize(("cut", "mend"), [("pause", "unpause"), ("kill", "start"), ("partition", "heal")])
def test_fault_cuts_ssh_and_mend_restores_it(lab: SessionLab, cut: str, mend: str) -> None:
    lab.ensure(2)
    assert _ssh_ok(lab.lab, "node2")
    lab.lab.fault(cut, "node2")
    try:
        assert not _ssh_ok(lab.lab, "node2", timeout=12), f"node2 still answers after {cut}"
        assert _ssh_ok(lab.lab, "node1"), "a fault on node2 must not touch node1"
    finally:
        lab.lab.fault(mend, "node2")
    assert wait_until(lambda: _ssh_ok(lab.lab, "node2"), timeout=30), f"node2 did not come back after {mend}"


def test_lab_traffic_is_guarded(lab: SessionLab) -> None:
    lab.ensure(1)
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    assert "unreachable 172.31.0.0/16 metric 4000" in routes
    # An address of the lab range with no host behind it goes nowhere, never out through eth0.
    probe = subprocess.run(
        ["ip", "route", "get", "172.31.200.9"], capture_output=True, text=True, check=False
    )
    assert probe.returncode != 0 or "unreachable" in probe.stdout
    default = [r for r in routes.splitlines() if r.startswith("default")]
    assert default and "dev eth0" in default[0]
    internal = json.loads(system.docker("network", "inspect", TEST_LAB.name))[0]["Internal"]
    assert internal is True


def test_down_leaves_no_host_or_network(tmp_path, lab: SessionLab) -> None:  # type: ignore[no-untyped-def]
    lab.ensure(1)  # keeps dockerd up for the session's lab while this one goes
    small = Lab(tmp_path / "small", DOWN_LAB, log=lambda _: None)
    small.up(1)
    assert system.docker("ps", "-q", "--filter", f"label=replimesh.lab={DOWN_LAB.name}")
    small.down()
    assert system.docker("ps", "-aq", "--filter", f"label=replimesh.lab={DOWN_LAB.name}") == ""
    assert DOWN_LAB.name not in system.docker("network", "ls", "--format", "{{.Name}}").split()
    assert system.docker_ready(), "the session lab's dockerd must survive another lab's down"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lab", "up", "0"], "a lab has 1 to 16 hosts, not 0"),
        (["lab", "up", "100"], "a lab has 1 to 16 hosts, not 100"),
        (["lab", "exec", "node42", "--", "true"], "unknown lab node 'node42'"),
        (["lab", "fault", "explode", "node1"], "unknown fault 'explode'"),
    ],
)
def test_bad_input_is_one_clear_line(lab: SessionLab, args: list[str], message: str) -> None:
    lab.ensure(1)
    env = {"REPLIMESH_LAB_DIR": str(lab.lab.state_dir)}
    # This lab's hosts only: the other test worker's labs come and go meanwhile.
    hosts = ("ps", "-aq", "--filter", f"label=replimesh.lab={TEST_LAB.name}")
    before = system.docker(*hosts)
    proc = run_tool("meshctl", *args, env=env)
    assert proc.returncode != 0
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"meshctl: error: {message}")
    assert system.docker(*hosts) == before


def test_no_root_rights_is_refused_before_anything(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "nobody"
    state.mkdir()
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", tool("meshctl"), "lab", "up", "2",
         "--lab-dir", str(state), "--name", NOBODY_LAB.name, "--subnet", NOBODY_LAB.subnet],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "meshctl: error: the lab needs root (it starts dockerd and creates networks); run it as root"
    ]
    assert list(state.iterdir()) == []
