"""Running one of the project's modules in-process through AnsibleModule.

Ansible ships ``mesh_plugins/module_utils/NAME.py`` to a node as ``ansible.module_utils.NAME``; here the
core is registered under that name before the module is imported, and the module's arguments are
patched in the way ansible-core's own tests do.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from unittest import mock

from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19

    @contextlib.contextmanager
    def patch_module_args(args: dict[str, Any] | None = None) -> Iterator[None]:  # type: ignore[misc]
        payload = json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode()
        with mock.patch.object(basic, "_ANSIBLE_ARGS", payload):
            yield


def load_module(name: str) -> tuple[ModuleType, ModuleType]:
    """(core, module) for mesh_plugins/module_utils/NAME.py and mesh_plugins/modules/NAME.py."""
    core = importlib.import_module(f"mesh_plugins.module_utils.{name}")
    sys.modules.setdefault(f"ansible.module_utils.{name}", core)
    return core, importlib.import_module(f"mesh_plugins.modules.{name}")


__all__ = ["load_module", "patch_module_args"]
