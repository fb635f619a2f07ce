"""Watch mode's logic: what counts as a change, how events coalesce, which edges a change goes over, the
real inotify source, the watcher against the runner's fake Unison, and the supervisor that restarts it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_watchstate import (
    process_alive,
    watcher_state,
)
from replimesh_node import mesh_supervise, mesh_watch
from replimesh_node.mesh_inotify import (
    IN_CLOSE_WRITE,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    Inotify,
)
from replimesh_node.mesh_notify import parse_notice
from replimesh_node.mesh_pathrun import PathRunner, compact_paths
from replimesh_node.mesh_runner import (
    ConfigError,
    Peer,
    Runner,
    load_config,
    parse_config,
)
from replimesh_node.mesh_watch import (
    ARRIVAL_DELAY_S,
    Arrivals,
    Batch,
    Watcher,
    ignored,
    load_options,
    merge_plans,
    targets,
)
from tests.conftest import wait_until
from tests.unit.test_mesh_runner import MARKER, Mesh, local_profile

TEMP = ".unison.report.txt.b177728791efa6f93cd49885694cff73.unison.tmp"
PEERS = [Peer("node2", "10.0.0.2", 22, True), Peer("node3", "10.0.0.3", 22, False)]


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("report.txt", False),
        ("a/b/c.bin", False),
        (MARKER, True),
        ("sub/" + MARKER, False),  # only the folder's own marker is Unison's concern
        (TEMP, True),
        (f"dir/{TEMP}/inner.txt", True),
        ("", True),
        ("draft.tmp", True),  # the folder ignores Name *.tmp
        ("cache/x/y", True),  # ... and Path cache/*
        ("cachex/y", False),
    ],
)
def test_what_is_not_a_change(rel: str, expected: bool) -> None:
    assert ignored(rel, MARKER, ["*.tmp", "cache/*"]) is expected


def test_compact_paths_covers_children_by_their_directory_and_folds_to_a_limit() -> None:
    assert compact_paths(["b.txt", "a", "a/x", "a/y/z", "ab"]) == ["a", "ab", "b.txt"]
    assert compact_paths([f"d/{i}" for i in range(5)] + ["e/1", "top"], limit=3) == ["d", "e", "top"]
    assert compact_paths([f"f{i}" for i in range(5)], limit=3) is None  # only the whole folder covers them
    assert compact_paths(["x", ""]) is None
    assert compact_paths([]) == []


def test_targets_forward_arrivals_only_in_an_overlay() -> None:
    inactive = Peer("node4", "10.0.0.4", 22, True, active=False)
    peers = [*PEERS, inactive]
    assert [p.name for p in targets(peers, arrived=False, forward=False)] == ["node2", "node3"]
    assert targets(peers, arrived=True, forward=False) == []
    assert [p.name for p in targets(peers, arrived=True, forward=True)] == ["node2", "node3"]
    # Settling (full mesh): what arrived goes to the active peers named after this node only, so each pair
    # of nodes that got it runs one no-op pull between them, not two.
    assert [p.name for p in targets(peers, arrived=True, forward=False, after="node1")] == ["node2", "node3"]
    assert [p.name for p in targets(peers, arrived=True, forward=False, after="node2")] == ["node3"]
    assert targets(peers, arrived=True, forward=False, after="node3") == []


def test_two_plans_merge_into_one_notice_a_peer() -> None:
    local = {"node2": {"shared": ["a.txt"], "media": None}, "node3": {"shared": ["a.txt"]}}
    settle = {"node3": {"shared": ["b.txt", "a.txt"], "media": ["x"]}}
    assert merge_plans(local, settle) == {
        "node2": {"shared": ["a.txt"], "media": None},
        "node3": {"shared": ["a.txt", "b.txt"], "media": ["x"]},
    }
    assert merge_plans(settle, {"node3": {"media": None}})["node3"]["media"] is None  # whole wins
    assert merge_plans({}, {}) == {}


def test_batch_is_ready_after_a_quiet_window_or_the_longest_wait() -> None:
    batch = Batch()
    assert not batch.ready(100.0, 0.3, 3.0)
    batch.add("shared", "a.txt", False, 100.0)
    assert not batch.ready(100.2, 0.3, 3.0)
    assert batch.ready(100.31, 0.3, 3.0)
    for step in range(1, 30):  # events keep coming every 0.1 s: the longest wait ends it
        batch.add("shared", f"f{step}", False, 100.0 + step / 10)
    assert batch.ready(103.0, 0.3, 3.0)


def test_arrivals_alone_are_passed_on_without_the_write_delay() -> None:
    """A file Unison renamed into place is whole: a forwarding node does not wait out a write burst."""
    batch = Batch()
    batch.add("shared", "a.txt", True, 100.0)
    assert not batch.ready(100.0 + ARRIVAL_DELAY_S / 2, 0.3, 3.0)
    assert batch.ready(100.0 + ARRIVAL_DELAY_S, 0.3, 3.0)
    batch.add("shared", "b.txt", False, 100.1)  # a local write joins: the write delay again
    assert not batch.ready(100.1 + ARRIVAL_DELAY_S, 0.3, 3.0)
    assert batch.ready(100.4, 0.3, 3.0)
    overflow = Batch()
    overflow.add("shared", "a.txt", True, 100.0)
    overflow.overflow("shared", 100.0)  # a whole-folder sync waits the write delay too
    assert not overflow.ready(100.1, 0.3, 3.0)
    assert Batch().quiet(0.01) == 0.01  # a write delay shorter than the arrivals' one is kept


def test_batch_plan_sends_local_changes_everywhere_and_arrivals_only_when_forwarding() -> None:
    batch = Batch()
    batch.add("shared", "mine.txt", False, 1.0)
    batch.add("shared", "new/dir/theirs.txt", True, 1.0)
    batch.add("shared", "new", False, 1.0)  # Unison made the parent on its way to theirs.txt
    batch.add("media", "x/y", False, 1.0)
    assert batch.plan(PEERS, forward=False) == {
        "node2": {"shared": ["mine.txt"], "media": ["x/y"]},
        "node3": {"shared": ["mine.txt"], "media": ["x/y"]},
    }
    batch = Batch()
    batch.add("shared", "theirs.txt", True, 1.0)
    batch.overflow("media", 1.0)
    plan = batch.plan(PEERS, forward=True)
    assert plan["node2"] == {"shared": ["theirs.txt"], "media": None}
    # The settling plan holds what arrived only (no local change, no overflowed folder).
    batch.add("shared", "mine.txt", False, 1.0)
    assert batch.plan(PEERS, forward=False, settle_after="node2") == {"node3": {"shared": ["theirs.txt"]}}


def test_arrivals_are_renames_from_unison_temporary_names() -> None:
    arrivals = Arrivals()
    assert not arrivals.arrived(IN_MOVED_FROM, 7, TEMP, 1.0)
    assert arrivals.arrived(IN_MOVED_TO, 7, "report.txt", 1.0)
    assert not arrivals.arrived(IN_MOVED_TO, 7, "report.txt", 1.0)  # the cookie is used up
    assert not arrivals.arrived(IN_MOVED_FROM, 8, "draft.txt", 1.0)  # an application's own rename
    assert not arrivals.arrived(IN_MOVED_TO, 8, "final.txt", 1.0)
    assert not arrivals.arrived(IN_CLOSE_WRITE, 0, "written.txt", 1.0)


def test_load_options_defaults_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "watch.json"
    assert load_options(str(path))["delay"] == 0.3
    path.write_text(json.dumps({"delay": 0.5, "forward": True, "unknown": 1}))
    assert load_options(str(path)) | {} == {
        "delay": 0.5, "max_delay": 3.0, "forward": True, "settle": True, "retries": 4, "swarm_min_mib": 32,
    }  # fmt: skip
    bad_swarm = ({"swarm_min_mib": -1}, {"swarm_min_mib": 1.5}, {"swarm_min_mib": True})
    for bad in (
        {"delay": 0},
        {"delay": True},
        {"forward": "yes"},
        {"settle": 1},
        {"retries": 99},
        [],
        *bad_swarm,
    ):
        path.write_text(json.dumps(bad))
        with pytest.raises(ConfigError):
            load_options(str(path))


def wait_for_path(inotify: Inotify, path: Path) -> list[str]:
    paths: list[str] = []
    deadline = time.monotonic() + 5
    while str(path) not in paths and time.monotonic() < deadline:
        paths += [e.path for e in inotify.read(0.5)]
    return paths


def test_inotify_follows_new_and_moved_directories(tmp_path: Path) -> None:
    inotify = Inotify()
    inotify.add_tree(str(tmp_path))
    (tmp_path / "d" / "e").mkdir(parents=True)
    seen = {e.path for e in inotify.read(1.0)}
    assert str(tmp_path / "d") in seen
    (tmp_path / "d" / "e" / "f.txt").write_text("x")  # d/e was watched as soon as d appeared
    (tmp_path / "d").rename(tmp_path / "moved")
    # The move names the directory (a sync of "moved" covers all below it); the old paths' watches go.
    assert str(tmp_path / "moved") in wait_for_path(inotify, tmp_path / "moved")
    (tmp_path / "moved" / "g.txt").write_text("y")
    paths = wait_for_path(inotify, tmp_path / "moved" / "g.txt")
    assert str(tmp_path / "moved" / "g.txt") in paths
    assert not any("/d/" in p for p in paths)
    inotify.close()


def test_the_watcher_tells_every_peer_what_changed_and_pulls_what_a_peer_tells_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh = Mesh(tmp_path, {"node2": True, "node3": False})
    notify = {name: tmp_path / "jails" / f"replimesh-{name}" / "notify" for name in ("node2", "node3")}
    for directory in notify.values():
        directory.mkdir(parents=True)
    peers = mesh.config["peers"]
    mesh.save(peers=[{**p, "notify_dir": str(notify[p["name"]])} for p in peers])
    config = load_config(str(mesh.config_path))
    watcher = Watcher(config, str(mesh.config_path), {"delay": 0.2, "retries": 0})
    sent: list[tuple[str, dict]] = []

    def ssh(argv: list[str], data: bytes, timeout: float) -> tuple[int, str]:
        sent.append((argv[-2], parse_notice(data, ["shared"])))
        return 0, ""

    watcher.notifier.run = ssh
    # A notice the peer left while the watcher was down is read when it starts.
    (notify["node3"] / "41").write_text(json.dumps(["shared", "from-node3.txt"]) + "\n")
    monkeypatch.setattr(mesh_watch, "IDLE_WAKE_S", 0.5)
    thread = threading.Thread(target=watcher.run, daemon=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(signal, "signal", lambda *_args: None)  # not the main thread
        thread.start()
        assert wait_until(lambda: (mesh.state_dir / "watch" / "watcher.json").exists(), 10)
        folder = mesh.folders["shared"]
        (folder / "sub").mkdir()
        (folder / "sub" / "new.txt").write_text("hello")
        (folder / "top.txt").write_text("hi")
        (folder / "draft.tmp").write_text("ignored")
        assert wait_until(lambda: len(sent) >= 2, 10), sent
        # node2 tells us of two paths (one line bad: outside the folder); we pull exactly the good one.
        notice = [json.dumps(["shared", "../../etc/passwd"]), json.dumps(["shared", "from-node2.txt"])]
        (notify["node2"] / "42").write_text("\n".join(notice) + "\n")
        assert wait_until(lambda: len(mesh.calls()) >= 2, 10), mesh.calls()
        watcher._stop = True
        thread.join(15)
    # Every peer was told of the changed paths, through its jailed login (the ignored draft left out).
    assert sorted(sent) == [
        ("replimesh@172.31.77.10", {"shared": ["sub", "top.txt"]}),
        ("replimesh@172.31.77.11", {"shared": ["sub", "top.txt"]}),
    ]
    # Each notice became one pull from the peer that sent it, of exactly its paths, braked (-nodeletion).
    local = str(mesh.folders["shared"])
    pulls = sorted(call["argv"] for call in mesh.calls())
    assert pulls == [
        ["node2--shared", "-path", "from-node2.txt", "-confirmbigdel=false", "-nodeletion", local],
        ["node3--shared", "-path", "from-node3.txt", "-confirmbigdel=false", "-nodeletion", local],
    ]
    assert not list(notify["node2"].iterdir()) and not list(notify["node3"].iterdir())
    record = json.loads((mesh.state_dir / "watch" / "watcher.json").read_text())
    assert record["syncs"] == 2 and record["notices_sent"] == 2 and record["last_event"]
    assert record["pid"] == os.getpid()
    assert mesh.status("node3")["result"] == "ok"  # the runner's status record, as for a cron round
    state = watcher_state(str(mesh.state_dir))
    assert state is not None and state["alive"] is False  # this test process is not a replimesh-watch


@pytest.mark.parametrize(
    ("results", "tries"),
    [
        (["unreachable", "ok"], 2),  # a handshake sshd dropped (MaxStartups): tried again
        (["busy", "failed", "ok"], 3),
        (["unreachable"] * 5, 3),  # bounded: retries + 1 tries
        (["hostkey", "ok"], 1),  # a changed host key is never tried again
    ],
)
def test_a_pull_is_tried_again_after_a_dropped_connection_a_bounded_number_of_times(
    results: list[str], tries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse_config(
        {
            "node": "node1",
            "user": "replimesh",
            "folders": [{"name": "shared", "path": "/srv/shared"}],
            "peers": [{"name": "node2", "address": "10.0.0.2"}],
        }
    )
    seen: list[str] = []
    edges = mesh_watch.Edges(config, 2, lambda peer, result: seen.append(result["result"]))
    answers = iter(results)
    monkeypatch.setattr(edges, "_sync", lambda peer, paths: {"result": next(answers)})
    monkeypatch.setattr(mesh_watch.time, "sleep", lambda seconds: None)
    edges.handle("node2", {"shared": {"a.txt"}})
    assert seen == results[:tries]


def test_path_runs_lift_the_big_deletion_check_and_whole_folder_runs_keep_it(tmp_path: Path) -> None:
    # A second folder holding nothing but its marker changes nothing for the first one's runs.
    config = load_config(str(Mesh(tmp_path, {"node2": True}, ("shared", "empty")).config_path))
    peer = config.peers[0]
    shared, empty = config.folders
    runner = PathRunner(config, {"shared": ["gone.txt", "sub"], "empty": None})
    assert runner.command(peer, shared)[2:] == ["-path", "gone.txt", "-path", "sub", "-confirmbigdel=false"]
    assert runner.command(peer, empty)[2:] == []  # the profile's confirmbigdel = true holds


@pytest.mark.skipif(not Path("/usr/bin/unison").exists(), reason="unison is not installed")
def test_a_path_run_deletes_the_last_files_of_a_folder_but_never_without_its_marker(tmp_path: Path) -> None:
    """The real Unison, with the role's profile (confirmbigdel = true): a user deletes every file of the
    folder; a watcher's run of those paths deletes them on the peer, and keeps the marker. While the
    marker is missing (an unmounted disk, an application writing into the bare mount point) the same run
    starts no Unison and deletes nothing."""
    mesh = Mesh(tmp_path, {"node2": True})
    remote = tmp_path / "peer" / "shared"
    remote.mkdir(parents=True)
    (remote / MARKER).touch()
    local_profile(mesh, remote)
    mesh.save(unison="/usr/bin/unison")
    config = load_config(str(mesh.config_path))
    Runner(config).prepare()
    folder, peer = mesh.folders["shared"], config.peers[0]
    (folder / "sub").mkdir()
    (folder / "sub" / "b.txt").write_text("b")
    (folder / "a.txt").write_text("a")
    first = PathRunner(config, {"shared": None})._sync_edge_safely(peer)
    assert first["result"] == "ok", (first, mesh.log_file.read_text())
    assert sorted(p.name for p in remote.iterdir()) == [MARKER, "a.txt", "sub"]

    (folder / "a.txt").unlink()
    shutil.rmtree(folder / "sub")
    (folder / MARKER).unlink()
    (folder / "stray.log").write_text("written into the bare mount point")
    refused = PathRunner(config, {"shared": ["a.txt", "stray.log", "sub"]})._sync_edge_safely(peer)
    assert refused["result"] == "marker", refused
    assert sorted(p.name for p in remote.iterdir()) == [MARKER, "a.txt", "sub"]

    (folder / "stray.log").unlink()
    (folder / MARKER).touch()  # mounted again: the folder holds nothing but its marker
    done = PathRunner(config, {"shared": ["a.txt", "sub"]})._sync_edge_safely(peer)
    assert (done["result"], done["files_changed"]) == ("ok", 2), done
    assert [p.name for p in remote.iterdir()] == [MARKER]


CHILD = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"


def test_the_supervisor_restarts_its_watcher_and_stops_with_it(tmp_path: Path) -> None:
    state, pidfile = tmp_path / "state", tmp_path / "child.pid"
    code = (
        "import sys; from replimesh_node import mesh_supervise as s; "
        f"s.supervise({str(state)!r}, [sys.executable, '-c', {CHILD!r}, {str(pidfile)!r}], "
        f"{str(tmp_path / 'watch.log')!r})"
    )
    root = Path(__file__).resolve().parents[2] / "roles/mesh_sync/files"  # where replimesh_node is
    # Its command line names it as the entry point does: stop() signals nothing else.
    supervisor = subprocess.Popen([sys.executable, "-c", code, "replimesh-watch", "--supervise"], cwd=root)
    try:
        assert wait_until(pidfile.exists, 10)
        first = int(pidfile.read_text())
        assert mesh_supervise.running(str(state))
        # A second supervisor sees the lock and leaves at once.
        assert mesh_supervise.supervise(str(state), ["false"], str(tmp_path / "other.log")) == 0
        started = time.monotonic()
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: pidfile.exists() and pidfile.read_text() not in ("", str(first)), 10)
        assert time.monotonic() - started < 3  # back within about a second
        second = int(pidfile.read_text())
        assert mesh_supervise.stop(str(state)) == "stopped"
        assert supervisor.wait(10) == 0
        assert wait_until(lambda: not Path(f"/proc/{second}").exists(), 10)
        assert mesh_supervise.stop(str(state)) == "not running"
        assert "exited with 137" in (tmp_path / "watch.log").read_text()  # the shell's 128 + SIGKILL
    finally:
        supervisor.kill()


def test_the_supervisor_is_a_shell_and_a_killed_one_takes_its_watcher_along(tmp_path: Path) -> None:
    """An idle node runs one Python process: the supervisor holding the lock is /bin/sh. A watcher that
    asked to die with its parent (as replimesh-watch does) ends when the supervisor is killed."""
    state, pidfile = tmp_path / "state", tmp_path / "child.pid"
    child = (
        "import os, sys, time; from replimesh_node import mesh_supervise as s; s.die_with_parent(); "
        "assert os.environ['REPLIMESH_SUPERVISOR'] == str(os.getppid()); "
        "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
    )
    root = Path(__file__).resolve().parents[2] / "roles/mesh_sync/files"
    code = (
        "import sys; from replimesh_node import mesh_supervise as s; "
        f"s.supervise({str(state)!r}, [sys.executable, '-c', {child!r}, {str(pidfile)!r}], "
        f"{str(tmp_path / 'watch.log')!r})"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    supervisor = subprocess.Popen(
        [sys.executable, "-c", code, "replimesh-watch", "--supervise"], cwd=root, env=env
    )
    try:
        assert wait_until(pidfile.exists, 10)
        watcher = int(pidfile.read_text())
        assert Path(os.readlink(f"/proc/{supervisor.pid}/exe")).name in ("sh", "dash", "bash")
        assert mesh_supervise.supervisor_pid(str(state)) == supervisor.pid  # the pid file still names it
        os.kill(supervisor.pid, signal.SIGKILL)
        assert wait_until(lambda: not Path(f"/proc/{watcher}").exists() or _zombie(watcher), 10)
    finally:
        supervisor.kill()
        supervisor.wait(10)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_restart_pauses_grow_only_while_the_watcher_keeps_failing() -> None:
    assert mesh_supervise.next_delay(0.0, 100.0) == 1.0
    assert mesh_supervise.next_delay(1.0, 0.5) == 2.0
    assert mesh_supervise.next_delay(16.0, 0.5) == 30.0
    assert mesh_supervise.next_delay(30.0, 20.0) == 1.0


def test_process_alive_wants_a_watcher() -> None:
    assert not process_alive(os.getpid())  # pytest is not replimesh-watch
    assert not process_alive(True) and not process_alive(-1) and not process_alive("12")


def test_the_watcher_ends_when_a_folder_is_gone_and_when_mesh_json_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mesh_watch, "IDLE_WAKE_S", 0.2)
    monkeypatch.setattr(signal, "signal", lambda *_args: None)
    mesh = Mesh(tmp_path, {"node2": True})
    config = load_config(str(mesh.config_path))
    results: list[int] = []

    def run() -> None:
        results.append(Watcher(config, str(mesh.config_path), {"delay": 0.1}).run())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert wait_until(lambda: (mesh.state_dir / "watch" / "watcher.json").exists(), 10)
    os.utime(mesh.config_path, (time.time() + 5, time.time() + 5))  # the peer list was rewritten
    thread.join(10)
    assert results == [0]  # ends cleanly: its supervisor starts it again with the new peers

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert wait_until(lambda: len(results) == 1 and thread.is_alive(), 10)
    time.sleep(0.5)  # let it set its watches up
    mesh.folders["shared"].rename(tmp_path / "elsewhere")
    thread.join(10)
    assert results == [0, 1]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs inside the folder")
def test_an_unmounted_disk_inside_a_folder_is_no_change_and_a_remounted_one_is_announced_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh = Mesh(tmp_path, {"node2": True})
    config = load_config(str(mesh.config_path))
    disk = mesh.folders["shared"] / "photos"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    watcher = Watcher(config, str(mesh.config_path), {"delay": 0.1, "retries": 0})
    sent: list[dict] = []

    def ssh(_argv: list[str], data: bytes, _timeout: float) -> tuple[int, str]:
        sent.append(parse_notice(data, ["shared"]))
        return 0, ""

    watcher.notifier.run = ssh
    monkeypatch.setattr(mesh_watch, "IDLE_WAKE_S", 0.3)
    thread = threading.Thread(target=watcher.run, daemon=True)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(signal, "signal", lambda *_args: None)  # not the main thread
            thread.start()
            assert wait_until(lambda: (mesh.state_dir / "watch" / "watcher.json").exists(), 10)
            (disk / "a.jpg").write_text("on the disk")
            assert wait_until(lambda: {"shared": ["photos/a.jpg"]} in sent, 10), sent
            sent.clear()
            subprocess.run(["umount", str(disk)], check=True)
            # The watcher saw the unmount (it says so) and announced nothing: no peer pulls an empty disk.
            log = Path(config.log_file)
            assert wait_until(lambda: log.exists() and "disks inside it now none" in log.read_text(), 10)
            assert sent == []
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
            # A mount raises no inotify event: the watcher's mount check announces the folder whole.
            assert wait_until(lambda: {"shared": None} in sent, 10), sent
            sent.clear()
            (disk / "b.jpg").write_text("watched again")
            assert wait_until(lambda: {"shared": ["photos/b.jpg"]} in sent, 10), sent
            watcher._stop = True
            thread.join(15)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert "disks inside it now ['photos']" in Path(config.log_file).read_text()
