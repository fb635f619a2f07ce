"""mesh_folders: a node's sync folders made ready in one module run (created, marked, inner disks guarded)."""

from __future__ import annotations

import importlib
import os
import stat
from pathlib import Path

import pytest

from tests.unit.module_harness import PLUGINS, Failed, run_module

mesh_folders = importlib.import_module(f"{PLUGINS}.modules.mesh_folders")
core = importlib.import_module(f"{PLUGINS}.module_utils.mesh_folders")

MARKER = ".replimesh-folder"
UID, GID = os.getuid(), os.getgid()


def settings(tmp_path: Path, adopt: bool = False) -> object:
    return core.Settings(
        uid=UID,
        gid=GID,
        mode=0o775,
        marker=MARKER,
        adopt_empty=adopt,
        jail_dir=str(tmp_path / "jail"),
        fstab=str(tmp_path / "fstab"),
    )


def mountinfo(*points: Path) -> str:
    return "".join(f"{40 + i} 1 0:{i} / {p} rw - tmpfs tmpfs rw\n" for i, p in enumerate(points))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_folder_and_its_parents_are_made_and_marked_then_a_second_run_changes_nothing(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "srv" / "replimesh" / "shared"
    report = core.prepare([str(folder)], settings(tmp_path), mountinfo=lambda: "")
    assert report.created == [str(folder.parent), str(folder)]
    assert report.marked == [str(folder / MARKER)] and report.changed
    assert mode(folder) == 0o775 and (folder / MARKER).read_text() == core.FOLDER_MARKER
    assert mode(folder / MARKER) == 0o644
    again = core.prepare([str(folder)], settings(tmp_path), mountinfo=lambda: "")
    assert not again.changed and again.inner == {str(folder): []}


def test_an_empty_folder_without_marker_fails_the_run_before_anything_changes(tmp_path: Path) -> None:
    empty, new = tmp_path / "empty", tmp_path / "new"
    empty.mkdir()
    with pytest.raises(core.FoldersError, match=r"empty and has no \.replimesh-folder"):
        core.prepare([str(new), str(empty)], settings(tmp_path), mountinfo=lambda: "")
    assert not new.exists() and not (empty / MARKER).exists()  # the folder before it was not made either
    adopted = core.prepare([str(new), str(empty)], settings(tmp_path, adopt=True), mountinfo=lambda: "")
    assert str(empty / MARKER) in adopted.marked and (empty / MARKER).exists()


def test_a_folder_with_data_gets_a_marker_a_kept_marker_is_left_and_a_wrong_mode_is_fixed(
    tmp_path: Path,
) -> None:
    data, kept = tmp_path / "data", tmp_path / "kept"
    data.mkdir()
    os.chmod(data, 0o755)
    (data / "photo.jpg").write_bytes(b"\xff\xd8")
    kept.mkdir(mode=0o700)
    (kept / MARKER).write_text("the operator's own words\ninner disk: photos\n")
    os.chmod(kept, 0o700)
    report = core.prepare([str(data), str(kept)], settings(tmp_path), mountinfo=lambda: "")
    assert report.marked == [str(data / MARKER)] and report.fixed == [str(data), str(kept)]
    assert (kept / MARKER).read_text() == "the operator's own words\ninner disk: photos\n"
    assert mode(kept) == mode(data) == 0o775 and (data / "photo.jpg").read_bytes() == b"\xff\xd8"
    # The listed disk is not mounted: a warning, and the line stays.
    assert report.inner[str(kept)] == ["photos"]
    assert any(f"{kept}/photos is listed" in warning for warning in report.warnings)


def test_a_disk_mounted_inside_a_folder_is_marked_and_listed(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    (folder / "photos").mkdir(parents=True)
    (folder / MARKER).write_text(core.FOLDER_MARKER)
    info = mountinfo(tmp_path, folder / "photos")  # the folder's own filesystem, and a disk inside it
    report = core.prepare([str(folder)], settings(tmp_path), mountinfo=lambda: info)
    assert (folder / "photos" / MARKER).read_text() == core.DISK_MARKER.format(folder=folder)
    assert (folder / MARKER).read_text().endswith("Delete a line to retire that disk.\ninner disk: photos\n")
    assert report.inner == {str(folder): ["photos"]} and not report.warnings
    again = core.prepare([str(folder)], settings(tmp_path), mountinfo=lambda: info)
    assert not again.changed


def test_the_shared_jails_binds_of_an_earlier_layout_go_from_fstab(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    jailed = f"{tmp_path}/jail{folder}"
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"UUID=1 / ext4 defaults 0 1\n{folder} {jailed} none bind 0 0\n/dev/sdb1 /other ext4 0 2\n"
    )
    report = core.prepare([str(folder)], settings(tmp_path, adopt=True), mountinfo=lambda: "")
    assert report.unbound == [f"{fstab}: {jailed}"]
    assert fstab.read_text() == "UUID=1 / ext4 defaults 0 1\n/dev/sdb1 /other ext4 0 2\n"


def test_check_mode_says_what_would_change_and_changes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "shared"
    args = {
        "paths": [str(folder)],
        "owner": "replimesh-no-such-user",
        "mode": "0775",
        "jail_dir": "/nonexistent",
    }
    result = run_module(mesh_folders, args, check=True)
    assert result["changed"] and result["created"] == [str(folder.parent), str(folder)]
    assert not folder.parent.exists()
    with pytest.raises(Failed, match="no user and group"):
        run_module(mesh_folders, args)
    assert not folder.parent.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"paths": ["relative/shared"]}, "normal absolute path"),
        ({"paths": ["/srv/../etc"]}, "normal absolute path"),
        ({"mode": "0999"}, "octal"),
        ({"marker": "../x"}, "plain file name"),
    ],
)
def test_bad_input_is_refused_before_any_change(
    tmp_path: Path, extra: dict[str, object], message: str
) -> None:
    owner = __import__("pwd").getpwuid(UID).pw_name
    args = {"paths": [str(tmp_path / "a")], "owner": owner, "mode": "0775", "jail_dir": str(tmp_path / "j")}
    with pytest.raises(Failed) as failed:
        run_module(mesh_folders, {**args, **extra})
    assert message in failed.value.args[0]["msg"] and not (tmp_path / "a").exists()


def test_a_folder_that_is_a_link_to_a_directory_gets_its_targets_owner_and_mode(tmp_path: Path) -> None:
    disk = tmp_path / "mnt" / "shared"
    disk.mkdir(parents=True)
    os.chmod(disk, 0o700)
    (disk / "photo.jpg").write_bytes(b"\xff\xd8")
    folder = tmp_path / "srv" / "shared"
    folder.parent.mkdir()
    folder.symlink_to(disk)
    report = core.prepare([str(folder)], settings(tmp_path), mountinfo=lambda: "")
    assert report.fixed == [str(folder)] and mode(disk) == 0o775 and folder.is_symlink()
    assert (disk / MARKER).read_text() == core.FOLDER_MARKER


def test_every_folders_bind_goes_from_fstab_and_other_lines_stay(tmp_path: Path) -> None:
    shared, docs = tmp_path / "shared", tmp_path / "docs"
    jail = f"{tmp_path}/jail"
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"{shared} {jail}{shared} none bind 0 0\nUUID=1 / ext4 0 1\n{docs} {jail}{docs} none bind 0 0\n"
    )
    report = core.prepare([str(shared), str(docs)], settings(tmp_path, adopt=True), mountinfo=lambda: "")
    assert report.unbound == [f"{fstab}: {jail}{shared}", f"{fstab}: {jail}{docs}"]
    assert fstab.read_text() == "UUID=1 / ext4 0 1\n"


def test_the_versions_the_shared_jail_kept_move_out_of_it_and_the_link_goes(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / MARKER).write_text(core.FOLDER_MARKER)
    backup = tmp_path / "backup"
    jailed = Path(str(tmp_path / "jail") + str(backup))
    (jailed / "shared").mkdir(parents=True)
    (jailed / "shared" / "report.txt").write_text("an older version\n")
    backup.symlink_to(jailed)
    base = settings(tmp_path)
    with_backups = core.Settings(**{**base.__dict__, "backup_dir": str(backup)})
    checked = core.prepare([str(folder)], with_backups, apply=False, mountinfo=lambda: "")
    assert checked.moved == [f"{jailed} -> {backup}"] and checked.changed and backup.is_symlink()
    report = core.prepare([str(folder)], with_backups, mountinfo=lambda: "")
    assert report.moved == [f"{jailed} -> {backup}"] and not backup.is_symlink()
    assert (backup / "shared" / "report.txt").read_text() == "an older version\n" and not jailed.exists()
    assert not core.prepare([str(folder)], with_backups, mountinfo=lambda: "").changed
    # A link whose target is gone (nothing kept) is removed.
    backup.rename(tmp_path / "kept")
    backup.symlink_to(tmp_path / "nowhere")
    assert core.prepare([str(folder)], with_backups, mountinfo=lambda: "").moved == [
        f"{backup} (a link into the shared jail) removed"
    ]
    assert not os.path.lexists(backup)
