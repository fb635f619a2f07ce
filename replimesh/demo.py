"""The README's demo: a 5-node lab mesh, one file written on node1, shown byte-identical on every node,
then the mesh's status table."""

from __future__ import annotations

import hashlib
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_health import render_lines
from replimesh.lab.errors import LabError
from replimesh.lab.lab import Lab
from replimesh.operate import show_sync, sync_edges
from replimesh.playbooks import print_report, run_playbook
from replimesh.status import render_table, status
from replimesh.topology import draw, mesh_graph, with_health

FOLDER = "/srv/replimesh/shared"


def run_demo(lab_dir: Path, nodes: int, say: Callable[[str], None], keep: bool) -> bool:
    lab = Lab(lab_dir, log=say)
    try:
        say(f"== 1. a lab of {nodes} real SSH hosts (Docker containers on this machine)")
        hosts = lab.up(nodes)
        say("== 2. bootstrap.yml turns them into a mesh (Unison, keys, jail, runner, cron)")
        boot = run_playbook("bootstrap.yml", lab.inventory_path)
        if not boot.ok:
            raise LabError(boot.failure("bootstrap.yml"))
        payload = f"hello from node1 at {time.strftime('%H:%M:%S')}\n".encode()
        say(f"== 3. write {FOLDER}/hello.txt on node1 ({len(payload)} bytes), then one sync.yml round")
        script = f"printf %s {shlex.quote(payload.decode())} > {FOLDER}/hello.txt"
        lab.exec("node1", ["runuser", "-u", "replimesh", "--", "sh", "-c", script])
        sync = run_playbook("sync.yml", lab.inventory_path)
        show_sync(sync_edges(sync), say)
        say("== 4. the file on every node")
        want = hashlib.sha256(payload).hexdigest()
        same = True
        for host in hosts:
            proc = lab.exec(host.name, ["sha256sum", f"{FOLDER}/hello.txt"])
            got = proc.stdout.decode().split()[0] if proc.returncode == 0 else "missing"
            same &= got == want
            say(f"   {host.name} ({host.address}): {got[:16]}… {'identical' if got == want else 'DIFFERS'}")
        say("== 5. meshctl status: every node and edge, as an operator sees it")
        report = status(lab.inventory_path)
        print_report(report, False, say, render_table, render_lines)
        picture = draw(with_health(mesh_graph(lab.inventory_path), report), lab_dir / "mesh.svg")
        say(f"== 6. the mesh as a picture (meshctl topology --out): {picture}")
        say("== the file reached every node" if same else "== some node lacks the file")
        return same and report["healthy"]
    finally:
        if not keep:
            say("== lab down (keep it with --keep)")
            lab.down()
