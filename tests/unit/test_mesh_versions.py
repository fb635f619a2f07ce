"""module_utils/mesh_versions.py: listing the versions a node keeps, and restoring one without loss."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_versions import (
    VersionsError,
    check_path,
    current,
    kept_versions,
    pick,
    restore,
)


@pytest.mark.parametrize("path", ["notes.txt", "docs/a b.txt", "docs/./x", "a/../b.txt"])
def test_a_path_inside_the_folder_is_accepted_normalized(path: str) -> None:
    assert check_path(path, ".replimesh-folder") == os.path.normpath(path)


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/etc/passwd", "inside it"),
        ("../x", "inside it"),
        ("a/../../x", "inside it"),
        (".", "inside it"),
        ("", "give a file's path"),
        ("a\nb", "give a file's path"),
        (".replimesh-folder", "own file"),
        ("docs/.replimesh-folder", "own file"),
        (".unison.x.tmp", "own file"),
    ],
)
def test_a_path_outside_the_folder_or_of_replimesh_is_refused(path: str, why: str) -> None:
    with pytest.raises(VersionsError, match=why):
        check_path(path, ".replimesh-folder")


def kept(tmp_path: Path) -> Path:
    """BACKUP/docs: the newest kept version under the name, older ones .bak.N.NAME, a restore's copy."""
    backup = tmp_path / "backups/shared"
    (backup / "docs").mkdir(parents=True)
    for name, data, mtime in [
        ("notes.txt", b"v3", 3000),
        (".bak.1.notes.txt", b"v2", 2000),
        (".bak.2.notes.txt", b"v1", 1000),
        (".restore.1700000000.notes.txt", b"v4", 4000),
        (".bak.1.other.txt", b"other", 5000),
    ]:
        path = backup / "docs" / name
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))
    return backup


def test_versions_are_listed_newest_content_first_and_only_the_files_own(tmp_path: Path) -> None:
    versions = kept_versions(str(kept(tmp_path)), "docs/notes.txt")
    assert [(v["version"], v["size"], v["mtime"]) for v in versions] == [
        (1, 2, 4000),
        (2, 2, 3000),
        (3, 2, 2000),
        (4, 2, 1000),
    ]
    assert kept_versions(str(tmp_path / "backups/shared"), "docs/missing.txt") == []
    assert kept_versions(str(tmp_path / "nowhere"), "notes.txt") == []
    with pytest.raises(VersionsError, match=r"node2 has no version 5 of docs/notes.txt \(it keeps 4\)"):
        pick(versions, 5, "docs/notes.txt", "node2")


@pytest.mark.skipif(os.geteuid() != 0, reason="a restore hands files to the mesh user: run as root")
def test_a_restore_writes_a_new_change_and_keeps_what_the_folder_held(tmp_path: Path) -> None:
    backup = kept(tmp_path)
    folder = tmp_path / "folder"
    folder.mkdir()
    uid, gid = 65534, 65534
    version = kept_versions(str(backup), "docs/notes.txt")[2]  # v2

    # Nothing there yet: the directories are made, owned like the file, and nothing is kept.
    assert restore(str(folder), str(backup), "docs/notes.txt", version, uid, gid) is None
    target = folder / "docs/notes.txt"
    assert target.read_bytes() == b"v2" and (target.stat().st_uid, target.stat().st_gid) == (uid, gid)
    assert (folder / "docs").stat().st_uid == uid
    assert target.stat().st_mtime > 2000  # a new change, not the old version's time
    assert current(str(folder), "docs/notes.txt")["size"] == 2

    # Something there: it is kept beside the versions (with its own time) before being replaced.
    target.write_bytes(b"local edit")
    os.utime(target, (1234, 1234))
    saved = restore(
        str(folder), str(backup), "docs/notes.txt", kept_versions(str(backup), "docs/notes.txt")[0], uid, gid
    )
    assert (
        saved is not None
        and Path(saved).read_bytes() == b"local edit"
        and Path(saved).stat().st_mtime == 1234
    )
    assert target.read_bytes() == b"v4"
    assert b"local edit" in [
        Path(v["path"]).read_bytes() for v in kept_versions(str(backup), "docs/notes.txt")
    ]
    assert [p.name for p in (folder / "docs").iterdir()] == ["notes.txt"]  # no temporary file left

    # Never through a symbolic link.
    (folder / "link").symlink_to(tmp_path)
    with pytest.raises(VersionsError, match="symbolic link"):
        restore(str(folder), str(backup), "link/notes.txt", version, uid, gid)
