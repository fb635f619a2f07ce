"""Keep the watcher running on a host without systemd (the lab's containers, docker-init).

``replimesh-watch --start`` starts the supervisor in the background unless one runs (prints ``started``
or ``running``); cron runs it every minute, so a supervisor that is gone is back within a minute. The
supervisor holds ``{state_dir}/watch/supervisor.lock`` (flock) for its whole life, so there is only ever
one; it starts the watcher and starts it again about a second after it exits, however it exits (with a
growing pause, up to 30 s, while it keeps failing at once). Once it holds the lock it is a shell loop
(``LOOP``), not Python: an idle node runs one Python process, the watcher. The watcher gets SIGTERM when
its supervisor dies (PR_SET_PDEATHSIG), so a killed supervisor never leaves an orphan watcher behind.
``replimesh-watch --stop`` ends the supervisor and its watcher (prints ``stopped`` or ``not running``).
Where systemd runs, the unit (Restart=always) does all this instead.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .mesh_watchstate import PROCESS_NAME, pid_of, process_matches, read_record, signal_pid, watch_dir

RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
QUICK_EXIT_S = 10.0  # a watcher that ends sooner than this after its start counts as failing
STOP_WAIT_S = 10.0
PR_SET_PDEATHSIG = 1
# The runner's defaults (mesh_runner.DEFAULT_CONFIG, DEFAULTS), repeated so this module stays small.
DEFAULT_CONFIG = "/etc/replimesh/mesh.json"
DEFAULT_OPTIONS = "/etc/replimesh/watch.json"
DEFAULT_STATE_DIR = "/var/lib/replimesh/state"
DEFAULT_LOG_FILE = "/var/log/replimesh/sync.log"


def _lock_path(state_dir: str) -> Path:
    return watch_dir(state_dir) / "supervisor.lock"


def _pid_path(state_dir: str) -> Path:
    return watch_dir(state_dir) / "supervisor.pid"


def _try_lock(path: Path) -> int | None:
    """The locked descriptor, or None when another process holds the lock."""
    # No link followed, no FIFO waited on: root runs --stop in a directory the mesh user writes.
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(path, flags, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def running(state_dir: str) -> bool:
    watch_dir(state_dir).mkdir(mode=0o750, parents=True, exist_ok=True)
    fd = _try_lock(_lock_path(state_dir))
    if fd is None:
        return True
    os.close(fd)
    return False


def next_delay(previous: float, lived: float) -> float:
    """The pause before the next start: short after a watcher that ran a while, growing while it fails."""
    if lived >= QUICK_EXIT_S:
        return RESTART_DELAY_S
    return min(max(previous * 2, RESTART_DELAY_S), MAX_RESTART_DELAY_S)


def die_with_parent() -> None:
    """SIGTERM to this process when its parent dies (the watcher calls it at its start)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# What the supervisor runs once it holds the lock: a shell loop, not Python, so an idle node keeps one
# Python process (the watcher) beside a shell of about a megabyte. Arguments: $0 $1 name it as the entry
# point does (replimesh-watch --supervise: what stop() checks before it signals), then the pid file, the
# log and the watcher's command. The lock is fd 9 (the watcher does not inherit it). The pauses follow
# next_delay(); the watcher learns its supervisor's pid from REPLIMESH_SUPERVISOR and dies with it.
LOOP = r"""
pidfile=$2; log=$3; shift 3
child=; stopping=; delay=0
trap 'stopping=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT
while [ -z "$stopping" ]; do
    started=$(date +%s)
    REPLIMESH_SUPERVISOR=$$ "$@" </dev/null >>"$log" 2>&1 9>&- &
    child=$!
    wait "$child"; code=$?
    while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done
    child=
    [ -n "$stopping" ] && break
    if [ $(( $(date +%s) - started )) -ge {quick} ]; then
        delay={restart}
    else
        delay=$(( delay * 2 ))
        [ "$delay" -lt {restart} ] && delay={restart}
        [ "$delay" -gt {most} ] && delay={most}
    fi
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    echo "$now supervisor: watcher exited with $code; starting it again in $delay s" >>"$log"
    sleep "$delay" &
    pause=$!
    wait "$pause"
    kill "$pause" 2>/dev/null
done
rm -f "$pidfile"
""".format(quick=int(QUICK_EXIT_S), restart=int(RESTART_DELAY_S), most=int(MAX_RESTART_DELAY_S))
LOCK_FD = 9


def supervise(state_dir: str, watcher: Sequence[str], log_file: str) -> int:
    """Become the supervisor of `watcher` for as long as this process lives (the shell loop above, in
    place of this Python process: same pid, the lock kept); 0 at once when another supervisor runs."""
    watch_dir(state_dir).mkdir(mode=0o750, parents=True, exist_ok=True)
    lock = _try_lock(_lock_path(state_dir))
    if lock is None:
        return 0
    _pid_path(state_dir).write_text(f"{os.getpid()}\n", encoding="utf-8")
    if lock != LOCK_FD:
        os.dup2(lock, LOCK_FD)  # inheritable, unlike the descriptor os.open gave
        os.close(lock)
    else:
        os.set_inheritable(lock, True)
    argv = ["/bin/sh", "-c", LOOP, PROCESS_NAME.decode(), "--supervise", str(_pid_path(state_dir)), log_file]
    os.execv("/bin/sh", [*argv, *watcher])


def start_background(state_dir: str, supervisor: Sequence[str]) -> str:
    """Start `supervisor` detached from this process (its own session, no terminal) unless one runs."""
    if running(state_dir):
        return "running"
    subprocess.Popen(
        list(supervisor),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
    )
    deadline = time.monotonic() + STOP_WAIT_S
    while not running(state_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    return "started"


def supervisor_pid(state_dir: str) -> int | None:
    """The pid in the supervisor's pid file, if it is a supervisor run by the owner of the watch directory
    (the mesh user): whatever else that user writes there, root signals nothing else."""
    pid = pid_of(_pid_path(state_dir))
    try:
        owner = watch_dir(state_dir).stat().st_uid
    except OSError:
        return None
    return pid if pid is not None and process_matches(pid, owner, PROCESS_NAME, b"--supervise") else None


def stop(state_dir: str) -> str:
    if not watch_dir(state_dir).is_dir() or not running(state_dir):
        return "not running"
    pid = supervisor_pid(state_dir)
    if pid is None or not signal_pid(pid, signal.SIGTERM):
        return "not running"
    deadline = time.monotonic() + STOP_WAIT_S
    while running(state_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    if running(state_dir):
        signal_pid(pid, signal.SIGKILL)  # its watcher follows it (PR_SET_PDEATHSIG, die_with_parent)
    wait_for_watcher(state_dir)
    return "stopped"


def wait_for_watcher(state_dir: str, wait_s: float = STOP_WAIT_S) -> bool:
    """Wait (bounded) until the supervisor's watcher has gone too: it ends on its supervisor's death, after
    the wait it was in (at most a few seconds). Only waits: the pid comes from the watcher's own record,
    which the mesh user writes, so it is never signalled from here. True when none is left."""
    record = read_record(state_dir) or {}
    pid = record.get("pid")
    try:
        owner = watch_dir(state_dir).stat().st_uid
    except OSError:
        return True
    if not isinstance(pid, int) or isinstance(pid, bool):
        return True
    deadline = time.monotonic() + wait_s
    while process_matches(pid, owner, PROCESS_NAME) and not process_matches(pid, owner, b"--supervise"):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def command(argv: Sequence[str]) -> list[str]:
    """How this process was started, to start the same entry point again (python3 SCRIPT ARGS)."""
    return [sys.executable, os.path.abspath(sys.argv[0]), *argv]


def _paths(config: str) -> tuple[str, str]:
    """The state directory and the log directory from mesh.json, read without the runner: the supervisor
    stays a small process (it imports none of the watcher's code)."""
    try:
        with open(config, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    state, log = data.get("state_dir"), data.get("log_file")
    state = state if isinstance(state, str) and state.startswith("/") else DEFAULT_STATE_DIR
    log = log if isinstance(log, str) and log.startswith("/") else DEFAULT_LOG_FILE
    return state, os.path.join(os.path.dirname(log), "watch.log")


def main(argv: Sequence[str] | None = None) -> int:
    """``replimesh-watch --start|--stop|--supervise [--config C] [--options O]`` (the entry point sends
    these here, so the supervisor never loads the watcher)."""
    parser = argparse.ArgumentParser(prog="replimesh-watch")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--options", default=DEFAULT_OPTIONS)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--start", action="store_true")
    which.add_argument("--stop", action="store_true")
    which.add_argument("--supervise", action="store_true")
    args = parser.parse_args(argv)
    state, log = _paths(args.config)
    files = ["--config", args.config, "--options", args.options]
    try:
        if args.stop:
            print(stop(state))
        elif args.start:
            print(start_background(state, command(["--supervise", *files])))
        else:
            return supervise(state, command(files), log)
    except OSError as exc:
        print(f"replimesh-watch: {exc}", file=sys.stderr)
        return 1
    return 0
