"""The bench's phases on the lab hosts (see bench.run for the order and why)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ansible_collections.replimesh.mesh.plugins.module_utils.mesh_cipher import (
    AES_GCM,
    CHACHA,
    hardware_aes,
    preferred,
)
from replimesh.bench import link, probe
from replimesh.bench import mesh as rm
from replimesh.bench.syncthing import FOLDER as ST_FOLDER
from replimesh.bench.syncthing import STAGING as ST_STAGING
from replimesh.bench.syncthing import Syncthing
from replimesh.lab.lab import Host

if TYPE_CHECKING:
    from replimesh.bench.run import Run

SMALL = 1024
SSH_KEY = "/root/.ssh/bench_ed25519"
BIG = "bench-large.bin"
# Between two trials: wider than the tool's own delay, so that trials never share a batch.
GAP_SYNCTHING_DEFAULT_S = 12.0
GAP_FAST_S = 3.0
CONTROL_PERSIST_S = 65.0  # ansible.cfg's ControlPersist=60s, and a margin
# The two AEAD ciphers OpenSSH offers, each measured by raw `ssh cat`: mesh_cipher chooses between them.
CAPPED = ("syncthing_capped_large_s", "watch_capped_large_s", "ssh_capped_hop_s", "replimesh_capped_hop_s")
CIPHERS = {AES_GCM[0]: "ssh_hop_aes128_gcm_s", CHACHA[0]: "ssh_hop_chacha20_s"}


def cpu_series(name: str) -> str:
    """The series of CPU seconds the hosts spent in the trials of series `name` (x_s -> x_cpu_s)."""
    return f"{name.removesuffix('_s')}_cpu_s"


class Phases:
    def __init__(self, run: Run, hosts: Sequence[Host]) -> None:
        self.run = run
        self.plan = run.plan
        self.log = run.log
        self.hosts = list(hosts)
        self.node1, self.node2 = self.hosts[0], self.hosts[1]
        self.ssh_ready = ""  # the raw ssh command node1 -> node2, once its key is in place
        self.mesh_file = run.work / "bench.mesh.yml"
        # A new lab has new hosts with new keys: the previous run's key store would refuse them.
        shutil.rmtree(run.work / "bench.keys", ignore_errors=True)

    @contextlib.contextmanager
    def phase(self, title: str, *series: str) -> Iterator[None]:
        """Run one phase; if it fails, its series are recorded as not measured and the run goes on."""
        self.log(f"== {title}")
        start = time.monotonic()
        try:
            yield
        except (probe.ProbeError, rm.MeshError, OSError, ValueError, KeyError, TypeError) as exc:
            self.log(f"   {title}: FAILED: {exc}")
            for name in series:
                if not self.run.raw.get(name):
                    self.run.not_measured[name] = f"{title} failed: {exc}"
        self.log(f"   {title}: {time.monotonic() - start:.0f} s")

    def skip(self, why: str, *series: str) -> None:
        self.log(f"== skipped: {why}")
        for name in series:
            self.run.not_measured[name] = why

    def add(self, name: str, value: float) -> None:
        self.run.raw.setdefault(name, []).append(value)
        self.log(f"   {name}: {value:.3f} s")

    def all(self) -> None:
        watch = rm.watch_supported()
        if not self.plan.link_mbit:
            why = "no capped link asked (meshctl bench --link-mbit M)"
            for name in CAPPED:
                self.run.not_measured[name] = why
        with self.phase("bare hosts idle (baseline)", "baseline_idle"):
            self.run.raw["baseline_idle"] = probe.idle(self.hosts, min(self.plan.idle_s, 20))
        with self.phase("raw ssh cat node1 -> node2", "ssh_hop_s", *CIPHERS.values()):
            self.ssh_ceiling()
        with self.phase(
            "Syncthing",
            "syncthing_idle",
            "syncthing_default_small_s",
            "syncthing_fast_small_s",
            "syncthing_large_s",
            "syncthing_capped_large_s",
        ):
            self.syncthing()
        series = ("watch_idle", "watch_full_small_s", "watch_large_s", "watch_capped_large_s")
        if watch:
            with self.phase("replimesh watch, full mesh", *series):
                self.watch_full()
            with self.phase("replimesh watch, overlay", "watch_overlay_small_s"):
                self.watch_overlay()
        else:
            why = "watch mode is not in this checkout (mesh_sync accepts no mode: watch)"
            self.skip(why, *series, "watch_overlay_small_s", "pair_empty_small_s", "pair_tree_small_s")
        pair = ("replimesh_hop_s", "tree_first_sync_s", "nochange_runner_s", "nochange_bare_s")
        capped = ("ssh_capped_hop_s", "replimesh_capped_hop_s")
        with self.phase(
            "2-node mesh: one hop, the big tree", *pair, *capped, "pair_empty_small_s", "pair_tree_small_s"
        ):
            self.pair(watch)

    # --- 0. the ceiling -------------------------------------------------------------------------
    def ssh_ceiling(self) -> None:
        """Raw `ssh cat` node1 -> node2 with each AEAD cipher, alternated; the ceiling for a hop is the
        cipher node1's mesh ssh prefers (mesh_cipher, from the same CPU flags the module reads)."""
        a, b = self.node1, self.node2
        chosen = self.preferred_cipher(a)
        self.run.versions["ssh cipher the mesh prefers on node1"] = chosen
        with self.ssh_source(a, b) as (src, sha):
            for _ in range(max(3, self.plan.repeat)):
                for cipher, series in CIPHERS.items():
                    seconds = self.ssh_cat(
                        a, b, src, sha, cipher, cpu_series("ssh_hop_s") if cipher == chosen else None
                    )
                    self.add(series, seconds)
                    if cipher == chosen:
                        self.add("ssh_hop_s", seconds)
                # Unison fingerprints a new file (MD5) on the sending end before and the receiving end
                # after the transfer: the share of a hop no transfer path inside Unison can save.
                self.add("md5_large_s", probe.timed(a, ["md5sum", src], timeout=300)[0])

    @staticmethod
    def preferred_cipher(host: Host) -> str:
        return preferred(hardware_aes(probe.dexec(host, ["cat", "/proc/cpuinfo"])))[0]

    @contextlib.contextmanager
    def ssh_source(self, a: Host, b: Host) -> Iterator[tuple[str, str]]:
        """The large file on node1 (path, sha256) for raw ssh to node2, whose key is set up once."""
        self.ssh_ready = self.ssh_ready or self._ssh_key(a, b)
        src = "/root/bench-large.bin"
        sha = probe.make_file(a, src, self.plan.large_bytes)
        try:
            yield src, sha
        finally:
            probe.sh(a, f"rm -f {src}")

    def _ssh_key(self, a: Host, b: Host) -> str:
        """A key of node1's root for lab@node2, node2's host key pinned: the ssh command to run on node1."""
        probe.sh(a, f"test -s {SSH_KEY} || ssh-keygen -q -t ed25519 -N '' -f {SSH_KEY}")
        pub = probe.dexec(a, ["cat", f"{SSH_KEY}.pub"]).strip()
        probe.sh(b, f"k=/home/lab/.ssh/authorized_keys; grep -qxF '{pub}' $k || echo '{pub}' >> $k")
        host_key = probe.dexec(b, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).split()[:2]
        probe.sh(a, f"echo '{b.address} {' '.join(host_key)}' > /root/.ssh/bench_known_hosts")
        return (
            f"ssh -i {SSH_KEY} -o BatchMode=yes -o UserKnownHostsFile=/root/.ssh/bench_known_hosts "
            f"-o StrictHostKeyChecking=yes lab@{b.address}"
        )

    def ssh_cat(
        self, a: Host, b: Host, src: str, sha: str, cipher: str, cpu_name: str | None = None
    ) -> float:
        """Seconds one raw `ssh cat` of the file took; with `cpu_name`, the CPU the two hosts spent on it
        is added to that series."""
        command = f"{self.ssh_ready} -c {cipher} 'cat > /tmp/bench-large.bin' < {src}"
        if command not in [c.removeprefix("node1# ") for c in self.run.commands]:
            self.run.commands.append(f"node1# {command}")
        meter = probe.CpuMeter([a, b])
        before = meter.read()
        seconds, _ = probe.timed(a, ["sh", "-c", command], timeout=900)
        spent = meter.since(before)
        if cpu_name and spent is not None:
            self.add(cpu_name, spent)
        got = probe.dexec(b, ["sha256sum", "/tmp/bench-large.bin"]).split()[0]
        probe.sh(b, "rm -f /tmp/bench-large.bin")
        if got != sha:
            raise probe.ProbeError("ssh cat: node2's copy differs")
        return seconds

    # --- 1. Syncthing -----------------------------------------------------------------------------
    def syncthing(self) -> None:
        st = Syncthing(self.hosts, self.log)
        self.run.versions["syncthing"] = st.install()
        self.run.commands.append("each node# apt-get install syncthing   (from the lab's apt repository)")
        st.configure()
        self.run.commands.append(
            "each node# syncthing generate --home=/var/lib/stbench --no-default-folder --skip-port-probing"
        )
        self.run.commands.append(
            "each node# STNOUPGRADE=1 syncthing serve --home=/var/lib/stbench --no-browser --no-restart "
            "--logflags=0 &"
        )
        try:
            st.start()
            self.log(f"   syncthing connected and idle after {st.wait_ready():.0f} s")
            self.run.raw["syncthing_idle"] = probe.idle(self.hosts, self.plan.idle_s)
            self.small_trials("syncthing_default_small_s", ST_FOLDER, None, GAP_SYNCTHING_DEFAULT_S)
            st.set_watcher_delay(1)
            self.run.commands.append(
                'each node# REST PATCH /rest/config/folders/bench {"fsWatcherDelayS": 1}'
            )
            st.wait_ready()
            self.small_trials("syncthing_fast_small_s", ST_FOLDER, None, GAP_FAST_S)
            for _ in range(self.plan.large_repeat):
                self.large_trial("syncthing_large_s", ST_FOLDER, ST_STAGING, None)
            self.capped_large("syncthing_capped_large_s", ST_FOLDER, ST_STAGING, None)
        finally:
            st.stop()
            st.remove_data()

    # --- trials -----------------------------------------------------------------------------------
    def small_trials(
        self,
        name: str,
        folder: str,
        user: str | None,
        gap: float,
        targets: Sequence[Host] | None = None,
        sub: str = "",
    ) -> None:
        for i in range(self.plan.repeat):
            data = os.urandom(SMALL)
            path = f"{folder}/{sub}{name}-{i}-{int(time.time())}.bin"
            arrival = probe.small_file(
                self.node1, targets or self.hosts[1:], path, data, self.plan.small_timeout_s, user
            )
            self.add(name, arrival.seconds)
            time.sleep(gap)

    def large_trial(
        self, name: str, folder: str, staging: str, user: str | None, targets: Sequence[Host] | None = None
    ) -> None:
        """The large file renamed into node1's folder; then deleted there, and gone everywhere, untimed."""
        targets = targets or self.hosts[1:]
        probe.sh(self.node1, f"mkdir -p {staging}" + (f" && chown {user}:{user} {staging}" if user else ""))
        src, dst = f"{staging}/{BIG}", f"{folder}/{BIG}"
        sha = probe.make_file(self.node1, src, self.plan.large_bytes, owner=user)
        arrival = probe.move_in(
            self.node1, targets, src, dst, sha, self.plan.large_bytes, self.plan.large_timeout_s
        )
        self.add(name, arrival.seconds)
        if arrival.cpu_s is not None:
            self.add(cpu_series(name), arrival.cpu_s)
        probe.dexec(self.node1, ["rm", "-f", dst])
        probe.wait_gone(targets, dst, self.plan.large_timeout_s)
        time.sleep(GAP_FAST_S)

    def capped_large(self, name: str, folder: str, staging: str, user: str | None) -> None:
        """The large-file trials again with every host's egress capped (--link-mbit)."""
        if not self.plan.link_mbit:
            return
        with link.capped(self.hosts, self.plan.link_mbit, self.log):
            for _ in range(self.plan.large_repeat):
                self.large_trial(name, folder, staging, user)

    # --- 2.-3. replimesh on all nodes ---------------------------------------------------------------
    def bootstrap(
        self, nodes: Sequence[Host], topology: dict[str, object], mode: str, label: str, tree: bool = False
    ) -> None:
        folders = [*rm.FOLDERS, *([rm.TREE_FOLDER] if tree else [])]
        rm.write_mesh_file(
            self.run.lab.inventory_path, self.mesh_file, [h.name for h in nodes], topology, mode, folders
        )
        seconds, log, _, _ = rm.bootstrap(self.mesh_file)
        self.log(f"   bootstrap.yml ({label}): {seconds:.0f} s (log: {log})")
        self.run.commands.append(f"control# ansible-playbook -i bench.mesh.yml bootstrap.yml   ({label})")
        if "unison" not in self.run.versions:
            self.run.versions["unison"] = rm.unison_version(self.node1)

    def watch_full(self) -> None:
        self.bootstrap(self.hosts, {"kind": "full"}, "watch", "full mesh, watch")
        self.warm_up("full mesh")
        time.sleep(CONTROL_PERSIST_S)  # Ansible's ssh sessions from the bootstrap end before idle is measured
        self.run.raw["watch_idle"] = probe.idle(self.hosts, self.plan.idle_s)
        self.small_trials("watch_full_small_s", rm.FOLDER, rm.USER, GAP_FAST_S)
        for _ in range(self.plan.large_repeat):
            self.large_trial("watch_large_s", rm.FOLDER, rm.STAGING, rm.USER)
        self.capped_large("watch_capped_large_s", rm.FOLDER, rm.STAGING, rm.USER)

    def watch_overlay(self) -> None:
        self.bootstrap(self.hosts, {"kind": "overlay"}, "watch", "overlay, watch")
        self.warm_up("overlay")
        self.small_trials("watch_overlay_small_s", rm.FOLDER, rm.USER, GAP_FAST_S)

    def warm_up(self, what: str, targets: Sequence[Host] | None = None) -> None:
        """One untimed small-file trial: the watchers are up and the first runs are behind us."""
        path = f"{rm.FOLDER}/warm-up-{int(time.time())}"
        arrival = probe.small_file(
            self.node1, targets or self.hosts[1:], path, os.urandom(SMALL), 300, rm.USER
        )
        self.log(f"   watch ({what}) works: warm-up file everywhere in {arrival.seconds:.2f} s")
        time.sleep(GAP_FAST_S)

    # --- 4. one edge: a hop, the big tree ---------------------------------------------------------------
    def pair(self, watch: bool) -> None:
        """node1 and node2 alone (the other hosts killed): one hop of the large file, then a second folder
        with the big tree: its first sync, the no-change round (runner vs bare unison), and (watch) a
        one-file change inside it against one in the small folder, measured side by side."""
        a, b = self.node1, self.node2
        for host in self.hosts[2:]:
            self.run.lab.fault("kill", host.name)  # the others are done: they must not use CPU now
        self.bootstrap([a, b], {"kind": "full"}, "watch" if watch else "cron", "2 nodes", tree=True)
        if watch:
            self.warm_up("2 nodes", [b])
            for _ in range(max(2, self.plan.large_repeat)):
                self.large_trial("replimesh_hop_s", rm.FOLDER, rm.STAGING, rm.USER, [b])
            self.small_trials("pair_empty_small_s", rm.FOLDER, rm.USER, GAP_FAST_S, [b])
            if self.plan.link_mbit:
                self.capped_hop()
        else:
            self.run.commands.append(f"node1$ {rm.RUNNER} --peer node2   (as {rm.USER}, timed)")
            for _ in range(max(2, self.plan.large_repeat)):
                probe.sh(a, f"mkdir -p {rm.STAGING} && chown {rm.USER}:{rm.USER} {rm.STAGING}")
                src, dst = f"{rm.STAGING}/{BIG}", f"{rm.FOLDER}/{BIG}"
                sha = probe.make_file(a, src, self.plan.large_bytes, owner=rm.USER)
                probe.dexec(a, ["mv", src, dst])
                self.add("replimesh_hop_s", rm.runner_round(a, b.name))
                if probe.dexec(b, ["sha256sum", dst]).split()[0] != sha:
                    raise probe.ProbeError("replimesh hop: node2's copy differs")
                probe.dexec(a, ["rm", "-f", dst])
                rm.runner_round(a, b.name)  # the deletion, untimed
        self.big_tree(watch)

    def capped_hop(self) -> None:
        """One hop on a capped link: raw ssh (the cipher the mesh prefers) and replimesh, alternated."""
        a, b = self.node1, self.node2
        cipher = self.preferred_cipher(a)
        with self.ssh_source(a, b) as (src, sha), link.capped([a, b], self.plan.link_mbit or 0, self.log):
            for _ in range(self.plan.large_repeat):
                self.add(
                    "ssh_capped_hop_s", self.ssh_cat(a, b, src, sha, cipher, cpu_series("ssh_capped_hop_s"))
                )
                self.large_trial("replimesh_capped_hop_s", rm.FOLDER, rm.STAGING, rm.USER, [b])

    def big_tree(self, watch: bool) -> None:
        a, b = self.node1, self.node2
        staging, target = f"{rm.STAGING}/tree", f"{rm.TREE_FOLDER['path']}/tree"
        probe.sh(a, f"rm -rf {staging} && mkdir -p {rm.STAGING} && chown {rm.USER}:{rm.USER} {rm.STAGING}")
        files = str(self.plan.tree_files)
        last = probe.py(a, rm.TREE_MAKER, staging, files, user=rm.USER, timeout=900).strip()
        last_rel = last.removeprefix(f"{staging}/")
        sha = probe.dexec(a, ["sha256sum", last]).split()[0]
        size = int(probe.dexec(a, ["stat", "-c", "%s", last]).strip())
        if watch:  # the last file of the tree is identical on node2: the whole tree has arrived
            arrival = probe.move_in(a, [b], staging, target, sha, size, 1800, f"{target}/{last_rel}")
            self.add("tree_first_sync_s", arrival.seconds)
        else:
            probe.dexec(a, ["mv", staging, target])
            self.add("tree_first_sync_s", rm.runner_round(a, b.name))
        want, count = self.plan.tree_files, ""
        for _ in range(60):  # bounded: the tree is whole on node2 (its last file may land before others)
            count = probe.sh(b, f"find {target} -type f | wc -l").strip()
            if int(count) == want:
                break
            time.sleep(2)
        else:
            raise probe.ProbeError(f"node2 has {count} of {want} tree files")
        rm.runner_round(a, b.name)  # untimed: both sides' caches warm, the archives settled
        bare = [rm.bare_unison_argv(a, b.name, folder["name"]) for folder in (*rm.FOLDERS, rm.TREE_FOLDER)]
        for argv in bare:
            self.run.commands.append(f"node1$ {' '.join(argv)}   (as {rm.USER}, timed; the two summed)")
        for _ in range(max(3, self.plan.repeat)):
            self.add("nochange_runner_s", rm.runner_round(a, b.name))
            self.add("nochange_bare_s", round(sum(rm.bare_unison(a, argv) for argv in bare), 3))
        if watch:
            middle = f"tree/d{self.plan.tree_files // 2000:03d}/"  # a directory in the middle of the tree
            folder = rm.TREE_FOLDER["path"]
            self.small_trials("pair_tree_small_s", folder, rm.USER, GAP_FAST_S, [b], sub=middle)
