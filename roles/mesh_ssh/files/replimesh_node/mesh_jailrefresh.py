"""replimesh-jail-refresh: copy the node's shell, Unison and their libraries into the jail template where they
differ, and link them into every peer's jail (the logic is mesh_jailbins, the collection's module_utils).

Standard library only: it runs on the node (``replimesh_node``), as root, from the command the mesh_ssh role
installs and from its dpkg hook.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence

from .mesh_jailbins import jail_sources, refresh_jails, refresh_template


def _ldd(path: str) -> str:
    proc = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise OSError(f"ldd {path} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="replimesh-jail-refresh",
        description="Copy the node's shell, Unison and their libraries into the jail template where they "
        "differ, and link them into every peer's jail. Prints each path it changes.",
    )
    parser.add_argument("--template", required=True, help="the jail template")
    parser.add_argument("--jails-dir", required=True, help="the parent of the peers' jails")
    parser.add_argument("--program", action="append", required=True, help="a program for the jails")
    parser.add_argument("--check", action="store_true", help="only print what would change")
    args = parser.parse_args(argv)
    try:
        sources = jail_sources(args.program, _ldd)
        changed = refresh_template(args.template, sources, args.check)
        changed += refresh_jails(args.template, args.jails_dir, sorted(sources), args.check)
    except OSError as exc:  # e.g. Unison being removed: the jails keep what they had
        print(f"replimesh-jail-refresh: {exc}", file=sys.stderr)
        return 1
    for path in changed:
        print(path)
    return 0
