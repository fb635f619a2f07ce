"""Change notices between watch-mode nodes: a node tells its peers what changed, and each pulls at once.

Every node only ever pulls, so a change made here reaches a peer when that peer runs its own client. In
watch mode the writer does not wait for the peer's next round: it sends a *notice* over the same jailed
login the peer's pulls use (``ssh LOGIN@PEER replimesh-notify``, whose forced command writes the lines to
the jail's ``/notify`` and nothing else), and the peer's watcher, seeing the file appear, pulls exactly
those paths from this node. A notice carries no data and grants nothing: the receiver checks every line
and at worst pulls from that peer, as its cron round would.

A notice is one JSON array a line: ``["FOLDER", "PATH"]`` (PATH relative to the folder; ``""`` means the
whole folder). Its first line may be a JSON object, a header of the swarm's relay (mesh_relay): older nodes
drop it as a line that is not a pair. Installed beside the runner; standard library only.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from .mesh_runner import Config, Peer, drop_shared_connection, ssh_argv

NOTIFY_COMMAND = "replimesh-notify"
MAX_NOTICE_BYTES = 64 * 1024  # the forced command cuts a notice there too (ulimit -f 128)
MAX_NOTICE_LINES = 1000
MAX_PATH_CHARS = 4096

# peer -> folder -> paths (None: the whole folder), as the watcher's Batch.plan and Edges.submit use.
Work = Mapping[str, Mapping[str, "list[str] | None"]]


def add_paths(into: dict[str, set[str] | None], folders: Mapping[str, Iterable[str] | None]) -> None:
    """Add a pull's paths per folder to `into`; a folder whole (None) on either side stays whole."""
    for folder, paths in folders.items():
        if paths is None or (folder in into and into[folder] is None):
            into[folder] = None
        else:
            into.setdefault(folder, set()).update(paths)  # type: ignore[union-attr]


def render_notice(
    folders: Mapping[str, list[str] | None], header: Mapping[str, object] | None = None
) -> bytes:
    """The lines of one notice: the header if any, then every changed path of every folder, or the folder
    alone when whole."""
    lines = [json.dumps(header, sort_keys=True)] if header else []
    for folder, paths in sorted(folders.items()):
        lines += [json.dumps([folder, path]) for path in (paths if paths is not None else [""])]
    return ("\n".join(lines[:MAX_NOTICE_LINES]) + "\n").encode()


def safe_path(path: object) -> str | None:
    """A relative, normalized path inside a folder, or None: a notice never names anything else."""
    if not isinstance(path, str) or len(path) > MAX_PATH_CHARS or "\x00" in path:
        return None
    if path == "":
        return path
    if path.startswith("/") or posixpath.normpath(path) != path or path.split("/")[0] == "..":
        return None
    if any(ord(char) < 0x20 for char in path):
        return None
    return path


def parse_notice(data: bytes, folders: Sequence[str]) -> dict[str, list[str] | None]:
    """folder -> paths to pull (None: the whole folder) from a notice's bytes; bad lines are dropped.

    A folder this node does not sync, a path that leaves the folder, or a line that is not a JSON pair
    counts for nothing; a notice that names no valid path at all asks for nothing.
    """
    found: dict[str, list[str] | None] = {}
    for raw in data[:MAX_NOTICE_BYTES].splitlines()[:MAX_NOTICE_LINES]:
        try:
            item = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if not (isinstance(item, list) and len(item) == 2 and item[0] in folders):
            continue
        path = safe_path(item[1])
        if path is None:
            continue
        if path == "" or found.get(item[0], []) is None:
            found[item[0]] = None
        else:
            found.setdefault(item[0], []).append(path)  # type: ignore[union-attr]
    return found


def notice_headers(data: bytes) -> list[dict[str, object]]:
    """The header objects of a notice's first lines (at most two are read; a pair ends them)."""
    headers: list[dict[str, object]] = []
    for raw in data[:MAX_NOTICE_BYTES].splitlines()[:2]:
        try:
            item = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            break
        if not isinstance(item, dict):
            break
        headers.append(item)
    return headers


def read_notice(path: str) -> bytes | None:
    """A notice file's bytes (at most MAX_NOTICE_BYTES), then the file is gone; None if it is not a plain
    file. Opened without following links and without blocking (a FIFO planted there never hangs us)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        _unlink(path)
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, MAX_NOTICE_BYTES)
    finally:
        os.close(fd)
        _unlink(path)


def _unlink(path: str) -> None:
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def pending_notices(directory: str) -> Iterator[str]:
    """Notice files already waiting (sent while this watcher was not running)."""
    try:
        with os.scandir(directory) as it:
            names = sorted(entry.name for entry in it)
    except OSError:
        return
    for name in names:
        yield os.path.join(directory, name)


def notify_argv(config: Config, peer: Peer) -> list[str]:
    """ssh to the peer's jailed login, as the profiles' pulls do (pinned host key, batch mode)."""
    return [*ssh_argv(config, peer), NOTIFY_COMMAND]


def retry_pause(attempt: int) -> float:
    """Seconds before try ``attempt + 1`` of a failed pull or notice: 0.5, 1, 2, ... at most 8."""
    return min(0.5 * 2**attempt, 8.0)


class PeerQueue:
    """Work per peer (folder -> paths), one worker thread per busy peer: paths for a peer whose work is
    under way wait for its next turn, merged (a whole folder covers its paths). ``handle(peer, folders)``
    does the work; subclasses say what it is (a pull, a notice)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, set[str] | None]] = {}
        self._busy: set[str] = set()

    def submit(self, work: Work) -> None:
        with self._lock:
            for peer, folders in work.items():
                add_paths(self._pending.setdefault(peer, {}), folders)
                if peer not in self._busy:
                    self._busy.add(peer)
                    threading.Thread(target=self._work, args=(peer,), daemon=True).start()

    def idle(self) -> bool:
        with self._lock:
            return not self._busy

    def _work(self, peer: str) -> None:
        while True:
            with self._lock:
                pending = self._pending.pop(peer, {})
                if not pending:
                    self._busy.discard(peer)
                    return
            self.handle(peer, pending)

    def handle(self, peer: str, folders: Mapping[str, set[str] | None]) -> None:
        raise NotImplementedError


class Notifier(PeerQueue):
    """Sends notices; ``on_sent(peer, ok, error)`` reports each send; a failed send is tried ``retries``
    more times (the peer's cron round is the safety net after that)."""

    def __init__(
        self,
        config: Config,
        retries: int,
        on_sent: Callable[[str, bool, str], None],
        run: Callable[[list[str], bytes, float], tuple[int, str]] | None = None,
        drop: Callable[[Config, Peer], bool] = drop_shared_connection,
    ) -> None:
        super().__init__()
        self.config = config
        self.retries = retries
        self.on_sent = on_sent
        self.run = run or _run_ssh
        self.drop = drop
        self._peers = {peer.name: peer for peer in config.peers}

    def handle(self, peer: str, folders: Mapping[str, set[str] | None]) -> None:
        self.deliver(peer, {f: None if p is None else sorted(p) for f, p in folders.items()})

    def deliver(
        self, peer: str, folders: Mapping[str, list[str] | None], header: Mapping[str, object] | None = None
    ) -> bool:
        """Send one notice now (tried ``retries`` more times); whether the peer got it."""
        if peer not in self._peers:
            return False
        data = render_notice(folders, header)
        argv, timeout = notify_argv(self.config, self._peers[peer]), self.config.connect_timeout + 10.0
        for attempt in range(self.retries + 1):
            code, error = self.run(argv, data, timeout)
            self.on_sent(peer, code == 0, error)
            if code == 0:
                return True
            if attempt == self.retries:
                break
            self.drop(self.config, self._peers[peer])  # a stale shared connection: the next try opens one
            threading.Event().wait(retry_pause(attempt))
        return False


def _run_ssh(argv: list[str], data: bytes, timeout: float) -> tuple[int, str]:
    try:
        proc = subprocess.run(
            argv, input=data, capture_output=True, timeout=timeout, check=False,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 255, str(exc)
    return proc.returncode, proc.stderr.decode("utf-8", "replace").strip()[-300:]
