"""Python code installed by root, compiled where it lies: the runner runs as the mesh user, who cannot write
its __pycache__, and would compile its code again at every start.

mesh_files does it in the run that installs the code (it was a `python3 -m compileall` task, a module run of
its own on every node). The staleness test is compileall's: a cached file is current when its header holds
this interpreter's magic number, timestamp-based validation and the source's modification time. A file
written again within the same second keeps its time: the caller names the files it wrote (`written`), and
they are compiled whatever their bytecode says.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import struct
import subprocess
import sys


def _current(source: str) -> bool:
    expect = struct.pack("<4sLL", importlib.util.MAGIC_NUMBER, 0, int(os.stat(source).st_mtime) & 0xFFFFFFFF)
    try:
        with open(importlib.util.cache_from_source(source), "rb") as handle:
            return handle.read(12) == expect
    except OSError:
        return False


def stale(sources: list[str]) -> list[str]:
    """The sources whose cached bytecode, for this interpreter, is missing or out of date."""
    return [source for source in sources if not _current(source)]


def same_interpreter(python: str) -> bool:
    """Is `python` the interpreter running this code (the module's)?"""
    return os.path.realpath(python) == os.path.realpath(sys.executable)


def compile_stale(
    sources: list[str], python: str, apply: bool = True, written: frozenset[str] = frozenset()
) -> list[str]:
    """Compile, for `python`, the sources whose bytecode is missing or stale, and those `written`; the ones
    compiled (or, with apply=False, the ones that would be: only known when `python` runs this code).

    Another interpreter (an operator's ansible_python_interpreter) compiles them itself, with compileall,
    which says which it compiled (all of them, forced, when one was written)."""
    if same_interpreter(python):
        todo = [source for source in sources if source in written or not _current(source)]
        if apply:
            for source in todo:
                py_compile.compile(
                    source, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP
                )
        return todo
    if not apply:
        return []
    done = subprocess.run(
        [
            python,
            "-m",
            "compileall",
            "-l",
            *(["-f"] if written & set(sources) else []),
            *sorted({os.path.dirname(s) for s in sources}),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise OSError(f"{python} -m compileall: {(done.stderr or done.stdout).strip() or done.returncode}")
    compiled = {
        line.split(" ", 1)[1].strip("'.")
        for line in done.stdout.splitlines()
        if line.startswith("Compiling ")
    }
    return [source for source in sources if source in compiled]
