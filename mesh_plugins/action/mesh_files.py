"""Action plugin of replimesh.mesh.mesh_files: reads the named files of a role on the control node and
hands their contents to the module, so that one module run installs them all."""

from __future__ import annotations

import base64
import os
from typing import Any

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

# Far above the node program (about 200 KiB): a wrong src (a whole tree, a large file) fails here.
MAX_BYTES = 8 * 1024 * 1024


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("src", "files", "dest", "mode", "dir_mode", "absent", "paths", "compile_for"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp  # unused (ActionBase makes its own)
        args = dict(self._task.args)
        src, names = args.get("src"), args.get("files")
        if not isinstance(src, str) or not src:
            return {**result, "failed": True, "msg": "src must name a directory of the role's files"}
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return {**result, "failed": True, "msg": "files must be a list of file names under src"}
        try:
            base = self._find_needle("files", src)
        except AnsibleError as exc:
            return {**result, "failed": True, "msg": f"src {src}: {to_text(exc)}"}
        contents: dict[str, str] = {}
        total = 0
        for name in names:
            if name in ("", ".", "..") or "/" in name:
                return {**result, "failed": True, "msg": f"files: {name!r} is not a plain file name"}
            path = os.path.join(base, name)
            try:
                with open(path, "rb") as handle:  # links (the role's links into module_utils) followed
                    data = handle.read(MAX_BYTES + 1)
            except OSError as exc:
                return {**result, "failed": True, "msg": f"files: cannot read {path}: {exc}"}
            total += len(data)
            if total > MAX_BYTES:
                return {**result, "failed": True, "msg": f"files: more than {MAX_BYTES} bytes under {base}"}
            contents[name] = base64.b64encode(data).decode("ascii")
        module_args = {**args, "files": contents}
        result.update(
            self._execute_module(
                module_name="replimesh.mesh.mesh_files", module_args=module_args, task_vars=task_vars
            )
        )
        return result
