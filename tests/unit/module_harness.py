"""Running one of the project's modules in-process through AnsibleModule.

The modules import their core by its collection name (``ansible_collections.replimesh.mesh.plugins.
module_utils.NAME``), which the tests import from collections/ (pyproject's pythonpath); the module's
arguments are patched in the way ansible-core's own tests do.
"""

from __future__ import annotations

import contextlib
import importlib
import json
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


PLUGINS = "ansible_collections.replimesh.mesh.plugins"


class Exited(Exception):
    """The module called exit_json: ``args[0]`` is its result."""


class Failed(Exception):
    """The module called fail_json: ``args[0]`` is its result with ``msg``."""


def run_module(
    module: ModuleType, args: dict[str, Any], check: bool = False, diff: bool = False
) -> dict[str, Any]:
    """Run ``module.main()`` with these arguments; its result, or Failed raised with it."""

    def exit_json(self: basic.AnsibleModule, **result: Any) -> None:
        raise Exited(result)

    def fail_json(self: basic.AnsibleModule, msg: str, **result: Any) -> None:
        raise Failed({"msg": msg, **result})

    with (
        patch_module_args({**args, "_ansible_check_mode": check, "_ansible_diff": diff}),
        mock.patch.object(basic.AnsibleModule, "exit_json", exit_json),
        mock.patch.object(basic.AnsibleModule, "fail_json", fail_json),
    ):
        try:
            module.main()
        except Exited as exited:
            return exited.args[0]
    raise AssertionError("the module returned without exit_json or fail_json")


def load_module(name: str) -> tuple[ModuleType, ModuleType]:
    """(core, module) for the collection's plugins/module_utils/NAME.py and plugins/modules/NAME.py."""
    core = importlib.import_module(f"{PLUGINS}.module_utils.{name}")
    return core, importlib.import_module(f"{PLUGINS}.modules.{name}")


__all__ = ["Exited", "Failed", "load_module", "patch_module_args", "run_module"]
