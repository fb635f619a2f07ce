"""meshctl verify and verify.yml on the 5-node lab: 10,000 files agree (a second run hashes nothing), then a
changed byte, a missing file and an extra file are each named with their node, and a paused node is
reported unreachable."""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import run_tool
from tests.e2e.conftest import FOLDER, MESH_USER, Mesh, sha

pytestmark = pytest.mark.lab

COUNT = 10_000
# 100 directories of 100 files, 64 to 163 random bytes each, written on the node in one go.
MAKE_FILES = (
    "import os\n"
    f"root = '{FOLDER}/many'\n"
    "for d in range(100):\n"
    "    os.makedirs(f'{root}/d{d:02d}', exist_ok=True)\n"
    "    for f in range(100):\n"
    "        with open(f'{root}/d{d:02d}/f{f:03d}.bin', 'wb') as out:\n"
    "            out.write(os.urandom(64 + f))\n"
)


def verify(mesh: Mesh, *args: str) -> tuple[int, dict[str, Any]]:
    proc = run_tool("meshctl", "verify", "-i", str(mesh.inventory), "--json", *args, timeout=600)
    assert proc.returncode in (0, 1), (
        f"meshctl verify exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.returncode, json.loads(proc.stdout)


def brief(report: dict[str, Any]) -> str:
    """What an assertion shows of a report: its headline and the first diverging paths, not megabytes."""
    paths = [item["path"] for folder in report["folders"].values() for item in folder["diverging"]]
    return f"{report['identical']=} {report['unreachable']=} {report['failed']=} diverging={paths[:10]}"


def diverging(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["path"]: item for item in report["folders"]["shared"]["diverging"]}


def holders(item: dict[str, Any]) -> list[list[str]]:
    """The nodes of each version of a path, the most widely held version first."""
    return [version["nodes"] for version in item["versions"]]


@contextlib.contextmanager
def no_scheduled_rounds(mesh: Mesh) -> Iterator[None]:
    """The replicas are made to differ on purpose: a cron round in between would heal them."""
    off = mesh.playbook(
        "bootstrap.yml", "--tags", "mesh_sync_cron", "-e", '{"mesh_sync_cron_enabled": false}'
    )
    assert off.returncode == 0, off.stdout[-3000:]
    try:
        yield
    finally:
        on = mesh.playbook("bootstrap.yml", "--tags", "mesh_sync_cron")
        assert on.returncode == 0, on.stdout[-3000:]


def test_ten_thousand_files_agree_then_each_difference_is_named(mesh: Mesh) -> None:
    mesh.lab.sh("node1", f"runuser -u {MESH_USER} -- python3 -c {shlex.quote(MAKE_FILES)}")
    with no_scheduled_rounds(mesh):
        proc = mesh.playbook("sync.yml")
        assert proc.returncode == 0, proc.stdout[-4000:]

        started = time.monotonic()
        code, first = verify(mesh)
        middle = time.monotonic()
        code2, second = verify(mesh)
        ended = time.monotonic()
        print(
            f"meshctl verify, {COUNT} files on {len(mesh.nodes)} nodes: first run {middle - started:.1f} s "
            f"(hashed {first['hashed']}), second run {ended - middle:.1f} s (hashed {second['hashed']})"
        )
        assert (code, first["identical"], first["files"]) == (0, True, COUNT), brief(first)
        assert (code2, second["identical"], second["files"]) == (0, True, COUNT), brief(second)
        assert second["hashed"] == dict.fromkeys(mesh.nodes, 0)
        assert second["unreachable"] == {} and second["nodes"] == mesh.nodes
        plain = run_tool("meshctl", "verify", "-i", str(mesh.inventory))
        assert (plain.returncode, plain.stdout.splitlines()[0]) == (
            0,
            f"identical: {COUNT} files in 1 folders on 5 nodes",
        )

        # One byte of one file changed on node4, size kept, not synced: exactly that path and node.
        changed = "many/d42/f042.bin"
        flip = f"p = '{FOLDER}/{changed}'; b = bytearray(open(p, 'rb').read()); b[5] ^= 0xFF; "
        flip += "open(p, 'r+b').write(b)"
        mesh.lab.sh("node4", f"python3 -c {shlex.quote(flip)}")
        node4_sha = mesh.lab.sh("node4", f"sha256sum {FOLDER}/{changed}").split()[0]
        code, report = verify(mesh)
        assert code == 1 and list(diverging(report)) == [changed], brief(report)
        item = diverging(report)[changed]
        assert holders(item) == [["node1", "node2", "node3", "node5"], ["node4"]] and item["missing"] == []
        assert item["versions"][1]["sha256"] == node4_sha != item["versions"][0]["sha256"]

        # A file deleted on node2 and a file written only on node3 are named the same way.
        missing = "many/d07/f007.bin"
        mesh.lab.sh("node2", f"rm {FOLDER}/{missing}")
        mesh.write("node3", "extra.txt", b"only on node3\n")
        code, report = verify(mesh)
        found = diverging(report)
        assert code == 1 and sorted(found) == sorted([changed, missing, "extra.txt"]), brief(report)
        assert holders(found[missing]) == [["node1", "node3", "node4", "node5"]]
        assert found[missing]["missing"] == ["node2"]
        assert holders(found["extra.txt"]) == [["node3"]]
        assert found["extra.txt"]["versions"][0]["sha256"] == sha(b"only on node3\n")
        assert found["extra.txt"]["missing"] == ["node1", "node2", "node4", "node5"]

        # verify.yml on its own prints the same paths and fails.
        alone = mesh.playbook("verify.yml")
        assert alone.returncode != 0
        for path in (changed, missing, "extra.txt"):
            assert f"shared:{path}" in alone.stdout, alone.stdout[-4000:]


def test_a_paused_node_is_reported_unreachable(mesh: Mesh) -> None:
    mesh.write("node1", "before-pause.txt", b"everyone has this\n")
    proc = mesh.playbook("sync.yml")
    assert proc.returncode == 0, proc.stdout[-4000:]
    mesh.lab.lab.fault("pause", "node5")
    try:
        code, report = verify(mesh)
        assert code == 1 and list(report["unreachable"]) == ["node5"] and report["identical"], brief(report)
        assert report["nodes"] == ["node1", "node2", "node3", "node4"]
        code, relaxed = verify(mesh, "--allow-unreachable")
        assert code == 0 and list(relaxed["unreachable"]) == ["node5"] and relaxed["identical"], brief(
            relaxed
        )
    finally:
        mesh.lab.lab.fault("unpause", "node5")
