"""Measuring on lab hosts: when a file is byte-identical on every node, timed commands, idle CPU and RSS.

Lab hosts share this machine's kernel and clock, so a time taken inside node1 and one taken inside
node5 are comparable: propagation times are (last node's arrival) - (node1's write), both read with
time.time() inside the containers, with no docker exec latency in between.
"""

from __future__ import annotations

import base64
import os
import select
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replimesh.lab.lab import Host

# Runs inside a target node: says "ready", then polls (50 ms) until PATH has SIZE bytes whose sha256 is
# WANT, and prints "ok T C" with T the time it first saw that version (before hashing it, so a slow hash
# of a big file does not count) and C its own CPU seconds (hashing included: not the tool's work, so
# subtracted from what the hosts spent). Bounded by TIMEOUT seconds.
POLLER = r"""
import hashlib, os, sys, time
path, want, size, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
print("ready", flush=True)
deadline = time.time() + timeout
last = None
while time.time() < deadline:
    seen = time.time()
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and st.st_size == size and (st.st_ino, st.st_ctime_ns) != last:
        last = (st.st_ino, st.st_ctime_ns)
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError:
            last = None
        if digest.hexdigest() == want:
            print("ok", repr(seen), repr(sum(os.times()[:2])), flush=True)
            sys.exit(0)
    time.sleep(0.05)
print("timeout", flush=True)
sys.exit(1)
"""

# Runs on the writer: writes DATA (base64) to PATH as an application would, prints the time just before.
WRITER = r"""
import base64, sys, time
path, data = sys.argv[1], base64.b64decode(sys.argv[2])
t = time.time()
with open(path, "wb") as f:
    f.write(data)
print(repr(t), flush=True)
"""

# Runs on the writer: makes SIZE random bytes at PATH (outside the synced folder), prints their sha256.
MAKER = r"""
import hashlib, os, sys
path, size = sys.argv[1], int(sys.argv[2])
digest = hashlib.sha256()
with open(path, "wb") as f:
    left = size
    while left:
        chunk = os.urandom(min(left, 1 << 20))
        digest.update(chunk)
        f.write(chunk)
        left -= len(chunk)
print(digest.hexdigest(), flush=True)
"""

# Runs on the writer: renames SRC (already complete) to DST, prints the time just before.
MOVER = r"""
import os, sys, time
t = time.time()
os.rename(sys.argv[1], sys.argv[2])
print(repr(t), flush=True)
"""

# Runs on a node: runs ARGV, prints "SECONDS RC" then the command's output.
TIMER = r"""
import subprocess, sys, time
t = time.time()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
print(repr(time.time() - t), proc.returncode, flush=True)
sys.stdout.write(proc.stdout.decode("utf-8", "replace")[-4000:])
"""


class ProbeError(Exception):
    """A measurement could not be taken (a node never got the file, a command failed)."""


def dexec(host: Host, argv: Sequence[str], timeout: float = 300, user: str | None = None) -> str:
    """Run argv on a lab host (as `user` when given); its stdout, or ProbeError with its stderr."""
    prefix = ["runuser", "-u", user, "--"] if user else []
    try:
        proc = subprocess.run(
            ["docker", "exec", host.container, *prefix, *argv],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ProbeError(f"{host.name}: {' '.join(argv)[:120]} took over {timeout:.0f} s") from exc
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).decode(errors="replace").strip()[-800:]
        raise ProbeError(f"{host.name}: {' '.join(argv)[:120]} exited {proc.returncode}: {err}")
    return proc.stdout.decode(errors="replace")


def sh(host: Host, script: str, timeout: float = 300, user: str | None = None) -> str:
    return dexec(host, ["sh", "-c", script], timeout, user)


def py(host: Host, code: str, *args: str, timeout: float = 300, user: str | None = None) -> str:
    return dexec(host, ["python3", "-c", code, *args], timeout, user)


def timed(
    host: Host, argv: Sequence[str], timeout: float = 1800, user: str | None = None
) -> tuple[float, str]:
    """Seconds `argv` took on the host (timed inside it); ProbeError if it failed."""
    out = py(host, TIMER, *(["runuser", "-u", user, "--"] if user else []), *argv, timeout=timeout)
    first, _, rest = out.partition("\n")
    seconds, rc = first.split()
    if rc != "0":
        raise ProbeError(f"{host.name}: {' '.join(argv)} exited {rc}: {rest[-800:]}")
    return float(seconds), rest


@dataclass(frozen=True)
class Arrival:
    seconds: float  # last node's arrival - the write
    per_node: dict[str, float]
    cpu_s: float | None = None  # CPU the writer and the targets spent meanwhile, the pollers' own left out


class _Pollers:
    """One poller per target node, started before the write and waited for after it."""

    def __init__(self, targets: Sequence[Host], path: str, sha: str, size: int, timeout: float) -> None:
        self.timeout = timeout
        self.cpu_s = 0.0  # the pollers' own CPU seconds, once they have answered
        self.procs = {
            h.name: subprocess.Popen(
                ["docker", "exec", h.container, "python3", "-c", POLLER, path, sha, str(size), str(timeout)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for h in targets
        }

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = proc.stdout.readline().decode().strip() if ready else ""
            if line != "ready":
                raise ProbeError(f"{name}: the poller did not start ({line or 'no answer'})")

    def results(self) -> dict[str, float]:
        arrived: dict[str, float] = {}
        missing = []
        for name, proc in self.procs.items():
            try:
                out, _ = proc.communicate(timeout=self.timeout + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            words = out.decode().split()
            if proc.returncode == 0 and words[:1] == ["ok"]:
                arrived[name] = float(words[1])
                self.cpu_s += float(words[2])
            else:
                missing.append(name)
        if missing:
            raise ProbeError(f"not identical within {self.timeout:.0f} s on {', '.join(missing)}")
        return arrived

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def _arrival(t0: float, arrived: dict[str, float], cpu_s: float | None = None) -> Arrival:
    return Arrival(
        round(max(arrived.values()) - t0, 3),
        {n: round(t - t0, 3) for n, t in arrived.items()},
        None if cpu_s is None else round(cpu_s, 3),
    )


def small_file(
    writer: Host, targets: Sequence[Host], path: str, data: bytes, timeout: float, user: str | None = None
) -> Arrival:
    """Write `data` to `path` on the writer; seconds until it is byte-identical on every target."""
    import hashlib

    pollers = _Pollers(targets, path, hashlib.sha256(data).hexdigest(), len(data), timeout)
    try:
        pollers.wait_ready()
        t0 = float(py(writer, WRITER, path, base64.b64encode(data).decode(), user=user).strip())
        return _arrival(t0, pollers.results())
    finally:
        pollers.stop()


def make_file(writer: Host, path: str, size: int, owner: str | None = None) -> str:
    """SIZE random bytes at PATH on the writer (outside any synced folder); returns their sha256."""
    sha = py(writer, MAKER, path, str(size), timeout=600).strip()
    if owner:
        dexec(writer, ["chown", f"{owner}:{owner}", path])
    return sha


def move_in(
    writer: Host,
    targets: Sequence[Host],
    src: str,
    dst: str,
    sha: str,
    size: int,
    timeout: float,
    watch: str | None = None,
) -> Arrival:
    """Rename a complete file (or directory) into the synced folder; seconds until it (or `watch`, a
    file inside that directory) is identical on every target, and the CPU that took on those hosts."""
    meter = CpuMeter([writer, *targets])
    before = meter.read()  # before the pollers start: their whole CPU is in the count, and taken out
    pollers = _Pollers(targets, watch or dst, sha, size, timeout)
    try:
        pollers.wait_ready()
        t0 = float(py(writer, MOVER, src, dst).strip())
        arrived = pollers.results()
        spent = meter.since(before)
        return _arrival(t0, arrived, None if spent is None else spent - pollers.cpu_s)
    finally:
        pollers.stop()


def wait_gone(targets: Sequence[Host], path: str, timeout: float) -> None:
    """Until `path` is absent on every target (bounded): a deleted file has gone everywhere."""
    script = (
        f"i=0; while [ -e {path} ]; do i=$((i+1)); [ $i -gt {int(timeout * 10)} ] && exit 1; sleep 0.1; done"
    )
    for host in targets:
        sh(host, script, timeout=timeout + 30)


# --- idle CPU and memory, read from this machine's /proc (the lab hosts' processes are ours to see) ----


def container_ids(hosts: Sequence[Host]) -> dict[str, tuple[str, int]]:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.Name}} {{.Id}} {{.State.Pid}}", *(h.container for h in hosts)],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode()
    ids = {}
    for line in out.splitlines():
        name, cid, pid = line.split()
        ids[name.lstrip("/")] = (cid, int(pid))
    return {h.name: ids[h.container] for h in hosts}


def _cgroup_cpu_ns(init_pid: int) -> int | None:
    """The container's total CPU time (all its processes, past and present), from its cgroup."""
    try:
        lines = Path(f"/proc/{init_pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(","):
            usage = Path(f"/sys/fs/cgroup/cpuacct{path}/cpuacct.usage")
            if usage.exists():
                return int(usage.read_text())
    for line in lines:
        if line.startswith("0::"):
            stat = Path(f"/sys/fs/cgroup{line[3:]}/cpu.stat")
            if stat.exists():
                fields = dict(row.split() for row in stat.read_text().splitlines())
                return int(fields["usage_usec"]) * 1000
    return None


class CpuMeter:
    """CPU seconds the hosts spent (their containers' cgroups: every process, short-lived ones too)."""

    def __init__(self, hosts: Sequence[Host]) -> None:
        self.pids = [pid for _, pid in container_ids(hosts).values()]

    def read(self) -> int | None:
        values = [_cgroup_cpu_ns(pid) for pid in self.pids]
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)

    def since(self, before: int | None) -> float | None:
        now = self.read()
        return None if before is None or now is None else (now - before) / 1e9


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    ticks: int  # utime + stime + cutime + cstime
    rss_kib: int


def _read_proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return Proc(pid, int(fields[1]), comm, ticks, rss)


def _container_procs(ids: dict[str, tuple[str, int]]) -> dict[str, list[Proc]]:
    """node -> the processes of its container beyond a bare lab host (init, the sshd listener, cron)."""
    by_cid = {cid: node for node, (cid, _) in ids.items()}
    init = {node: pid for node, (_, pid) in ids.items()}
    found: dict[str, list[Proc]] = {node: [] for node in ids}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cgroup = Path(f"/proc/{entry}/cgroup").read_text()
        except OSError:
            continue
        node = next((n for cid, n in by_cid.items() if cid in cgroup), None)
        if node is None:
            continue
        proc = _read_proc(int(entry))
        if proc is None or proc.pid == init[node]:
            continue
        if proc.ppid == init[node] and proc.comm in ("sshd", "cron"):
            continue  # the bare host's own daemons, there with or without any sync tool
        found[node].append(proc)
    return found


def idle(hosts: Sequence[Host], window: float, every: float = 5.0) -> dict[str, Any]:
    """CPU (% of one core, the container's cgroup: every process, short-lived ones too) and RSS (sum of
    VmRSS of the processes beyond a bare host, mean of samples every `every` s) per node."""
    ids = container_ids(hosts)
    tick = os.sysconf("SC_CLK_TCK")
    cpu0 = {n: _cgroup_cpu_ns(pid) for n, (_, pid) in ids.items()}
    procs0 = _container_procs(ids)
    start = time.monotonic()
    rss_samples: dict[str, list[float]] = {n: [] for n in ids}
    names: set[str] = set()
    while True:
        procs = _container_procs(ids)
        for node, plist in procs.items():
            rss_samples[node].append(sum(p.rss_kib for p in plist) / 1024)
            names.update(p.comm for p in plist)
        left = window - (time.monotonic() - start)
        if left <= 0:
            break
        time.sleep(min(every, left))
    elapsed = time.monotonic() - start
    cpu1 = {n: _cgroup_cpu_ns(pid) for n, (_, pid) in ids.items()}
    cpu, per_process_cpu = [], []
    for h in hosts:
        before = {p.pid: p.ticks for p in procs0[h.name]}
        ticks = sum(p.ticks - before.get(p.pid, 0) for p in procs[h.name])
        per_process_cpu.append(round(ticks / tick / elapsed * 100, 3))
        a, b = cpu0[h.name], cpu1[h.name]
        cpu.append(
            round((b - a) / 1e9 / elapsed * 100, 3)
            if a is not None and b is not None
            else per_process_cpu[-1]
        )
    return {
        "window_s": round(elapsed, 1),
        "cpu_percent": cpu,
        "cpu_percent_processes_only": per_process_cpu,
        "rss_mib": [round(sum(rss_samples[h.name]) / max(1, len(rss_samples[h.name])), 2) for h in hosts],
        "processes": sorted(names),
    }
