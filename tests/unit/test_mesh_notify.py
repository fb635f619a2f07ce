"""Change notices (mesh_notify): what a peer may put in a notice, and what this node makes of it."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from replimesh_node.mesh_notify import (
    MAX_NOTICE_BYTES,
    NOTIFY_COMMAND,
    Notifier,
    notify_argv,
    parse_notice,
    read_notice,
    render_notice,
    safe_path,
)
from replimesh_node.mesh_runner import Config, Peer, parse_config

FOLDERS = ["shared", "photos"]


def config(**extra: object) -> Config:
    return parse_config(
        {
            "node": "node1",
            "user": "replimesh",
            "login": "replimesh-node1",
            "folders": [{"name": "shared", "path": "/srv/shared"}],
            "peers": [
                {"name": "node2", "address": "10.0.0.2", "port": 2222},
                {"name": "node3", "address": "fd00::3"},
            ],
            "ssh_options": ["-F", "none", "-o", "BatchMode=yes"],
            **extra,
        }
    )


def test_a_notice_round_trips_paths_and_whole_folders() -> None:
    data = render_notice({"shared": ["a b.txt", 'sub/"ünï"\\name'], "photos": None})
    assert parse_notice(data, FOLDERS) == {"shared": ["a b.txt", 'sub/"ünï"\\name'], "photos": None}
    # A name with a control character (a newline, a tab) is left to the next round: never a -path.
    assert parse_notice(render_notice({"shared": ["a\nb"]}), FOLDERS) == {}


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/", "x\x00y", "a\x01b", 7, None, "a" * 5000],
)
def test_a_path_that_could_leave_the_folder_is_dropped(path: object) -> None:
    assert safe_path(path) is None
    line = json.dumps(["shared", path]).encode() if not isinstance(path, str) or "\x00" not in path else b""
    assert parse_notice(line, FOLDERS) == {}


def test_unknown_folders_and_garbage_lines_ask_for_nothing() -> None:
    data = b"\n".join(
        [b"not json", b"[1, 2]", b'["other", "a"]', b'{"shared": "a"}', b'["shared"]', b"\xff\xfe", b""]
    )
    assert parse_notice(data, FOLDERS) == {}


def test_a_whole_folder_line_wins_over_its_paths() -> None:
    data = b'["shared", "a"]\n["shared", ""]\n["shared", "b"]\n'
    assert parse_notice(data, FOLDERS) == {"shared": None}


def test_a_notice_is_read_once_bounded_and_never_through_a_link_or_fifo(tmp_path: Path) -> None:
    plain = tmp_path / "1"
    plain.write_bytes(b'["shared", "a"]\n' + b"x" * (2 * MAX_NOTICE_BYTES))
    data = read_notice(str(plain))
    assert data is not None and len(data) == MAX_NOTICE_BYTES and not plain.exists()
    secret = tmp_path / "secret"
    secret.write_text('["shared", "from a link"]\n')
    (tmp_path / "2").symlink_to(secret)
    assert read_notice(str(tmp_path / "2")) is None and secret.exists() and not (tmp_path / "2").exists()
    os.mkfifo(tmp_path / "3")
    started = time.monotonic()
    assert read_notice(str(tmp_path / "3")) is None  # opened non-blocking: no writer, no hang
    assert time.monotonic() - started < 2 and not (tmp_path / "3").exists()
    (tmp_path / "4").mkdir()
    assert read_notice(str(tmp_path / "4")) is None and (tmp_path / "4").is_dir()


def test_the_notice_goes_to_the_jailed_login_with_the_pinned_options() -> None:
    cfg = config()
    node2, node3 = cfg.peers
    assert notify_argv(cfg, node2) == [
        "ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "HostKeyAlias=node2", "-p", "2222",
        "replimesh-node1@10.0.0.2", NOTIFY_COMMAND,
    ]  # fmt: skip
    assert notify_argv(cfg, node3)[-2] == "replimesh-node1@[fd00::3]"


def test_the_notifier_sends_one_notice_per_peer_and_retries_a_failed_one() -> None:
    sent: list[tuple[str, bytes]] = []
    results: list[tuple[str, bool]] = []
    done = threading.Event()
    fails = {"node3": 1}

    def run(argv: list[str], data: bytes, timeout: float) -> tuple[int, str]:
        host = argv[-2].split("@")[1]
        peer = "node2" if host == "10.0.0.2" else "node3"
        sent.append((peer, data))
        if fails.get(peer):
            fails[peer] -= 1
            return 255, "ssh: connect to host fd00::3 port 22: Connection refused"
        return 0, ""

    def on_sent(peer: str, ok: bool, error: str) -> None:
        results.append((peer, ok))
        if len(results) == 3:
            done.set()

    dropped: list[str] = []

    def drop(_config: object, peer: Peer) -> bool:
        dropped.append(peer.name)
        return True

    notifier = Notifier(config(), retries=2, on_sent=on_sent, run=run, drop=drop)
    notifier.submit({"node2": {"shared": ["a.txt"]}, "node3": {"shared": None}})
    assert done.wait(10), results
    deadline = time.monotonic() + 5
    while not notifier.idle() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert notifier.idle()
    assert sorted(results) == [("node2", True), ("node3", False), ("node3", True)]
    assert dropped == ["node3"]  # the failed send's shared connection was stopped before the next try
    assert {peer: parse_notice(data, FOLDERS) for peer, data in sent} == {
        "node2": {"shared": ["a.txt"]},
        "node3": {"shared": None},
    }
