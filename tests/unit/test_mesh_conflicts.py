"""module_utils/mesh_conflicts.py and meshctl conflicts: listing conflict copies, and ending one file's
conflict on a node without losing a version."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_conflicts import (
    copies_of,
    find_conflicts,
    resolve,
)
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_digest import original_name
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_versions import VersionsError, kept_versions
from replimesh.conflicts import keeper, lines
from replimesh.playbooks import BadInputError

COPY = "notes (conflict #1_on_2026-12-04).md"
UID, GID = os.getuid(), os.getgid()


@pytest.mark.parametrize(
    ("name", "original"),
    [
        (COPY, "notes.md"),
        ("report (conflict_on_2026-11-25).txt", "report.txt"),
        ("Makefile (conflict_on_2026-11-25)", "Makefile"),
        ("a.tar (conflict_on_2026-11-25).gz", "a.tar.gz"),
        ("notes (conflict_on_2026-12-04) (conflict_on_2026-12-05).md", "notes.md"),
        # The name Unison gives a second copy of one file on one day, and so a copy of that copy.
        ("notes (conflict #12_on_2026-12-04).md", "notes.md"),
        ("draft (conflict_on_2026-12-05) (conflict #1_on_2026-12-05).md", "draft.md"),
        ("notes (conflict_on_2026-12-04_was_deleted).md", "notes.md"),
        ("notes (conflict #2_on_2026-12-04_was_deleted).md", "notes.md"),
        # A dotfile's copy: Unison puts the suffix before the name's last dot.
        (" (conflict_on_2026-11-25).bashrc", ".bashrc"),
        (" (conflict_on_2026-11-25) (conflict #1_on_2026-11-25).bashrc", ".bashrc"),
        ("notes.md", None),
        (" (conflict_on_2026-11-25)", None),
        ("notes (conflict on 2026-11-25).md", None),
        ("notes (conflict_on_2026-12-04 at 10h11m12s).md", None),
        ("notes (conflict #_on_2026-12-04).md", None),
        ("notes (conflict_on_2026-12-04).tar.gz", None),
    ],
)
def test_a_copy_names_the_file_it_was_kept_of(name: str, original: str | None) -> None:
    assert original_name(name) == original


def folder(tmp_path: Path) -> Path:
    root = tmp_path / "shared"
    (root / "docs").mkdir(parents=True)
    (root / ".replimesh-folder").touch()
    (root / "docs" / "notes.md").write_text("mine\n")
    (root / "docs" / COPY).write_text("theirs\n")
    (root / "docs" / "notes (conflict_on_2026-12-05).md").write_text("third\n")
    (root / "other.txt").write_text("no conflict\n")
    (root / "cache").mkdir()
    (root / "cache" / "x (conflict_on_2026-12-04).tmp").write_text("ignored\n")
    (root / "dir (conflict_on_2026-12-04)").mkdir()
    (root / "dir (conflict_on_2026-12-04)" / "inner (conflict_on_2026-12-04).txt").write_text("in a copy\n")
    (tmp_path / "backups").mkdir()  # the node's BACKUP_DIR (the mesh_sync role makes it)
    return root


def test_every_copy_is_listed_with_its_file_once(tmp_path: Path) -> None:
    found = find_conflicts("shared", str(folder(tmp_path)), ["cache"])
    assert [(c["path"], c["copy"], c["kind"]) for c in found] == [
        ("dir", "dir (conflict_on_2026-12-04)", "dir"),  # a copied directory, nothing below it apart
        ("docs/notes.md", f"docs/{COPY}", "file"),
        ("docs/notes.md", "docs/notes (conflict_on_2026-12-05).md", "file"),
    ]
    assert found[1]["sha256"] and found[1]["size"] == len("theirs\n") and found[0]["sha256"] is None


def test_keeping_a_copy_makes_it_the_file_and_keeps_every_other_version(tmp_path: Path) -> None:
    root, backups = folder(tmp_path), tmp_path / "backups" / "shared"
    done = resolve(str(root), str(backups), "docs/notes.md", COPY, True, UID, GID)
    assert (root / "docs" / "notes.md").read_text() == "theirs\n"
    assert copies_of(str(root), "docs/notes.md") == []
    assert done["written"] == f"docs/{COPY}" and set(done["moved"]) == {
        f"docs/{COPY}",
        "docs/notes (conflict_on_2026-12-05).md",
    }
    # What the file held and both copies are the node's kept versions of the file now.
    kept = sorted(Path(v["path"]).read_text() for v in kept_versions(str(backups), "docs/notes.md"))
    assert kept == ["mine\n", "theirs\n", "third\n"]


def test_a_node_that_does_not_keep_only_moves_its_copies_aside(tmp_path: Path) -> None:
    root, backups = folder(tmp_path), tmp_path / "backups" / "shared"
    done = resolve(str(root), str(backups), "docs/notes.md", COPY, False, UID, GID)
    assert done["written"] is None and (root / "docs" / "notes.md").read_text() == "mine\n"
    assert copies_of(str(root), "docs/notes.md") == []
    assert len(kept_versions(str(backups), "docs/notes.md")) == 2


def test_a_copy_the_keeper_lacks_changes_nothing(tmp_path: Path) -> None:
    root, backups = folder(tmp_path), tmp_path / "backups" / "shared"
    with pytest.raises(VersionsError, match=r"not a conflict copy of docs/notes\.md here"):
        resolve(str(root), str(backups), "docs/notes.md", "notes (conflict_on_1999-01-01).md", True, UID, GID)
    assert len(copies_of(str(root), "docs/notes.md")) == 2 and not backups.exists()


REPORT = {
    "files": [
        {
            "folder": "shared",
            "path": "docs/notes.md",
            "now": {"node1": "a" * 64, "node2": "a" * 64, "node3": "a" * 64},
            "copies": [
                {
                    "copy": f"docs/{COPY}",
                    "kind": "file",
                    "sha256": "b" * 64,
                    "size": 7,
                    "nodes": ["node2", "node3"],
                },
            ],
        }
    ],
    "nodes": ["node1", "node2", "node3"],
    "failed": [],
}


def test_the_list_names_each_version_and_its_nodes() -> None:
    assert lines(REPORT) == [
        "conflicts: 1 files, 1 conflict copies on 3 nodes",
        "shared/docs/notes.md",
        f"  {'current':<48} {'a' * 12} node1 node2 node3",
        f"  {COPY:<48} {'b' * 12} node2 node3",
    ]


def test_the_keeper_is_a_node_that_holds_the_version() -> None:
    assert keeper(REPORT, None, "docs/notes.md", COPY) == "node2"
    assert keeper(REPORT, "shared", "docs/notes.md", "current") == "node1"
    with pytest.raises(BadInputError, match=r"no node holds 'x\.md' of docs/notes\.md"):
        keeper(REPORT, None, "docs/notes.md", "x.md")
    with pytest.raises(BadInputError, match=r"no node holds a conflict copy of other\.md"):
        keeper(REPORT, None, "other.md", "current")


def test_a_link_on_the_way_or_as_a_copy_changes_nothing(tmp_path: Path) -> None:
    """The folder's content comes from peers: a link where a directory or a copy should be stops the
    resolution before anything moves (it runs as root)."""
    root, backups = folder(tmp_path), tmp_path / "backups" / "shared"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / COPY).write_text("not the folder's\n")
    os.symlink(outside, root / "linked")
    with pytest.raises(VersionsError, match="a link"):
        resolve(str(root), str(backups), "linked/notes.md", "current", False, UID, GID)
    assert (outside / COPY).exists()
    os.symlink(outside / COPY, root / "docs" / "notes (conflict_on_2026-12-06).md")
    with pytest.raises(VersionsError, match="neither a file nor a directory"):
        resolve(str(root), str(backups), "docs/notes.md", "current", False, UID, GID)
    assert len(copies_of(str(root), "docs/notes.md")) == 3 and not backups.exists()
