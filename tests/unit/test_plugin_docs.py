"""The modules' and the inventory plugin's documentation: valid YAML that ansible-doc reads, with options
that say exactly what each module's argument spec accepts (name, type, default, required, choices,
elements, and the same for suboptions)."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(path.stem for path in (ROOT / "mesh_plugins" / "modules").glob("mesh_*.py"))
INVENTORY_PLUGIN = "replimesh_mesh"
PLUGINS = "ansible_collections.replimesh.mesh.plugins"
# What the docs and the spec compare: an unset key means the same in both (ansible-core's own defaults).
COMPARED = ("type", "default", "required", "choices", "elements")
IMPLICIT = {"type": "str", "required": False, "default": None, "choices": None, "elements": None}


class Captured(Exception):
    """AnsibleModule was constructed: ``args[0]`` holds its keyword arguments."""


class _Capture:
    def __init__(self, **kwargs: Any) -> None:
        raise Captured(kwargs)


def _import(name: str) -> ModuleType:
    """The collection's plugins/modules/NAME.py, importing its core by collection name as on a node."""
    return importlib.import_module(f"{PLUGINS}.modules.{name}")


def argument_spec(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The argument_spec the module's main() gives AnsibleModule, wherever the module keeps it."""
    monkeypatch.setattr(module, "AnsibleModule", _Capture)
    with pytest.raises(Captured) as captured:
        module.main()
    return captured.value.args[0]["argument_spec"]


def _normal(option: dict[str, Any]) -> dict[str, Any]:
    return {key: option.get(key, IMPLICIT[key]) for key in COMPARED}


def mismatches(documented: dict[str, Any], spec: dict[str, Any], where: str = "") -> list[str]:
    """Every difference between documented options and an argument spec, one readable line each."""
    found = [
        f"{where}{name}: documented, not in the argument spec" for name in sorted(documented.keys() - spec)
    ]
    found += [
        f"{where}{name}: in the argument spec, not documented" for name in sorted(spec.keys() - documented)
    ]
    for name in sorted(documented.keys() & spec.keys()):
        doc, real = _normal(documented[name]), _normal(spec[name])
        found += [
            f"{where}{name}.{key}: documented {doc[key]!r}, argument spec {real[key]!r}"
            for key in COMPARED
            if doc[key] != real[key]
        ]
        found += mismatches(
            documented[name].get("suboptions") or {}, spec[name].get("options") or {}, f"{where}{name}."
        )
    return found


@pytest.mark.parametrize("name", MODULES)
def test_module_documentation_matches_its_argument_spec(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _import(name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["module"] == name
    assert doc["short_description"] and doc["description"]
    assert mismatches(doc["options"], argument_spec(module, monkeypatch)) == []


@pytest.mark.parametrize("name", MODULES)
def test_module_examples_and_return_are_yaml(name: str) -> None:
    module = _import(name)
    examples = yaml.safe_load(module.EXAMPLES)
    assert isinstance(examples, list) and all("name" in task for task in examples)
    returned = yaml.safe_load(module.RETURN)
    assert isinstance(returned, dict)
    for key, value in returned.items():
        assert {"description", "returned", "type"} <= value.keys(), key


def _option_paths(options: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, option in options.items():
        paths |= {prefix + name, *_option_paths(option.get("suboptions") or {}, f"{prefix}{name}.")}
    return paths


def references(text: str, kind: str) -> set[str]:
    """The names that O(...) or RV(...) markup in `text` points at (O(name=value) points at name)."""
    return {match.split("=")[0] for match in re.findall(rf"\b{kind}\(([^)]*)\)", text)}


@pytest.mark.parametrize("name", MODULES)
def test_module_markup_names_real_options_and_return_values(name: str) -> None:
    module = _import(name)
    doc, returned = yaml.safe_load(module.DOCUMENTATION), yaml.safe_load(module.RETURN)
    text = module.DOCUMENTATION + module.RETURN
    assert references(text, "O") - _option_paths(doc["options"]) == set()
    assert references(text, "RV") - _option_paths(returned) == set()


def test_the_comparison_sees_a_wrong_default_and_a_missing_suboption() -> None:
    documented = {"a": {"type": "int", "default": 1}, "b": {"type": "list", "elements": "dict",
                  "suboptions": {"x": {"required": True}}}}  # fmt: skip
    spec = {"a": {"type": "int", "default": 2}, "b": {"type": "list", "elements": "dict",
            "options": {"x": {"type": "str", "required": True}, "y": {"type": "int"}}}}  # fmt: skip
    assert mismatches(documented, spec) == [
        "a.default: documented 1, argument spec 2",
        "b.y: in the argument spec, not documented",
    ]


def _ansible_doc(plugin_type: str, name: str) -> subprocess.CompletedProcess[str]:
    """`ansible-doc -t TYPE --json NAME` from the repository root, whose ansible.cfg names the plugins."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    env.pop("ANSIBLE_CONFIG", None)
    return subprocess.run(
        [str(bin_dir / "ansible-doc"), "-t", plugin_type, "--json", f"replimesh.mesh.{name}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("plugin_type", "name"), [*(("module", m) for m in MODULES),
                                                   ("inventory", INVENTORY_PLUGIN)])  # fmt: skip
def test_ansible_doc_reads_the_documentation(plugin_type: str, name: str) -> None:
    proc = _ansible_doc(plugin_type, name)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)[f"replimesh.mesh.{name}"]["doc"]
    assert doc["options"] and doc["short_description"]
