"""Where meshctl finds the collection replimesh.mesh (its playbooks, roles, modules and the core they share).

In a checkout the collection is collections/ansible_collections/replimesh/mesh, whose plugins/, roles/ and
playbooks/ are links to mesh_plugins/, roles/ and playbooks/ at the top. Installed (`ansible-galaxy
collection install`), it is wherever Ansible's collections path (ANSIBLE_COLLECTIONS_PATH, ansible.cfg's
collections_path, ~/.ansible/collections, ...) puts it; meshctl, installed from its wheel, reads its core
from there, and runs its playbooks from there.

replimesh.collection_build builds the collection's tarball from a checkout.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from functools import cache
from pathlib import Path

NAMESPACE, NAME = "replimesh", "mesh"
FQCN = f"{NAMESPACE}.{NAME}"
CHECKOUT = Path(__file__).resolve().parents[1]
CHECKOUT_COLLECTIONS = CHECKOUT / "collections"


class CollectionError(ImportError):
    """The collection is not installed where Ansible looks, or could not be built."""


class _MissingCollection(importlib.abc.MetaPathFinder):
    """Where the collection is not installed: importing its core raises CollectionError, which says what
    to install, instead of a bare ModuleNotFoundError (meshctl prints it and exits 3)."""

    def __init__(self, message: str) -> None:
        self.message = message

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname == "ansible_collections" or fullname.startswith(f"ansible_collections.{NAMESPACE}"):
            raise CollectionError(self.message)


def _holds_collection(root: Path) -> bool:
    return (root / "ansible_collections" / NAMESPACE / NAME / "galaxy.yml").is_file() or (
        root / "ansible_collections" / NAMESPACE / NAME / "MANIFEST.json"
    ).is_file()


def _ansible_collection_paths() -> list[Path]:
    """Ansible's collections search path: its configuration (env, ansible.cfg, defaults), then sys.path."""
    from ansible import constants as C  # reads ansible.cfg: only when the checkout has no collection

    paths = [Path(p).expanduser() for p in C.COLLECTIONS_PATHS]
    if C.config.get_config_value("COLLECTIONS_SCAN_SYS_PATH"):
        paths += [Path(p) for p in sys.path if p]
    return paths


@cache
def collections_root() -> Path:
    """The directory that holds ansible_collections/replimesh/mesh: this checkout's collections/, or the
    first place on Ansible's collections path where the collection is installed."""
    if _holds_collection(CHECKOUT_COLLECTIONS):
        return CHECKOUT_COLLECTIONS
    for root in _ansible_collection_paths():
        if _holds_collection(root):
            return root
    raise CollectionError(
        f"the Ansible collection {FQCN} is not installed: install it with `ansible-galaxy collection install "
        f"replimesh-mesh-VERSION.tar.gz` (or set ANSIBLE_COLLECTIONS_PATH to where it is)"
    )


def collection_dir() -> Path:
    return collections_root() / "ansible_collections" / NAMESPACE / NAME


def ensure_importable() -> None:
    """Make `ansible_collections.replimesh.mesh.plugins.module_utils.*` (the core) importable here."""
    if importlib.util.find_spec("ansible_collections") is not None:
        try:
            if importlib.util.find_spec(f"ansible_collections.{FQCN}") is not None:
                return
        except ModuleNotFoundError:
            pass
    try:
        root = str(collections_root())
    except CollectionError as exc:
        # After every other finder: a real ansible_collections (another collection's) still imports.
        sys.meta_path.append(_MissingCollection(str(exc)))
        return
    if root not in sys.path:
        sys.path.append(root)
        sys.modules.pop("ansible_collections", None)  # a namespace package seen before, without this path


def playbook_path(entry: str) -> Path:
    """The collection's playbook for an operator's entry point: bootstrap.yml, add-node.yml, ..."""
    path = collection_dir() / "playbooks" / f"{Path(entry).stem.replace('-', '_')}.yml"
    if not path.is_file():
        raise CollectionError(f"{FQCN} has no playbook {path.name} (in {path.parent})")
    return path
