"""The watcher's swarm: a large batch goes to one peer at a time; a relayed notice is pulled, acked and
passed on; a child whose parent cannot serve pulls from the origin (mesh_relay)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from replimesh_node.mesh_notify import notice_headers, parse_notice
from replimesh_node.mesh_relay import Relay, ack_header, parse_relay
from replimesh_node.mesh_runner import Runner, load_config
from replimesh_node.mesh_watch import Batch, Watcher
from tests.conftest import wait_until
from tests.unit.test_mesh_runner import Mesh

PEERS = ("node2", "node3", "node4")


def swarm_mesh(tmp_path: Path) -> tuple[Mesh, dict[str, Path]]:
    mesh = Mesh(tmp_path, dict.fromkeys(PEERS, True))
    notify = {name: tmp_path / "jails" / f"replimesh-{name}" / "notify" for name in PEERS}
    for directory in notify.values():
        directory.mkdir(parents=True)
    mesh.save(peers=[{**p, "notify_dir": str(notify[p["name"]])} for p in mesh.config["peers"]])
    return mesh, notify


class Sent:
    """The notices the watcher sends (ssh stubbed): peer, header objects, folders."""

    def __init__(self, watcher: Watcher, hosts: dict[str, str]) -> None:
        self.items: list[tuple[str, list[dict[str, object]], dict[str, object]]] = []
        self.lock = threading.Lock()
        self.hosts = hosts

        def ssh(argv: list[str], data: bytes, _timeout: float) -> tuple[int, str]:
            with self.lock:
                peer = self.hosts[argv[-2]]
                self.items.append((peer, notice_headers(data), parse_notice(data, ["shared"])))
            return 0, ""

        watcher.notifier.run = ssh

    def to(self, peer: str) -> list[tuple[list[dict[str, object]], dict[str, object]]]:
        with self.lock:
            return [(headers, folders) for name, headers, folders in self.items if name == peer]


def watcher_for(mesh: Mesh, **options: object) -> tuple[Watcher, Sent]:
    config = load_config(str(mesh.config_path))
    watcher = Watcher(config, str(mesh.config_path), {"delay": 0.1, "retries": 0, **options})
    Runner(config).prepare()  # as Watcher.run does first: the state and log directories
    watcher.state.mkdir(mode=0o750, parents=True, exist_ok=True)
    hosts = {f"replimesh@{p.address}": p.name for p in config.peers}
    return watcher, Sent(watcher, hosts)


def test_a_large_batch_goes_to_one_peer_at_a_time_each_with_its_share(tmp_path: Path) -> None:
    mesh, _notify = swarm_mesh(tmp_path)
    watcher, sent = watcher_for(mesh, swarm_min_mib=1)
    (mesh.folders["shared"] / "big.iso").write_bytes(b"\0" * (2 << 20))
    batch = Batch()
    batch.add("shared", "big.iso", False, 1.0)
    watcher.submit_changes(batch)
    assert wait_until(lambda: sent.to("node2"), 10)
    ((headers, folders),) = sent.to("node2")
    job = parse_relay(headers[0], [*PEERS, "node1"], "node2")
    assert job is not None and job.origin == "node1" and job.to == ("node3",) and job.bytes == 2 << 20
    assert folders == {"shared": ["big.iso"]} and not sent.to("node3") and not sent.to("node4")
    watcher.acks.put("node2", job.id, True)  # node2 has it (and tells node3): node4 is next
    assert wait_until(lambda: sent.to("node4"), 10)
    ((headers, _),) = sent.to("node4")
    assert parse_relay(headers[0], [*PEERS, "node1"], "node4") == Relay(job.id, "node1", 2 << 20, ())
    assert not sent.to("node3")


def test_a_small_batch_still_goes_to_every_peer_at_once(tmp_path: Path) -> None:
    mesh, _notify = swarm_mesh(tmp_path)
    watcher, sent = watcher_for(mesh, swarm_min_mib=1)
    (mesh.folders["shared"] / "small.txt").write_text("hi")
    batch = Batch()
    batch.add("shared", "small.txt", False, 1.0)
    watcher.submit_changes(batch)
    assert wait_until(lambda: all(sent.to(peer) for peer in PEERS), 10)
    assert all(sent.to(peer) == [([], {"shared": ["small.txt"]})] for peer in PEERS)


def test_what_arrived_is_told_to_the_peers_named_after_this_node_unless_it_spreads_as_a_swarm(
    tmp_path: Path,
) -> None:
    """Settling (full mesh): every pair of nodes that got a file records it at once (one no-op pull), so
    an edit soon after is an update at the other nodes, not a conflict. A swarm's batch is not settled."""
    mesh, _notify = swarm_mesh(tmp_path)
    watcher, sent = watcher_for(mesh, swarm_min_mib=1)
    (mesh.folders["shared"] / "theirs.txt").write_text("from node2")
    (mesh.folders["shared"] / "mine.txt").write_text("written here")
    batch = Batch()
    batch.add("shared", "theirs.txt", True, 1.0)
    batch.add("shared", "mine.txt", False, 1.0)
    watcher.submit_changes(batch)
    # node1 sorts before every peer: each is told of both (its own change, and what arrived, merged).
    assert wait_until(lambda: all(sent.to(peer) for peer in PEERS), 10)
    assert all(sent.to(peer) == [([], {"shared": ["mine.txt", "theirs.txt"]})] for peer in PEERS)

    for options, name in (({"swarm_min_mib": 1}, "big.iso"), ({"settle": False}, "small.txt")):
        (tmp_path / name).mkdir()
        mesh, _notify = swarm_mesh(tmp_path / name)
        watcher, sent = watcher_for(mesh, **options)
        (mesh.folders["shared"] / name).write_bytes(b"\0" * (2 << 20))
        arrived = Batch()
        arrived.add("shared", name, True, 1.0)
        watcher.submit_changes(arrived)
        assert watcher.notifier.idle() and sent.items == [], (options, sent.items)


def test_a_relayed_notice_is_pulled_from_its_sender_acked_then_passed_on(tmp_path: Path) -> None:
    mesh, notify = swarm_mesh(tmp_path)
    watcher, sent = watcher_for(mesh)
    header = Relay("r7", "node2", 5 << 20, ("node4", "node9")).header()  # node9: not our peer, dropped
    (notify["node3"] / "1").write_text(json.dumps(header) + "\n" + json.dumps(["shared", "big.iso"]) + "\n")
    watcher.take_notice(str(notify["node3"] / "1"))
    assert wait_until(lambda: sent.to("node3") and sent.to("node4"), 10)
    assert sent.to("node3") == [([ack_header("r7", True)], {})]
    ((headers, folders),) = sent.to("node4")
    assert parse_relay(headers[0], [*PEERS, "node1"], "node4") == Relay("r7", "node2", 5 << 20, ())
    assert folders == {"shared": ["big.iso"]}
    assert [call["argv"][0] for call in mesh.calls()] == ["node3--shared"]  # pulled from its sender only


def test_a_child_whose_parent_cannot_serve_pulls_from_the_origin_and_an_ack_from_a_child_is_no_pull(
    tmp_path: Path,
) -> None:
    mesh, notify = swarm_mesh(tmp_path)
    mesh.fake("node3", fixture="ssh_refused")
    watcher, sent = watcher_for(mesh)
    header = Relay("r8", "node2", 5 << 20, ()).header()
    (notify["node3"] / "1").write_text(json.dumps(header) + "\n" + json.dumps(["shared", "big.iso"]) + "\n")
    watcher.take_notice(str(notify["node3"] / "1"))
    assert wait_until(lambda: sent.to("node3"), 10)
    assert sent.to("node3") == [([ack_header("r8", True)], {})]
    assert [call["argv"][0] for call in mesh.calls()] == ["node3--shared", "node2--shared"]
    (notify["node4"] / "2").write_text(json.dumps(ack_header("r1", True)) + "\n")
    watcher.take_notice(str(notify["node4"] / "2"))
    assert watcher.acks.wait("node4", "r1", 1.0) is True and len(mesh.calls()) == 2


def test_a_relay_never_makes_a_node_pull_from_a_peer_that_is_not_active_nor_tell_one(tmp_path: Path) -> None:
    """A thief with node3's key forges a relay naming node4 (still being seeded here) as origin and list."""
    mesh, notify = swarm_mesh(tmp_path)
    mesh.save(peers=[{**p, "active": p["name"] != "node4"} for p in mesh.config["peers"]])
    mesh.fake("node3", fixture="ssh_refused")
    watcher, sent = watcher_for(mesh)
    header = Relay("r9", "node4", 5 << 20, ("node4", "node2")).header()
    (notify["node3"] / "1").write_text(json.dumps(header) + "\n" + json.dumps(["shared", "big.iso"]) + "\n")
    watcher.take_notice(str(notify["node3"] / "1"))
    assert wait_until(lambda: sent.to("node3"), 10)
    assert sent.to("node3") == [([ack_header("r9", False)], {})]  # it could not pull: says so, tells nobody
    assert [call["argv"][0] for call in mesh.calls()] == ["node3--shared"] and not sent.to("node4")
    assert not sent.to("node2")
