"""The sync runner on each node: run Unison for this node's edges, in parallel, and record the results.

Installed by the mesh_sync role as ``replimesh_node`` (beside ``mesh_edgerecord``) and started by
``/usr/local/sbin/replimesh-sync``; Debian's python3 with the standard library only, no Ansible.

The peer list comes from one root-owned file written by the control node (``/etc/replimesh/mesh.json``);
the node never learns peers from anywhere else. Every run *pulls*: per peer and folder it runs
``[unison, PROFILE]`` with PROFILE ``{peer}--{folder}``, the root-owned profile the control node wrote
(roots, ssh options, prefer/copyonconflict, mountpoint, ignores, backups, and ``noupdate``/``nodeletion``/
``nocreation`` on the peer's root): this node's own client writes this node's disk, never the peer's. A
change made here reaches a peer when that peer pulls. A round pulls from every active peer.

The mass-deletion brake: each pull first runs with ``-nodeletion`` on the local root too. Deletions it
held back are applied by a second run of only those paths when they stay within ``max_deletions``
(a count, or a share of the folder's files; a share never stops 10 deletions or fewer); otherwise the
edge stops as ``brake``, nothing deleted, until ``--allow-deletions``.

An edge's folders are pulled at once (each folder is its own Unison run with its own archive), so an edge
waits for its slowest folder, not for the sum; at most ``concurrency`` Unison runs of a runner (edges and
folders together) run at any time. A round that brought anything here ends by pulling those paths once
more from every peer whose edge ran fine, so each edge records them (settling, mesh_pathrun).

Before each run the edge's Unison directory (where the peer's login writes its archive) is cleared of
whatever Unison itself never makes there: links not root's, directories, FIFOs, hard links.

Exit codes: 0 every edge ok/conflict/skipped/busy; 1 some edge failed (failed, unreachable, timeout,
hostkey, marker, brake); 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pwd
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .mesh_cleanup import TEMP_RE, clean_stale_temps, due
from .mesh_disks import disk_problem, read_mountinfo
from .mesh_edgerecord import (
    ARCHIVE_MISSING_TEXT,
    HARMLESS_KINDS,
    LOST_TEXT,
    UnisonRun,
    iso_utc,
    merge_status,
    not_run,
    output_lines,
    parse_unison_output,
    render_table,
    summarize,
    worst_kind,
)
from .mesh_localignore import LocalIgnoreError, ignore_args
from .mesh_locks import LOCKED_TEXT, locked_error, recover_stale_locks
from .mesh_metrics import render_metrics
from .mesh_names import LOGIN_RE, NAME_RE, Folder
from .mesh_prune import RETIRED, prune
from .mesh_schedule import ScheduleError, longest_gap_s
from .mesh_watchstate import watcher_up

DEFAULT_CONFIG = "/etc/replimesh/mesh.json"
SCHEDULED_RECORD = "scheduled.json"  # in the state directory
DEFAULTS: dict[str, Any] = {
    "concurrency": 4,
    "timeout": 3600,
    "connect_timeout": 10,
    "marker": ".replimesh-folder",
    "unison": "/usr/bin/unison",
    "unison_dir": "/var/lib/replimesh/unison",
    "state_dir": "/var/lib/replimesh/state",
    "log_file": "/var/log/replimesh/sync.log",
    # metrics_file: default {state_dir}/metrics/replimesh.prom (see parse_config)
}
CLEANUP_EVERY_S = 3600.0  # how often a node looks for stale Unison temporary entries in its folders
KILL_GRACE_S = 5.0  # between SIGTERM and SIGKILL of a timed-out Unison's process group
LOG_TAIL_LINES = 20
# Both ends of an edge pull at times (a round runs every node at once), and Unison locks the edge's
# archives on both hosts for a run: a pull that finds them locked waits and tries again, a bounded number
# of times (about 25 s in all, with jitter so the two ends do not meet again).
LOCK_RETRIES = 8
LOCK_BACKOFF_S = (0.2, 4.0)
DEFAULT_MAX_DELETIONS = "50%"
NOTICE_MAX_AGE_S = 600.0
BRAKE_FLOOR = 10  # a percentage brake never stops a pull of this many deletions or fewer
MAX_DELETIONS_RE = re.compile(r"[0-9]{1,9}|(?:100|[0-9]{1,2})%")
DIR_MODE = 0o750
# node_exporter (another user) reads the metrics textfile.
METRICS_DIR_MODE = 0o755
METRICS_FILE_MODE = 0o644


class ConfigError(Exception):
    """The node's mesh.json is missing or malformed; the message names the key."""


class UsageError(Exception):
    """The command line asks for something the configuration does not have."""


@dataclass(frozen=True)
class Peer:
    name: str
    address: str
    port: int
    initiator: bool
    # False while the edge is being set up (a joining node is seeded first): trusted, but not synced
    # unless named with --peer.
    active: bool = True
    # Where this peer's change notices land here (its jail's notice directory; watch mode).
    notify_dir: str = ""


@dataclass(frozen=True)
class Config:
    node: str
    user: str
    folders: tuple[Folder, ...]
    peers: tuple[Peer, ...]
    concurrency: int
    timeout: float
    connect_timeout: int
    marker: str
    unison: str
    unison_dir: str
    state_dir: str
    log_file: str
    metrics_file: str = ""
    # The name this node logs in as on its peers (each peer jails it on its own); the user if unset.
    login: str = ""
    max_deletions: str = DEFAULT_MAX_DELETIONS
    # ssh's options for this node's connections to its peers (key, pinned host keys, timeouts): the
    # profiles' sshargs, for the watcher's change notices.
    ssh_options: tuple[str, ...] = ()
    # The versions Unison keeps (BACKUP_DIR/FOLDER) and their bounds (mesh_prune; 0: no bound).
    backup_dir: str = ""
    backups_max_age_days: int = 0
    backups_max_percent: int = 0


def _require(valid: bool, where: str, what: str, value: object) -> None:
    if not valid:
        raise ConfigError(f"{where}: must be {what} (got {value!r})")


def _name(value: object, where: str) -> str:
    _require(isinstance(value, str) and bool(NAME_RE.fullmatch(value)), where, "a-z, 0-9, '_', '-'", value)
    return str(value)


def _abs_path(value: object, where: str) -> str:
    valid = isinstance(value, str) and value.startswith("/") and "\x00" not in value
    _require(valid, where, "an absolute path", value)
    return str(value)


def _positive(value: Any, where: str, types: type | tuple[type, ...] = int) -> Any:
    # bool is an int in Python; a JSON true here is a mistake, not 1.
    valid = isinstance(value, types) and not isinstance(value, bool) and value > 0
    _require(valid, where, "a positive number", value)
    return value


def _items(value: object, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list (got {value!r})")
    for i, item in enumerate(value):
        _require(isinstance(item, Mapping), f"{where}[{i}]", "an object", item)
    return value


def parse_config(data: object) -> Config:
    """Validate the loaded mesh.json. Unknown keys are ignored: the role may add keys for other tools."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"must be a JSON object (got {type(data).__name__})")
    top = {**DEFAULTS, **data}
    for key in ("node", "folders", "peers"):
        _require(key in top, key, "present", None)
    node = _name(top["node"], "node")
    folders = []
    for i, item in enumerate(_items(top["folders"], "folders")):
        ignore = item.get("ignore") or []
        valid = isinstance(ignore, list) and all(isinstance(pattern, str) for pattern in ignore)
        _require(valid, f"folders[{i}].ignore", "a list of patterns", ignore)
        name, path = _name(item.get("name"), f"folders[{i}].name"), item.get("path")
        folders.append(Folder(name, _abs_path(path, f"folders[{i}].path"), tuple(ignore)))
    _require(bool(folders), "folders", "a non-empty list", top["folders"])
    peers = []
    for i, item in enumerate(_items(top["peers"], "peers")):
        name, address = _name(item.get("name"), f"peers[{i}].name"), item.get("address")
        port, initiator = item.get("port", 22), item.get("initiator", False)
        active, notify_dir = item.get("active", True), item.get("notify_dir", "")
        if notify_dir:
            _abs_path(notify_dir, f"peers[{i}].notify_dir")
        _require(name != node, f"peers[{i}].name", "another node than this one", name)
        _require(isinstance(address, str) and bool(address), f"peers[{i}].address", "an address", address)
        valid_port = isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536
        _require(valid_port, f"peers[{i}].port", "a port 1-65535", port)
        _require(isinstance(initiator, bool), f"peers[{i}].initiator", "true or false", initiator)
        _require(isinstance(active, bool), f"peers[{i}].active", "true or false", active)
        peers.append(Peer(name, address, port, initiator, active, notify_dir))
    for what, names in (("folders", [f.name for f in folders]), ("peers", [p.name for p in peers])):
        dupes = sorted({n for n in names if names.count(n) > 1})
        _require(not dupes, what, "uniquely named", dupes)
    marker = top["marker"]
    valid = isinstance(marker, str) and marker not in ("", ".", "..") and "/" not in marker
    _require(valid, "marker", "a plain file name", marker)
    user = top.get("user", "replimesh")
    _require(isinstance(user, str) and bool(LOGIN_RE.fullmatch(user)), "user", "a user name", user)
    login = top.get("login", user)
    _require(isinstance(login, str) and bool(LOGIN_RE.fullmatch(login)), "login", "a user name", login)
    ssh_options = top.get("ssh_options", [])
    valid = isinstance(ssh_options, list) and all(isinstance(o, str) for o in ssh_options)
    _require(valid, "ssh_options", "a list of strings", ssh_options)
    bounds = {key: top.get(key, 0) for key in ("backups_max_age_days", "backups_max_percent")}
    for key, value in bounds.items():
        top_value = 36500 if key == "backups_max_age_days" else 100
        valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top_value
        _require(valid, key, f"a whole number 0-{top_value} (0: no bound)", value)
    backup_dir = top.get("backup_dir", "")
    if backup_dir:
        _abs_path(backup_dir, "backup_dir")
    brake = top.get("max_deletions", DEFAULT_MAX_DELETIONS)
    valid = isinstance(brake, str) and bool(MAX_DELETIONS_RE.fullmatch(brake))
    _require(valid, "max_deletions", "a count such as '100' or a percentage such as '50%'", brake)
    return Config(
        node=node,
        user=user,
        login=login,
        max_deletions=brake,
        ssh_options=tuple(ssh_options),
        backup_dir=backup_dir,
        **bounds,
        folders=tuple(folders),
        peers=tuple(peers),
        concurrency=_positive(top["concurrency"], "concurrency"),
        timeout=_positive(top["timeout"], "timeout", (int, float)),
        connect_timeout=_positive(top["connect_timeout"], "connect_timeout"),
        marker=marker,
        unison=_abs_path(top["unison"], "unison"),
        unison_dir=_abs_path(top["unison_dir"], "unison_dir"),
        state_dir=_abs_path(top["state_dir"], "state_dir"),
        log_file=_abs_path(top["log_file"], "log_file"),
        metrics_file=_abs_path(
            top.get("metrics_file", f"{top['state_dir']}/metrics/replimesh.prom"), "metrics_file"
        ),
    )


def load_config(path: str) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"not valid JSON: {exc}") from exc
    return parse_config(data)


def profile_name(peer: str, folder: str) -> str:
    """The profile written for an edge and folder: ``{unison_dir}/{peer}/{peer}--{folder}.prf``."""
    return f"{peer}--{folder}"


def edge_dir(config: Config, peer: str) -> str:
    """Each edge has its own Unison directory (profiles and archives): removing an edge removes them."""
    return f"{config.unison_dir}/{peer}"


def remote_root(config: Config, peer: Peer, folder: Folder) -> str:
    """The peer's root, written exactly as the profile writes it."""
    host = f"[{peer.address}]" if ":" in peer.address else peer.address
    return f"ssh://{config.login or config.user}@{host}:{peer.port}/{folder.path}"


def ssh_argv(config: Config, peer: Peer, *args: str) -> list[str]:
    """ssh to the peer's jailed login as the profiles' pulls do (pinned host key, batch mode, the shared
    connection); ``args`` go before the destination, a remote command after it."""
    host = f"[{peer.address}]" if ":" in peer.address else peer.address
    return [
        "ssh", *config.ssh_options, "-o", f"HostKeyAlias={peer.name}", "-p", str(peer.port), *args,
        f"{config.login or config.user}@{host}",
    ]  # fmt: skip


def drop_shared_connection(config: Config, peer: Peer) -> bool:
    """Tell this node's shared ssh connection to the peer to take no new session (``ssh -O stop``; the
    sessions under way finish): the next pull or notice opens a fresh one. For a connection the peer's end
    no longer serves (its jail rebuilt, this node re-added). False when there was none to stop."""
    if not any(option.startswith("ControlPath=") for option in config.ssh_options):
        return False
    try:
        proc = subprocess.run(
            ssh_argv(config, peer, "-O", "stop"), capture_output=True, timeout=10, check=False,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def select_peers(config: Config, names: Sequence[str], all_peers: bool = False) -> list[Peer]:
    """By default every active peer: a node pulls from each (``all_peers`` is the same, kept for scripts)."""
    if names:
        known = {peer.name for peer in config.peers}
        if unknown := [name for name in names if name not in known]:
            raise UsageError(
                f"unknown peer {', '.join(unknown)}: this node's peers are "
                f"{', '.join(sorted(known)) or '(none)'}"
            )
        return [peer for peer in config.peers if peer.name in names]
    return [peer for peer in config.peers if peer.active]


def deletion_limit(max_deletions: str, files: int) -> int:
    """How many deletions one pull may make in a folder of ``files`` files."""
    if max_deletions.endswith("%"):
        return max(BRAKE_FLOOR, files * int(max_deletions[:-1]) // 100)
    return int(max_deletions)


def count_files(root: str, rels: Sequence[str] = ("",), marker: str = "") -> int:
    """Regular files at or below each path (relative to ``root``), links not followed; the marker aside, and
    Unison's temporary entries too: a directory copy left behind by a refused rename (two edges delivering
    the same new directory) holds a second copy of every file, and counting it would double the brake's
    limit."""
    total = 0
    for rel in rels:
        top = os.path.join(root, rel) if rel else root
        if not os.path.isdir(top) or os.path.islink(top):
            total += int(os.path.lexists(top))
            continue
        for _top, dirs, files in os.walk(top):
            dirs[:] = [name for name in dirs if not TEMP_RE.match(name)]
            total += sum(1 for name in files if not TEMP_RE.match(name))
    if marker and "" in rels and os.path.lexists(os.path.join(root, marker)):
        total -= 1
    return total


def scrub_edge_dir(path: str) -> list[str]:
    """Remove from an edge's Unison directory what Unison never makes there and a peer's login could have
    planted for this node's client to follow: anything not root's that is not a plain, singly linked file
    (links, directories, FIFOs, devices, sockets, hard links). Returns the names removed."""
    removed = []
    try:
        entries = list(os.scandir(path))
    except OSError:
        return removed
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if st.st_uid == 0 or (stat.S_ISREG(st.st_mode) and st.st_nlink == 1):
            continue
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(entry.name)
    return removed


@contextlib.contextmanager
def edge_lock(path: Path) -> Iterator[bool]:
    """Hold the edge's flock while syncing; yields False when another live run holds it.

    A flock dies with its process, so a killed run leaves no stale lock. The descriptor is not inherited
    by Unison (Python opens files close-on-exec), so the lock is exactly the runner's.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _home() -> str:
    # Unison 2.52 stops with "Environment variable HOME not found" even when UNISON is set.
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return "/"


class Runner:
    def __init__(
        self,
        config: Config,
        seed: bool = False,
        allow_deletions: bool = False,
        slots: threading.BoundedSemaphore | None = None,
    ) -> None:
        self.config = config
        # Unison runs at once, edges and folders together (a watcher shares one between its pulls).
        self.slots = slots or threading.BoundedSemaphore(config.concurrency)
        # Seeding a joining node: the peer's version wins every difference, and nothing local is
        # deleted, so an empty or stale folder neither deletes nor conflicts anything.
        self.seed = seed
        # An operator allowed, once, the deletions the brake stopped.
        self.allow_deletions = allow_deletions
        # Whether deletions the brake held (within its limit) are applied by a second run; a settling run
        # (mesh_pathrun) leaves them to the next round.
        self.apply_held = True
        self.state = Path(config.state_dir)
        self._log_lock = threading.Lock()
        # folder -> paths this runner's pulls brought here (a round settles them: mesh_pathrun).
        self.pulled: dict[str, set[str]] = {}
        # A minimal, fixed environment: the profile names everything else (key, known_hosts, options).
        # UNISONLOCALHOSTNAME pins the archive names to the mesh name, whatever the host is called.
        self.env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": _home(),
            "UNISONLOCALHOSTNAME": config.node,
        }

    def prepare(self) -> None:
        for directory in (self.state / "status", self.state / "locks", Path(self.config.log_file).parent):
            directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    def command(self, peer: Peer, folder: Folder) -> list[str]:
        argv = [self.config.unison, profile_name(peer.name, folder.name), *ignore_args(folder.path)]
        if self.seed:
            argv += ["-force", remote_root(self.config, peer, folder), "-nodeletion", folder.path]
        return argv

    def run_unison(self, argv: list[str], unison_dir: str) -> tuple[str, int, bool]:
        """Run Unison with the edge's own UNISON dir, again while the edge's archives are locked by a live
        run of the other direction (bounded); returns (merged output, exit code, timed out)."""
        for _attempt in range(LOCK_RETRIES):
            scrubbed = scrub_edge_dir(unison_dir)
            if scrubbed:
                self.note(
                    f"{unison_dir}: removed what Unison never makes there: {', '.join(sorted(scrubbed))}"
                )
            output, code, timed_out = self._run_once(argv, unison_dir)
            if timed_out or LOCKED_TEXT not in output:
                break
            time.sleep(random.uniform(*LOCK_BACKOFF_S))
        return output, code, timed_out

    def _run_once(self, argv: list[str], unison_dir: str) -> tuple[str, int, bool]:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one stream keeps ssh's and Unison's lines in order
            env={**self.env, "UNISON": unison_dir},
            cwd="/",
            start_new_session=True,  # its own process group: a timeout kills Unison and its ssh together
        )
        try:
            out, _err = proc.communicate(timeout=self.config.timeout)
            return out.decode("utf-8", "replace"), proc.returncode, False
        except subprocess.TimeoutExpired:
            return self._kill_group(proc), proc.returncode, True

    def _kill_group(self, proc: subprocess.Popen[bytes]) -> str:
        partial = b""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                out, _err = proc.communicate(timeout=KILL_GRACE_S)
                return out.decode("utf-8", "replace")
            except subprocess.TimeoutExpired as exc:
                partial = exc.output or partial
        # Something that left the group still holds the pipe: stop reading rather than wait for it.
        if proc.stdout:
            proc.stdout.close()
        proc.wait()
        return partial.decode("utf-8", "replace")

    def sync_folder(self, peer: Peer, folder: Folder) -> UnisonRun:
        output = ""
        if not (Path(folder.path) / self.config.marker).exists():
            # An unmounted disk or an emptied folder must never be synced: Unison would propagate the
            # loss to every peer. (The profile's mountpoint makes Unison check the remote side too.)
            run = not_run(
                "marker",
                f"folder {folder.path} has no {self.config.marker}: not mounted or emptied? refusing to sync",
            )
        elif problem := disk_problem(folder.path, self.config.marker, read_mountinfo()):
            run = not_run("marker", problem)  # a disk inside the folder: the same guard, one level down
        else:
            try:
                with self.slots:
                    run, output = self.pull(peer, folder)
            except LocalIgnoreError as exc:
                run = not_run("failed", f"{exc}: nothing pulled into {folder.name} until it is fixed")
            except OSError as exc:
                run = not_run("failed", f"cannot run {self.config.unison}: {exc.strerror or exc}")
        run = replace(run, folder=folder.name)
        self.log(peer.name, run, output)
        if run.pulled:
            with self._log_lock:
                self.pulled.setdefault(folder.name, set()).update(run.pulled)
        return run

    @property
    def braked(self) -> bool:
        return not (self.seed or self.allow_deletions)

    def first_command(self, peer: Peer, folder: Folder) -> list[str]:
        """A pull's first run: every change but deletions while the brake holds."""
        argv = self.command(peer, folder)
        return [*argv, "-nodeletion", folder.path] if self.braked else argv

    def pull(self, peer: Peer, folder: Folder) -> tuple[UnisonRun, str]:
        """One pull of a folder, deletions braked: first every change but deletions, then the deletions it
        held back (only those paths) when they are within the limit; returns (result, output)."""
        argv = self.command(peer, folder)
        run, output = self._run(peer, self.first_command(peer, folder))
        if not (self.braked and run.ok and run.held and self.apply_held):
            return run, output
        deleting = count_files(folder.path, run.held)
        limit = deletion_limit(self.config.max_deletions, count_files(folder.path, marker=self.config.marker))
        if deleting > limit:
            error = (
                f"brake: this pull would delete {deleting} files of {folder.name} (max_deletions "
                f"{self.config.max_deletions}: {limit}); nothing deleted. Allow it once with "
                f"`meshctl sync --allow-deletions {self.config.node}`"
            )
            return replace(run, kind="brake", ok=False, error=error), output
        paths = [arg for held in run.held for arg in ("-path", held)]
        second, more = self._run(peer, [*argv, *paths, "-confirmbigdel=false"])
        merged = replace(
            second, transferred=run.transferred + second.transferred, pulled=run.pulled + second.pulled
        )
        if second.ok and run.kind == "conflict":
            merged = replace(merged, kind="conflict", conflicts=run.conflicts + second.conflicts)
        return merged, f"{output}\n{more}"

    def _run(self, peer: Peer, argv: list[str]) -> tuple[UnisonRun, str]:
        directory = edge_dir(self.config, peer.name)
        output, code, timed_out = self.run_unison(argv, directory)
        if ARCHIVE_MISSING_TEXT in output and not timed_out:
            # One end lost its archive of the edge: run once as a first sync (-ignorearchives), which
            # deletes nothing and keeps both versions of a file changed on both ends; the archives that
            # run writes are whole again on both ends.
            self.note(f"edge {peer.name}: an archive was missing on one end; syncing it as a first sync")
            output, code, timed_out = self.run_unison([*argv, "-ignorearchives"], directory)
        if LOST_TEXT in output and not timed_out and drop_shared_connection(self.config, peer):
            # The shared connection to the peer is there but its end serves no session: once more, fresh.
            self.note(f"edge {peer.name}: the shared ssh connection was lost; pulling over a new one")
            output, code, timed_out = self.run_unison(argv, directory)
        run = parse_unison_output(output, code)
        if locked := locked_error(output, directory):
            run = replace(run, kind=locked[0], ok=False, error=locked[1])
        if timed_out:
            error = f"timed out after {self.config.timeout:g} s: unison and its ssh were killed"
            run = replace(run, kind="timeout", ok=False, error=error)
        return run, output

    def sync_edge(self, peer: Peer, carry: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Sync the edge and record it. With `carry` (this round's result of the edge) it is a settling
        run (mesh_pathrun): its record keeps the round's files and conflicts, and one that could not run
        or failed leaves the round's record as it was."""
        started = time.time()
        status_path = self.state / "status" / f"{peer.name}.json"
        with edge_lock(self.state / "locks" / f"{peer.name}.lock") as held:
            previous = read_json(status_path)
            if not held:
                if carry is not None:
                    return dict(carry)
                # Another run is syncing this edge; its result will be recorded by that run.
                busy = not_run("busy", "another run is syncing this edge now")
                return {**merge_status(previous, peer.name, started, time.time(), [busy]), "folders": []}
            runs = self.sync_folders(peer)
            status = merge_status(previous, peer.name, started, time.time(), runs)
            if carry is not None:
                if not all(run.ok for run in runs):
                    return dict(carry)
                status = carried(carry, status)
            write_json_atomic(status_path, status)
        folders = carry["folders"] if carry is not None else [run.as_dict() for run in runs]
        return {**status, "folders": folders}

    def sync_folders(self, peer: Peer) -> list[UnisonRun]:
        """The edge's folders at once (results in the config's order); each run takes one of the slots."""
        folders = self.config.folders
        if len(folders) == 1 or self.config.concurrency == 1:
            return [self.sync_folder(peer, folder) for folder in folders]
        from concurrent.futures import ThreadPoolExecutor  # here: a lone folder skips its start-up cost

        with ThreadPoolExecutor(max_workers=len(folders)) as pool:
            return list(pool.map(lambda folder: self.sync_folder(peer, folder), folders))

    def log(self, peer: str, run: UnisonRun, output: str) -> None:
        error = json.dumps(run.error) if run.error else "-"
        text = (
            f"{iso_utc(time.time())} peer={peer} folder={run.folder} kind={run.kind} "
            f"transferred={run.transferred} error={error}\n"
        )
        if run.kind != "ok":
            tail = [line for line in output_lines(output) if line.strip()][-LOG_TAIL_LINES:]
            text += "".join(f"    | {line}\n" for line in tail)
        # One write per record, under a lock: parallel edges never interleave within a record.
        with self._log_lock, open(self.config.log_file, "a", encoding="utf-8") as log:
            log.write(text)

    def clean_folders(self) -> None:
        """At most hourly, drop Unison temporary entries older than any live run can be, and the versions
        kept past their bounds (mesh_prune)."""
        for folder in self.config.folders:
            if not (Path(folder.path) / self.config.marker).exists():
                continue  # an unmounted or emptied folder is left alone, as by the sync itself
            if due(self.state / "cleanup" / f"{folder.name}.stamp", CLEANUP_EVERY_S):
                removed = clean_stale_temps(folder.path, self.config.timeout + KILL_GRACE_S * 2)
                if removed:
                    self.note(f"folder {folder.name}: removed {len(removed)} stale Unison temporary entries")
                self.prune_versions(folder.name)
        if self.config.backup_dir and due(self.state / "cleanup" / f"{RETIRED}.stamp", CLEANUP_EVERY_S):
            self.prune_versions(RETIRED)

    def prune_versions(self, name: str) -> None:
        config = self.config
        if not config.backup_dir or not (config.backups_max_age_days or config.backups_max_percent):
            return
        pruned = prune(f"{config.backup_dir}/{name}", config.backups_max_age_days, config.backups_max_percent)
        if pruned.files:
            bounds = [f"kept over {config.backups_max_age_days} days"] if config.backups_max_age_days else []
            bounds += (
                [f"past {config.backups_max_percent}% of the disk"] if config.backups_max_percent else []
            )
            self.note(
                f"versions of {name}: removed {pruned.files} ({pruned.bytes} bytes): {' or '.join(bounds)}"
            )

    def note(self, message: str) -> None:
        with self._log_lock, open(self.config.log_file, "a", encoding="utf-8") as log:
            log.write(f"{iso_utc(time.time())} {message}\n")

    def recover_locks(self) -> None:
        """Remove Unison archive locks that killed runs left, on every edge of this node (see mesh_locks).

        Every edge, not only those this run syncs: a lock a killed server left here blocks the peer's
        runs of the edge, and only this node can remove it."""
        for peer in self.config.peers:
            with contextlib.suppress(OSError), edge_lock(self.state / "locks" / f"{peer.name}.lock") as held:
                removed, _kept = recover_stale_locks(edge_dir(self.config, peer.name)) if held else ([], [])
                if removed:
                    self.note(f"edge {peer.name}: removed stale Unison archive locks {', '.join(removed)}")

    def prune_notices(self) -> None:
        """Change notices nobody read (a peer's, to a node not in watch mode, or left while its watcher was
        down) go after NOTICE_MAX_AGE_S: a peer cannot fill the disk with them."""
        cutoff = time.time() - NOTICE_MAX_AGE_S
        for peer in self.config.peers:
            with contextlib.suppress(OSError), os.scandir(peer.notify_dir or "/nonexistent") as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            (shutil.rmtree if entry.is_dir(follow_symlinks=False) else os.unlink)(entry.path)

    def run(self, peers: Sequence[Peer]) -> list[dict[str, Any]]:
        """Sync the edges, at most `concurrency` at once; results in the order of `peers`."""
        self.clean_folders()
        self.recover_locks()
        self.prune_notices()
        if len(peers) == 1 or self.config.concurrency == 1:
            return [self._sync_edge_safely(peer) for peer in peers]  # no thread pool to start (or import)
        # Imported here: a lone edge (a watch-mode pull, a timed run) skips its start-up cost.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            futures = [pool.submit(self._sync_edge_safely, peer) for peer in peers]
            return [future.result() for future in futures]

    def write_metrics(self) -> Path | None:
        """Render every edge's status file (not only this run's) as the node's Prometheus textfile."""
        if not self.config.metrics_file:
            return None
        records = [
            record
            for path in sorted((self.state / "status").glob("*.json"))
            if (record := read_json(path)) is not None
        ]
        markers = {f.name: (Path(f.path) / self.config.marker).exists() for f in self.config.folders}
        target = Path(self.config.metrics_file)
        target.parent.mkdir(mode=METRICS_DIR_MODE, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # mkdir's mode is cut by the umask; a dir not ours stays as is
            target.parent.chmod(METRICS_DIR_MODE)
        scheduled = read_json(self.state / SCHEDULED_RECORD)
        text = render_metrics(records, markers, watcher_up(self.config.state_dir), scheduled)
        write_text_atomic(target, text, METRICS_FILE_MODE)
        return target

    def _sync_edge_safely(self, peer: Peer) -> dict[str, Any]:
        now = time.time()
        try:
            return self.sync_edge(peer)
        except OSError as exc:  # e.g. the state dir became unwritable: one edge fails, the others go on
            failed = not_run("failed", f"runner error: {exc}")
            return {**merge_status(None, peer.name, now, time.time(), [failed]), "folders": []}


def carried(first: Mapping[str, Any], settling: Mapping[str, Any]) -> dict[str, Any]:
    """An edge's record after a round's run (`first`) and its settling run: the files and conflicts of
    both, the worse result, from the first run's start to the settling run's end."""
    return {
        **{key: value for key, value in settling.items() if key != "folders"},
        "last_start": first["last_start"],
        "result": worst_kind([first["result"], settling["result"]]),
        "files_changed": first["files_changed"] + settling["files_changed"],
        "conflicts": list(dict.fromkeys([*first["conflicts"], *settling["conflicts"]])),
        "error": first.get("error") or settling.get("error"),
        "duration_s": round(first["duration_s"] + settling["duration_s"], 3),
        "first_sync": bool(first.get("first_sync") or settling.get("first_sync")),
    }


def record_scheduled_round(state: Path, schedule: str, period_s: int, now: float) -> None:
    """The scheduler (cron) started a round: when, and the longest wait its schedule allows until the
    next (meshctl status and the metrics say when that has passed twice over: no job is running)."""
    write_json_atomic(
        state / SCHEDULED_RECORD, {"at": iso_utc(now), "schedule": schedule, "period_s": period_s}
    )


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Readers see the old file or the new one, never half of one."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n", 0o640)


def write_text_atomic(path: Path, text: str, mode: int) -> None:
    """Readers see the old file or the new one, never half of one. The temporary file's name starts with
    a dot and ends in .tmp, so node_exporter (which reads only *.prom) never reads a half-written one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def plan(config: Config, peers: Sequence[Peer], seed: bool = False) -> list[dict[str, Any]]:
    """What a run would do, for --dry-run (Ansible's check mode)."""
    runner = Runner(config, seed)
    edges = []
    for peer in peers:
        folders = [
            {
                "folder": f.name,
                "path": f.path,
                "profile": f"{edge_dir(config, peer.name)}/{profile_name(peer.name, f.name)}",
                "command": runner.first_command(peer, f),
            }
            for f in config.folders
        ]
        edges.append({"peer": peer.name, "address": f"{peer.address}:{peer.port}", "folders": folders})
    return edges


def render_plan(node: str, edges: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        f"would pull {edge['peer']} -> {node} folder {folder['folder']}: {' '.join(folder['command'])} "
        f"(profile {folder['profile']})"
        for edge in edges
        for folder in edge["folders"]
    ]
    return "\n".join([*lines, f"{node}: {len(edges)} edges, dry run: nothing was run"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replimesh-sync", description="Sync this node's mesh edges now.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the node's mesh file (written by Ansible)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--peer", action="append", default=[], metavar="NAME", help="sync this edge (repeat)")
    which.add_argument("--all-peers", action="store_true", help="every active peer (the default)")
    parser.add_argument("--delay", type=float, default=0.0, metavar="SECONDS", help="wait first (cron splay)")
    parser.add_argument(
        "--scheduled",
        metavar="CRON",
        help="this is the scheduler's round, on this 5-field schedule: record that it ran (the cron job's)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would run; run and change nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--allow-deletions",
        action="store_true",
        help="apply, this once, deletions the mass-deletion brake (max_deletions) stopped",
    )
    parser.add_argument(
        "--seed",
        action="store_true",
        help="with one --peer: take the peer's version of every file, delete nothing here (joining)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage and 0 for --help: return, don't raise
        return exc.code if isinstance(exc.code, int) else 2
    if args.delay < 0:
        print("replimesh-sync: --delay must not be negative", file=sys.stderr)
        return 2
    try:
        period_s = longest_gap_s(args.scheduled) if args.scheduled is not None else None
    except ScheduleError as exc:
        print(f"replimesh-sync: --scheduled: {exc}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        peers = select_peers(config, args.peer, args.all_peers)
        if args.seed and len(args.peer) != 1:
            raise UsageError("--seed takes exactly one --peer: the node to seed from")
    except ConfigError as exc:
        print(f"replimesh-sync: bad config {args.config}: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"replimesh-sync: {exc}", file=sys.stderr)
        return 2

    if args.dry_run:
        edges = plan(config, peers, args.seed)
        summary = {"edges": len(edges), "files_changed": 0, "conflicts": 0}
        report = {"node": config.node, "dry_run": True, "edges": edges, "summary": summary}
        print(json.dumps(report) if args.json else render_plan(config.node, edges))
        return 0

    time.sleep(args.delay)
    runner = Runner(config, args.seed, args.allow_deletions)
    try:
        runner.prepare()
    except OSError as exc:
        print(f"replimesh-sync: cannot create the state or log directories: {exc}", file=sys.stderr)
        return 2
    if period_s is not None:
        try:
            record_scheduled_round(runner.state, args.scheduled, period_s, time.time())
        except OSError as exc:  # the round itself still runs
            print(f"replimesh-sync: cannot record the scheduled round: {exc}", file=sys.stderr)
    edges = runner.run(peers)
    if runner.pulled and len(peers) > 1:
        from .mesh_pathrun import settle_round  # only after a round that brought something

        edges = settle_round(runner, peers, edges)
    try:
        runner.write_metrics()
    except OSError as exc:  # the sync itself went through: say so, and let the exit code be the edges'
        print(f"replimesh-sync: cannot write the metrics file: {exc}", file=sys.stderr)
    summary = summarize(edges)
    report = {"node": config.node, "edges": edges, "summary": summary}
    print(json.dumps(report) if args.json else render_table(config.node, edges, summary))
    return 0 if all(edge["result"] in HARMLESS_KINDS for edge in edges) else 1
