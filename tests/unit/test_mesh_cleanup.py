"""Stale Unison temporary entries are removed; live ones, other files and symlink targets are not."""

from __future__ import annotations

import os
import time
from pathlib import Path

from replimesh_node.mesh_cleanup import clean_stale_temps, due

HASH = "a94f8be0ff05c3800e4127a9a712ffde"


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_removes_only_stale_temporary_entries(tmp_path: Path) -> None:
    old_file = tmp_path / "sub" / f".unison.report.txt.{HASH}.unison.tmp"
    old_dir = tmp_path / f".unison.from-node1.{HASH}.unison.tmp"
    fresh = tmp_path / f".unison.live.bin.{HASH}.unison.tmp"
    keep = tmp_path / "sub" / "report.txt"
    look_alike = tmp_path / ".unison.notes.txt"  # not a temporary name: an ordinary file
    old_file.parent.mkdir()
    old_dir.mkdir()
    (old_dir / "data.bin").write_bytes(b"partial")
    for path in (old_file, fresh, keep, look_alike):
        path.write_bytes(b"x")
    for path in (old_file, old_dir, keep, look_alike):
        _age(path, 7200)
    removed = clean_stale_temps(str(tmp_path), older_than_s=3600)
    assert sorted(removed) == sorted([old_dir.name, f"sub/{old_file.name}"])
    assert not old_file.exists() and not old_dir.exists()
    assert fresh.exists() and keep.exists() and look_alike.exists()


def test_a_symlinked_temporary_name_is_unlinked_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious").write_bytes(b"keep me")
    root = tmp_path / "replica"
    root.mkdir()
    link = root / f".unison.trap.{HASH}.unison.tmp"
    link.symlink_to(target, target_is_directory=True)
    _age(link, 7200)
    assert clean_stale_temps(str(root), older_than_s=3600) == [link.name]
    assert not link.exists() and (target / "precious").read_bytes() == b"keep me"


def test_due_rate_limits(tmp_path: Path) -> None:
    stamp = tmp_path / "cleanup" / "shared.stamp"
    assert due(stamp, 3600, now=10_000)
    assert not due(stamp, 3600, now=10_000 + 60)
    assert due(stamp, 3600, now=10_000 + 3601)
