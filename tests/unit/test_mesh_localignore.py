"""A node's own .replimeshignore: read, checked and given to its Unison pulls; a bad one stops the folder's
pulls with the file's name and line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_localignore import (
    LocalIgnoreError,
    ignore_args,
    local_patterns,
)
from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_member import render_profile
from tests.unit.test_mesh_member import make_spec, peer
from tests.unit.test_mesh_runner import Capsys, Mesh


def write(folder: Path, text: str | bytes) -> Path:
    path = folder / ".replimeshignore"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_no_file_no_pattern(tmp_path: Path) -> None:
    assert local_patterns(str(tmp_path)) == [] and ignore_args(str(tmp_path)) == []


def test_patterns_become_unison_names_and_paths(tmp_path: Path) -> None:
    write(tmp_path, "# build output\n\n*.log\n  cache/tmp  \n{a,b}.bak\n")
    assert local_patterns(str(tmp_path)) == ["*.log", "cache/tmp", "{a,b}.bak"]
    assert ignore_args(str(tmp_path)) == [
        "-ignore", "Name *.log", "-ignore", "Path cache/tmp", "-ignore", "Name {a,b}.bak",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("ok\n/etc/passwd\n", "line 2: '/etc/passwd' must be relative to the folder"),
        ("a/../../b\n", "line 1: 'a/../../b' must not contain .. components"),
        ("ok\nbad\x07bell\n", "line 2: 'bad\\x07bell' must not contain control characters"),
        (b"\xff\xfe*.log\n", "not UTF-8 text (byte 0)"),
        ("x" * (64 * 1024 + 1), "more than 65536"),
    ],
)
def test_a_bad_file_is_refused_with_its_line(tmp_path: Path, text: str | bytes, said: str) -> None:
    write(tmp_path, text)
    with pytest.raises(LocalIgnoreError, match=r"\.replimeshignore: ") as err:
        local_patterns(str(tmp_path))
    assert said in str(err.value)


def test_a_link_or_a_directory_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("*\n")
    os.symlink(tmp_path / "elsewhere", tmp_path / ".replimeshignore")
    with pytest.raises(LocalIgnoreError, match="cannot be read"):
        local_patterns(str(tmp_path))
    os.unlink(tmp_path / ".replimeshignore")
    (tmp_path / ".replimeshignore").mkdir()
    with pytest.raises(LocalIgnoreError, match="not a regular file"):
        local_patterns(str(tmp_path))


def test_every_profile_keeps_the_file_on_its_node() -> None:
    spec = make_spec()
    text = render_profile(spec, peer("node2"), spec.folders[0])
    assert "ignore = Name .replimeshignore\n" in text


def test_the_runner_pulls_with_the_local_patterns_and_stops_on_a_bad_file(
    tmp_path: Path, capsys: Capsys
) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    folder = mesh.folders["shared"]
    write(folder, "*.log\nbuild/out\n")
    mesh.fake("node2", fixture="copies")
    code, _report = mesh.run(capsys)
    (call,) = mesh.calls()
    assert call["argv"][:5] == ["node2--shared", "-ignore", "Name *.log", "-ignore", "Path build/out"]

    write(folder, "*.log\n/srv\n")
    code, report = mesh.run(capsys)
    (edge,) = report["edges"]
    assert code != 0 and edge["result"] == "failed", edge
    assert f"{folder}/.replimeshignore: line 2:" in edge["error"] and "nothing pulled" in edge["error"], edge
    assert len(mesh.calls()) == 1  # Unison did not run
