"""A lab of real SSH hosts: Docker containers on an internal bridge with static addresses.

`Lab.up(n)` is idempotent and only grows the lab; `Lab.down()` removes everything this lab made. Test
traffic stays on the lab bridge: the network is `--internal` and a guard route makes the whole lab /16
unreachable from this machine except through the bridge's own, more specific, route.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from replimesh.lab import image, system
from replimesh.lab.errors import LabError
from replimesh.lab.kinds import HostKind
from replimesh.lab.system import Log, docker

MAX_NODES = 16
GUARD = "172.31.0.0/16"  # every lab /24 lies inside; nothing for it may leave this machine
APT_PORT = 8642
LABEL = "replimesh.lab"
FAULTS = ("pause", "unpause", "kill", "shutdown", "start", "partition", "heal", "reboot")
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=5")


@dataclass(frozen=True)
class LabConfig:
    """What names a lab: its Docker name prefix and its private /24."""

    name: str = "rmlab"
    subnet: str = "172.31.77.0/24"

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.subnet)
        guard = ipaddress.ip_network(GUARD)
        if net.prefixlen != 24 or not net.subnet_of(guard):
            raise LabError(f"lab subnet {self.subnet} must be a /24 inside {guard}")


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    container: str


class Lab:
    def __init__(self, state_dir: Path, config: LabConfig | None = None, log: Log = print) -> None:
        self.state_dir = state_dir.resolve()
        self.log = log
        saved = self.state_dir / "lab.json"
        if config is None:
            config = LabConfig(**json.loads(saved.read_text())) if saved.exists() else LabConfig()
        self.config = config
        net = ipaddress.ip_network(config.subnet)
        self.gateway = str(net.network_address + 1)
        self.bridge = f"{config.name[:10]}0"

    # --- naming -----------------------------------------------------------------------------------
    def host(self, index: int) -> Host:
        net = ipaddress.ip_network(self.config.subnet)
        return Host(f"node{index}", str(net.network_address + 10 + index), f"{self.config.name}-node{index}")

    @property
    def key_path(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def inventory_path(self) -> Path:
        return self.state_dir / "lab.mesh.yml"

    @property
    def keystore(self) -> Path:
        """The mesh's key store that the inventory plugin names for lab.mesh.yml."""
        return self.state_dir / "lab.keys"

    def hosts(self) -> list[Host]:
        """The lab's hosts that exist now, in node order."""
        if not system.docker_ready():
            return []
        names = docker("ps", "-a", "--filter", f"label={LABEL}={self.config.name}", "--format", "{{.Names}}")
        indexes = sorted(int(n.rsplit("-node", 1)[1]) for n in names.split() if "-node" in n)
        return [self.host(i) for i in indexes]

    def _kinds(self) -> dict[str, HostKind]:
        """node -> what its container runs: its init system and its Debian release."""
        labels = "|".join(f'{{{{.Label "replimesh.{key}"}}}}' for key in ("node", "init", "release"))
        out = docker("ps", "-a", "--filter", f"label={LABEL}={self.config.name}", "--format", labels)
        kinds = {}
        for line in out.splitlines():
            node, init, release = [*line.split("|"), "", ""][:3]
            kinds[node] = HostKind(init or "none", release or "bookworm")
        return kinds

    def kind_of(self, node: str) -> HostKind:
        """The kind the host's container was started as."""
        return self._kinds().get(self.resolve(node).name, HostKind())

    def init_of(self, node: str) -> str:
        return self.kind_of(node).init

    def release_of(self, node: str) -> str:
        """The Debian release the host runs now (an upgrade in place changes it)."""
        proc = self.exec(node, ["sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME"])
        return proc.stdout.decode().strip() or self.kind_of(node).release

    def upgrade_release(self, node: str, release: str) -> None:
        """Upgrade the host in place to Debian `release` (`apt full-upgrade` from the lab's copy of that
        release's archive), then reboot it, as Debian's release notes say; back when SSH answers."""
        host, kind = self.resolve(node), self.kind_of(node)
        HostKind(kind.init, release).check()  # e.g. Debian 13's systemd on a machine without cgroup v2
        tag = image.ensure_image(self.log, kind.init, release)
        repo = image.ensure_upgrade_repo(self.log, release, tag)
        served = f"{release}-upgrade"
        self._ensure_apt_server({served: repo})
        script = (
            f"echo 'deb [trusted=yes] {self._apt_url(served)} ./' > {image.LAB_APT_LIST}"
            " && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get full-upgrade -y -q"
            " -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
        )
        proc = self.exec(node, ["sh", "-c", script], timeout=900)
        if proc.returncode != 0:
            raise LabError(f"upgrading {node} to {release} failed:\n{proc.stdout.decode()[-3000:]}"
                           f"{proc.stderr.decode()[-2000:]}")  # fmt: skip
        docker("restart", "--time", "60", host.container, timeout=180)
        self._wait_ssh([host], timeout=90)
        self._write_known_hosts(self.hosts())  # waiting wrote only this host's key

    def resolve(self, node: str) -> Host:
        for host in self.hosts():
            if node in (host.name, host.container, host.address):
                return host
        known = ", ".join(h.name for h in self.hosts()) or "none (is the lab up?)"
        raise LabError(f"unknown lab node {node!r}; lab nodes: {known}")

    # --- up -----------------------------------------------------------------------------------------
    def up(
        self,
        count: int,
        no_mount: Collection[str] = (),
        systemd: Collection[str] = (),
        trixie: Collection[str] = (),
        default: HostKind | None = None,
    ) -> list[Host]:
        """Start hosts node1..nodeCOUNT. Those named in ``no_mount`` are containers whose root may not mount
        (no CAP_SYS_ADMIN), like a container host replimesh did not build; the others' root may. Those named
        in ``systemd`` boot systemd as PID 1, as a VM or a server does, those in ``trixie`` run Debian 13; a
        host already up keeps its kind, and the other new ones are ``default`` (Debian 12 with no init
        system: sshd and cron started by a script)."""
        if not 1 <= count <= MAX_NODES:
            raise LabError(f"a lab has 1 to {MAX_NODES} hosts, not {count}")
        default = default or HostKind()
        wanted = [self.host(i) for i in range(1, count + 1)]
        running = self._kinds() if system.docker_ready() else {}
        # A host keeps its kind (`lab up` only grows a lab); a new one gets what was asked.
        kinds = {
            h.name: HostKind(
                "systemd" if h.name in systemd else running.get(h.name, default).init,
                "trixie" if h.name in trixie else running.get(h.name, default).release,
            )
            for h in wanted
        }
        for kind in set(kinds.values()):
            kind.check()
        system.require_root()
        with system.shared_lock():  # until this lab's network exists: no other lab's down stops dockerd
            system.ensure_packages(self.log)
            system.ensure_dockerd(self.log)
            tags = {
                kind: image.ensure_image(self.log, kind.init, kind.release) for kind in set(kinds.values())
            }
            repos = {rel: image.ensure_apt_repo(self.log, rel) for rel in {k.release for k in kinds.values()}}
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._write_if_changed(self.state_dir / "lab.json", json.dumps(asdict(self.config)) + "\n")
            if system.ensure_guard_route(GUARD):
                self.log(f"added guard route: unreachable {GUARD} metric 4000")
            self._ensure_network()
            system.ensure_forward_accept(self.bridge)
        self._ensure_apt_server(repos)
        self._ensure_key()
        for release in repos:
            self._write_if_changed(self._env_path(release), f"LAB_APT_URL={self._apt_url(release)}\n")
        started = [
            h
            for h in wanted
            if self._ensure_container(h, tags[kinds[h.name]], h.name not in no_mount, kinds[h.name])
        ]
        hosts = self.hosts()
        self._wait_ssh(started, timeout=90)
        self._write_known_hosts(hosts)
        self._write_inventory(hosts)
        if started:
            self.log(f"started {', '.join(h.name for h in started)}; lab has {len(hosts)} hosts")
        else:
            self.log(f"nothing changed; lab has {len(hosts)} hosts")
        return hosts

    def _ensure_network(self) -> None:
        nets = docker("network", "ls", "--filter", f"name=^{self.config.name}$", "--format", "{{.Name}}")
        if self.config.name in nets.split():
            info = json.loads(docker("network", "inspect", self.config.name))[0]
            subnets = [c.get("Subnet") for c in info.get("IPAM", {}).get("Config", [])]
            if self.config.subnet not in subnets:
                raise LabError(f"docker network {self.config.name} exists with subnet {subnets}")
            return
        docker(
            "network", "create", "--driver", "bridge", "--internal",
            "--subnet", self.config.subnet, "--gateway", self.gateway,
            "-o", f"com.docker.network.bridge.name={self.bridge}",
            "--label", f"{LABEL}={self.config.name}", self.config.name,
        )  # fmt: skip

    def _apt_url(self, release: str) -> str:
        return f"http://{self.gateway}:{APT_PORT}/{release}"

    def _env_path(self, release: str) -> Path:
        """The lab's settings for hosts whose setup runs as a systemd unit (no container environment)."""
        return self.state_dir / f"host-{release}.env"

    @property
    def _apt_pidfile(self) -> Path:
        return system.RUN_DIR / f"apt-{self.config.name}.pid"

    def _ensure_apt_server(self, repos: dict[str, Path]) -> None:
        """One HTTP server on the lab's bridge: RELEASE/ is that release's repository."""
        served = self.state_dir / "apt"
        served.mkdir(parents=True, exist_ok=True)
        for release, repo in repos.items():
            link = served / release
            if not link.is_symlink() or link.readlink() != repo:
                link.unlink(missing_ok=True)
                link.symlink_to(repo)
        if system.process_running(self._apt_pidfile):
            return
        system.RUN_DIR.mkdir(parents=True, exist_ok=True)
        system.start_detached(
            [
                "python3",
                "-m",
                "http.server",
                str(APT_PORT),
                "--bind",
                self.gateway,
                "--directory",
                str(served),
            ],
            self.state_dir / "apt-http.log",
            self._apt_pidfile,
        )

    def _ensure_key(self) -> None:
        if not self.key_path.exists():
            system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "replimesh-lab", "-f",
                        str(self.key_path)])  # fmt: skip

    def _ensure_container(self, host: Host, tag: str, mount: bool, kind: HostKind) -> bool:
        """Create the host's container unless it already runs this image with this right to mount. True when
        (re)started."""
        state = docker(
            "ps", "-a", "--filter", f"name=^{host.container}$",
            "--format", '{{.State}} {{.Image}} {{.Label "replimesh.mount"}}',
        )  # fmt: skip
        if state:
            status, current, *can_mount = state.split()
            if status in ("running", "paused") and current == tag and can_mount == [str(mount).lower()]:
                return False
            self.log(f"removing leftover container {host.container} ({status}, {current})")
            docker("rm", "-f", host.container)
        # A new host has new keys: forget what the control node stored for the old one.
        (self.keystore / f"{host.name}.json").unlink(missing_ok=True)
        options = kind.run_options(self._env_path(kind.release), self._apt_url(kind.release))
        docker(
            "run", "-d", *options, "--name", host.container, "--hostname", host.name,
            "--network", self.config.name, "--ip", host.address,
            "--label", f"{LABEL}={self.config.name}", "--label", f"replimesh.node={host.name}",
            "--label", f"replimesh.mount={str(mount).lower()}", "--label", f"replimesh.init={kind.init}",
            "--label", f"replimesh.release={kind.release}",
            # A real host's root may mount (bind mounts into the SSH jail); the lab's users stay unprivileged.
            *(["--cap-add", "SYS_ADMIN"] if mount else []),
            "-v", f"{self.key_path}.pub:/lab/authorized_keys:ro",
            tag,
        )  # fmt: skip
        return True

    def ssh_args(self, host: Host) -> list[str]:
        return [
            "ssh", *SSH_OPTIONS, "-i", str(self.key_path),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            f"{image.LAB_USER}@{host.address}",
        ]  # fmt: skip

    def _host_key(self, host: Host) -> str | None:
        proc = subprocess.run(
            ["docker", "exec", host.container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return proc.stdout.decode().split()[1] if proc.returncode == 0 and proc.stdout.strip() else None

    def _write_known_hosts(self, hosts: Sequence[Host]) -> None:
        """Pin each host's key, read through Docker (out of band), never trusted on first use."""
        lines = []
        for host in hosts:
            key = self._host_key(host)
            if key is None:
                raise LabError(f"{host.name} has no SSH host key yet")
            lines.append(f"{host.address} ssh-ed25519 {key}\n")
        self._write_if_changed(self.known_hosts, "".join(lines))

    def _wait_ssh(self, hosts: Sequence[Host], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(hosts)
        while pending:
            self._write_known_hosts([h for h in pending if self._host_key(h)])
            pending = [h for h in pending if not self._ssh_ok(h)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise LabError(f"no SSH from {', '.join(h.name for h in pending)} within {timeout:.0f}s")
            time.sleep(0.5)

    def _ssh_ok(self, host: Host) -> bool:
        try:
            proc = subprocess.run(
                [*self.ssh_args(host), "true"], capture_output=True, timeout=15, check=False
            )
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0

    def _write_inventory(self, hosts: Sequence[Host]) -> None:
        ssh_args = (
            f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
            "-o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3"
        )
        common = {
            "ansible_user": image.LAB_USER,
            "ansible_ssh_private_key_file": str(self.key_path),
            "ansible_ssh_common_args": ssh_args,
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        mesh = {
            "plugin": "replimesh.mesh.replimesh_mesh",
            "folders": [{"name": "shared", "path": "/srv/replimesh/shared", "ignore": ["*.tmp"]}],
            "nodes": {h.name: {"address": h.address} for h in hosts},
            "topology": {"kind": "full"},
            "sync": {"mode": "cron", "schedule": "*/15 * * * *"},
            "vars": common,
        }
        header = "# Written by `meshctl lab up`: the lab's mesh. Edit a copy, not this file.\n"
        self._write_if_changed(self.inventory_path, header + yaml.safe_dump(mesh, sort_keys=False))

    @staticmethod
    def _write_if_changed(path: Path, text: str) -> None:
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)

    # --- use ---------------------------------------------------------------------------------------
    def exec(
        self, node: str, command: Sequence[str], timeout: float = 300
    ) -> subprocess.CompletedProcess[bytes]:
        host = self.resolve(node)
        if not command:
            raise LabError("lab exec needs a command after --")
        return subprocess.run(
            ["docker", "exec", host.container, *command], capture_output=True, timeout=timeout, check=False
        )

    def fault(self, action: str, node: str) -> None:
        if action not in FAULTS:
            raise LabError(f"unknown fault {action!r}; faults: {', '.join(FAULTS)}")
        host = self.resolve(node)
        if action == "partition":
            docker("network", "disconnect", self.config.name, host.container)
        elif action == "shutdown":
            # A clean power-off (systemd stops its units and unmounts): `start` boots the host again.
            docker("stop", "--time", "60", host.container, timeout=180)
        elif action == "reboot":
            # A clean shutdown (systemd stops its units and unmounts; elsewhere sshd gets SIGTERM), then a
            # boot: the host comes back with what it keeps on disk, as after `systemctl reboot`.
            docker("restart", "--time", "60", host.container, timeout=180)
        elif action == "heal":
            docker("network", "connect", "--ip", host.address, self.config.name, host.container)
        else:
            docker(action, host.container)

    # --- down --------------------------------------------------------------------------------------
    def down(self) -> None:
        """Remove this lab's hosts, network, rules and apt server; stop dockerd if no lab is left."""
        system.require_root()
        if system.docker_ready():
            ids = docker("ps", "-aq", "--filter", f"label={LABEL}={self.config.name}").split()
            if ids:
                docker("rm", "-f", *ids)
                self.log(f"removed {len(ids)} lab hosts of {self.config.name}")
            if docker("network", "ls", "-q", "--filter", f"label={LABEL}={self.config.name}"):
                docker("network", "rm", self.config.name)
                self.log(f"removed network {self.config.name}")
        system.remove_forward_accept(self.bridge)
        system.stop_pidfile(self._apt_pidfile)
        for name in ("lab.mesh.yml", "known_hosts", "lab.json", "apt-http.log"):
            (self.state_dir / name).unlink(missing_ok=True)
        for release in image.RELEASES:
            self._env_path(release).unlink(missing_ok=True)
        shutil.rmtree(self.state_dir / "apt", ignore_errors=True)
        shutil.rmtree(self.keystore, ignore_errors=True)
        system.stop_shared_if_unused(LABEL, GUARD, self.log)
