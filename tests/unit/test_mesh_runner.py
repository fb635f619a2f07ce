"""The node's sync runner end to end, without ssh.

`unison` in the config points at a fake written by these tests (a test double for the binary only): it
prints a real captured Unison output (or a text a test gives), exits with that capture's code, and follows
a per-profile spec (`{fakes}/{profile}.fake.json`: fixture, sleep, spawn a child, ignore SIGTERM; with
`runs`, one such spec per call of the profile, in order, the last one repeated). Every call is recorded in
`{fakes}/calls.jsonl` with its argv, environment and times. Some tests run the real Unison.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh_plugins.module_utils import mesh_runner
from mesh_plugins.module_utils.mesh_runner import main

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "unison"
MODULE_UTILS = Path(mesh_runner.__file__).parent
MARKER = ".replimesh-folder"
Capsys = pytest.CaptureFixture[str]

FAKE_UNISON = """#!{python}
import json, os, pathlib, signal, subprocess, sys, time
fakes = pathlib.Path({fakes!r})
profile = sys.argv[1]
spec_file = fakes / (profile + ".fake.json")
spec = json.loads(spec_file.read_text()) if spec_file.exists() else {{}}
if "runs" in spec:
    calls_file = fakes / "calls.jsonl"
    done = calls_file.read_text().splitlines() if calls_file.exists() else []
    before = sum(1 for line in done if json.loads(line)["argv"][0] == profile)
    spec = spec["runs"][min(before, len(spec["runs"]) - 1)]
if spec.get("ignore_term"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
keys = ("PATH", "LANG", "HOME", "UNISON", "UNISONLOCALHOSTNAME")
call = {{"argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in keys}}, "nenv": len(os.environ),
        "start": time.time(), "pid": os.getpid(), "pgid": os.getpgid(0)}}
if spec.get("child"):
    child = subprocess.Popen(["sleep", "60"])
    call["child"] = child.pid
with open(fakes / "calls.jsonl", "a") as log:
    log.write(json.dumps(call) + "\\n")
if "text" in spec:
    text, code = spec["text"], spec["code"]
else:
    fixture = next(pathlib.Path({fixtures!r}).glob(spec.get("fixture", "nothing") + ".exit*.txt"))
    text, code = fixture.read_text(), int(fixture.name.split(".exit")[1].split(".")[0])
sys.stdout.write(text)
sys.stdout.flush()
time.sleep(spec.get("sleep", 0))
sys.exit(code)
"""


class Mesh:
    """A node's config, folders, state and fake Unison under tmp_path."""

    def __init__(self, root: Path, peers: dict[str, bool], folders: tuple[str, ...] = ("shared",)) -> None:
        self.root = root
        self.unison_dir = root / "unison"
        self.state_dir = root / "state"
        self.log_file = root / "log" / "sync.log"
        self.unison_dir.mkdir()
        self.fakes = root / "fakes"
        self.fakes.mkdir()
        fake = root / "fake-unison"
        fake.write_text(
            FAKE_UNISON.format(python=sys.executable, fixtures=str(FIXTURES), fakes=str(self.fakes))
        )
        fake.chmod(0o755)
        self.folders = {}
        for name in folders:
            path = root / "data" / name
            path.mkdir(parents=True)
            (path / MARKER).touch()
            self.folders[name] = path
        self.config: dict[str, Any] = {
            "node": "node1",
            "folders": [{"name": n, "path": str(p), "ignore": ["*.tmp"]} for n, p in self.folders.items()],
            "peers": [
                {"name": name, "address": f"172.31.77.{10 + i}", "port": 22, "initiator": initiator}
                for i, (name, initiator) in enumerate(peers.items())
            ],
            "concurrency": 4,
            "timeout": 30,
            "connect_timeout": 10,
            "marker": MARKER,
            "unison": str(fake),
            "unison_dir": str(self.unison_dir),
            "state_dir": str(self.state_dir),
            "log_file": str(self.log_file),
        }
        self.config_path = root / "mesh.json"
        self.save()

    def save(self, **changes: Any) -> None:
        self.config.update(changes)
        self.config_path.write_text(json.dumps(self.config))

    def fake(self, peer: str, folder: str = "shared", **spec: Any) -> None:
        (self.fakes / f"{peer}--{folder}.fake.json").write_text(json.dumps(spec))

    def calls(self) -> list[dict[str, Any]]:
        path = self.fakes / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def run(self, capsys: Capsys, *args: str) -> tuple[int, dict[str, Any]]:
        code = main(["--config", str(self.config_path), "--json", *args])
        out = capsys.readouterr().out
        return code, json.loads(out) if out.strip() else {}

    def status(self, peer: str) -> dict[str, Any]:
        return json.loads((self.state_dir / "status" / f"{peer}.json").read_text())


def edges_by_peer(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {edge["peer"]: edge for edge in report["edges"]}


def test_runs_exactly_the_profile_with_a_pinned_minimal_environment(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True}, folders=("shared", "media"))
    mesh.fake("node2", "shared", fixture="copies")
    mesh.fake("node2", "media", fixture="first_sync")
    code, report = mesh.run(capsys)
    assert code == 0
    calls = mesh.calls()
    # A pull: the profile, and no local deletion on the first run (the brake); nothing held, no second run.
    assert [call["argv"] for call in calls] == [
        ["node2--shared", "-nodeletion", str(mesh.folders["shared"])],
        ["node2--media", "-nodeletion", str(mesh.folders["media"])],
    ]
    assert calls[0]["env"] == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": calls[0]["env"]["HOME"],  # the running user's home: Unison 2.52 refuses to start without HOME
        "UNISON": str(mesh.unison_dir / "node2"),  # each edge has its own archive directory
        "UNISONLOCALHOSTNAME": "node1",
    }
    assert calls[0]["nenv"] == 5 and calls[0]["env"]["HOME"]
    assert calls[0]["pgid"] == calls[0]["pid"]  # its own process group, so a timeout can kill all of it
    (edge,) = report["edges"]
    assert (edge["result"], edge["files_changed"], edge["conflicts"], edge["first_sync"]) == (
        "conflict",
        7,
        ["media/both.txt"],
        True,
    )
    assert [f["kind"] for f in edge["folders"]] == ["ok", "conflict"]
    assert report["summary"]["conflict"] == 1 and report["summary"]["files_changed"] == 7


def test_edges_run_in_parallel(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True, "node3": True})
    for peer in ("node2", "node3"):
        mesh.fake(peer, sleep=1.0)
    mesh.save(concurrency=2)
    started = time.monotonic()
    code, report = mesh.run(capsys)
    elapsed = time.monotonic() - started
    assert code == 0 and [e["result"] for e in report["edges"]] == ["ok", "ok"]
    assert 1.0 <= elapsed < 1.9  # serial would take over 2 s
    first, second = sorted(call["start"] for call in mesh.calls())
    assert second - first < 0.5  # the second started while the first was still sleeping


def test_concurrency_one_serializes_edges(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True, "node3": True})
    for peer in ("node2", "node3"):
        mesh.fake(peer, sleep=0.6)
    mesh.save(concurrency=1)
    started = time.monotonic()
    code, _ = mesh.run(capsys)
    assert code == 0 and time.monotonic() - started >= 1.2
    first, second = sorted(call["start"] for call in mesh.calls())
    assert second - first >= 0.6


def test_folders_of_one_edge_run_one_after_another(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True}, folders=("shared", "media"))
    mesh.fake("node2", "shared", sleep=0.5)
    mesh.fake("node2", "media", sleep=0.5)
    assert mesh.run(capsys)[0] == 0
    first, second = sorted(call["start"] for call in mesh.calls())
    assert second - first >= 0.5


def test_locked_edge_is_busy_and_not_run(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True, "node3": True})
    (mesh.state_dir / "locks").mkdir(parents=True)
    with open(mesh.state_dir / "locks" / "node2.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another live run of this edge
        code, report = mesh.run(capsys)
    assert code == 0  # busy is not a failure
    edges = edges_by_peer(report)
    assert edges["node2"]["result"] == "busy" and edges["node2"]["folders"] == []
    assert edges["node3"]["result"] == "ok"
    assert [call["argv"] for call in mesh.calls()] == [
        ["node3--shared", "-nodeletion", str(mesh.folders["shared"])]
    ]
    assert not (mesh.state_dir / "status" / "node2.json").exists()  # the holder records its own result
    assert report["summary"]["busy"] == 1
    # Released: the next run takes the edge.
    assert edges_by_peer(mesh.run(capsys)[1])["node2"]["result"] == "ok"


def test_missing_marker_refuses_to_run_unison(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True}, folders=("shared", "media"))
    (mesh.folders["shared"] / MARKER).unlink()
    code, report = mesh.run(capsys)
    assert code == 1
    (edge,) = report["edges"]
    assert edge["result"] == "marker"
    path = mesh.folders["shared"]
    assert edge["error"] == f"folder {path} has no {MARKER}: not mounted or emptied? refusing to sync"
    # Only the folder that has one.
    assert [call["argv"] for call in mesh.calls()] == [
        ["node2--media", "-nodeletion", str(mesh.folders["media"])]
    ]
    assert mesh.status("node2")["result"] == "marker"


def test_missing_folder_is_a_marker_failure(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    shutil.rmtree(mesh.folders["shared"])
    code, report = mesh.run(capsys)
    assert (code, report["edges"][0]["result"], mesh.calls()) == (1, "marker", [])


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie has already died


def test_timeout_kills_the_whole_process_group(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mesh_runner, "KILL_GRACE_S", 0.5)
    mesh = Mesh(tmp_path, {"node2": True, "node3": True})
    # node2's fake ignores SIGTERM (so SIGKILL must follow) and has a child that would outlive it.
    mesh.fake("node2", sleep=60, child=True, ignore_term=True)
    mesh.save(timeout=1)
    started = time.monotonic()
    code, report = mesh.run(capsys)
    elapsed = time.monotonic() - started
    assert code == 1 and elapsed < 5
    edges = edges_by_peer(report)
    assert edges["node2"]["result"] == "timeout"
    assert edges["node2"]["error"] == "timed out after 1 s: unison and its ssh were killed"
    assert edges["node3"]["result"] == "ok"  # a frozen peer blocks nobody else
    call = next(c for c in mesh.calls() if c["argv"][0] == "node2--shared")
    deadline = time.monotonic() + 5
    while not (process_gone(call["pid"]) and process_gone(call["child"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_gone(call["pid"]) and process_gone(call["child"])


def test_status_file_keeps_last_success_across_failures(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    mesh.fake("node2", fixture="copies")
    assert mesh.run(capsys)[0] == 0
    first = mesh.status("node2")
    assert first["result"] == "ok" and first["files_changed"] == 3 and first["last_success"]
    assert first["last_success"] == first["last_finish"]
    time.sleep(1.1)  # the records have one-second resolution
    mesh.fake("node2", fixture="ssh_refused")
    code, report = mesh.run(capsys)
    second = mesh.status("node2")
    assert code == 1 and report["summary"]["unreachable"] == 1
    assert second["result"] == "unreachable" and second["last_success"] == first["last_success"]
    assert second["last_start"] > first["last_start"]
    assert second["error"].startswith("ssh: connect to host 127.0.0.1 port 1: Connection refused")
    assert {k: v for k, v in report["edges"][0].items() if k != "folders"} == second
    assert sorted(p.name for p in (mesh.state_dir / "status").iterdir()) == ["node2.json"]  # no temp left
    assert oct((mesh.state_dir / "status").stat().st_mode & 0o777) == "0o750"


def test_log_has_a_line_per_run_and_the_tail_of_failures(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True, "node3": True})
    mesh.fake("node2", fixture="copies")
    mesh.fake("node3", fixture="ssh_hostkey_changed")
    assert mesh.run(capsys)[0] == 1
    log = mesh.log_file.read_text()
    records = [line for line in log.splitlines() if not line.startswith("    | ")]
    assert sorted(r.split(" ", 1)[1].split(" error=")[0] for r in records) == [
        "peer=node2 folder=shared kind=ok transferred=3",
        "peer=node3 folder=shared kind=hostkey transferred=0",
    ]
    assert "    | Host key verification failed." in log
    assert "Copying" not in log  # no tail for a run that went fine


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["node2", "node3", "node4"]),  # a node pulls from every peer, whoever initiates
        (("--peer", "node3"), ["node3"]),
        (("--peer", "node4", "--peer", "node2"), ["node2", "node4"]),
        (("--all-peers",), ["node2", "node3", "node4"]),
    ],
)
def test_peer_selection(tmp_path: Path, capsys: Capsys, args: tuple[str, ...], expected: list[str]) -> None:
    mesh = Mesh(tmp_path, {"node2": True, "node3": False, "node4": True})
    code, report = mesh.run(capsys, *args)
    assert code == 0 and [edge["peer"] for edge in report["edges"]] == expected
    assert sorted(call["argv"][0] for call in mesh.calls()) == [f"{p}--shared" for p in expected]


def test_dry_run_runs_and_touches_nothing(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True, "node3": False})
    code, report = mesh.run(capsys, "--dry-run", "--all-peers", "--delay", "30")  # no waiting either
    assert code == 0 and report["dry_run"] is True
    assert [edge["peer"] for edge in report["edges"]] == ["node2", "node3"]
    assert report["edges"][0]["folders"][0] == {
        "folder": "shared",
        "path": str(mesh.folders["shared"]),
        # The name Unison is given in the edge's directory: the root-owned link to the node's profile.
        "profile": f"{mesh.unison_dir}/node2/node2--shared",
        "command": [mesh.config["unison"], "node2--shared"],
    }
    assert mesh.calls() == [] and not mesh.state_dir.exists() and not mesh.log_file.parent.exists()
    assert main(["--config", str(mesh.config_path), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"would pull {p} -> node1 folder shared: {mesh.config['unison']} {p}--shared "
        f"(profile {mesh.unison_dir}/{p}/{p}--shared)"
        for p in ("node2", "node3")
    ] + ["node1: 2 edges, dry run: nothing was run"]


def test_human_output(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    mesh.fake("node2", fixture="conflict")
    assert main(["--config", str(mesh.config_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["PEER", "RESULT", "FILES", "CONFLICTS", "SECONDS", "ERROR"]
    assert out[1].split()[:4] == ["node2", "conflict", "2", "2"]
    assert out[2] == "node1: 1 edges (1 conflict), 2 files changed, 2 conflicts"


@pytest.mark.parametrize(
    ("fixture", "code"),
    [
        ("conflict", 0),
        ("permission_denied", 0),
        ("write_denied", 1),
        ("marker_missing", 1),
        ("ssh_refused", 1),
        ("profile_missing", 1),
    ],
)
def test_exit_code_follows_the_worst_edge(tmp_path: Path, capsys: Capsys, fixture: str, code: int) -> None:
    mesh = Mesh(tmp_path, {"node2": True, "node3": True})
    mesh.fake("node3", fixture=fixture)
    assert mesh.run(capsys)[0] == code


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"node": "Node 1"}, "node: must be"),
        ({"folders": []}, "folders: must be a non-empty list"),
        ({"folders": [{"name": "x", "path": "relative"}]}, "folders[0].path: must be an absolute path"),
        ({"peers": [{"name": "node2", "address": "a", "port": 0}]}, "peers[0].port: must be a port"),
        ({"peers": [{"name": "node2", "address": "a", "initiator": "yes"}]}, "peers[0].initiator"),
        ({"peers": [{"name": "node1", "address": "a"}]}, "peers[0].name: must be another node"),
        (
            {"peers": [{"name": "n2", "address": "a"}, {"name": "n2", "address": "b"}]},
            "peers: must be uniquely",
        ),
        ({"peers": [{"name": "../x", "address": "a"}]}, "peers[0].name: must be"),
        ({"concurrency": 0}, "concurrency: must be a positive number"),
        ({"timeout": True}, "timeout: must be a positive number"),
        ({"marker": "a/b"}, "marker: must be a plain file name"),
        ({"unison": "unison"}, "unison: must be an absolute path"),
    ],
)
def test_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: Capsys, change: dict[str, Any], message: str
) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    mesh.save(**change)
    assert main(["--config", str(mesh.config_path)]) == 2
    err = capsys.readouterr().err
    assert f"bad config {mesh.config_path}: {message}" in err
    assert mesh.calls() == []


def test_unreadable_or_invalid_config_and_bad_usage_exit_2(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    assert main(["--config", str(tmp_path / "missing.json")]) == 2
    mesh.config_path.write_text("{not json")
    assert main(["--config", str(mesh.config_path)]) == 2
    mesh.save()
    assert main(["--config", str(mesh.config_path), "--peer", "node9"]) == 2
    assert "unknown peer node9: this node's peers are node2" in capsys.readouterr().err
    assert main(["--config", str(mesh.config_path), "--peer", "node2", "--all-peers"]) == 2
    assert main(["--config", str(mesh.config_path), "--delay", "-1"]) == 2
    assert main(["--no-such-flag"]) == 2
    assert mesh.calls() == []


def role_files() -> list[str]:
    """The module_utils files the mesh_sync role installs on a node (its runner.yml's loop)."""
    tasks = yaml.safe_load((ROOT / "roles/mesh_sync/tasks/runner.yml").read_text())
    return next(task["loop"] for task in tasks if "module_utils" in str(task.get("ansible.builtin.copy")))


@pytest.mark.parametrize(("entry", "option"), [("mesh_runner", "--all-peers"), ("mesh_watch", "--supervise")])
def test_installs_as_replimesh_node_and_needs_only_the_standard_library(
    tmp_path: Path, entry: str, option: str
) -> None:
    """The role copies the files into replimesh_node/; Debian's python3 runs them without the venv."""
    package = tmp_path / "lib" / "replimesh_node"
    package.mkdir(parents=True)
    for name in role_files():
        shutil.copy(MODULE_UTILS / name, package / name)
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    script = (
        f"import sys; sys.path.insert(0, {str(package.parent)!r}); "
        f"from replimesh_node.{entry} import main; sys.exit(main(['--help']))"
    )
    proc = subprocess.run([python, "-I", "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert option in proc.stdout


def local_profile(mesh: Mesh, remote: Path, peer: str = "node2") -> None:
    """What the role's profile holds for the edge's folder "shared", with a local second root instead of
    ssh://, for the real Unison."""
    (mesh.unison_dir / peer).mkdir()
    (mesh.unison_dir / peer / f"{peer}--shared.prf").write_text(
        f"root = {mesh.folders['shared']}\nroot = {remote}\nbatch = true\nauto = true\nprefer = newer\n"
        f"copyonconflict = true\ntimes = true\nlog = false\nconfirmbigdel = true\nmountpoint = {MARKER}\n"
        f"ignore = Name {MARKER}\nignore = Name *.tmp\n"
    )


@pytest.mark.skipif(not Path("/usr/bin/unison").exists(), reason="unison is not installed")
def test_real_unison_between_two_local_dirs(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    remote = tmp_path / "peer" / "shared"
    remote.mkdir(parents=True)
    (remote / MARKER).touch()
    (mesh.folders["shared"] / "report.bin").write_bytes(os.urandom(4096) + b"\x00end")
    local_profile(mesh, remote)
    (mesh.folders["shared"] / "scratch.tmp").write_text("ignored")
    mesh.save(unison="/usr/bin/unison")
    code, report = mesh.run(capsys)
    (edge,) = report["edges"]
    assert code == 0, edge
    assert (edge["result"], edge["files_changed"], edge["first_sync"]) == ("ok", 1, True)
    assert (remote / "report.bin").read_bytes() == (mesh.folders["shared"] / "report.bin").read_bytes()
    assert not (remote / "scratch.tmp").exists()
    # The archive is named after UNISONLOCALHOSTNAME=node1: a second run finds it, nothing to do.
    code, report = mesh.run(capsys)
    assert (code, report["edges"][0]["result"], report["edges"][0]["first_sync"]) == (0, "ok", False)
    assert report["edges"][0]["files_changed"] == 0


def test_seed_takes_the_peers_versions_and_deletes_nothing_here(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": False, "node3": True})
    path = mesh.folders["shared"]
    code, _ = mesh.run(capsys, "--seed", "--peer", "node2")
    assert code == 0
    assert [call["argv"] for call in mesh.calls()] == [
        ["node2--shared", "-force", f"ssh://replimesh@172.31.77.10:22/{path}", "-nodeletion", str(path)]
    ]


@pytest.mark.parametrize(
    "args", [["--seed"], ["--seed", "--all-peers"], ["--seed", "--peer", "node2", "--peer", "node3"]]
)
def test_seed_needs_exactly_one_peer(tmp_path: Path, capsys: Capsys, args: list[str]) -> None:
    mesh = Mesh(tmp_path, {"node2": False, "node3": True})
    code, _ = mesh.run(capsys, *args)
    assert code == 2 and mesh.calls() == []


def test_inactive_peers_sync_only_when_named(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True, "node3": True})
    mesh.config["peers"][0]["active"] = False
    mesh.save()
    _, report = mesh.run(capsys, "--all-peers")
    assert [e["peer"] for e in report["edges"]] == ["node3"]
    _, report = mesh.run(capsys, "--peer", "node2")
    assert [e["peer"] for e in report["edges"]] == ["node2"]
