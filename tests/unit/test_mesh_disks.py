"""A disk mounted inside a folder: its guard line in the folder's marker, its own marker, and what the runner
and the watcher read of /proc/self/mountinfo."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ansible_collections.replimesh.mesh.plugins.module_utils import mesh_disks
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_disks import (
    disk_problem,
    inner_disks,
    mount_points,
    mounts_inside,
)

MARKER = ".replimesh-folder"
MOUNTINFO = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "40 22 8:17 / {folder}/photos rw,relatime shared:20 - ext4 /dev/sdb1 rw\n"
    "41 22 0:50 / {folder}/with\\040space rw - tmpfs tmpfs rw\n"
    "42 22 0:51 / {folder}x/other rw - tmpfs tmpfs rw\n"
)


def test_mount_points_inside_a_folder_only() -> None:
    points = mount_points(MOUNTINFO.format(folder="/srv/a"))
    assert "/srv/a/with space" in points
    assert mounts_inside("/srv/a", points) == ["photos", "with space"]
    assert mounts_inside("/srv/a/", points) == ["photos", "with space"]
    assert mounts_inside("/srv/b", points) == []


def test_inner_disk_lines_of_a_marker() -> None:
    text = "A replica.\ninner disk: photos\ninner disk: a/b/ \ninner disk: ../etc\ninner disk: \n"
    assert inner_disks(text) == ["a/b", "photos"]
    assert inner_disks("") == []


def folder(tmp_path: Path, lines: str = "") -> Path:
    root = tmp_path / "f"
    (root / "photos").mkdir(parents=True)
    (root / MARKER).write_text(f"replica\n{lines}")
    return root


def test_a_listed_disk_without_its_marker_stops_the_folder(tmp_path: Path) -> None:
    root = folder(tmp_path, "inner disk: photos\n")
    info = MOUNTINFO.format(folder=root).replace(f"{root}/with\\040space", "/elsewhere")
    problem = disk_problem(str(root), MARKER, info.replace(f"{root}/photos", "/mnt/x"))  # unmounted
    assert problem and f"{root}/photos is not mounted" in problem and "refusing to sync" in problem
    (root / "photos" / MARKER).write_text("disk\n")
    assert disk_problem(str(root), MARKER, info) is None


def test_a_disk_mounted_inside_a_folder_without_a_guard_stops_the_folder(tmp_path: Path) -> None:
    root = folder(tmp_path)
    problem = disk_problem(str(root), MARKER, MOUNTINFO.format(folder=root))
    assert problem and "without a guard" in problem and f"{root}/photos, {root}/with space" in problem
    assert disk_problem(str(root), MARKER, "") is None  # nothing mounted inside: nothing to guard


def test_the_marker_is_read_without_following_a_link_or_waiting(tmp_path: Path) -> None:
    root = tmp_path / "f"
    root.mkdir()
    (tmp_path / "elsewhere").write_text("inner disk: photos\n")
    (root / MARKER).symlink_to(tmp_path / "elsewhere")
    assert mesh_disks.read_marker(str(root), MARKER) == ""
    assert mesh_disks.read_mountinfo(str(tmp_path / "absent")) == ""


SERVE = Path(__file__).parents[2] / "roles/mesh_ssh/templates/jail/bin/replimesh-serve.j2"


def serve(tmp_path: Path, folders: str) -> subprocess.CompletedProcess[str]:
    """The jail's forced command, run with sh as sshd runs it (the Unison server stood in for by echo)."""
    script = tmp_path / "replimesh-serve"
    script.write_text(SERVE.read_text().replace("{{ ansible_managed | comment }}", "# managed"))
    env = {"PATH": "/usr/bin:/bin", "UNISON_BINARY": "/bin/echo", "REPLIMESH_FOLDERS": folders,
           "REPLIMESH_MARKER": MARKER}  # fmt: skip
    return subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env, check=False)


def test_the_jail_serves_no_pull_while_a_listed_disk_is_not_mounted(tmp_path: Path) -> None:
    plain, guarded = tmp_path / "plain", folder(tmp_path, "inner disk: photos\n")
    plain.mkdir()
    (plain / "*").mkdir()  # a folder's name is never a pattern
    served = serve(tmp_path, f"{plain}/*,{guarded}")
    assert served.returncode == 1 and served.stdout == ""
    assert f"the disk inside {guarded} at photos is not mounted: serving no pull" in served.stderr
    (guarded / "photos" / MARKER).write_text("disk\n")
    served = serve(tmp_path, f"{plain}/*,{guarded}")
    assert (served.returncode, served.stdout) == (0, "-server\n")
    assert serve(tmp_path, "").stdout == "-server\n"  # keys written before the guard: served as before
