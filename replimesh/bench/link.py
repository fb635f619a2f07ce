"""A capped link for the bench: every lab host's egress limited with tc's token bucket filter (tbf).

The lab's hosts share one bridge with no bandwidth limit, which hides what limits a real LAN or WAN: a
writer's uplink. With every host's egress capped at M Mbit/s, a file that leaves the writer once per peer
costs (peers x size / M), one that peers pass on to each other does not.

The qdisc is set from this machine, inside each host's network namespace (`nsenter -t PID -n tc ...`):
a lab host needs no capability for it, and nothing in the host sees or can lift the cap.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator, Sequence

from replimesh.bench.probe import ProbeError, container_ids
from replimesh.lab.lab import Host

LATENCY_MS = 50  # how long a packet may wait in the bucket before it is dropped (tbf's `latency`)


def burst_bytes(mbit: int) -> int:
    """tbf's bucket: 10 ms at the rate, and never below 64 KiB (one GSO packet) so the cap stays exact
    on a kernel with a coarse timer."""
    return max(64 * 1024, mbit * 1_000_000 // 8 // 100)


def tbf_argv(device: str, mbit: int) -> list[str]:
    if not isinstance(mbit, int) or isinstance(mbit, bool) or not 1 <= mbit <= 100_000:
        raise ValueError(f"--link-mbit must be a whole number of Mbit/s, 1-100000 (got {mbit!r})")
    return [
        "tc", "qdisc", "replace", "dev", device, "root", "tbf",
        "rate", f"{mbit}mbit", "burst", str(burst_bytes(mbit)), "latency", f"{LATENCY_MS}ms",
    ]  # fmt: skip


def _netns(pid: int, argv: Sequence[str]) -> str:
    proc = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", *argv], capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise ProbeError(f"{' '.join(argv)} in pid {pid}'s network namespace: {proc.stderr.strip()}")
    return proc.stdout


def _device(pid: int, address: str) -> str:
    """The interface that carries the host's lab address."""
    for line in _netns(pid, ["ip", "-o", "-4", "addr", "show"]).splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3].split("/")[0] == address:
            return fields[1].split("@")[0]
    raise ProbeError(f"no interface holds {address}")


def cap(hosts: Sequence[Host], mbit: int) -> None:
    pids = container_ids(hosts)
    for host in hosts:
        pid = pids[host.name][1]
        device = _device(pid, host.address)
        _netns(pid, tbf_argv(device, mbit))
        if "tbf" not in _netns(pid, ["tc", "qdisc", "show", "dev", device]):
            raise ProbeError(f"{host.name}: the tbf qdisc did not take on {device}")


def uncap(hosts: Sequence[Host]) -> None:
    """Back to the default qdisc; a host whose cap is gone already (or that is stopped) is left as it is."""
    pids = container_ids(hosts)
    for host in hosts:
        pid = pids[host.name][1]
        if pid <= 0:
            continue
        with contextlib.suppress(ProbeError):
            _netns(pid, ["tc", "qdisc", "del", "dev", _device(pid, host.address), "root"])


@contextlib.contextmanager
def capped(hosts: Sequence[Host], mbit: int, log: Callable[[str], None]) -> Iterator[None]:
    """Every host's egress at `mbit` Mbit/s inside the block, and uncapped after it, whatever happened."""
    log(f"   egress of {len(hosts)} hosts capped at {mbit} Mbit/s (tc tbf)")
    try:
        cap(hosts, mbit)
        yield
    finally:
        uncap(hosts)
        log("   caps removed")
