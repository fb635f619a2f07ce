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
from pathlib import Path

from replimesh.lab.errors import LabError
from replimesh.lab.system import Log, docker, run

CACHE_DIR = Path("/var/cache/replimesh")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
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
REPO_PACKAGES = ("unison", "unison-2.52", "syncthing", "unison-2.51+4.13.1", "libfaketime")
LAB_USER = "lab"

INIT_SCRIPT = f"""#!/bin/sh
# replimesh lab host: per-host SSH host keys, the lab's admin key, the lab apt source, cron, sshd.
set -eu
if [ ! -s /etc/ssh/ssh_host_ed25519_key ]; then ssh-keygen -A >/dev/null; fi
install -d -m 0700 -o {LAB_USER} -g {LAB_USER} /home/{LAB_USER}/.ssh
install -m 0600 -o {LAB_USER} -g {LAB_USER} /lab/authorized_keys /home/{LAB_USER}/.ssh/authorized_keys
if [ -n "${{LAB_APT_URL:-}}" ]; then
  echo "deb [trusted=yes] ${{LAB_APT_URL}} ./" > /etc/apt/sources.list.d/replimesh-lab.list
fi
mkdir -p /run/sshd
# What a booting host does with its fstab (the sync folders' bind mounts into the SSH jail).
mount -a >/dev/null 2>&1 || true
/etc/init.d/cron start >/dev/null 2>&1 || true
# A test may preload libfaketime on a host (/etc/ld.so.preload: its clock is off). sshd keeps the real
# time, or its sandboxed children die in the library's calls; the sessions it starts get the false clock.
export FAKETIME_SKIP_CMDS=sshd,sshd-session
exec /usr/sbin/sshd -D -e
"""


def image_key() -> str:
    """A short hash of everything that shapes the image, so a change rebuilds it and nothing else does."""
    recipe = "\n".join([SUITE, MIRROR, *PACKAGES, LAB_USER, INIT_SCRIPT])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def image_tag() -> str:
    return f"replimesh-lab-host:{image_key()}"


def _customize_rootfs(root: Path) -> None:
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # every host must make its own host keys at first start
    run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", LAB_USER])
    run(["chroot", str(root), "usermod", "--password", "*", LAB_USER])  # key login only, not locked
    sudoers = root / "etc/sudoers.d" / LAB_USER
    sudoers.write_text(f"{LAB_USER} ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    init = root / "usr/local/sbin/lab-init"
    init.write_text(INIT_SCRIPT)
    init.chmod(0o755)
    (root / "lab").mkdir(exist_ok=True)
    # The lab network reaches no mirror: only the lab's own repository (set by lab-init) is used.
    (root / "etc/apt/sources.list").write_text("")
    for stale in (root / "var/lib/apt/lists").glob("*_*"):
        stale.unlink()
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def _build_rootfs_tar(tar_path: Path, log: Log) -> None:
    log(f"building the host image with debootstrap ({SUITE}, minbase); this takes about a minute")
    with tempfile.TemporaryDirectory(prefix="replimesh-rootfs-", dir=CACHE_DIR) as tmp:
        root = Path(tmp) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                MIRROR,
            ],
            timeout=900,
        )
        _customize_rootfs(root)
        partial = tar_path.with_suffix(".partial")
        run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], timeout=300)
        partial.rename(tar_path)


def ensure_image(log: Log) -> str:
    """Return the tag of the host image, importing (and first building) it only when missing."""
    tag = image_tag()
    if docker("images", "-q", tag):
        return tag
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tar_path = CACHE_DIR / f"rootfs-{image_key()}.tar"
    if not tar_path.exists():
        _build_rootfs_tar(tar_path, log)
    log(f"importing {tar_path.name} as {tag}")
    with tar_path.open("rb") as tar:
        proc = subprocess.run(
            ["docker", "import", "--change", 'CMD ["/usr/local/sbin/lab-init"]', "-", tag],
            stdin=tar,
            capture_output=True,
            timeout=300,
            check=False,
        )
    if proc.returncode != 0:
        raise LabError(f"docker import failed: {proc.stderr.decode(errors='replace').strip()}")
    return tag


def ensure_apt_repo(log: Log) -> Path:
    """A flat apt repository with the packages the lab image leaves out, fetched once with apt-get."""
    repo = CACHE_DIR / f"apt-{hashlib.sha256(' '.join(REPO_PACKAGES).encode()).hexdigest()[:12]}"
    if (repo / "Packages").exists():
        return repo
    log(f"fetching {' '.join(REPO_PACKAGES)} for the lab's apt repository")
    partial = repo.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    download = ["apt-get", "download", *REPO_PACKAGES]
    if subprocess.run(download, cwd=partial, capture_output=True, timeout=300, check=False).returncode:
        run(["apt-get", "update", "-q"], timeout=300)
        proc = subprocess.run(download, cwd=partial, capture_output=True, timeout=300, check=False)
        if proc.returncode:
            raise LabError(f"apt-get download failed: {proc.stderr.decode(errors='replace').strip()}")
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
