"""The preflight stops bootstrap.yml before any change, with one line per node that has a problem.

A lab of its own, never bootstrapped: on each host but the last, one thing a user's host may have that
would make replimesh fail or silently not work, provoked for real:
- node1: a container whose root may not mount (no CAP_SYS_ADMIN): the jails' bind mounts would fail;
- node2: cron restarted from a login in a container (its login uid set, no CAP_AUDIT_CONTROL): cron runs,
  but pam_loginuid refuses every job, which a probe job shows against the healthy node's;
- node3: the node's clock 10 minutes ahead (libfaketime preloaded for every process, /etc/ld.so.preload,
  and the host restarted);
- node4: a full disk where the folders go (a small tmpfs on /srv, filled);
- node5: Unison 2.51 installed (Debian's unison-2.51+4.13.1, which talks only to its own build);
- node6: an sshd_config whose first Match comes before the Include of sshd_config.d;
- node7, node8, node9: healthy hosts.
bootstrap.yml must fail, name each problem on its node's one line, report changed=0 on every node, and
leave every node as it was (no mesh user, no replimesh configuration, no Unison installed on node7).

Then the three healthy hosts, untouched, become a mesh of their own the way a user outside this checkout
makes one (#16): meshctl from the wheel in a fresh venv, the collection from its tarball, nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator

import pytest
import yaml

from replimesh.collection_build import build
from replimesh.lab.lab import Lab
from tests.conftest import ROOT, VENV_BIN, run_tool, slot_lab_config, wait_until
from tests.e2e.conftest import recap

pytestmark = pytest.mark.lab

PREFLIGHT_LAB = slot_lab_config("pre", 6)
NODES = 9
HEALTHY = ("node7", "node8", "node9")
SHARED = "/srv/replimesh/shared"
DOCS = "/srv/replimesh/docs"
PROBE = "/etc/cron.d/preflight-probe"  # a root job that stamps /tmp/probe-ran every minute
# What each node's line must say (its problem), and on which node.
EXPECTED = {
    "node1": "root cannot bind-mount here",
    "node2": "pam_loginuid refuses every job",
    "node3": "s ahead of the control node's",
    "node4": "MiB free on the file system of /srv/replimesh/shared",
    "node5": "Unison 2.51.5 (unison-2.51+4.13.1) is installed here",
    "node6": "has a Match block before any Include",
}


def sh(lab: Lab, node: str, script: str) -> str:
    proc = lab.exec(node, ["sh", "-c", script], timeout=300)
    assert proc.returncode == 0, f"{node}: {script!r}: {proc.stderr.decode()}"
    return proc.stdout.decode()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    the_lab = Lab(tmp_path_factory.mktemp("preflight"), PREFLIGHT_LAB, log=lambda m: print(f"[lab] {m}"))
    try:
        the_lab.up(NODES, no_mount=["node1"])
        yield the_lab
    finally:
        the_lab.down()


def ssh(lab: Lab, node: str, command: str) -> subprocess.CompletedProcess[bytes]:
    """A command in an admin's login on the node (as the lab's user, over SSH)."""
    argv = [*lab.ssh_args(lab.resolve(node)), command]
    return subprocess.run(argv, capture_output=True, timeout=60, check=False)


def provoke(lab: Lab) -> None:
    # node2: cron restarted by an admin's login (sshd gave the session login uid 1000, and cron keeps it).
    proc = ssh(lab, "node2", "sudo /etc/init.d/cron restart")
    assert proc.returncode == 0, proc.stderr
    assert sh(lab, "node2", "cat /proc/$(pidof cron)/loginuid") == "1000"
    for node in ("node2", "node7"):
        sh(lab, node, f"echo '* * * * * root touch /tmp/probe-ran' > {PROBE}")
    # node3: every process on the node sees a clock 10 minutes ahead.
    sh(lab, "node3", "apt-get update -q >/dev/null && apt-get install -y -q libfaketime >/dev/null")
    sh(
        lab,
        "node3",
        "echo +10m > /etc/faketimerc && dpkg -L libfaketime | grep '/libfaketime.so.1$' > /etc/ld.so.preload",
    )
    # Restarted, so that sshd too starts with the library loaded (it keeps the real time: lab-init).
    lab.fault("kill", "node3")
    lab.fault("start", "node3")
    assert wait_until(lambda: ssh(lab, "node3", "true").returncode == 0, timeout=60)
    assert abs(int(sh(lab, "node3", "date +%s")) - int(sh(lab, "node7", "date +%s")) - 600) < 30
    # node4: the file system the folders would be on is full.
    sh(
        lab,
        "node4",
        "mkdir -p /srv && mount -t tmpfs -o size=16m tmpfs /srv && (cat /dev/zero > /srv/fill || true)",
    )
    # node5: an old Unison, installed before replimesh came.
    sh(lab, "node5", "apt-get update -q >/dev/null && apt-get install -y -q unison-2.51+4.13.1 >/dev/null")
    # node6: a Match block above the Include (the drop-in would only apply inside it).
    sh(lab, "node6", "sed -i '1i Match User nobody\\n  X11Forwarding no' /etc/ssh/sshd_config")


def present(lab: Lab, node: str) -> str:
    """What of replimesh's a node has: its user, its configuration and state, its sshd drop-in, Unison."""
    paths = "/etc/replimesh /var/lib/replimesh /etc/ssh/sshd_config.d/replimesh.conf /usr/bin/unison"
    script = f"id -u replimesh 2>/dev/null; for p in {paths}; do test -e $p && echo $p; done; true"
    return sh(lab, node, script)


def test_bootstrap_stops_before_any_change_with_one_line_per_node(lab: Lab) -> None:
    provoke(lab)
    before = {node: present(lab, node) for node in (f"node{i}" for i in range(1, NODES + 1))}

    proc = run_tool("ansible-playbook", "-i", str(lab.inventory_path), "bootstrap.yml", timeout=900)
    output = proc.stdout + proc.stderr

    assert proc.returncode != 0, output[-4000:]
    fatal = re.findall(r"^fatal: \[(node\d+)\]: FAILED! => (.*)$", proc.stdout, re.MULTILINE)
    assert sorted(node for node, _ in fatal) == sorted(EXPECTED), output[-6000:]
    print("\n".join(line for line in proc.stdout.splitlines() if line.startswith("fatal:")))
    for node, line in fatal:
        assert EXPECTED[node] in line, f"{node}: {line}"
        assert line.count(f"{node}: ") == 1 and "Nothing was changed" in line, line
        # One problem per node here: no other check spoke up on it.
        others = [text for name, text in EXPECTED.items() if name != node and text in line]
        assert not others, f"{node}: {line}"
    counts = recap(proc.stdout)
    assert set(counts) >= {f"node{i}" for i in range(1, NODES + 1)}, proc.stdout[-3000:]
    assert all(c["changed"] == 0 for c in counts.values()), proc.stdout[-3000:]
    assert all(counts[node]["failed"] == 0 for node in HEALTHY)
    after = {node: present(lab, node) for node in before}
    assert after == before
    assert all(before[node] == "" for node in HEALTHY)

    # The cron check's premise, for real: the healthy node's probe job runs, node2's cron runs none.
    assert wait_until(lambda: sh(lab, "node7", "ls /tmp/probe-ran 2>/dev/null; true").strip(), timeout=130)
    assert sh(lab, "node2", "ls /tmp/probe-ran 2>/dev/null; true").strip() == ""


def test_a_wheel_and_the_collection_make_a_mesh_outside_the_checkout(
    lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """pip installs meshctl's wheel into a fresh venv, ansible-galaxy the collection; from a directory that
    is not this checkout, `meshctl up` bootstraps the three healthy hosts and `meshctl sync` carries a
    file from node7 to node8 and node9, in each of two folders."""
    work = tmp_path_factory.mktemp("outside")
    wheel = subprocess.run(
        [str(VENV_BIN / "pip"), "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert wheel.returncode == 0, wheel.stderr
    (built,) = (work / "dist").glob("replimesh-*.whl")
    with zipfile.ZipFile(built) as archive:
        tops = {name.split("/")[0] for name in archive.namelist() if not name.startswith("replimesh-")}
    assert tops == {"replimesh"}, tops  # nothing else top-level in site-packages
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    subprocess.run([python, "-m", "venv", str(work / "venv")], check=True, timeout=300)
    install = subprocess.run(
        [str(work / "venv/bin/pip"), "install", "-q", str(built)], capture_output=True, text=True, timeout=900
    )
    assert install.returncode == 0, install.stderr[-3000:]
    collections = work / "collections"
    galaxy = subprocess.run(
        [str(work / "venv/bin/ansible-galaxy"), "collection", "install", "-p", str(collections),
         str(build(work / "dist"))],
        cwd=work, capture_output=True, text=True, timeout=300, env=outside_env(),
    )  # fmt: skip
    assert galaxy.returncode == 0, galaxy.stderr

    mesh = yaml.safe_load(lab.inventory_path.read_text())
    mesh["nodes"] = {node: mesh["nodes"][node] for node in HEALTHY}
    # A second folder: each edge pulls its folders at once (two Unison runs side by side on real hosts).
    mesh["folders"] = [*mesh["folders"], {"name": "docs", "path": DOCS}]
    mesh_file = work / "site.mesh.yml"
    mesh_file.write_text(yaml.safe_dump(mesh, sort_keys=False))
    env = outside_env(ANSIBLE_COLLECTIONS_PATH=str(collections))

    def meshctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(work / "venv/bin/meshctl"), *args, "-i", str(mesh_file)],
            cwd=work, env=env, capture_output=True, text=True, timeout=1200, check=False,
        )  # fmt: skip

    up = meshctl("up")
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    payload = f"from the wheel {time.time_ns()}\n"
    for folder in (SHARED, DOCS):
        sh(lab, "node7", f"printf %s '{payload}' > {folder}/wheel.txt && chown replimesh: {folder}/wheel.txt")
    synced = meshctl("sync")
    assert synced.returncode == 0, synced.stdout[-3000:] + synced.stderr[-3000:]
    for node in HEALTHY[1:]:
        for folder in (SHARED, DOCS):
            assert sh(lab, node, f"cat {folder}/wheel.txt") == payload, (node, folder)


def outside_env(**extra: str) -> dict[str, str]:
    """An operator's shell outside this checkout: no ANSIBLE_* of ours, no venv of ours on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != str(VENV_BIN))
    return env | extra
