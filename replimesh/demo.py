"""The README's demo: a 5-node lab mesh, one file written on node1, shown byte-identical on every node."""

from __future__ import annotations

import hashlib
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from replimesh.lab.errors import LabError
from replimesh.lab.lab import Lab
from replimesh.playbooks import run_playbook

FOLDER = "/srv/replimesh/shared"


def run_demo(lab_dir: Path, nodes: int, say: Callable[[str], None], keep: bool) -> bool:
    lab = Lab(lab_dir, log=say)
    try:
        say(f"== 1. a lab of {nodes} real SSH hosts (Docker containers on this machine)")
        hosts = lab.up(nodes)
        say(
            f"== 2. bootstrap.yml turns them into a mesh (Unison, keys, jail, runner, cron); log in {lab_dir}"
        )
        boot = run_playbook(
            "bootstrap.yml", lab.inventory_path, quiet=True, log_dir=lab_dir / "runs" / "bootstrap"
        )
        if not boot.ok:
            raise LabError(f"bootstrap.yml failed; see {boot.log}")
        payload = f"hello from node1 at {time.strftime('%H:%M:%S')}\n".encode()
        say(f"== 3. write {FOLDER}/hello.txt on node1 ({len(payload)} bytes), then one sync.yml round")
        script = f"printf %s {shlex.quote(payload.decode())} > {FOLDER}/hello.txt"
        lab.exec("node1", ["runuser", "-u", "replimesh", "--", "sh", "-c", script])
        sync = run_playbook("sync.yml", lab.inventory_path, quiet=True, log_dir=lab_dir / "runs" / "sync")
        for host, res in sorted(sync.task_results("mesh_sync").items()):
            summary = res.get("summary", {})
            say(f"   {host}: {summary.get('edges', 0)} edges, {summary.get('files_changed', 0)} files moved")
        say("== 4. the file on every node")
        want = hashlib.sha256(payload).hexdigest()
        same = True
        for host in hosts:
            proc = lab.exec(host.name, ["sha256sum", f"{FOLDER}/hello.txt"])
            got = proc.stdout.decode().split()[0] if proc.returncode == 0 else "missing"
            same &= got == want
            say(f"   {host.name} ({host.address}): {got[:16]}… {'identical' if got == want else 'DIFFERS'}")
        say("== the file reached every node" if same else "== some node lacks the file")
        return same
    finally:
        if not keep:
            say("== lab down (keep it with --keep)")
            lab.down()
