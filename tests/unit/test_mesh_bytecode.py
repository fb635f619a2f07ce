"""mesh_bytecode: code installed by root compiled where it lies, for the node's Python, only when stale."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.unit.module_harness import PLUGINS

bytecode = importlib.import_module(f"{PLUGINS}.module_utils.mesh_bytecode")


def code(tmp_path: Path) -> list[str]:
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "b.py").write_text("B = 2\n")
    return [str(tmp_path / "a.py"), str(tmp_path / "b.py")]


def test_stale_is_missing_or_out_of_date_bytecode(tmp_path: Path) -> None:
    sources = code(tmp_path)
    assert bytecode.stale(sources) == sources
    assert bytecode.compile_stale(sources, sys.executable, apply=False) == sources  # said, not done
    assert bytecode.stale(sources) == sources
    assert bytecode.compile_stale(sources, sys.executable) == sources
    assert bytecode.stale(sources) == [] and bytecode.compile_stale(sources, sys.executable) == []
    later = os.stat(sources[0]).st_mtime + 10
    os.utime(sources[0], (later, later))  # the source changed after it was compiled
    assert bytecode.stale(sources) == [sources[0]]


def test_another_interpreter_compiles_them_itself_and_says_which(tmp_path: Path) -> None:
    # A link to this interpreter under another name resolves to it: a copy is another interpreter.
    other = tmp_path / "bin" / "python-other"
    other.parent.mkdir()
    shutil.copy2(sys.executable, other)
    assert not bytecode.same_interpreter(str(other))
    sources = code(tmp_path / "bin")
    try:
        compiled = bytecode.compile_stale(sources, str(other))
    except OSError as exc:  # a copied interpreter that cannot find its library (a venv's)
        pytest.skip(f"a copied interpreter does not run here: {exc}")
    assert compiled == sources and bytecode.compile_stale(sources, str(other)) == []
    assert bytecode.compile_stale(sources, str(other), apply=False) == []  # unknown without running it


def test_a_failing_interpreter_is_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "python-broken"
    broken.write_text("#!/bin/sh\necho 'no such module' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(OSError, match="no such module"):
        bytecode.compile_stale(code(tmp_path), str(broken))


def test_a_file_written_again_within_the_second_is_compiled_when_named(tmp_path: Path) -> None:
    sources = code(tmp_path)
    bytecode.compile_stale(sources, sys.executable)
    when = os.stat(sources[1]).st_mtime
    Path(sources[1]).write_text("B = 3\n")  # same size, and the same second
    os.utime(sources[1], (when, when))
    assert bytecode.stale(sources) == []  # the timestamp cannot tell
    assert bytecode.compile_stale(sources, sys.executable, written=frozenset(sources[1:])) == sources[1:]
    namespace: dict[str, object] = {}
    exec(compile(Path(sources[1]).read_text(), sources[1], "exec"), namespace)
    assert namespace["B"] == 3
