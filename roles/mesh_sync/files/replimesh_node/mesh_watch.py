"""Watch mode on a node: inotify events -> coalesced paths -> a notice to every peer -> each peer pulls them.

Installed beside the runner (``replimesh_node.mesh_watch``) and started as ``replimesh-watch``: by a
systemd unit where systemd runs, else by ``replimesh-watch --supervise`` (mesh_supervise), which cron
starts again if it is gone. Standard library only.

- Every node only pulls (mesh_runner). Events are coalesced until the folder has been quiet for ``delay``
  seconds (at most ``max_delay`` after the first), then every peer gets one *notice* naming every changed
  path (mesh_notify: ``ssh LOGIN@PEER replimesh-notify``, the jail's forced command writes it to the
  jail's ``/notify``). Each peer's watcher sees the notice appear and pulls exactly those paths
  (``-path``, several at once) from the node that sent it. A one-file change never makes Unison scan the
  whole tree.
- Unison's own temporary entries (``.unison.*``) and the folder marker are not changes. A file that Unison
  renamed into place from its temporary name arrived from a peer: it is forwarded to this node's other
  peers only when ``forward`` is on (overlay). In a full mesh the origin syncs with every node itself;
  there (``settle``) what arrived is told only to the peers whose name sorts after this node's. Each of
  them pulls it from here: a no-op that records the file in that pair's archive, or a copy if it has
  none yet. Each pair of nodes that got a file is so recorded once, by one no-op run, not two: without
  it, a node that edits the file before the pair's own next run would meet, at the other end, a file
  "new on both sides" with two contents, and Unison would keep a needless conflict copy of the first.
  A batch that spreads as a swarm is not settled this way (the no-ops would compete with the swarm).
- Pulls run in parallel (at most ``concurrency`` at once), each under the runner's edge lock; a busy or
  failed run is retried a bounded number of times, so is a notice that could not be sent. The cron round
  stays the full safety net. Notices left while the watcher was down are read when it starts.
- A change of mesh.json (membership) ends the watcher with exit 0: its supervisor starts it again at once
  with the new peers.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import mesh_supervise
from .mesh_disks import mount_points, mounts_inside, read_mountinfo
from .mesh_edgerecord import iso_utc
from .mesh_inotify import IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO, IN_Q_OVERFLOW, IN_UNMOUNT, Inotify
from .mesh_notify import (
    Notifier,
    PeerQueue,
    add_paths,
    notice_headers,
    parse_notice,
    pending_notices,
    read_notice,
    retry_pause,
)
from .mesh_pathrun import PathRunner, compact_folders
from .mesh_relay import Acks, Rate, Relay, ack_header, batch_bytes, new_id, parse_ack, parse_relay, relay
from .mesh_runner import (
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    Folder,
    Peer,
    Runner,
    load_config,
    write_json_atomic,
)
from .mesh_supervise import DEFAULT_OPTIONS
from .mesh_watchstate import HEARTBEAT_S, watch_dir

UNISON_TEMP_PREFIX = ".unison."
IDLE_WAKE_S = 5.0  # when idle, how often the watcher looks for a new mesh.json
# A batch of files that only arrived from a peer waits this long, not the write delay: Unison renames each
# file into place whole and verified, so there is no editor's burst of writes to wait out, only the other
# renames of the same run. A forwarding node (overlay) passes a change on without a second write delay.
ARRIVAL_DELAY_S = 0.05
# A pull tried again after a pause. "unreachable" too: sshd drops the handshakes beyond its MaxStartups
# (10 by default), and a writer in a full mesh of 16 gets 15 pulls at once; a peer that is down costs its
# own edge's worker a few tries, no other edge.
RETRY_KINDS = frozenset({"busy", "failed", "unreachable"})
# A pull's result that leaves the node holding what it pulled (a relay passes it on after one of these).
HELD_KINDS = frozenset({"ok", "conflict"})
MAX_RELAYS = 8  # relays passed on at once; a notice beyond them is a plain one (pulled, not passed on)
WATCHER_DEFAULTS: dict[str, Any] = {
    "delay": 0.3,
    "max_delay": 3.0,
    "forward": False,
    # Full mesh: tell the peers named after this node what arrived here, so every pair records it.
    "settle": True,
    "retries": 4,
    # A batch of at least this many MiB spreads as a swarm (mesh_relay) in a full mesh; 0: never.
    "swarm_min_mib": 32,
}


# ---- pure logic (unit-tested) ---------------------------------------------------------------------


def ignored(rel: str, marker: str, patterns: Sequence[str] = ()) -> bool:
    """Whether a path (relative to the folder) is never a change to sync: Unison's own temporary entries,
    the marker, and the folder's ignore patterns (Unison's `Name` on any component, `Path` on the whole)."""
    parts = rel.split("/")
    if not rel or rel == marker or any(part.startswith(UNISON_TEMP_PREFIX) for part in parts):
        return True
    for pattern in patterns:
        if "/" in pattern:
            if fnmatch.fnmatchcase(rel, pattern):
                return True
        elif any(fnmatch.fnmatchcase(part, pattern) for part in parts):
            return True
    return False


def merge_plans(
    first: Mapping[str, Mapping[str, list[str] | None]], second: Mapping[str, Mapping[str, list[str] | None]]
) -> dict[str, dict[str, list[str] | None]]:
    """Two plans (peer -> folder -> paths, None: whole) as one: a peer is told of both in one notice."""
    merged: dict[str, dict[str, set[str] | None]] = {}
    for plan in (first, second):
        for peer, folders in plan.items():
            add_paths(merged.setdefault(peer, {}), folders)
    return {peer: compact_folders(folders) for peer, folders in merged.items()}


def targets(peers: Sequence[Peer], arrived: bool, forward: bool, after: str | None = None) -> list[Peer]:
    """The peers told of a change: every active peer for a local change; for a change that arrived from a
    peer, every active peer when forwarding (the origin then pulls as a cheap no-op), else, to settle it,
    the active peers whose name sorts after `after` (this node's), or none."""
    if arrived and not forward:
        return [peer for peer in peers if peer.active and peer.name > after] if after is not None else []
    return [peer for peer in peers if peer.active]


@dataclass
class Batch:
    """Changed paths per folder, split by origin; `full` folders had an event overflow (sync them whole)."""

    local: dict[str, set[str]] = field(default_factory=dict)
    arrived: dict[str, set[str]] = field(default_factory=dict)
    full: set[str] = field(default_factory=set)
    first: float = 0.0
    last: float = 0.0

    def add(self, folder: str, rel: str, arrived: bool, now: float) -> None:
        (self.arrived if arrived else self.local).setdefault(folder, set()).add(rel)
        self._touch(now)

    def overflow(self, folder: str, now: float) -> None:
        self.full.add(folder)
        self._touch(now)

    def _touch(self, now: float) -> None:
        self.first = self.first or now
        self.last = now

    def __bool__(self) -> bool:
        return bool(self.local or self.arrived or self.full)

    def quiet(self, delay: float) -> float:
        """The quiet window this batch waits for: the write delay, shorter when it holds arrivals only."""
        return delay if self.local or self.full else min(delay, ARRIVAL_DELAY_S)

    def due(self, delay: float, max_delay: float) -> float:
        return min(self.last + self.quiet(delay), self.first + max_delay)

    def ready(self, now: float, delay: float, max_delay: float) -> bool:
        return bool(self) and now >= self.due(delay, max_delay)

    def take_created_dirs(self) -> None:
        """A directory Unison created on the way to a file it delivered (``-path a/b/f``) arrived too."""
        for folder, paths in self.arrived.items():
            local = self.local.get(folder, set())
            covering = {p for p in local if any(a.startswith(p + "/") for a in paths)}
            local -= covering
            paths |= covering
        self.local = {f: p for f, p in self.local.items() if p}

    def plan(
        self, peers: Sequence[Peer], forward: bool, settle_after: str | None = None
    ) -> dict[str, dict[str, list[str] | None]]:
        """peer -> folder -> paths to sync (None: the whole folder). With `settle_after` (this node's name,
        full mesh) the plan holds only what arrived, for the peers named after it (targets)."""
        self.take_created_dirs()
        work: dict[str, dict[str, set[str]]] = {}
        sources = (
            [(True, self.arrived)]
            if settle_after is not None
            else [(False, self.local), (True, self.arrived)]
        )
        for arrived, source in sources:
            for folder, paths in source.items():
                for peer in targets(peers, arrived, forward, settle_after):
                    work.setdefault(peer.name, {}).setdefault(folder, set()).update(paths)
        for folder in self.full if settle_after is None else ():
            for peer in targets(peers, False, forward):
                work.setdefault(peer.name, {})[folder] = {""}
        return {peer: compact_folders(folders) for peer, folders in work.items()}


class Arrivals:
    """Tells a file Unison delivered from a local change: Unison writes ``.unison.NAME.*.unison.tmp`` and
    renames it into place, so an IN_MOVED_TO whose IN_MOVED_FROM was such a name arrived from a peer."""

    def __init__(self) -> None:
        self._cookies: dict[int, float] = {}

    def arrived(self, mask: int, cookie: int, name: str, now: float) -> bool:
        if mask & IN_MOVED_FROM and name.startswith(UNISON_TEMP_PREFIX) and cookie:
            self._cookies = {c: t for c, t in self._cookies.items() if now - t < 60} | {cookie: now}
            return False
        return bool(mask & IN_MOVED_TO and self._cookies.pop(cookie, None) is not None)


# ---- the edges -------------------------------------------------------------------------------------


class Edges(PeerQueue):
    """Pulls of changed paths, one worker per busy edge, at most ``concurrency`` pulls at once; a busy,
    failed or unreachable pull is tried ``retries`` more times."""

    def __init__(self, config: Config, retries: int, on_result: Any) -> None:
        super().__init__()
        self.config = config
        self.retries = retries
        self.on_result = on_result
        self._slots = threading.Semaphore(config.concurrency)
        self._unison = threading.BoundedSemaphore(config.concurrency)  # Unison runs of all pulls together
        self._peers = {peer.name: peer for peer in config.peers}

    def handle(self, peer: str, folders: Mapping[str, set[str] | None]) -> None:
        self.pull(peer, compact_folders(folders))

    def pull(self, peer: str, paths: Mapping[str, list[str] | None]) -> str:
        """Pull now (a relay's pull, outside the per-edge queue), tried again while busy or failing; the
        last run's result kind."""
        result: Mapping[str, Any] = {"result": "failed"}
        if peer not in self._peers:
            return "failed"
        for attempt in range(self.retries + 1):
            with self._slots:
                result = self._sync(peer, paths)
            self.on_result(peer, result)
            if result["result"] not in RETRY_KINDS or attempt == self.retries:
                break
            time.sleep(retry_pause(attempt))
        return str(result["result"])

    def _sync(self, peer: str, paths: Mapping[str, list[str] | None]) -> dict[str, Any]:
        return PathRunner(self.config, paths, self._unison)._sync_edge_safely(self._peers[peer])


# ---- the watcher -----------------------------------------------------------------------------------


class Watcher:
    def __init__(self, config: Config, config_path: str, options: Mapping[str, Any]) -> None:
        self.config = config
        self.config_path = config_path
        self.options = {**WATCHER_DEFAULTS, **options}
        self.state = watch_dir(config.state_dir)
        self.record: dict[str, Any] = {
            "pid": os.getpid(),
            "node": config.node,
            "started": iso_utc(time.time()),
            "forward": bool(self.options["forward"]),
            "settle": bool(self.options["settle"]) and not self.options["forward"],
            "delay": self.options["delay"],
            "last_event": None,
            "last_sync": None,
            "last_result": None,
            "syncs": 0,
        }
        self.edges = Edges(config, int(self.options["retries"]), self._on_result)
        self.notifier = Notifier(config, int(self.options["retries"]), self._on_sent)
        self.acks, self.rate = Acks(), Rate()
        self._relays = threading.BoundedSemaphore(MAX_RELAYS)
        # The peers a relay may involve (a new mesh.json restarts the watcher, so this never goes stale).
        self.active = sorted(p.name for p in config.peers if p.active)
        self._record_lock = threading.Lock()
        self._stop = False
        self._mounts_changed = False  # a disk inside a folder was unmounted (IN_UNMOUNT)
        # A peer's notices land in its jail's notice directory: directory -> peer.
        self.notice_dirs = {p.notify_dir: p.name for p in config.peers if p.active and p.notify_dir}

    def _on_result(self, peer: str, result: Mapping[str, Any]) -> None:
        with self._record_lock:
            self.record.update(last_sync=iso_utc(time.time()), last_result=f"{peer}: {result['result']}")
            self.record["syncs"] += 1
            self._write_record()
            write_metrics(self.config)

    def _on_sent(self, peer: str, ok: bool, error: str) -> None:
        with self._record_lock:
            self.record["last_notice"] = iso_utc(time.time())
            self.record["notices_sent" if ok else "notices_failed"] = (
                self.record.get("notices_sent" if ok else "notices_failed", 0) + 1
            )
        if not ok:
            self.note(f"notice to {peer} not delivered: {error or 'ssh failed'}")

    def take_notice(self, path: str) -> None:
        """A peer told us what changed there: pull those paths from it (nothing else is ever done). A relay
        header asks us to pass them on after (mesh_relay); an ack answers one of our relays."""
        peer = self.notice_dirs.get(os.path.dirname(path))
        data = read_notice(path)
        if peer is None or data is None:
            return
        headers = notice_headers(data)
        for header in headers:
            ack = parse_ack(header)
            if ack is not None:
                self.acks.put(peer, *ack)
        folders = parse_notice(data, [f.name for f in self.config.folders])
        if not folders:
            return
        for header in headers:
            asked = parse_relay(header, self.active, self.config.node)
            if asked is not None and self._relays.acquire(blocking=False):
                threading.Thread(target=self.pass_on, args=(peer, asked, folders), daemon=True).start()
                return
        self.edges.submit({peer: folders})

    def pass_on(self, parent: str, asked: Relay, folders: Mapping[str, list[str] | None]) -> None:
        """A relay's child: pull from the parent (else from the origin, if it is an active peer), say so,
        then tell our share."""
        try:
            paths = compact_folders(folders)
            result = self.edges.pull(parent, paths)
            if result not in HELD_KINDS and asked.origin != parent and asked.origin in self.active:
                result = self.edges.pull(asked.origin, paths)
            held = result in HELD_KINDS
            self.notifier.deliver(parent, {}, ack_header(asked.id, held))
            if held and asked.to:
                self.spread(asked, paths)
        finally:
            self._relays.release()

    def spread(self, job: Relay, paths: Mapping[str, list[str] | None]) -> None:
        def send(peer: str, what: Mapping[str, list[str] | None], header: dict[str, Any]) -> bool:
            return self.notifier.deliver(peer, what, header)

        told = relay(job, paths, send, self.acks, self.rate, self.note)
        with self._record_lock:
            self.record["relays"] = self.record.get("relays", 0) + 1
            self.record["last_relay"] = {"id": job.id, "origin": job.origin, "told": told}
            self._write_record()

    def submit_changes(self, batch: Batch) -> None:
        """The peers told of a batch: all at once, or, for a large one in a full mesh, as a swarm; and, in
        a full mesh, what arrived to the peers that settle it (targets)."""
        forward = bool(self.options["forward"])
        work = batch.plan(self.config.peers, forward)
        active = self.active
        minimum = int(self.options["swarm_min_mib"]) << 20
        settle: dict[str, dict[str, list[str] | None]] = {}
        if not forward and self.options["settle"] and batch.arrived:
            settle = batch.plan(self.config.peers, forward, self.config.node)
            if (
                settle
                and minimum
                and batch_bytes(self.config.folders, next(iter(settle.values()))) >= minimum
            ):
                settle = {}  # a swarm's batch: its no-op pulls would compete with the swarm's transfers
        plans = list(work.values())
        uniform = len(plans) == len(active) and all(plan == plans[0] for plan in plans)
        if minimum and not forward and len(active) >= 3 and uniform:
            size = batch_bytes(self.config.folders, plans[0])
            if size >= minimum:
                job = Relay(new_id(), self.config.node, size, tuple(active))
                threading.Thread(target=self.spread, args=(job, plans[0]), daemon=True).start()
                work = {}
        if work or settle:
            self.notifier.submit(merge_plans(work, settle))  # one notice a peer

    def watch_notices(self) -> None:
        """Read the peers' notices as they come (a thread of its own: a pull starts without waiting for
        this node's own debounce)."""
        inotify = Inotify(skip=lambda _path: True)  # the notice directories alone, never below them
        try:
            for directory in self.notice_dirs:
                with contextlib.suppress(OSError):
                    inotify.add_tree(directory)
                for path in pending_notices(directory):
                    self.take_notice(path)
            while not self._stop:
                for event in inotify.read(1.0):
                    if event.mask & (IN_CLOSE_WRITE | IN_MOVED_TO) and not event.is_dir:
                        self.take_notice(event.path)
        finally:
            inotify.close()

    def _write_record(self) -> None:
        self.record["heartbeat"] = iso_utc(time.time())
        write_json_atomic(self.state / "watcher.json", self.record)

    def _folder_of(self, path: str) -> tuple[Folder, str] | None:
        for folder in self.config.folders:
            if path == folder.path or path.startswith(folder.path.rstrip("/") + "/"):
                return folder, path[len(folder.path) :].strip("/")
        return None

    def _skip_dir(self, path: str) -> bool:
        found = self._folder_of(path)
        return found is None or ignored(found[1], self.config.marker, found[0].ignore)

    def run(self) -> int:
        Runner(self.config).prepare()
        self.state.mkdir(mode=0o750, parents=True, exist_ok=True)
        config_mtime = os.stat(self.config_path).st_mtime
        inotify = Inotify(skip=self._skip_dir)
        for folder in self.config.folders:
            inotify.add_tree(folder.path)
        self.record["watches"] = inotify.watches
        with self._record_lock:
            self._write_record()
        write_metrics(self.config)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))
        threading.Thread(target=self.watch_notices, daemon=True).start()
        arrivals, batch = Arrivals(), Batch()
        delay, max_delay = float(self.options["delay"]), float(self.options["max_delay"])
        next_beat = time.monotonic() + HEARTBEAT_S
        mounts, next_mounts = self._inner_mounts(), time.monotonic() + IDLE_WAKE_S
        while not self._stop:
            now = time.monotonic()
            due = batch.due(delay, max_delay) if batch else now + IDLE_WAKE_S
            timeout = max(due - now, 0.01)
            for event in inotify.read(timeout):
                self._collect(event, arrivals, batch)
            now = time.monotonic()
            if batch.ready(now, delay, max_delay):
                self.submit_changes(batch)
                batch = Batch()
            if now >= next_beat:
                next_beat = now + HEARTBEAT_S
                with self._record_lock:
                    self._write_record()
            if self._mounts_changed or now >= next_mounts:
                mounts, next_mounts = self._rewatch(inotify, mounts, batch), now + IDLE_WAKE_S
            if not batch and os.stat(self.config_path).st_mtime != config_mtime:
                self.note("mesh.json changed: restarting with the new peers")
                break
            if not batch and not all(inotify.watching(f.path) for f in self.config.folders):
                # The folder itself was removed or moved: start again (and watch it anew) when it is back.
                self.note("a folder is gone: restarting")
                self._stop = True
                inotify.close()
                return 1
        self._stop = True
        inotify.close()
        return 0

    def _inner_mounts(self) -> dict[str, list[str]]:
        points = mount_points(read_mountinfo())
        return {folder.name: mounts_inside(folder.path, points) for folder in self.config.folders}

    def _rewatch(self, inotify: Inotify, before: dict[str, list[str]], batch: Batch) -> dict[str, list[str]]:
        """Watch anew a folder where a disk was mounted or unmounted (its watches went with it, and a mount
        raises no event); after a mount, what the disk holds is announced whole. An unmount is never a change
        to sync: the disk's guard (mesh_disks) holds the folder until it is back."""
        self._mounts_changed = False
        now_mounted = self._inner_mounts()
        for folder in self.config.folders:
            if now_mounted[folder.name] != before.get(folder.name):
                inotify.add_tree(folder.path)
                if set(now_mounted[folder.name]) - set(before.get(folder.name, [])):
                    batch.overflow(folder.name, time.monotonic())
                self.note(f"folder {folder.name}: disks inside it now {now_mounted[folder.name] or 'none'}")
        return now_mounted

    def _collect(self, event: Any, arrivals: Arrivals, batch: Batch) -> None:
        now = time.monotonic()
        if event.mask & IN_UNMOUNT:
            self._mounts_changed = True
            return
        if event.mask & IN_Q_OVERFLOW:
            for folder in self.config.folders:
                batch.overflow(folder.name, now)
            return
        found = self._folder_of(event.path)
        if found is None:
            return
        folder, rel = found
        arrived = arrivals.arrived(event.mask, event.cookie, os.path.basename(rel), now)
        if ignored(rel, self.config.marker, folder.ignore):
            return  # also the folder's own attributes (rel "")
        batch.add(folder.name, rel, arrived, now)
        with self._record_lock:
            self.record["last_event"] = iso_utc(time.time())

    def note(self, message: str) -> None:
        Runner(self.config).note(f"watcher: {message}")


def write_metrics(config: Config) -> None:
    """The node's textfile, now with the watcher's state; a failure to write it stops no sync."""
    with contextlib.suppress(OSError):
        Runner(config).write_metrics()


def load_options(path: str) -> dict[str, Any]:
    """The watcher's settings (/etc/replimesh/watch.json, the role's); missing file: the defaults."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return dict(WATCHER_DEFAULTS)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a JSON object")
    options = {**WATCHER_DEFAULTS, **{k: v for k, v in data.items() if k in WATCHER_DEFAULTS}}
    for key in ("delay", "max_delay"):
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 60:
            raise ConfigError(f"{path}: {key} must be a number of seconds in (0, 60] (got {value!r})")
    for key in ("forward", "settle"):
        if not isinstance(options[key], bool):
            raise ConfigError(f"{path}: {key} must be true or false")
    swarm = options["swarm_min_mib"]
    if isinstance(swarm, bool) or not isinstance(swarm, int) or not 0 <= swarm <= 1 << 20:
        raise ConfigError(f"{path}: swarm_min_mib must be a whole number of MiB, 0 for never (got {swarm!r})")
    retries = options["retries"]
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 20:
        raise ConfigError(f"{path}: retries must be 0..20 (got {retries!r})")
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replimesh-watch", description="Sync changed paths over this node's edges as they change."
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the node's mesh file (written by Ansible)")
    parser.add_argument("--options", default=DEFAULT_OPTIONS, help="the watcher's settings (JSON)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--start", action="store_true", help="start the supervisor in the background")
    which.add_argument("--stop", action="store_true", help="stop the supervisor and its watcher")
    which.add_argument("--supervise", action="store_true", help="run the watcher, restarting it (foreground)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.start or args.stop or args.supervise:
        return mesh_supervise.main(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args.config)
        options = load_options(args.options)
    except ConfigError as exc:
        print(f"replimesh-watch: bad config: {exc}", file=sys.stderr)
        return 2
    supervisor = os.environ.get("REPLIMESH_SUPERVISOR", "")
    if supervisor:  # started by the supervisor's loop: end with it, and not at all if it is gone already
        mesh_supervise.die_with_parent()
        if str(os.getppid()) != supervisor:
            return 0
    try:
        return Watcher(config, args.config, options).run()
    except OSError as exc:
        print(f"replimesh-watch: {exc}", file=sys.stderr)
        return 1
