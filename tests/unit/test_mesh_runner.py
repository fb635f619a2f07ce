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

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_edgerecord import timestamp
from replimesh_node import mesh_runner
from replimesh_node.mesh_runner import main

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "unison"
MODULE_UTILS = ROOT / "mesh_plugins" / "module_utils"
NODE_PROGRAM = ROOT / "roles" / "mesh_sync" / "files" / "replimesh_node"  # the node-side program
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
    # The folders ran at once: their calls are logged in either order.
    calls = sorted(mesh.calls(), key=lambda call: call["argv"][0] != "node2--shared")
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


def test_folders_of_one_edge_run_at_once_in_the_config_order(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True}, folders=("shared", "media"))
    mesh.fake("node2", "shared", fixture="copies", sleep=0.8)
    mesh.fake("node2", "media", fixture="first_sync", sleep=0.8)
    started = time.monotonic()
    code, report = mesh.run(capsys)
    assert code == 0 and time.monotonic() - started < 1.5  # one after another would take over 1.6 s
    first, second = sorted(call["start"] for call in mesh.calls())
    assert second - first < 0.5  # the second started while the first was still running
    (edge,) = report["edges"]
    assert [f["folder"] for f in edge["folders"]] == ["shared", "media"]  # the config's order, either way
    assert [f["kind"] for f in edge["folders"]] == ["ok", "conflict"]
    assert mesh.status("node2")["result"] == "conflict"


def test_unison_runs_at_once_stay_within_concurrency(tmp_path: Path, capsys: Capsys) -> None:
    """Edges and folders together: 2 edges x 3 folders with concurrency 2 never run 3 Unisons at once."""
    folders = ("shared", "media", "docs")
    mesh = Mesh(tmp_path, {"node2": True, "node3": True}, folders=folders)
    for peer in ("node2", "node3"):
        for folder in folders:
            mesh.fake(peer, folder, sleep=0.3)
    mesh.save(concurrency=2)
    code, report = mesh.run(capsys)
    assert code == 0 and {e["result"] for e in report["edges"]} == {"ok"}
    calls = mesh.calls()
    assert len(calls) == 6
    starts = sorted(call["start"] for call in calls)
    # Each run sleeps 0.3 s: with at most 2 at once, the runs start in 3 waves, each 0.3 s after the last.
    assert all(later - earlier >= 0.25 for earlier, later in zip(starts, starts[2:], strict=False))


def test_concurrency_one_runs_the_folders_one_after_another(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True}, folders=("shared", "media"))
    mesh.fake("node2", "shared", sleep=0.5)
    mesh.fake("node2", "media", sleep=0.5)
    mesh.save(concurrency=1)
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
        # What the pull runs first: every change but deletions (the brake holds them for a count).
        "command": [mesh.config["unison"], "node2--shared", "-nodeletion", str(mesh.folders["shared"])],
    }
    assert mesh.calls() == [] and not mesh.state_dir.exists() and not mesh.log_file.parent.exists()
    assert main(["--config", str(mesh.config_path), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"would pull {p} -> node1 folder shared: {mesh.config['unison']} {p}--shared "
        f"-nodeletion {mesh.folders['shared']} (profile {mesh.unison_dir}/{p}/{p}--shared)"
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


def test_the_schedulers_round_records_itself_and_a_bad_schedule_runs_nothing(
    tmp_path: Path, capsys: Capsys
) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    mesh.fake("node2")
    mesh.save(metrics_file=str(tmp_path / "metrics" / "replimesh.prom"))
    assert main(["--config", str(mesh.config_path), "--scheduled", "*/15 * *"]) == 2
    assert "--scheduled: '*/15 * *' is not a 5-field cron expression" in capsys.readouterr().err
    assert mesh.calls() == [] and not (mesh.state_dir / "scheduled.json").exists()
    code, _ = mesh.run(capsys)  # an ad-hoc run is not the scheduler's
    assert code == 0 and not (mesh.state_dir / "scheduled.json").exists()
    before = time.time()
    code, report = mesh.run(capsys, "--scheduled", "*/15 * * * *")
    record = json.loads((mesh.state_dir / "scheduled.json").read_text())
    assert code == 0 and report["edges"][0]["result"] == "ok"
    assert record["schedule"] == "*/15 * * * *" and record["period_s"] == 900
    assert before - 1 <= timestamp(record["at"]) <= time.time()
    assert (
        "replimesh_scheduled_round_period_seconds 900"
        in (tmp_path / "metrics" / "replimesh.prom").read_text()
    )


def role_files() -> list[str]:
    """The files the mesh_sync role installs on a node (its runner.yml's mesh_files task): every file of
    its files/replimesh_node/, where what the modules share with the node is a link into module_utils."""
    tasks = yaml.safe_load((ROOT / "roles/mesh_sync/tasks/runner.yml").read_text())
    names = next(
        task["replimesh.mesh.mesh_files"]["files"] for task in tasks if "replimesh.mesh.mesh_files" in task
    )
    assert sorted(p.name for p in NODE_PROGRAM.iterdir() if p.suffix == ".py") == sorted(names)
    for link in (p for p in NODE_PROGRAM.iterdir() if p.is_symlink()):
        assert link.resolve().parent == MODULE_UTILS.resolve(), f"{link} links outside module_utils"
    return names


@pytest.mark.parametrize(("entry", "option"), [("mesh_runner", "--all-peers"), ("mesh_watch", "--supervise")])
def test_installs_as_replimesh_node_and_needs_only_the_standard_library(
    tmp_path: Path, entry: str, option: str
) -> None:
    """The role copies the files into replimesh_node/; Debian's python3 runs them without the venv."""
    package = tmp_path / "lib" / "replimesh_node"
    package.mkdir(parents=True)
    for name in role_files():
        shutil.copy(NODE_PROGRAM / name, package / name)
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


# --- the mass-deletion brake ----------------------------------------------------------------------------


def held(paths: list[str]) -> str:
    """A real first pull's output (fixture pull_deletion_held: f2 held, f4 waiting) holding ``paths``."""
    text = (FIXTURES / "pull_deletion_held.exit1.txt").read_text()
    lines = text.replace("2 skipped", f"{len(paths) + 1} skipped").splitlines()
    skipped = "  skipped: {} (would delete a file with nodeletion or nodeletionpartial set)"
    out = [line for line in lines if line != skipped.format("f2")]
    return "\n".join(out + [skipped.format(path) for path in paths]) + "\n"


def files(folder: Path, *rels: str) -> None:
    for rel in rels:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(rel)


def test_held_deletions_within_the_limit_are_applied_by_a_second_run_of_those_paths(
    tmp_path: Path, capsys: Capsys
) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    path = mesh.folders["shared"]
    files(path, "f1", "f2", "f3", "f4")
    mesh.fake("node2", runs=[{"fixture": "pull_deletion_held"}, {"fixture": "deletion"}])
    code, report = mesh.run(capsys)
    assert code == 0
    assert [call["argv"] for call in mesh.calls()] == [
        ["node2--shared", "-nodeletion", str(path)],
        ["node2--shared", "-path", "f2", "-confirmbigdel=false"],
    ]
    (edge,) = report["edges"]
    (folder,) = edge["folders"]
    # The second run's result, with both runs' transfers (2 + 2).
    assert (edge["result"], edge["files_changed"], edge["error"]) == ("ok", 4, None)
    assert (folder["kind"], folder["transferred"], folder["held"]) == ("ok", 4, 0)


def test_held_deletions_above_the_limit_stop_the_edge_as_brake_and_delete_nothing(
    tmp_path: Path, capsys: Capsys
) -> None:
    mesh = Mesh(tmp_path, {"node2": True, "node3": True})
    path = mesh.folders["shared"]
    files(path, "keep", *(f"docs/f{i}" for i in range(12)))  # 13 files (the marker aside): limit 10
    mesh.fake("node2", text=held(["docs"]), code=1)
    code, report = mesh.run(capsys)
    assert code == 1 and report["summary"]["brake"] == 1
    # One run only: the deletions held by -nodeletion are never applied.
    assert [c["argv"] for c in mesh.calls() if c["argv"][0] == "node2--shared"] == [
        ["node2--shared", "-nodeletion", str(path)]
    ]
    edges = edges_by_peer(report)
    assert edges["node2"]["result"] == "brake" and edges["node3"]["result"] == "ok"
    assert edges["node2"]["error"] == (
        "brake: this pull would delete 12 files of shared (max_deletions 50%: 10); nothing deleted. "
        "Allow it once with `meshctl sync --allow-deletions node1`"
    )
    assert edges["node2"]["folders"][0]["held"] == 1
    assert mesh.status("node2")["result"] == "brake"
    assert "peer=node2 folder=shared kind=brake transferred=2" in mesh.log_file.read_text()


def test_allow_deletions_runs_the_pull_once_without_the_brake(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    files(mesh.folders["shared"], *(f"docs/f{i}" for i in range(12)))
    mesh.fake("node2", fixture="deletion")
    code, report = mesh.run(capsys, "--allow-deletions")
    assert code == 0 and report["edges"][0]["result"] == "ok"
    assert [call["argv"] for call in mesh.calls()] == [["node2--shared"]]


def test_a_seed_is_not_braked_and_never_runs_a_second_time(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    path = mesh.folders["shared"]
    files(path, "f2")
    mesh.fake("node2", fixture="pull_deletion_held")
    code, _ = mesh.run(capsys, "--seed", "--peer", "node2")
    assert code == 0
    assert [call["argv"] for call in mesh.calls()] == [
        ["node2--shared", "-force", f"ssh://replimesh@172.31.77.10:22/{path}", "-nodeletion", str(path)]
    ]


@pytest.mark.parametrize(
    ("max_deletions", "present", "deleting", "braked"),
    [
        ("50%", 4, 3, False),  # 75% of the folder, but a share never stops 10 deletions or fewer
        ("50%", 12, 10, False),
        ("50%", 12, 11, True),  # 11 > max(10, 6)
        ("50%", 40, 20, False),  # 50% of 40
        ("50%", 40, 21, True),
        ("0%", 40, 10, False),
        ("0%", 40, 11, True),
        ("3", 40, 3, False),  # a count has no floor
        ("3", 40, 4, True),
        ("0", 40, 1, True),
    ],
)
def test_the_limit_is_a_count_or_a_share_of_the_folder_with_a_floor_of_10(
    tmp_path: Path, capsys: Capsys, max_deletions: str, present: int, deleting: int, braked: bool
) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    mesh.save(max_deletions=max_deletions)
    path = mesh.folders["shared"]
    names = [f"f{i}" for i in range(present)]
    files(path, *names)
    mesh.fake("node2", runs=[{"text": held(names[:deleting]), "code": 1}, {"fixture": "deletion"}])
    code, report = mesh.run(capsys)
    argvs = [call["argv"] for call in mesh.calls()]
    assert argvs[0] == ["node2--shared", "-nodeletion", str(path)]
    if braked:
        assert (code, report["edges"][0]["result"], len(argvs)) == (1, "brake", 1)
        assert (
            f"would delete {deleting} files of shared (max_deletions {max_deletions}: "
            in report["edges"][0]["error"]
        )
    else:
        paths = [arg for name in names[:deleting] for arg in ("-path", name)]
        assert argvs[1:] == [["node2--shared", *paths, "-confirmbigdel=false"]]
        assert (code, report["edges"][0]["result"]) == (0, "ok")


def test_a_bad_max_deletions_is_bad_config(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    for bad in ("101%", "-1", "lots", 50):
        mesh.save(max_deletions=bad)
        assert main(["--config", str(mesh.config_path)]) == 2
        assert "max_deletions: must be a count such as '100' or a percentage such as '50%'" in (
            capsys.readouterr().err
        )
    assert mesh.calls() == []


def test_deletion_limit() -> None:
    limit = mesh_runner.deletion_limit
    assert [limit("50%", n) for n in (0, 10, 21, 22, 100, 1001)] == [10, 10, 10, 11, 50, 500]
    assert [limit("100%", 7), limit("100%", 30), limit("0%", 10**6), limit("5%", 399)] == [10, 30, 10, 19]
    assert [limit("0", 100), limit("25", 5), limit("123456789", 0)] == [0, 25, 123456789]


def test_count_files_counts_regular_files_below_each_path_links_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    files(root, MARKER, "a", "docs/b", "docs/c", "docs/deep/d")
    elsewhere = tmp_path / "elsewhere"
    files(elsewhere, "x", "y", "z")
    (root / "linked").symlink_to(elsewhere)
    count = mesh_runner.count_files
    assert count(str(root)) == 5  # the marker counts unless named
    assert count(str(root), marker=MARKER) == 4
    assert count(str(root), ["docs"]) == 3
    assert count(str(root), ["docs/deep/d", "a"]) == 2
    assert count(str(root), ["linked"]) == 1  # a link is one entry, never what it points at
    assert count(str(root), ["gone", "docs/gone"]) == 0  # already deleted here
    assert count(str(root), ["docs"], marker=MARKER) == 3  # the marker is only taken off the whole folder


def test_count_files_leaves_out_unison_temporaries(tmp_path: Path) -> None:
    """A pull that lost the race to deliver a new directory leaves Unison's copy of it under a temporary
    name (seen in the lab: 40 files beside the real 40). Counted, it doubled the folder and so the
    brake's limit: a thief's 36 deletions of 40 files passed a 50% brake."""
    root = tmp_path / "folder"
    real = [f"ledger/{i:02}.txt" for i in range(40)]
    left = [f".unison.ledger.0c4f5844.unison.tmp/{i:02}.txt" for i in range(40)]
    files(root, MARKER, *real, *left, "ledger/.unison.36.txt.0c4f.unison.tmp")
    count = mesh_runner.count_files
    assert count(str(root), marker=MARKER) == 40
    assert count(str(root), ["ledger"]) == 40
    assert mesh_runner.deletion_limit("50%", count(str(root), marker=MARKER)) < 36


# --- the edge directory's scrub -------------------------------------------------------------------------

NOBODY = 65534


def plant(edge: Path, outside: Path) -> None:
    """What Unison and the role put in an edge directory, and what a peer's login could plant there."""
    edge.mkdir(parents=True)
    (edge / ("ar" + "0" * 32)).write_text("archive")  # the peer's server end's archive: kept
    os.chown(edge / ("ar" + "0" * 32), NOBODY, NOBODY)
    (edge / "node2--shared.prf").symlink_to("/etc/replimesh/profiles/node2--shared.prf")  # root's guard
    (edge / "default").symlink_to("/dev/null")
    (edge / "root-file").write_text("root's")
    (edge / "root-dir").mkdir()
    (edge / "evil.prf").symlink_to(outside / "evil.prf")
    os.lchown(edge / "evil.prf", NOBODY, NOBODY)
    os.mkfifo(edge / "fifo")
    os.chown(edge / "fifo", NOBODY, NOBODY)
    (edge / "dir/sub").mkdir(parents=True)
    (edge / "dir/sub/x").symlink_to("/etc/passwd")
    for path in (edge / "dir", edge / "dir/sub"):
        os.chown(path, NOBODY, NOBODY)
    target = outside / "target"
    target.write_text("a file of this node's")
    os.link(target, edge / "hardlink")
    os.chown(edge / "hardlink", NOBODY, NOBODY)


def test_scrub_edge_dir_removes_what_unison_never_makes_there_and_keeps_the_rest(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("entries owned by another user need root to make")
    edge, outside = tmp_path / "edge", tmp_path / "outside"
    outside.mkdir()
    plant(edge, outside)
    assert sorted(mesh_runner.scrub_edge_dir(str(edge))) == ["dir", "evil.prf", "fifo", "hardlink"]
    assert sorted(p.name for p in edge.iterdir()) == [
        "ar" + "0" * 32,
        "default",
        "node2--shared.prf",
        "root-dir",
        "root-file",
    ]
    assert os.readlink(edge / "default") == "/dev/null"
    # Nothing outside the directory was touched: not the hard link's other name, not a link's target.
    assert (outside / "target").read_text() == "a file of this node's" and Path("/etc/passwd").exists()
    assert os.stat(outside / "target").st_nlink == 1
    assert mesh_runner.scrub_edge_dir(str(edge)) == []
    assert mesh_runner.scrub_edge_dir(str(tmp_path / "missing")) == []


def test_every_run_scrubs_the_edge_directory_first_and_logs_it(tmp_path: Path, capsys: Capsys) -> None:
    if os.geteuid() != 0:
        pytest.skip("entries owned by another user need root to make")
    mesh = Mesh(tmp_path, {"node2": True})
    edge = mesh.unison_dir / "node2"
    edge.mkdir()
    (edge / "default.prf").symlink_to("/etc/passwd")
    os.lchown(edge / "default.prf", NOBODY, NOBODY)
    assert mesh.run(capsys)[0] == 0
    assert not os.path.lexists(edge / "default.prf") and len(mesh.calls()) == 1
    assert f"{edge}: removed what Unison never makes there: default.prf" in mesh.log_file.read_text()


# --- archives locked by the other end's run -------------------------------------------------------------

LOCKED = (
    "Unison 2.52.1 (ocaml 4.13.1): Contacting server...\n"
    "Connected [//node1//srv/shared -> //node2//srv/shared]\n"
    "Fatal error: Warning: the archives are locked.  \n"
    "If no other instance of unison is running, the locks should be removed.\n"
    f"The file /var/lib/replimesh/unison/node1/lk{'0' * 32} on host node2 should be deleted\n"
    "Please delete lock files as appropriate and try again.\n"
)


def test_a_pull_that_finds_the_archives_locked_tries_again(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mesh_runner, "LOCK_BACKOFF_S", (0.0, 0.0))
    mesh = Mesh(tmp_path, {"node2": True})
    mesh.fake("node2", runs=[{"text": LOCKED, "code": 3}, {"fixture": "copies"}])
    code, report = mesh.run(capsys)
    assert code == 0 and report["edges"][0]["result"] == "ok" and report["edges"][0]["files_changed"] == 3
    argv = ["node2--shared", "-nodeletion", str(mesh.folders["shared"])]
    assert [call["argv"] for call in mesh.calls()] == [argv, argv]


def test_archives_locked_on_every_try_fail_the_edge_after_a_bounded_number_of_runs(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mesh_runner, "LOCK_BACKOFF_S", (0.0, 0.0))
    monkeypatch.setattr(mesh_runner, "LOCK_RETRIES", 3)
    mesh = Mesh(tmp_path, {"node2": True})
    mesh.fake("node2", text=LOCKED, code=3)
    code, report = mesh.run(capsys)
    assert code == 1 and len(mesh.calls()) == 3
    assert report["edges"][0]["result"] == "failed"
    assert report["edges"][0]["error"] == (
        "archives locked on node2: a run there is alive, or it was killed and that node's next run "
        "removes its stale lock"
    )


def test_the_default_number_of_lock_retries_is_bounded() -> None:
    assert mesh_runner.LOCK_RETRIES == 8
    assert mesh_runner.LOCK_RETRIES * mesh_runner.LOCK_BACKOFF_S[1] <= 40


# --- the real Unison: a pull, and its brake -------------------------------------------------------------


def pull_profile(mesh: Mesh, remote: Path, peer: str = "node2") -> None:
    """The role's pull profile for folder "shared" (the peer's root noupdate, nodeletion, nocreation),
    with a local second root instead of ssh://, for the real Unison."""
    (mesh.unison_dir / peer).mkdir()
    (mesh.unison_dir / peer / f"{peer}--shared.prf").write_text(
        f"root = {mesh.folders['shared']}\nroot = {remote}\n"
        f"noupdate = {remote}\nnodeletion = {remote}\nnocreation = {remote}\n"
        "batch = true\nauto = true\nprefer = newer\ncopyonconflict = true\ntimes = true\nlog = false\n"
        f"confirmbigdel = true\nmountpoint = {MARKER}\nignore = Name {MARKER}\n"
    )


@pytest.mark.skipif(not Path("/usr/bin/unison").exists(), reason="unison is not installed")
def test_real_unison_pulls_and_its_brake_holds_a_mass_deletion_until_allowed(
    tmp_path: Path, capsys: Capsys
) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    local, remote = mesh.folders["shared"], tmp_path / "peer" / "shared"
    files(remote, MARKER, "keep", "gone", *(f"docs/f{i}" for i in range(12)))
    files(local, "mine")  # a change here waits for the peer's own pull
    pull_profile(mesh, remote)
    mesh.save(unison="/usr/bin/unison")
    code, report = mesh.run(capsys)
    assert (code, report["edges"][0]["result"]) == (0, "ok"), report
    assert (local / "docs/f11").read_text() == "docs/f11" and (local / "gone").exists()
    assert not (remote / "mine").exists()  # never written: a pull

    # One deletion: held by the first run, applied by the second.
    (remote / "gone").unlink()
    code, report = mesh.run(capsys)
    assert (code, report["edges"][0]["result"]) == (0, "ok"), report
    assert not (local / "gone").exists() and (local / "keep").exists()

    # 12 of 14 files: over the limit (max(10, 14 * 50%)), nothing deleted, the edge waits for an operator.
    shutil.rmtree(remote / "docs")
    code, report = mesh.run(capsys)
    (edge,) = report["edges"]
    assert (code, edge["result"]) == (1, "brake"), report
    assert edge["error"].startswith(
        "brake: this pull would delete 12 files of shared (max_deletions 50%: 10)"
    )
    assert len(list((local / "docs").iterdir())) == 12
    code, report = mesh.run(capsys, "--allow-deletions")
    assert (code, report["edges"][0]["result"]) == (0, "ok"), report
    assert not (local / "docs").exists() and (local / "keep").exists() and (local / "mine").exists()


def test_a_round_drops_notices_nobody_read_once_they_are_old(tmp_path: Path, capsys: Capsys) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    notify = tmp_path / "jails" / "replimesh-node2" / "notify"
    (notify / "planted-dir").mkdir(parents=True)
    for name in ("old", "new"):
        (notify / name).write_text('["shared", "a"]\n')
    stale = time.time() - mesh_runner.NOTICE_MAX_AGE_S - 5
    for name in ("old", "planted-dir"):
        os.utime(notify / name, (stale, stale))
    mesh.save(peers=[{**mesh.config["peers"][0], "notify_dir": str(notify)}])
    mesh.run(capsys)
    assert sorted(p.name for p in notify.iterdir()) == ["new"]


def test_an_archive_missing_on_one_end_is_synced_once_as_a_first_sync(tmp_path: Path, capsys: Capsys) -> None:
    """Unison stops when one end lost its archive of the edge (a killed run, or the peer's login deleting
    it in its own edge's directory); the runner runs that pull again as a first sync, which deletes
    nothing."""
    mesh = Mesh(tmp_path, {"node2": True})
    mesh.fake("node2", runs=[{"fixture": "archive_missing"}, {"fixture": "copies"}])
    code, report = mesh.run(capsys)
    assert (code, report["edges"][0]["result"]) == (0, "ok"), report
    first, second = (call["argv"] for call in mesh.calls())
    assert second == [*first, "-ignorearchives"] and "-nodeletion" in first
    assert "an archive was missing on one end" in mesh.log_file.read_text()


LOST = {"text": "Fatal error: Lost connection with the server\n", "code": 3}


@pytest.mark.parametrize("stopped", [True, False])
def test_a_lost_shared_connection_is_stopped_and_the_pull_runs_once_more_over_a_new_one(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch, stopped: bool
) -> None:
    """A shared ssh connection whose far end serves no session any more (the peer rebuilt this node's
    jail, or removed and re-added it) fails every pull at once: the runner stops it and pulls again once.
    Without a shared connection to stop, a lost connection is the edge's result."""
    mesh = Mesh(tmp_path, {"node2": True})
    mesh.fake("node2", runs=[LOST, {"fixture": "copies"}])
    asked: list[str] = []

    def drop(_config: mesh_runner.Config, peer: mesh_runner.Peer) -> bool:
        asked.append(peer.name)
        return stopped

    monkeypatch.setattr(mesh_runner, "drop_shared_connection", drop)
    code, report = mesh.run(capsys)
    assert asked == ["node2"]
    runs = [call["argv"] for call in mesh.calls()]
    if stopped:
        assert (code, report["edges"][0]["result"]) == (0, "ok"), report
        assert runs[0] == runs[1] and len(runs) == 2
        assert "the shared ssh connection was lost" in mesh.log_file.read_text()
    else:
        assert (code, report["edges"][0]["result"]) == (1, "failed"), report
        assert len(runs) == 1


def test_only_a_shared_connection_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []

    def run(argv: list[str], **_kwargs: object) -> subprocess.CompletedProcess[bytes]:
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 0, b"", b"")

    monkeypatch.setattr(mesh_runner.subprocess, "run", run)
    base = {"node": "node1", "folders": [{"name": "f", "path": "/f"}]}
    peer = {"name": "node2", "address": "fd00::2", "port": 2222}
    plain = mesh_runner.parse_config({**base, "peers": [peer], "ssh_options": ["-F", "none"]})
    assert not mesh_runner.drop_shared_connection(plain, plain.peers[0]) and ran == []
    options = ["-o", "ControlMaster=auto", "-o", "ControlPath=/k/mux-%C"]
    shared = mesh_runner.parse_config({**base, "peers": [peer], "ssh_options": options, "login": "rm-node1"})
    assert mesh_runner.drop_shared_connection(shared, shared.peers[0])
    assert ran == [
        ["ssh", *options, "-o", "HostKeyAlias=node2", "-p", "2222", "-O", "stop", "rm-node1@[fd00::2]"]
    ]
