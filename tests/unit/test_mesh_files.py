"""mesh_files: a role's program files installed into one directory by one module run."""

from __future__ import annotations

import base64
import importlib
import os
import stat
from pathlib import Path

import pytest

from tests.unit.module_harness import PLUGINS, Failed, run_module

mesh_files = importlib.import_module(f"{PLUGINS}.modules.mesh_files")


def args(dest: Path, files: dict[str, bytes], **extra: object) -> dict[str, object]:
    encoded = {name: base64.b64encode(data).decode() for name, data in files.items()}
    return {"src": "replimesh_node", "dest": str(dest), "files": encoded, **extra}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_directory_gets_every_file_then_a_second_run_changes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "lib" / "replimesh_node"
    files = {"__init__.py": b"", "mesh_runner.py": b"print('run')\n", "bin.dat": bytes(range(256))}
    result = run_module(mesh_files, args(dest, files))
    assert result["changed"] and str(dest) in result["written"]
    assert {Path(p).name for p in result["written"]} >= set(files)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == files
    assert mode(dest) == 0o755 and all(mode(dest / name) == 0o644 for name in files)
    again = run_module(mesh_files, args(dest, files))
    assert not again["changed"] and again["written"] == again["fixed"] == again["removed"] == []


def test_only_what_differs_is_written_others_are_left_and_absent_ones_go(tmp_path: Path) -> None:
    dest = tmp_path / "code"
    run_module(mesh_files, args(dest, {"a.py": b"a1\n", "b.py": b"b\n"}))
    (dest / "mesh_status.py").write_text("stale\n")
    (dest / "other.py").write_text("another role's file\n")
    inode_b = (dest / "b.py").stat().st_ino
    result = run_module(mesh_files, args(dest, {"a.py": b"a2\n", "b.py": b"b\n"}, absent=["mesh_status.py"]))
    assert result["written"] == [str(dest / "a.py")] and result["removed"] == [str(dest / "mesh_status.py")]
    assert (dest / "a.py").read_bytes() == b"a2\n" and (dest / "b.py").stat().st_ino == inode_b
    assert (dest / "other.py").read_text() == "another role's file\n"  # not named: left alone
    assert not (dest / "mesh_status.py").exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_wrong_mode_is_fixed_in_place_and_a_link_is_replaced_by_a_file(tmp_path: Path) -> None:
    dest = tmp_path / "code"
    run_module(mesh_files, args(dest, {"a.py": b"a\n"}))
    os.chmod(dest / "a.py", 0o666)
    target = tmp_path / "elsewhere.py"
    target.write_text("not ours\n")
    (dest / "b.py").symlink_to(target)
    result = run_module(mesh_files, args(dest, {"a.py": b"a\n", "b.py": b"b\n"}, mode="0640"))
    assert result["fixed"] == [str(dest / "a.py")] and result["written"] == [str(dest / "b.py")]
    assert mode(dest / "a.py") == 0o640 and not (dest / "b.py").is_symlink()
    assert target.read_text() == "not ours\n"  # the link's target was not written through


def test_check_mode_reports_and_writes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "code"
    result = run_module(mesh_files, args(dest, {"a.py": b"a\n"}, absent=["x.py"]), check=True)
    assert result["changed"] and str(dest / "a.py") in result["written"]
    assert not dest.exists()


@pytest.mark.parametrize(
    ("files", "extra", "message"),
    [
        ({"../escape.py": b"x"}, {}, "not a plain file name"),
        ({"a/b.py": b"x"}, {}, "not a plain file name"),
        ({"a.py": b"x"}, {"absent": ["a.py"]}, "also to be installed"),
        ({"a.py": b"x"}, {"absent": [".."]}, "not a plain file name"),
        ({"a.py": b"x"}, {"mode": "rw-r--r--"}, "octal mode"),
        ({"a.py": b"x"}, {"dir_mode": "99999"}, "octal mode"),
    ],
)
def test_bad_input_fails_before_anything_changes(
    tmp_path: Path, files: dict[str, bytes], extra: dict[str, object], message: str
) -> None:
    dest = tmp_path / "code"
    with pytest.raises(Failed, match=message):
        run_module(mesh_files, args(dest, files, **extra))
    assert not dest.exists() and not (tmp_path / "escape.py").exists()


def test_content_that_is_not_base64_and_a_dest_that_is_a_file_are_refused(tmp_path: Path) -> None:
    dest = tmp_path / "code"
    with pytest.raises(Failed, match="not base64"):
        run_module(mesh_files, {"src": "x", "dest": str(dest), "files": {"a.py": "not base64!"}})
    with pytest.raises(Failed, match="mapping of names"):
        run_module(mesh_files, {"src": "x", "dest": str(dest), "files": ["a.py"]})
    dest.write_text("a file\n")
    with pytest.raises(Failed, match="is not a directory"):
        run_module(mesh_files, args(dest, {"a.py": b"a\n"}))
    assert dest.read_text() == "a file\n"


def test_paths_are_laid_out_in_the_same_run_and_checked_with_the_files_before_any_change(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "lib" / "replimesh_node"
    command = {"path": str(tmp_path / "replimesh-sync"), "content": "#!/bin/sh\n", "mode": "0755"}
    under = {"path": str(dest / "state"), "state": "directory", "mode": "0750"}  # below the files' directory
    result = run_module(mesh_files, args(dest, {"a.py": b"a\n"}, paths=[command, under]))
    # The directories created first, then the files written (the module's order within each).
    lib, sync = tmp_path / "lib", tmp_path / "replimesh-sync"
    assert result["written"] == [str(lib), str(dest), str(dest / "state"), str(dest / "a.py"), str(sync)]
    assert mode(tmp_path / "replimesh-sync") == 0o755 and mode(dest / "state") == 0o750
    bad = {"path": str(tmp_path / "other"), "state": "directory"}  # no mode
    with pytest.raises(Failed, match="needs a mode"):
        run_module(mesh_files, args(tmp_path / "fresh", {"a.py": b"a\n"}, paths=[bad]))
    assert not (tmp_path / "fresh").exists()


def test_compile_for_compiles_the_code_once_for_the_node_s_python_and_again_when_it_changes(
    tmp_path: Path,
) -> None:
    import importlib.util
    import sys

    dest = tmp_path / "code"
    files = {"a.py": b"A = 1\n", "b.py": b"B = 2\n", "notes.txt": b"not code\n"}
    result = run_module(mesh_files, args(dest, files, compile_for=sys.executable))
    assert result["changed"] and result["compiled"] == [str(dest / "a.py"), str(dest / "b.py")]
    cached = Path(importlib.util.cache_from_source(str(dest / "a.py")))
    assert cached.is_file() and cached.read_bytes()[:4] == importlib.util.MAGIC_NUMBER
    again = run_module(mesh_files, args(dest, files, compile_for=sys.executable))
    assert not again["changed"] and again["compiled"] == []
    changed = run_module(mesh_files, args(dest, {**files, "b.py": b"B = 3\n"}, compile_for=sys.executable))
    assert changed["compiled"] == [str(dest / "b.py")]  # the new bytes, a new modification time
    checked = run_module(mesh_files, args(tmp_path / "fresh", files, compile_for=sys.executable), check=True)
    assert checked["compiled"] == [] and not (tmp_path / "fresh").exists()


def test_code_that_does_not_compile_fails_the_run_by_name(tmp_path: Path) -> None:
    import sys

    with pytest.raises(Failed, match=r"could not compile .*broken\.py"):
        run_module(
            mesh_files, args(tmp_path / "code", {"broken.py": b"def (:\n"}, compile_for=sys.executable)
        )
