"""The kinds of lab host: the init system a container boots (none, or systemd as on a VM) and its Debian
release, with what `docker run` needs for each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from replimesh.lab import image, system
from replimesh.lab.errors import LabError


@dataclass(frozen=True)
class HostKind:
    """What a lab host runs: its init system ("none" or "systemd") and its Debian release."""

    init: str = "none"
    release: str = "bookworm"

    def check(self) -> None:
        image.check_kind(self.init, self.release)
        if self.init == "systemd" and self.release != "bookworm" and not system.cgroup2():
            raise LabError(
                f"{self.release}'s systemd needs the unified cgroup hierarchy (v2), which this machine "
                "does not mount at /sys/fs/cgroup: use its hosts without an init (--init none)"
            )

    def run_options(self, env_path: Path, apt_url: str) -> list[str]:
        """`docker run` options of this kind; `env_path` (a systemd host's settings file) and `apt_url` (a
        bare host's environment) name the lab's apt repository of the release."""
        if self.init != "systemd":
            return ["--init", "-e", f"LAB_APT_URL={apt_url}"]
        # systemd as PID 1, as on a VM: its own cgroup subtree, /run and /run/lock on tmpfs, a clean
        # shutdown on `docker stop` (SIGRTMIN+3), and the rights a VM's root has (mount, login uid).
        return [
            "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--stop-signal", "SIGRTMIN+3",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--cap-add", "AUDIT_CONTROL", "-e", "container=docker",
            "-v", f"{env_path}:/lab/env:ro",
        ]  # fmt: skip
