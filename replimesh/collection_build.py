"""Build the collection replimesh.mesh from this checkout: its tree under collections/ with the links to
mesh_plugins/, roles/ and playbooks/ followed, then `ansible-galaxy collection build`.

    python -m replimesh.collection_build [--out DIR]   # prints DIR/replimesh-mesh-VERSION.tar.gz
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from replimesh.collection import CHECKOUT, CHECKOUT_COLLECTIONS, NAME, NAMESPACE, CollectionError

# What a built collection leaves out (besides galaxy.yml's build_ignore, which ansible-galaxy applies).
NOT_SHIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "molecule", ".pytest_cache")


def galaxy_version(source: Path = CHECKOUT_COLLECTIONS) -> str:
    galaxy = source / "ansible_collections" / NAMESPACE / NAME / "galaxy.yml"
    return str(yaml.safe_load(galaxy.read_text(encoding="utf-8"))["version"])


def build(out: Path, source: Path = CHECKOUT_COLLECTIONS) -> Path:
    """Copy the collection (links followed) into a real tree and build its tarball into `out`."""
    tree = source / "ansible_collections" / NAMESPACE / NAME
    if not (tree / "galaxy.yml").is_file():
        raise CollectionError(f"{tree}: no galaxy.yml (not a checkout of replimesh)")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="replimesh-collection-") as work:
        staged = Path(work) / "ansible_collections" / NAMESPACE / NAME
        shutil.copytree(tree, staged, symlinks=False, ignore=NOT_SHIPPED)
        galaxy = shutil.which("ansible-galaxy", path=str(Path(sys.executable).parent)) or "ansible-galaxy"
        proc = subprocess.run(
            [galaxy, "collection", "build", "--force", "--output-path", str(out.resolve()), str(staged)],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise CollectionError(f"ansible-galaxy collection build failed: {proc.stderr.strip() or proc.stdout}")
    built = out / f"{NAMESPACE}-{NAME}-{galaxy_version(source)}.tar.gz"
    if not built.is_file():
        raise CollectionError(f"ansible-galaxy said it built the collection, but {built} is not there")
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m replimesh.collection_build", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=CHECKOUT / "dist", help="where the tarball goes")
    args = parser.parse_args(argv)
    try:
        print(build(args.out))
    except CollectionError as err:
        print(f"replimesh.collection_build: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
