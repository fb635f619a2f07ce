"""Bounds on kept versions: the age bound, then the oldest over the size bound, links never followed, and
the runner's hourly pass over each folder's versions and .retired."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# mesh_prune as the runner imports it on a node (the same file as module_utils/mesh_prune.py).
from replimesh_node import mesh_prune
from replimesh_node.mesh_prune import (
    DAY_S,
    Kept,
    kept_files,
    prune,
    size_bound,
    to_prune,
)
from replimesh_node.mesh_runner import Runner, load_config
from tests.unit.test_mesh_runner import Mesh

NOW = 1_000 * DAY_S


def test_to_prune_takes_the_too_old_then_the_oldest_over_the_size_bound() -> None:
    files = [
        Kept("/b/a", 100, NOW - 100 * DAY_S),  # older than 90 days
        Kept("/b/b", 100, NOW - 10 * DAY_S),
        Kept("/b/c", 100, NOW - 5 * DAY_S),
        Kept("/b/d", 100, NOW - 1 * DAY_S),
    ]
    assert [k.path for k in to_prune(files, NOW, 90, None)] == ["/b/a"]
    assert [k.path for k in to_prune(files, NOW, 90, 200)] == ["/b/a", "/b/b"]
    assert [k.path for k in to_prune(files, NOW, 0, 250)] == ["/b/a", "/b/b"]
    assert to_prune(files, NOW, 0, None) == []  # no bound at all
    assert [k.path for k in to_prune(files, NOW, 0, 0)] == ["/b/a", "/b/b", "/b/c", "/b/d"]


def test_size_bound_is_a_share_of_the_disk(tmp_path: Path) -> None:
    stats = os.statvfs(tmp_path)
    assert size_bound(str(tmp_path), 10) == stats.f_blocks * stats.f_frsize // 10
    assert size_bound(str(tmp_path), 0) is None
    assert size_bound(str(tmp_path / "absent"), 10) is None


def put(path: Path, data: bytes) -> None:
    """A version as Unison keeps it (a ctime cannot be set: the tests move "now" instead)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_prune_removes_old_versions_and_empty_directories_and_follows_no_link(tmp_path: Path) -> None:
    root, outside = tmp_path / "backups" / "shared", tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not a version")
    put(root / "docs" / "old.txt", b"x" * 10)
    put(root / ".bak.1.report.txt", b"y" * 10)
    (root / "link").symlink_to(outside)  # a link to a directory: removed as a link, nothing followed
    assert {Path(k.path).name for k in kept_files(str(root))} == {"old.txt", ".bak.1.report.txt", "link"}
    assert prune(str(root), 90, 0).files == 0  # everything is younger than 90 days
    later = os.stat(root / "docs" / "old.txt").st_ctime + 91 * DAY_S
    pruned = prune(str(root), 90, 0, now=later)
    assert pruned.files == 3 and pruned.bytes > 0
    assert list(root.iterdir()) == [] and root.is_dir()  # the folder's own directory stays
    assert (outside / "precious.txt").read_text() == "not a version"
    assert prune(str(tmp_path / "absent"), 90, 10).files == 0


def test_the_runner_prunes_each_folders_versions_and_the_retired_ones_hourly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    backups = tmp_path / "backups"
    mesh.save(backup_dir=str(backups), backups_max_age_days=30, backups_max_percent=0)
    put(backups / "shared" / "doc.txt", b"an old version")
    put(backups / ".retired" / "replimesh-node9-20260101T000000Z" / "shared" / "x.bin", b"retired")
    put(backups / "other" / "kept.txt", b"no folder of this node: left alone")
    runner = Runner(load_config(str(mesh.config_path)))
    runner.prepare()
    runner.clean_folders()  # all younger than 30 days
    assert (backups / "shared" / "doc.txt").exists()
    later = os.stat(backups / "shared" / "doc.txt").st_ctime + 31 * DAY_S
    monkeypatch.setattr(mesh_prune, "clock", lambda: later)
    runner.clean_folders()  # within the hour: nothing runs again
    assert (backups / "shared" / "doc.txt").exists()
    for stamp in (mesh.state_dir / "cleanup").iterdir():
        stamp.unlink()
    runner.clean_folders()
    assert not (backups / "shared" / "doc.txt").exists()
    assert not any((backups / ".retired").rglob("*.bin"))
    assert (backups / "other" / "kept.txt").exists()
    assert (
        "versions of shared: removed 1 (4096 bytes): kept over 30 days\n"
        in Path(runner.config.log_file).read_text()
    )
