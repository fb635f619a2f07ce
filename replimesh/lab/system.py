"""Host-side plumbing for the lab: root check, Debian packages, the Docker engine, the guard route.

Everything here acts on this machine only. Processes are started detached and stopped by the PID we
recorded, never by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from replimesh.lab.errors import LabError

# Debian packages the lab needs, keyed by the command that proves each one is there.
REQUIRED_COMMANDS = {
    "dockerd": "docker.io",
    "docker": "docker.io",
    "debootstrap": "debootstrap",
    "dpkg-scanpackages": "dpkg-dev",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "dot": "graphviz",  # the demo draws the mesh (meshctl topology)
}

Log = Callable[[str], None]

RUN_DIR = Path("/run/replimesh")
DOCKERD_PIDFILE = RUN_DIR / "dockerd.pid"
DOCKERD_LOG = Path("/var/log/replimesh-dockerd.log")
SHARED_LOCK = RUN_DIR / "lab.lock"
SHARED_LOCK_TIMEOUT_S = 1800  # the longest holder builds the host image (debootstrap, about a minute)


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it starts dockerd and creates networks); run it as root")


def run(
    args: Sequence[str], *, check: bool = True, timeout: float = 120, input_: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a command, raising LabError with its stderr when it fails."""
    try:
        proc = subprocess.run(list(args), capture_output=True, timeout=timeout, input=input_, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{args[0]} did not finish within {timeout:.0f}s: {' '.join(args)}") from exc
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise LabError(f"{' '.join(args[:3])} failed (exit {proc.returncode}): {err[-1] if err else ''}")
    return proc


def ensure_packages(log: Log) -> None:
    """Install the Debian packages whose commands are missing (apt-get update once first)."""
    missing = sorted({pkg for cmd, pkg in REQUIRED_COMMANDS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
        proc = subprocess.run(args, capture_output=True, env=env, timeout=900, check=False)
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise LabError(f"{' '.join(args[:2])} failed: {' '.join(tail)}")


def cgroup2() -> bool:
    """Whether /sys/fs/cgroup is the unified (v2) hierarchy."""
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


def docker_ready() -> bool:
    proc = subprocess.run(["docker", "info", "--format", "{{json .ID}}"], capture_output=True, timeout=30)
    return proc.returncode == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def shared_lock(timeout: float = SHARED_LOCK_TIMEOUT_S) -> Iterator[None]:
    """What every lab on this machine shares (packages, dockerd, the image, the guard route) changes under
    one lock, so two labs coming up or going at once (two test workers) never race over it."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with SHARED_LOCK.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"{SHARED_LOCK} still held after {timeout:.0f}s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_dockerd(log: Log, timeout: float = 60) -> None:
    """Start dockerd when no engine answers; remember its PID so `down` can stop exactly that one."""
    if docker_ready():
        return
    stale = Path("/var/run/docker.pid")
    old = _read_pid(stale)
    if old is not None and not _pid_alive(old):
        log(f"removing stale {stale} (PID {old} is gone)")
        stale.unlink(missing_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    # No default docker0 bridge: the lab makes its own network and nothing else should exist.
    log(f"starting dockerd (log: {DOCKERD_LOG})")
    with DOCKERD_LOG.open("ab") as out:
        proc = subprocess.Popen(
            ["dockerd", "--bridge=none"],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    DOCKERD_PIDFILE.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            DOCKERD_PIDFILE.unlink(missing_ok=True)
            raise LabError(f"dockerd exited with {proc.returncode}; see {DOCKERD_LOG}")
        if docker_ready():
            return
        time.sleep(0.5)
    raise LabError(f"dockerd did not answer within {timeout:.0f}s; see {DOCKERD_LOG}")


def stop_dockerd(log: Log, timeout: float = 30) -> None:
    """Stop the dockerd this lab started (by its recorded PID); leave any other engine alone."""
    pid = _read_pid(DOCKERD_PIDFILE)
    if pid is not None and _pid_alive(pid):
        log(f"stopping dockerd (PID {pid})")
    stop_pidfile(DOCKERD_PIDFILE, timeout)


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    return run(["docker", *args], check=check, timeout=timeout).stdout.decode().strip()


def docker_json(*args: str) -> list[dict]:
    out = docker(*args)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def ensure_guard_route(guard: str) -> bool:
    """Make sure nothing for the lab's /16 can leave through the default route. True if added now."""
    routes = run(["ip", "route", "show", "type", "unreachable"]).stdout.decode()
    if any(line.split()[:2] == ["unreachable", guard] for line in routes.splitlines()):
        return False
    run(["ip", "route", "add", "unreachable", guard, "metric", "4000"])
    return True


def remove_guard_route(guard: str) -> None:
    run(["ip", "route", "del", "unreachable", guard, "metric", "4000"], check=False)


def ensure_forward_accept(bridge: str) -> None:
    """dockerd sets the FORWARD policy to DROP; let traffic on the lab's own bridge through."""
    rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
    if shutil.which("iptables") is None:
        return
    if run(["iptables", "-C", *rule], check=False).returncode != 0:
        run(["iptables", "-I", *rule])


def remove_forward_accept(bridge: str) -> None:
    if shutil.which("iptables") is not None:
        run(["iptables", "-D", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"], check=False)


def start_detached(args: Sequence[str], log_path: Path, pid_path: Path) -> int:
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            list(args), stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )
    pid_path.write_text(f"{proc.pid}\n")
    return proc.pid


def process_running(pid_path: Path) -> bool:
    pid = _read_pid(pid_path)
    return pid is not None and _pid_alive(pid)


def stop_pidfile(pid_path: Path, timeout: float = 10) -> None:
    """SIGTERM the process whose PID we recorded, SIGKILL it after `timeout`, reap it if it is ours."""
    pid = _read_pid(pid_path)
    if pid is not None and _pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    pid_path.unlink(missing_ok=True)


def stop_shared_if_unused(label: str, guard: str, log: Log) -> None:
    """The engine and the guard route serve every lab (containers and networks labelled `label`): they go
    only with the last one."""
    with shared_lock():
        if docker_ready():
            if docker("ps", "-aq", "--filter", f"label={label}") or docker(
                "network", "ls", "-q", "--filter", f"label={label}"
            ):
                return
            stop_dockerd(log)
        remove_guard_route(guard)
