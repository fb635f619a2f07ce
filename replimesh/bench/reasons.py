"""Why a target can be missed: explanations written from this run's own figures, shown only when missed.

They say what costs the time (measured in the same run where possible) — not excuses: each one names
what would have to change in replimesh for the target to be met.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from replimesh.bench.stats import median


def _s(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} s"


def _n(series: object) -> str:
    """The median of a count series, or '?'."""
    value = median(list(series)) if isinstance(series, list) and series else None
    return "?" if value is None else f"{value:.0f}"


def _sentences(*parts: str) -> str:
    """A reason from its parts, those not measured ('') left out."""
    return " ".join(part for part in parts if part)


def _work(raw: Mapping[str, Any], ours: str, theirs: str, what: str, other: str) -> str:
    """The CPU seconds two series of trials cost the hosts, side by side ('' if not measured)."""
    a, b = median(raw.get(ours) or []), median(raw.get(theirs) or [])
    if a is None or b is None:
        return ""
    return f"The hosts spent {a:.2f} CPU seconds on {what}, {b:.2f} on {other}."


def _all_nodes_work(raw: Mapping[str, Any], md5: float | None) -> str:
    """What bringing the large file to every node cost in CPU, and what that alone takes on these cores."""
    ours, theirs = median(raw.get("watch_large_cpu_s") or []), median(raw.get("syncthing_large_cpu_s") or [])
    cores, nodes = raw.get("cores"), raw.get("nodes")
    st = median(raw.get("syncthing_large_s") or [])
    if ours is None or theirs is None or not cores or not nodes or nodes < 2:
        return ""
    alone = ours / cores
    text = (
        f"Until the file was on every node the hosts spent {ours:.1f} CPU seconds with replimesh "
        f"({ours / (nodes - 1):.2f} a copy) against {theirs:.1f} with Syncthing: on this machine's {cores} "
        f"cores replimesh's work alone needs {alone:.2f} s"
    )
    if st is not None:
        text += f", {'more' if alone > st else 'less'} than Syncthing's whole run ({st:.2f} s)"
    if md5 is not None:
        text += (
            f". Unison's two MD5 fingerprints of each new copy (one on each end) are {2 * md5:.2f} of those "
            "CPU seconds a copy; ssh and Unison's own transfer take the rest"
        )
    return text + "."


def explain(raw: Mapping[str, Any]) -> dict[str, str]:
    ssh, hop = median(raw.get("ssh_hop_s") or []), median(raw.get("replimesh_hop_s") or [])
    md5 = median(raw.get("md5_large_s") or [])
    best = None if ssh is None or md5 is None else ssh / (ssh + 2 * md5)
    runner, bare = median(raw.get("nochange_runner_s") or []), median(raw.get("nochange_bare_s") or [])
    st_fast = median(raw.get("syncthing_fast_small_s") or [])
    overhead = None if runner is None or bare is None else runner - bare
    mbit, size, nodes = raw.get("link_mbit"), raw.get("large_bytes"), raw.get("nodes")
    capped_hop = median(raw.get("replimesh_capped_hop_s") or [])
    capped_ssh = median(raw.get("ssh_capped_hop_s") or [])
    floor, rounds = None, max(1, math.ceil(math.log2(nodes))) if nodes else None
    if mbit and size and rounds:  # the swarm: one whole copy a round over a capped link, round after round
        floor = rounds * size * 8 / (mbit * 1e6)
    ssh_floor = None if capped_ssh is None or rounds is None else rounds * capped_ssh
    rerun, tasks = median(raw.get("bootstrap_rerun_s") or []), median(raw.get("bootstrap_rerun_tasks") or [])
    per_task = rerun / tasks if rerun and tasks else None
    allowed = "?" if not per_task else f"{60 / per_task:.0f}"
    capped_name = f"large file on all nodes vs Syncthing, link capped at {mbit or 'M'} Mbit/s"
    return {
        capped_name: (
            f"replimesh took {_s(median(raw.get('watch_capped_large_s') or []))}, Syncthing "
            f"{_s(median(raw.get('syncthing_capped_large_s') or []))}. The file spreads as a swarm "
            "(mesh_relay): each node that has pulled it tells the next, so it reaches all nodes in "
            f"{rounds or '?'} rounds, each one whole copy over a capped link: {_s(floor)} at the least "
            f"at the link's rate, {_s(ssh_floor)} at the pace of raw ssh's own capped hop in this run. A "
            "node passes the file on only once it is complete and verified (one Unison run a hop), where "
            "Syncthing's peers pass on each block as soon as they have it, so its rounds overlap. Meeting "
            "it needs a node to serve a file while it still receives it, which Unison does not do."
        ),
        "bootstrap.yml on 16 hosts, first run": (
            f"{_s(median(raw.get('bootstrap_first_s') or []))} for 16 hosts on 2 cores: "
            f"{_n(raw.get('bootstrap_first_tasks'))} tasks ran on each host, each one or more module runs on "
            "every host (an SSH round trip and a Python start there, a fork and the templating here), with "
            "the package installs on top. Meeting it needs fewer tasks still: the roles' remaining steps "
            "(users, packages, cron, sshd) folded into converge modules."
        ),
        "bootstrap.yml on 16 hosts, no-change re-run": (
            f"{_s(rerun)} with nothing to change: {_n(raw.get('bootstrap_rerun_tasks'))} tasks still ran on "
            "each host to find that out, one round trip each per host; the control node's forks (16) share "
            f"2 cores with the hosts' Python starts. At {_s(per_task)} a task, 60 s allows about {allowed} "
            "tasks. What still runs on every host: the reachability check and the facts, one probe per "
            "role, the layout runs, the jail tool's refresh, the supervisor's start and mesh_member."
        ),
        "large file, one hop vs raw ssh cat": _sentences(
            f"raw ssh moved the file in {_s(ssh)}, one replimesh hop took {_s(hop)}. Unison 2.52 reads the "
            "whole file to fingerprint it before sending, sends it through its own protocol over the ssh "
            "pipe, writes it to a temporary file on the receiver and fingerprints that again before the "
            "rename: several passes over the data and two processes in the path where `ssh cat` is one "
            "stream. Its two fingerprints alone (MD5 of the file: "
            f"{_s(md5)} each on these hosts) bound any Unison hop, however fast its transfer, to "
            f"{'?' if best is None else f'{best:.2f}'} of raw ssh here. LAB.md found an external copyprog "
            "(rsync) no faster, since the fingerprinting stays. "
            "Meeting the target needs a transfer path that is not Unison's for large new files. On a link "
            f"capped at {mbit or 'M'} Mbit/s the same hop took {_s(capped_hop)} against {_s(capped_ssh)} for "
            "raw ssh: where the link is the limit, "
            "as on a LAN or WAN, Unison's passes over the data cost little.",
            _work(raw, "replimesh_hop_cpu_s", "ssh_hop_cpu_s", "the hop", "raw ssh"),
        ),
        "no-change full round, runner vs bare unison": (
            f"the runner took {_s(runner)} against {_s(bare)} for the bare Unison runs "
            f"({_s(overhead)} more): per run it starts Python, reads mesh.json, takes the edge lock, writes "
            "the status file and the Prometheus textfile. A fixed cost, "
            "so its share shrinks as the tree (Unison's scan) grows; on a loaded machine the start of "
            "one more Python process is what dominates."
        ),
        "small file, full mesh vs Syncthing fsWatcherDelayS=1": (
            f"Syncthing with a 1 s delay delivered in {_s(st_fast)}. Each replimesh hop is one Unison run "
            "(process start, ssh handshake, remote server start: ~0.3 s on a quiet machine, more on a "
            "loaded one) after the watcher's coalescing window, and a full mesh runs 7 of them from node1 "
            "at once on 2 cores."
        ),
        "small file, full mesh vs Syncthing default": (
            f"replimesh's median was {_s(median(raw.get('watch_full_small_s') or []))}, Syncthing's default "
            f"{_s(median(raw.get('syncthing_default_small_s') or []))} (its 10 s watcher delay). In the "
            f"2-node mesh the same write reached node2 in {_s(median(raw.get('pair_empty_small_s') or []))}: "
            "the full mesh's cost is node1 running 7 Unison runs (4 at a time) on 2 busy cores, each "
            "paying a process start, an ssh handshake and a remote server start."
        ),
        "large file on all nodes vs Syncthing": _sentences(
            f"replimesh took {_s(median(raw.get('watch_large_s') or []))}, Syncthing "
            f"{_s(median(raw.get('syncthing_large_s') or []))}. The file spreads as a swarm in "
            f"{rounds or '?'} rounds of whole Unison runs, one round after the other. On the lab's "
            "uncapped bridge the cores the hosts share are the limit, not the link.",
            _all_nodes_work(raw, md5),
            "Syncthing's peers pass on each block as soon as they have it. Meeting it on these shared "
            "cores needs less work a copy than a Unison run does (a transfer path that is not "
            "Unison's), or a node serving a file while it receives it, so that the rounds overlap.",
        ),
        "idle CPU per node vs Syncthing": (
            "the watcher wakes every few seconds (mesh.json check, disks mounted in a folder, heartbeat) and "
            "cron checks the supervisor's lock every minute (flock(1), no Python start); an idle Syncthing "
            "is one process that sleeps."
        ),
        "idle memory per node vs Syncthing": (
            "an idle node runs the watcher (one Python process, about 16 MiB RSS with the standard library "
            "loaded) and its supervisor's shell loop (about 2 MiB), plus any shared ssh connection still "
            "open (they close 60 s after their last use) and whatever ran in the window (cron's check)."
        ),
        "small file, overlay vs Syncthing fsWatcherDelayS=1": (
            "the overlay adds hops (a change reaches a node not adjacent to node1 through a forwarding "
            "node), and each hop is one Unison run with its fixed cost after the coalescing window."
        ),
    }
