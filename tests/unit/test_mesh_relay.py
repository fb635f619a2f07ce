"""mesh_relay: a large change spreads as a swarm (a binomial tree of pulls), and survives nodes that fail."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from replimesh_node import mesh_relay
from replimesh_node.mesh_relay import (
    Acks,
    Rate,
    Relay,
    ack_header,
    batch_bytes,
    parse_ack,
    parse_relay,
    relay,
    split,
)
from tests.conftest import wait_until

NODES = [f"node{i}" for i in range(1, 9)]


def test_the_split_gives_the_first_child_the_larger_half_and_names_every_node_once() -> None:
    assert split(NODES[1:]) == [
        ("node2", ("node3", "node4", "node5")),
        ("node6", ("node7",)),
        ("node8", ()),
    ]
    for n in range(0, 40):
        names = [str(i) for i in range(n)]
        parts = split(names)
        covered = [name for child, theirs in parts for name in (child, *theirs)]
        assert covered == names  # each exactly once, in order
        assert [len(theirs) for _, theirs in parts] == sorted((len(t) for _, t in parts), reverse=True)


def test_a_relay_header_is_cut_to_this_node_s_own_peers_and_a_bad_one_is_nothing() -> None:
    peers = ["node2", "node3", "node4"]
    header = Relay("ab12", "node2", 10, ("node3", "node9", "node3", "node1", "node2", "node4")).header()
    assert parse_relay(header, peers, "node1") == Relay("ab12", "node2", 10, ("node3", "node4"))
    for bad in (
        {"relay": {"id": "a/b", "origin": "node2", "bytes": 1, "to": []}},
        {"relay": {"id": "", "origin": "node2", "bytes": 1, "to": []}},
        {"relay": {"id": "ab", "origin": 3, "bytes": 1, "to": []}},
        {"relay": {"id": "ab", "origin": "node2", "bytes": True, "to": []}},
        {"relay": {"id": "ab", "origin": "node2", "bytes": -1, "to": []}},
        {"relay": {"id": "ab", "origin": "node2", "bytes": 1, "to": "node3"}},
        {"relay": []},
        ["shared", "a.txt"],
    ):
        assert parse_relay(bad, peers, "node1") is None
    assert parse_ack(ack_header("ab12", True)) == ("ab12", True)
    assert parse_ack({"ack": {"id": "ab12", "ok": "yes"}}) is None and parse_ack({"relay": {}}) is None


class Swarm:
    """Eight watchers in one process: a notice is a thread on the receiving node that pulls from its parent
    (holding the batch only if the parent holds it), acks, then relays its share."""

    def __init__(self, down: frozenset[str] = frozenset(), failing: frozenset[str] = frozenset()) -> None:
        self.down, self.failing = down, failing
        self.acks = {name: Acks() for name in NODES}
        self.holds = {"node1"}
        self.uploads = dict.fromkeys(NODES, 0)
        self.parent: dict[str, str] = {}
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def send_from(self, sender: str) -> mesh_relay.Send:
        def send(peer: str, _paths: Mapping[str, list[str] | None], header: dict[str, Any]) -> bool:
            if peer in self.down:
                return False
            asked = parse_relay(header, [n for n in NODES if n != peer], peer)
            assert asked is not None
            thread = threading.Thread(target=self.child, args=(sender, peer, asked))
            self.threads.append(thread)
            thread.start()
            return True

        return send

    def child(self, parent: str, me: str, asked: Relay) -> None:
        with self.lock:
            held = parent in self.holds and me not in self.failing
            if held:
                self.uploads[parent] += 1
                self.holds.add(me)
                self.parent[me] = parent
        self.acks[parent].put(me, asked.id, held)
        if held:
            relay(asked, {"shared": ["big.iso"]}, self.send_from(me), self.acks[me], Rate())

    def run(self) -> list[str]:
        told = relay(Relay("r1", "node1", 256 << 20, tuple(NODES[1:])), {}, self.send_from("node1"),
                     self.acks["node1"], Rate())  # fmt: skip
        self.join()
        return told

    def join(self) -> None:
        """Every notice's thread, also those started while waiting (bounded: 8 nodes, 30 s each)."""
        done = 0
        while done < len(self.threads):
            self.threads[done].join(30)
            done += 1

    def depth(self, node: str) -> int:
        return 0 if node == "node1" else 1 + self.depth(self.parent[node])


def test_eight_nodes_get_it_in_three_rounds_each_uploading_at_most_three_copies() -> None:
    swarm = Swarm()
    assert swarm.run() == ["node2", "node6", "node8"]
    assert swarm.holds == set(NODES)
    assert sum(swarm.uploads.values()) == 7 and max(swarm.uploads.values()) == 3 == swarm.uploads["node1"]
    assert max(swarm.depth(node) for node in NODES) == 3  # log2(8): the writer sent 7 copies before


def test_a_child_that_is_down_is_skipped_and_its_share_taken_back() -> None:
    swarm = Swarm(down=frozenset({"node2"}))
    swarm.run()
    assert swarm.holds == set(NODES) - {"node2"}  # node3..node5 were node2's: they were told by node1's tree


def test_a_child_that_cannot_pull_says_so_and_its_share_is_taken_back() -> None:
    swarm = Swarm(failing=frozenset({"node2", "node6"}))
    swarm.run()
    assert swarm.holds == set(NODES) - {"node2", "node6"}


def test_no_ack_in_time_the_parent_takes_the_share_back_and_the_slow_child_serves_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mesh_relay, "ACK_WAIT_FLOOR_S", 0.05)
    gate = threading.Event()
    swarm = Swarm()
    original = swarm.child

    def slow_child(parent: str, me: str, asked: Relay) -> None:
        if me == "node2":
            assert gate.wait(30)  # node2 is slow: it pulls only once node1 went on without it
        original(parent, me, asked)

    swarm.child = slow_child  # type: ignore[method-assign]
    told = relay(Relay("r1", "node1", 0, tuple(NODES[1:])), {}, swarm.send_from("node1"), swarm.acks["node1"],
                 Rate())  # fmt: skip
    try:
        # node2's share (node3..node5) was told from node1 too: every other node holds it meanwhile.
        assert told == ["node2", "node3", "node6", "node8"]
        assert wait_until(lambda: swarm.holds == set(NODES) - {"node2"}, 10), swarm.holds
    finally:
        gate.set()
    swarm.join()
    assert swarm.holds == set(NODES)  # node2 came through, and told its share again (a no-op pull each)


def test_the_wait_for_an_ack_follows_the_measured_speed_within_bounds() -> None:
    rate = Rate(bytes_per_s=100e6)
    assert rate.wait_s(0) == mesh_relay.ACK_WAIT_FLOOR_S
    assert rate.wait_s(1 << 40) == mesh_relay.ACK_WAIT_MAX_S
    rate.seen(100 << 20, 10.0)  # 10 MiB/s measured: half-way there
    assert 50e6 < rate.bytes_per_s < 60e6
    rate.seen(10, 0.0)  # nothing learnt from a tiny or instant pull
    assert 50e6 < rate.bytes_per_s < 60e6


def test_a_batch_is_sized_from_its_files_without_following_links(tmp_path: Path) -> None:
    class Folder:
        name, path = "shared", str(tmp_path)

    (tmp_path / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "b.bin").write_bytes(b"y" * 24)
    (tmp_path / "link").symlink_to(tmp_path / "a.bin")
    assert batch_bytes([Folder()], {"shared": ["a.bin", "d", "link", "gone"]}) == 1024
    assert batch_bytes([Folder()], {"shared": None, "other": ["a.bin"]}) == 0
