"""Bad input through the real inventory plugin: every malformed mesh file ends in one clear
AnsibleParserError that names the file and the offending field, never a traceback or another exception.

Complements the parser-level fuzzing in test_mesh_config.py: here the input is a file on disk, read by
Ansible's own YAML loader (duplicate keys, tabs, tags, huge or deep values), and each generated bad value
is aimed at one known field, so the test can demand that the message names exactly that field.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleParserError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability import record
from tests.unit.test_inventory_plugin import mesh_data, parse_direct, write
from tests.unit.test_mesh_config import with_value

FUZZ = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# No null: an optional key set to null means "the default"; required fields add st.none() themselves.
NOT_STRING = st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
NOT_STRING |= st.lists(st.integers(), max_size=3) | st.dictionaries(
    st.text(max_size=4), st.integers(), max_size=2
)
NOT_INT = st.booleans() | st.floats(allow_nan=False) | st.text(max_size=8) | st.lists(st.integers())
HUGE = st.integers(5000, 200_000).map(lambda n: "x" * n)
# Characters no name (node, folder, user) or identifier (group, variable) may hold.
BREAKERS = " \t\n/\\.:;,'\"$`*?[]{}()<>|&!#%=@+~^\u00e9\u2028\x00\x7f"


@st.composite
def broken_name(draw: st.DrawFn, good: str = "node", identifier: bool = False) -> str:
    """A bad name: a character no name may hold, or (lowercase names) too long, an upper-case letter, a
    leading - or capital; or (identifiers such as groups and variables) a - or a leading digit; or empty."""
    kinds = ["char", "empty", "digit" if identifier else "long", "dash" if identifier else "lead"]
    kind = draw(st.sampled_from(kinds))
    at = draw(st.integers(0, len(good)))
    if kind == "long":
        return "n" * draw(st.integers(64, 5000))
    if kind == "lead":
        return draw(st.sampled_from(["-", "A", "\u00e9"])) + good
    if kind == "digit":
        return draw(st.sampled_from("0123456789")) + good
    if kind == "dash":
        return good[:at] + "-" + good[at:]
    if kind == "empty":
        return ""
    return good[:at] + draw(st.sampled_from(list(BREAKERS + ("" if identifier else "AZ")))) + good[at:]


SYSTEM = [
    "/",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/root",
    "/usr/lib",
    "/var/lib/replimesh",
    "/var/log",
    "/boot",
]
SHARED = ["/srv", "/home", "/tmp", "/var", "/var/lib", "/mnt", "/opt", "/var/tmp", "/media"]


BAD_PATH_CHARS = {"control": "\n\r\x00\x1b\x7f", "space": " \t\u00a0\u2003", "char": ",='\"\\"}


@st.composite
def unsafe_path(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["system", "shared", "dots", "relative", "control", "space", "char", "long"]))
    tail = draw(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True))
    if kind == "system":
        base = draw(st.sampled_from(SYSTEM))
        return base if base == "/" or draw(st.booleans()) else f"{base.rstrip('/')}/{tail}"
    if kind == "shared":
        return draw(st.sampled_from(SHARED))
    if kind == "dots":
        return draw(
            st.sampled_from([f"/srv/../etc/{tail}", f"/srv/{tail}/..", f"/srv/./{tail}", "/srv/x/../.."])
        )
    if kind == "relative":
        return draw(st.sampled_from([tail, f"srv/{tail}", f"./{tail}", f"../{tail}", f"~/{tail}", ""]))
    if kind in ("control", "space", "char"):
        return f"/srv/{tail}{draw(st.sampled_from(list(BAD_PATH_CHARS[kind])))}x"
    return "/srv/" + "n" * draw(st.integers(256, 6000))


UNSAFE_IGNORE = st.sampled_from(
    ["..", "../x", "a/../b", "a/..", "/etc", "/x/*.tmp", "", "  ", "a\nb", "a\x00"]
)
ADDRESSES = st.sampled_from(
    ["127.0.0.1", "::1", "0.0.0.0", "224.0.0.1", "1.2.3.999", "256.0.0.1", "10.0.0.1/24", "localhost",
     "a..b", "-x.example", "x-.example", "fe80::1%eth0", "ssh://10.0.0.1", "10.0.0.1 -oProxyCommand=x",
     'a" b', "a,b", "a" * 64 + ".example", "x." * 130 + "y"]
)  # fmt: skip
BAD_GROUP = broken_name("site", identifier=True)
# (field, strategy of values no valid mesh file may hold there, the key the error must name)
FIELDS: list[tuple[str, st.SearchStrategy[Any], str | None]] = [
    ("user", NOT_STRING | broken_name("replimesh") | st.just("root"), "user"),
    ("folders", NOT_STRING.filter(lambda v: not isinstance(v, list)) | st.just([]), "folders"),
    ("folders[0]", NOT_STRING.filter(lambda v: not isinstance(v, dict)), "folders[0]"),
    ("folders[0].name", st.none() | NOT_STRING | broken_name("shared"), "folders[0].name"),
    ("folders[0].path", st.none() | NOT_STRING | unsafe_path(), "folders[0].path"),
    ("folders[0].ignore", st.lists(UNSAFE_IGNORE, min_size=1, max_size=3), "folders[0].ignore[0]"),
    ("folders[0].ignore", NOT_STRING.filter(lambda v: not isinstance(v, list | None)), "folders[0].ignore"),
    ("nodes", NOT_STRING.filter(lambda v: not isinstance(v, dict)), "nodes"),
    ("nodes.node1", NOT_STRING.filter(lambda v: not isinstance(v, dict)), "nodes.node1"),
    ("nodes.node1.address", st.none() | NOT_STRING | ADDRESSES | HUGE, "nodes.node1.address"),
    ("nodes.node1.port", NOT_INT | st.integers(-(2**40), 0) | st.integers(65536, 2**40), "nodes.node1.port"),
    ("nodes.node1.groups", st.lists(BAD_GROUP, min_size=1, max_size=2), "nodes.node1.groups[0]"),
    ("topology.kind", NOT_STRING | st.text(max_size=10).filter(lambda t: t not in ("full", "overlay")), None),
    ("sync.concurrency", NOT_INT | st.integers(65, 2**40) | st.integers(-(2**40), 0), "sync.concurrency"),
    ("sync.timeout", NOT_INT | st.integers(86401, 2**40), "sync.timeout"),
    ("sync.schedule", NOT_STRING | st.sampled_from(["* * * *", "61 * * * *", "* * * * * *", "@daily", ""]),
     "sync.schedule"),
]  # fmt: skip


@st.composite
def bad_field(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid mesh file with one field made bad, and the key its error must name."""
    field, values, key = draw(st.sampled_from(FIELDS))
    data = mesh_data(topology={"kind": "full"}, sync={"mode": "cron"})
    value = draw(values)
    if field == "topology.kind" and value is None:
        value = 0  # null means "the default" for an optional key
    data = with_value(field, value, data)
    return data, key or field


@st.composite
def bad_name_in_a_mapping(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A node, variable or top-level key whose own name is bad."""
    data = mesh_data()
    where = draw(st.sampled_from(["node", "var", "top"]))
    if where == "node":
        name = draw(broken_name() | st.sampled_from(["all", "mesh", "ungrouped"]))
        data["nodes"][name] = {"address": "172.31.77.20"}
        return data, f"nodes.{name}"
    if where == "var":
        name = draw(
            broken_name("var", identifier=True) | st.sampled_from(["class", "mesh_peers", "mesh_user", "1x"])
        )
        data["vars"] = {name: 1}
        return data, f"vars.{name}"
    name = draw(st.from_regex(r"x_[a-z]{1,8}", fullmatch=True))
    data[name] = draw(NOT_STRING)
    return data, name


def _run_fuzz(tmp_path: Path, strategy: st.SearchStrategy[Any], check: Callable[[Path, Any], None]) -> int:
    tried: list[int] = []

    @FUZZ
    @given(case=strategy)
    def run(case: Any) -> None:
        tried.append(1)
        path = write(tmp_path, case if isinstance(case, str) else case[0])
        check(path, case)

    run()
    return len(tried)


def _expect_error(path: Path) -> str:
    with pytest.raises(AnsibleParserError) as info:
        parse_direct(path)
    message = str(info.value.message)
    assert message.startswith(str(path)), message[:300]
    assert "Traceback" not in message
    return message


def test_fuzz_every_bad_field_is_named(tmp_path: Path) -> None:
    def check(path: Path, case: tuple[dict[str, Any], str]) -> None:
        message = _expect_error(path)
        assert f"{path}: {case[1]}" in message, (case[1], message[:300])

    started = time.monotonic()
    tried = _run_fuzz(tmp_path, bad_field() | bad_name_in_a_mapping(), check)
    seconds = time.monotonic() - started
    print(f"bad fields fuzzed: {tried} mesh files in {seconds:.1f} s")
    record(
        "bad input", "mesh file with one bad field (fuzzed)", inputs_tried=tried, seconds=round(seconds, 1)
    )


# Text-level corruption of a valid file: what an editor, a merge or a truncated copy leaves behind.
GOOD = yaml.safe_dump(mesh_data(sync={"mode": "cron", "schedule": "*/15 * * * *"}), sort_keys=False)
GARBAGE = st.sampled_from(
    [":", ": ", "- ", "{", "}", "[", "]", "\t", "  ", "\n", "&a ", "*a", "!!binary ",
     "!!python/object/apply:os.system ['x'] ", "%YAML 1.1\n", "---\n", "...\n", "? ", "'", '"', "|", ">",
     "#", "\x00", "\ufeff", "\x1b", "@", "`", "<<: *a\n"]
) | st.text(max_size=6)  # fmt: skip


@st.composite
def corrupted_text(draw: st.DrawFn) -> str:
    text = GOOD
    for _ in range(draw(st.integers(1, 3))):
        lines = text.splitlines(keepends=True)
        action = draw(st.sampled_from(["insert", "delete", "duplicate", "truncate", "indent"]))
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        if action == "insert":
            text = text[:at] + draw(GARBAGE) + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif action == "truncate":
            text = text[:at]
        elif lines:
            index = draw(st.integers(0, len(lines) - 1))
            extra = lines[index] if action == "duplicate" else " " + lines[index]
            lines.insert(index + 1, extra) if action == "duplicate" else lines.__setitem__(index, extra)
            text = "".join(lines)
    return text


def test_fuzz_corrupted_yaml_never_escapes_as_another_error(tmp_path: Path) -> None:
    outcomes = {"parsed": 0, "refused": 0}

    def check(path: Path, case: str) -> None:
        try:
            inventory = parse_direct(path)
        except AnsibleParserError as err:
            message = str(err.message)
            assert message.startswith(str(path)) and len(message) > len(f"{path}: "), message[:300]
            outcomes["refused"] += 1
        else:
            assert "mesh" in inventory.groups  # the corruption kept a valid file (e.g. a comment)
            outcomes["parsed"] += 1

    started = time.monotonic()
    tried = _run_fuzz(tmp_path, corrupted_text(), check)
    seconds = time.monotonic() - started
    print(f"corrupted YAML fuzzed: {tried} files ({outcomes}) in {seconds:.1f} s")
    record("bad input", "corrupted mesh file YAML (fuzzed)", inputs_tried=tried, seconds=round(seconds, 1))


HOSTILE_FILES = {
    "duplicate node": GOOD.replace("  node2:", "  node1:"),
    "duplicate top key": GOOD + "folders: []\n",
    "python tag": GOOD + "vars:\n  x: !!python/object/apply:os.system ['touch {marker}']\n",
    "deep nesting": GOOD + "vars:\n  x: " + "[" * 3000 + "]" * 3000 + "\n",
    "huge integer": GOOD.replace("port: 2222", "port: " + "9" * 5000),
    "tab indent": GOOD.replace("  node1:", "\tnode1:"),
    "binary": "\x00\x01\x02plugin: replimesh_mesh\n",
    "not a mapping": "- plugin: replimesh_mesh\n",
    "empty": "",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_hostile_yaml_is_refused_without_side_effects(tmp_path: Path, case: str) -> None:
    marker = tmp_path / "executed"
    path = write(
        tmp_path, HOSTILE_FILES[case].format(marker=marker) if case == "python tag" else HOSTILE_FILES[case]
    )
    message = _expect_error(path)
    assert not marker.exists(), "a YAML tag ran a command"
    assert len(message) < 2000, message[:300]


# The folder paths and ignore patterns issue 7 names, each refused by the plugin (before any play starts:
# tests/integration/test_bad_mesh_file.py runs a few through bootstrap.yml).
UNSAFE_PATHS = ["/", "/etc", "/etc/app", "/proc", "/proc/1", "/var/lib/replimesh", "/var/lib/replimesh/jail",
                "srv/x", "./x", "../x", "/srv/../etc", "/srv/x/..", "/srv/a\nb", "/srv/a\x00b", "/srv/a b",
                "/srv/a,b", "/root/x", "/usr", "/var", "/srv", "/tmp", "/" + "x" * 256]  # fmt: skip
UNSAFE_IGNORES = ["..", "../x", "a/../b", "/etc", "/x/*.tmp", "", "a\nb"]


def test_unsafe_folder_paths_and_ignore_patterns_are_refused(tmp_path: Path) -> None:
    cases = [("folders[0].path", p, "folders[0].path") for p in UNSAFE_PATHS]
    cases += [("folders[0].ignore", [p], "folders[0].ignore[0]") for p in UNSAFE_IGNORES]
    for field, value, key in cases:
        path = write(tmp_path, with_value(field, value, mesh_data()))
        assert f"{path}: {key}: " in _expect_error(path), (field, value)
    record("bad input", "unsafe folder paths and ignore patterns refused", inputs_tried=len(cases))
