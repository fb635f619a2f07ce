"""The mesh_member module through AnsibleModule: real files under tmp_path, check mode and diff mode.

Ansible ships ``mesh_plugins/module_utils/mesh_member.py`` as ``ansible.module_utils.mesh_member``; here the
core is registered under that name before the module is imported. The files are chowned to root and to the
mesh user, so these tests run as root (as ``make test`` does); ``daemon`` stands in for the mesh user.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.module_utils import basic

from tests.unit.module_harness import load_module, patch_module_args

core, mesh_member = load_module("mesh_member")


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chowns files to root and the mesh user")
USER = "daemon"
GID = 1


class Exited(Exception):
    pass


class Failed(Exception):
    pass


def key(kind: str = "ssh-ed25519", seed: int = 1) -> str:
    blob = len(kind).to_bytes(4, "big") + kind.encode() + bytes([seed]) * 32
    return f"{kind} {base64.b64encode(blob).decode()}"


def peer(name: str, **kw: Any) -> dict[str, Any]:
    n = int(name[-1])
    return {"name": name, "address": f"10.0.0.1{n}", "initiator": n % 2 == 0, "public_key": key(seed=n),
            "host_key": key("ssh-rsa", n), **kw}  # fmt: skip


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Any]:
    for sub in (
        "etc/replimesh",
        "etc/ssh/authorized_keys",
        "lib/unison",
        "lib/state/status",
        "lib/state/locks",
    ):
        (tmp_path / sub).mkdir(parents=True)
    return {
        "node": "node1",
        "user": USER,
        "folders": [{"name": "shared", "path": "/srv/replimesh/shared", "ignore": ["*.tmp"]}],
        "peers": [peer("node2"), peer("node3")],
        "config_file": str(tmp_path / "etc/replimesh/mesh.json"),
        "authorized_keys": str(tmp_path / "etc/ssh/authorized_keys/replimesh"),
        "known_hosts": str(tmp_path / "etc/replimesh/known_hosts"),
        "unison_dir": str(tmp_path / "lib/unison"),
        "state_dir": str(tmp_path / "lib/state"),
    }


def run(args: dict[str, Any], check: bool = False, diff: bool = False) -> dict[str, Any]:
    def exit_json(self: basic.AnsibleModule, **result: Any) -> None:
        raise Exited(result)

    def fail_json(self: basic.AnsibleModule, msg: str, **result: Any) -> None:
        raise Failed({"msg": msg, **result})

    full = {**args, "_ansible_check_mode": check, "_ansible_diff": diff}
    with (
        patch_module_args(full),
        mock.patch.object(basic.AnsibleModule, "exit_json", exit_json),
        mock.patch.object(basic.AnsibleModule, "fail_json", fail_json),
        pytest.raises(Exited) as exited,
    ):
        mesh_member.main()
    return exited.value.args[0]


def fail(args: dict[str, Any], check: bool = False) -> str:
    with pytest.raises(Failed) as failed:
        run(args, check=check)
    return failed.value.args[0]["msg"]


def snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes | None]]:
    """Every path under root with mode, uid, gid and (for files) bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
        found[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, content)
    return found


def spec_of(args: dict[str, Any]) -> core.MemberSpec:
    return core.spec_from_params(args)


def test_a_fresh_node_gets_its_files_then_a_second_run_changes_nothing(
    node: dict[str, Any], tmp_path: Path
) -> None:
    result = run(node)
    unison = Path(node["unison_dir"])
    assert result["changed"] and result["peers_added"] == ["node2", "node3"]
    assert result["created"] == [str(unison / "node2"), str(unison / "node3")]
    assert sorted(result["written"]) == sorted(
        [node["config_file"], node["authorized_keys"], node["known_hosts"]]
        + [str(unison / f"{p}/{p}--shared.prf") for p in ("node2", "node3")]
    )
    spec = spec_of(node)
    assert Path(node["config_file"]).read_text() == core.render_config(spec)
    assert Path(node["authorized_keys"]).read_text() == core.render_authorized_keys(spec)
    assert Path(node["known_hosts"]).read_text() == core.render_known_hosts(spec)
    profile = unison / "node2/node2--shared.prf"
    assert profile.read_text() == core.render_profile(spec, spec.peers[0], spec.folders[0])
    for path in (node["config_file"], node["authorized_keys"], node["known_hosts"], profile):
        st = os.lstat(path)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o644, 0, 0), path
    st = os.lstat(unison / "node2")
    assert stat.S_ISDIR(st.st_mode) and (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o1770, 0, GID)
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temp file left behind

    before = snapshot(tmp_path)
    again = run(node)
    assert not again["changed"] and again["written"] == again["created"] == again["removed"] == []
    assert again["peers_kept"] == ["node2", "node3"] and again["peers_added"] == []
    assert snapshot(tmp_path) == before


def test_check_mode_reports_the_plan_and_changes_nothing(node: dict[str, Any], tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    result = run(node, check=True, diff=True)
    assert result["changed"] and result["peers_added"] == ["node2", "node3"]
    assert snapshot(tmp_path) == before
    diffs = {d["after_header"]: d for d in result["diff"]}
    assert diffs[node["known_hosts"]]["before"] == ""
    assert diffs[node["known_hosts"]]["after"] == core.render_known_hosts(spec_of(node))


def test_diff_mode_shows_the_previous_content(node: dict[str, Any]) -> None:
    run(node)
    node["peers"] = [peer("node2", address="10.0.9.2")]
    result = run(node, diff=True)
    diffs = {d["before_header"]: d for d in result["diff"]}
    assert set(diffs) == {node["config_file"], node["authorized_keys"], node["known_hosts"],
                          f"{node['unison_dir']}/node2/node2--shared.prf"}  # fmt: skip
    assert 'from="10.0.0.12"' in diffs[node["authorized_keys"]]["before"]
    assert 'from="10.0.9.2"' in diffs[node["authorized_keys"]]["after"]
    assert "diff" not in run(node)


def test_a_removed_peer_loses_its_archives_status_and_lock(node: dict[str, Any]) -> None:
    run(node)
    unison, state = Path(node["unison_dir"]), Path(node["state_dir"])
    for name in ("node2", "node3"):
        (unison / name / ("ar" + "0" * 32)).write_text("archive")
        (state / "status" / f"{name}.json").write_text("{}")
        (state / "locks" / f"{name}.lock").write_text("")
    (state / "status" / "notes.txt").write_text("keep")
    node["peers"] = [peer("node2")]
    result = run(node)
    assert result["changed"] and result["peers_removed"] == ["node3"] and result["peers_kept"] == ["node2"]
    assert not (unison / "node3").exists()
    assert not (state / "status/node3.json").exists() and not (state / "locks/node3.lock").exists()
    assert (unison / "node2" / ("ar" + "0" * 32)).exists() and (state / "status/node2.json").exists()
    assert (state / "status/notes.txt").exists() and (state / "locks/node2.lock").exists()
    assert "node3" not in Path(node["authorized_keys"]).read_text()
    assert [p["name"] for p in json.loads(Path(node["config_file"]).read_text())["peers"]] == ["node2"]
    assert not run(node)["changed"]


def test_an_inactive_peer_is_trusted_and_written(node: dict[str, Any]) -> None:
    node["peers"] = [peer("node2"), peer("node4", active=False)]
    run(node)
    peers = json.loads(Path(node["config_file"]).read_text())["peers"]
    assert [(p["name"], p["active"]) for p in peers] == [("node2", True), ("node4", False)]
    assert "replimesh" not in Path(node["authorized_keys"]).read_text().splitlines()[2]
    assert Path(node["authorized_keys"]).read_text().splitlines()[2].endswith(f"{USER}@node4")
    assert (Path(node["unison_dir"]) / "node4/node4--shared.prf").exists()


def test_the_flat_layout_is_migrated(node: dict[str, Any]) -> None:
    unison = Path(node["unison_dir"])
    legacy = ["ar" + "a" * 32, "fp" + "b" * 32, "node2--shared.prf", "default.prf"]
    for name in [*legacy, "notes.txt", "lost+found/x"]:
        (unison / name).parent.mkdir(exist_ok=True)
        (unison / name).write_text("old")
    result = run(node)
    assert sorted(result["migrated"]) == sorted(str(unison / name) for name in legacy)
    assert "migrated" in result["msg"]
    assert not any((unison / name).exists() for name in legacy)
    assert (unison / "notes.txt").exists() and (unison / "lost+found/x").exists()
    assert "msg" not in run(node)


def test_a_dropped_folder_loses_its_profiles_only(node: dict[str, Any]) -> None:
    node["folders"].append({"name": "photos", "path": "/srv/photos"})
    run(node)
    archive = Path(node["unison_dir"]) / "node2" / ("ar" + "1" * 32)
    archive.write_text("archive")
    node["folders"].pop()
    result = run(node)
    assert sorted(result["removed"]) == [
        f"{node['unison_dir']}/{p}/{p}--photos.prf" for p in ("node2", "node3")
    ]
    assert archive.exists() and (archive.parent / "node2--shared.prf").exists()


def test_wrong_mode_and_owner_are_fixed_in_place(node: dict[str, Any]) -> None:
    run(node)
    profile = Path(node["unison_dir"]) / "node3/node3--shared.prf"
    os.chmod(profile, 0o666)
    os.chown(profile, 1, 1)
    os.chmod(Path(node["unison_dir"]) / "node2", 0o777)
    inode = profile.stat().st_ino
    result = run(node)
    assert sorted(result["fixed"]) == [f"{node['unison_dir']}/node2", str(profile)] and not result["written"]
    st = profile.stat()
    assert (st.st_ino, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (inode, 0o644, 0, 0)
    assert stat.S_IMODE((Path(node["unison_dir"]) / "node2").stat().st_mode) == 0o1770


def test_symlinks_planted_by_the_mesh_user_are_replaced_not_followed(
    node: dict[str, Any], tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("untouched")
    unison = Path(node["unison_dir"])
    (unison / "node2").symlink_to(outside)
    run(node)
    assert (unison / "node2").is_dir() and not (unison / "node2").is_symlink()
    assert sorted(p.name for p in outside.iterdir()) == ["victim"] and victim.read_text() == "untouched"
    profile = unison / "node3/node3--shared.prf"
    profile.unlink()
    profile.symlink_to(victim)
    assert run(node)["written"] == [str(profile)]
    assert not profile.is_symlink() and victim.read_text() == "untouched"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"node": "node2"}, "a node cannot be its own peer"),
        ({"peers": [peer("node2", public_key="ssh-dss AAAA")]}, "public_key must be an OpenSSH public key"),
        ({"peers": [peer("node2", address="10.0.0.2 10.0.0.3")]}, "address"),
        ({"peers": [peer("node2"), peer("node2")]}, "repeated: node2"),
        ({"folders": [{"name": "x", "path": "relative"}]}, "absolute path"),
        ({"user": "Bad User"}, "not a valid user name"),
        ({"unison_dir": "/var"}, "system directory"),
    ],
)
def test_bad_input_fails_before_any_change(
    node: dict[str, Any], tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    before = snapshot(tmp_path)
    assert message in fail({**node, **change})
    assert snapshot(tmp_path) == before


def test_a_missing_mesh_user_fails_but_check_mode_only_warns(node: dict[str, Any], tmp_path: Path) -> None:
    node["user"] = "no-such-mesh-user"
    assert "'no-such-mesh-user'" in fail(node) and "must exist" in fail(node)
    assert not any(Path(node["unison_dir"]).iterdir())
    with mock.patch.object(basic.AnsibleModule, "warn") as warn:
        result = run(node, check=True)
    assert result["changed"] and "must exist" in warn.call_args.args[0]


def test_missing_directories_fail_with_the_role_to_run(node: dict[str, Any], tmp_path: Path) -> None:
    node["known_hosts"] = str(tmp_path / "nowhere/known_hosts")
    msg = fail(node)
    assert str(tmp_path / "nowhere") in msg and "roles create them" in msg
    assert not Path(node["config_file"]).exists()


def test_no_peers_leaves_headers_only(node: dict[str, Any]) -> None:
    run(node)
    node["peers"] = []
    result = run(node)
    assert result["peers_removed"] == ["node2", "node3"] and not any(Path(node["unison_dir"]).iterdir())
    assert Path(node["authorized_keys"]).read_text() == core.HEADER + "\n"
