"""The lab's host image (a debootstrapped Debian 12) and the local apt repository the hosts install from.

The image holds what a plain Debian server has (sshd, cron, python3, sudo) but not Unison: the `unison`
role installs it for real, from an apt repository the lab serves on its own bridge, because the lab
network is internal and reaches nothing else.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from replimesh.lab.errors import LabError
from replimesh.lab.system import Log, docker, run

CACHE_DIR = Path("/var/cache/replimesh")
# Debian 12 and 13: a mesh may mix them (Unison 2.52 and 2.53 talk to each other).
RELEASES = ("bookworm", "trixie")
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
PACKAGES = (
    "openssh-server",
    "cron",
    "python3",
    "python3-apt",
    "sudo",
    "iproute2",
    "procps",
    "logrotate",
    "rsync",
)
# What the lab's apt repository serves: what the roles install that the image lacks on purpose; Debian's
# Syncthing, the peer `meshctl bench` measures replimesh against on the same hosts (it needs nothing
# beyond libc and init-system-helpers, both in the image); and for the preflight test, a Unison too old
# to talk to other versions (2.51) and libfaketime (a node whose clock is off).
REPO_PACKAGES = {
    "bookworm": ("unison", "unison-2.52", "syncthing", "unison-2.51+4.13.1", "libfaketime"),
    "trixie": ("unison", "unison-2.53"),
}
LAB_USER = "lab"
LAB_APT_LIST = "/etc/apt/sources.list.d/replimesh-lab.list"

INITS = ("none", "systemd")
# What every lab host does first at each start: its own SSH host keys, the lab's admin key, the lab's
# apt source (LAB_APT_URL).
SETUP_SCRIPT = f"""#!/bin/sh
# replimesh lab host: per-host SSH host keys, the lab's admin key, the lab apt source.
set -eu
if [ ! -s /etc/ssh/ssh_host_ed25519_key ]; then ssh-keygen -A >/dev/null; fi
install -d -m 0700 -o {LAB_USER} -g {LAB_USER} /home/{LAB_USER}/.ssh
install -m 0600 -o {LAB_USER} -g {LAB_USER} /lab/authorized_keys /home/{LAB_USER}/.ssh/authorized_keys
# The lab's repository of the host's release; a host upgraded to another release keeps the one it has.
if [ -n "${{LAB_APT_URL:-}}" ] && [ ! -e {LAB_APT_LIST} ]; then
  echo "deb [trusted=yes] ${{LAB_APT_URL}} ./" > {LAB_APT_LIST}
fi
"""
# A host without an init system: docker-init runs this, which does what a booting host would.
INIT_SCRIPT = """#!/bin/sh
# replimesh lab host without an init system: set up, then what a boot does, then sshd in the foreground.
set -eu
/usr/local/sbin/lab-setup
mkdir -p /run/sshd
# What a booting host does with its fstab (the sync folders' bind mounts into the SSH jail).
mount -a >/dev/null 2>&1 || true
/etc/init.d/cron start >/dev/null 2>&1 || true
# A test may preload libfaketime on a host (/etc/ld.so.preload: its clock is off). sshd keeps the real
# time, or its sandboxed children die in the library's calls; the sessions it starts get the false clock.
export FAKETIME_SKIP_CMDS=sshd,sshd-session
exec /usr/sbin/sshd -D -e
"""
# A host with systemd as PID 1 (as on a VM or a server): the setup is a unit before sshd; systemd does the
# rest of the boot (fstab, cron, sshd). The container's environment does not reach units: the lab's
# settings come in a file.
SETUP_UNIT = """[Unit]
Description=replimesh lab host setup (host keys, admin key, apt source)
Before=ssh.service
ConditionPathExists=/lab/authorized_keys

[Service]
Type=oneshot
EnvironmentFile=-/lab/env
ExecStart=/usr/local/sbin/lab-setup

[Install]
WantedBy=multi-user.target
"""


def packages(init: str) -> tuple[str, ...]:
    """The image's packages: a plain server's, plus systemd as the init system on that kind."""
    return PACKAGES + (("systemd", "systemd-sysv", "dbus") if init == "systemd" else ())


def check_kind(init: str, release: str) -> None:
    if init not in INITS:
        raise LabError(f"unknown init {init!r}; lab hosts run one of: {', '.join(INITS)}")
    if release not in RELEASES:
        raise LabError(f"unknown release {release!r}; lab hosts run one of: {', '.join(RELEASES)}")


def image_key(init: str = "none", release: str = "bookworm") -> str:
    """A short hash of everything that shapes the image, so a change rebuilds it and nothing else does."""
    check_kind(init, release)
    scripts = [SETUP_SCRIPT, SETUP_UNIT] if init == "systemd" else [SETUP_SCRIPT, INIT_SCRIPT]
    recipe = "\n".join([release, MIRROR, "apt-install", *packages(init), LAB_USER, *scripts])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def image_tag(init: str = "none", release: str = "bookworm") -> str:
    return f"replimesh-lab-host:{image_key(init, release)}"


def _install_script(root: Path, name: str, text: str) -> None:
    script = root / "usr/local/sbin" / name
    script.write_text(text)
    script.chmod(0o755)


def _customize_rootfs(root: Path, init: str) -> None:
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # every host must make its own host keys at first start
    run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", LAB_USER])
    run(["chroot", str(root), "usermod", "--password", "*", LAB_USER])  # key login only, not locked
    sudoers = root / "etc/sudoers.d" / LAB_USER
    sudoers.write_text(f"{LAB_USER} ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    _install_script(root, "lab-setup", SETUP_SCRIPT)
    if init == "systemd":
        (root / "etc/systemd/system/lab-setup.service").write_text(SETUP_UNIT)
        wants = root / "etc/systemd/system/multi-user.target.wants/lab-setup.service"
        wants.symlink_to("/etc/systemd/system/lab-setup.service")
        # A container has no consoles to log in on, and its clock and hostname are the machine's.
        for unit in ("getty@tty1.service", "systemd-timesyncd.service"):
            for link in (root / "etc/systemd/system").glob(f"*.wants/{unit}"):
                link.unlink()
    else:
        _install_script(root, "lab-init", INIT_SCRIPT)
    (root / "lab").mkdir(exist_ok=True)
    # The lab network reaches no mirror: only the lab's own repository (set by lab-init) is used.
    (root / "etc/apt/sources.list").write_text("")
    for stale in (root / "var/lib/apt/lists").glob("*_*"):
        stale.unlink()
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def _build_rootfs_tar(tar_path: Path, init: str, release: str, log: Log) -> None:
    log(f"building the host image with debootstrap and apt ({release}, init {init}); this takes a minute")
    with tempfile.TemporaryDirectory(prefix="replimesh-rootfs-", dir=CACHE_DIR) as tmp:
        root = Path(tmp) / "rootfs"
        run(["debootstrap", "--variant=minbase", release, str(root), MIRROR], timeout=900)
        # apt, not debootstrap's --include, installs the rest: it orders the installs by their dependencies
        # (debootstrap's single dpkg run fails on Debian 13's cron, which needs systemd's sysusers first).
        install = "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q"
        install += f" --no-install-recommends {' '.join(packages(init))} && apt-get clean"
        run(["chroot", str(root), "sh", "-c", install], timeout=900)
        _customize_rootfs(root, init)
        partial = tar_path.with_suffix(".partial")
        run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], timeout=300)
        partial.rename(tar_path)


def ensure_image(log: Log, init: str = "none", release: str = "bookworm") -> str:
    """Return the tag of the host image, importing (and first building) it only when missing."""
    tag = image_tag(init, release)
    if docker("images", "-q", tag):
        return tag
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tar_path = CACHE_DIR / f"rootfs-{image_key(init, release)}.tar"
    if not tar_path.exists():
        _build_rootfs_tar(tar_path, init, release, log)
    log(f"importing {tar_path.name} as {tag}")
    command = "/sbin/init" if init == "systemd" else "/usr/local/sbin/lab-init"
    with tar_path.open("rb") as tar:
        proc = subprocess.run(
            ["docker", "import", "--change", f'CMD ["{command}"]', "-", tag],
            stdin=tar,
            capture_output=True,
            timeout=300,
            check=False,
        )
    if proc.returncode != 0:
        raise LabError(f"docker import failed: {proc.stderr.decode(errors='replace').strip()}")
    return tag


def _apt_download(release: str, packages: Sequence[str], dest: Path) -> None:
    """apt-get download of `packages` from Debian `release` (its updates and security fixes too), in an apt
    context of its own: this machine's sources and package state are neither used nor touched."""
    with tempfile.TemporaryDirectory(prefix="replimesh-apt-", dir=CACHE_DIR) as tmp:
        ctx = Path(tmp)
        for sub in ("lists/partial", "cache/archives/partial", "parts"):
            (ctx / sub).mkdir(parents=True)
        (ctx / "status").write_text("")
        (ctx / "sources.list").write_text(
            f"deb {MIRROR} {release} main\ndeb {MIRROR} {release}-updates main\n"
            f"deb {SECURITY_MIRROR} {release}-security main\n"
        )
        options = [
            "-q", "-o", f"Dir::Etc::SourceList={ctx}/sources.list",
            "-o", f"Dir::Etc::SourceParts={ctx}/parts",
            "-o", f"Dir::State::Lists={ctx}/lists", "-o", f"Dir::State::Status={ctx}/status",
            "-o", f"Dir::Cache={ctx}/cache",
        ]  # fmt: skip
        run(["apt-get", *options, "update"], timeout=300)
        proc = subprocess.run(
            ["apt-get", *options, "download", *packages],
            cwd=dest,
            capture_output=True,
            timeout=600,
            check=False,
        )
        if proc.returncode:
            raise LabError(f"apt-get download failed: {proc.stderr.decode(errors='replace').strip()}")


def ensure_apt_repo(log: Log, release: str = "bookworm") -> Path:
    """A flat apt repository with the packages the lab image of `release` leaves out, fetched once."""
    check_kind("none", release)
    return _ensure_repo(log, release, REPO_PACKAGES[release])


def ensure_upgrade_repo(log: Log, release: str, tag: str) -> Path:
    """Every package of the `release` image `tag`, with the lab's packages of that release: what a host of
    the release before needs to `apt full-upgrade` to it, offline, as from a mirror."""
    check_kind("none", release)
    query = [
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "dpkg-query",
        tag,
        "-W",
        "-f",
        "${Package}\n",
    ]
    base = sorted(set(docker(*query).split()))
    return _ensure_repo(log, release, (*base, *REPO_PACKAGES[release]))


def _ensure_repo(log: Log, release: str, wanted: Sequence[str]) -> Path:
    repo = CACHE_DIR / f"apt-{hashlib.sha256(' '.join([release, *wanted]).encode()).hexdigest()[:12]}"
    if (repo / "Packages").exists():
        return repo
    shown = " ".join(wanted) if len(wanted) < 10 else f"{len(wanted)} packages"
    log(f"fetching {shown} ({release}) for the lab's apt repository")
    partial = repo.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _apt_download(release, wanted, partial)
    index = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."],
        cwd=partial,
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout
    (partial / "Packages").write_bytes(index)
    partial.rename(repo)
    return repo
