"""`meshctl bench`: one lab, every measurement in one run, results.json and RESULTS.md at the end.

Order (each daemon runs alone while it is measured; the raw ssh ceiling is taken on quiet hosts):
  0. lab up; bare hosts idle (baseline); raw `ssh cat` node1 -> node2
  1. Syncthing full mesh: idle, small file default and fsWatcherDelayS=1, large file; stopped, removed
  2. replimesh full mesh, cron mode: one hop of the large file with the runner
  3. replimesh watch, full mesh: idle, small file, large file          (needs watch mode)
  4. replimesh watch, overlay: small file                              (needs watch mode)
  5. 2-node mesh (other nodes stopped): small file in a small tree, the big tree's first sync, the
     no-change round (runner vs bare unison), small file inside the big tree
The lab is removed at the end, on failure and on Ctrl-C too.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replimesh.bench.fleet import provision
from replimesh.bench.link import tbf_argv
from replimesh.bench.mesh import Cancelled
from replimesh.bench.phases import Phases
from replimesh.bench.reasons import explain
from replimesh.bench.report import render
from replimesh.bench.results import FLEET, build, check
from replimesh.collection import CHECKOUT
from replimesh.lab.lab import MAX_NODES, Lab, LabConfig

Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    nodes: int = 8
    repeat: int = 5
    quick: bool = False
    large_bytes: int = 256 * 1024 * 1024
    tree_files: int = 100_000
    idle_s: float = 60.0
    large_repeat: int = 5  # a verdict needs 5 trials of every series; a quick run takes 1
    small_timeout_s: float = 120.0
    large_timeout_s: float = 900.0
    link_mbit: int | None = None  # every host's egress capped for a second set of large-file trials
    fleet: int = 16  # hosts of the provisioning phase (bootstrap.yml first run and re-run); 0: none

    @staticmethod
    def make(
        nodes: int, repeat: int | None, quick: bool, link_mbit: int | None = None, fleet: int = 16
    ) -> Plan:
        if link_mbit is not None:
            tbf_argv("eth0", link_mbit)  # a bad rate is refused before any lab starts
        if not 0 <= fleet <= MAX_NODES:
            raise ValueError(f"--fleet must be 0 (none) or 1-{MAX_NODES} hosts (got {fleet})")
        if quick:
            return Plan(
                nodes, repeat or 2, True, 8 * 1024 * 1024, 2_000, 10.0, 1, 90.0, 300.0, link_mbit, fleet
            )
        trials = repeat or 5
        return Plan(nodes, trials, large_repeat=trials, link_mbit=link_mbit, fleet=fleet)


@dataclass
class Run:
    plan: Plan
    lab: Lab
    work: Path
    log: Log
    raw: dict[str, Any] = field(default_factory=dict)
    not_measured: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


class Interrupted(Exception):
    """SIGTERM during the run: unwind like Ctrl-C so the lab comes down."""


def _on_term(signum: int, frame: object) -> None:
    raise Interrupted(f"signal {signum}")


def _machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    os_name = "?"
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = line.split("=", 1)[1].strip('"')
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "os": f"{os_name}, kernel {platform.release()}",
        "load average (1/5/15 min) at start": load,
    }


def _git_version() -> str:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=CHECKOUT, capture_output=True, text=True, check=False)
        return proc.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    return f"{commit}{dirty}"


def _other_labs(own: str) -> list[str]:
    """The containers on this engine that are not the bench's own lab hosts."""
    proc = subprocess.run(
        ["docker", "ps", "--format", "{{.Names}}"], capture_output=True, text=True, check=False
    )
    return [n for n in proc.stdout.split() if not n.startswith(f"{own}-")]


def run_bench(
    out: Path,
    nodes: int,
    repeat: int | None,
    quick: bool,
    name: str,
    subnet: str,
    log: Log,
    link_mbit: int | None = None,
    fleet: int = 16,
) -> int:
    plan = Plan.make(nodes, repeat, quick, link_mbit, fleet)
    work = CHECKOUT / "bench" / "work"
    work.mkdir(parents=True, exist_ok=True)
    lab = Lab(work / f"lab-{name}", LabConfig(name=name, subnet=subnet), log=log)
    run = Run(plan, lab, work, log)
    run.raw.update(
        link_mbit=plan.link_mbit, large_bytes=plan.large_bytes, nodes=plan.nodes, cores=os.cpu_count()
    )
    started = time.time()
    machine = _machine()
    load_start = os.getloadavg()[0]
    commit = _git_version()  # what ran, not what is checked out when it ends
    old_term = signal.signal(signal.SIGTERM, _on_term)
    failure = ""
    others: list[str] = []
    try:
        hosts = lab.up(plan.nodes)
        others = _other_labs(name)
        labs = ", ".join(sorted({n.rsplit("-", 1)[0] for n in others}))
        machine["other containers on this engine"] = f"{len(others)} other containers running ({labs})"
        Phases(run, hosts).all()
    except (KeyboardInterrupt, Interrupted, Cancelled) as exc:
        failure = f"interrupted ({exc or 'Ctrl-C'})"
    except Exception as exc:  # the lab must come down whatever went wrong; the message says what
        failure = f"{type(exc).__name__}: {exc}"
        log(traceback.format_exc())
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        log("== lab down")
        try:
            lab.down()
        except Exception as exc:
            log(f"lab down failed: {exc}")
        signal.signal(signal.SIGTERM, old_term)
    if plan.fleet and not failure:
        failure = _fleet(run, LabConfig(name=name, subnet=subnet))
    if plan.fleet != FLEET:
        why = f"the provisioning phase had {plan.fleet} hosts (--fleet), the keys are for {FLEET}"
        for series in ("bootstrap_first_s", "bootstrap_rerun_s"):
            run.not_measured.setdefault(series, why)
    if failure:
        log(f"meshctl bench: {failure}")
        run.not_measured.setdefault("run", failure)
    machine["load average (1/5/15 min) at end"] = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "duration_s": round(time.time() - started),
        "quick": plan.quick,
        "command": _command(plan, name, subnet, out),
        "machine": machine,
        "versions": {"replimesh": commit, **run.versions},
        "lab": {
            "nodes": f"{plan.nodes} lab hosts ({name}, {subnet}), Debian 12 containers on one bridge",
            "sizes": f"small file 1 KiB x {plan.repeat}; large file {plan.large_bytes // 2**20} MiB; "
            f"big tree {plan.tree_files} files; idle window {plan.idle_s:g} s",
            "capped link": f"every host's egress at {plan.link_mbit} Mbit/s (tc tbf)"
            if plan.link_mbit
            else "none",
            "provisioning": _fleet_line(plan, run.raw),
        },
        "notes": _notes(load_start, os.getloadavg()[0], len(others)),
        "method": METHOD,
        "commands": run.commands,
        "reasons": explain(run.raw),
    }
    document = build(run.raw, run.not_measured, meta)
    problems = check(document)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "RESULTS.md").write_text(render(document))
    log(f"wrote {out / 'results.json'} and {out / 'RESULTS.md'}")
    for problem in problems:
        log(f"results: {problem}")
    return 1 if failure or problems else 0


def _fleet(run: Run, config: LabConfig) -> str:
    """The provisioning phase on a lab of its own; a failure is recorded, and the results still written."""
    run.log(f"== bootstrap.yml on {run.plan.fleet} fresh hosts: first run, then a re-run")
    signal.signal(signal.SIGTERM, _on_term)
    try:
        run.commands += provision(run.work, config, run.plan.fleet, run.raw, run.log)
    except (KeyboardInterrupt, Interrupted, Cancelled) as exc:
        return f"interrupted ({exc or 'Ctrl-C'})"
    except Exception as exc:  # the fleet lab is down already (provision's finally); say why
        run.log(traceback.format_exc())
        for name in ("bootstrap_first_s", "bootstrap_rerun_s"):
            run.not_measured.setdefault(name, f"the provisioning phase failed: {type(exc).__name__}: {exc}")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return ""


def _fleet_line(plan: Plan, raw: dict[str, Any]) -> str:
    if not plan.fleet:
        return "none"
    changed = ", ".join(
        f"{label} changed {raw[key][0]}"
        for key, label in (("bootstrap_first_changed", "first run"), ("bootstrap_rerun_changed", "re-run"))
        if raw.get(key)
    )
    return f"{plan.fleet} fresh lab hosts, full mesh, after the lab above is down" + (
        f" ({changed})" if changed else ""
    )


def _notes(load_start: float, load_end: float, others: int) -> list[str]:
    """What a reader must know before trusting the figures: other work on the machine skews every one.
    The load at the end is mostly the bench's own (its lab has just stopped), so it alone says nothing."""
    cores = os.cpu_count() or 1
    if others == 0 and load_start <= cores / 2:
        return []
    why = f"{others} other containers were running" if others else "other work was still running at the start"
    return [
        f"The machine was busy (load average {load_start:.1f} at the start, {load_end:.1f} at the end, on "
        f"{cores} cores; {why}): absolute times are inflated and vary during the run, "
        "so ratios between figures taken minutes apart (e.g. the ssh ceiling and the hop) are noisy. "
        "Re-run on a quiet machine for figures to quote."
    ]


def _command(plan: Plan, name: str, subnet: str, out: Path) -> str:
    parts = [".venv/bin/meshctl bench", f"--nodes {plan.nodes}", f"--repeat {plan.repeat}"]
    if plan.quick:
        parts.append("--quick")
    if plan.link_mbit:
        parts.append(f"--link-mbit {plan.link_mbit}")
    if plan.fleet != Plan.fleet:
        parts.append(f"--fleet {plan.fleet}")
    parts += [f"--name {name}", f"--subnet {subnet}", f"--out {out}"]
    return " ".join(parts)


METHOD = [
    "Small file: 1 KiB of random bytes written (open, write, close) into the synced folder on node1 by the "
    "folder's owner; a poller on every other node (50 ms, bounded) notes when the file is there with the "
    "same sha256. Time = last node's arrival - the write, both read inside the lab hosts (one kernel, one "
    "clock). Trials are spaced wider than the tool's own delay.",
    "Large file: random bytes made outside the folder on the same filesystem, then renamed into it "
    "(clock starts at the rename); same pollers (arrival = first sight of the right size, then verified "
    "by sha256). CPU seconds of a trial: what the hosts' containers spent from before the pollers start "
    "until the last arrival, read from their cgroups (every process, short-lived ones too), less the "
    "pollers' own CPU (their sha256 included); for raw ssh, what node1 and node2 spent on the copy.",
    "Raw ssh: `ssh -c CIPHER lab@node2 'cat > FILE' < FILE` on node1, with AES128-GCM and with "
    "ChaCha20-Poly1305 (alternated); the ceiling for a hop is the cipher node1's mesh ssh prefers (from its "
    "CPU flags, as the mesh_member module chooses it), so the hop and the ceiling use the same cipher. "
    "After each pair, `md5sum FILE` on node1: what each of Unison's two fingerprints of a new file costs.",
    "Capped link (--link-mbit M): every lab host's egress limited to M Mbit/s by a tc token bucket set from "
    "this machine in the host's network namespace; the large-file trials of Syncthing and of replimesh "
    "(full mesh) are run again, and one hop (raw ssh and replimesh, node1 and node2 alone), then the caps "
    "are removed.",
    "Provisioning: after the lab above is down, a lab of FLEET fresh hosts (Debian 12 containers with "
    "openssh-server, python3 and cron only); `bootstrap.yml` on a full mesh of them in watch mode, timed on "
    "this machine from start to end (ansible-runner), then run again with nothing to change.",
    "One hop: node1 and node2 alone (the other hosts stopped), the large file renamed into node1's "
    "folder, time until identical on node2 (watch mode: through the watcher; without watch mode: one "
    "`replimesh-sync --peer node2` run timed). Ratio = median ssh seconds / median replimesh seconds.",
    "Idle: the lab host's cgroup CPU time over the window (every process, short-lived ones too) as % of "
    "one core; memory = the sum of VmRSS of the processes beyond a bare lab host (its init, sshd "
    "listener and cron), the mean of samples every 5 s. Read from this machine's /proc and cgroup fs.",
    "No-change round: node1 and node2 alone with two folders, the small one and one holding the big "
    "tree (synced once first); then `replimesh-sync --peer node2` and bare `unison PROFILE` for each "
    "folder (the runner's exact profiles, UNISON dir and environment; the two runs summed) alternated, "
    "each timed inside node1. The watch path: 1 KiB written in the middle of the big tree vs in the "
    "small folder, node1 -> node2.",
    "Syncthing: Debian's package from the lab's apt repository, `serve --no-browser --no-restart` as the "
    "Debian unit runs it, one folder shared by all nodes as a full mesh, static tcp://<lab ip>:22000 "
    "addresses, discovery, relays, NAT, STUN, usage/crash reporting and upgrades off.",
]
